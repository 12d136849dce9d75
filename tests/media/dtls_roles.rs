//! DTLS roles (RFC 8842 §5.3) and how soon a lost first flight is resent: a client that offers
//! `a=setup:passive` and misses the server's first ClientHello, as FFmpeg's WHIP muxer does.

use crate::support;

use std::time::Duration;

use support::client::{Mode, Options};
use support::start;
use whip_echo::config::Config;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passive_offer_is_answered_active_and_a_missed_first_flight_is_resent_at_once() {
    let server = start(Config::for_tests()).await;
    let base = server.base_url();
    // An actpass offer (every browser's) is answered passive: the client starts the handshake.
    let browser = support::connected(
        &format!("{base}/echo/browser"),
        Mode::SendRecv,
        Options::default(),
    )
    .await;
    assert!(
        browser.answer.contains("a=setup:passive"),
        "{}",
        browser.answer
    );

    let options = Options {
        passive: true,
        ..Options::default()
    };
    let mut ffmpeg =
        support::connected(&format!("{base}/echo/ffmpeg"), Mode::SendRecv, options).await;
    let connected = ffmpeg.posted_at.elapsed();
    assert!(
        ffmpeg.answer.contains("a=setup:active") && !ffmpeg.answer.contains("a=setup:passive"),
        "the answer to a passive offer is active: {}",
        ffmpeg.answer
    );
    let resent = ffmpeg
        .state()
        .first_dtls_gap
        .expect("the server resent the flight the client missed");
    println!(
        "# a passive client that missed the first ClientHello: resent after {resent:?}, \
         POST → connected (client side) within {connected:?}"
    );
    // rtc-dtls resent it after its fixed 1 s (and rtc sent the first ClientHello only with that
    // timer, so a client that was listening waited up to a second too); whip-echo asks for
    // 100 ms, doubling.
    assert!(resent < Duration::from_millis(600), "{resent:?}");
    support::echoed(&mut ffmpeg, b"after a missed first flight").await;
    support::delete_all_and_stop(server, vec![browser, ffmpeg]).await;
}

/// As DTLS server whip-echo keeps rtc-dtls's 1 s before resending its flight: the client's own
/// resends ask again for a lost one, and a 100 ms timer would send flight 4 twice to any client
/// farther than 100 ms away. A client that holds its second flight sees the server's first
/// resend no sooner than that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_dtls_server_a_flight_is_resent_only_after_the_default_interval() {
    let server = start(Config::for_tests()).await;
    let base = server.base_url();
    let options = Options {
        hold_second_flight: true,
        ..Options::default()
    };
    let mut client =
        support::connecting(&format!("{base}/echo/far"), Mode::SendRecv, options).await;
    assert!(
        client.answer.contains("a=setup:passive"),
        "{}",
        client.answer
    );
    assert!(
        client
            .until(support::WAIT, |s| s.first_dtls_gap.is_some())
            .await,
        "the server resent its flight"
    );
    let resent = client.state().first_dtls_gap.unwrap();
    println!("# whip-echo as DTLS server resent its unanswered flight after {resent:?}");
    assert!(resent >= Duration::from_millis(800), "{resent:?}");
    client.release_dtls();
    client.wait_connected(support::WAIT).await;
    support::delete_all_and_stop(server, vec![client]).await;
}
