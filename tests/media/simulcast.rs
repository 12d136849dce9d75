//! Simulcast in and a layer out, with real WebRTC peers on loopback: a publisher shaped like
//! OBS 32's WHIP simulcast (rids `0`, `1`, `2`, top first; the mid and rid header extensions; no
//! video SSRC in its offer) and WHEP viewers that take the top layer by default, ask for one at
//! their POST (`?layer=`) or change it on the layer URL their 201 names (the WHEP video layer
//! extension), switching only at the new layer's keyframe with their sequence unbroken.

use crate::support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::client::{Client, Mode, Options, Received, VideoCodec};
use support::{connected, delete_all_and_stop, get_json, start, WAIT};
use whip_echo::config::Config;

/// OBS 32's rids: `0` is its top layer.
const RIDS: &[&str] = &["0", "1", "2"];
/// Frame sizes per layer (bytes): the top one carries the most.
const SIZES: [usize; 3] = [900, 400, 100];

/// The OBS-shaped publisher: H.264 video as three simulcast layers.
fn obs() -> Options {
    Options {
        video: Some(VideoCodec::H264),
        simulcast: RIDS,
        ..Options::default()
    }
}

/// A viewer of H.264 video.
fn viewer() -> Options {
    Options {
        video: Some(VideoCodec::H264),
        ..Options::default()
    }
}

/// Sends a frame on each layer marked on in `on` every 33 ms (the frame's first byte is its
/// layer) until `on` is dropped by the test.
fn send_layers(publisher: &Client, on: Arc<Mutex<[bool; 3]>>) -> tokio::task::JoinHandle<()> {
    let sender = publisher.clone_sender();
    let weak = Arc::downgrade(&on);
    drop(on);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(33));
        while let Some(on) = weak.upgrade() {
            let on = *on.lock().unwrap();
            for layer in 0..3 {
                if on[layer] {
                    let mut frame = vec![layer as u8; SIZES[layer]];
                    frame[1] = 0xAA;
                    sender.send_layer_frame(layer, &frame);
                }
            }
            tick.tick().await;
        }
    })
}

/// The next video packet `viewer` receives.
async fn next_video(viewer: &mut Client) -> Received {
    loop {
        let packet = viewer.next_packet(WAIT).await;
        if packet.payload.len() > 1 && packet.payload[1] == 0xAA {
            return packet;
        }
    }
}

/// Reads `viewer`'s video until a packet of `layer` arrives; checks on the way that a new layer
/// starts at a key frame and that the sequence never breaks. The first packet of `layer`.
async fn until_layer(viewer: &mut Client, layer: u8) -> Received {
    let mut last: Option<Received> = None;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no frame of layer {layer} in time"
        );
        let packet = next_video(viewer).await;
        if let Some(last) = &last {
            assert_eq!(packet.seq, last.seq.wrapping_add(1), "the sequence goes on");
            assert_eq!(packet.ssrc, last.ssrc, "one SSRC per leg");
            if packet.payload[0] != last.payload[0] {
                assert!(packet.keyframe, "a layer switch starts at a key frame");
            }
        }
        if packet.payload[0] == layer {
            return packet;
        }
        last = Some(packet);
    }
}

/// The layers `/api/streams` lists for `stream`, and its viewers' layers.
async fn listed(base: &str, stream: &str) -> (serde_json::Value, serde_json::Value) {
    let streams = get_json(&format!("{base}/api/streams")).await;
    let entry = streams["streams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stream"] == stream)
        .cloned()
        .unwrap_or_else(|| panic!("{stream} listed: {streams}"));
    (
        entry["publisher"]["sources"].clone(),
        entry["players"].clone(),
    )
}

#[tokio::test]
async fn an_obs_shaped_simulcast_publisher_reaches_viewers_on_the_layer_each_chooses() {
    // The offer is OBS 32's shape: rids, simulcast, mid and rid extensions, no video SSRC.
    let offer = support::client::offer_with(Mode::Send, &obs());
    let video = offer.split("m=video").nth(1).expect("a video section");
    for line in [
        "a=rid:0 send",
        "a=rid:2 send",
        "a=simulcast:send 0;1;2",
        "sdes:rtp-stream-id",
    ] {
        assert!(video.contains(line), "{line} in {video}");
    }
    assert!(!video.contains("a=ssrc:"), "no video SSRC: {video}");

    let server = start(Config::for_tests()).await;
    let base = server.base_url();
    let publisher = connected(&format!("{base}/whip/obs"), Mode::Send, obs()).await;
    let answer = publisher.answer.split("m=video").nth(1).unwrap().to_owned();
    assert!(answer.contains("a=simulcast:recv 0;1;2"), "{answer}");
    assert!(
        answer.contains("sdes:rtp-stream-id") && answer.contains("sdes:mid"),
        "{answer}"
    );
    let on = Arc::new(Mutex::new([true; 3]));
    let sending = send_layers(&publisher, on.clone());

    // The default viewer gets the top layer (learnt from the bytes: `0` here).
    let mut top = connected(&format!("{base}/whep/obs"), Mode::Recv, viewer()).await;
    let link = top
        .headers
        .get_all("link")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned());
    let layer_url = link
        .filter(|l| l.contains("urn:ietf:params:whep:ext:core:layer"))
        .map(|l| l[1..l.find('>').unwrap()].to_owned())
        .next()
        .expect("a layer Link in the 201");
    assert_eq!(
        layer_url,
        format!("{}/layer", top.resource_url.trim_start_matches(&base))
    );
    let layer_url = format!("{base}{layer_url}");
    until_layer(&mut top, 0).await;
    // A viewer that asks for the low layer at its POST gets it, and only it.
    let mut low = connected(&format!("{base}/whep/obs?layer=2"), Mode::Recv, viewer()).await;
    let first = until_layer(&mut low, 2).await;
    assert!(first.keyframe);
    for _ in 0..20 {
        assert_eq!(next_video(&mut low).await.payload[0], 2);
    }

    // Every layer reached the server and is listed, with its rate; each viewer's layer too.
    let (sources, players) = listed(&base, "obs").await;
    let video: Vec<_> = sources
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["kind"] == "video")
        .collect();
    assert_eq!(video.len(), 3, "{sources}");
    for s in &video {
        assert!(
            s["active"] == true && s["packets_per_second"].as_u64().unwrap() > 10,
            "{s}"
        );
    }
    assert_eq!(video[0]["rid"], "0", "the top layer first: {sources}");
    assert_eq!(video[0]["default"], true);
    // Layer `1`, which no viewer takes, is counted as not forwarded.
    let metrics = support::get_text(&format!("{base}/metrics")).await;
    let other = support::metric(
        &metrics,
        "whip_echo_dropped_packets_total{cause=\"other_source\"}",
    );
    assert!(other > 0.0, "the untaken layer's packets are counted");
    let mut layers: Vec<_> = players
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["layer"].clone())
        .collect();
    layers.sort_by_key(|l| l.to_string());
    assert_eq!(
        layers,
        [serde_json::json!("0"), serde_json::json!("2")],
        "{players}"
    );

    // The default viewer changes to the middle layer on its layer URL, as Broadcast Box's
    // page asks: it switches at that layer's key frame, its sequence unbroken.
    let http = reqwest::Client::new();
    let post = |body: &'static str| {
        http.post(&layer_url)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    // Layer `1` pauses first: until its key frame comes, the viewer keeps getting layer `0`.
    on.lock().unwrap()[1] = false;
    let response = post(r#"{"mediaId":"1","encodingId":"1"}"#).await.unwrap();
    assert_eq!(response.status(), 200);
    let state: serde_json::Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
    assert_eq!(state["requested"], "1", "{state}");
    for _ in 0..10 {
        assert_eq!(
            next_video(&mut top).await.payload[0],
            0,
            "the old layer plays on"
        );
    }
    on.lock().unwrap()[1] = true;
    until_layer(&mut top, 1).await;
    let state = http
        .get(&layer_url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let state: serde_json::Value = serde_json::from_str(&state).unwrap();
    assert_eq!(
        (state["requested"].clone(), state["current"].clone()),
        ("1".into(), "1".into())
    );
    assert_eq!(state["layers"].as_array().unwrap().len(), 3, "{state}");

    // Refusals say why: a rid the publisher does not send, SVC layer ids, another body type.
    let response = post(r#"{"encodingId":"h"}"#).await.unwrap();
    assert_eq!(response.status(), 400);
    let why = response.text().await.unwrap();
    assert!(why.contains("no layer \"h\": the publisher sends"), "{why}");
    assert_eq!(post(r#"{"spatialLayerId":1}"#).await.unwrap().status(), 400);
    let form = http
        .post(&layer_url)
        .header("content-type", "text/plain")
        .body("1");
    assert_eq!(form.send().await.unwrap().status(), 415);
    // A request is a handful of fields: a body past MAX_LAYER_BODY (1 KiB) is refused unread.
    let padded = format!(r#"{{"encodingId":"1","pad":"{}"}}"#, "x".repeat(1024));
    let big = http
        .post(&layer_url)
        .header("content-type", "application/json")
        .body(padded);
    assert_eq!(big.send().await.unwrap().status(), 413);
    let publisher_layer = format!("{}/layer", publisher.resource_url);
    let response = http.get(&publisher_layer).send().await.unwrap();
    assert_eq!(response.status(), 400, "a publisher has no layer to choose");
    let bad = Client::connect(&format!("{base}/whep/obs?layer=a%20b"), Mode::Recv).await;
    assert_eq!(bad.err().map(|r| r.status), Some(400));

    // Back to the default ({} as the drafts say): the top layer again.
    assert_eq!(post("{}").await.unwrap().status(), 200);
    until_layer(&mut top, 0).await;

    // The top layer stops (OBS lowering its output, a browser turning it off): the default
    // viewer follows it down, the low viewer stays.
    on.lock().unwrap()[0] = false;
    until_layer(&mut top, 1).await;
    assert_eq!(next_video(&mut low).await.payload[0], 2);
    // Listed as inactive once silent for a second.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (sources, _) = listed(&base, "obs").await;
        let stopped = sources
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["rid"] == "0")
            .cloned();
        if stopped.map(|s| s["active"].clone()) == Some(false.into()) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{sources}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    drop(on);
    let _ = sending.await;
    delete_all_and_stop(server, vec![publisher, top, low]).await;
}

#[tokio::test]
async fn layers_nothing_binds_are_counted_not_dropped_silently() {
    // A simulcast publisher whose packets carry no mid or rid (and whose offer no SSRC): no
    // track takes them. Connected, but no video: the server says so.
    let server = start(Config::for_tests()).await;
    let base = server.base_url();
    let bare = Options {
        bare_layers: true,
        ..obs()
    };
    let publisher = connected(&format!("{base}/whip/bare"), Mode::Send, bare).await;
    let on = Arc::new(Mutex::new([true; 3]));
    let sending = send_layers(&publisher, on.clone());
    let deadline = tokio::time::Instant::now() + WAIT;
    let unbound = loop {
        let metrics = support::get_text(&format!("{base}/metrics")).await;
        let count = support::metric(
            &metrics,
            "whip_echo_dropped_packets_total{cause=\"unbound\"}",
        );
        if count >= 30.0 {
            break count;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "unbound packets counted: {count}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let streams = get_json(&format!("{base}/api/streams")).await;
    let publisher_info = &streams["streams"][0]["publisher"];
    assert!(
        publisher_info["unbound_packets"].as_u64().unwrap() >= 30,
        "{streams}"
    );
    let sources = publisher_info["sources"].as_array().unwrap();
    assert!(
        sources.iter().all(|s| s["kind"] != "video"),
        "no video source: {streams}"
    );
    println!("# {unbound} packets of unbound layers counted");
    drop(on);
    let _ = sending.await;
    delete_all_and_stop(server, vec![publisher]).await;
}

#[tokio::test]
async fn a_viewer_of_another_codec_asks_for_no_keyframes() {
    // A VP8 viewer waits for the stream; the publisher sends H.264. The viewer gets nothing (the
    // codec mismatch is counted) and must not ask the publisher for keyframes: its leg would
    // read H.264 by VP8's rules, never see a key frame, and ask twice a second for ever.
    let server = start(Config::for_tests()).await;
    let base = server.base_url();
    let vp8 = Options {
        video: Some(VideoCodec::Vp8),
        ..Options::default()
    };
    let viewer = connected(&format!("{base}/whep/mixed"), Mode::Recv, vp8).await;
    let h264 = Options {
        video: Some(VideoCodec::H264),
        ..Options::default()
    };
    let publisher = connected(&format!("{base}/whip/mixed"), Mode::Send, h264).await;
    let frames = |n: usize| {
        let sender = publisher.clone_sender();
        async move {
            let mut tick = tokio::time::interval(Duration::from_millis(33));
            for _ in 0..n {
                sender.send_video_frame(&[0xAA; 200], false);
                tick.tick().await;
            }
        }
    };
    frames(30).await;
    let before = publisher.state().keyframe_requests;
    frames(60).await;
    let after = publisher.state().keyframe_requests;
    let metrics = support::get_text(&format!("{base}/metrics")).await;
    let mismatch = support::metric(
        &metrics,
        "whip_echo_dropped_packets_total{cause=\"codec_mismatch\"}",
    );
    assert!(mismatch > 0.0, "the mismatch is counted");
    assert_eq!(
        after, before,
        "no keyframe requests for a viewer of another codec"
    );
    delete_all_and_stop(server, vec![viewer, publisher]).await;
}
