//! Source vertices: the empty filesystem, the build context, and base images (loaded from
//! the store, where resolving them put them, or pulled when they are gone).

use std::sync::Arc;

use kiln_frontend::graph::{Digest as VertexDigest, Source};
use kiln_store::image::Image;
use kiln_store::registry::{NoProgress, Reference};

use super::{Output, Solved, Solver};

impl Solver {
    /// Solves a source vertex.
    pub(super) fn solve_source(
        &self,
        handle: &tokio::runtime::Handle,
        digest: &VertexDigest,
        source: &Source,
    ) -> Result<Solved, String> {
        let key = Some(digest.to_string());
        match source {
            Source::Scratch => Ok(Solved { key, output: Output::Fs { layers: Vec::new(), own: None }, cached: true }),
            Source::Context { .. } => Ok(Solved { key, output: Output::Context, cached: true }),
            Source::Image { reference, .. } => {
                let (image, cached) = self.base_image(handle, reference)?;
                Ok(Solved { key, output: Output::Fs { layers: image.layers, own: None }, cached })
            }
            Source::Http { .. } | Source::Git { .. } => {
                Err("this source is not supported yet (see `kiln build`'s documentation)".to_owned())
            }
        }
    }

    /// The image `reference` (pinned by digest when the resolver found it) from the store,
    /// pulled first when it is not there; the flag says whether it was there.
    fn base_image(&self, handle: &tokio::runtime::Handle, reference: &str) -> Result<(Image, bool), String> {
        let parsed = Reference::parse(reference).map_err(|e| format!("invalid image reference {reference}: {e}"))?;
        if let Some(digest) = parsed.digest()
            && self.store.blobs().contains(&digest)
        {
            let image = Image::load(self.store.blobs(), &digest).map_err(|e| format!("reading {reference}: {e}"))?;
            return Ok((image, true));
        }
        let pulled = handle
            .block_on(self.registry.pull(&self.store, &parsed, &self.options.platform, Arc::new(NoProgress)))
            .map_err(|e| format!("pulling {reference}: {e}"))?;
        let image = Image::load(self.store.blobs(), &pulled.digest).map_err(|e| format!("reading {reference}: {e}"))?;
        Ok((image, false))
    }
}
