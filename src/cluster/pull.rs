//! The pull: a node that does not hold a stream pulls it once from the node that does, over
//! WHEP, and fans it out to its own viewers (the pull is the stream's local publisher, see
//! `media/pull.rs`). One pull per stream per node; it follows the lease (a new holder or a new
//! epoch means a new pull) and ends after its last local viewer has been gone for
//! `--cluster-edge-idle`.

use std::time::Instant;

use axum::http::header;
use tracing::{debug, info};

use super::{token, Cluster, Pull, StoreDown};
use crate::media::ResourceState;
use crate::session::{EndReason, StreamName};

impl Cluster {
    /// Before a WHEP viewer of `stream` is created on this node: makes sure the stream's media
    /// reaches it. [`StoreDown`] when Redis cannot be reached and this node does not hold it.
    /// A failed pull is not the viewer's error: it waits, as for a stream nobody publishes yet,
    /// and the keeper tries again.
    pub async fn prepare_viewer(&self, stream: &StreamName) -> Result<(), StoreDown> {
        if self.state().claims.contains_key(stream) {
            return Ok(());
        }
        match self.ensure_pull(stream).await {
            Ok(()) => Ok(()),
            Err(PullError::Store) => Err(StoreDown),
            Err(PullError::Other(why)) => {
                info!(%stream, reason = %why, "cluster: could not pull the stream yet");
                Ok(())
            }
        }
    }

    /// Pulls `stream` from its live holder unless a live pull at the holder's epoch exists.
    /// Nothing to do when nobody holds it, its holder is dead (a new one will come) or it is
    /// this node.
    pub(super) async fn ensure_pull(&self, stream: &StreamName) -> Result<(), PullError> {
        let turn = PullTurn::new(self, stream);
        let _one_at_a_time = turn.lock.lock().await;
        let holder = self
            .noted(self.0.store.holder(stream.as_str()).await)
            .map_err(|_| PullError::Store)?;
        let current = self.state().pulls.get(stream).cloned();
        let Some((url, tag, epoch)) = holder
            .filter(|h| h.tag != self.0.tag)
            .and_then(|h| Some((h.url?, h.tag, h.epoch)))
        else {
            return Ok(());
        };
        if let Some(pull) = current {
            let live = self.0.media.exists(pull.local).await.ok() == Some(ResourceState::Live);
            if live && (pull.holder, pull.epoch) == (tag, epoch) {
                return Ok(());
            }
            self.end_pull(stream, &pull).await;
        }
        let pull = self.pull(stream, &url, tag, epoch).await?;
        info!(%stream, epoch, holder = %url, "cluster: pulling the stream from its holder");
        self.state().pulls.insert(stream.clone(), pull);
        Ok(())
    }

    /// One WHEP session at the holder, adopted here as the stream's publisher.
    async fn pull(
        &self,
        stream: &StreamName,
        holder: &str,
        holder_tag: u16,
        epoch: u64,
    ) -> Result<Pull, PullError> {
        let other = |e: &dyn std::fmt::Display| PullError::Other(e.to_string());
        let pending = self.0.media.pull_offer(stream).map_err(|e| other(&e))?;
        let token = token::mint(
            &self.0.config.secret,
            stream.as_str(),
            holder_tag,
            self.0.tag,
            epoch,
            std::time::SystemTime::now(),
        );
        let (resource, body) = self
            .post_pull(holder, stream, &token, &pending.offer)
            .await?;
        if self.state().claims.contains_key(stream) {
            // A publisher took the stream here while the holder answered: no pull needed.
            self.delete_pulled(&resource).await;
            return Err(PullError::Other(
                "this node took the stream meanwhile".into(),
            ));
        }
        match self.0.media.pull_adopt(pending, body).await {
            Ok(local) => Ok(Pull {
                holder: holder_tag,
                epoch,
                local,
                resource,
                holder_url: holder.to_owned(),
                idle_since: None,
            }),
            Err(e) => {
                self.delete_pulled(&resource).await;
                Err(other(&e))
            }
        }
    }

    /// POSTs the pull's `offer` to the holder's WHEP endpoint of `stream` with the pull `token`:
    /// the session's resource URL there and the answer.
    async fn post_pull(
        &self,
        holder: &str,
        stream: &StreamName,
        token: &str,
        offer: &str,
    ) -> Result<(String, String), PullError> {
        let other = |e: &dyn std::fmt::Display| PullError::Other(e.to_string());
        let url = format!("{holder}/whep/{stream}");
        let response = (self.0.http.post(&url))
            .header(header::CONTENT_TYPE, crate::session::APPLICATION_SDP)
            .bearer_auth(token)
            .body(offer.to_owned())
            .send()
            .await
            .map_err(|e| other(&e))?;
        let status = response.status();
        let location = response
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|l| response.url().join(l).ok())
            .map(|u| u.to_string());
        let body = response.text().await.map_err(|e| other(&e))?;
        match location.filter(|_| status.as_u16() == 201) {
            Some(resource) => Ok((resource, body)),
            None => Err(PullError::Other(format!(
                "{url}: {status}: {}",
                body.trim()
            ))),
        }
    }

    /// Ends a pull: its local session (its viewers stay and wait for the next source) and its
    /// session at the holder.
    pub(super) async fn end_pull(&self, stream: &StreamName, pull: &Pull) {
        let _ = self.0.media.end(pull.local, EndReason::Replaced).await;
        self.delete_pulled(&pull.resource).await;
        let mut state = self.state();
        if state.pulls.get(stream).map(|p| p.local) == Some(pull.local) {
            state.pulls.remove(stream);
        }
    }

    pub(super) async fn delete_pulled(&self, url: &str) {
        if let Err(e) = self.0.http.delete(url).send().await {
            debug!(%url, error = %e, "cluster: DELETE of a pull at its holder failed");
        }
    }

    /// Keeps each pull for as long as its stream has local viewers, then `--cluster-edge-idle`
    /// longer; starts one for a stream with local viewers, no local publisher and a remote
    /// holder.
    pub(super) async fn keep_pulls(&self, streams: &[crate::media::StreamInfo]) {
        let now = Instant::now();
        for info in streams {
            let Ok(stream) = StreamName::parse(&info.stream) else {
                continue;
            };
            let local_publisher = info.has_local_publisher();
            // Other nodes' pulls of this node's (former) stream are not viewers to pull for.
            let viewers = info.viewers.saturating_sub(info.edges);
            if viewers == 0 || local_publisher || self.state().claims.contains_key(&stream) {
                continue;
            }
            if let Err(e) = self.ensure_pull(&stream).await {
                debug!(%stream, error = ?e, "cluster: pull not made");
            }
        }
        let pulls: Vec<(StreamName, Pull)> = self
            .state()
            .pulls
            .iter()
            .map(|(s, p)| (s.clone(), p.clone()))
            .collect();
        for (stream, pull) in pulls {
            let viewers = streams
                .iter()
                .find(|i| i.stream == stream.as_str())
                .map_or(0, |i| i.viewers.saturating_sub(i.edges));
            let idle_since = if viewers > 0 {
                None
            } else {
                Some(pull.idle_since.unwrap_or(now))
            };
            if idle_since.is_some_and(|t| now.duration_since(t) >= self.0.config.edge_idle) {
                self.end_pull(&stream, &pull).await;
                info!(%stream, "cluster: no local viewer left, the pull ended");
            } else if let Some(p) = self.state().pulls.get_mut(&stream) {
                p.idle_since = idle_since;
            }
        }
    }
}

/// A place in the queue of one stream's pull set-ups; the queue is forgotten when its last
/// member leaves (also when a request is dropped mid-way, as a client that hangs up is).
struct PullTurn<'a> {
    cluster: &'a Cluster,
    stream: &'a StreamName,
    lock: std::sync::Arc<tokio::sync::Mutex<()>>,
}

impl<'a> PullTurn<'a> {
    fn new(cluster: &'a Cluster, stream: &'a StreamName) -> Self {
        let mut queues = cluster.0.pulling.lock().unwrap_or_else(|e| e.into_inner());
        let lock = queues.entry(stream.clone()).or_default().clone();
        PullTurn {
            cluster,
            stream,
            lock,
        }
    }
}

impl Drop for PullTurn<'_> {
    fn drop(&mut self) {
        let mut queues = self
            .cluster
            .0
            .pulling
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        // The map's and this one: nobody else waits.
        if std::sync::Arc::strong_count(&self.lock) == 2 {
            queues.remove(self.stream);
        }
    }
}

/// Why a pull was not made.
#[derive(Debug)]
pub(super) enum PullError {
    /// Redis cannot be reached.
    Store,
    /// The holder refused or did not answer, or the answer was not usable.
    Other(String),
}
