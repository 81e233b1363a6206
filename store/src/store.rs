//! [`Store`]: one opened store root, the handle every kiln command works through.

use std::path::{Path, PathBuf};

use crate::blobs::{BlobError, BlobStore};

/// Errors opening or using a store root.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A blob store failure.
    #[error(transparent)]
    Blob(#[from] BlobError),
}

/// An opened store root.
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    blobs: BlobStore,
}

impl Store {
    /// The root used when neither `--root` nor `KILN_ROOT` names one.
    pub const DEFAULT_ROOT: &'static str = "/var/lib/kiln";

    /// Opens the store at `root`, creating its layout if needed.
    pub fn open(root: &Path) -> Result<Store, StoreError> {
        Ok(Store { root: root.to_owned(), blobs: BlobStore::create(root)? })
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The blob store.
    pub fn blobs(&self) -> &BlobStore {
        &self.blobs
    }
}
