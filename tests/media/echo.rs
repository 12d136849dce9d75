//! Echo round trip over a real WebRTC connection on loopback.

use crate::support;

use std::time::Instant;

use support::client::{Client, Mode};
use support::{start, wait_idle, WAIT};
use whip_echo::config::Config;

#[tokio::test]
async fn echo_returns_the_same_payloads_in_order() {
    let server = start(Config::for_tests()).await;
    let url = format!("{}/echo/room1", server.base_url());
    let mut client = Client::connect(&url, Mode::SendRecv).await.expect("201");
    assert!(
        client.answer.contains("a=sendrecv"),
        "echo answer is sendrecv:\n{}",
        client.answer
    );
    client.wait_connected(WAIT).await;

    let first_sent = Instant::now();
    let mut first_echo = None;
    for i in 0u32..50 {
        let payload = format!("opus-frame-{i:04}");
        client.send(payload.as_bytes());
        let got = client.next_packet(WAIT).await;
        first_echo.get_or_insert_with(|| (got.clone(), Instant::now()));
        assert_eq!(
            got.payload,
            payload.as_bytes(),
            "packet {i} echoed unchanged"
        );
    }
    let (_, at) = first_echo.unwrap();
    println!(
        "echo: POST sent -> first echoed packet received: {:.1} ms (connect {:.1} ms + first RTT {:.1} ms)",
        (at - client.posted_at).as_secs_f64() * 1e3,
        (first_sent - client.posted_at).as_secs_f64() * 1e3,
        (at - first_sent).as_secs_f64() * 1e3,
    );
    let resource = client.resource_url.clone();
    let http = reqwest::Client::new();
    assert_eq!(http.delete(&resource).send().await.unwrap().status(), 200);
    assert_eq!(http.delete(&resource).send().await.unwrap().status(), 404);
    wait_idle(&server).await;
    client.close().await;
    server.shutdown().await.unwrap();
}
