//! The pull loop: resolve the reference to a manifest (through an index if need be), stream
//! config and layers into the blob store verified, then store the manifest.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use futures_util::{StreamExt, stream};

use crate::Store;
use crate::blobs::{BlobError, BlobStore};
use crate::digest::Digest;
use crate::image::{self, ImageError, ManifestDocument, Platform, media_type};

use super::RegistryClient;
use super::error::{Op, RegistryError, RemoteCause, with_retry};
use super::progress::{BlobOutcome, Progress};
use super::reference::Reference;
use super::transport::Endpoint;

/// The manifest media types kiln asks for.
const ACCEPT: &[&str] =
    &[media_type::OCI_MANIFEST, media_type::DOCKER_MANIFEST, media_type::OCI_INDEX, media_type::DOCKER_MANIFEST_LIST];

/// What [`RegistryClient::pull`] stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PulledImage {
    /// The single-platform manifest's digest (stored, with its config and layers).
    pub digest: Digest,
    /// Its media type (OCI or Docker).
    pub media_type: String,
    /// Its size in bytes.
    pub size: u64,
    /// The index or manifest list the reference resolved to, if it was one (not stored).
    pub index: Option<Digest>,
}

impl RegistryClient {
    /// Pulls `reference` into `store`: the manifest (for `platform` when the reference names an
    /// index or manifest list), its config and its layers, several blobs at once, each verified
    /// against its digest and size before it becomes visible. Blobs already in the store are
    /// not fetched again. The caller tags the returned manifest.
    pub async fn pull(
        &self,
        store: &Store,
        reference: &Reference,
        platform: &Platform,
        progress: Arc<dyn Progress>,
    ) -> Result<PulledImage, RegistryError> {
        let name = reference.to_string();
        let image_err = |source: ImageError| RegistryError::Image { reference: name.clone(), source: Box::new(source) };
        let ep = self.endpoint(reference).await?;
        let (raw, digest) = self.fetch_manifest(&ep, reference).await?;
        let (raw, digest, manifest, index) = match ManifestDocument::parse(&raw, &digest, None).map_err(image_err)? {
            ManifestDocument::Manifest(m) => (raw, digest, m, None),
            ManifestDocument::Index(ix) => {
                let entry = image::select_platform(&ix, &digest, platform).map_err(image_err)?;
                let child = image::descriptor_digest(entry, &digest).map_err(image_err)?;
                let child_media_type = entry.media_type().to_string();
                let (child_raw, child) = self.fetch_manifest(&ep, &reference.with_digest(&child)).await?;
                match ManifestDocument::parse(&child_raw, &child, Some(&child_media_type)).map_err(image_err)? {
                    ManifestDocument::Manifest(m) => (child_raw, child, m, Some(digest)),
                    ManifestDocument::Index(_) => {
                        return Err(RegistryError::Unsupported {
                            reference: name,
                            message: format!("index {digest} selects another index {child} for {platform}"),
                        });
                    }
                }
            }
        };
        let manifest_media_type =
            manifest.media_type().as_ref().map_or_else(|| media_type::OCI_MANIFEST.to_owned(), |m| m.to_string());
        let blobs = super::image_blobs(&manifest, &digest).map_err(image_err)?;

        // GC cannot run until the caller has tagged what lands here: the caller's `Store` holds
        // the store lock shared, and prune needs it exclusive (see the store's contract).
        // The first failure stops the other downloads, and every download finishes (its temp
        // file removed) before the error is returned: a failed pull leaves nothing behind.
        let abort = AtomicBool::new(false);
        let results: Vec<Result<Digest, RegistryError>> = stream::iter(&blobs)
            .map(|(blob, size)| async {
                let result =
                    self.pull_blob(&ep, store.blobs(), reference, (blob, *size), progress.clone(), &abort).await;
                if result.is_err() {
                    abort.store(true, Ordering::Relaxed);
                }
                result
            })
            .buffer_unordered(self.options.concurrency.max(1))
            .collect()
            .await;
        let cancelled = |e: &RegistryError| matches!(e, RegistryError::Remote { cause: RemoteCause::Cancelled, .. });
        let mut errors = results.into_iter().filter_map(Result::err);
        let first = errors.by_ref().find(|e| !cancelled(e));
        if let Some(e) = first.or_else(|| errors.next()) {
            return Err(e);
        }

        let size = raw.len() as u64;
        let mut w = store.blobs().writer().map_err(|source| RegistryError::Blob { reference: name.clone(), source })?;
        w.write_all(&raw).map_err(|source| RegistryError::Blob {
            reference: name.clone(),
            source: BlobError::Io { path: store.blobs().tmp_dir().to_owned(), source },
        })?;
        w.commit(Some(&digest)).map_err(|source| RegistryError::Blob { reference: name.clone(), source })?;

        store
            .meta()
            .add_blob_sources(blobs.iter().map(|(d, _)| d).chain([&digest]), &reference.repository_key())
            .map_err(|source| RegistryError::Meta { reference: name.clone(), source })?;
        Ok(PulledImage { digest, media_type: manifest_media_type, size, index })
    }

    /// Fetches a manifest or index by tag or digest, verifying a pinned digest.
    async fn fetch_manifest(&self, ep: &Endpoint, reference: &Reference) -> Result<(Vec<u8>, Digest), RegistryError> {
        let op = Op {
            action: "pulling",
            object: format!("manifest {}", reference.manifest_name()),
            registry: reference.registry(),
            repository: reference.repository(),
        };
        let (raw, _) = with_retry(
            &self.options.retry,
            &op.label(),
            |_, _| {},
            || async {
                ep.oci.pull_manifest_raw(reference.oci(), &ep.auth, ACCEPT).await.map_err(|e| RemoteCause::from_oci(&e))
            },
        )
        .await
        .map_err(|f| op.error(f))?;
        let digest = Digest::of(&raw);
        if let Some(pinned) = reference.digest()
            && pinned != digest
        {
            return Err(op.error((1, RemoteCause::Digest(format!("expected {pinned}, the registry sent {digest}")))));
        }
        Ok((raw.to_vec(), digest))
    }

    /// One blob: skipped if the store has it, else downloaded with retries.
    async fn pull_blob(
        &self,
        ep: &Endpoint,
        blobs: &BlobStore,
        reference: &Reference,
        (digest, size): (&Digest, u64),
        progress: Arc<dyn Progress>,
        abort: &AtomicBool,
    ) -> Result<Digest, RegistryError> {
        progress.blob_started(digest, size);
        if blobs.contains(digest) {
            progress.blob_done(digest, &BlobOutcome::Exists);
            return Ok(digest.clone());
        }
        let op = Op {
            action: "pulling",
            object: format!("blob {digest}"),
            registry: reference.registry(),
            repository: reference.repository(),
        };
        with_retry(
            &self.options.retry,
            &op.label(),
            |attempt, cause| progress.blob_retrying(digest, attempt, cause),
            || download(ep, blobs, reference, digest, size, progress.as_ref(), abort),
        )
        .await
        .map_err(|f| op.error(f))?;
        progress.blob_done(digest, &BlobOutcome::Downloaded);
        Ok(digest.clone())
    }
}

/// One download try: the response body streams to a blob writer on a blocking thread, which
/// commits only if digest and size match. Any failure leaves nothing in the store, and the
/// writer's temp file is gone when this returns. `abort` set stops it ([`RemoteCause::Cancelled`]).
async fn download(
    ep: &Endpoint,
    blobs: &BlobStore,
    reference: &Reference,
    digest: &Digest,
    size: u64,
    progress: &dyn Progress,
    abort: &AtomicBool,
) -> Result<(), RemoteCause> {
    let local = |e: BlobError| RemoteCause::Local(e.to_string());
    let mut body = ep
        .oci
        .pull_blob_stream(reference.oci(), digest.to_string().as_str())
        .await
        .map_err(|e| RemoteCause::from_oci(&e))?;
    let mut writer = blobs.writer().map_err(local)?;
    // `None` marks the end of the body: a channel closed without it means abort.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Option<Bytes>>(8);
    let expected = digest.clone();
    let tmp = blobs.tmp_dir().to_owned();
    let sink = tokio::task::spawn_blocking(move || -> Result<bool, BlobError> {
        while let Some(msg) = rx.blocking_recv() {
            match msg {
                Some(chunk) => {
                    writer.write_all(&chunk).map_err(|source| BlobError::Io { path: tmp.clone(), source })?
                }
                None => return writer.commit_sized(Some(&expected), Some(size)).map(|_| true),
            }
        }
        Ok(false)
    });

    let mut received = 0u64;
    let mut failure = None;
    while let Some(item) = body.next().await {
        if abort.load(Ordering::Relaxed) {
            failure = Some(RemoteCause::Cancelled);
            break;
        }
        let chunk = match item {
            Ok(c) => c,
            Err(e) => {
                failure = Some(RemoteCause::from_io(&e));
                break;
            }
        };
        received += chunk.len() as u64;
        if received > size {
            failure = Some(RemoteCause::Digest(format!("the registry sent more than the declared {size} bytes")));
            break;
        }
        progress.blob_advanced(digest, chunk.len() as u64);
        if tx.send(Some(chunk)).await.is_err() {
            // The writer failed; its error is reported below.
            break;
        }
    }
    if failure.is_none() {
        let _ = tx.send(None).await;
    }
    drop(tx);
    let written = sink.await.map_err(|e| RemoteCause::Local(format!("blob writer task: {e}")))?;
    if let Some(cause) = failure {
        return Err(cause);
    }
    match written {
        Ok(true) => Ok(()),
        Ok(false) => Err(RemoteCause::Local(format!("blob {digest}: writer stopped early"))),
        Err(e @ (BlobError::Mismatch { .. } | BlobError::SizeMismatch { .. })) => {
            Err(RemoteCause::Digest(e.to_string()))
        }
        Err(e) => Err(local(e)),
    }
}
