//! The media path's bounds against a client that abuses it from a connected session: NACKs that
//! ask for the same packet thousands of times, SRTP and SRTCP under random SSRCs, DTLS records
//! of an epoch the handshake never reaches, and a session whose handling panics.

mod support;

use std::time::{Duration, Instant};

use support::client::{Mode, Options, VideoCodec};
use support::{start, WAIT};
use whip_echo::config::Config;

/// One test at a time: two measure the process's memory, which the others would move.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Waits until the server's metric `name` is at least `value`; panics after [`WAIT`].
async fn metric_reaches(base: &str, name: &str, value: f64) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let text = support::get_text(&format!("{base}/metrics")).await;
        if support::metric(&text, name) >= value {
            return text;
        }
        assert!(Instant::now() < deadline, "{name} reached {value}:\n{text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The review's NACK amplification: one RTCP packet naming one packet 4,000 times, then the same
/// packet 10 times at once. rtc's responder resent it 44,000 times; whip-echo's resends it once
/// (at most 64 FCIs read per packet, one sequence number once per compound, not again within
/// 100 ms), and an echo session beside it keeps its round trip.
#[tokio::test]
async fn a_viewer_naming_one_packet_44000_times_gets_one_resend() {
    let _serial = SERIAL.lock().await;
    let server = start(Config::for_tests()).await;
    let base = server.base_url();
    let video = Options {
        video: Some(VideoCodec::Vp8),
        ..Options::default()
    };
    let publisher = support::connected(&format!("{base}/whip/nacks"), Mode::Send, video).await;
    let mut viewer = support::connected(&format!("{base}/whep/nacks"), Mode::Recv, video).await;
    let mut echo = support::connected(
        &format!("{base}/echo/bystander"),
        Mode::SendRecv,
        Options::default(),
    )
    .await;
    let sender = publisher.clone_sender();
    // Key frames until the viewer has one: the packet it will ask for.
    let seq = loop {
        sender.send_video_frame(b"frame", true);
        if let Some(p) = viewer.try_next_packet(Duration::from_millis(100)).await {
            if p.payload[..] == *b"frame" {
                break p.seq;
            }
        }
    };
    let before = support::worst_echo(&mut echo, "before").await;
    viewer.nack(vec![seq; 4000], 1);
    viewer.nack(vec![seq; 4000], 10);
    let during = support::worst_echo(&mut echo, "during").await;
    // All eleven read: the last ten named it too soon after its resend.
    let text = metric_reaches(
        &base,
        r#"whip_echo_nack_refused_packets_total{cause="too_soon"}"#,
        10.0,
    )
    .await;
    // The viewer has read everything sent before a frame that follows them.
    sender.send_video_frame(b"after", true);
    while viewer.next_packet(WAIT).await.payload[..] != *b"after" {}
    eprintln!("echo RTT: at most {before:?} before, {during:?} during the NACKs");
    assert_eq!(viewer.arrivals.count(seq), 2, "the packet and one resend");
    let m = |name: &str| support::metric(&text, name);
    assert_eq!(m("whip_echo_nack_resent_packets_total"), 1.0);
    assert_eq!(
        m(r#"whip_echo_nack_refused_packets_total{cause="too_soon"}"#),
        10.0
    );
    // Of each packet's 4,000 FCIs, 64 were read; 63 of those repeated the first.
    assert_eq!(
        m(r#"whip_echo_nack_refused_packets_total{cause="too_many"}"#),
        11.0 * 3936.0
    );
    assert_eq!(
        m(r#"whip_echo_nack_refused_packets_total{cause="duplicate"}"#),
        11.0 * 63.0
    );
    support::delete_all_and_stop(server, vec![publisher, viewer, echo]).await;
}

/// An SRTP-shaped datagram (RFC 3711 §3.1) of SSRC `ssrc` with a tag that cannot authenticate;
/// as SRTCP (RFC 3711 §3.4: an RR with its E bit and index, then the tag) when `rtcp`.
fn forged_srtp(ssrc: u32, rtcp: bool) -> bytes::Bytes {
    let mut d = Vec::with_capacity(64);
    if rtcp {
        d.extend_from_slice(&[0x80, 201, 0, 1]);
        d.extend_from_slice(&ssrc.to_be_bytes());
        d.extend_from_slice(&[0x80, 0, 0, 1]);
    } else {
        d.extend_from_slice(&[0x80, 96]);
        d.extend_from_slice(&rand::random::<u16>().to_be_bytes());
        d.extend_from_slice(&rand::random::<u32>().to_be_bytes());
        d.extend_from_slice(&ssrc.to_be_bytes());
        d.extend_from_slice(&[0u8; 20]);
    }
    d.extend_from_slice(&rand::random::<[u8; 10]>());
    d.into()
}

/// The review's SRTP state growth: rtc-srtp made the state of a packet's SSRC (its rollover
/// counter and a replay window) before checking its tag, so random SSRCs grew two maps without
/// bound. The patched crate authenticates first. 100,000 forged SRTP and 100,000 SRTCP datagrams
/// from a connected client's own address leave the process's memory flat and the echo working.
#[tokio::test]
async fn random_ssrcs_that_do_not_authenticate_leave_no_state() {
    let _serial = SERIAL.lock().await;
    let server = start(Config::for_tests()).await;
    let base = server.base_url();
    let mut echo = support::connected(
        &format!("{base}/echo/ssrcs"),
        Mode::SendRecv,
        Options::default(),
    )
    .await;
    let flood = |echo: &support::client::Client, n: usize| {
        echo.send_raw(
            (0..n)
                .map(|i| forged_srtp(rand::random(), i % 2 == 1))
                .collect(),
        );
    };
    // Batches of 1,000, each followed by an echo: the server has read the batch (one socket,
    // one order) and its socket buffer never overflows. The first batch warms up.
    flood(&echo, 1000);
    support::echoed(&mut echo, b"after-0").await;
    let before = support::rss_kib();
    for n in 1..=200 {
        flood(&echo, 1000);
        support::echoed(&mut echo, format!("after-{n}").as_bytes()).await;
    }
    let grown = support::rss_kib().saturating_sub(before);
    eprintln!("RSS grew by {grown} KiB over 200,000 forged SRTP and SRTCP datagrams");
    // Unpatched, each datagram kept about 250 bytes (50 MB in all).
    assert!(grown < 8 * 1024, "RSS grew by {grown} KiB");
    // Every one reached the session's SRTP context, and was refused there.
    let text = support::get_text(&format!("{base}/metrics")).await;
    let rejected = r#"whip_echo_dropped_packets_total{cause="rejected"}"#;
    assert!(support::metric(&text, rejected) >= 201_000.0, "{text}");
    support::delete_all_and_stop(server, vec![echo]).await;
}

/// pion's CVE-2022-29189 class: rtc-dtls queued every record of the next epoch while the handshake
/// was unfinished, without limit. A client that sends its ClientHello and then only epoch-1
/// records (100,000 of 1,200 bytes, 120 MB) grows the server by at most the patched crate's
/// bound, and the handshake still completes when it goes on.
#[tokio::test]
async fn a_handshake_that_never_ends_cannot_queue_records_without_bound() {
    let _serial = SERIAL.lock().await;
    let server = start(Config::for_tests()).await;
    let base = server.base_url();
    let options = Options {
        hold_dtls: true,
        ..Options::default()
    };
    let mut client =
        support::connecting(&format!("{base}/echo/dtls"), Mode::SendRecv, options).await;
    // The server answered the ClientHello: ICE selected the pair, its DTLS server is mid-way.
    assert!(client.until(WAIT, |s| s.dtls_from_server).await);
    let before = support::rss_kib();
    // Application data of epoch 1, sequence number 1 (queued before any replay check), one
    // buffer sent 100,000 times.
    let mut record = vec![23, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 1];
    record.extend_from_slice(&1187u16.to_be_bytes());
    record.resize(1200, 0xab);
    let record = bytes::Bytes::from(record);
    for _ in 0..100 {
        client.send_raw(vec![record.clone(); 1000]);
    }
    // The held flight goes now: the handshake completes after every record was read.
    client.release_dtls();
    client.wait_connected(WAIT).await;
    let grown = support::rss_kib().saturating_sub(before);
    eprintln!("RSS grew by {grown} KiB over 100,000 epoch-1 records (120 MB) mid-handshake");
    assert!(grown < 32 * 1024, "RSS grew by {grown} KiB");
    support::echoed(&mut client, b"still echoing").await;
    support::delete_all_and_stop(server, vec![client]).await;
}

/// A panic of the WebRTC stack while it handles one session's datagram (injected: the test build's
/// `fault-injection` feature panics on `FAULT_DATAGRAM` inside the loop's shielded call) ends
/// that session alone, with `reason="panicked"`: the loop, an echo beside it and new sessions go
/// on. Before the shield, the loop's thread ended and every session on the port with it.
#[tokio::test]
async fn a_panic_on_one_sessions_datagram_ends_that_session_alone() {
    let _serial = SERIAL.lock().await;
    let server = start(Config::for_tests()).await;
    let base = server.base_url();
    let mut bystander = support::connected(
        &format!("{base}/echo/bystander"),
        Mode::SendRecv,
        Options::default(),
    )
    .await;
    let victim = support::connected(
        &format!("{base}/echo/victim"),
        Mode::SendRecv,
        Options::default(),
    )
    .await;
    victim.send_raw(vec![bytes::Bytes::from_static(
        whip_echo::media::FAULT_DATAGRAM,
    )]);
    let text = metric_reaches(
        &base,
        r#"whip_echo_sessions_ended_total{reason="panicked"}"#,
        1.0,
    )
    .await;
    assert_eq!(
        support::metric(
            &text,
            r#"whip_echo_sessions_ended_total{reason="panicked"}"#
        ),
        1.0
    );
    // The victim's resource is gone and says why; the bystander still echoes.
    let gone = reqwest::get(&victim.resource_url).await.unwrap();
    assert_eq!(gone.status(), 410);
    let why = gone.text().await.unwrap();
    assert!(why.contains("failed while handling it"), "{why}");
    support::echoed(&mut bystander, b"after the panic").await;
    // And a new session connects and echoes.
    let mut fresh = support::connected(
        &format!("{base}/echo/fresh"),
        Mode::SendRecv,
        Options::default(),
    )
    .await;
    support::echoed(&mut fresh, b"new").await;
    victim.vanish().await;
    support::delete_all_and_stop(server, vec![bystander, fresh]).await;
}
