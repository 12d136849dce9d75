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

#[tokio::test]
async fn loss_and_reordering_on_the_fast_path_reach_a_viewer_as_they_were() {
    let server = start(Config::for_tests()).await;
    let base = server.base_url();
    let publisher = Client::connect(&format!("{base}/whip/gaps"), Mode::Send)
        .await
        .expect("201");
    let mut viewer = Client::connect(&format!("{base}/whep/gaps"), Mode::Recv)
        .await
        .expect("201");
    let mut publisher = publisher;
    publisher.wait_connected(WAIT).await;
    viewer.wait_connected(WAIT).await;

    // Packet 0 binds the SSRC through rtc; the rest ride the fast path. Lost: 5, 9, 10 and 11;
    // 3 and 4 swapped, 14 a packet late, 20 far late (after 23).
    let order: [u16; 20] = [
        0, 1, 2, 4, 3, 6, 7, 8, 12, 13, 15, 14, 16, 17, 18, 19, 21, 22, 23, 20,
    ];
    let mut first = None;
    for n in order {
        let payload = format!("n{n:02}");
        publisher.send_numbered(n, payload.as_bytes());
        let got = viewer.next_packet(WAIT).await;
        assert_eq!(
            got.payload,
            payload.as_bytes(),
            "the viewer gets packet {n} in the order sent"
        );
        let (seq0, ts0) = *first.get_or_insert((got.seq, got.timestamp));
        // The viewer's numbers keep the publisher's gaps and order: its jitter buffer and loss
        // statistics see the network as it was, and nothing is renumbered into a false stream.
        assert_eq!(
            got.seq,
            seq0.wrapping_add(n),
            "packet {n}'s sequence number"
        );
        assert_eq!(
            got.timestamp,
            ts0.wrapping_add(960 * u32::from(n)),
            "packet {n}'s timestamp"
        );
    }
    let text = get_text(&format!("{base}/metrics")).await;
    let fast = metric(&text, "whip_echo_fast_path_packets_total");
    assert!(fast >= 2.0 * 19.0, "packets on the fast path: {fast}");
    // The server's receiver report on the publisher's stream, in the publisher's statistics:
    // 4 of the 24 packets lost.
    let reports = reports_until(&publisher, |r| {
        r.receiver_reports >= 1 && r.packets_lost == 4
    })
    .await;
    assert_eq!(reports.packets_lost, 4, "{reports:?}");

    publisher.close().await;
    viewer.close().await;
    wait_idle(&server).await;
    server.shutdown().await.unwrap();
}
