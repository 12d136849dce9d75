//! The domain door between the HTTP plane and the media plane (mediamtx's `server.newSession`):
//! who may open a session, where it is served (here, or the node that holds its stream), the
//! checked offer, the stream's lease given back when the session cannot be created, the pull
//! prepared for a viewer, the absolute `Location` of what it created; and where a resource lives.
//! The HTTP plane extracts and checks requests, calls one method here and builds the response. A
//! single node is "no cluster": the same calls, with nothing to place or forward.

use std::net::IpAddr;
use std::sync::Arc;

use crate::auth::{Action, Auth, Denied};
use crate::cluster::{Cluster, Placement, PullRefused, StoreDown, Unreachable};
use crate::media::negotiate::offer::CheckedOffer;
use crate::media::{Created, MediaError, MediaHandle};
use crate::session::{ResourceId, Role, StreamName};

/// The domain service: cheap to clone (handles only).
#[derive(Debug, Clone)]
pub struct Streams {
    media: MediaHandle,
    auth: Option<Arc<Auth>>,
    cluster: Option<Cluster>,
}

/// Who sends a POST, by its bearer token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// A client (an encoder, a player, a browser): authorised by `--auth`, rate-limited.
    Client,
    /// Cluster mode: another node pulling the stream, with a pull token.
    Pull,
}

/// What [`Streams::open`] did.
#[derive(Debug)]
pub enum Opened {
    /// Created here.
    Here {
        /// The session's resource, answer and ETag.
        created: Created,
        /// The resource's URL: absolute in cluster mode, naming this node (RFC 9725 does not
        /// require clients to follow redirects for PATCH and DELETE).
        location: String,
    },
    /// The stream is published on another node.
    Elsewhere {
        /// That node's base URL.
        base: String,
        /// Where the publisher goes (RFC 9725 §4.5).
        url: String,
    },
}

/// Where a session resource lives ([`Streams::resource`]).
#[derive(Debug)]
pub enum Located {
    /// On this node (or the request was forwarded here already: answered where it lands).
    Here,
    /// On another live node.
    There {
        /// The resource's URL there.
        url: String,
        /// Proves to that node that this one forwards the request.
        mark: String,
        /// The client of node-to-node calls.
        http: reqwest::Client,
    },
    /// On a node that is dead: its sessions died with it.
    Gone,
}

/// Why a request was refused before or instead of reaching the media plane.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// `--auth` refused the bearer token.
    #[error("not authorised")]
    Denied(Denied),
    /// A pull token on an endpoint other than WHEP.
    #[error("a pull token only plays")]
    PullOnlyPlays,
    /// A pull token not signed with this cluster's secret (or used before).
    #[error("pull token not signed with this cluster's secret")]
    BadPullToken,
    /// A pull of a stream this node does not hold at the pull's epoch.
    #[error("this node does not hold stream {0:?} at that epoch")]
    StalePull(String),
    /// The cluster's Redis cannot be reached.
    #[error("cluster placement is unavailable")]
    ClusterUnavailable,
    /// A resource of an unknown node, while the lookups of unknown nodes are spent.
    #[error("too many lookups of unknown nodes")]
    ClusterBusy,
    /// The media plane's refusal.
    #[error(transparent)]
    Media(#[from] MediaError),
}

impl From<StoreDown> for Refused {
    fn from(StoreDown: StoreDown) -> Self {
        Refused::ClusterUnavailable
    }
}

impl Streams {
    /// The service over `media`, authorising by `auth` and placing by `cluster` (none: a single
    /// node).
    pub fn new(media: MediaHandle, auth: Option<Arc<Auth>>, cluster: Option<Cluster>) -> Self {
        Streams {
            media,
            auth,
            cluster,
        }
    }

    /// Who sends a POST with `bearer`: a pull token counts in cluster mode only.
    pub fn caller(&self, bearer: Option<&str>) -> Caller {
        let pull = bearer.is_some_and(crate::cluster::token::is_pull);
        if pull && self.cluster.is_some() {
            Caller::Pull
        } else {
            Caller::Client
        }
    }

    /// Whether `caller` may open a `role` session of `stream` with `bearer`, decided before the
    /// offer is read: a pull must be a WHEP request of a live node, signed for this stream, at
    /// this node's current epoch of it; a client needs a token that covers the action when the
    /// server has any (RFC 9725 §4.7.1).
    pub async fn admit(
        &self,
        caller: Caller,
        role: Role,
        stream: &StreamName,
        bearer: Option<&str>,
    ) -> Result<(), Refused> {
        match (caller, &self.cluster, &self.auth) {
            (Caller::Pull, Some(cluster), _) => {
                if role != Role::Viewer {
                    return Err(Refused::PullOnlyPlays);
                }
                let token = bearer.unwrap_or_default();
                match cluster.check_pull(stream, token).await {
                    Ok(()) => Ok(()),
                    Err(PullRefused::BadToken) => Err(Refused::BadPullToken),
                    Err(PullRefused::Stale) => Err(Refused::StalePull(stream.to_string())),
                }
            }
            (Caller::Client, _, Some(auth)) => {
                (auth.check(bearer, action(role), stream)).map_err(Refused::Denied)
            }
            _ => Ok(()),
        }
    }

    /// Whether a client with `bearer` may open a `role` session of `stream` (`--auth`): an
    /// OPTIONS answers with the ICE servers only then.
    pub fn authorised(&self, role: Role, stream: &StreamName, bearer: Option<&str>) -> bool {
        let Some(auth) = &self.auth else {
            return true;
        };
        auth.check(bearer, action(role), stream).is_ok()
    }

    /// Opens a `role` session of `stream` for an admitted `caller` from `client` (its address,
    /// counted under the per-client caps), with `offer`, what else its POST wanted (a viewer's
    /// simulcast layer) and what its report starts from. The offer is checked first: a malformed one never takes a stream's lease.
    pub async fn open(
        &self,
        caller: Caller,
        role: Role,
        stream: StreamName,
        offer: String,
        client: Option<IpAddr>,
        wanted: (Option<String>, crate::report::Opening),
    ) -> Result<Opened, Refused> {
        let offer = CheckedOffer::check(offer, role)?;
        let pull = caller == Caller::Pull;
        let mut taken = false;
        if !pull {
            match self.place(role, &stream).await? {
                Placed::Elsewhere(base) => {
                    let url = format!("{base}/{role}/{stream}");
                    return Ok(Opened::Elsewhere { base, url });
                }
                Placed::Here { taken_now } => taken = taken_now,
            }
        }
        // Another node's pulls all come from its one address: not counted per IP.
        let client = client.filter(|_| !pull);
        let media = self
            .media
            .create(stream.clone(), offer, client, pull, wanted);
        match media.await {
            Ok(created) => {
                let location = created.resource.location();
                let location = match &self.cluster {
                    Some(cluster) => cluster.url_of(&location),
                    None => location,
                };
                Ok(Opened::Here { created, location })
            }
            Err(e) => {
                if let (true, Some(cluster)) = (taken, &self.cluster) {
                    // The lease this POST took has no publisher: give it back now.
                    cluster.abandon(&stream).await;
                }
                Err(e.into())
            }
        }
    }

    /// Where a POST is served. A publisher of a stream another live node holds is sent there;
    /// otherwise this node takes the stream. A viewer is served here; its stream is pulled first
    /// when another node holds it.
    async fn place(&self, role: Role, stream: &StreamName) -> Result<Placed, Refused> {
        let here = Placed::Here { taken_now: false };
        let Some(cluster) = &self.cluster else {
            return Ok(here);
        };
        if !role.publishes() {
            cluster.prepare_viewer(stream).await?;
            return Ok(here);
        }
        Ok(match cluster.place_publisher(stream).await? {
            Placement::Local { taken_now } => Placed::Here { taken_now },
            Placement::Redirect(base) => Placed::Elsewhere(base),
        })
    }

    /// Where `resource` lives (`sub` follows its path, as `/layer` does). A request another
    /// node forwarded (`forwarded`) is answered here, never forwarded again: a node restarted
    /// under a new tag, or a `--node-url` that points at the load balancer, would otherwise send
    /// it round in a loop.
    pub async fn resource(
        &self,
        resource: &ResourceId,
        sub: &str,
        forwarded: bool,
    ) -> Result<Located, Refused> {
        let Some(cluster) = self.cluster.as_ref().filter(|_| !forwarded) else {
            return Ok(Located::Here);
        };
        match cluster.owner_of(resource).await {
            Ok(None) => Ok(Located::Here),
            Ok(Some(base)) => Ok(Located::There {
                url: format!("{base}{}{sub}", resource.location()),
                mark: cluster.forward_mark(resource),
                http: cluster.http().clone(),
            }),
            Err(Unreachable::Dead) => Ok(Located::Gone),
            Err(Unreachable::StoreDown) => Err(Refused::ClusterUnavailable),
            Err(Unreachable::Busy) => Err(Refused::ClusterBusy),
        }
    }

    /// Whether `mark` shows that another node of this cluster forwarded a request for
    /// `resource` (that node counted it against its client's request rate already).
    pub fn forwarded_by_a_node(&self, resource: &ResourceId, mark: &str) -> bool {
        (self.cluster.as_ref()).is_some_and(|c| c.is_forwarded(resource, mark))
    }
}

/// What a `role` session does with its stream, as `--auth` grants it.
fn action(role: Role) -> Action {
    if role.publishes() {
        Action::Publish
    } else {
        Action::Play
    }
}

/// Where [`Streams::place`] put a POST.
enum Placed {
    /// Served here; `taken_now`: this POST took the stream's lease.
    Here { taken_now: bool },
    /// The live holder's base URL.
    Elsewhere(String),
}
