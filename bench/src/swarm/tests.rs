//! The swarm's sessions against the real server, in-process on loopback.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use whip_echo::config::Config;
use whip_echo::server::{self, Running};

use super::wire::{Phase, Style};
use super::{Shared, Swarm};

/// Generous bound for a connect that takes tens of milliseconds when all is well.
const WAIT: Duration = Duration::from_secs(15);

/// Runs the server on a runtime of its own, so the swarm's blocking loop can run on this thread.
fn start_server(rt: &tokio::runtime::Runtime) -> Running {
    rt.block_on(async {
        let config = Config::for_tests();
        let listener = tokio::net::TcpListener::bind(config.listen).await.unwrap();
        server::spawn(listener, config).await.unwrap()
    })
}

fn post_offer(rt: &tokio::runtime::Runtime, url: &str, offer: String) -> String {
    rt.block_on(async {
        let response = reqwest::Client::new()
            .post(url)
            .header("content-type", "application/sdp")
            .body(offer)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        response.text().await.unwrap()
    })
}

/// OBS's stack (libjuice) sends its DTLS ClientHello right after its first successful check and
/// nominates after that. The server must not lose that ClientHello: this client never
/// retransmits it, so a dropped one leaves the session stuck in DTLS until `WAIT`.
#[test]
fn a_client_hello_sent_before_nomination_is_not_lost() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = start_server(&rt);
    let shared = Shared::new().unwrap();
    let mut swarm = Swarm::bind(IpAddr::from([127, 0, 0, 1]), 1).unwrap();
    let wire = &mut swarm.wires()[0];
    wire.style = Style::NominateAfterDtls;
    let offer = wire.offer(&shared);
    let answer = post_offer(&rt, &format!("{}/echo/early", server.base_url()), offer);
    swarm.wires()[0].set_answer(&shared, &answer).unwrap();

    let started = Instant::now();
    swarm.connect_within(&shared, WAIT);
    let phase = swarm.wires()[0].phase;
    assert_eq!(phase, Phase::Media, "DTLS never completed");
    eprintln!(
        "ClientHello before nomination: connected in {:.1} ms",
        started.elapsed().as_secs_f64() * 1e3
    );
    // Media flows both ways: the echo comes back.
    let outcome = swarm.stream(&shared, 1, true);
    assert!(outcome.tally.received > 0, "no echo");
    rt.block_on(server.shutdown()).unwrap();
}
