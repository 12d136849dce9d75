//! Operations: what an operator watches and checks (metrics, the container health check) and the
//! logs. The start-up self-test is a client of the media plane, which counts into the metrics, so
//! it is a room of its own (`selftest.rs`) rather than one of these.

pub mod healthcheck;
pub mod metrics;
pub mod telemetry;
