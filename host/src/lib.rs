//! Native plumbing that Sluice's services share and none of them owns:
//! configuration from a TOML file and `SLUICE_*` variables ([`config`]),
//! secrets and constant-time token checks ([`token`]), TLS identities and the
//! development PKI ([`tls`]), QUIC client and server endpoints ([`quic`]),
//! the wall clock ([`clock`]), the signals that stop or reload a service
//! ([`signals`]), the metrics vocabulary ([`metrics`]) and the process's own
//! metrics ([`process`]).
//!
//! It holds no business rules: what a batch means, when to retry it or where
//! an event goes is the services' and the core's. Native only.

pub mod clock;
pub mod config;
pub mod metrics;
pub mod process;
pub mod quic;
pub mod signals;
pub mod tls;
pub mod token;
