//! kiln's runner: executes what the build graph asks.
//!
//! Owns overlay snapshots over the store's unpacked layers, the namespace/cgroup sandbox in
//! which RUN steps execute, and the walk of an upperdir that turns a step's filesystem change
//! into an OCI layer. It depends on `kiln-store` only.

pub mod diff;
pub mod sandbox;
pub mod snapshot;
pub mod user;
