//! Registry I/O: pull and push images between the store and OCI registries.
//!
//! oci-client speaks the protocol (the auth challenge flow, token cache, blob and manifest
//! endpoints, references); the push and pull loops are ours, because oci-client's own
//! `push()` re-uploads blobs the registry has, omits `mediaType` and never retries, and its
//! `pull()` holds whole layers in memory.
//!
//! - **Push** ([`RegistryClient::push`]): for each blob, HEAD and skip it if present; else
//!   cross-repo mount it when the store knows it exists in another repository of the same
//!   registry (a refused mount's upload session is cancelled); else upload it in one streamed
//!   PUT read from the blob file. Then the manifest's raw bytes with its own media type.
//! - **Pull** ([`RegistryClient::pull`]): resolve the reference to a manifest (selecting a
//!   platform from an index or manifest list), stream the config and layers into the blob
//!   store, verified against digest and size, then store the manifest. Pulled bytes are
//!   stored as received, never re-serialised.
//!
//! Both move several blobs at once ([`RegistryOptions::concurrency`]), retry transient
//! failures ([`RetryPolicy`]), record in the metadata DB which repository each blob exists in
//! (for later mounts), and report to a [`Progress`]. Transport rules (HTTPS, certs.d,
//! insecure registries) are in [`transport`]; credentials in [`auth`].

pub mod auth;
mod error;
mod fetch;
mod progress;
mod pull;
mod push;
mod reference;
pub mod transport;

use std::collections::HashMap;
use std::sync::Arc;

use oci_client::RegistryOperation;
use oci_client::secrets::RegistryAuth;

pub use error::{RegistryError, RemoteCause, RetryPolicy};
pub use fetch::{Fetched, fetch_url};
pub use progress::{BlobOutcome, NoProgress, Progress};
pub use pull::PulledImage;
pub use reference::Reference;
pub use transport::RegistryOptions;

use transport::Endpoint;

/// A registry client: connects lazily to each registry it is asked about (and remembers the
/// connection and credentials for its lifetime).
pub struct RegistryClient {
    options: RegistryOptions,
    endpoints: tokio::sync::Mutex<HashMap<String, Arc<Endpoint>>>,
}

impl RegistryClient {
    /// A client with these options. Nothing is contacted yet.
    pub fn new(options: RegistryOptions) -> RegistryClient {
        RegistryClient { options, endpoints: tokio::sync::Mutex::new(HashMap::new()) }
    }

    /// The options in use.
    pub fn options(&self) -> &RegistryOptions {
        &self.options
    }

    /// The connected endpoint for the reference's registry, with the credentials the docker
    /// config holds for it.
    async fn endpoint(&self, reference: &Reference) -> Result<Arc<Endpoint>, RegistryError> {
        let host = reference.api_host();
        let mut endpoints = self.endpoints.lock().await;
        if let Some(ep) = endpoints.get(host) {
            return Ok(ep.clone());
        }
        let dir = auth::docker_config_dir(self.options.docker_config_dir.as_deref())?;
        let registry = reference.registry().to_owned();
        // A credential helper is a child process: keep it off the async workers.
        let creds = tokio::task::spawn_blocking(move || auth::lookup(&dir, &registry))
            .await
            .map_err(|e| RegistryError::Task(format!("credential lookup: {e}")))??;
        let ep = Arc::new(transport::connect(&self.options, host, creds).await?);
        endpoints.insert(host.to_owned(), ep.clone());
        Ok(ep)
    }

    /// Checks `username`/`password` against `registry` (`host[:port]` or `docker.io`) the way
    /// `docker login` does: basic auth on `/v2/`, or a token request for bearer registries.
    /// Storing them is [`auth::save_credentials`].
    pub async fn login(&self, registry: &str, username: &str, password: &str) -> Result<(), RegistryError> {
        // Token requests name a repository scope; any name works to test the credentials.
        let reference = Reference::parse(&format!("{registry}/kiln/login"))?;
        let creds = RegistryAuth::Basic(username.to_owned(), password.to_owned());
        let ep = transport::connect(&self.options, reference.api_host(), creds.clone()).await?;
        let fail = |cause| RegistryError::Login { registry: registry.to_owned(), cause };
        let url = format!("{}/v2/", ep.base);
        let resp = ep.http.get(&url).send().await.map_err(|e| fail(RemoteCause::from_reqwest(&e)))?;
        let status = resp.status().as_u16();
        if status != 401 {
            return if resp.status().is_success() {
                Ok(())
            } else {
                Err(fail(RemoteCause::from_status(status, &resp.bytes().await.unwrap_or_default())))
            };
        }
        let bearer = resp
            .headers()
            .get(reqwest::header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("bearer"));
        if bearer {
            ep.oci
                .auth(reference.oci(), &creds, RegistryOperation::Pull)
                .await
                .map_err(|e| fail(RemoteCause::from_oci(&e)))?;
            return Ok(());
        }
        let resp = ep
            .http
            .get(&url)
            .basic_auth(username, Some(password))
            .send()
            .await
            .map_err(|e| fail(RemoteCause::from_reqwest(&e)))?;
        if resp.status().is_success() {
            Ok(())
        } else {
            let status = resp.status().as_u16();
            Err(fail(RemoteCause::from_status(status, &resp.bytes().await.unwrap_or_default())))
        }
    }
}

/// The config and layer blobs of a manifest with their sizes, each once, config first.
fn image_blobs(
    manifest: &oci_spec::image::ImageManifest,
    digest: &crate::Digest,
) -> Result<Vec<(crate::Digest, u64)>, crate::image::ImageError> {
    let mut blobs: Vec<(crate::Digest, u64)> = Vec::new();
    for d in std::iter::once(manifest.config()).chain(manifest.layers()) {
        let blob = crate::image::descriptor_digest(d, digest)?;
        if !blobs.iter().any(|(b, _)| b == &blob) {
            blobs.push((blob, d.size()));
        }
    }
    Ok(blobs)
}

impl Endpoint {
    /// Adds credentials for a raw request to the registry: the bearer token oci-client
    /// obtains for `operation` on the reference's repository, or basic auth. Requests to
    /// another host get none (a Location may point elsewhere).
    async fn authorize(
        &self,
        reference: &Reference,
        operation: RegistryOperation,
        url: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::RequestBuilder, RemoteCause> {
        if !url.starts_with(&format!("{}/", self.base)) {
            return Ok(request);
        }
        let token =
            self.oci.auth(reference.oci(), &self.auth, operation).await.map_err(|e| RemoteCause::from_oci(&e))?;
        Ok(match (token, &self.auth) {
            (Some(token), _) => request.bearer_auth(token),
            (None, RegistryAuth::Basic(user, password)) => request.basic_auth(user, Some(password)),
            (None, _) => request,
        })
    }

    /// An absolute URL for a Location header value (which may be a path).
    fn absolute(&self, location: &str) -> String {
        if location.starts_with('/') { format!("{}{location}", self.base) } else { location.to_owned() }
    }
}
