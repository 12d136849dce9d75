//! Echo sessions driven by the load generator: connect, timed media at 50 packets/s, exact
//! accounting of every echoed packet (sequence and payload), round-trip times.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use reqwest::Url;
use whip_conformance::http::Http;
use whip_conformance::peer::{Client, Mode, Options, SendHandle};

/// Opus packets per second (20 ms frames).
pub const PPS: u64 = 50;
/// How long a connect may take before it counts as failed.
pub const CONNECT_WAIT: Duration = Duration::from_secs(15);

/// The probe payload: an Opus TOC byte (config 31, CELT fullband 20 ms, mono, one frame) so that a
/// decoding server accepts it, then session, sequence and send time.
pub fn payload(session: u32, seq: u32, t0: Instant) -> Vec<u8> {
    let mut p = Vec::with_capacity(17);
    p.push(0xF8);
    p.extend_from_slice(&session.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(t0.elapsed().as_micros() as u64).to_be_bytes());
    p
}

/// (session, sequence, send time in µs since `t0`) of a probe payload.
pub fn parse(p: &[u8]) -> Option<(u32, u32, u64)> {
    if p.len() != 17 || p[0] != 0xF8 {
        return None;
    }
    let u32_at = |i: usize| u32::from_be_bytes(p[i..i + 4].try_into().unwrap());
    Some((
        u32_at(1),
        u32_at(5),
        u64::from_be_bytes(p[9..17].try_into().unwrap()),
    ))
}

/// A connected session.
pub struct Session {
    pub id: u32,
    pub client: Client,
    pub sender: SendHandle,
    /// POST sent → 201, ms.
    pub post_ms: f64,
    /// POST sent → ICE and DTLS connected, ms.
    pub connected_ms: f64,
}

/// POSTs and waits until connected.
pub async fn open(http: &Http, url: &Url, id: u32, mode: Mode) -> Result<Session, String> {
    open_with(http, url, id, mode, Options::default()).await
}

/// [`open`], handing the candidate over as `options` say (in the offer, or trickled by PATCH).
pub async fn open_with(
    http: &Http,
    url: &Url,
    id: u32,
    mode: Mode,
    options: Options,
) -> Result<Session, String> {
    let local = IpAddr::from([127, 0, 0, 1]);
    let mut client = Client::connect_with_options(http, url, mode, local, options)
        .await
        .map_err(|r| format!("POST: {} {}", r.status, r.body.trim()))?;
    if !client.until(CONNECT_WAIT, |s| s.connected).await {
        client.vanish().await;
        return Err("not connected in time".into());
    }
    let connected_ms = ms(client.posted_at.elapsed());
    let post_ms = ms(client.post_rtt);
    let sender = client.clone_sender();
    Ok(Session {
        id,
        client,
        sender,
        post_ms,
        connected_ms,
    })
}

impl Session {
    pub async fn close(self) {
        self.client.delete().await;
        self.client.close().await;
    }
}

/// What one receiving leg saw.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    pub sent: u64,
    pub received: u64,
    /// Packets whose sequence went backwards or repeated.
    pub out_of_order: u64,
    /// Packets that were not this run's probes (a re-encoding server's output).
    pub foreign: u64,
    pub rtt_us: Vec<u32>,
    /// When each `rtt_us` sample's probe was sent, µs since the run's `t0`.
    pub sent_us: Vec<u64>,
}

impl Tally {
    /// Counts one received payload. `last_seq(session)` holds the highest sequence echoed so far
    /// to that session, against which reordering is counted.
    pub fn count<'a>(
        &mut self,
        payload: &[u8],
        t0: Instant,
        exact: bool,
        last_seq: impl FnOnce(u32) -> Option<&'a mut Option<u32>>,
    ) {
        match parse(payload) {
            Some((session, seq, sent_us)) => {
                self.received += 1;
                if let Some(last) = last_seq(session) {
                    if last.is_some_and(|l| seq <= l) {
                        self.out_of_order += 1;
                    }
                    *last = Some(last.map_or(seq, |l| l.max(seq)));
                }
                let rtt = (t0.elapsed().as_micros() as u64).saturating_sub(sent_us);
                self.rtt_us.push(rtt.min(u32::MAX as u64) as u32);
                self.sent_us.push(sent_us);
            }
            None if !exact => self.received += 1,
            None => self.foreign += 1,
        }
    }
}

/// Sends probes from `sender` at 50/s until `until`, while counting what `receiver` gets; drains
/// stragglers for 500 ms after. `exact`: probes must come back unchanged (whip-echo); otherwise
/// any packet counts (a decoding/re-encoding server).
pub async fn media(
    sender: Option<&SendHandle>,
    receiver: &mut Client,
    session: u32,
    until: Instant,
    t0: Instant,
    exact: bool,
) -> Tally {
    let mut tally = Tally::default();
    let mut tick = tokio::time::interval(Duration::from_millis(1000 / PPS));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let drain_until = until + Duration::from_millis(500);
    let mut last_seq: Option<u32> = None;
    let mut seq = 0u32;
    loop {
        let now = Instant::now();
        if now >= drain_until {
            break;
        }
        tokio::select! {
            _ = tick.tick(), if sender.is_some() && now < until => {
                sender.unwrap().send(&payload(session, seq, t0));
                seq += 1;
                tally.sent += 1;
            }
            packet = receiver.received.recv() => {
                let Some(packet) = packet else { break };
                let last = &mut last_seq;
                tally.count(&packet.payload, t0, exact, move |_| Some(last));
            }
            _ = tokio::time::sleep_until(drain_until.into()) => break,
        }
    }
    tally
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The `q` quantile (0..=1) of `values` (sorted in place).
pub fn quantile(values: &mut [f64], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let i = ((values.len() - 1) as f64 * q).round() as usize;
    values[i]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_round_trips() {
        let t0 = Instant::now();
        let p = payload(7, 42, t0);
        let (s, q, _) = parse(&p).unwrap();
        assert_eq!((s, q), (7, 42));
        assert!(parse(&p[..16]).is_none());
    }

    #[test]
    fn quantiles() {
        let mut v = vec![5.0, 1.0, 3.0, 2.0, 4.0];
        assert_eq!(quantile(&mut v, 0.5), 3.0);
        assert_eq!(quantile(&mut v, 1.0), 5.0);
        assert!(quantile(&mut [], 0.5).is_nan());
    }
}
