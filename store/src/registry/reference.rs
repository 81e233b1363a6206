//! Image references, parsed and normalised the way docker does, in one place.
//!
//! `busybox` → `docker.io/library/busybox:latest`; `localhost:5000/a/b@sha256:…` keeps its
//! registry and digest. The grammar is distribution's (`reference/regexp.go`), matched here by
//! hand: oci-spec's parser compiles that grammar as one Unicode regex on first use, which costs
//! ~100 ms of every kiln command that names an image (measured with perf on a warm
//! `kiln build`). The parsed parts are handed to oci-client's `Reference`, which this type wraps;
//! only sha256 digests are accepted because kiln verifies nothing else.

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
        let bad = |message: &str| RegistryError::Reference { reference: s.to_owned(), message: message.to_owned() };
        if s.is_empty() {
            return Err(bad("repository name must have at least one component"));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((rest, d)) => (rest, Some(d.parse::<Digest>().map_err(|e| bad(&e.to_string()))?)),
            None => (s, None),
        };
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(tag) = tag
            && !valid_tag(tag)
        {
            return Err(bad("invalid tag"));
        }
        if name.bytes().any(|b| b.is_ascii_uppercase()) && !has_domain(name) {
            return Err(bad("repository name must be lowercase"));
        }
        if !valid_name(name) {
            return Err(bad("invalid reference format"));
        }
        let (registry, repository) = split_domain(name);
        if repository.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(bad("repository name must be lowercase"));
        }
        if repository.len() > 255 {
            return Err(bad("repository name must not be more than 255 characters"));
        }
        let inner = match (tag, digest) {
            (Some(t), Some(d)) => {
                oci_client::Reference::with_tag_and_digest(registry, repository, t.into(), d.to_string())
            }
            (None, Some(d)) => oci_client::Reference::with_digest(registry, repository, d.to_string()),
            (t, None) => oci_client::Reference::with_tag(registry, repository, t.unwrap_or("latest").to_owned()),
        };
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

/// `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}` (distribution's tag grammar, ASCII as docker's).
fn valid_tag(tag: &str) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let bytes = tag.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 128
        && word(bytes[0])
        && bytes[1..].iter().all(|&b| word(b) || b == b'.' || b == b'-')
}

/// A path component: `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn valid_path_component(c: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = c.as_bytes();
    let (mut i, n) = (0, bytes.len());
    loop {
        let start = i;
        while i < n && alnum(bytes[i]) {
            i += 1;
        }
        if i == start {
            return false;
        }
        if i == n {
            return true;
        }
        // A separator: one `.`, one or two `_`, or any number of `-`.
        match bytes[i] {
            b'.' => i += 1,
            b'_' if bytes.get(i + 1) == Some(&b'_') => i += 2,
            b'_' => i += 1,
            b'-' => {
                while i < n && bytes[i] == b'-' {
                    i += 1;
                }
            }
            _ => return false,
        }
    }
}

/// A domain with an optional port: `label(.label)*(:[0-9]+)?`, each label
/// `[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]`.
fn valid_domain(d: &str) -> bool {
    let (host, port) = match d.split_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (d, None),
    };
    let label = |l: &str| {
        let b = l.as_bytes();
        !b.is_empty()
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'-')
    };
    host.split('.').all(label) && port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// Whether the first component of `name` is a registry (docker's rule: it has a `.` or a `:`, or
/// is `localhost`, and more components follow).
fn has_domain(name: &str) -> bool {
    name.split_once('/').is_some_and(|(first, _)| first.contains(['.', ':']) || first == "localhost")
}

/// Whether `name` matches distribution's name grammar: an optional domain, then path components.
fn valid_name(name: &str) -> bool {
    let mut parts = name.split('/');
    let first = parts.next().unwrap_or_default();
    let rest: Vec<&str> = parts.collect();
    let all_paths = |parts: &[&str]| parts.iter().all(|c| valid_path_component(c));
    (valid_path_component(first) && all_paths(&rest)) || (valid_domain(first) && !rest.is_empty() && all_paths(&rest))
}

/// Registry and repository of a valid name, normalised as docker does (`docker.io`,
/// `library/` for official images).
fn split_domain(name: &str) -> (String, String) {
    let (domain, remainder) = match name.split_once('/') {
        Some((first, rest)) if has_domain(name) => (first, rest.to_owned()),
        _ => ("docker.io", name.to_owned()),
    };
    let domain = if domain == "index.docker.io" { "docker.io" } else { domain };
    let remainder =
        if domain == "docker.io" && !remainder.contains('/') { format!("library/{remainder}") } else { remainder };
    (domain.to_owned(), remainder)
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
        assert!(Reference::parse("a//b").is_err());
        assert!(Reference::parse("a:").is_err());
        assert!(Reference::parse("a:-x").is_err());
        assert!(Reference::parse(&format!("a:{}", "t".repeat(129))).is_err());
        assert!(Reference::parse("-a/b").is_err());
        assert!(Reference::parse("a/b@sha256:short").is_err());
        assert!(Reference::parse("Host.Example:5000/a").is_ok(), "domains may have capitals");
        assert!(Reference::parse("host.example:5000/A").is_err());
        let r = Reference::parse(&format!("index.docker.io/app:v1.2_x@sha256:{hex}")).unwrap();
        assert_eq!((r.registry(), r.repository(), r.tag()), ("docker.io", "library/app", Some("v1.2_x")));
        assert_eq!(r.digest().unwrap().hex(), hex);
        let r = Reference::parse("localhost/a__b.c-d---e/f").unwrap();
        assert_eq!((r.registry(), r.repository()), ("localhost", "a__b.c-d---e/f"));
        assert_eq!(Reference::parse("my.reg/x").unwrap().registry(), "my.reg");
        assert_eq!(Reference::parse("notadomain/x").unwrap().repository(), "notadomain/x");
    }
}
