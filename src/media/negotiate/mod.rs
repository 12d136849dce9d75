//! Negotiation, on the request's task: the offer's checks, the peer connection built in named
//! steps, the codecs chosen, the answer's edits, and PATCH's pure part.

pub(crate) mod answer;
pub(crate) mod codecs;
mod engine;
pub mod offer;
pub(crate) mod patch;
pub(crate) mod peer;
pub(crate) mod transport_attrs;
