//! Session identity and lifecycle vocabulary shared by the HTTP plane and the media plane:
//! resource ids, roles, stream names and the reasons a session ends.

use std::fmt;

/// The media type of an SDP offer or answer (RFC 8866 §10.1), which the HTTP plane takes and a
/// cluster node's pull sends.
pub const APPLICATION_SDP: &str = "application/sdp";

/// The media type of an SDP fragment (RFC 8840 §9): trickle ICE and ICE restarts by PATCH
/// (RFC 9725 §4.3.1).
pub const TRICKLE_ICE_SDPFRAG: &str = "application/trickle-ice-sdpfrag";

/// The capability that names one WHIP/WHEP session resource: 128 random bits, never derived from the
/// stream name (RFC 9725 §4.2: the resource URL is how the client reaches its session, so it must not be
/// guessable).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourceId(u128);

impl ResourceId {
    /// A fresh id from the operating system's CSPRNG (via `rand`'s thread RNG).
    pub fn random() -> Self {
        ResourceId(rand::random())
    }

    /// A fresh id owned by media loop `index` of `loops`: uniformly random among the ids whose
    /// [`ResourceId::loop_index`] is `index`, so HTTP finds the owner without asking every loop
    /// (the quinn habit: ids route to whoever issued them). With one loop that is every id; with
    /// N it costs log2(N) of the 128 bits, leaving at least 122 unguessable.
    pub fn random_for(index: usize, loops: usize) -> Self {
        Self::random_on(None, index, loops)
    }

    /// [`ResourceId::random_for`] on a cluster node: with `node`, the top 16 bits are the node's
    /// tag, so any node can tell which one holds the session (RFC 9725 does not require clients
    /// to follow redirects for PATCH and DELETE; a misdirected one is forwarded). 106 or more
    /// random bits are left.
    pub fn random_on(node: Option<u16>, index: usize, loops: usize) -> Self {
        loop {
            let mut id = ResourceId::random();
            if let Some(tag) = node {
                id.0 = (id.0 & (u128::MAX >> 16)) | (u128::from(tag) << 112);
            }
            if id.loop_index(loops) == index {
                return id;
            }
        }
    }

    /// The node tag of an id minted by [`ResourceId::random_on`] (cluster mode).
    pub fn node_tag(&self) -> u16 {
        (self.0 >> 112) as u16
    }

    /// The media loop (of `loops`) that owns this id.
    pub fn loop_index(&self, loops: usize) -> usize {
        (self.0 % loops.max(1) as u128) as usize
    }

    /// Parses the 32-hex-digit form used in resource URLs; anything else is `None`.
    pub fn parse(s: &str) -> Option<Self> {
        if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u128::from_str_radix(s, 16).ok().map(ResourceId)
    }

    /// The resource URL path of this id: the one helper that builds it (the 201 `Location`).
    pub fn location(&self) -> String {
        format!("/resource/{self}")
    }
}

impl fmt::Display for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// What a session does with its stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// WHIP ingest: receives the client's audio and fans it out to the stream's viewers.
    Publisher,
    /// WHEP egress: plays the stream's audio to the client.
    Viewer,
    /// whip-echo's `/echo/{stream}` extension: a publisher whose own audio is also sent back to it.
    Echo,
}

impl Role {
    /// Whether this role's client sends audio into its stream.
    pub fn publishes(self) -> bool {
        matches!(self, Role::Publisher | Role::Echo)
    }

    /// Whether the server sends audio to this role's client.
    pub fn receives(self) -> bool {
        matches!(self, Role::Viewer | Role::Echo)
    }
}

impl Role {
    /// Its endpoint's name: `whip`, `whep` or `echo`.
    pub fn name(self) -> &'static str {
        match self {
            Role::Publisher => "whip",
            Role::Viewer => "whep",
            Role::Echo => "echo",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A validated public stream name (the `{stream}` of `/whip/{stream}`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamName(String);

/// Longest accepted stream name, in bytes.
pub const MAX_STREAM_NAME: usize = 128;

/// Why a stream name is not acceptable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("bad stream name: {0}")]
pub struct BadStreamName(pub &'static str);

impl StreamName {
    /// Accepts 1..=128 characters of `[A-Za-z0-9_.~-]`: safe in URLs, logs and file names.
    pub fn parse(s: &str) -> Result<Self, BadStreamName> {
        if s.is_empty() {
            return Err(BadStreamName("empty"));
        }
        if s.len() > MAX_STREAM_NAME {
            return Err(BadStreamName("longer than 128 characters"));
        }
        let ok = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'~');
        if !s.bytes().all(ok) {
            return Err(BadStreamName("only A-Z a-z 0-9 _ - . ~ are allowed"));
        }
        // RFC 3986 §5.2.4: clients remove `.` and `..` segments, so `/whip/..` reaches `/`.
        if s == "." || s == ".." {
            return Err(BadStreamName(
                "\".\" and \"..\" are path segments, not names",
            ));
        }
        Ok(StreamName(s.to_owned()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a session ended: every path into the one teardown function names itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// The client sent DELETE on the resource.
    Deleted,
    /// The client went away before it got the 201, so nobody holds the resource URL.
    Abandoned,
    /// ICE or DTLS failed, or consent freshness (RFC 7675) expired.
    Failed,
    /// The peer closed the connection (DTLS close_notify).
    Closed,
    /// ICE did not connect within the configured timeout.
    SetupTimeout,
    /// The server is shutting down.
    Shutdown,
    /// A new publisher took over the stream from this one (`--publisher-conflict takeover`, or
    /// this one's consent checks were failing).
    Replaced,
    /// Cluster mode: this node lost the stream's lease (it stopped renewing it in time, and
    /// another node may hold the stream now), so its publisher is no longer the stream's.
    Fenced,
    /// The server was at `--max-sessions` and this session, the oldest not yet connected, made
    /// room for a new one.
    Evicted,
    /// The WebRTC stack panicked while handling this session (a bug, logged with its message):
    /// the session ended alone, the media loop and every other session went on.
    Panicked,
    /// An operator ended it (`DELETE /api/sessions/{id}` with the admin token).
    Kicked,
}

impl EndReason {
    /// Why the session ended, in the words of someone who was in it (a `GET` of an ended
    /// resource says this, and the page shows it).
    pub fn describe(self) -> &'static str {
        match self {
            EndReason::Deleted => "its resource was deleted (a DELETE request)",
            EndReason::Abandoned => "the client went away before the session was set up",
            EndReason::Failed => "the server lost contact with the client (ICE consent expired)",
            EndReason::Closed => "the client closed the connection",
            EndReason::SetupTimeout => "ICE did not connect in time",
            EndReason::Shutdown => "the server is shutting down",
            EndReason::Replaced => "a new publisher took the stream over",
            EndReason::Fenced => "this node lost the stream to another (cluster lease expired)",
            EndReason::Evicted => {
                "the server was full and the session had not connected yet: it made room"
            }
            EndReason::Panicked => "the server failed while handling it (a bug, logged)",
            EndReason::Kicked => "an operator of the server ended it",
        }
    }
}

impl EndReason {
    /// Its short name, as metrics and logs give it.
    pub fn name(self) -> &'static str {
        match self {
            EndReason::Deleted => "deleted",
            EndReason::Abandoned => "abandoned",
            EndReason::Failed => "failed",
            EndReason::Closed => "closed",
            EndReason::SetupTimeout => "setup-timeout",
            EndReason::Shutdown => "shutdown",
            EndReason::Replaced => "replaced",
            EndReason::Fenced => "fenced",
            EndReason::Evicted => "evicted",
            EndReason::Panicked => "panicked",
            EndReason::Kicked => "kicked",
        }
    }
}

impl fmt::Display for EndReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_tags_survive_the_loop_index() {
        for loops in [1, 3, 8] {
            for index in 0..loops {
                let id = ResourceId::random_on(Some(0xbeef), index, loops);
                assert_eq!(id.node_tag(), 0xbeef);
                assert_eq!(id.loop_index(loops), index);
                assert_eq!(ResourceId::parse(&id.to_string()), Some(id));
            }
        }
    }

    #[test]
    fn resource_ids_round_trip_and_are_distinct() {
        let a = ResourceId::random();
        let b = ResourceId::random();
        assert_ne!(a, b);
        assert_eq!(ResourceId::parse(&a.to_string()), Some(a));
        assert_eq!(a.location(), format!("/resource/{a}"));
        assert_eq!(a.to_string().len(), 32);
    }

    #[test]
    fn resource_ids_name_their_loop() {
        for loops in [1, 2, 3, 64] {
            for index in 0..loops {
                let id = ResourceId::random_for(index, loops);
                assert_eq!(id.loop_index(loops), index);
                // The text form carries it: a parsed id finds the same loop.
                let parsed = ResourceId::parse(&id.to_string()).unwrap();
                assert_eq!(parsed.loop_index(loops), index);
            }
        }
        assert_ne!(ResourceId::random_for(1, 2), ResourceId::random_for(1, 2));
    }

    #[test]
    fn resource_id_rejects_guesses() {
        assert_eq!(ResourceId::parse("1"), None);
        assert_eq!(ResourceId::parse(&"g".repeat(32)), None);
        assert_eq!(ResourceId::parse(&"0".repeat(33)), None);
    }

    #[test]
    fn stream_names() {
        assert!(StreamName::parse("room-1_a.b~c").is_ok());
        assert!(StreamName::parse("").is_err());
        assert!(StreamName::parse("a/b").is_err());
        assert!(StreamName::parse("é").is_err());
        assert!(StreamName::parse(&"a".repeat(129)).is_err());
        assert!(StreamName::parse(&"a".repeat(128)).is_ok());
        // Dot segments never reach the server (clients remove them); other dots are fine.
        assert!(StreamName::parse(".").is_err());
        assert!(StreamName::parse("..").is_err());
        assert!(StreamName::parse("...").is_ok());
        assert!(StreamName::parse(".hidden").is_ok());
    }
}
