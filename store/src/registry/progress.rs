//! Progress of blob transfers, for the CLI's bars (indicatif) or plain lines.

use crate::digest::Digest;

use super::error::RemoteCause;

/// How a blob transfer ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobOutcome {
    /// Push: the registry already had it (HEAD). Pull: the store already had it.
    Exists,
    /// Push: mounted from another repository of the same registry (`registry/repository`).
    Mounted { from: String },
    /// Push: uploaded.
    Uploaded,
    /// Pull: downloaded and verified.
    Downloaded,
}

/// Receives transfer events. Calls come from several tasks at once (blobs move concurrently).
pub trait Progress: Send + Sync {
    /// A blob transfer starts; `size` in bytes.
    fn blob_started(&self, _digest: &Digest, _size: u64) {}
    /// `bytes` more of the blob went over the wire.
    fn blob_advanced(&self, _digest: &Digest, _bytes: u64) {}
    /// The transfer failed transiently and starts over from byte 0 (try number `attempt`).
    fn blob_retrying(&self, _digest: &Digest, _attempt: u32, _cause: &RemoteCause) {}
    /// The blob is done.
    fn blob_done(&self, _digest: &Digest, _outcome: &BlobOutcome) {}
}

/// Ignores all events.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {}
