//! Images in and out of the store as files: [`import`] makes a one-layer image from a root
//! filesystem tarball (`docker import`), [`archive`] writes images as an OCI layout or
//! docker-archive tar (`docker save`), [`load`] reads such tars back (`docker load`).
//!
//! These functions store blobs and return images; naming them (tags) is the caller's job, done
//! after the content is durable (the store's ordering contract).

pub mod archive;
pub mod import;
pub mod load;

use std::io;

use crate::blobs::BlobError;
use crate::digest::Digest;
use crate::image::ImageError;
use crate::layer::encode::EncodeError;

/// Errors importing, saving or loading images.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// Reading the input failed (I/O or decompression).
    #[error("reading the archive: {0}")]
    Read(io::Error),
    /// The input is not a (well-formed) tar.
    #[error("the input is not a valid tar archive: {0}")]
    NotATar(io::Error),
    /// The archive's content does not describe images consistently.
    #[error("invalid image archive: {0}")]
    Invalid(String),
    /// Writing the output failed.
    #[error("writing the archive: {0}")]
    Write(io::Error),
    /// Streaming a blob into the output failed (including a digest mismatch on read).
    #[error("writing blob {digest} into the archive: {source}")]
    Blob { digest: Digest, source: io::Error },
    /// A blob store error.
    #[error(transparent)]
    Store(#[from] BlobError),
    /// An image document error.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// Encoding a layer failed.
    #[error(transparent)]
    Encode(#[from] EncodeError),
}
