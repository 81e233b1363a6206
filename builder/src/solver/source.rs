//! Source vertices: the empty filesystem, the build context, and base images (loaded from
//! the store, where resolving them put them, or pulled when they are gone).

use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use kiln_frontend::graph::{Digest as VertexDigest, Source};
use kiln_store::Digest;
use kiln_store::image::Image;
use kiln_store::registry::{Reference, fetch_url};

use super::{Output, Solved, Solver};
use crate::progress::TransferProgress;

impl Solver {
    /// Solves a source vertex.
    pub(super) fn solve_source(
        &self,
        handle: &tokio::runtime::Handle,
        digest: &VertexDigest,
        source: &Source,
    ) -> Result<Solved, String> {
        let key = digest.to_string();
        match source {
            Source::Scratch => {
                Ok(Solved { key, output: Output::Fs { layers: Vec::new(), own: None }, cached: true, created: 0 })
            }
            Source::Context { .. } => Ok(Solved { key, output: Output::Context, cached: true, created: 0 }),
            Source::Image { reference, .. } => {
                let (image, cached) = self.base_image(handle, digest, reference)?;
                Ok(Solved { key, output: Output::Fs { layers: image.layers, own: None }, cached, created: 0 })
            }
            Source::Http { url, checksum, filename } => {
                self.download(handle, digest, url, checksum.as_deref(), filename)
            }
            Source::Git { remote, reference, keep_git_dir } => {
                self.git_checkout(digest, remote, reference, *keep_git_dir)
            }
        }
    }

    /// `ADD <url>`: the file downloaded alone into a temp dir, as BuildKit stores it: mode
    /// 0600, mtime from `Last-Modified`. Its cache key is its content's digest, so a changed
    /// download changes the keys of the steps that copy it; `--checksum` is verified.
    fn download(
        &self,
        handle: &tokio::runtime::Handle,
        digest: &VertexDigest,
        url: &str,
        checksum: Option<&str>,
        filename: &str,
    ) -> Result<Solved, String> {
        let expected =
            checksum.map(|c| c.parse::<Digest>().map_err(|e| format!("invalid checksum {c:?}: {e}"))).transpose()?;
        let tmp = self.store.blobs().tmp_dir();
        let dir = tempfile::Builder::new()
            .prefix("download-")
            .tempdir_in(tmp)
            .map_err(|e| format!("creating a download directory in {}: {e}", tmp.display()))?;
        let path = dir.path().join(filename);
        let mut file = File::create(&path).map_err(|e| format!("creating {}: {e}", path.display()))?;
        let fetched = handle.block_on(fetch_url(self.registry.options(), url, &mut file)).map_err(|e| e.to_string())?;
        if let Some(expected) = expected
            && expected != fetched.digest
        {
            return Err(format!("checksum mismatch: expected {expected}, downloaded {}", fetched.digest));
        }
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(|e| format!("setting the mode of {}: {e}", path.display()))?;
        if let Some(modified) = fetched.last_modified {
            file.set_modified(modified).map_err(|e| format!("setting the mtime of {}: {e}", path.display()))?;
        }
        let key = Digest::of(format!("{digest}\n{}", fetched.digest).as_bytes()).to_string();
        Ok(Solved { key, output: Output::Download(Arc::new(dir)), cached: false, created: 0 })
    }

    /// The image `reference` (pinned by digest when the resolver found it) from the store,
    /// pulled first (its blobs shown under the vertex `digest`) when it is not there; the flag
    /// says whether it was there.
    fn base_image(
        &self,
        handle: &tokio::runtime::Handle,
        digest: &VertexDigest,
        reference: &str,
    ) -> Result<(Image, bool), String> {
        let parsed = Reference::parse(reference).map_err(|e| format!("invalid image reference {reference}: {e}"))?;
        if let Some(digest) = parsed.digest()
            && self.store.blobs().contains(&digest)
        {
            let image = Image::load(self.store.blobs(), &digest).map_err(|e| format!("reading {reference}: {e}"))?;
            return Ok((image, true));
        }
        let pulled = handle
            .block_on(self.registry.pull(
                &self.store,
                &parsed,
                &self.options.platform,
                TransferProgress::new(digest.to_string(), Arc::clone(&self.progress)),
            ))
            .map_err(|e| format!("pulling {reference}: {e}"))?;
        let image = Image::load(self.store.blobs(), &pulled.digest).map_err(|e| format!("reading {reference}: {e}"))?;
        Ok((image, false))
    }
}
