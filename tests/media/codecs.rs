//! Audio codecs and video pass-through with real WebRTC peers on loopback: every codec whip-echo
//! forwards round-trips unchanged through `/echo`, and a WHIP publisher's audio and video reach
//! WHEP viewers on both tracks.

use crate::support;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use reqwest::Url;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use support::client::{AudioCodec, Client, Mode, Options, Received, VideoCodec};
use support::{delete_all_and_stop, start, wait_idle, WAIT};
use whip_conformance::http::Http;
use whip_echo::config::Config;

const AUDIO: RtpCodecKind = RtpCodecKind::Audio;
const VIDEO: RtpCodecKind = RtpCodecKind::Video;

async fn connect(url: &str, mode: Mode, audio: AudioCodec, video: Option<VideoCodec>) -> Client {
    let options = Options {
        audio,
        video,
        ..Options::default()
    };
    let url = Url::parse(url).unwrap();
    let loopback = IpAddr::from([127, 0, 0, 1]);
    let mut client = Client::connect_with_options(&Http::new(None), &url, mode, loopback, options)
        .await
        .unwrap_or_else(|r| panic!("{}: {}", r.status, r.body));
    client.wait_connected(WAIT).await;
    client
}

/// The payload type of the answer's `media` section.
fn answered_pt(answer: &str, media: &str) -> u8 {
    let line = answer
        .lines()
        .find(|l| l.starts_with(&format!("m={media} ")))
        .unwrap_or_else(|| panic!("no {media} section in\n{answer}"));
    line.split(' ').nth(3).unwrap().parse().unwrap()
}

/// Payloads arrive unchanged and in order, on one SSRC, with the negotiated payload type.
fn assert_passed_through(got: &[Received], kind: RtpCodecKind, pt: u8) {
    let ssrc = got[0].ssrc;
    let mut last: Option<(u32, u16)> = None;
    for p in got {
        let text = String::from_utf8_lossy(&p.payload);
        let n: u32 = text
            .split_once('/')
            .and_then(|(_, rest)| rest.strip_prefix(&format!("{kind:?}-")))
            .unwrap_or_else(|| panic!("foreign payload {text}"))
            .parse()
            .unwrap();
        assert_eq!(p.ssrc, ssrc, "one SSRC");
        assert_eq!(p.payload_type, pt, "the negotiated payload type");
        if let Some((prev, seq)) = last {
            assert!(n > prev, "in order: {prev} then {n}");
            assert_eq!(
                p.seq.wrapping_sub(seq),
                (n - prev) as u16,
                "sequence follows"
            );
        }
        last = Some((n, p.seq));
    }
}

#[tokio::test]
async fn every_audio_codec_round_trips_through_echo() {
    let server = start(Config::for_tests()).await;
    for (i, (codec, rtpmap)) in [
        (AudioCodec::Opus, "opus/48000/2"),
        (AudioCodec::OpusStereo, "opus/48000/2"),
        (AudioCodec::Pcmu, "PCMU/8000"),
        (AudioCodec::Pcma, "PCMA/8000"),
        (AudioCodec::G722, "G722/8000"),
    ]
    .into_iter()
    .enumerate()
    {
        let url = format!("{}/echo/audio-{i}", server.base_url());
        let mut client = connect(&url, Mode::SendRecv, codec, None).await;
        let pt = answered_pt(&client.answer, "audio");
        assert!(
            client.answer.contains(&format!("a=rtpmap:{pt} {rtpmap}")),
            "{codec:?}: {}",
            client.answer
        );
        // RFC 7587 §6.1: a stereo offer gets a stereo answer.
        let stereo = client.answer.contains("stereo=1") && client.answer.contains("sprop-stereo=1");
        assert_eq!(
            stereo,
            codec == AudioCodec::OpusStereo,
            "{codec:?}: {}",
            client.answer
        );
        let sender = client.clone_sender();
        let got = round_trip_handle(&sender, &mut client, AUDIO, 20).await;
        assert_passed_through(&got, AUDIO, pt);
        assert_eq!(client.delete().await, 200);
        client.close().await;
    }
    wait_idle(&server).await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn every_video_codec_round_trips_through_echo_beside_audio() {
    let server = start(Config::for_tests()).await;
    for (i, (codec, rtpmap)) in [
        (VideoCodec::Vp8, "VP8/90000"),
        (VideoCodec::Vp9, "VP9/90000"),
        (VideoCodec::H264, "H264/90000"),
        (VideoCodec::Av1, "AV1/90000"),
    ]
    .into_iter()
    .enumerate()
    {
        let url = format!("{}/echo/video-{i}", server.base_url());
        let mut client = connect(&url, Mode::SendRecv, AudioCodec::Opus, Some(codec)).await;
        let pt = answered_pt(&client.answer, "video");
        assert!(
            client.answer.contains(&format!("a=rtpmap:{pt} {rtpmap}")),
            "{codec:?}: {}",
            client.answer
        );
        let sender = client.clone_sender();
        let video = round_trip_handle(&sender, &mut client, VIDEO, 20).await;
        assert_passed_through(&video, VIDEO, pt);
        let audio = round_trip_handle(&sender, &mut client, AUDIO, 10).await;
        assert_passed_through(&audio, AUDIO, answered_pt(&client.answer, "audio"));
        assert_ne!(video[0].ssrc, audio[0].ssrc);
        assert_eq!(client.delete().await, 200);
        client.close().await;
    }
    wait_idle(&server).await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_whip_publisher_with_audio_and_video_reaches_two_whep_viewers_on_both_tracks() {
    let server = start(Config::for_tests()).await;
    let base = server.base_url();
    let publisher = connect(
        &format!("{base}/whip/av"),
        Mode::Send,
        AudioCodec::Opus,
        Some(VideoCodec::Vp8),
    )
    .await;
    let mut viewers = Vec::new();
    for _ in 0..2 {
        viewers.push(
            connect(
                &format!("{base}/whep/av"),
                Mode::Recv,
                AudioCodec::Opus,
                Some(VideoCodec::Vp8),
            )
            .await,
        );
    }
    let sender = publisher.clone_sender();
    for viewer in &mut viewers {
        let pt = answered_pt(&viewer.answer, "video");
        let video = round_trip_handle(&sender, viewer, VIDEO, 15).await;
        assert_passed_through(&video, VIDEO, pt);
        let audio = round_trip_handle(&sender, viewer, AUDIO, 15).await;
        assert_passed_through(&audio, AUDIO, answered_pt(&viewer.answer, "audio"));
    }
    viewers.push(publisher);
    delete_all_and_stop(server, viewers).await;
}

#[tokio::test]
async fn a_viewer_gets_the_publishers_codec_or_a_reason() {
    let server = start(Config::for_tests()).await;
    let base = server.base_url();
    let publisher = connect(
        &format!("{base}/whip/h264"),
        Mode::Send,
        AudioCodec::Opus,
        Some(VideoCodec::H264),
    )
    .await;
    // A viewer offering H.264 gets it; one offering only VP8 video gets the audio and its video
    // section rejected (whip-echo does not transcode).
    let mut h264 = connect(
        &format!("{base}/whep/h264"),
        Mode::Recv,
        AudioCodec::Opus,
        Some(VideoCodec::H264),
    )
    .await;
    let sender = publisher.clone_sender();
    let video = round_trip_handle(&sender, &mut h264, VIDEO, 10).await;
    assert_passed_through(&video, VIDEO, answered_pt(&h264.answer, "video"));
    let vp8 = connect(
        &format!("{base}/whep/h264"),
        Mode::Recv,
        AudioCodec::Opus,
        Some(VideoCodec::Vp8),
    )
    .await;
    assert!(vp8.answer.contains("m=video 0 "), "{}", vp8.answer);
    // Video alone, in a codec the stream does not carry: refused, with the stream's codecs named.
    let options = Options {
        audio: AudioCodec::None,
        video: Some(VideoCodec::Vp8),
        ..Options::default()
    };
    let url = Url::parse(&format!("{base}/whep/h264")).unwrap();
    let refused = Client::connect_with_options(
        &Http::new(None),
        &url,
        Mode::Recv,
        IpAddr::from([127, 0, 0, 1]),
        options,
    )
    .await;
    let Err(refused) = refused else {
        panic!("a VP8-only viewer of an H.264 stream is refused")
    };
    assert_eq!(refused.status, 400);
    assert!(refused.body.contains("video/H264"), "{}", refused.body);
    delete_all_and_stop(server, vec![publisher, h264, vp8]).await;
}

/// Sends numbered payloads of `kind` by `from` until `to` has received `count` of them (sending
/// again while it has not: the first ones may go before the receiving leg is up); returns what
/// `to` received of that kind. `from` is a sender handle, so one echo client can be both ends.
async fn round_trip_handle(
    from: &support::client::SendHandle,
    to: &mut Client,
    kind: RtpCodecKind,
    count: usize,
) -> Vec<Received> {
    let tag: u32 = rand::random();
    let mut got: Vec<Received> = Vec::new();
    let deadline = Instant::now() + WAIT;
    let mut i = 0;
    while got.len() < count {
        assert!(
            Instant::now() < deadline,
            "{count} {kind:?} packets in time, got {}",
            got.len()
        );
        from.send_kind(kind, format!("{tag}/{kind:?}-{i:05}").as_bytes());
        i += 1;
        // Packets of earlier rounds (another viewer's) still queued here are set aside.
        while let Some(p) = to.try_next_packet(Duration::from_millis(20)).await {
            if p.kind == kind && p.payload.starts_with(format!("{tag}/").as_bytes()) {
                got.push(p);
            }
        }
    }
    got
}

/// Sends a video packet every 20 ms on `sender` until the returned guard is dropped.
fn stream_video(sender: support::client::SendHandle) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        for i in 0u32.. {
            tick.tick().await;
            sender.send_kind(VIDEO, format!("frame-{i}").as_bytes());
        }
    })
}

#[tokio::test]
async fn keyframes_are_asked_for_a_late_viewer_and_on_pli_at_most_every_500_ms() {
    let server = start(Config::for_tests()).await;
    let base = server.base_url();
    let mut publisher = connect(
        &format!("{base}/whip/kf"),
        Mode::Send,
        AudioCodec::Opus,
        Some(VideoCodec::Vp8),
    )
    .await;
    let video = stream_video(publisher.clone_sender());
    // The publisher connecting asks for one (its viewers, now or later, start on a keyframe).
    assert!(
        publisher.until(WAIT, |s| s.keyframe_requests >= 1).await,
        "a keyframe request once video flows"
    );
    let after_connect = publisher.state().keyframe_requests;

    // A viewer joining a live stream: its video leg coming up asks the publisher upstream.
    let mut viewer = connect(
        &format!("{base}/whep/kf"),
        Mode::Recv,
        AudioCodec::Opus,
        Some(VideoCodec::Vp8),
    )
    .await;
    assert!(
        publisher
            .until(WAIT, |s| s.keyframe_requests > after_connect)
            .await,
        "the late viewer's keyframe request reaches the publisher"
    );
    viewer.next_packet(WAIT).await;

    // A burst of PLIs from the viewer reaches the publisher as at most two requests: one at once
    // (or when the interval since the last ends) and the one kept meanwhile (`keyframes.rs` has
    // the interval's unit test).
    let before = publisher.state().keyframe_requests;
    for _ in 0..10 {
        viewer.request_keyframe();
    }
    assert!(
        publisher
            .until(WAIT, |s| s.keyframe_requests > before)
            .await,
        "the viewer's PLI reaches the publisher"
    );
    let more_than_two = move |s: &support::client::State| s.keyframe_requests > before + 2;
    assert!(
        !publisher
            .until(Duration::from_millis(1200), more_than_two)
            .await,
        "ten PLIs make at most two requests upstream, not ten"
    );
    video.abort();
    delete_all_and_stop(server, vec![publisher, viewer]).await;
}

#[tokio::test]
async fn the_bitrate_cap_drops_what_a_publisher_sends_over_it() {
    // 80 kbit/s: 10,000 bytes a second, 5,000 at once.
    let mut config = Config::for_tests();
    config.max_bitrate = 80_000;
    let server = start(config).await;
    let base = server.base_url();
    let publisher = connect(
        &format!("{base}/whip/cap"),
        Mode::Send,
        AudioCodec::Opus,
        Some(VideoCodec::Vp8),
    )
    .await;
    let mut viewer = connect(
        &format!("{base}/whep/cap"),
        Mode::Recv,
        AudioCodec::Opus,
        Some(VideoCodec::Vp8),
    )
    .await;
    // Under the cap, everything passes (the viewer's leg is up once one packet arrives).
    let sender = publisher.clone_sender();
    round_trip_handle(&sender, &mut viewer, VIDEO, 3).await;
    // 200 packets of 1,000 bytes at once, 200 kB: about 5 kB of them pass.
    let big = vec![b'x'; 1000];
    for _ in 0..200 {
        sender.send_kind(VIDEO, &big);
    }
    let mut got = 0;
    while let Some(p) = viewer.try_next_packet(Duration::from_millis(500)).await {
        if p.payload.len() == 1000 {
            got += 1;
        }
    }
    assert!(
        (1..=20).contains(&got),
        "{got} of 200 packets over an 80 kbit/s cap"
    );
    delete_all_and_stop(server, vec![publisher, viewer]).await;
}

#[tokio::test]
async fn after_a_publisher_change_viewers_get_video_from_the_new_publishers_first_keyframe() {
    let server = start(Config::for_tests()).await;
    let base = server.base_url();
    let (whip, whep) = (format!("{base}/whip/change"), format!("{base}/whep/change"));
    let mut viewer = connect(&whep, Mode::Recv, AudioCodec::Opus, Some(VideoCodec::Vp8)).await;
    let first = connect(&whip, Mode::Send, AudioCodec::Opus, Some(VideoCodec::Vp8)).await;
    let got = round_trip_handle(&first.clone_sender(), &mut viewer, VIDEO, 5).await;
    assert_eq!(first.delete().await, 200);
    first.close().await;
    // The last of the first publisher's video, once nothing more is in flight.
    let mut last_seq = got[got.len() - 1].seq;
    while let Some(p) = viewer.try_next_packet(Duration::from_millis(300)).await {
        if p.kind == VIDEO {
            last_seq = p.seq;
        }
    }

    let mut second = connect(&whip, Mode::Send, AudioCodec::Opus, Some(VideoCodec::Vp8)).await;
    let sender = second.clone_sender();
    // Frames that are not key frames: the viewer's decoder could not use them, so none is
    // forwarded, and the waiting viewer asks the new publisher for a keyframe.
    let requests = second.state().keyframe_requests;
    for i in 0..10 {
        sender.send_video_frame(format!("delta-{i}").as_bytes(), false);
        if let Some(p) = viewer.try_next_packet(Duration::from_millis(30)).await {
            assert_ne!(
                p.kind, VIDEO,
                "a frame before the new publisher's keyframe: {p:?}"
            );
        }
    }
    assert!(
        second.until(WAIT, |s| s.keyframe_requests > requests).await,
        "the waiting viewer's keyframe request reaches the new publisher"
    );
    // Its key frame and what follows reach the viewer, the sequence continuing the first
    // publisher's (RFC 3550 §5.1: one SSRC toward the viewer, no gap for the frames held back).
    sender.send_video_frame(b"key", true);
    for i in 0..5 {
        sender.send_video_frame(format!("after-{i}").as_bytes(), false);
    }
    let mut got = Vec::new();
    while got.len() < 6 {
        let p = viewer.next_packet(WAIT).await;
        if p.kind == VIDEO {
            got.push(p);
        }
    }
    assert!(
        got[0].keyframe && &got[0].payload[..] == b"key",
        "{:?}",
        got[0]
    );
    assert_eq!(got[0].seq, last_seq.wrapping_add(1));
    for (i, p) in got[1..].iter().enumerate() {
        assert_eq!(&p.payload[..], format!("after-{i}").as_bytes());
        assert_eq!(p.seq, last_seq.wrapping_add(2 + i as u16));
    }
    delete_all_and_stop(server, vec![second, viewer]).await;
}
