//! Image references, parsed and normalised the way docker does, in one place.
//!
//! `busybox` → `docker.io/library/busybox:latest`; `localhost:5000/a/b@sha256:…` keeps its
//! registry and digest. The grammar is the distribution one, implemented by oci-client's
//! (oci-spec's) `Reference`, which this type wraps; only sha256 digests are accepted because
//! kiln verifies nothing else.

use std::fmt;
use std::str::FromStr;

use crate::digest::Digest;

use super::error::RegistryError;

/// A fully qualified image reference: registry, repository, and a tag and/or digest.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    inner: oci_client::Reference,
}

impl Reference {
    /// Parses and normalises a reference as docker does (default registry `docker.io`, `library/`
    /// for single-component names on it, default tag `latest` when there is no digest).
    pub fn parse(s: &str) -> Result<Reference, RegistryError> {
        let bad = |message: String| RegistryError::Reference { reference: s.to_owned(), message };
        let inner = oci_client::Reference::from_str(s).map_err(|e| bad(e.to_string()))?;
        if inner.repository().bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(bad("repository name must be lowercase".to_owned()));
        }
        if let Some(d) = inner.digest() {
            d.parse::<Digest>().map_err(|e| bad(e.to_string()))?;
        }
        Ok(Reference { inner })
    }

    /// The registry as written in the reference (`docker.io`, `127.0.0.1:5000`).
    pub fn registry(&self) -> &str {
        self.inner.registry()
    }

    /// The repository path (`library/busybox`).
    pub fn repository(&self) -> &str {
        self.inner.repository()
    }

    /// The tag, if any (`latest` when neither tag nor digest was given).
    pub fn tag(&self) -> Option<&str> {
        self.inner.tag()
    }

    /// The digest, if the reference pins one.
    pub fn digest(&self) -> Option<Digest> {
        // Validated in `parse` and `with_digest`.
        self.inner.digest().and_then(|d| d.parse().ok())
    }

    /// The same repository, addressed by `digest` (no tag).
    pub fn with_digest(&self, digest: &Digest) -> Reference {
        Reference {
            inner: oci_client::Reference::with_digest(
                self.registry().to_owned(),
                self.repository().to_owned(),
                digest.to_string(),
            ),
        }
    }

    /// The same repository with another tag.
    pub fn with_tag(&self, tag: &str) -> Result<Reference, RegistryError> {
        Reference::parse(&format!("{}/{}:{tag}", self.registry(), self.repository()))
    }

    /// `registry/repository`, the key under which the store remembers where a blob came from.
    pub fn repository_key(&self) -> String {
        format!("{}/{}", self.registry(), self.repository())
    }

    /// The repository as docker shows it: `busybox` for `docker.io/library/busybox`,
    /// `me/app` for `docker.io/me/app`, `registry/repo` elsewhere.
    pub fn familiar_repository(&self) -> String {
        match self.registry() {
            "docker.io" => self.repository().strip_prefix("library/").unwrap_or(self.repository()).to_owned(),
            registry => format!("{registry}/{}", self.repository()),
        }
    }

    /// The whole reference as docker shows it: `busybox:latest`, `127.0.0.1:5000/a:1`.
    pub fn familiar(&self) -> String {
        let mut out = self.familiar_repository();
        if let Some(tag) = self.tag() {
            out.push(':');
            out.push_str(tag);
        }
        if let Some(digest) = self.digest() {
            out.push('@');
            out.push_str(&digest.to_string());
        }
        out
    }

    /// The tag or digest a manifest is addressed by in the API (`latest`, `sha256:…`).
    pub fn manifest_name(&self) -> String {
        match (self.inner.digest(), self.tag()) {
            (Some(d), _) => d.to_owned(),
            (None, Some(t)) => t.to_owned(),
            (None, None) => "latest".to_owned(),
        }
    }

    /// The host the API is reached at (`index.docker.io` for `docker.io`).
    pub(crate) fn api_host(&self) -> &str {
        self.inner.resolve_registry()
    }

    /// The oci-client form, for its calls.
    pub(crate) fn oci(&self) -> &oci_client::Reference {
        &self.inner
    }
}

impl FromStr for Reference {
    type Err = RegistryError;

    fn from_str(s: &str) -> Result<Reference, RegistryError> {
        Reference::parse(s)
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.inner, f)
    }
}

impl fmt::Debug for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Reference({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_like_docker() {
        let r = Reference::parse("busybox").unwrap();
        assert_eq!(r.to_string(), "docker.io/library/busybox:latest");
        assert_eq!(r.api_host(), "index.docker.io");
        assert_eq!(r.repository_key(), "docker.io/library/busybox");
        assert_eq!(r.familiar(), "busybox:latest");
        assert_eq!(Reference::parse("me/app:1").unwrap().familiar(), "me/app:1");
        assert_eq!(Reference::parse("127.0.0.1:5000/a/b:2").unwrap().familiar(), "127.0.0.1:5000/a/b:2");

        let hex = "a".repeat(64);
        let r = Reference::parse(&format!("localhost:5000/a/b@sha256:{hex}")).unwrap();
        assert_eq!(r.registry(), "localhost:5000");
        assert_eq!(r.repository(), "a/b");
        assert_eq!(r.tag(), None);
        assert_eq!(r.digest().unwrap().hex(), hex);
        assert_eq!(r.manifest_name(), format!("sha256:{hex}"));

        let r = Reference::parse("127.0.0.1:5000/team/app:1.4").unwrap();
        assert_eq!(r.to_string(), "127.0.0.1:5000/team/app:1.4");
        assert_eq!(r.with_tag("2").unwrap().to_string(), "127.0.0.1:5000/team/app:2");

        assert!(Reference::parse("UPPER/case").is_err());
        assert!(Reference::parse(&format!("a/b@sha512:{}", "a".repeat(128))).is_err());
        assert!(Reference::parse("").is_err());
    }
}
