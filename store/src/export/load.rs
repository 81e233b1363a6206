//! `kiln load`: images read back from an OCI layout tar or a docker-archive (as `docker save`,
//! `skopeo copy … docker-archive:` or `kiln save` write them), plain or compressed.
//!
//! The archive is read in one streaming pass: every file goes straight into the blob store
//! (files under `blobs/sha256/` are verified against their names), only the small top-level
//! metadata files are kept in memory. Paths in the archive are only ever used as lookup keys,
//! never as places to write, so a hostile archive cannot reach outside the store. When the
//! pass is over, `index.json` (OCI) or else `manifest.json` (Docker) says which blobs form
//! which images; for a docker-archive, which has no manifests, one is written.

use std::collections::HashMap;
use std::io::{self, BufReader, Read};

use super::ExportError;
use super::archive::DockerManifestEntry;
use crate::blobs::BlobStore;
use crate::digest::Digest;
use crate::image::{self, Image, ImageConfig, Layer, ManifestDocument, Platform, descriptor_digest};
use crate::layer::{Compression, MediaTypeFamily, decompress};

/// An image found in an archive.
#[derive(Debug, Clone)]
pub struct LoadedImage {
    /// The names the archive gives it: full names from an OCI layout's
    /// `io.containerd.image.name`, or Docker `RepoTags` such as `busybox:latest`.
    pub names: Vec<String>,
    /// The stored image.
    pub image: Image,
}

/// Top-level files read into memory rather than stored as blobs.
const METADATA_FILES: [&str; 4] = ["index.json", "manifest.json", "oci-layout", "repositories"];
/// Larger metadata is not believable and is refused rather than buffered.
const METADATA_LIMIT: u64 = 16 << 20;

/// Loads every image of the archive `input` into `blobs` (untagged); for an index, the
/// manifest for `platform` is taken.
pub fn load<R: Read>(blobs: &BlobStore, input: R, platform: &Platform) -> Result<Vec<LoadedImage>, ExportError> {
    let mut input = decompress(BufReader::new(input)).map_err(ExportError::Read)?;
    let mut files: HashMap<String, Digest> = HashMap::new();
    let mut links: HashMap<String, String> = HashMap::new();
    let mut metadata: HashMap<&'static str, Vec<u8>> = HashMap::new();
    {
        let mut archive = tar::Archive::new(&mut input);
        for entry in archive.entries().map_err(ExportError::NotATar)? {
            let mut entry = entry.map_err(ExportError::NotATar)?;
            let path = clean(&String::from_utf8_lossy(&entry.path_bytes()));
            match entry.header().entry_type() {
                tar::EntryType::Regular | tar::EntryType::Continuous => {}
                tar::EntryType::Symlink | tar::EntryType::Link => {
                    if let Some(target) = entry.link_name_bytes() {
                        let target = String::from_utf8_lossy(&target).into_owned();
                        links.insert(path.clone(), resolve_link(&path, &target));
                    }
                    continue;
                }
                _ => continue,
            }
            if let Some(name) = METADATA_FILES.iter().find(|m| **m == path) {
                if entry.size() > METADATA_LIMIT {
                    return Err(ExportError::Invalid(format!("{path} is {} bytes: too large", entry.size())));
                }
                let mut data = Vec::new();
                entry.read_to_end(&mut data).map_err(ExportError::Read)?;
                metadata.insert(name, data);
                continue;
            }
            let expected = path.strip_prefix("blobs/sha256/").and_then(|hex| Digest::from_hex(hex).ok());
            let mut writer = blobs.writer()?;
            io::copy(&mut entry, &mut writer).map_err(ExportError::Read)?;
            let digest = writer.commit(expected.as_ref())?;
            files.insert(path, digest);
        }
        io::copy(&mut archive.into_inner(), &mut io::sink()).map_err(ExportError::Read)?;
    }
    input.finish().map_err(ExportError::Read)?;

    let lookup = |path: &str| -> Result<Digest, ExportError> {
        let mut path = clean(path);
        for _ in 0..16 {
            if let Some(d) = files.get(&path) {
                return Ok(d.clone());
            }
            match links.get(&path) {
                Some(target) => path = target.clone(),
                None => break,
            }
        }
        Err(ExportError::Invalid(format!("the archive names {path} but does not contain it")))
    };

    if let Some(index) = metadata.get("index.json") {
        load_layout(blobs, index, platform)
    } else if let Some(manifest) = metadata.get("manifest.json") {
        load_docker_archive(blobs, manifest, lookup)
    } else {
        Err(ExportError::Invalid("neither index.json (OCI layout) nor manifest.json (docker-archive) found".into()))
    }
}

fn load_layout(blobs: &BlobStore, index_raw: &[u8], platform: &Platform) -> Result<Vec<LoadedImage>, ExportError> {
    let index_digest = Digest::of(index_raw);
    let ManifestDocument::Index(index) = ManifestDocument::parse(index_raw, &index_digest, None)? else {
        return Err(ExportError::Invalid("index.json is not an image index".into()));
    };
    let mut out = Vec::new();
    for desc in index.manifests() {
        let mut digest = descriptor_digest(desc, &index_digest)?;
        let raw = blobs.read(&digest)?;
        if let ManifestDocument::Index(nested) =
            ManifestDocument::parse(&raw, &digest, Some(desc.media_type().as_ref()))?
        {
            digest = descriptor_digest(image::select_platform(&nested, &digest, platform)?, &digest)?;
        }
        let image = Image::load(blobs, &digest)?;
        if let Some(missing) = image.layers.iter().find(|l| !blobs.contains(&l.digest)) {
            return Err(ExportError::Invalid(format!(
                "layer {} of image {digest} is not in the archive",
                missing.digest
            )));
        }
        let annotations = desc.annotations().clone().unwrap_or_default();
        let names = annotations
            .get("io.containerd.image.name")
            .or_else(|| annotations.get("org.opencontainers.image.ref.name").filter(|n| n.contains([':', '/'])))
            .cloned()
            .into_iter()
            .collect();
        out.push(LoadedImage { names, image });
    }
    Ok(out)
}

fn load_docker_archive(
    blobs: &BlobStore,
    manifest_raw: &[u8],
    lookup: impl Fn(&str) -> Result<Digest, ExportError>,
) -> Result<Vec<LoadedImage>, ExportError> {
    let entries: Vec<DockerManifestEntry> =
        serde_json::from_slice(manifest_raw).map_err(|e| ExportError::Invalid(format!("manifest.json: {e}")))?;
    let mut out = Vec::new();
    for entry in entries {
        let config_digest = lookup(&entry.config)?;
        let config_raw = blobs.read(&config_digest)?;
        let config = ImageConfig::parse(&config_raw, &config_digest)?;
        if config.rootfs.diff_ids.len() != entry.layers.len() {
            return Err(ExportError::Invalid(format!(
                "manifest.json lists {} layers for {} but its config has {} diff ids",
                entry.layers.len(),
                entry.config,
                config.rootfs.diff_ids.len()
            )));
        }
        let layers = entry
            .layers
            .iter()
            .zip(&config.rootfs.diff_ids)
            .map(|(path, diff_id)| {
                let digest = lookup(path)?;
                let mut magic = [0u8; 4];
                let n = blobs.open(&digest)?.read(&mut magic).map_err(ExportError::Read)?;
                let compression = Compression::detect(&magic[..n]);
                Ok(Layer {
                    size: blobs.size(&digest)?,
                    media_type: compression.media_type(MediaTypeFamily::Oci).to_owned(),
                    digest,
                    diff_id: diff_id.clone(),
                })
            })
            .collect::<Result<Vec<_>, ExportError>>()?;
        let image = image::commit_manifest(blobs, &config_digest, config_raw.len() as u64, &layers)?;
        out.push(LoadedImage { names: entry.repo_tags, image });
    }
    Ok(out)
}

/// An archive path without `./` prefixes, `.` components or duplicate slashes.
fn clean(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

/// A link's target as an archive path: relative targets are relative to the link's directory.
fn resolve_link(path: &str, target: &str) -> String {
    match (target.starts_with('/'), path.rsplit_once('/')) {
        (false, Some((dir, _))) => clean(&format!("{dir}/{target}")),
        _ => clean(target),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_paths() {
        assert_eq!(clean("./blobs//sha256/./ab"), "blobs/sha256/ab");
        assert_eq!(clean("../../etc/passwd"), "etc/passwd");
        assert_eq!(resolve_link("abc/layer.tar", "../def/layer.tar"), "def/layer.tar");
        assert_eq!(resolve_link("abc/layer.tar", "/def/layer.tar"), "def/layer.tar");
    }
}
