//! Image types: manifests, indexes, platforms and the image config.
//!
//! Manifests and indexes are parsed with `oci-spec`, which accepts both OCI and Docker v2
//! schema 2 documents (they share a shape; only media types differ). The image *config* type
//! is our own, [`ImageConfig`]: `oci-spec` drops Docker's `Healthcheck`, `OnBuild`, `Shell` and
//! `ArgsEscaped`, which builds need.
//!
//! Raw bytes are the identity of a manifest or config: kiln never re-serialises one it pulled
//! or loaded. The parsed forms here are views for reading; configs and manifests kiln creates
//! itself are serialised once, with maps in sorted order so equal images get equal digests.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};
use serde::{Deserialize, Serialize};

use crate::blobs::{BlobError, BlobStore};
use crate::digest::{Digest, DigestError};

/// Manifest, index and config media types (layer media types: [`crate::layer::Compression`]).
pub mod media_type {
    /// OCI image manifest.
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    /// OCI image index.
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    /// OCI image config.
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    /// Docker v2 schema 2 manifest.
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    /// Docker manifest list.
    pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
    /// Docker image config.
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

    /// Whether `mt` names a single-platform image manifest.
    pub fn is_manifest(mt: &str) -> bool {
        mt == OCI_MANIFEST || mt == DOCKER_MANIFEST
    }

    /// Whether `mt` names an index or manifest list.
    pub fn is_index(mt: &str) -> bool {
        mt == OCI_INDEX || mt == DOCKER_MANIFEST_LIST
    }
}

/// Errors reading image documents.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// A manifest, index or config that does not parse.
    #[error("invalid {what} {digest}: {source}")]
    Invalid { what: &'static str, digest: Digest, source: serde_json::Error },
    /// A document of a type kiln does not handle (schema 1, an artifact, …).
    #[error("unsupported manifest media type {media_type:?} for {digest}")]
    UnsupportedMediaType { media_type: String, digest: Digest },
    /// A descriptor whose digest kiln cannot verify.
    #[error("descriptor in {within}: {source}")]
    Digest { within: Digest, source: DigestError },
    /// An index has no manifest for the requested platform.
    #[error("no manifest for platform {wanted} in index {index} (available: {available})")]
    NoMatchingPlatform { wanted: Platform, index: Digest, available: String },
    /// The config's layer list and the manifest's disagree.
    #[error("image {manifest}: manifest lists {layers} layers but its config has {diff_ids} diff ids")]
    LayerCountMismatch { manifest: Digest, layers: usize, diff_ids: usize },
    /// A platform string that does not parse.
    #[error("invalid platform {0:?}: expected os/arch[/variant], e.g. linux/amd64")]
    BadPlatform(String),
    /// Reading a blob failed.
    #[error(transparent)]
    Blob(#[from] BlobError),
}

/// A target platform: `os/architecture[/variant]`, normalised the way containerd does
/// (`aarch64` → `arm64`, `x86_64` → `amd64`, `arm64/v8` → `arm64`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Platform {
    /// Operating system, e.g. `linux`.
    pub os: String,
    /// CPU architecture in GOARCH terms, e.g. `amd64`.
    pub architecture: String,
    /// CPU variant, e.g. `v7` for arm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// The platform kiln runs on (the only one it can execute RUN steps for).
    pub fn host() -> Platform {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            other => other,
        };
        Platform { os: std::env::consts::OS.to_owned(), architecture: arch.to_owned(), variant: None }.normalized()
    }

    fn normalized(mut self) -> Platform {
        self.os = self.os.to_ascii_lowercase();
        self.architecture = match self.architecture.to_ascii_lowercase().as_str() {
            "x86_64" | "x86-64" => "amd64".into(),
            "aarch64" => "arm64".into(),
            "i386" => "386".into(),
            "armhf" => {
                self.variant.get_or_insert_with(|| "v7".into());
                "arm".into()
            }
            "armel" => {
                self.variant.get_or_insert_with(|| "v6".into());
                "arm".into()
            }
            other => other.into(),
        };
        if self.architecture == "arm64" && self.variant.as_deref() == Some("v8") {
            self.variant = None;
        }
        if self.architecture == "amd64" && self.variant.as_deref() == Some("v1") {
            self.variant = None;
        }
        if self.architecture == "arm" && self.variant.is_none() {
            self.variant = Some("v7".into());
        }
        self
    }

    /// Whether an index entry's platform is this one.
    pub fn matches(&self, p: &oci_spec::image::Platform) -> bool {
        let other = Platform {
            os: p.os().to_string(),
            architecture: p.architecture().to_string(),
            variant: p.variant().clone(),
        }
        .normalized();
        &other == self
    }
}

impl FromStr for Platform {
    type Err = ImageError;

    fn from_str(s: &str) -> Result<Platform, ImageError> {
        let parts: Vec<&str> = s.split('/').collect();
        let bad = || ImageError::BadPlatform(s.to_owned());
        if parts.iter().any(|p| p.is_empty()) {
            return Err(bad());
        }
        let (os, arch, variant) = match parts.as_slice() {
            [os, arch] => (*os, *arch, None),
            [os, arch, variant] => (*os, *arch, Some((*variant).to_owned())),
            _ => return Err(bad()),
        };
        Ok(Platform { os: os.to_owned(), architecture: arch.to_owned(), variant }.normalized())
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// A parsed manifest-or-index document, as fetched by reference.
#[derive(Debug, Clone)]
pub enum ManifestDocument {
    /// A single-platform image manifest (boxed, like the index: both are large).
    Manifest(Box<ImageManifest>),
    /// An index / manifest list to select a platform from (boxed).
    Index(Box<ImageIndex>),
}

impl ManifestDocument {
    /// Parses `raw` (whose digest is `digest`), using the document's own `mediaType` field, or
    /// the transport's `content_type` when the document omits it (OCI allows that).
    pub fn parse(raw: &[u8], digest: &Digest, content_type: Option<&str>) -> Result<ManifestDocument, ImageError> {
        #[derive(Deserialize)]
        struct Probe {
            #[serde(rename = "mediaType")]
            media_type: Option<String>,
            manifests: Option<serde_json::Value>,
            #[serde(rename = "schemaVersion")]
            schema_version: Option<u32>,
        }
        let probe: Probe = serde_json::from_slice(raw).map_err(|source| ImageError::Invalid {
            what: "manifest",
            digest: digest.clone(),
            source,
        })?;
        let media_type = probe.media_type.as_deref().or(content_type).unwrap_or("");
        let is_index = media_type::is_index(media_type) || (media_type.is_empty() && probe.manifests.is_some());
        if probe.schema_version == Some(1) {
            return Err(ImageError::UnsupportedMediaType {
                media_type: format!("{media_type} (schema 1)"),
                digest: digest.clone(),
            });
        }
        if is_index {
            let index = serde_json::from_slice(raw).map_err(|source| ImageError::Invalid {
                what: "index",
                digest: digest.clone(),
                source,
            })?;
            Ok(ManifestDocument::Index(index))
        } else if media_type::is_manifest(media_type) || media_type.is_empty() {
            Ok(ManifestDocument::Manifest(Box::new(parse_manifest(raw, digest)?)))
        } else {
            Err(ImageError::UnsupportedMediaType { media_type: media_type.to_owned(), digest: digest.clone() })
        }
    }
}

/// Parses a single-platform image manifest.
pub fn parse_manifest(raw: &[u8], digest: &Digest) -> Result<ImageManifest, ImageError> {
    serde_json::from_slice(raw).map_err(|source| ImageError::Invalid {
        what: "manifest",
        digest: digest.clone(),
        source,
    })
}

/// The sha256 digest of a descriptor found inside the document `within`.
pub fn descriptor_digest(d: &Descriptor, within: &Digest) -> Result<Digest, ImageError> {
    d.digest().to_string().parse().map_err(|source| ImageError::Digest { within: within.clone(), source })
}

/// Picks the manifest for `platform` from an index (the index's digest names it in errors).
pub fn select_platform<'a>(
    index: &'a ImageIndex,
    index_digest: &Digest,
    platform: &Platform,
) -> Result<&'a Descriptor, ImageError> {
    index.manifests().iter().find(|d| d.platform().as_ref().is_some_and(|p| platform.matches(p))).ok_or_else(|| {
        ImageError::NoMatchingPlatform {
            wanted: platform.clone(),
            index: index_digest.clone(),
            available: index
                .manifests()
                .iter()
                .filter_map(|d| d.platform().as_ref())
                .map(|p| format!("{}/{}", p.os(), p.architecture()))
                .collect::<Vec<_>>()
                .join(", "),
        }
    })
}

/// OCI chain ids for a stack of layer diff ids, bottom first: ChainID(L0) = DiffID(L0),
/// ChainID(Ln) = sha256(ChainID(Ln-1) + " " + DiffID(Ln)).
pub fn chain_ids(diff_ids: &[Digest]) -> Vec<Digest> {
    let mut out: Vec<Digest> = Vec::with_capacity(diff_ids.len());
    for diff in diff_ids {
        let next = match out.last() {
            None => diff.clone(),
            Some(parent) => Digest::of(format!("{parent} {diff}").as_bytes()),
        };
        out.push(next);
    }
    out
}

/// The image config file (OCI `application/vnd.oci.image.config.v1+json`, which Docker's
/// config shares), with Docker's extra fields. Unknown fields are kept in `extra`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ImageConfig {
    /// Creation time, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// Author.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// CPU architecture.
    pub architecture: String,
    /// Operating system.
    pub os: String,
    /// CPU variant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// Execution defaults for containers of this image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<ContainerConfig>,
    /// The layers' diff ids.
    pub rootfs: RootFs,
    /// One entry per Dockerfile instruction (or import).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<History>,
    /// Fields kiln does not interpret, kept as they were.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl ImageConfig {
    /// Parses a config blob.
    pub fn parse(raw: &[u8], digest: &Digest) -> Result<ImageConfig, ImageError> {
        serde_json::from_slice(raw).map_err(|source| ImageError::Invalid {
            what: "config",
            digest: digest.clone(),
            source,
        })
    }

    /// The serialised form of a config kiln made. Field order is fixed and maps are sorted,
    /// so equal configs give equal bytes (and digests).
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serialising plain data with string keys cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// `rootfs` of an image config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RootFs {
    /// Always `layers`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Uncompressed layer digests, bottom first.
    pub diff_ids: Vec<Digest>,
}

impl Default for RootFs {
    fn default() -> Self {
        RootFs { kind: "layers".into(), diff_ids: Vec::new() }
    }
}

/// The execution defaults (`config`) of an image config, Docker field names.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerConfig {
    /// `USER`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// `EXPOSE`: keys like `80/tcp`, values empty objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
    /// `ENV`, `KEY=value` strings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    /// `ENTRYPOINT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// `CMD`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    /// `VOLUME`: keys are paths, values empty objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<BTreeMap<String, serde_json::Value>>,
    /// `WORKDIR`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// `LABEL`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// `STOPSIGNAL`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    /// Docker: whether CMD/ENTRYPOINT are already escaped (Windows); kept for fidelity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args_escaped: Option<bool>,
    /// Docker: `HEALTHCHECK`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<HealthConfig>,
    /// Docker: `ONBUILD` triggers, run by a child build.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_build: Option<Vec<String>>,
    /// Docker: `SHELL`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<Vec<String>>,
    /// Fields kiln does not interpret, kept as they were.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// Docker's `Healthcheck`; durations in nanoseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthConfig {
    /// `["NONE"]`, `["CMD", args…]` or `["CMD-SHELL", command]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<Vec<String>>,
    /// `--interval`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<i64>,
    /// `--timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<i64>,
    /// `--start-period`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_period: Option<i64>,
    /// `--start-interval`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_interval: Option<i64>,
    /// `--retries`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<i64>,
}

/// One history entry of an image config.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    /// When, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// The instruction that made it, e.g. `RUN /bin/sh -c make # buildkit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    /// Author.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// Comment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// True when the step added no layer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub empty_layer: Option<bool>,
}

/// One layer of an image: its blob and the digest of its uncompressed tar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    /// The blob's digest (compressed, as stored and pushed).
    pub digest: Digest,
    /// The blob's size in bytes.
    pub size: u64,
    /// The blob's media type.
    pub media_type: String,
    /// The uncompressed tar's digest (`rootfs.diff_ids`).
    pub diff_id: Digest,
}

/// A single-platform image read from the store: raw manifest and config plus parsed views.
#[derive(Debug, Clone)]
pub struct Image {
    /// The manifest's digest: the image's identity.
    pub manifest_digest: Digest,
    /// The manifest's raw bytes.
    pub manifest_raw: Vec<u8>,
    /// The manifest's media type (OCI or Docker).
    pub manifest_media_type: String,
    /// The parsed manifest.
    pub manifest: ImageManifest,
    /// The config's digest (the image id `docker images` shows).
    pub config_digest: Digest,
    /// The config's raw bytes.
    pub config_raw: Vec<u8>,
    /// The parsed config.
    pub config: ImageConfig,
    /// Layers, bottom first, with their diff ids.
    pub layers: Vec<Layer>,
}

impl Image {
    /// Reads and verifies the image whose manifest is `manifest_digest`.
    pub fn load(blobs: &BlobStore, manifest_digest: &Digest) -> Result<Image, ImageError> {
        let manifest_raw = blobs.read(manifest_digest)?;
        let manifest = parse_manifest(&manifest_raw, manifest_digest)?;
        let manifest_media_type =
            manifest.media_type().as_ref().map(|m| m.to_string()).unwrap_or_else(|| media_type::OCI_MANIFEST.into());
        let config_digest = descriptor_digest(manifest.config(), manifest_digest)?;
        let config_raw = blobs.read(&config_digest)?;
        let config = ImageConfig::parse(&config_raw, &config_digest)?;
        if config.rootfs.diff_ids.len() != manifest.layers().len() {
            return Err(ImageError::LayerCountMismatch {
                manifest: manifest_digest.clone(),
                layers: manifest.layers().len(),
                diff_ids: config.rootfs.diff_ids.len(),
            });
        }
        let layers = manifest
            .layers()
            .iter()
            .zip(&config.rootfs.diff_ids)
            .map(|(d, diff_id)| {
                Ok(Layer {
                    digest: descriptor_digest(d, manifest_digest)?,
                    size: d.size(),
                    media_type: d.media_type().to_string(),
                    diff_id: diff_id.clone(),
                })
            })
            .collect::<Result<_, ImageError>>()?;
        Ok(Image {
            manifest_digest: manifest_digest.clone(),
            manifest_raw,
            manifest_media_type,
            manifest,
            config_digest,
            config_raw,
            config,
            layers,
        })
    }

    /// Every blob the image consists of: manifest, config, layers.
    pub fn blobs(&self) -> impl Iterator<Item = &Digest> {
        [&self.manifest_digest, &self.config_digest].into_iter().chain(self.layers.iter().map(|l| &l.digest))
    }

    /// The image's platform, from its config.
    pub fn platform(&self) -> Platform {
        Platform {
            os: self.config.os.clone(),
            architecture: self.config.architecture.clone(),
            variant: self.config.variant.clone(),
        }
        .normalized()
    }
}

/// Stores a new image made by kiln (import, build): its config, then an OCI manifest naming
/// the config and `layers` (whose blobs must already be stored). Returns the stored image.
pub fn commit_image(blobs: &BlobStore, config: &ImageConfig, layers: &[Layer]) -> Result<Image, ImageError> {
    let config_raw = config.to_bytes();
    let config_digest = blobs.put(&config_raw)?;
    commit_manifest(blobs, &config_digest, config_raw.len() as u64, layers)
}

/// Stores an OCI manifest for an already stored config and layers, and returns the image.
pub fn commit_manifest(
    blobs: &BlobStore,
    config_digest: &Digest,
    config_size: u64,
    layers: &[Layer],
) -> Result<Image, ImageError> {
    let manifest = ManifestOut {
        schema_version: 2,
        media_type: media_type::OCI_MANIFEST,
        config: DescriptorOut::new(media_type::OCI_CONFIG, config_digest, config_size),
        layers: layers.iter().map(|l| DescriptorOut::new(&l.media_type, &l.digest, l.size)).collect(),
    };
    // Plain data with string keys: serialising cannot fail.
    let manifest_raw = serde_json::to_vec(&manifest).unwrap_or_default();
    let manifest_digest = blobs.put(&manifest_raw)?;
    Image::load(blobs, &manifest_digest)
}

/// The manifest kiln writes; field order as the OCI spec's examples and BuildKit's output.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ManifestOut<'a> {
    schema_version: u32,
    media_type: &'a str,
    config: DescriptorOut<'a>,
    layers: Vec<DescriptorOut<'a>>,
}

/// A descriptor as kiln writes it (manifests, layout indexes).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DescriptorOut<'a> {
    pub media_type: &'a str,
    pub digest: &'a Digest,
    pub size: u64,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<&'a str, &'a str>,
}

impl<'a> DescriptorOut<'a> {
    pub(crate) fn new(media_type: &'a str, digest: &'a Digest, size: u64) -> Self {
        DescriptorOut { media_type, digest, size, annotations: BTreeMap::new() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms_normalise() {
        let p: Platform = "linux/arm64/v8".parse().unwrap();
        assert_eq!(p.to_string(), "linux/arm64");
        assert_eq!("linux/x86_64".parse::<Platform>().unwrap().to_string(), "linux/amd64");
        assert_eq!("linux/arm".parse::<Platform>().unwrap().to_string(), "linux/arm/v7");
        assert!("linux".parse::<Platform>().is_err());
        assert!("linux//".parse::<Platform>().is_err());
        assert_eq!(Platform::host().to_string(), "linux/amd64");
    }

    #[test]
    fn chain_ids_follow_the_spec() {
        let a = Digest::of(b"a");
        let b = Digest::of(b"b");
        let ids = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(ids[0], a);
        assert_eq!(ids[1], Digest::of(format!("{a} {b}").as_bytes()));
    }

    #[test]
    fn docker_config_fields_survive() {
        let raw = br#"{"architecture":"amd64","os":"linux","config":{"Env":["A=1"],"Healthcheck":{"Test":["CMD-SHELL","true"],"Interval":1000000000},"OnBuild":["RUN x"],"Shell":["/bin/bash","-c"],"ArgsEscaped":true,"Custom":1},"rootfs":{"type":"layers","diff_ids":[]},"future":true}"#;
        let c = ImageConfig::parse(raw, &Digest::of(raw)).unwrap();
        let cc = c.config.as_ref().unwrap();
        assert_eq!(cc.on_build.as_deref(), Some(&["RUN x".to_string()][..]));
        assert_eq!(cc.shell.as_ref().unwrap()[0], "/bin/bash");
        assert_eq!(cc.healthcheck.as_ref().unwrap().interval, Some(1_000_000_000));
        assert_eq!(cc.args_escaped, Some(true));
        let again = ImageConfig::parse(&c.to_bytes(), &Digest::of(b"")).unwrap();
        assert_eq!(again, c);
        assert!(String::from_utf8(c.to_bytes()).unwrap().contains("\"future\":true"));
    }

    #[test]
    fn parses_docker_and_oci_documents() {
        let d = Digest::of(b"x");
        let docker = br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{"mediaType":"application/vnd.docker.container.image.v1+json","size":1,"digest":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},"layers":[]}"#;
        assert!(matches!(ManifestDocument::parse(docker, &d, None).unwrap(), ManifestDocument::Manifest(_)));
        let list = br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json","manifests":[{"mediaType":"application/vnd.docker.distribution.manifest.v2+json","size":1,"digest":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","platform":{"architecture":"arm64","os":"linux","variant":"v8"}},{"mediaType":"application/vnd.docker.distribution.manifest.v2+json","size":1,"digest":"sha256:ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb","platform":{"architecture":"amd64","os":"linux"}}]}"#;
        let ManifestDocument::Index(idx) = ManifestDocument::parse(list, &d, None).unwrap() else { panic!() };
        let amd = select_platform(&idx, &d, &Platform::host()).unwrap();
        assert!(amd.digest().to_string().starts_with("sha256:ca97"));
        let arm = select_platform(&idx, &d, &"linux/arm64".parse().unwrap()).unwrap();
        assert!(arm.digest().to_string().starts_with("sha256:e3b0"));
        let err = select_platform(&idx, &d, &"linux/s390x".parse().unwrap()).unwrap_err();
        assert!(err.to_string().contains("linux/amd64"), "{err}");
        let v1 = br#"{"schemaVersion":1,"name":"x"}"#;
        assert!(matches!(ManifestDocument::parse(v1, &d, None), Err(ImageError::UnsupportedMediaType { .. })));
    }
}
