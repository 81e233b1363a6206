//! The push loop: blobs (HEAD, mount, or streamed upload), then the manifest's raw bytes.

use std::io::Read;
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt, TryStreamExt, stream};
use oci_client::RegistryOperation;
use oci_client::errors::OciDistributionError;
use reqwest::header::{CONTENT_LENGTH, HeaderValue, LOCATION};

use crate::Store;
use crate::blobs::BlobStore;
use crate::digest::Digest;
use crate::image::{ManifestDocument, media_type};
use crate::meta::Meta;

use super::RegistryClient;
use super::error::{Op, RegistryError, RemoteCause, with_retry};
use super::progress::{BlobOutcome, Progress};
use super::reference::Reference;
use super::transport::Endpoint;

/// Bytes read from a blob file per chunk of an upload body.
const CHUNK: usize = 256 * 1024;

/// At most this many other repositories are tried as mount sources for one blob.
const MOUNT_CANDIDATES: usize = 3;

impl RegistryClient {
    /// Pushes the single-platform image whose manifest is `manifest` (in `store`) to `dest`
    /// (its tag, or its digest), and returns the manifest digest. Blobs already in the
    /// repository are skipped, blobs known in another repository of the registry are mounted,
    /// the rest are uploaded, several at once.
    pub async fn push(
        &self,
        store: &Store,
        manifest: &Digest,
        dest: &Reference,
        progress: Arc<dyn Progress>,
    ) -> Result<Digest, RegistryError> {
        let reference = dest.to_string();
        let raw = store
            .blobs()
            .read(manifest)
            .map_err(|source| RegistryError::Blob { reference: reference.clone(), source })?;
        let image_err = |source| RegistryError::Image { reference: reference.clone(), source: Box::new(source) };
        let parsed = match ManifestDocument::parse(&raw, manifest, None).map_err(image_err)? {
            ManifestDocument::Manifest(m) => m,
            ManifestDocument::Index(_) => {
                return Err(RegistryError::Unsupported {
                    reference,
                    message: format!("{manifest} is an image index; kiln pushes single-platform images"),
                });
            }
        };
        let content_type =
            parsed.media_type().as_ref().map_or_else(|| media_type::OCI_MANIFEST.to_owned(), |m| m.to_string());
        let blobs = super::image_blobs(&parsed, manifest).map_err(image_err)?;
        let ep = self.endpoint(dest).await?;
        let meta = store.meta();

        stream::iter(&blobs)
            .map(|(digest, size)| self.push_blob(&ep, store.blobs(), meta, dest, digest, *size, progress.clone()))
            .buffer_unordered(self.options.concurrency.max(1))
            .try_collect::<Vec<()>>()
            .await?;

        let op = Op {
            action: "pushing",
            object: format!("manifest {}", dest.manifest_name()),
            registry: dest.registry(),
            repository: dest.repository(),
        };
        let content_type = HeaderValue::from_str(&content_type)
            .map_err(|e| op.error((1, RemoteCause::Protocol(format!("media type {content_type:?}: {e}")))))?;
        let body = Bytes::from(raw);
        with_retry(
            &self.options.retry,
            &op.label(),
            |_, _| {},
            || async {
                ep.oci
                    .push_manifest_raw(dest.oci(), body.clone(), content_type.clone())
                    .await
                    .map(drop)
                    .map_err(|e| RemoteCause::from_oci(&e))
            },
        )
        .await
        .map_err(|f| op.error(f))?;

        let key = dest.repository_key();
        meta.add_blob_sources(blobs.iter().map(|(d, _)| d).chain([manifest]), &key)
            .map_err(|source| RegistryError::Meta { reference: reference.clone(), source })?;
        Ok(manifest.clone())
    }

    /// One blob: HEAD, else mount, else upload.
    #[allow(clippy::too_many_arguments)]
    async fn push_blob(
        &self,
        ep: &Endpoint,
        blobs: &BlobStore,
        meta: &Meta,
        dest: &Reference,
        digest: &Digest,
        size: u64,
        progress: Arc<dyn Progress>,
    ) -> Result<(), RegistryError> {
        progress.blob_started(digest, size);
        let object = format!("blob {digest}");
        let op =
            |action| Op { action, object: object.clone(), registry: dest.registry(), repository: dest.repository() };
        let policy = &self.options.retry;
        let digest_str = digest.to_string();

        let check = op("checking");
        let exists = with_retry(
            policy,
            &check.label(),
            |_, _| {},
            || async { ep.oci.blob_exists(dest.oci(), &digest_str).await.map_err(|e| RemoteCause::from_oci(&e)) },
        )
        .await
        .map_err(|f| check.error(f))?;
        if exists {
            progress.blob_done(digest, &BlobOutcome::Exists);
            return Ok(());
        }

        let sources =
            meta.blob_sources(digest).map_err(|source| RegistryError::Meta { reference: dest.to_string(), source })?;
        let prefix = format!("{}/", dest.registry());
        let candidates = sources
            .iter()
            .filter_map(|s| s.strip_prefix(&prefix))
            .filter(|repo| *repo != dest.repository())
            .take(MOUNT_CANDIDATES);
        for from in candidates {
            let mount = op("mounting");
            match with_retry(policy, &mount.label(), |_, _| {}, || self.try_mount(ep, dest, digest, from)).await {
                Ok(true) => {
                    progress.blob_done(digest, &BlobOutcome::Mounted { from: format!("{prefix}{from}") });
                    return Ok(());
                }
                Ok(false) => tracing::debug!("{}: registry refused to mount from {from}", mount.label()),
                // A failed mount is not fatal: the upload below still works.
                Err(f) => tracing::warn!("{}", mount.error(f)),
            }
        }

        let upload = op("pushing");
        with_retry(
            policy,
            &upload.label(),
            |attempt, cause| progress.blob_retrying(digest, attempt, cause),
            || self.upload(ep, blobs, dest, digest, size, progress.clone()),
        )
        .await
        .map_err(|f| upload.error(f))?;
        progress.blob_done(digest, &BlobOutcome::Uploaded);
        Ok(())
    }

    /// Asks the registry to mount `digest` from repository `from`. `Ok(false)` if it opened an
    /// upload session instead (refused mount); that session is cancelled.
    async fn try_mount(
        &self,
        ep: &Endpoint,
        dest: &Reference,
        digest: &Digest,
        from: &str,
    ) -> Result<bool, RemoteCause> {
        let url = format!("{}/v2/{}/blobs/uploads/?mount={digest}&from={from}", ep.base, dest.repository());
        let request = ep.http.post(&url).header(CONTENT_LENGTH, "0");
        let request = ep.authorize(dest, RegistryOperation::Push, &url, request).await?;
        let resp = request.send().await.map_err(|e| RemoteCause::from_reqwest(&e))?;
        match resp.status().as_u16() {
            201 => Ok(true),
            202 => {
                let location = resp.headers().get(LOCATION).and_then(|v| v.to_str().ok()).map(|l| ep.absolute(l));
                if let Some(location) = location {
                    let request =
                        ep.authorize(dest, RegistryOperation::Push, &location, ep.http.delete(&location)).await?;
                    // Cancelling is a courtesy (the registry expires abandoned sessions): log only.
                    match request.send().await {
                        Ok(r) if r.status().is_success() => {}
                        Ok(r) => tracing::debug!("cancelling upload session {location}: HTTP {}", r.status()),
                        Err(e) => tracing::debug!("cancelling upload session {location}: {e}"),
                    }
                }
                Ok(false)
            }
            status => Err(RemoteCause::from_status(status, &resp.bytes().await.unwrap_or_default())),
        }
    }

    /// One upload try: a POST for a session, then one PUT streaming the blob file.
    async fn upload(
        &self,
        ep: &Endpoint,
        blobs: &BlobStore,
        dest: &Reference,
        digest: &Digest,
        size: u64,
        progress: Arc<dyn Progress>,
    ) -> Result<(), RemoteCause> {
        let local_failure = Arc::new(Mutex::new(None));
        let body = blob_stream(blobs, digest, local_failure.clone())?;
        let counted = {
            let digest = digest.clone();
            body.inspect_ok(move |chunk| progress.blob_advanced(&digest, chunk.len() as u64))
        };
        let result = ep.oci.push_blob_stream(dest.oci(), counted, &digest.to_string(), Some(size)).await;
        if let Some(message) = local_failure.lock().ok().and_then(|mut f| f.take()) {
            return Err(RemoteCause::Local(message));
        }
        result.map(drop).map_err(|e| RemoteCause::from_oci(&e))
    }
}

/// A blob file as a stream of chunks, read (and verified against its digest) on a blocking
/// thread. A read or verification failure ends the stream with an error and is recorded in
/// `failure`, so the caller can tell it from a network failure.
fn blob_stream(
    blobs: &BlobStore,
    digest: &Digest,
    failure: Arc<Mutex<Option<String>>>,
) -> Result<impl Stream<Item = Result<Bytes, OciDistributionError>> + Send + 'static, RemoteCause> {
    let mut reader = blobs.open(digest).map_err(|e| RemoteCause::Local(e.to_string()))?;
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
    let digest = digest.clone();
    tokio::task::spawn_blocking(move || {
        loop {
            let mut buf = BytesMut::zeroed(CHUNK);
            match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    buf.truncate(n);
                    if tx.blocking_send(Ok(buf.freeze())).is_err() {
                        break;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    if let Ok(mut f) = failure.lock() {
                        *f = Some(format!("blob {digest}: {e}"));
                    }
                    let _ = tx.blocking_send(Err(e));
                    break;
                }
            }
        }
    });
    Ok(stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item.map_err(OciDistributionError::IoError), rx))
    }))
}
