//! The fast path (`media/conn/fast.rs`): a session without video opens and protects its SRTP
//! itself once DTLS is up, against a webrtc-rs peer whose own SRTP (rtc's) is on the other side
//! both ways, and reports what it saw and sent in RTCP that the peer's statistics show.

use crate::support;

use std::time::Duration;

use support::client::{Client, Mode, RemoteReports};
use support::{get_text, metric, start, wait_idle, WAIT};
use whip_echo::config::Config;

/// Asks `client` for what the server's reports told it until `done` holds (bounded by [`WAIT`]).
async fn reports_until(client: &Client, done: impl Fn(&RemoteReports) -> bool) -> RemoteReports {
    let give_up = tokio::time::Instant::now() + WAIT;
    let mut every = tokio::time::interval(Duration::from_millis(100));
    loop {
        every.tick().await;
        let reports = client.remote_reports().await;
        if done(&reports) || tokio::time::Instant::now() > give_up {
            return reports;
        }
    }
}

#[tokio::test]
async fn an_echo_rides_the_fast_path_both_ways_and_its_reports_reach_the_client() {
    let server = start(Config::for_tests()).await;
    let url = format!("{}/echo/fast", server.base_url());
    let mut client = Client::connect(&url, Mode::SendRecv).await.expect("201");
    client.wait_connected(WAIT).await;

    // Protected by rtc's SRTP in the client, opened by the fast path; protected by the fast
    // path, opened by rtc's SRTP in the client: any mismatch and nothing comes back.
    const PACKETS: u32 = 100;
    for i in 0..PACKETS {
        let payload = format!("opus-frame-{i:04}");
        client.send(payload.as_bytes());
        let got = client.next_packet(WAIT).await;
        assert_eq!(
            got.payload,
            payload.as_bytes(),
            "packet {i} echoed unchanged"
        );
    }
    // Only the first packet of the SSRC passed rtc (it binds the SSRC to its track).
    let text = get_text(&format!("{}/metrics", server.base_url())).await;
    let fast = metric(&text, "whip_echo_fast_path_packets_total");
    assert!(
        fast >= f64::from(2 * PACKETS - 1),
        "packets on the fast path: {fast}"
    );

    // The server's sender report for the echo leg, and its receiver report on the client's
    // stream, as the client's getStats shows them (remote-outbound-rtp, remote-inbound-rtp).
    let reports = reports_until(&client, |r| {
        r.packets_sent >= u64::from(PACKETS) && r.receiver_reports >= 1
    })
    .await;
    assert!(reports.sender_reports >= 1, "{reports:?}");
    assert_eq!(reports.packets_sent, u64::from(PACKETS), "{reports:?}");
    assert!(reports.receiver_reports >= 1, "{reports:?}");
    assert_eq!(reports.packets_lost, 0, "{reports:?}");

    client.close().await;
    wait_idle(&server).await;
    server.shutdown().await.unwrap();
}
