//! kiln's content-addressed store.
//!
//! Everything kiln keeps on disk lives under one root (default `/var/lib/kiln`):
//!
//! - `blobs/sha256/<hex>`: blobs (layers, configs, manifests) by digest, written atomically and
//!   verified ([`blobs`]);
//! - `snapshots/<chain-id>/`: each layer unpacked once, ready to be an overlay lowerdir
//!   ([`snapshots`], [`layer`]);
//! - `meta.redb`: the metadata DB: tags, where blobs came from, later the build cache index and
//!   leases ([`meta`]).
//!
//! On top of that it owns the image types ([`image`]), garbage collection ([`gc`]), the registry
//! client ([`registry`]) and the exporters/importers ([`export`]). It depends on nothing of kiln.

pub mod blobs;
pub mod digest;
pub mod export;
pub mod gc;
pub mod image;
pub mod layer;
pub mod lock;
pub mod meta;
pub mod registry;
pub mod snapshots;
mod store;

pub use digest::Digest;
pub use store::{Store, StoreError};
