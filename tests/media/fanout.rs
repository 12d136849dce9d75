//! WHIP publish + WHEP play over real WebRTC connections on loopback.

use crate::support;

use std::time::Duration;

use support::client::{Client, Mode};
use support::{delete_all_and_stop, start, wait_idle, WAIT};
use whip_echo::config::{Config, PublisherConflict};

/// Sends `count` counter payloads tagged `tag` and checks every viewer receives them in order on one
/// SSRC with consecutive sequence numbers.
async fn publish_and_check(publisher: &Client, viewers: &mut [&mut Client], tag: &str, count: u32) {
    let mut last_seq: Vec<Option<(u32, u16)>> = vec![None; viewers.len()];
    for i in 0..count {
        let payload = format!("{tag}-{i:04}");
        publisher.send(payload.as_bytes());
        for (v, viewer) in viewers.iter_mut().enumerate() {
            let got = viewer.next_packet(WAIT).await;
            assert_eq!(got.payload, payload.as_bytes(), "viewer {v} packet {i}");
            if let Some((ssrc, seq)) = last_seq[v] {
                assert_eq!(got.ssrc, ssrc, "viewer {v} keeps one SSRC");
                assert_eq!(
                    got.seq,
                    seq.wrapping_add(1),
                    "viewer {v} sequence continues"
                );
            }
            last_seq[v] = Some((got.ssrc, got.seq));
        }
    }
}

/// A server whose streams refuse a second live publisher (409).
fn rejecting() -> Config {
    let mut config = Config::for_tests();
    config.publisher_conflict = Some(PublisherConflict::Reject);
    config
}

#[tokio::test]
async fn whip_publisher_reaches_two_whep_viewers() {
    let server = start(rejecting()).await;
    let base = server.base_url();
    let mut publisher = Client::connect(&format!("{base}/whip/live"), Mode::SendRecv)
        .await
        .unwrap();
    // RFC 9725 §4.2: the WHIP answer is recvonly even for a sendrecv offer.
    assert!(
        publisher.answer.contains("a=recvonly"),
        "{}",
        publisher.answer
    );
    let mut v1 = Client::connect(&format!("{base}/whep/live"), Mode::Recv)
        .await
        .unwrap();
    let mut v2 = Client::connect(&format!("{base}/whep/live"), Mode::Recv)
        .await
        .unwrap();
    for viewer in [&v1, &v2] {
        assert!(viewer.answer.contains("a=sendonly"), "{}", viewer.answer);
    }
    publisher.wait_connected(WAIT).await;
    v1.wait_connected(WAIT).await;
    v2.wait_connected(WAIT).await;
    publish_and_check(&publisher, &mut [&mut v1, &mut v2], "pub", 30).await;

    // With `reject`, a second publisher on a live stream is refused.
    let second = Client::connect(&format!("{base}/whip/live"), Mode::Send).await;
    assert_eq!(second.err().map(|r| r.status), Some(409));

    delete_all_and_stop(server, vec![publisher, v1, v2]).await;
}

#[tokio::test]
async fn viewer_joins_first_and_survives_publisher_change() {
    let server = start(Config::for_tests()).await;
    let base = server.base_url();
    let mut viewer = Client::connected(&format!("{base}/whep/show"), Mode::Recv).await;

    let first = Client::connected(&format!("{base}/whip/show"), Mode::Send).await;
    publish_and_check(&first, &mut [&mut viewer], "first", 10).await;
    let last = viewer_last(&mut viewer, &first, "first-end").await;

    // The first publisher leaves (DELETE); a new one publishes to the same stream.
    assert_eq!(first.delete().await, 200);
    first.close().await;
    let second = Client::connected(&format!("{base}/whip/show"), Mode::Send).await;
    second.send(b"second-0000");
    let got = viewer.next_packet(WAIT).await;
    assert_eq!(got.payload, &b"second-0000"[..]);
    assert_eq!(got.ssrc, last.ssrc, "the viewer's SSRC stays the same");
    assert_eq!(
        got.seq,
        last.seq.wrapping_add(1),
        "sequence continues across publishers"
    );
    assert!(
        got.timestamp.wrapping_sub(last.timestamp) >= 960,
        "timestamps move forward"
    );
    publish_and_check(&second, &mut [&mut viewer], "second", 10).await;

    second.close().await;
    viewer.close().await;
    // Both clients closed politely without DELETE: the server notices and tears both down.
    wait_idle(&server).await;
    server.shutdown().await.unwrap();
}

async fn viewer_last(
    viewer: &mut Client,
    publisher: &Client,
    tag: &str,
) -> support::client::Received {
    publisher.send(tag.as_bytes());
    let got = viewer.next_packet(WAIT).await;
    assert_eq!(got.payload, tag.as_bytes());
    got
}

#[tokio::test]
async fn vanished_client_is_reaped_after_the_ice_timeout() {
    let mut config = Config::for_tests();
    config.ice_timeout = Duration::from_secs(2);
    let server = start(config).await;
    let client =
        Client::connected(&format!("{}/echo/gone", server.base_url()), Mode::SendRecv).await;
    let url = client.resource_url.clone();
    client.vanish().await;
    wait_idle(&server).await;
    // The reaped resource is still deletable for a grace period, then gone.
    let http = reqwest::Client::new();
    assert_eq!(http.delete(&url).send().await.unwrap().status(), 200);
    assert_eq!(http.delete(&url).send().await.unwrap().status(), 404);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_post_that_never_connects_is_reaped() {
    let mut config = Config::for_tests();
    config.ice_timeout = Duration::from_secs(1);
    let server = start(config).await;
    let client = Client::connect(&format!("{}/whep/nobody", server.base_url()), Mode::Recv)
        .await
        .unwrap();
    client.vanish().await;
    wait_idle(&server).await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn shutdown_closes_every_session() {
    let server = start(Config::for_tests()).await;
    let client =
        Client::connected(&format!("{}/echo/bye", server.base_url()), Mode::SendRecv).await;
    let mut stats = server.media.stats();
    server.shutdown().await.unwrap();
    let last = stats.borrow_and_update();
    assert!(!last.running && last.sessions == 0, "{last:?}");
    client.close().await;
}

#[tokio::test]
async fn a_new_publisher_replaces_one_whose_consent_failed() {
    let mut config = rejecting();
    config.ice_timeout = Duration::from_secs(20);
    let server = start(config).await;
    let url = format!("{}/whip/flaky", server.base_url());
    let old = Client::connected(&url, Mode::Send).await;
    old.vanish().await;
    // While the old publisher is still considered live, a second one is refused.
    assert_eq!(
        Client::connect(&url, Mode::Send)
            .await
            .err()
            .map(|r| r.status),
        Some(409)
    );
    // Once its consent checks fail (disconnected, well before the 20 s teardown), it is replaced.
    let mut stats = server.media.stats();
    tokio::time::timeout(WAIT, stats.wait_for(|s| s.disconnected == 1))
        .await
        .expect("disconnected in time")
        .unwrap();
    let new = Client::connected(&url, Mode::Send).await;
    assert_eq!(server.media.stats().borrow().sessions, 1);
    new.close().await;
    wait_idle(&server).await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_new_publisher_takes_over_a_live_one_and_viewers_keep_playing() {
    // --publisher-conflict takeover (the default with tokens): a second publisher of a live
    // stream replaces the first.
    let mut config = Config::for_tests();
    config.publisher_conflict = Some(PublisherConflict::Takeover);
    let server = start(config).await;
    let base = server.base_url();
    let url = format!("{base}/whip/takeover");
    let mut viewer = Client::connected(&format!("{base}/whep/takeover"), Mode::Recv).await;
    let first = Client::connected(&url, Mode::Send).await;
    publish_and_check(&first, &mut [&mut viewer], "first", 10).await;
    let last = viewer_last(&mut viewer, &first, "first-end").await;

    // The first publisher is connected and healthy; the second one still gets the stream.
    let second = Client::connected(&url, Mode::Send).await;
    let mut stats = server.media.stats();
    tokio::time::timeout(WAIT, stats.wait_for(|s| s.sessions == 2))
        .await
        .expect("the first publisher's session ended")
        .unwrap();
    second.send(b"second-0000");
    let got = viewer.next_packet(WAIT).await;
    assert_eq!(got.payload, &b"second-0000"[..]);
    assert_eq!(got.ssrc, last.ssrc, "the viewer's SSRC stays the same");
    assert_eq!(got.seq, last.seq.wrapping_add(1), "sequence continues");
    publish_and_check(&second, &mut [&mut viewer], "second", 10).await;

    // What the first publisher sends now goes nowhere, and its resource still answers DELETE
    // within the grace period.
    first.send(b"stale");
    second.send(b"second-end");
    assert_eq!(viewer.next_packet(WAIT).await.payload, &b"second-end"[..]);
    assert_eq!(first.delete().await, 200);
    first.close().await;
    delete_all_and_stop(server, vec![second, viewer]).await;
}
