//! `/metrics` (Prometheus text format) and `/readyz` against a real server with a real echo
//! session: the values move as sessions come, stream and go.

use crate::support;

use std::net::IpAddr;

use reqwest::Url;
use support::client::{Client, Mode, Options};
use support::{metric, start, wait_idle, WAIT};
use whip_conformance::http::Http;
use whip_echo::config::Config;

async fn scrape(http: &reqwest::Client, base: &str) -> String {
    let response = http.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    response.text().await.unwrap()
}

#[tokio::test]
async fn metrics_move_with_sessions_packets_and_refusals() {
    let mut config = Config::for_tests();
    config.max_sessions_per_ip = 1;
    let server = start(config).await;
    let base = server.base_url();
    let http = reqwest::Client::new();
    let before = scrape(&http, &base).await;
    for name in [
        "whip_echo_rtp_packets_received_total",
        "whip_echo_rtp_packets_sent_total",
        "whip_echo_dropped_packets_total{cause=\"unroutable\"}",
        "whip_echo_connect_seconds_count",
        "whip_echo_streams",
        "whip_echo_sessions{role=\"echo\",state=\"connected\"}",
    ] {
        assert!(
            before.contains(name),
            "{name} is exposed from the start:\n{before}"
        );
        assert_eq!(metric(&before, name), 0.0, "{name}");
    }
    assert!(before.contains("# TYPE whip_echo_connect_seconds histogram"));

    let mut client = support::connected(
        &format!("{base}/echo/m"),
        Mode::SendRecv,
        Options::default(),
    )
    .await;
    for i in 0..10u8 {
        client.send(&[i; 100]);
        client.next_packet(WAIT).await;
    }
    // A second session from the same IP is over --max-sessions-per-ip.
    let refused = http
        .post(format!("{base}/whip/m2"))
        .header("content-type", "application/sdp")
        .body(include_str!("../data/offer.sdp"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 429);

    let during = scrape(&http, &base).await;
    assert_eq!(
        metric(&during, "whip_echo_rtp_packets_received_total"),
        10.0
    );
    assert_eq!(metric(&during, "whip_echo_rtp_packets_sent_total"), 10.0);
    // 12 bytes of header and 100 of payload each.
    assert_eq!(metric(&during, "whip_echo_rtp_sent_bytes_total"), 1120.0);
    assert_eq!(
        metric(
            &during,
            "whip_echo_sessions{role=\"echo\",state=\"connected\"}"
        ),
        1.0
    );
    assert_eq!(metric(&during, "whip_echo_streams"), 1.0);
    assert_eq!(metric(&during, "whip_echo_connect_seconds_count"), 1.0);
    assert_eq!(
        metric(
            &during,
            "whip_echo_sessions_rejected_total{cause=\"per_ip\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &during,
            "whip_echo_http_responses_total{route=\"/echo/{stream}\",status=\"201\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &during,
            "whip_echo_http_responses_total{route=\"/whip/{stream}\",status=\"429\"}"
        ),
        1.0
    );

    assert_eq!(client.delete().await, 200);
    wait_idle(&server).await;
    let after = scrape(&http, &base).await;
    assert_eq!(
        metric(&after, "whip_echo_sessions_ended_total{reason=\"deleted\"}"),
        1.0
    );
    assert_eq!(
        metric(
            &after,
            "whip_echo_sessions{role=\"echo\",state=\"connected\"}"
        ),
        0.0
    );
    assert_eq!(metric(&after, "whip_echo_streams"), 0.0);
    let unknown = http.get(format!("{base}/nope")).send().await.unwrap();
    assert_eq!(unknown.status(), 404);
    let last = scrape(&http, &base).await;
    assert_eq!(
        metric(
            &last,
            "whip_echo_http_responses_total{route=\"unmatched\",status=\"404\"}"
        ),
        1.0
    );
    client.close().await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn readyz_is_200_while_serving() {
    // 503 once a media loop died or the server stops: `server.rs`'s unit tests (they can kill
    // a loop).
    let server = start(Config::for_tests()).await;
    let response = reqwest::get(format!("{}/readyz", server.base_url()))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "ready\n");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn api_streams_lists_each_stream_with_its_publisher_and_viewers() {
    use support::client::{AudioCodec, VideoCodec};
    let server = start(Config::for_tests()).await;
    let base = server.base_url();
    let loopback = IpAddr::from([127, 0, 0, 1]);
    let connect = |mode, path: &'static str| {
        let url = Url::parse(&format!("{base}{path}")).unwrap();
        let options = Options {
            audio: AudioCodec::Opus,
            video: Some(VideoCodec::Vp8),
            ..Options::default()
        };
        async move {
            let mut c =
                Client::connect_with_options(&Http::new(None), &url, mode, loopback, options)
                    .await
                    .unwrap_or_else(|r| panic!("{}: {}", r.status, r.body));
            c.wait_connected(WAIT).await;
            c
        }
    };
    let publisher = connect(Mode::Send, "/whip/live").await;
    let viewer = connect(Mode::Recv, "/whep/live").await;
    let waiting = connect(Mode::Recv, "/whep/later").await;
    let list = support::get_json(&format!("{base}/api/streams")).await;
    let streams = list["streams"].as_array().unwrap();
    assert_eq!(streams.len(), 2, "{list}");
    assert_eq!(streams[0]["stream"], "later");
    assert!(streams[0]["publisher"].is_null());
    assert_eq!(streams[0]["viewers"], 1);
    let live = &streams[1];
    assert_eq!(live["stream"], "live");
    assert_eq!(live["viewers"], 1);
    assert_eq!(live["publisher"]["kind"], "whip");
    assert_eq!(live["publisher"]["state"], "connected");
    assert_eq!(
        live["publisher"]["codecs"],
        serde_json::json!(["audio/opus", "video/VP8"])
    );
    assert!(live["publisher"]["uptime_seconds"].as_f64().unwrap() > 0.0);
    support::delete_all_and_stop(server, vec![publisher, viewer, waiting]).await;
}

/// The status of `GET /api/streams` with `token` as the bearer token, if any.
async fn list_status(server: &whip_echo::server::Running, token: Option<&str>) -> u16 {
    let mut r = reqwest::Client::new().get(format!("{}/api/streams", server.base_url()));
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    r.send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn api_streams_needs_the_admin_token_once_the_server_has_tokens() {
    let mut config = Config::for_tests();
    config.access.publish_tokens = vec!["pub-secret".into()];
    let server = start(config).await;
    let get = |token| list_status(&server, token);
    // Tokens but no admin token: nobody may list (stream names may be private).
    assert_eq!(get(None).await, 403);
    assert_eq!(get(Some("pub-secret")).await, 403);
    server.shutdown().await.unwrap();

    let mut config = Config::for_tests();
    config.access.publish_tokens = vec!["pub-secret".into()];
    config.access.admin_token = Some("admin-secret".into());
    let server = start(config).await;
    let get = |token| list_status(&server, token);
    assert_eq!(get(None).await, 401);
    assert_eq!(get(Some("pub-secret")).await, 401);
    assert_eq!(get(Some("admin-secret")).await, 200);
    server.shutdown().await.unwrap();
}
