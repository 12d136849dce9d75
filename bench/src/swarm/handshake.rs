//! The swarm's connection set-up: the shared DTLS configuration and certificate, the ICE exchange
//! (RFC 8445 §7.2.4: one controlling check with USE-CANDIDATE; answers to the server's checks and
//! RFC 7675 consent checks), and the DTLS handshake whose exporter keys SRTP (RFC 5764 §4.2).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rtc::crypto::{HashAlgorithm, RTCCryptoProvider};
use rtc::dtls::config::{ConfigBuilder, ExtendedMasterSecretType, HandshakeConfig};
use rtc::dtls::crypto::Certificate;
use rtc::dtls::endpoint::EndpointEvent;
use rtc::dtls::extension::extension_use_srtp::SrtpProtectionProfile;
use rtc::ice::attributes::control::AttrControlling;
use rtc::ice::attributes::priority::PriorityAttr;
use rtc::ice::attributes::use_candidate::UseCandidateAttr;
use rtc::srtp::config::{Config as SrtpConfig, LABEL_EXTRACTOR_DTLS_SRTP};
use rtc::srtp::context::Context;
use rtc::srtp::protection_profile::ProtectionProfile;
use rtc::stun::attributes::ATTR_USERNAME;
use rtc::stun::fingerprint::FINGERPRINT;
use rtc::stun::integrity::MessageIntegrity;
use rtc::stun::message::{Message, Setter, TransactionId, BINDING_REQUEST, BINDING_SUCCESS};
use rtc::stun::textattrs::Username;
use rtc::stun::xoraddr::XorMappedAddress;

use super::wire::{Phase, Style, Wire};

/// What every session shares: the crypto provider, one certificate and DTLS configs.
pub struct Shared {
    provider: Arc<dyn RTCCryptoProvider>,
    client: Arc<HandshakeConfig>,
    pub(super) server: Arc<HandshakeConfig>,
    pub(super) fingerprint: String,
}

impl Shared {
    pub fn new() -> Result<Shared, String> {
        let provider = rtc::crypto::default_provider().map_err(|e| e.to_string())?;
        let cert = Certificate::generate_self_signed(vec!["swarm".to_owned()], provider.crypto())
            .map_err(|e| e.to_string())?;
        let digest = provider
            .crypto()
            .hash(HashAlgorithm::Sha256, cert.certificate[0].as_ref())
            .map_err(|e| e.to_string())?;
        let fingerprint = digest
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":");
        let config = |is_client: bool| {
            ConfigBuilder::default()
                .with_crypto_provider(provider.clone())
                .with_certificates(vec![cert.clone()])
                .with_srtp_protection_profiles(vec![
                    SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm,
                    SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80,
                ])
                // The bench trusts the server it started; the server checks our fingerprint.
                .with_insecure_skip_verify(true)
                .with_extended_master_secret(ExtendedMasterSecretType::Require)
                .with_flight_interval(Duration::from_millis(100))
                .build(is_client, None)
                .map(Arc::new)
                .map_err(|e| e.to_string())
        };
        Ok(Shared {
            client: config(true)?,
            server: config(false)?,
            provider,
            fingerprint,
        })
    }
}

impl Wire {
    pub(super) fn send_check(&mut self, shared: &Shared) {
        let Some(remote) = &self.remote else { return };
        // A NominateAfterDtls session nominates only once its DTLS has started.
        let nominate = self.style == Style::Aggressive || self.phase != Phase::Ice;
        let mut setters: Vec<Box<dyn Setter>> = vec![
            Box::new(BINDING_REQUEST),
            Box::new(TransactionId::new()),
            Box::new(Username::new(
                ATTR_USERNAME,
                format!("{}:{}", remote.ufrag, self.ufrag),
            )),
            Box::new(AttrControlling(self.tie_breaker)),
            Box::new(PriorityAttr(2_130_706_431)),
        ];
        if nominate {
            setters.push(Box::new(UseCandidateAttr));
        }
        setters.push(Box::new(
            MessageIntegrity::new_short_term_integrity_with_provider(
                remote.pwd.clone(),
                shared.provider.crypto(),
            ),
        ));
        setters.push(Box::new(FINGERPRINT));
        let mut m = Message::new();
        let built = m.build(&setters);
        if built.is_ok() {
            let _ = self.socket.send_to(&m.raw, remote.addr);
        }
    }

    pub(super) fn on_stun(&mut self, shared: &Shared, now: Instant, from: SocketAddr, data: &[u8]) {
        let mut m = Message::new();
        m.raw = data.to_vec();
        if m.decode().is_err() {
            return;
        }
        if m.typ == BINDING_REQUEST {
            // Answer the server's checks and consent checks (RFC 7675) with our password.
            let mut out = Message::new();
            let built = out.build(&[
                Box::new(m.clone()) as Box<dyn Setter>,
                Box::new(BINDING_SUCCESS),
                Box::new(XorMappedAddress {
                    ip: from.ip(),
                    port: from.port(),
                }),
                Box::new(MessageIntegrity::new_short_term_integrity_with_provider(
                    self.pwd.clone(),
                    shared.provider.crypto(),
                )),
                Box::new(FINGERPRINT),
            ]);
            if built.is_ok() {
                let _ = self.socket.send_to(&out.raw, from);
            }
            self.answered = true;
        } else if m.typ == BINDING_SUCCESS {
            self.checked = true;
        }
        let ready = match self.style {
            Style::Aggressive => self.checked && self.answered,
            Style::NominateAfterDtls => self.checked,
        };
        if self.phase == Phase::Ice && ready {
            self.start_dtls(shared, now);
            if self.style == Style::NominateAfterDtls {
                // The ClientHello is out; now the nominating check (libjuice's order).
                self.send_check(shared);
            }
        }
    }

    fn start_dtls(&mut self, shared: &Shared, now: Instant) {
        let Some(remote) = &self.remote else { return };
        self.phase = Phase::Dtls;
        if !remote.dtls_server {
            let addr = remote.addr;
            if self
                .dtls
                .connect(now, addr, shared.client.clone(), None)
                .is_err()
            {
                self.phase = Phase::Failed;
            }
            self.flush_dtls();
        }
    }

    pub(super) fn on_dtls(&mut self, shared: &Shared, now: Instant, from: SocketAddr, data: &[u8]) {
        match (self.phase, self.remote.as_ref()) {
            // The server is the DTLS client: its ClientHello may overtake our last check.
            (Phase::Ice, Some(remote)) if remote.dtls_server => self.phase = Phase::Dtls,
            (Phase::Ice, _) => return,
            _ => {}
        }
        let events = match self.dtls.read(now, from, None, BytesMut::from(data)) {
            Ok(events) => events,
            Err(_) => {
                self.flush_dtls();
                return;
            }
        };
        self.flush_dtls();
        for event in events {
            if let EndpointEvent::HandshakeComplete = event {
                match self.keys(shared, from) {
                    Ok(()) => self.phase = Phase::Media,
                    Err(_) => self.phase = Phase::Failed,
                }
            }
        }
    }

    /// SRTP contexts from the DTLS exporter (RFC 5764 §4.2), as rtc's own DTLS handler keys them.
    fn keys(&mut self, shared: &Shared, from: SocketAddr) -> Result<(), String> {
        let state = self
            .dtls
            .get_connection_state(from)
            .ok_or("no DTLS state")?;
        let profile = match state.srtp_protection_profile() {
            SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm => ProtectionProfile::AeadAes128Gcm,
            SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80 => {
                ProtectionProfile::Aes128CmHmacSha1_80
            }
            other => return Err(format!("unexpected SRTP profile {other:?}")),
        };
        let mut config = SrtpConfig {
            profile,
            ..Default::default()
        };
        let material = state
            .export_keying_material(LABEL_EXTRACTOR_DTLS_SRTP, &[], config.keying_material_len())
            .map_err(|e| e.to_string())?;
        config
            .set_session_keys_from_keying_material(material.as_ref(), state.is_client())
            .map_err(|e| e.to_string())?;
        let crypto = shared.provider.crypto();
        let k = &config.keys;
        let context = |key: &[u8], salt: &[u8]| {
            Context::new(key, salt, profile, None, None, crypto).map_err(|e| e.to_string())
        };
        self.local_srtp = Some(context(&k.local_master_key, &k.local_master_salt)?);
        self.remote_srtp = Some(context(&k.remote_master_key, &k.remote_master_salt)?);
        Ok(())
    }

    pub(super) fn flush_dtls(&mut self) {
        while let Some(out) = self.dtls.poll_transmit() {
            let _ = self.socket.send_to(&out.message, out.transport.peer_addr);
        }
    }
}
