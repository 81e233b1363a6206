//! How kiln reaches a registry: options, TLS roots, the HTTPS/HTTP decision, and one connected
//! [`Endpoint`] per registry host.
//!
//! HTTPS is the default, verified against the system roots plus every `*.crt` in
//! `<certs.d>/<host[:port]>/` (docker's layout; `<certs.d>` is `/etc/docker/certs.d`, or
//! `$KILN_CERTS_D`). Plain HTTP is allowed, as docker allows it, for loopback registries
//! (`localhost`, `127.0.0.0/8`, `::1`) and for the hosts named insecure (`--insecure-registry`,
//! or `"insecure-registries"` in `$KILN_ROOT/registries.json`). For those kiln tries HTTPS first
//! and falls back to HTTP when the server does not speak TLS.
//!
//! One deliberate difference from docker: a loopback registry that does speak TLS is still
//! verified (docker silently accepts any certificate there). Only hosts explicitly named insecure
//! get unverified TLS, so a loopback registry with a private CA needs that CA in certs.d, the
//! same as any other registry.

use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::Duration;

use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;

use super::error::{RegistryError, RemoteCause, RetryPolicy, error_chain, with_retry};

/// The environment variable that overrides the certs.d directory (tests use it).
pub const CERTS_D_ENV: &str = "KILN_CERTS_D";
/// The certs.d directory docker uses, kiln's default.
pub const DEFAULT_CERTS_D: &str = "/etc/docker/certs.d";
/// The file under the store root listing insecure registries:
/// `{"insecure-registries": ["host:port", ...]}` (the key of docker's daemon.json).
pub const REGISTRIES_FILE: &str = "registries.json";

const USER_AGENT: &str = concat!("kiln/", env!("CARGO_PKG_VERSION"));

/// Settings of a [`RegistryClient`](super::RegistryClient).
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// Hosts (`host` or `host:port`) that may be reached over plain HTTP or unverified TLS.
    pub insecure_registries: Vec<String>,
    /// The certs.d directory: `<certs_dir>/<host[:port]>/*.crt` are extra CA roots for that host.
    pub certs_dir: PathBuf,
    /// Where docker's `config.json` is read and written; `None`: `$DOCKER_CONFIG`, else
    /// `~/.docker`.
    pub docker_config_dir: Option<PathBuf>,
    /// How many blobs are transferred at once.
    pub concurrency: usize,
    /// Retries of transient failures.
    pub retry: RetryPolicy,
}

impl Default for RegistryOptions {
    /// No insecure registries, certs.d from `$KILN_CERTS_D` or `/etc/docker/certs.d`, docker's
    /// default of 3 transfers at once, default retries.
    fn default() -> Self {
        RegistryOptions {
            insecure_registries: Vec::new(),
            certs_dir: std::env::var_os(CERTS_D_ENV).map_or_else(|| PathBuf::from(DEFAULT_CERTS_D), PathBuf::from),
            docker_config_dir: None,
            concurrency: 3,
            retry: RetryPolicy::default(),
        }
    }
}

impl RegistryOptions {
    /// The defaults plus the insecure registries listed in `<root>/registries.json`, if present.
    pub fn load(root: &Path) -> Result<RegistryOptions, RegistryError> {
        #[derive(serde::Deserialize)]
        struct File {
            #[serde(rename = "insecure-registries", default)]
            insecure_registries: Vec<String>,
        }
        let mut options = RegistryOptions::default();
        let path = root.join(REGISTRIES_FILE);
        match std::fs::read(&path) {
            Ok(data) => {
                let file: File = serde_json::from_slice(&data)
                    .map_err(|e| RegistryError::Config { path: path.clone(), message: e.to_string() })?;
                options.insecure_registries = file.insecure_registries;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(RegistryError::Config { path, message: e.to_string() }),
        }
        Ok(options)
    }

    fn is_insecure(&self, host: &str) -> bool {
        self.insecure_registries.iter().any(|h| h == host || h == host_name(host))
    }
}

/// The host part of `host[:port]` (`[::1]:5000` → `::1`).
fn host_name(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split_once(']').map_or(rest, |(h, _)| h);
    }
    match host.rsplit_once(':') {
        Some((h, port)) if !h.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

/// Whether docker treats `host` as local: `localhost`, `127.0.0.0/8`, `::1`.
pub(crate) fn is_loopback(host: &str) -> bool {
    let name = host_name(host);
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Installs ring as rustls's process-wide provider (reqwest is built without one).
pub(crate) fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Fails only if another provider was installed first, which is as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// The PEM CA certificates of `<certs_dir>/<host>/*.crt`.
fn extra_roots(certs_dir: &Path, host: &str) -> Result<Vec<Vec<u8>>, RegistryError> {
    let dir = certs_dir.join(host);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(RegistryError::Config { path: dir, message: e.to_string() }),
    };
    let mut paths = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| RegistryError::Config { path: dir.clone(), message: e.to_string() })?;
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "crt") {
            paths.push(path);
        }
    }
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let pem = std::fs::read(&path)
                .map_err(|e| RegistryError::Config { path: path.clone(), message: e.to_string() })?;
            match reqwest::Certificate::from_pem_bundle(&pem) {
                Ok(certs) if !certs.is_empty() => {}
                Ok(_) => return Err(RegistryError::Config { path, message: "no PEM certificate in it".to_owned() }),
                Err(e) => return Err(RegistryError::Config { path, message: format!("not a PEM certificate: {e}") }),
            }
            Ok(pem)
        })
        .collect()
}

/// A connected registry: the scheme chosen, an oci-client for the protocol and a plain HTTP
/// client (same TLS setup) for the few requests oci-client has no call for.
pub(crate) struct Endpoint {
    /// `https://host` or `http://host`.
    pub base: String,
    /// The protocol client.
    pub oci: oci_client::Client,
    /// Raw requests (mount, cancelling an upload, login checks).
    pub http: reqwest::Client,
    /// The credentials used.
    pub auth: RegistryAuth,
}

struct Tls<'a> {
    roots: &'a [Vec<u8>],
    accept_invalid: bool,
}

fn http_client(tls: &Tls<'_>, host: &str) -> Result<reqwest::Client, RegistryError> {
    let mut builder = reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .connect_timeout(Duration::from_secs(30))
        .read_timeout(Duration::from_secs(120))
        .danger_accept_invalid_certs(tls.accept_invalid);
    let certs = tls.roots.iter().map(|pem| reqwest::Certificate::from_pem(pem)).collect::<Result<Vec<_>, _>>();
    let certs = certs.map_err(|e| RegistryError::Connect {
        registry: host.to_owned(),
        cause: RemoteCause::Certificate(e.to_string()),
    })?;
    if !certs.is_empty() {
        builder = builder.tls_certs_merge(certs);
    }
    builder.build().map_err(|e| RegistryError::Connect {
        registry: host.to_owned(),
        cause: RemoteCause::Protocol(error_chain(&e)),
    })
}

/// A plain HTTP client for `host` with the TLS setup a registry on it would get (for
/// downloads that are not registry requests).
pub(crate) fn http_client_for(options: &RegistryOptions, host: &str) -> Result<reqwest::Client, RegistryError> {
    let roots = extra_roots(&options.certs_dir, host)?;
    http_client(&Tls { roots: &roots, accept_invalid: options.is_insecure(host) }, host)
}

fn oci_client(tls: &Tls<'_>, host: &str, https: bool) -> Result<oci_client::Client, RegistryError> {
    let config = ClientConfig {
        protocol: if https { ClientProtocol::Https } else { ClientProtocol::Http },
        accept_invalid_certificates: tls.accept_invalid,
        // Our push loop sends each blob in one streamed PUT; chunked PATCHes buy nothing here.
        use_monolithic_push: true,
        extra_root_certificates: tls
            .roots
            .iter()
            .map(|pem| Certificate { encoding: CertificateEncoding::Pem, data: pem.clone() })
            .collect(),
        // Platform selection is ours (image::select_platform).
        platform_resolver: None,
        connect_timeout: Some(Duration::from_secs(30)),
        read_timeout: Some(Duration::from_secs(120)),
        user_agent: USER_AGENT,
        ..ClientConfig::default()
    };
    oci_client::Client::try_from(config)
        .map_err(|e| RegistryError::Connect { registry: host.to_owned(), cause: RemoteCause::from_oci(&e) })
}

/// Whether `GET <scheme>://host/v2/` is answered by a registry: 200 or 401 (or anything with
/// the distribution API header). A TLS server asked in plain HTTP answers 400, which is not.
async fn probe(http: &reqwest::Client, scheme: &str, host: &str) -> Result<(), RemoteCause> {
    let resp = http
        .get(format!("{scheme}://{host}/v2/"))
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .map_err(|e| RemoteCause::from_reqwest(&e))?;
    let status = resp.status().as_u16();
    if matches!(status, 200 | 401) || resp.headers().contains_key("docker-distribution-api-version") {
        return Ok(());
    }
    Err(RemoteCause::from_status(status, &resp.bytes().await.unwrap_or_default()))
}

/// Connects to `host`: decides HTTPS or HTTP (see the module doc) and builds the clients.
pub(crate) async fn connect(
    options: &RegistryOptions,
    host: &str,
    auth: RegistryAuth,
) -> Result<Endpoint, RegistryError> {
    install_crypto_provider();
    let roots = extra_roots(&options.certs_dir, host)?;
    let explicit_insecure = options.is_insecure(host);
    let may_use_http = explicit_insecure || is_loopback(host);
    let verified = Tls { roots: &roots, accept_invalid: false };
    let verified_http = http_client(&verified, host)?;

    let chosen = with_retry(
        &options.retry,
        &format!("connecting to {host}"),
        |_, _| {},
        || async {
            let https_err = match probe(&verified_http, "https", host).await {
                Ok(()) => return Ok((true, false)),
                Err(e) => e,
            };
            if !may_use_http {
                return Err(https_err);
            }
            if let RemoteCause::Certificate(_) = https_err {
                // TLS is spoken but the certificate is not trusted: only explicitly insecure
                // registries may skip verification.
                return if explicit_insecure { Ok((true, true)) } else { Err(https_err) };
            }
            match probe(&verified_http, "http", host).await {
                Ok(()) => Ok((false, false)),
                // Report the HTTPS failure: HTTPS is what a registry should speak.
                Err(_) => {
                    tracing::debug!("probing {host}: HTTPS failed ({https_err:?}) and plain HTTP got no registry");
                    Err(https_err)
                }
            }
        },
    )
    .await;
    let (https, accept_invalid) =
        chosen.map_err(|(_, cause)| RegistryError::Connect { registry: host.to_owned(), cause })?;
    tracing::debug!(host, https, accept_invalid, "registry transport chosen");
    let tls = Tls { roots: &roots, accept_invalid };
    let http = if accept_invalid { http_client(&tls, host)? } else { verified_http };
    let oci = oci_client(&tls, host, https)?;
    oci.store_auth_if_needed(host, &auth).await;
    let scheme = if https { "https" } else { "http" };
    Ok(Endpoint { base: format!("{scheme}://{host}"), oci, http, auth })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for h in ["localhost", "localhost:5000", "127.0.0.1:5000", "127.1.2.3", "[::1]:5000", "::1"] {
            assert!(is_loopback(h), "{h}");
        }
        for h in ["registry.example.com", "10.0.0.1:5000", "localhost.example.com", "[::2]:80"] {
            assert!(!is_loopback(h), "{h}");
        }
    }

    #[test]
    fn registries_file_lists_insecure_hosts() {
        let root = tempfile::tempdir().unwrap();
        assert!(RegistryOptions::load(root.path()).unwrap().insecure_registries.is_empty());
        std::fs::write(root.path().join(REGISTRIES_FILE), r#"{"insecure-registries":["reg.lan:5000","other"]}"#)
            .unwrap();
        let o = RegistryOptions::load(root.path()).unwrap();
        assert!(o.is_insecure("reg.lan:5000"));
        assert!(o.is_insecure("other:443"));
        assert!(!o.is_insecure("reg.lan:5001"));
        std::fs::write(root.path().join(REGISTRIES_FILE), "{").unwrap();
        let err = RegistryOptions::load(root.path()).unwrap_err().to_string();
        assert!(err.contains("registries.json"), "{err}");
    }

    #[test]
    fn bad_ca_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("reg:5000")).unwrap();
        std::fs::write(dir.path().join("reg:5000/ca.crt"), "not a cert").unwrap();
        let err = extra_roots(dir.path(), "reg:5000").unwrap_err().to_string();
        assert!(err.contains("reg:5000/ca.crt"), "{err}");
    }
}
