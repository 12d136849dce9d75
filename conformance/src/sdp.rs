//! Just enough SDP reading to judge an answer: sections, attributes, direction. Validity itself is
//! judged by webrtc-rs's SDP parser.

use std::io::Cursor;

/// A parsed SDP body.
#[derive(Debug, Clone, Default)]
pub struct Sdp {
    /// Session-level `a=` attributes, as `key[:value]` text.
    pub session: Vec<String>,
    /// The media sections in order.
    pub sections: Vec<Section>,
}

/// One `m=` section.
#[derive(Debug, Clone, Default)]
pub struct Section {
    /// `audio`, `video`, `application`.
    pub media: String,
    /// The port of the m-line (0 = rejected).
    pub port: u16,
    /// The m-line's format list.
    pub formats: Vec<String>,
    /// The section's `a=` attributes, as `key[:value]` text.
    pub attributes: Vec<String>,
}

fn attr<'a>(list: &'a [String], key: &str) -> impl Iterator<Item = Option<&'a str>> + 'a {
    let key = key.to_owned();
    list.iter().filter_map(move |a| match a.split_once(':') {
        Some((k, v)) if k == key => Some(Some(v)),
        None if *a == key => Some(None),
        _ => None,
    })
}

impl Section {
    /// First value of attribute `key` (`Some("")` style flags give `Some(None)`).
    pub fn attr(&self, key: &str) -> Option<Option<&str>> {
        attr(&self.attributes, key).next()
    }

    /// All values of attribute `key`.
    pub fn attrs(&self, key: &str) -> Vec<&str> {
        attr(&self.attributes, key).flatten().collect()
    }

    /// The media direction (RFC 8866 §6.7; `sendrecv` when absent).
    pub fn direction(&self) -> &'static str {
        for d in ["sendonly", "recvonly", "inactive", "sendrecv"] {
            if self.attr(d).is_some() {
                return d;
            }
        }
        "sendrecv"
    }
}

impl Sdp {
    /// Parses `text`; errors when webrtc-rs's parser rejects it.
    pub fn parse(text: &str) -> Result<Sdp, String> {
        rtc::sdp::description::session::SessionDescription::unmarshal(&mut Cursor::new(
            text.as_bytes(),
        ))
        .map_err(|e| e.to_string())?;
        let mut sdp = Sdp::default();
        for line in text.lines().map(str::trim_end) {
            if let Some(m) = line.strip_prefix("m=") {
                let mut parts = m.split_whitespace();
                let media = parts.next().unwrap_or_default().to_owned();
                let port = parts
                    .next()
                    .and_then(|p| p.split('/').next()?.parse().ok())
                    .unwrap_or(0);
                let formats = parts.skip(1).map(str::to_owned).collect();
                sdp.sections.push(Section {
                    media,
                    port,
                    formats,
                    attributes: Vec::new(),
                });
            } else if let Some(a) = line.strip_prefix("a=") {
                match sdp.sections.last_mut() {
                    Some(section) => section.attributes.push(a.to_owned()),
                    None => sdp.session.push(a.to_owned()),
                }
            }
        }
        Ok(sdp)
    }

    /// The first audio section.
    pub fn audio(&self) -> Option<&Section> {
        self.sections.iter().find(|s| s.media == "audio")
    }

    /// A session-level attribute's first value.
    pub fn session_attr(&self, key: &str) -> Option<Option<&str>> {
        attr(&self.session, key).next()
    }

    /// An attribute at media level in `section`, or else at session level (ICE credentials and
    /// fingerprints may be at either, RFC 8839 §5.4 and RFC 8122 §5).
    pub fn effective<'a>(&'a self, section: &'a Section, key: &str) -> Option<&'a str> {
        section
            .attr(key)
            .or_else(|| self.session_attr(key))
            .flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANSWER: &str = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n\
        a=fingerprint:sha-256 AA:BB\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\n\
        a=mid:0\r\na=ice-ufrag:u\r\na=rtcp-mux\r\na=recvonly\r\nm=video 0 UDP/TLS/RTP/SAVPF 0\r\n\
        c=IN IP4 0.0.0.0\r\n";

    #[test]
    fn reads_sections_and_attributes() {
        let sdp = Sdp::parse(ANSWER).unwrap();
        assert_eq!(sdp.sections.len(), 2);
        let audio = sdp.audio().unwrap();
        assert_eq!((audio.port, audio.direction()), (9, "recvonly"));
        assert_eq!(audio.attr("rtcp-mux"), Some(None));
        assert_eq!(sdp.effective(audio, "ice-ufrag"), Some("u"));
        assert_eq!(sdp.effective(audio, "fingerprint"), Some("sha-256 AA:BB"));
        assert_eq!(sdp.sections[1].port, 0);
        assert_eq!(sdp.session_attr("group"), Some(Some("BUNDLE 0")));
    }

    #[test]
    fn rejects_garbage() {
        assert!(Sdp::parse("hello").is_err());
    }
}
