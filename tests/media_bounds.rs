//! The media path's bounds against a client that abuses it from a connected session: NACKs that
//! ask for the same packet thousands of times, SRTP and SRTCP under random SSRCs, DTLS records
//! of an epoch the handshake never reaches, and a session whose handling panics.

mod support;

use std::time::{Duration, Instant};

use support::client::{Mode, Options, VideoCodec};
use support::{start, WAIT};
use whip_echo::config::Config;

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

/// The worst echo round trip of 20 packets on `echo`.
async fn worst_echo(echo: &mut support::client::Client, label: &str) -> Duration {
    let mut worst = Duration::ZERO;
    for n in 0..20 {
        let marker = format!("{label}-{n}");
        let sent = Instant::now();
        echo.send(marker.as_bytes());
        while echo.next_packet(WAIT).await.payload[..] != *marker.as_bytes() {}
        worst = worst.max(sent.elapsed());
    }
    worst
}

/// The review's NACK amplification: one RTCP packet naming one packet 4,000 times, then the same
/// packet 10 times at once. rtc's responder resent it 44,000 times; whip-echo's resends it once
/// (at most 64 FCIs read per packet, one sequence number once per compound, not again within
/// 100 ms), and an echo session beside it keeps its round trip.
#[tokio::test]
async fn a_viewer_naming_one_packet_44000_times_gets_one_resend() {
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
    let before = worst_echo(&mut echo, "before").await;
    viewer.nack(vec![seq; 4000], 1);
    viewer.nack(vec![seq; 4000], 10);
    let during = worst_echo(&mut echo, "during").await;
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
