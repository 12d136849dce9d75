//! The lean load generator for the capacity sweep: every session on one OS thread, one `epoll`
//! (mio) over their sockets, probes paced on a 1 ms tick so that each session sends exactly 50
//! packets/s, spread over the 20 ms period rather than in one burst.
//!
//! The webrtc-rs peer used elsewhere in the bench (one task, socket and rtc peer connection per
//! session) spent more CPU per echoed packet than the server it measured (~44 µs against ~35 µs
//! at 250 sessions), so on this 2-core machine the capacity sweep measured the load generator.
//! One thread here also means the load can never take more than one of the two cores.

mod handshake;
pub mod run;
#[cfg(test)]
mod tests;
pub mod wire;

use std::io;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};

use crate::load::{self, Tally, PPS};
pub use handshake::Shared;
use wire::{Phase, Wire};

/// Sessions connecting (ICE + DTLS) at the same time.
const CONNECTING: usize = 32;
/// How long connecting every session may take.
const CONNECT_WAIT: Duration = Duration::from_secs(60);
/// Time after the last probe for late echoes.
const DRAIN: Duration = Duration::from_millis(500);
const TICK: Duration = Duration::from_millis(1);

/// What a run saw.
#[derive(Default)]
pub struct Outcome {
    pub tally: Tally,
    /// Sessions that reached SRTP.
    pub connected: usize,
    /// Probes the load generator could not hand to its own socket (counted as sent).
    pub send_failures: u64,
}

/// Sessions on one thread.
pub struct Swarm {
    poll: Poll,
    wires: Vec<Wire>,
    last_seq: Vec<Option<u32>>,
    buf: Vec<u8>,
    events: Events,
    next_tick: Instant,
}

impl Swarm {
    /// `n` sessions, each with its own socket on `ip`, not yet offered.
    pub fn bind(ip: IpAddr, n: usize) -> io::Result<Swarm> {
        let poll = Poll::new()?;
        let mut wires = Vec::with_capacity(n);
        for i in 0..n {
            let mut wire = Wire::bind(ip, i as u32)?;
            poll.registry()
                .register(&mut wire.socket, Token(i), Interest::READABLE)?;
            wires.push(wire);
        }
        Ok(Swarm {
            poll,
            last_seq: vec![None; n],
            wires,
            buf: vec![0; 2048],
            events: Events::with_capacity(1024),
            next_tick: Instant::now(),
        })
    }

    pub fn wires(&mut self) -> &mut [Wire] {
        &mut self.wires
    }

    /// Connects the sessions that have an answer, `CONNECTING` at a time.
    pub fn connect(&mut self, shared: &Shared) {
        self.connect_within(shared, CONNECT_WAIT);
    }

    /// [`Swarm::connect`], giving up after `wait`.
    pub fn connect_within(&mut self, shared: &Shared, wait: Duration) {
        let deadline = Instant::now() + wait;
        let mut started = 0;
        while Instant::now() < deadline {
            let busy = self
                .wires
                .iter()
                .take(started)
                .filter(|w| matches!(w.phase, Phase::Ice | Phase::Dtls))
                .count();
            // Done once every session has been started and none is still connecting (judged on
            // the sessions started so far, before more are let in).
            if busy == 0 && started == self.wires.len() {
                break;
            }
            started = (started + CONNECTING.saturating_sub(busy)).min(self.wires.len());
            self.turn(shared, started, None);
        }
    }

    /// Keeps answering consent checks for `d` without sending media.
    pub fn idle(&mut self, shared: &Shared, d: Duration) {
        let until = Instant::now() + d;
        let all = self.wires.len();
        while Instant::now() < until {
            self.turn(shared, all, None);
        }
    }

    pub fn connected(&self) -> usize {
        let media = |w: &&Wire| w.phase == Phase::Media;
        self.wires.iter().filter(media).count()
    }

    /// Streams probes from every connected session for `seconds`, then waits `DRAIN` for late
    /// echoes. `exact`: echoes must be this run's probes, unchanged.
    pub fn stream(&mut self, shared: &Shared, seconds: u64, exact: bool) -> Outcome {
        let t0 = Instant::now();
        let until = t0 + Duration::from_secs(seconds);
        let mut pacer = Pacer {
            t0,
            until,
            exact,
            done_ms: 0,
            seq: vec![0; self.wires.len()],
            failures: 0,
            tally: Tally::default(),
        };
        let all = self.wires.len();
        while Instant::now() < until + DRAIN {
            self.turn(shared, all, Some(&mut pacer));
        }
        // Sessions whose echo stopped early (the server dropped or disconnected them); only
        // probes echoed unchanged carry their sequence.
        let period = seconds * PPS;
        let stalled = self
            .last_seq
            .iter()
            .filter(|l| l.is_none_or(|l| u64::from(l) + PPS < period))
            .count();
        if exact && stalled > 0 {
            eprintln!("swarm: the echo of {stalled} sessions stopped more than 1 s early");
        }
        Outcome {
            tally: pacer.tally,
            connected: self.connected(),
            send_failures: pacer.failures,
        }
    }

    /// One turn: timers of the first `active` sessions, due probes (while streaming), then
    /// ready sockets.
    fn turn(&mut self, shared: &Shared, active: usize, mut media: Option<&mut Pacer>) {
        let now = Instant::now();
        // Timers and pacing once per tick, not once per wake-up: under load the socket wakes
        // the thread every few microseconds.
        if now >= self.next_tick {
            self.next_tick = now + TICK;
            for wire in &mut self.wires[..active] {
                wire.on_tick(shared, now);
            }
            if let Some(pacer) = media.as_mut() {
                pacer.send_due(&mut self.wires, now);
            }
        }
        let wait = self.next_tick.saturating_duration_since(Instant::now());
        let events = &mut self.events;
        if self.poll.poll(events, Some(wait)).is_err() {
            return;
        }
        let now = Instant::now();
        for event in self.events.iter() {
            let i = event.token().0;
            loop {
                let (len, from) = match self.wires[i].socket.recv_from(&mut self.buf) {
                    Ok(got) => got,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => break,
                };
                let Some(payload) = self.wires[i].on_datagram(shared, now, from, &self.buf[..len])
                else {
                    continue;
                };
                if let Some(p) = media.as_mut() {
                    let last_seq = &mut self.last_seq;
                    p.tally
                        .count(&payload, p.t0, p.exact, |s| last_seq.get_mut(s as usize));
                }
            }
        }
    }
}

/// Sends each session's probes on its own 1 ms slot of the 20 ms period.
struct Pacer {
    t0: Instant,
    until: Instant,
    /// Echoes must be this run's probes, unchanged.
    exact: bool,
    /// Milliseconds since `t0` whose slot has been served.
    done_ms: u64,
    seq: Vec<u32>,
    failures: u64,
    tally: Tally,
}

impl Pacer {
    fn send_due(&mut self, wires: &mut [Wire], now: Instant) {
        let period_ms = 1000 / PPS;
        let due_ms = now.min(self.until).duration_since(self.t0).as_millis() as u64;
        while self.done_ms < due_ms {
            let slot = self.done_ms % period_ms;
            self.done_ms += 1;
            for i in (slot as usize..wires.len()).step_by(period_ms as usize) {
                if wires[i].phase != Phase::Media {
                    continue;
                }
                let seq = self.seq[i];
                self.seq[i] += 1;
                self.tally.sent += 1;
                let probe = load::payload(i as u32, seq, self.t0);
                if !wires[i].send_rtp(&probe, seq.wrapping_mul(960)) {
                    self.failures += 1;
                }
            }
        }
    }
}
