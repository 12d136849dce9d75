//! The start-up self-test: every media path is checked by a loopback client, and the results
//! reach `/healthz` (text and JSON).

use crate::support;

use support::{start, wait_idle, WAIT};
use whip_echo::config::Config;
use whip_echo::selftest::{self, PathKind, SelfTest};

#[tokio::test]
async fn every_media_path_answers_and_healthz_says_so() {
    let mut config = Config::for_tests();
    config.self_test = true;
    config.media_threads = 2;
    let server = start(config).await;
    let http = reqwest::Client::new();
    let url = format!("{}/healthz", server.base_url());

    let mut self_test = server.self_test.clone();
    tokio::time::timeout(WAIT, self_test.wait_for(|s| matches!(s, SelfTest::Done(_))))
        .await
        .expect("the self-test finishes")
        .unwrap();
    // The page reads the JSON form.
    let done: serde_json::Value = serde_json::from_str(
        &http
            .get(&url)
            .header("accept", "application/json")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    )
    .unwrap();
    let paths = done["self_test"]["paths"].as_array().unwrap();
    let kinds: Vec<&str> = paths.iter().map(|p| p["path"].as_str().unwrap()).collect();
    // Two loops share the one UDP port: it is checked once (through either loop's socket).
    assert_eq!(kinds, ["udp", "tcp", "tcp-http-port"], "{done}");
    for path in paths {
        assert!(path["error"].is_null(), "{path}");
        assert!(path["ms"].as_f64().unwrap() > 0.0, "{path}");
    }
    let text = http.get(&url).send().await.unwrap().text().await.unwrap();
    assert!(text.starts_with("ok sessions=0\n"), "{text}");
    assert_eq!(text.matches(" ok ").count(), 3, "{text}");
    let http_port = format!(
        "media tcp-http-port 127.0.0.1:{} ok",
        server.http_addr.port()
    );
    assert!(text.contains(&http_port), "{text}");
    // Its sessions are gone.
    wait_idle(&server).await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_path_nobody_listens_on_is_reported_with_the_reason() {
    let server = start(Config::for_tests()).await;
    // Ports that were just free: nothing listens there.
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_tcp = tcp.local_addr().unwrap();
    drop(tcp);
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let closed_udp = udp.local_addr().unwrap();
    drop(udp);
    let reports = selftest::run(
        &server.media,
        &[(PathKind::Tcp, closed_tcp), (PathKind::Udp, closed_udp)],
    )
    .await;
    assert!(!reports[0].ok() && !reports[1].ok(), "{reports:?}");
    assert!(reports[0].error.as_ref().unwrap().contains("connecting"));
    let lines = selftest::summary(&reports);
    assert!(
        lines[0].starts_with(&format!("tcp {closed_tcp} failed: ")),
        "{lines:?}"
    );
    // The sessions it made to check against are gone too.
    wait_idle(&server).await;
    // With the self-test off (the tests' default), /healthz says nothing about it.
    let text = support::get_text(&format!("{}/healthz", server.base_url())).await;
    assert_eq!(text, "ok sessions=0\n");
    assert_eq!(*server.self_test.borrow(), SelfTest::Disabled);
    server.shutdown().await.unwrap();
}
