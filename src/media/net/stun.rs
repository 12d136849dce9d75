//! What whip-echo reads of a STUN message itself, before rtc sees it (RFC 8489): whether a
//! datagram is a Binding request or success response and its transaction id (routing by proof of
//! return routability, `routes.rs`), and the local ufrag of a request's USERNAME (which session a
//! check on the shared UDP or ICE-TCP port names).

use rtc::stun::attributes::ATTR_USERNAME;
use rtc::stun::message::{Message, BINDING_REQUEST};

/// STUN message types (RFC 8489 §5): a Binding request, a Binding success response.
pub(in crate::media) const BINDING_REQUEST_TYPE: [u8; 2] = [0x00, 0x01];
pub(in crate::media) const BINDING_SUCCESS_TYPE: [u8; 2] = [0x01, 0x01];

/// Whether `datagram` is a STUN Binding request.
pub(in crate::media) fn is_binding_request(datagram: &[u8]) -> bool {
    binding_transaction(datagram, BINDING_REQUEST_TYPE).is_some()
}

/// Whether `datagram` is a STUN Binding success response.
pub(in crate::media) fn is_binding_success(datagram: &[u8]) -> bool {
    binding_transaction(datagram, BINDING_SUCCESS_TYPE).is_some()
}

/// The transaction id of `datagram` if it is a STUN message of type `typ` (with the magic
/// cookie).
pub(in crate::media) fn binding_transaction(datagram: &[u8], typ: [u8; 2]) -> Option<[u8; 12]> {
    if datagram.len() < 20 || datagram[..2] != typ || datagram[4..8] != [0x21, 0x12, 0xA4, 0x42] {
        return None;
    }
    datagram[8..20].try_into().ok()
}

/// The local (first) ufrag of a STUN Binding request's USERNAME, if `datagram` is one.
/// RFC 7983 §7: a first byte in 0..=3 marks STUN on a multiplexed port.
pub(crate) fn stun_request_local_ufrag(datagram: &[u8]) -> Option<String> {
    if datagram.len() < 20 || datagram[0] > 3 {
        return None;
    }
    let mut message = Message::new();
    message.unmarshal_binary(datagram).ok()?;
    if message.typ != BINDING_REQUEST {
        return None;
    }
    let username = message.get(ATTR_USERNAME).ok()?;
    let username = std::str::from_utf8(&username).ok()?;
    let (local, _remote) = username.split_once(':')?;
    Some(local.to_owned())
}
