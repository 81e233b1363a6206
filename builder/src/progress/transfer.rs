//! Registry transfers as build progress: the blobs a step pulls (a base image) or the build
//! pushes (the result) become [`Event::Status`] sub-tasks of that step, one per blob, as
//! BuildKit shows `sha256:… 12.3MB / 40.1MB` under `pushing layers`.
//!
//! The registry client reports every chunk; a sub-task is passed on when it moved by at least
//! a hundredth of its size (or 1 MiB when the size is unknown), when it starts and when it is
//! done, so a gigabyte layer does not become thousands of rawjson lines.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use kiln_store::Digest;
use kiln_store::registry::{self, BlobOutcome};

use super::{Event, Progress, VertexId};

/// Bytes a sub-task of unknown size moves between two events.
const UNSIZED_STEP: u64 = 1 << 20;

/// A blob's progress: bytes done, its size, the bytes done when last passed on.
#[derive(Clone, Copy)]
struct Blob {
    current: u64,
    total: u64,
    shown: u64,
}

/// Turns one transfer's blob events into `Status` events of `vertex`.
pub struct TransferProgress {
    vertex: VertexId,
    sink: Arc<dyn Progress>,
    blobs: Mutex<HashMap<Digest, Blob>>,
}

impl TransferProgress {
    /// Reports the blobs of a transfer as sub-tasks of `vertex` to `sink`.
    pub fn new(vertex: VertexId, sink: Arc<dyn Progress>) -> Arc<TransferProgress> {
        Arc::new(TransferProgress { vertex, sink, blobs: Mutex::new(HashMap::new()) })
    }

    fn status(&self, digest: &Digest, blob: Blob, done: bool) {
        self.sink.event(Event::Status {
            vertex: self.vertex.clone(),
            id: digest.to_string(),
            current: blob.current,
            total: blob.total,
            done,
        });
    }
}

impl registry::Progress for TransferProgress {
    fn blob_started(&self, digest: &Digest, size: u64) {
        let blob = Blob { current: 0, total: size, shown: 0 };
        self.blobs.lock().unwrap_or_else(PoisonError::into_inner).insert(digest.clone(), blob);
        self.status(digest, blob, false);
    }

    fn blob_advanced(&self, digest: &Digest, bytes: u64) {
        let shown = {
            let mut blobs = self.blobs.lock().unwrap_or_else(PoisonError::into_inner);
            let Some(blob) = blobs.get_mut(digest) else { return };
            blob.current += bytes;
            let step = if blob.total > 0 { blob.total.div_ceil(100) } else { UNSIZED_STEP };
            if blob.current - blob.shown < step {
                return;
            }
            blob.shown = blob.current;
            *blob
        };
        self.status(digest, shown, false);
    }

    fn blob_retrying(&self, digest: &Digest, _attempt: u32, _cause: &registry::RemoteCause) {
        if let Some(blob) = self.blobs.lock().unwrap_or_else(PoisonError::into_inner).get_mut(digest) {
            blob.current = 0;
            blob.shown = 0;
        }
    }

    fn blob_done(&self, digest: &Digest, outcome: &BlobOutcome) {
        let blob = self.blobs.lock().unwrap_or_else(PoisonError::into_inner).remove(digest);
        let mut blob = blob.unwrap_or(Blob { current: 0, total: 0, shown: 0 });
        // A blob the other side had moved no bytes: shown as complete, as BuildKit does.
        if matches!(outcome, BlobOutcome::Exists | BlobOutcome::Mounted { .. }) {
            blob.current = blob.total;
        }
        self.status(digest, blob, true);
    }
}
