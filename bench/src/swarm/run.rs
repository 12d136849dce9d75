//! A capacity step with the swarm: the signalling (POST offers, DELETE resources) stays on the
//! async side with the bench's HTTP client; ICE, DTLS and media run on one OS thread, which also
//! reads the server's usage at the moments the step needs.

use std::net::IpAddr;
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, Url};
use tokio::sync::{oneshot, Semaphore};
use whip_conformance::http::Http;

use super::Shared;
use super::{Outcome, Swarm};
use crate::server::{usage, Usage};

/// Concurrent POSTs and DELETEs.
const SIGNALLING: usize = 16;

/// Server usage at the step's marks.
#[derive(Default)]
pub struct Marks {
    /// Every session connected, idle for 500 ms.
    pub idle: Usage,
    pub start: Usage,
    pub end: Usage,
}

/// Called on the swarm thread as streaming starts (`true`) and ends (`false`).
pub type Hook = Box<dyn Fn(bool) + Send>;

/// Opens `urls.len()` echo sessions, streams probes for `seconds`, closes them.
pub async fn step(
    http: &Http,
    pid: u32,
    urls: Vec<Url>,
    seconds: u64,
    exact: bool,
    hook: Option<Hook>,
) -> Result<(Outcome, Marks), String> {
    let n = urls.len();
    let (offers_tx, offers_rx) = oneshot::channel::<Vec<String>>();
    let (answers_tx, answers_rx) = std_mpsc::channel::<Vec<Option<String>>>();
    let (done_tx, done_rx) = oneshot::channel();
    // The sessions' rtc state stays on the thread that drives it.
    std::thread::spawn(move || {
        let result = drive(n, seconds, exact, pid, hook, offers_tx, answers_rx);
        let _ = done_tx.send(result);
    });
    let offers = offers_rx.await.map_err(|_| "swarm did not start")?;
    let gate = Arc::new(Semaphore::new(SIGNALLING));
    let posts: Vec<_> = offers
        .into_iter()
        .zip(urls)
        .map(|(offer, url)| {
            let (gate, http) = (gate.clone(), http.clone());
            tokio::spawn(async move {
                let _permit = gate.acquire().await;
                let ex = http.post(&url, Some("application/sdp"), offer).await.ok()?;
                (ex.status == 201).then(|| (ex.text(), ex.location()))
            })
        })
        .collect();
    let mut answers = Vec::with_capacity(n);
    let mut resources = Vec::with_capacity(n);
    for post in posts {
        let (answer, location) = post.await.ok().flatten().unzip();
        answers.push(answer);
        resources.push(location.flatten());
    }
    answers_tx.send(answers).map_err(|_| "swarm stopped")?;
    let result = done_rx.await.map_err(|_| "swarm panicked")?;
    let deletes: Vec<_> = resources
        .into_iter()
        .flatten()
        .map(|url| {
            let (gate, http) = (gate.clone(), http.clone());
            tokio::spawn(async move {
                let _permit = gate.acquire().await;
                let _ = http.call(Method::DELETE, &url).await;
            })
        })
        .collect();
    for delete in deletes {
        let _ = delete.await;
    }
    result
}

fn drive(
    n: usize,
    seconds: u64,
    exact: bool,
    pid: u32,
    hook: Option<Hook>,
    offers_tx: oneshot::Sender<Vec<String>>,
    answers_rx: std_mpsc::Receiver<Vec<Option<String>>>,
) -> Result<(Outcome, Marks), String> {
    let shared = Shared::new()?;
    let mut swarm = Swarm::bind(IpAddr::from([127, 0, 0, 1]), n).map_err(|e| e.to_string())?;
    let offers = swarm.wires().iter().map(|w| w.offer(&shared)).collect();
    offers_tx.send(offers).map_err(|_| "bench stopped")?;
    let answers = answers_rx.recv().map_err(|_| "bench stopped")?;
    for (wire, answer) in swarm.wires().iter_mut().zip(answers) {
        let set = answer.map(|sdp| wire.set_answer(&shared, &sdp));
        if !matches!(set, Some(Ok(()))) {
            wire.phase = super::wire::Phase::Failed;
        }
    }
    swarm.connect(&shared);
    swarm.idle(&shared, Duration::from_millis(500));
    let idle = usage(pid);
    let start = usage(pid);
    if let Some(hook) = &hook {
        hook(true);
    }
    let outcome = swarm.stream(&shared, seconds, exact);
    if let Some(hook) = &hook {
        hook(false);
    }
    let end = usage(pid);
    Ok((outcome, Marks { idle, start, end }))
}
