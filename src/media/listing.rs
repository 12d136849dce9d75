//! What a media loop reports of its sessions, read from [`Sessions`] without changing them
//! (`GET /api/streams`, a stream's codecs for a new session's negotiation, a viewer's layer), and
//! a viewer's choice of layer.

use std::time::Instant;

use tracing::info;

use super::conn::Conn;
use super::forward::sources::{Layers, Sources};
use super::negotiate::codecs::StreamCodecs;
use super::sessions::Sessions;
use super::{
    LayerState, MediaError, PlayerInfo, PublisherInfo, PublisherKind, SessionKey, StreamInfo,
};
use crate::session::{Role, StreamName};

/// The loop's streams, for `GET /api/streams`.
pub fn streams(sessions: &Sessions, now: Instant) -> Vec<StreamInfo> {
    sessions
        .streams()
        .map(|(name, publisher, viewers)| {
            let publisher_conn = publisher.and_then(|p| sessions.conn(p));
            StreamInfo {
                stream: name.to_string(),
                publisher: publisher.and_then(|key| publisher_info(sessions, key, now)),
                viewers: viewers.len(),
                edges: viewers
                    .iter()
                    .filter(|k| sessions.conn(**k).is_some_and(Conn::pull))
                    .count(),
                players: viewers
                    .iter()
                    .filter_map(|k| sessions.conn(*k))
                    .map(|viewer| player_info(viewer, publisher_conn))
                    .collect(),
            }
        })
        .collect()
}

/// Publisher `key` as `GET /api/streams` lists it.
fn publisher_info(sessions: &Sessions, key: SessionKey, now: Instant) -> Option<PublisherInfo> {
    let conn = sessions.conn(key)?;
    let role = sessions.entry(key)?.role;
    Some(PublisherInfo {
        kind: match role {
            Role::Echo => PublisherKind::Echo,
            _ if conn.pull() => PublisherKind::Pull,
            _ => PublisherKind::Whip,
        },
        state: conn.link().name(),
        codecs: conn.codecs().iter().map(|(_, c)| c.clone()).collect(),
        uptime_seconds: conn.uptime(now).as_secs_f64(),
        sources: conn.sources().info(now),
        unbound_packets: conn.unbound_rtp_packets(),
    })
}

/// The codecs of `stream`'s live publisher, and those its first viewer was given.
pub fn stream_codecs(sessions: &Sessions, stream: &StreamName) -> StreamCodecs {
    let codecs_of = |key: Option<SessionKey>| {
        key.and_then(|k| sessions.conn(k))
            .map(|c| c.codecs().to_vec())
            .unwrap_or_default()
    };
    StreamCodecs {
        publisher: codecs_of(sessions.publisher(stream)),
        viewers: codecs_of(sessions.viewers(stream).first().copied()),
    }
}

/// A viewer as `GET /api/streams` lists it: its video leg's layer, by the rid the publisher's
/// source has.
fn player_info(viewer: &Conn, publisher: Option<&Conn>) -> PlayerInfo {
    let video = viewer.video_leg();
    let layer = video
        .and_then(|l| l.forwarder.source_ssrc())
        .zip(publisher)
        .and_then(|(ssrc, p)| p.sources().rid_of(ssrc))
        .map(str::to_owned);
    PlayerInfo {
        state: viewer.link().name(),
        layer,
        requested: video.and_then(|l| l.wanted_rid()).map(str::to_owned),
        edge: viewer.pull(),
    }
}

/// Viewer `key`'s layer as its layer URL reports it.
pub fn layer_state(
    sessions: &Sessions,
    key: SessionKey,
    now: Instant,
) -> Result<LayerState, MediaError> {
    viewer_entry(sessions, key)?;
    let publisher = sessions.publisher_of(key).and_then(|p| sessions.conn(p));
    let viewer = sessions.conn(key).ok_or(MediaError::UnknownResource)?;
    let info = player_info(viewer, publisher);
    Ok(LayerState {
        requested: info.requested,
        current: info.layer,
        layers: publisher
            .map(|p| p.sources().info(now))
            .unwrap_or_default()
            .into_iter()
            .filter(|s| s.kind == "video")
            .collect(),
    })
}

/// A WHEP viewer's choice of video layer (`change`: a rid, or none for the top one). A rid the
/// publisher has never sent is refused while it sends others (a typo would otherwise silently
/// give the top layer); before the publisher sends, any rid waits. The publisher and the SSRC of
/// the layer to ask a keyframe of, when the viewer should switch to it now.
pub fn choose_layer(
    sessions: &mut Sessions,
    key: SessionKey,
    change: Option<String>,
    now: Instant,
) -> Result<Option<(SessionKey, u32)>, MediaError> {
    viewer_entry(sessions, key)?;
    let publisher = sessions.publisher_of(key);
    let sources = publisher.and_then(|p| sessions.conn(p)).map(Conn::sources);
    if let (Some(rid), Some(sources)) = (&change, sources) {
        check_rid(rid, sources, now)?;
    }
    let layers = sources.map(|s| s.layers(now)).unwrap_or_default();
    let conn = sessions.conn_mut(key).ok_or(MediaError::UnknownResource)?;
    let ask = switch_layer(conn, change, &layers)?;
    Ok(publisher.zip(ask))
}

/// Only a WHEP viewer has a layer.
fn viewer_entry(sessions: &Sessions, key: SessionKey) -> Result<(), MediaError> {
    let entry = sessions.entry(key).ok_or(MediaError::UnknownResource)?;
    if entry.role != Role::Viewer {
        return Err(MediaError::BadLayer(
            "only a WHEP viewer chooses a layer".into(),
        ));
    }
    Ok(())
}

/// A rid a viewer asks for is refused when the publisher, sending for a window already (its
/// layers start one by one), has never sent it: a typo would otherwise give the top layer.
fn check_rid(rid: &str, sources: &Sources, now: Instant) -> Result<(), MediaError> {
    let rids = sources.rids();
    if sources.settled(now) && !rids.is_empty() && !rids.contains(&rid) {
        return Err(MediaError::BadLayer(format!(
            "no layer {rid:?}: the publisher sends {}",
            rids.join(", ")
        )));
    }
    Ok(())
}

/// Sets viewer `conn`'s layer to `change` (a rid, or none for the top one); the SSRC of the
/// layer it should switch to now, if that is not the one it plays.
fn switch_layer(
    conn: &mut Conn,
    change: Option<String>,
    layers: &Layers,
) -> Result<Option<u32>, MediaError> {
    let span = conn.span().clone();
    let Some(leg) = conn.video_leg_mut() else {
        return Err(MediaError::BadLayer("this session plays no video".into()));
    };
    leg.want(change);
    let target = layers.target(leg.wanted_id());
    let requested = leg.wanted_rid();
    span.in_scope(|| info!(layer = requested.unwrap_or("top"), "layer chosen"));
    Ok(target.filter(|&t| Some(t) != leg.forwarder.source_ssrc()))
}

/// The SSRC of the layer viewer `key`'s video leg plays (or will: its first), to ask a keyframe
/// of its stream's publisher for; with that publisher.
pub fn upstream_layer(
    sessions: &Sessions,
    key: SessionKey,
    now: Instant,
) -> Option<(SessionKey, Option<u32>)> {
    let publisher = sessions.publisher_of(key)?;
    let layers = sessions
        .conn(publisher)
        .map(|c| c.sources().layers(now))
        .unwrap_or_default();
    let ssrc = sessions
        .conn(key)
        .and_then(|c| c.video_leg())
        .and_then(|leg| leg.layer(&layers));
    Some((publisher, ssrc))
}
