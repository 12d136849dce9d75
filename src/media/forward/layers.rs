//! A publisher's video layers as each fan-out reads them (the top one and each rid's, no
//! allocation), the bounded set of SSRCs the fan-out gathers, and the rids a viewer names.

/// Sources a publisher is known by at once (a simulcast offer has a handful of layers); a new
/// SSRC beyond them replaces the one silent longest, if that one is inactive.
pub const MAX_SOURCES: usize = 8;

/// The longest rid a viewer may ask for (RFC 8851 §10 sets no length; RFC 8852's SDES item
/// carries at most 255 bytes, and real clients use one or two characters).
pub const MAX_RID_LEN: usize = 32;

/// A rid as a viewer names it: RFC 8851 §10's `rid-id`, `1*(alpha-numeric / "-" / "_")`.
pub fn parse_rid(rid: &str) -> Result<String, String> {
    let valid = rid
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if rid.is_empty() || rid.len() > MAX_RID_LEN || !valid {
        return Err(format!(
            "a layer is a rid: 1 to {MAX_RID_LEN} letters, digits, '-' or '_' (RFC 8851)"
        ));
    }
    Ok(rid.to_owned())
}

/// A rid as a number, so that a leg's choice is compared without touching strings per packet.
pub fn rid_id(rid: &str) -> u64 {
    key_id(rid)
}

/// A few SSRCs (at most [`MAX_SOURCES`]; more are not kept), without allocating.
#[derive(Debug, Clone, Copy, Default)]
pub struct SsrcSet {
    ssrcs: [u32; MAX_SOURCES],
    len: usize,
}

impl SsrcSet {
    /// Adds `ssrc` if it is not there and there is room.
    pub fn insert(&mut self, ssrc: u32) {
        if !self.contains(ssrc) && self.len < MAX_SOURCES {
            self.ssrcs[self.len] = ssrc;
            self.len += 1;
        }
    }

    /// Whether `ssrc` is in the set.
    pub fn contains(&self, ssrc: u32) -> bool {
        self.ssrcs[..self.len].contains(&ssrc)
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many SSRCs it holds.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Keeps only the SSRCs `keep` says yes to.
    pub fn retain(&mut self, keep: impl Fn(u32) -> bool) {
        let mut kept = SsrcSet::default();
        for &ssrc in self.iter().filter(|&&s| keep(s)) {
            kept.insert(ssrc);
        }
        *self = kept;
    }

    /// The SSRCs in the set.
    pub fn iter(&self) -> impl Iterator<Item = &u32> {
        self.ssrcs[..self.len].iter()
    }
}

/// A publisher's video layers at one instant, copied for the fan-out (no allocation).
#[derive(Debug, Clone, Copy, Default)]
pub struct Layers {
    /// The top layer: the default.
    pub top: Option<u32>,
    /// The active layers with a rid: ([`rid_id`], SSRC).
    pub(super) named: [(u64, u32); MAX_SOURCES],
    pub(super) len: usize,
}

impl Layers {
    /// The SSRC a leg that asked for the rid `wanted` (its [`rid_id`]; none: the default)
    /// should forward: that layer while it sends, else the top one.
    pub fn target(&self, wanted: Option<u64>) -> Option<u32> {
        wanted
            .and_then(|id| {
                self.named[..self.len]
                    .iter()
                    .find(|(rid, _)| *rid == id)
                    .map(|(_, ssrc)| *ssrc)
            })
            .or(self.top)
    }

    /// Layers with `top` and the active `named` ones (for tests elsewhere).
    #[cfg(test)]
    pub(crate) fn of(top: Option<u32>, named: &[(&str, u32)]) -> Self {
        let mut layers = Layers {
            top,
            ..Layers::default()
        };
        for (rid, ssrc) in named {
            layers.named[layers.len] = (rid_id(rid), *ssrc);
            layers.len += 1;
        }
        layers
    }

    /// Whether `ssrc` is one of the layers.
    pub fn has(&self, ssrc: u32) -> bool {
        self.top == Some(ssrc) || self.named[..self.len].iter().any(|(_, s)| *s == ssrc)
    }
}

/// A codec key or a rid as a number (FNV-1a), for comparisons on the per-packet path.
pub fn key_id(key: &str) -> u64 {
    key.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}
