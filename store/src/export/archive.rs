//! `kiln save`: images written as one tar, either an OCI image layout or a docker-archive.
//!
//! Both formats are the same OCI layout (`oci-layout`, `index.json`, `blobs/sha256/…`), as
//! `docker save` has written since Docker 25; the docker format adds the legacy
//! `manifest.json` that `docker load` and skopeo's `docker-archive:` transport read. Layers go
//! in as stored (compressed): both readers accept that, and it keeps saving a streaming copy.
//! Metadata comes first so a streaming reader knows what follows; every blob is written once
//! and verified against its digest while it streams.

use std::collections::BTreeSet;
use std::io::{self, Write};

use serde::Serialize;

use super::ExportError;
use crate::blobs::BlobStore;
use crate::digest::Digest;
use crate::image::{DescriptorOut, Image, media_type};

/// Which archive to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveFormat {
    /// An OCI image layout.
    Oci,
    /// An OCI layout plus Docker's `manifest.json`: what `docker load` reads.
    Docker,
}

/// One image to save and the name it goes under.
#[derive(Debug, Clone)]
pub struct SaveEntry<'a> {
    /// The image.
    pub image: &'a Image,
    /// Its full name, e.g. `docker.io/library/busybox:latest` (`io.containerd.image.name`).
    pub name: Option<String>,
    /// Its familiar name, e.g. `busybox:latest` (Docker's `RepoTags`).
    pub familiar_name: Option<String>,
}

/// Annotation naming an image in an OCI layout, as containerd and BuildKit write it.
const ANNOTATION_IMAGE_NAME: &str = "io.containerd.image.name";
/// The OCI annotation with the tag alone.
const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";

/// Writes `images` to `out` as one tar in `format`.
pub fn save<W: Write>(
    blobs: &BlobStore,
    images: &[SaveEntry<'_>],
    format: ArchiveFormat,
    out: W,
) -> Result<W, ExportError> {
    let mut tar = tar::Builder::new(out);
    let write_err = ExportError::Write;

    append_bytes(&mut tar, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#).map_err(write_err)?;
    let index = LayoutIndex {
        schema_version: 2,
        media_type: media_type::OCI_INDEX,
        manifests: images
            .iter()
            .map(|e| {
                let mut d = DescriptorOut::new(
                    &e.image.manifest_media_type,
                    &e.image.manifest_digest,
                    e.image.manifest_raw.len() as u64,
                );
                if let Some(name) = &e.name {
                    d.annotations.insert(ANNOTATION_IMAGE_NAME, name);
                    if let Some(tag) = tag_of(name) {
                        d.annotations.insert(ANNOTATION_REF_NAME, tag);
                    }
                }
                d
            })
            .collect(),
    };
    append_bytes(&mut tar, "index.json", &to_json(&index)).map_err(write_err)?;
    if format == ArchiveFormat::Docker {
        let manifest: Vec<DockerManifestEntry> = images
            .iter()
            .map(|e| DockerManifestEntry {
                config: blob_path(&e.image.config_digest),
                repo_tags: e.familiar_name.iter().cloned().collect(),
                layers: e.image.layers.iter().map(|l| blob_path(&l.digest)).collect(),
            })
            .collect();
        append_bytes(&mut tar, "manifest.json", &to_json(&manifest)).map_err(write_err)?;
    }

    let mut written = BTreeSet::new();
    for entry in images {
        for digest in entry.image.blobs() {
            if written.insert(digest.clone()) {
                append_blob(&mut tar, blobs, digest)?;
            }
        }
    }
    tar.into_inner().map_err(write_err)
}

/// The tag of a `name:tag` reference (not of a digest reference).
fn tag_of(name: &str) -> Option<&str> {
    let last = name.rsplit('/').next()?;
    if name.contains('@') {
        return None;
    }
    last.split_once(':').map(|(_, tag)| tag)
}

fn blob_path(d: &Digest) -> String {
    format!("blobs/sha256/{}", d.hex())
}

fn to_json<T: Serialize>(v: &T) -> Vec<u8> {
    // Plain data with string keys: serialising cannot fail.
    serde_json::to_vec(v).unwrap_or_default()
}

/// A header for a file kiln writes into an archive: root-owned, mode 0644, mtime 0, so equal
/// images give byte-identical archives.
fn file_header(size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(size);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h
}

fn append_bytes<W: Write>(tar: &mut tar::Builder<W>, path: &str, data: &[u8]) -> io::Result<()> {
    tar.append_data(&mut file_header(data.len() as u64), path, data)
}

fn append_blob<W: Write>(tar: &mut tar::Builder<W>, blobs: &BlobStore, digest: &Digest) -> Result<(), ExportError> {
    let size = blobs.size(digest)?;
    let reader = blobs.open(digest)?;
    tar.append_data(&mut file_header(size), blob_path(digest), reader)
        .map_err(|source| ExportError::Blob { digest: digest.clone(), source })
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct LayoutIndex<'a> {
    schema_version: u32,
    media_type: &'a str,
    manifests: Vec<DescriptorOut<'a>>,
}

/// One entry of Docker's `manifest.json`.
#[derive(Serialize, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct DockerManifestEntry {
    pub config: String,
    #[serde(default)]
    pub repo_tags: Vec<String>,
    pub layers: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_of_names() {
        assert_eq!(tag_of("docker.io/library/busybox:latest"), Some("latest"));
        assert_eq!(tag_of("localhost:5000/app"), None);
        assert_eq!(tag_of("localhost:5000/app:1.4"), Some("1.4"));
        assert_eq!(tag_of("x/app@sha256:abc"), None);
    }
}
