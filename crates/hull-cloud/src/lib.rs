//! Hull's cloud layer: what lets strangers share one host.
//!
//! Tenants and their access keys, the HYPER-HMAC-SHA256 request signatures
//! Hyper.sh's clients send, and the store that keeps them. The engine below
//! stays tenant-agnostic: the API boundary authenticates a request here and
//! hands the runtime a scope.

pub mod crons;
pub mod date;
pub mod func_events;
pub mod funcs;
pub mod images;
mod owned;
pub mod quota;
pub mod seal;
pub mod sign;
pub mod storage;
pub mod store;
pub mod usage;
pub mod verify;
pub mod witness;
