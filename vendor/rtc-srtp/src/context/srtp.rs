use super::*;
use shared::{
    error::{Error, Result},
    marshal::{MarshalSize, Unmarshal},
};

use bytes::BytesMut;

impl Context {
    /// Decrypts an SRTP packet whose header has already been parsed.
    ///
    /// Saves re-parsing when the caller needed the header to route the packet. The header must
    /// be the one belonging to `encrypted`.
    ///
    /// # Errors
    ///
    /// Fails if authentication fails, if the packet is a replay, or if it is too short to hold
    /// the profile's auth tag.
    pub fn decrypt_rtp_with_header(
        &mut self,
        encrypted: &[u8],
        header: &rtp::Header,
    ) -> Result<BytesMut> {
        let auth_tag_len = self.cipher.rtp_auth_tag_len();
        if encrypted.len() < header.marshal_size() + auth_tag_len {
            return Err(Error::ErrTooShortRtp);
        }
        self.open_rtp(header, |cipher, roc| {
            cipher.decrypt_rtp(encrypted, header, roc)
        })
    }

    /// whip-echo patch: [`Context::decrypt_rtp_with_header`] in place: `packet` (the whole
    /// SRTP packet, whose header is `header`) is authenticated and opened where it is, and left
    /// as the RTP packet, without its tag. Nothing is allocated. On error, `packet` is to be
    /// dropped.
    pub fn decrypt_rtp_in_place(
        &mut self,
        packet: &mut BytesMut,
        header: &rtp::Header,
    ) -> Result<()> {
        let auth_tag_len = self.cipher.rtp_auth_tag_len();
        if packet.len() < header.marshal_size() + auth_tag_len {
            return Err(Error::ErrTooShortRtp);
        }
        self.open_rtp(header, |cipher, roc| {
            cipher.decrypt_rtp_in_place(packet, header, roc)
        })
    }

    /// whip-echo patch: [`Context::encrypt_rtp_with_header`] in place: `packet` (an RTP packet
    /// whose header is `header`) is protected where it is and its tag appended; reserve the
    /// tag's room (16 bytes covers every profile) and nothing is allocated.
    pub fn encrypt_rtp_in_place(
        &mut self,
        packet: &mut BytesMut,
        header: &rtp::Header,
    ) -> Result<()> {
        let new_srtp_replay_detector = &self.new_srtp_replay_detector;
        let state = self
            .srtp_ssrc_states
            .entry(header.ssrc)
            .or_insert_with(|| SrtpSsrcState {
                ssrc: header.ssrc,
                replay_detector: Some(new_srtp_replay_detector()),
                ..Default::default()
            });
        let (roc, diff, ovf) = state.next_rollover_count(header.sequence_number);
        if ovf {
            // RFC 3711 §9.2, as `encrypt_rtp_with_header`.
            return Err(Error::ErrExceededMaxPackets);
        }
        self.cipher.encrypt_rtp_in_place(packet, header, roc)?;
        state.update_rollover_count(header.sequence_number, diff);
        Ok(())
    }

    /// The replay check and rollover count around `open` (which authenticates and decrypts with
    /// the packet's rollover count), shared by the copying and the in-place decryption.
    fn open_rtp<T>(
        &mut self,
        header: &rtp::Header,
        open: impl FnOnce(&mut dyn Cipher, u32) -> Result<T>,
    ) -> Result<T> {
        // whip-echo patch: the state of a new SSRC is checked in `fresh` and inserted only once
        // the packet has authenticated (as libsrtp does), and only while the context holds fewer
        // than MAX_SSRC_STATES SSRCs. It used to be inserted first, so packets with random SSRCs
        // and any auth tag, from anyone, grew the map without bound.
        let full = self.srtp_ssrc_states.len() >= MAX_SSRC_STATES;
        let mut fresh = None;
        let state = match self.srtp_ssrc_states.get_mut(&header.ssrc) {
            Some(state) => state,
            None if full => {
                return Err(Error::SsrcMissingFromSrtp(header.ssrc));
            }
            None => fresh.insert(SrtpSsrcState {
                ssrc: header.ssrc,
                replay_detector: Some((self.new_srtp_replay_detector)()),
                ..Default::default()
            }),
        };
        let (roc, diff, _) = state.next_rollover_count(header.sequence_number);
        if let Some(replay_detector) = &mut state.replay_detector
            && !replay_detector.check(header.sequence_number as u64)
        {
            return Err(Error::SrtpSsrcDuplicated(
                header.ssrc,
                header.sequence_number,
            ));
        }

        let dst = open(self.cipher.as_mut(), roc)?;
        if let Some(replay_detector) = &mut state.replay_detector {
            replay_detector.accept();
        }
        state.update_rollover_count(header.sequence_number, diff);
        if let Some(state) = fresh {
            self.srtp_ssrc_states.insert(header.ssrc, state);
        }

        Ok(dst)
    }

    /// DecryptRTP decrypts a RTP packet with an encrypted payload
    pub fn decrypt_rtp(&mut self, encrypted: &[u8]) -> Result<BytesMut> {
        let mut buf = encrypted;
        let header = rtp::Header::unmarshal(&mut buf)?;
        self.decrypt_rtp_with_header(encrypted, &header)
    }

    /// Encrypts an RTP payload, using an already-parsed header.
    ///
    /// Saves re-parsing when the caller has just built the header. Returns the full protected
    /// packet, header included.
    ///
    /// # Errors
    ///
    /// Fails if the SRTP context has no key for this SSRC or the cipher rejects the input.
    pub fn encrypt_rtp_with_header(
        &mut self,
        plaintext: &[u8],
        header: &rtp::Header,
    ) -> Result<BytesMut> {
        let (roc, diff, ovf) = self
            .get_srtp_ssrc_state(header.ssrc)
            .next_rollover_count(header.sequence_number);
        if ovf {
            // ... when 2^48 SRTP packets or 2^31 SRTCP packets have been secured with the same key
            // (whichever occurs before), the key management MUST be called to provide new master key(s)
            // (previously stored and used keys MUST NOT be used again), or the session MUST be terminated.
            // https://www.rfc-editor.org/rfc/rfc3711#section-9.2
            return Err(Error::ErrExceededMaxPackets);
        }

        let dst = self.cipher.encrypt_rtp(plaintext, header, roc)?;

        self.get_srtp_ssrc_state(header.ssrc)
            .update_rollover_count(header.sequence_number, diff);

        Ok(dst)
    }

    /// EncryptRTP marshals and encrypts an RTP packet, writing to the dst buffer provided.
    /// If the dst buffer does not have the capacity to hold `len(plaintext) + 10` bytes, a new one will be allocated and returned.
    pub fn encrypt_rtp(&mut self, plaintext: &[u8]) -> Result<BytesMut> {
        let mut buf = plaintext;
        let header = rtp::Header::unmarshal(&mut buf)?;
        self.encrypt_rtp_with_header(plaintext, &header)
    }
}
