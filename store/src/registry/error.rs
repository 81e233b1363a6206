//! Registry errors, the classification of what went wrong on the wire, and the retry loop.
//!
//! Every request goes through [`with_retry`]: 5xx, 429 and dropped connections are retried with
//! exponential backoff, the rest fail at once. The final error names the registry, repository,
//! the blob or manifest, and the registry's own message (the `errors[].message` of its JSON body).
//! Credentials never appear: messages carry usernames at most, never passwords or tokens.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use oci_client::errors::OciDistributionError;

use crate::blobs::BlobError;
use crate::image::ImageError;
use crate::meta::MetaError;

/// Errors of registry operations.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// An image reference that does not parse.
    #[error("invalid image reference {reference:?}: {message}")]
    Reference { reference: String, message: String },
    /// A request to the registry failed (after retries, for transient failures).
    #[error(
        "{action} {object} {} {registry}/{repository} failed{}: {cause}",
        preposition(action),
        attempts_note(*.attempts)
    )]
    Remote {
        /// What kiln was doing: `pushing`, `pulling`, `checking`, `mounting`.
        action: &'static str,
        /// The object: `blob sha256:…`, `manifest latest`.
        object: String,
        /// Registry host (`docker.io`, `127.0.0.1:5000`).
        registry: String,
        /// Repository path.
        repository: String,
        /// How many tries were made.
        attempts: u32,
        /// What went wrong.
        cause: RemoteCause,
    },
    /// Connecting to the registry failed before any request could be made.
    #[error("cannot reach registry {registry}: {cause}")]
    Connect { registry: String, cause: RemoteCause },
    /// `kiln login` could not verify the credentials.
    #[error("login to {registry} failed: {cause}")]
    Login { registry: String, cause: RemoteCause },
    /// A manifest or index from the registry (or in the store) kiln cannot use.
    #[error("image {reference}: {source}")]
    Image { reference: String, source: Box<ImageError> },
    /// A local blob store failure.
    #[error("image {reference}: {source}")]
    Blob { reference: String, source: BlobError },
    /// The store's metadata DB (blob sources, leases) failed.
    #[error("image {reference}: {source}")]
    Meta { reference: String, source: MetaError },
    /// Something kiln does not do (yet).
    #[error("image {reference}: {message}")]
    Unsupported { reference: String, message: String },
    /// Reading or writing credentials failed.
    #[error("credentials for {registry}: {message}")]
    Credentials { registry: String, message: String },
    /// A configuration file (registries.json, certs.d, docker config.json) is unusable.
    #[error("{}: {message}", path.display())]
    Config { path: PathBuf, message: String },
    /// A plain download (`ADD https://…`) failed.
    #[error("downloading {url} failed: {cause}")]
    Fetch { url: String, cause: RemoteCause },
    /// A background task failed (a panic or runtime shutdown).
    #[error("internal error during {0}")]
    Task(String),
}

/// How the action relates to the repository in messages: pushing *to*, pulling *from*.
fn preposition(action: &str) -> &'static str {
    match action {
        "pulling" => "from",
        "checking" => "in",
        _ => "to",
    }
}

fn attempts_note(attempts: u32) -> String {
    if attempts > 1 { format!(" after {attempts} attempts") } else { String::new() }
}

impl RegistryError {
    /// Whether this is an authentication/authorization failure (wrong or missing credentials).
    pub fn is_auth(&self) -> bool {
        matches!(
            self,
            RegistryError::Remote { cause: RemoteCause::Unauthorized { .. }, .. }
                | RegistryError::Connect { cause: RemoteCause::Unauthorized { .. }, .. }
                | RegistryError::Login { cause: RemoteCause::Unauthorized { .. }, .. }
        )
    }
}

/// What went wrong in one exchange with a registry.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RemoteCause {
    /// 401/403: credentials missing, wrong, or without access.
    #[error("authentication failed ({message}); check the credentials (`kiln login`)")]
    Unauthorized { message: String },
    /// 404: the manifest, blob or repository does not exist.
    #[error("not found ({message})")]
    NotFound { message: String },
    /// Any other error status, with the registry's own message.
    #[error("registry answered HTTP {status}: {message}")]
    Status { status: u16, message: String },
    /// The connection failed or dropped.
    #[error("connection failed: {0}")]
    Connection(String),
    /// The server's TLS certificate is not trusted.
    #[error(
        "TLS certificate not trusted ({0}); put the registry's CA certificate in \
         <certs.d>/<host:port>/ca.crt (default /etc/docker/certs.d, KILN_CERTS_D overrides) or mark \
         the registry insecure"
    )]
    Certificate(String),
    /// Content that does not hash to its digest.
    #[error("content does not match its digest: {0}")]
    Digest(String),
    /// The registry broke the protocol (missing Location header, unexpected status, ...).
    #[error("protocol error: {0}")]
    Protocol(String),
    /// Reading the local blob being pushed failed.
    #[error("reading the local blob: {0}")]
    Local(String),
    /// Stopped because another transfer of the same operation failed (that one is reported).
    #[error("stopped: another blob of the same transfer failed")]
    Cancelled,
}

impl RemoteCause {
    /// Whether trying again may help: server errors, rate limiting, dropped connections.
    pub fn is_transient(&self) -> bool {
        match self {
            RemoteCause::Status { status, .. } => *status >= 500 || *status == 429,
            RemoteCause::Connection(_) => true,
            _ => false,
        }
    }

    /// Classifies an HTTP error status with its body.
    pub(crate) fn from_status(status: u16, body: &[u8]) -> RemoteCause {
        let message = registry_message(body).unwrap_or_else(|| {
            let reason = reqwest::StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason());
            format!("{status} {}", reason.unwrap_or("")).trim_end().to_owned()
        });
        match status {
            401 | 403 => RemoteCause::Unauthorized { message },
            404 => RemoteCause::NotFound { message },
            _ => RemoteCause::Status { status, message },
        }
    }

    /// Classifies a transport-level error of reqwest.
    pub(crate) fn from_reqwest(e: &reqwest::Error) -> RemoteCause {
        if let Some(status) = e.status() {
            return RemoteCause::from_status(status.as_u16(), b"");
        }
        let chain = error_chain(e);
        if is_certificate_error(e) { RemoteCause::Certificate(chain) } else { RemoteCause::Connection(chain) }
    }

    /// Classifies an error of oci-client.
    pub(crate) fn from_oci(e: &OciDistributionError) -> RemoteCause {
        match e {
            OciDistributionError::RequestError(e) => RemoteCause::from_reqwest(e),
            OciDistributionError::ServerError { code, message, .. } => {
                RemoteCause::from_status(*code, message.as_bytes())
            }
            OciDistributionError::RegistryError { envelope, .. } => {
                let codes: Vec<String> = envelope
                    .errors
                    .iter()
                    .map(|e| serde_json::to_value(&e.code).ok().and_then(|v| v.as_str().map(str::to_owned)))
                    .map(Option::unwrap_or_default)
                    .collect();
                let message = envelope
                    .errors
                    .iter()
                    .zip(&codes)
                    .map(|(e, code)| format!("{} ({code})", e.message))
                    .collect::<Vec<_>>()
                    .join("; ");
                // oci-client drops the status of 4xx answers with an error body; the codes say it.
                let status = if codes.iter().any(|c| c == "UNAUTHORIZED") {
                    401
                } else if codes.iter().any(|c| c == "DENIED") {
                    403
                } else if codes.iter().any(|c| c == "TOOMANYREQUESTS") {
                    429
                } else if codes.iter().any(|c| c.ends_with("_UNKNOWN") || c == "NOT_FOUND") {
                    404
                } else {
                    400
                };
                match status {
                    401 | 403 => RemoteCause::Unauthorized { message },
                    404 => RemoteCause::NotFound { message },
                    _ => RemoteCause::Status { status, message },
                }
            }
            OciDistributionError::UnauthorizedError { .. } => {
                RemoteCause::Unauthorized { message: "401 Unauthorized".to_owned() }
            }
            OciDistributionError::AuthenticationFailure(reason) => RemoteCause::Unauthorized {
                message: registry_message(reason.as_bytes()).unwrap_or_else(|| truncate(reason.trim())),
            },
            OciDistributionError::IoError(e) => RemoteCause::from_io(e),
            OciDistributionError::DigestError(e) => RemoteCause::Digest(e.to_string()),
            OciDistributionError::ImageManifestNotFoundError(m) => RemoteCause::NotFound { message: m.clone() },
            other => RemoteCause::Protocol(error_chain(other)),
        }
    }

    /// Classifies an I/O error surfacing from a response stream: oci-client's digest check
    /// reports a mismatch this way, anything else is a broken connection.
    pub(crate) fn from_io(e: &std::io::Error) -> RemoteCause {
        if let Some(inner) = e.get_ref() {
            if let Some(d) = inner.downcast_ref::<oci_client::errors::DigestError>() {
                return RemoteCause::Digest(d.to_string());
            }
            if let Some(r) = inner.downcast_ref::<reqwest::Error>() {
                return RemoteCause::from_reqwest(r);
            }
        }
        RemoteCause::Connection(error_chain(e))
    }
}

/// The messages of an OCI error body (`{"errors":[{"code":…,"message":…}]}`), joined.
pub(crate) fn registry_message(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Envelope {
        errors: Vec<Entry>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    if let Ok(env) = serde_json::from_slice::<Envelope>(body)
        && !env.errors.is_empty()
    {
        let parts: Vec<String> = env
            .errors
            .iter()
            .map(|e| match (e.message.is_empty(), e.code.is_empty()) {
                (false, false) => format!("{} ({})", e.message, e.code),
                (false, true) => e.message.clone(),
                _ => e.code.clone(),
            })
            .collect();
        return Some(parts.join("; "));
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    (!text.is_empty()).then(|| truncate(text))
}

fn truncate(s: &str) -> String {
    const MAX: usize = 300;
    match s.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

/// An error and its sources, joined with `: ` (reqwest's own message omits the cause).
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = s.source();
    }
    out
}

/// Whether a TLS certificate verification failure is somewhere in the chain.
pub(crate) fn is_certificate_error(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(rustls::Error::InvalidCertificate(_)) = err.downcast_ref::<rustls::Error>() {
            return true;
        }
        // io::Error::source() skips the wrapped error itself, so look inside explicitly.
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
            && let Some(rustls::Error::InvalidCertificate(_)) = inner.downcast_ref::<rustls::Error>()
        {
            return true;
        }
        cur = err.source();
    }
    // reqwest's connector may box the TLS error in a type of its own; rustls's message for
    // `InvalidCertificate` is the remaining tell.
    error_chain(e).contains("invalid peer certificate")
}

/// How transient failures are retried.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Total tries per request (at least 1).
    pub attempts: u32,
    /// Wait before the second try; doubled for each further try.
    pub initial_backoff: Duration,
    /// Upper bound of one wait.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    /// 5 tries, waiting 0.5 s, 1 s, 2 s, 4 s in between.
    fn default() -> Self {
        RetryPolicy { attempts: 5, initial_backoff: Duration::from_millis(500), max_backoff: Duration::from_secs(10) }
    }
}

/// What a request is about, for the final error.
#[derive(Debug, Clone)]
pub(crate) struct Op<'a> {
    pub action: &'static str,
    pub object: String,
    pub registry: &'a str,
    pub repository: &'a str,
}

impl Op<'_> {
    /// A one-line description for logs.
    pub(crate) fn label(&self) -> String {
        format!("{} {} {} {}/{}", self.action, self.object, preposition(self.action), self.registry, self.repository)
    }

    /// The final error after `attempts` tries.
    pub(crate) fn error(&self, (attempts, cause): (u32, RemoteCause)) -> RegistryError {
        RegistryError::Remote {
            action: self.action,
            object: self.object.clone(),
            registry: self.registry.to_owned(),
            repository: self.repository.to_owned(),
            attempts,
            cause,
        }
    }
}

/// Runs `attempt` until it succeeds, fails for good, or the policy's tries are used up; the
/// error carries the number of tries made. `label` describes the request in retry warnings;
/// `on_retry` is told before each new try (progress bars restart a transfer).
pub(crate) async fn with_retry<T, F, Fut>(
    policy: &RetryPolicy,
    label: &str,
    mut on_retry: impl FnMut(u32, &RemoteCause),
    mut attempt: F,
) -> Result<T, (u32, RemoteCause)>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, RemoteCause>>,
{
    let mut backoff = policy.initial_backoff;
    let mut tries = 0;
    loop {
        tries += 1;
        match attempt().await {
            Ok(v) => return Ok(v),
            Err(cause) if cause.is_transient() && tries < policy.attempts.max(1) => {
                tracing::warn!("{label}: {cause}; retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(policy.max_backoff);
                on_retry(tries + 1, &cause);
            }
            Err(cause) => return Err((tries, cause)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_messages_are_extracted() {
        let body = br#"{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown to registry","detail":"x"}]}"#;
        assert_eq!(registry_message(body).unwrap(), "blob unknown to registry (BLOB_UNKNOWN)");
        assert_eq!(registry_message(b"  oops \n").unwrap(), "oops");
        assert_eq!(registry_message(b""), None);
        let c = RemoteCause::from_status(503, b"");
        assert_eq!(c.to_string(), "registry answered HTTP 503: 503 Service Unavailable");
        assert!(c.is_transient());
        assert!(RemoteCause::from_status(429, b"").is_transient());
        assert!(!RemoteCause::from_status(400, b"").is_transient());
        assert!(matches!(RemoteCause::from_status(401, b""), RemoteCause::Unauthorized { .. }));
    }
}
