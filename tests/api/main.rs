//! The HTTP API, the limits, hostile input, operations and the release binary: one test binary
//! (each binary is a link on a 2-core machine). The soak tests, which measure the process's own
//! memory and descriptors, are binaries of their own (`tests/soak_*.rs`).

#[path = "../support/mod.rs"]
mod support;

mod binary;
mod dockerfile;
mod external_address;
mod hostile;
mod http_api;
mod https;
mod limits;
mod logs;
mod metrics;
mod properties;
mod self_test;
