//! The client report (`/resource/{id}/report`, issue 31) against real webrtc-rs clients: named
//! in the 201 by its `Link`, live while the session runs and kept after it ends, with what the
//! client did right and wrong and the RFC section each finding rests on.

use crate::support;

use std::time::Duration;

use serde_json::Value;
use support::client::{Client, Mode};
use support::{start, wait_idle, WAIT};
use whip_echo::config::Config;

/// The report of the session at `resource_url`, as JSON.
async fn report(resource_url: &str) -> Value {
    let response = reqwest::get(format!("{resource_url}/report"))
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "the report is served");
    assert_eq!(
        response.headers()["content-type"],
        "application/json",
        "JSON by default"
    );
    serde_json::from_str(&response.text().await.unwrap()).unwrap()
}

/// The JSON body of `request`'s answer.
async fn json(request: reqwest::RequestBuilder) -> Value {
    serde_json::from_str(&request.send().await.unwrap().text().await.unwrap()).unwrap()
}

/// The status of `request`'s answer.
async fn status(request: reqwest::RequestBuilder) -> u16 {
    request.send().await.unwrap().status().as_u16()
}

/// The findings of `report` at `level`, their texts.
fn findings(report: &Value, level: &str) -> Vec<String> {
    (report["findings"].as_array().unwrap().iter())
        .filter(|f| f["level"] == level)
        .map(|f| format!("{} [{}]", f["text"], f["basis"]))
        .collect()
}

#[tokio::test]
async fn a_well_behaved_client_gets_a_report_without_warnings_live_and_after_its_delete() {
    let server = start(Config::for_tests()).await;
    let url = format!("{}/echo/reported", server.base_url());
    let http = reqwest::Client::new();
    // The 201 names the report.
    let offer = support::client::offer(Mode::SendRecv);
    let created = (http
        .post(&url)
        .header("content-type", "application/sdp")
        .body(offer))
    .send()
    .await
    .unwrap();
    assert_eq!(created.status(), 201);
    let location = created.headers()["location"].to_str().unwrap().to_owned();
    let resource = format!("{}{location}", server.base_url());
    let links: Vec<&str> = (created.headers().get_all("link").iter())
        .filter_map(|v| v.to_str().ok())
        .collect();
    assert!(
        links
            .iter()
            .any(|l| l.contains(&format!("{location}/report>"))
                && l.contains("rel=\"urn:whip-echo:client-report\"")),
        "{links:?}"
    );
    assert_eq!(http.delete(&resource).send().await.unwrap().status(), 200);

    let mut client = Client::connected(&url, Mode::SendRecv).await;
    for i in 0..20 {
        support::echoed(&mut client, format!("frame {i}").as_bytes()).await;
    }
    let live = report(&client.resource_url).await;
    assert_eq!(live["role"], "echo");
    assert_eq!(live["state"], "connected");
    assert!(live["http"]["user_agent"]
        .as_str()
        .unwrap()
        .starts_with("whip-conformance/"));
    assert_eq!(live["offer"]["bundled"], true);
    assert!(
        live["connectivity"]["connected_ms"].as_u64().is_some(),
        "{live:#}"
    );
    assert_eq!(live["connectivity"]["transport"], "udp");
    let from = (live["tracks"].as_array().unwrap().iter())
        .find(|t| t["direction"] == "from_client")
        .expect("the client's track");
    assert!(from["packets"].as_u64().unwrap() >= 20, "{from}");
    assert_eq!(from["lost"], 0);
    assert!(findings(&live, "warn").is_empty(), "{live:#}");
    assert!(findings(&live, "fail").is_empty(), "{live:#}");
    assert!(findings(&live, "ok")
        .iter()
        .any(|f| f.contains("connected in")));

    // For people: findings first.
    let text = (http.get(format!("{}/report", client.resource_url)))
        .header("accept", "text/plain")
        .send()
        .await
        .unwrap();
    assert!(text.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = text.text().await.unwrap();
    assert!(
        text.starts_with("whip-echo client report: echo session"),
        "{text}"
    );
    assert!(text.find("Findings") < text.find("Tracks"), "{text}");

    // After its DELETE, the report stays for the grace period, ended by DELETE.
    assert_eq!(client.delete().await, 200);
    let ended = report(&client.resource_url).await;
    assert_eq!(ended["state"], "ended");
    assert_eq!(ended["ended"], "deleted");
    assert_eq!(ended["http"]["deleted"], true);
    assert!(findings(&ended, "ok").iter().any(|f| f.contains("DELETE")));
    assert!(findings(&ended, "warn").is_empty(), "{ended:#}");
    client.close().await;
    wait_idle(&server).await;
    let unknown = format!("{}/resource/{}/report", server.base_url(), "0".repeat(32));
    assert_eq!(reqwest::get(unknown).await.unwrap().status(), 404);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_patch_without_if_match_is_a_failed_finding() {
    let server = start(Config::for_tests()).await;
    let url = format!("{}/whip/no-if-match", server.base_url());
    let client = Client::connected(&url, Mode::Send).await;
    let frag = "a=candidate:1 1 udp 2130706431 127.0.0.1 9 typ host\r\n";
    let refused = client
        .patch_raw("application/trickle-ice-sdpfrag", None, frag)
        .await
        .unwrap();
    assert_eq!(refused.status, 428);
    let report = report(&client.resource_url).await;
    assert_eq!(report["http"]["patches"], 1);
    assert_eq!(report["http"]["patches_without_if_match"], 1);
    let failed = findings(&report, "fail");
    assert!(
        failed
            .iter()
            .any(|f| f.contains("If-Match") && f.contains("RFC 9725 §4.3.1")),
        "{failed:?}"
    );
    assert_eq!(client.delete().await, 200);
    client.close().await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_client_that_vanishes_without_delete_is_told_so() {
    let mut config = Config::for_tests();
    config.ice_timeout = Duration::from_secs(2);
    let server = start(config).await;
    let url = format!("{}/echo/vanishing", server.base_url());
    let client = Client::connected(&url, Mode::SendRecv).await;
    let resource = client.resource_url.clone();
    client.vanish().await;
    wait_idle(&server).await;
    let report = tokio::time::timeout(WAIT, report(&resource)).await.unwrap();
    assert_eq!(report["state"], "ended");
    assert_eq!(report["ended"], "failed");
    assert_eq!(report["http"]["deleted"], false);
    let warned = findings(&report, "warn");
    assert!(
        warned
            .iter()
            .any(|f| f.contains("without DELETE") && f.contains("RFC 9725 §4.2")),
        "{warned:?}"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn operators_list_sessions_read_their_reports_and_kick_one_with_the_admin_token() {
    // A server without tokens: the list and reports are open, without client addresses; the
    // kick is refused (nobody could be trusted with it).
    let server = start(Config::for_tests()).await;
    let base = server.base_url();
    let client = Client::connected(&format!("{base}/echo/listed"), Mode::SendRecv).await;
    let http = reqwest::Client::new();
    let list = json(http.get(format!("{base}/api/sessions"))).await;
    let sessions = list["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 1, "{list:#}");
    let session = &sessions[0];
    assert_eq!(
        (&session["stream"], &session["role"]),
        (&"listed".into(), &"echo".into())
    );
    assert!(session["user_agent"]
        .as_str()
        .unwrap()
        .starts_with("whip-conformance/"));
    assert!(
        session["client"].is_null(),
        "no address without the admin token: {session}"
    );
    let id = session["id"].as_str().unwrap().to_owned();
    assert!(
        !client.resource_url.contains(&id),
        "the public id is not the capability"
    );
    let report = json(http.get(format!("{base}/api/sessions/{id}/report"))).await;
    assert_eq!(report["stream"], "listed");
    assert!(report["connectivity"]["remote"].is_null(), "{report:#}");
    let kicked = http
        .delete(format!("{base}/api/sessions/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(kicked.status(), 403);
    assert!(kicked.text().await.unwrap().contains("--admin-token"));
    assert_eq!(client.delete().await, 200);
    client.close().await;
    server.shutdown().await.unwrap();

    // With --admin-token: listing needs it (and shows addresses), and so does the kick.
    let mut config = Config::for_tests();
    config.access.admin_token = Some("sesame".into());
    let server = start(config).await;
    let base = server.base_url();
    let mut client = Client::connected(&format!("{base}/echo/kicked"), Mode::SendRecv).await;
    assert_eq!(
        http.get(format!("{base}/api/sessions"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let list = json(
        http.get(format!("{base}/api/sessions"))
            .bearer_auth("sesame"),
    )
    .await;
    let session = &list["sessions"][0];
    assert!(
        session["client"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:"),
        "{session}"
    );
    let id = session["id"].as_str().unwrap().to_owned();
    let url = format!("{base}/api/sessions/{id}");
    assert_eq!(http.delete(&url).send().await.unwrap().status(), 401);
    assert_eq!(status(http.delete(&url).bearer_auth("wrong")).await, 401);
    assert_eq!(status(http.delete(&url).bearer_auth("sesame")).await, 200);
    // The client sees its session end, and its resource says why.
    assert!(
        client.until(WAIT, |s| s.ended).await,
        "the kicked client saw the end"
    );
    let gone = http.get(&client.resource_url).send().await.unwrap();
    assert_eq!(gone.status(), 410);
    assert!(gone.text().await.unwrap().contains("an operator"));
    assert_eq!(status(http.delete(&url).bearer_auth("sesame")).await, 404);
    client.close().await;
    wait_idle(&server).await;
    server.shutdown().await.unwrap();
}

/// `whip-conformance client` as a library: it names the URLs, finds the client's session when it
/// arrives, follows it and prints its report when it ends; whether a finding failed is its
/// verdict (the command's exit status).
#[tokio::test]
async fn whip_conformance_client_follows_a_client_to_its_end_and_judges_it() {
    use whip_conformance::client::{run, Watch};
    let server = start(Config::for_tests()).await;
    let base: reqwest::Url = server.base_url().parse().unwrap();
    for misbehave in [false, true] {
        let watch = Watch::new(base.clone(), None, WAIT);
        let url = format!("{}/whip/{}", server.base_url(), watch.stream);
        let follow = tokio::spawn(async move {
            let mut out = Vec::new();
            let verdict = run(&watch, &mut out).await;
            (verdict, String::from_utf8(out).unwrap())
        });
        let client = Client::connected(&url, Mode::Send).await;
        for _ in 0..10 {
            client.send(b"opus");
        }
        if misbehave {
            let frag = "a=candidate:1 1 udp 2130706431 127.0.0.1 9 typ host\r\n";
            let refused = client.patch_raw("application/trickle-ice-sdpfrag", None, frag);
            assert_eq!(refused.await.unwrap().status, 428);
        }
        // Its report must have been followed live before the end: wait until it is listed.
        let list = format!("{}/api/sessions", server.base_url());
        while !reqwest::get(&list)
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
            .contains("client-test-")
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(client.delete().await, 200);
        client.close().await;
        let (verdict, out) = tokio::time::timeout(WAIT, follow).await.unwrap().unwrap();
        assert!(out.contains(&url), "the WHIP URL to give the client: {out}");
        assert!(out.contains("Findings"), "{out}");
        assert_eq!(verdict, Ok(!misbehave), "{out}");
        if misbehave {
            assert!(out.contains("FAIL") && out.contains("If-Match"), "{out}");
        }
    }
    wait_idle(&server).await;
    server.shutdown().await.unwrap();
}

/// A publisher whose encoder answers no keyframe request (as real OBS 30.2's does) is told so;
/// one that answers them is not.
#[tokio::test]
async fn keyframe_requests_a_publisher_leaves_unanswered_are_a_warning() {
    use support::client::{Options, VideoCodec};
    let server = start(Config::for_tests()).await;
    let base = server.base_url();
    for deaf in [false, true] {
        let stream = format!("keyframes-{deaf}");
        let video = Options {
            video: Some(VideoCodec::Vp8),
            ignore_keyframe_requests: deaf,
            ..Options::default()
        };
        let publisher =
            support::connected(&format!("{base}/whip/{stream}"), Mode::Send, video).await;
        let sender = publisher.clone_sender();
        sender.send_video_frame(b"first", true);
        // A viewer that waits for a keyframe: whip-echo asks the publisher every 0.5 s.
        let viewer = support::connected(&format!("{base}/whep/{stream}"), Mode::Recv, video).await;
        let mut every = tokio::time::interval(Duration::from_millis(33));
        for _ in 0..90 {
            every.tick().await;
            // Deltas, unless a request made a key frame due (as an encoder decides).
            publisher.send_kind(
                rtc::rtp_transceiver::rtp_sender::RtpCodecKind::Video,
                b"frame",
            );
        }
        let report = report(&publisher.resource_url).await;
        let k = &report["keyframes"];
        // The deaf one is asked again and again while its viewer waits.
        let asked = k["requests_sent"].as_u64().unwrap();
        assert!(asked >= if deaf { 3 } else { 1 }, "{k}");
        let warned = findings(&report, "warn");
        let told = warned
            .iter()
            .any(|f| f.contains("keyframe requests not answered"));
        assert_eq!(told, deaf, "{k} {warned:?}");
        if !deaf {
            assert!(k["answered"].as_u64().unwrap() >= 1, "{k}");
        }
        for client in [publisher, viewer] {
            assert_eq!(client.delete().await, 200);
            client.close().await;
        }
    }
    wait_idle(&server).await;
    server.shutdown().await.unwrap();
}

/// Each report read is built on a media loop, so reading reports is rate-limited per client as
/// POSTs and PATCHes are (`--request-rate-per-ip`, `--request-burst-per-ip`): a client that
/// polls faster gets 429.
#[tokio::test]
async fn reading_reports_is_rate_limited_per_client() {
    let mut config = Config::for_tests();
    config.request_rate_per_ip = 1;
    config.request_burst_per_ip = 5;
    let server = start(config).await;
    let base = server.base_url();
    let client = Client::connected(&format!("{base}/echo/polled"), Mode::SendRecv).await;
    let http = reqwest::Client::new();
    // The POST took one of the five; the reads take the rest, then are refused, whichever they
    // read (the budget is the client's).
    let mut statuses = Vec::new();
    for url in [
        format!("{}/report", client.resource_url),
        format!("{base}/api/sessions"),
    ] {
        for _ in 0..5 {
            statuses.push(status(http.get(&url)).await);
        }
    }
    assert!(statuses[..4].iter().all(|s| *s == 200), "{statuses:?}");
    assert!(statuses[5..].iter().all(|s| *s == 429), "{statuses:?}");
    assert_eq!(client.delete().await, 200);
    client.close().await;
    server.shutdown().await.unwrap();
}
