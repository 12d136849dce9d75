//! What a client's offer says, read for the report: bundle and rtcp-mux, its candidates, each
//! m-section's direction, codecs, Opus parameters, header extensions, SSRC and msid signalling,
//! simulcast rids. Pure text reading (RFC 8866 lines), bounded: every section is read (the offer
//! is at most `MAX_OFFER_BYTES`), the first [`MAX_SECTIONS`] are kept, [`MAX_LISTED`] entries per
//! list, names cut at [`MAX_NAME`] bytes.

use serde::Serialize;

/// Sections read of an offer.
pub const MAX_SECTIONS: usize = 4;
/// Entries kept per list (codecs, extensions, rids, BUNDLE mids).
pub const MAX_LISTED: usize = 12;
/// Bytes kept of a name (a codec, an extension URI, a rid), at a character boundary.
pub const MAX_NAME: usize = 64;

/// The offer, as the report shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct OfferFacts {
    /// The mids of its `a=group:BUNDLE` (RFC 9143), if it has one.
    pub bundle: Option<Vec<String>>,
    /// Whether every section it did not reject is in that one group.
    pub bundled: bool,
    /// Whether every audio and video section it did not reject has `a=rtcp-mux` (RFC 5761).
    pub rtcp_mux: bool,
    /// Its media sections, all of them (the first [`MAX_SECTIONS`] are kept in `sections`).
    pub sections_total: u32,
    /// `a=ice-options:trickle` (RFC 8840 §4.1.1).
    pub trickle_option: bool,
    /// Its first `a=setup` (RFC 8842 §5: `actpass`, `active` or `passive`).
    pub dtls_setup: Option<String>,
    /// Its candidates (`a=candidate`).
    pub candidates: Candidates,
    /// Its media sections, in order.
    pub sections: Vec<Section>,
}

/// The candidates an offer carries.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Candidates {
    /// Candidates in all.
    pub total: u32,
    /// Host candidates.
    pub host: u32,
    /// Server-reflexive candidates.
    pub srflx: u32,
    /// Peer-reflexive candidates.
    pub prflx: u32,
    /// Relayed (TURN) candidates.
    pub relay: u32,
    /// TCP candidates (RFC 6544).
    pub tcp: u32,
    /// Host candidates named by an mDNS `.local` name (draft-ietf-mmusic-mdns-ice-candidates,
    /// the browsers' privacy default): the server cannot resolve them and finds the client by
    /// its checks.
    pub mdns: u32,
}

/// One m-section.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Section {
    /// `audio`, `video`, `application`.
    pub kind: String,
    /// Its `a=mid`.
    pub mid: Option<String>,
    /// `sendrecv` (the default), `sendonly`, `recvonly` or `inactive`.
    pub direction: String,
    /// Port 0 without `a=bundle-only` (RFC 9143 §7.5.3): the offerer rejected it.
    pub rejected: bool,
    /// `a=rtcp-mux` (RFC 5761).
    pub rtcp_mux: bool,
    /// `a=rtcp-mux-only` (RFC 8858).
    pub rtcp_mux_only: bool,
    /// `name/clock[/channels]` of each payload type, in preference order.
    pub codecs: Vec<String>,
    /// Opus's `a=fmtp` parameters, when Opus is offered.
    pub opus: Option<Opus>,
    /// `a=ptime` (ms).
    pub ptime: Option<u32>,
    /// Header extension URIs (`a=extmap`).
    pub extensions: Vec<String>,
    /// `a=ssrc` lines' distinct SSRCs.
    pub ssrcs: u32,
    /// Those SSRCs (at most [`MAX_LISTED`]).
    #[serde(skip)]
    seen_ssrcs: Vec<u32>,
    /// `a=msid` (RFC 8830).
    pub msid: bool,
    /// Simulcast send rids (`a=rid:<id> send`, RFC 8851).
    pub rids: Vec<String>,
}

/// Opus's parameters (RFC 7587 §6.1).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Opus {
    /// `stereo=1`.
    pub stereo: bool,
    /// `useinbandfec=1` (Opus in-band FEC).
    pub useinbandfec: bool,
    /// `usedtx=1` (discontinuous transmission).
    pub usedtx: bool,
}

impl OfferFacts {
    /// Reads `sdp`.
    pub fn read(sdp: &str) -> OfferFacts {
        let mut facts = OfferFacts::default();
        let mut sections: Vec<(Section, Vec<(String, String)>)> = Vec::new();
        for line in sdp.lines().map(str::trim_end) {
            if let Some(media) = line.strip_prefix("m=") {
                let mut words = media.split_whitespace();
                let kind = cut(words.next().unwrap_or_default());
                let rejected = words.next() == Some("0");
                let section = Section {
                    kind,
                    rejected,
                    direction: "sendrecv".into(),
                    ..Section::default()
                };
                sections.push((section, Vec::new()));
                continue;
            }
            let Some(attribute) = line.strip_prefix("a=") else {
                continue;
            };
            match sections.last_mut() {
                None => facts.session_attribute(attribute),
                Some((section, rtpmaps)) => {
                    section.attribute(attribute, rtpmaps);
                    facts.candidate(attribute);
                    if let Some(setup) = attribute.strip_prefix("setup:") {
                        facts.dtls_setup.get_or_insert_with(|| cut(setup.trim()));
                    }
                }
            }
        }
        let live = || sections.iter().map(|(s, _)| s).filter(|s| !s.rejected);
        facts.bundled = match &facts.bundle {
            Some(mids) => live().all(|s| s.mid.as_ref().is_some_and(|m| mids.contains(m))),
            None => live().count() <= 1,
        };
        let media = |s: &&Section| s.kind == "audio" || s.kind == "video";
        facts.rtcp_mux = live().filter(media).all(|s| s.rtcp_mux);
        facts.sections_total = sections.len() as u32;
        facts.sections = sections
            .into_iter()
            .take(MAX_SECTIONS)
            .map(|(s, _)| s)
            .collect();
        facts
    }

    /// A session-level attribute.
    fn session_attribute(&mut self, attribute: &str) {
        if let Some(group) = attribute.strip_prefix("group:BUNDLE") {
            let mids = group.split_whitespace().take(MAX_LISTED).map(cut);
            self.bundle = Some(mids.collect());
        } else if let Some(options) = attribute.strip_prefix("ice-options:") {
            self.trickle_option |= options.split_whitespace().any(|o| o == "trickle");
        } else if let Some(setup) = attribute.strip_prefix("setup:") {
            self.dtls_setup.get_or_insert_with(|| cut(setup.trim()));
        }
    }

    /// An `a=candidate` line (RFC 8839 §5.1): counted by type, transport and mDNS name.
    fn candidate(&mut self, attribute: &str) {
        let Some(candidate) = attribute.strip_prefix("candidate:") else {
            return;
        };
        let words: Vec<&str> = candidate.split_whitespace().collect();
        let c = &mut self.candidates;
        c.total += 1;
        if words.get(2).is_some_and(|t| t.eq_ignore_ascii_case("tcp")) {
            c.tcp += 1;
        }
        if words.get(4).is_some_and(|a| a.ends_with(".local")) {
            c.mdns += 1;
        }
        let kind = words
            .iter()
            .position(|w| *w == "typ")
            .and_then(|i| words.get(i + 1));
        match kind.copied() {
            Some("host") => c.host += 1,
            Some("srflx") => c.srflx += 1,
            Some("prflx") => c.prflx += 1,
            Some("relay") => c.relay += 1,
            _ => {}
        }
    }
}

impl Section {
    /// A media-level attribute; `rtpmaps` keeps (payload type, codec) to name fmtp lines.
    fn attribute(&mut self, attribute: &str, rtpmaps: &mut Vec<(String, String)>) {
        let (name, value) = attribute.split_once(':').unwrap_or((attribute, ""));
        match name {
            "mid" => self.mid = Some(cut(value)),
            "sendrecv" | "sendonly" | "recvonly" | "inactive" => self.direction = name.into(),
            "rtcp-mux" => self.rtcp_mux = true,
            // RFC 9143 §7.5.3: an offer's bundle-only section has port 0 and is not rejected.
            "bundle-only" => self.rejected = false,
            "rtcp-mux-only" => self.rtcp_mux_only = true,
            "rtpmap" => {
                let (pt, codec) = value.split_once(' ').unwrap_or((value, ""));
                if self.codecs.len() < MAX_LISTED {
                    self.codecs.push(cut(codec));
                    rtpmaps.push((pt.to_owned(), codec.to_ascii_lowercase()));
                }
            }
            "fmtp" => {
                let (pt, parameters) = value.split_once(' ').unwrap_or((value, ""));
                let opus = rtpmaps
                    .iter()
                    .any(|(p, c)| p == pt && c.starts_with("opus/"));
                if opus && self.opus.is_none() {
                    let on = |key: &str| {
                        (parameters.split(';'))
                            .any(|p| p.trim().eq_ignore_ascii_case(&format!("{key}=1")))
                    };
                    self.opus = Some(Opus {
                        stereo: on("stereo"),
                        useinbandfec: on("useinbandfec"),
                        usedtx: on("usedtx"),
                    });
                }
            }
            "ptime" => self.ptime = value.trim().parse().ok(),
            "extmap" => {
                let uri = value.split_whitespace().nth(1).unwrap_or_default();
                if self.extensions.len() < MAX_LISTED {
                    self.extensions.push(cut(uri));
                }
            }
            "ssrc" => {
                let ssrc = value.split_whitespace().next().and_then(|s| s.parse().ok());
                if let Some(ssrc) = ssrc {
                    if !self.seen_ssrcs.contains(&ssrc) && self.seen_ssrcs.len() < MAX_LISTED {
                        self.seen_ssrcs.push(ssrc);
                        self.ssrcs += 1;
                    }
                }
            }
            "msid" => self.msid = true,
            "rid" => {
                let mut words = value.split_whitespace();
                let (id, direction) = (words.next().unwrap_or_default(), words.next());
                if direction == Some("send") && self.rids.len() < MAX_LISTED {
                    self.rids.push(cut(id));
                }
            }
            _ => {}
        }
    }
}

/// `s`, at most [`MAX_NAME`] bytes (cut at a character boundary).
fn cut(s: &str) -> String {
    let mut end = s.len().min(MAX_NAME);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(path).expect("fixture")
    }

    #[test]
    fn obs_offer_is_bundled_with_opus_and_h264() {
        let facts = OfferFacts::read(&fixture("obs-offer.sdp"));
        assert!(facts.bundled, "{facts:?}");
        assert_eq!(facts.sections.len(), 2);
        let audio = &facts.sections[0];
        assert_eq!(audio.kind, "audio");
        assert!(audio.rtcp_mux);
        assert!(audio
            .codecs
            .iter()
            .any(|c| c.to_lowercase().starts_with("opus/48000")));
        assert!(audio.opus.is_some());
        assert_eq!(facts.sections[1].kind, "video");
    }

    #[test]
    fn an_unbundled_offer_its_candidates_and_rids() {
        let sdp = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=ice-options:trickle\r\n\
            m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=sendonly\r\n\
            a=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10;useinbandfec=1;stereo=1\r\n\
            a=candidate:1 1 udp 2122260223 abc.local 5000 typ host\r\n\
            a=candidate:2 1 tcp 1518280447 192.0.2.1 9 typ host tcptype active\r\n\
            a=candidate:3 1 udp 1686052607 203.0.113.5 6000 typ srflx raddr 0.0.0.0 rport 0\r\n\
            a=ssrc:11 cname:x\r\na=ssrc:11 msid:a b\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=sendonly\r\na=rtcp-mux\r\n\
            a=rtpmap:96 VP8/90000\r\na=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r\n\
            a=rid:h send\r\na=rid:l send\r\na=simulcast:send h;l\r\n\
            m=application 0 UDP/DTLS/SCTP webrtc-datachannel\r\n\
            m=video 0 UDP/TLS/RTP/SAVPF 97\r\na=mid:3\r\na=bundle-only\r\na=rtcp-mux\r\n";
        let facts = OfferFacts::read(sdp);
        assert!(!facts.bundled);
        // The audio section lacks rtcp-mux; the rejected data channel is not judged.
        assert!(!facts.rtcp_mux);
        assert_eq!(facts.bundle, None);
        assert!(facts.trickle_option);
        let c = &facts.candidates;
        assert_eq!((c.total, c.host, c.srflx, c.tcp, c.mdns), (3, 2, 1, 1, 1));
        let audio = &facts.sections[0];
        assert_eq!(audio.direction, "sendonly");
        assert!(!audio.rtcp_mux);
        assert_eq!(audio.ssrcs, 1);
        let opus = audio.opus.clone().unwrap();
        assert!(opus.stereo && opus.useinbandfec && !opus.usedtx);
        let video = &facts.sections[1];
        assert_eq!(video.rids, ["h", "l"]);
        assert_eq!(video.extensions, ["urn:ietf:params:rtp-hdrext:sdes:mid"]);
        assert!(facts.sections[2].rejected);
        assert!(!facts.sections[3].rejected, "bundle-only is not rejected");
    }

    #[test]
    fn what_is_read_is_bounded() {
        let mut sdp = String::from("v=0\r\n");
        for i in 0..100 {
            sdp += &format!("m=audio 9 RTP/SAVPF {i}\r\n");
            for j in 0..100 {
                sdp += &format!("a=rtpmap:{j} {}/48000\r\n", "x".repeat(500));
            }
        }
        let facts = OfferFacts::read(&sdp);
        assert_eq!(facts.sections.len(), MAX_SECTIONS);
        assert_eq!(facts.sections_total, 100);
        assert!(facts.sections.iter().all(|s| s.codecs.len() == MAX_LISTED));
        assert!(facts.sections[0].codecs[0].len() <= MAX_NAME);
        // A name of 4-byte characters is cut by bytes, at a character boundary.
        assert_eq!(cut(&"\u{1F600}".repeat(100)).len(), MAX_NAME);
        assert_eq!(cut(&format!("a{}", "\u{1F600}".repeat(100))).len(), 61);
    }
}
