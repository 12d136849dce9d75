//! The fast path (`media/conn/fast`): a session opens and protects its SRTP itself once DTLS is
//! up, against a webrtc-rs peer whose own SRTP (rtc's) is on the other side both ways, reports
//! what it saw and sent in RTCP that the peer's statistics show, and gives a video publisher its
//! NACK and TWCC feedback.

use crate::support;

use std::time::Duration;

use support::client::{Client, Mode, Options, RemoteReports, VideoCodec};
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

/// A video publisher and its viewer on the fast path: the publisher's lost packets are asked for
/// again (RFC 4585 NACK) and its packets acknowledged in TWCC feedback, as rtc's interceptors did
/// before video took the fast path (a browser's encoder never raises its bitrate without it);
/// its video reaches the viewer past rtc's pipeline.
#[tokio::test]
async fn a_video_publisher_on_the_fast_path_gets_nacks_for_its_losses_and_twcc_feedback() {
    let server = start(Config::for_tests()).await;
    let base = server.base_url();
    let video = Options {
        audio: support::client::AudioCodec::None,
        video: Some(VideoCodec::Vp8),
        feedback: true,
        ..Options::default()
    };
    let mut publisher =
        support::connected(&format!("{base}/whip/feedback"), Mode::Send, video).await;
    let mut viewer = support::connected(&format!("{base}/whep/feedback"), Mode::Recv, video).await;
    let sender = publisher.clone_sender();
    while viewer
        .try_next_packet(Duration::from_millis(100))
        .await
        .is_none()
    {
        sender.send_video_frame(b"key", true);
    }
    let fast_path = || async {
        let text = get_text(&format!("{base}/metrics")).await;
        metric(&text, "whip_echo_fast_path_packets_total")
    };
    let before = fast_path().await;
    // Three packets lost on the way, then twenty frames.
    sender.skip_video(3);
    const FRAMES: u8 = 20;
    for i in 0..FRAMES {
        sender.send_video_frame(&[b'd', i], false);
    }
    for i in 0..FRAMES {
        let got = viewer.next_packet(WAIT).await;
        assert_eq!(got.payload[..], [b'd', i], "frame {i} reached the viewer");
    }
    // Each frame opened from the publisher and protected for the viewer on the fast path.
    let after = fast_path().await;
    assert!(
        after - before >= 2.0 * f64::from(FRAMES),
        "fast-path packets {before} -> {after}"
    );
    let fed_back = publisher
        .until(WAIT, |s| s.nacked >= 3 && s.twcc_feedback >= 1)
        .await;
    assert!(fed_back, "NACKs and TWCC feedback: {:?}", publisher.state());
    support::delete_all_and_stop(server, vec![publisher, viewer]).await;
}
