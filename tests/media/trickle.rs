//! Trickle ICE and ICE restarts by PATCH (RFC 9725 §4.3) with real WebRTC peers on loopback.

use crate::support;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use reqwest::Url;
use support::client::{Client, Mode, Options, SendHandle};
use support::{delete_all_and_stop, start, wait_idle, WAIT};
use whip_conformance::http::Http;
use whip_echo::config::Config;

const SDPFRAG: &str = "application/trickle-ice-sdpfrag";

/// A client that offers no candidate, trickles its one candidate by PATCH, and sends no check of
/// its own before the server's first one: it connects only if the server took the candidate.
async fn trickling(url: &str, mode: Mode) -> Client {
    let options = Options {
        trickle: true,
        wait_for_server_check: true,
        ..Options::default()
    };
    let url = Url::parse(url).unwrap();
    let loopback = IpAddr::from([127, 0, 0, 1]);
    let mut client = Client::connect_with_options(&Http::new(None), &url, mode, loopback, options)
        .await
        .expect("201");
    assert_eq!(
        client.trickle_status,
        Some(204),
        "trickle PATCH answered 204"
    );
    client.wait_connected(WAIT).await;
    client
}

/// Sends numbered payloads from `from` until `to` has received `count` of them; returns what
/// `to` received, in order.
async fn exchange(from: &SendHandle, to: &mut Client, tag: &str, count: usize) -> Vec<String> {
    let mut got = Vec::new();
    let deadline = Instant::now() + WAIT;
    let mut i = 0;
    while got.len() < count {
        assert!(Instant::now() < deadline, "{tag}: {count} packets in time");
        from.send(format!("{tag}-{i:05}").as_bytes());
        i += 1;
        while let Some(p) = to.try_next_packet(Duration::from_millis(20)).await {
            got.push(String::from_utf8_lossy(&p.payload).into_owned());
        }
    }
    got
}

#[tokio::test]
async fn a_client_that_trickles_its_only_candidate_is_echoed() {
    let server = start(Config::for_tests()).await;
    let url = format!("{}/echo/trickle", server.base_url());
    let mut client = trickling(&url, Mode::SendRecv).await;
    assert!(
        !client.answer.contains("a=end-of-candidates") || client.answer.contains("a=candidate"),
        "the answer carries the server's candidates"
    );
    let clone = client.clone_sender();
    let mut got = Vec::new();
    for i in 0..20 {
        let payload = format!("t-{i}");
        clone.send(payload.as_bytes());
        got.push(client.next_packet(WAIT).await.payload);
    }
    assert_eq!(got.len(), 20);
    assert_eq!(client.delete().await, 200);
    wait_idle(&server).await;
    client.close().await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn trickling_publisher_and_viewer_over_whip_and_whep() {
    let server = start(Config::for_tests()).await;
    let base = server.base_url();
    let publisher = trickling(&format!("{base}/whip/tr"), Mode::Send).await;
    let mut viewer = trickling(&format!("{base}/whep/tr"), Mode::Recv).await;
    let mut publisher = publisher;
    let got = exchange(&publisher.clone_sender(), &mut viewer, "p", 20).await;
    assert!(got.iter().all(|p| p.starts_with("p-")));
    // Both ends restart ICE, one after the other; the stream flows again each time, and the
    // viewer's answer stays send-only (WHEP draft §4.3.5).
    let restarted = viewer.restart().await.expect("viewer restart");
    assert_eq!(restarted.status, 200);
    exchange(&publisher.clone_sender(), &mut viewer, "q", 20).await;
    publisher.restart().await.expect("publisher restart");
    let got = exchange(&publisher.clone_sender(), &mut viewer, "r", 20).await;
    assert!(got.iter().any(|p| p.starts_with("r-")));
    delete_all_and_stop(server, vec![publisher, viewer]).await;
}

#[tokio::test]
async fn ice_restart_mid_stream_keeps_the_echo_going() {
    let server = start(Config::for_tests()).await;
    let url = format!("{}/echo/restart", server.base_url());
    let mut client = Client::connected(&url, Mode::SendRecv).await;
    let first_etag = client.etag.clone().expect("ETag on the 201");
    let sender = client.clone_sender();
    let before = exchange(&sender, &mut client, "a", 20).await;
    assert!(before.iter().all(|p| p.starts_with("a-")));

    // Refusals first: they must leave the session as it is.
    let new_creds = "a=ice-ufrag:zzzz\r\na=ice-pwd:zzzzzzzzzzzzzzzzzzzzzzzz\r\n";
    let stale = client
        .patch_raw(SDPFRAG, Some("\"not-the-etag\""), new_creds)
        .await
        .unwrap();
    assert_eq!(stale.status, 412, "stale ETag: {}", stale.text());
    let missing = client.patch_raw(SDPFRAG, None, new_creds).await.unwrap();
    assert_eq!(
        missing.status,
        428,
        "restart without If-Match: {}",
        missing.text()
    );
    let wrong_type = client
        .patch_raw("application/sdp", Some("*"), new_creds)
        .await
        .unwrap();
    assert_eq!(wrong_type.status, 415);
    let garbage = client
        .patch_raw(SDPFRAG, Some("*"), "a=candidate:broken\r\n")
        .await
        .unwrap();
    assert_eq!(garbage.status, 400, "{}", garbage.text());

    // The restart: 200, a fragment with new credentials, a new ETag; media resumes.
    let started = Instant::now();
    let restarted = client.restart().await.expect("restart");
    assert_eq!(restarted.media_type().as_deref(), Some(SDPFRAG));
    let body = restarted.text();
    assert!(
        body.contains("a=ice-ufrag:") && body.contains("a=ice-pwd:"),
        "{body}"
    );
    assert!(body.contains("a=candidate:"), "{body}");
    let new_etag = client.etag.clone().expect("ETag on the 200");
    assert_ne!(new_etag, first_etag);
    assert!(!body.contains(first_etag.trim_matches('"')), "new ufrag");

    // Continuity: counting on, every payload sent after the restart completes comes back, and
    // the gap is one run (the packets sent while the new checks ran), with nothing after it lost.
    let mut got: Vec<u32> = Vec::new();
    let mut first_echo = None;
    let deadline = Instant::now() + WAIT;
    let mut i = 0u32;
    while got.len() < 50 {
        assert!(Instant::now() < deadline, "echo resumes after the restart");
        sender.send(format!("b-{i:05}").as_bytes());
        i += 1;
        while let Some(p) = client.try_next_packet(Duration::from_millis(20)).await {
            let text = String::from_utf8_lossy(&p.payload).into_owned();
            if let Some(n) = text.strip_prefix("b-") {
                got.push(n.parse().unwrap());
                first_echo.get_or_insert_with(|| started.elapsed());
            }
        }
    }
    let first = got[0];
    assert!(
        got.windows(2).all(|w| w[1] == w[0] + 1),
        "no loss after the echo resumed: {got:?}"
    );
    println!(
        "ICE restart: restart started -> first echo of the new generation {:.1} ms; {first} \
         packet(s) lost meanwhile",
        first_echo.unwrap_or_default().as_secs_f64() * 1e3
    );

    // The old ETag is stale now; a trickle under the new one is fine.
    let old = client
        .patch_raw(SDPFRAG, Some(&first_etag), "a=end-of-candidates\r\n")
        .await
        .unwrap();
    assert_eq!(old.status, 412);
    let eoc = client
        .patch_raw(SDPFRAG, Some(&new_etag), "a=end-of-candidates\r\n")
        .await
        .unwrap();
    assert_eq!(eoc.status, 204);
    assert!(eoc.header("etag").is_none() && eoc.body.is_empty());

    assert_eq!(client.delete().await, 200);
    let gone = client
        .patch_raw(SDPFRAG, None, "a=end-of-candidates\r\n")
        .await
        .unwrap();
    assert_eq!(gone.status, 404);
    wait_idle(&server).await;
    client.close().await;
    server.shutdown().await.unwrap();
}
