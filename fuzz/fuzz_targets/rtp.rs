#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| whip_echo::fuzzing::rtp(data));
