//! Base image lookups for the frontend: the store first, the registry when the image is not
//! there (or always with `--pull`). Each image is pinned to its manifest digest, so the graph,
//! and every cache key built on it, changes when the image does.

use std::sync::Arc;

use kiln_frontend::config::{ImageResolver, ResolvedImage};
use kiln_frontend::graph::Platform as FrontendPlatform;
use kiln_store::Store;
use kiln_store::image::{Image, Platform};
use kiln_store::registry::{Reference, RegistryClient};

use crate::image::frontend_config;
use crate::progress::{Event, Progress, TransferProgress};

/// Resolves base images against a store and its registries.
pub struct StoreResolver {
    /// The store.
    pub store: Arc<Store>,
    /// For images the store does not have.
    pub registry: Arc<RegistryClient>,
    /// The runtime the registry client runs on (the resolver is called from a blocking thread).
    pub handle: tokio::runtime::Handle,
    /// `--pull`: ask the registry even when the store has the tag.
    pub pull: bool,
    /// The only platform kiln builds for.
    pub platform: Platform,
    /// Where the lookups are reported.
    pub progress: Arc<dyn Progress>,
}

impl StoreResolver {
    /// The image `reference` names, pulled (its blobs shown under `vertex`) and tagged when
    /// needed.
    fn lookup(&self, reference: &Reference, vertex: &str) -> Result<Image, String> {
        let local = |digest| Image::load(self.store.blobs(), &digest).map_err(|e| e.to_string());
        if let Some(digest) = reference.digest()
            && self.store.blobs().contains(&digest)
        {
            return local(digest);
        }
        if !self.pull && reference.digest().is_none() {
            let tag = self.store.meta().tag(&reference.to_string()).map_err(|e| e.to_string())?;
            if let Some(tag) = tag
                && let Ok(image) = local(tag.digest)
            {
                return Ok(image);
            }
        }
        let pulled = self
            .handle
            .block_on(self.registry.pull(
                &self.store,
                reference,
                &self.platform,
                TransferProgress::new(vertex.to_owned(), Arc::clone(&self.progress)),
            ))
            .map_err(|e| e.to_string())?;
        if reference.digest().is_none() {
            self.store
                .set_tag(&reference.to_string(), &pulled.digest, &pulled.media_type)
                .map_err(|e| e.to_string())?;
        }
        local(pulled.digest)
    }
}

impl ImageResolver for StoreResolver {
    fn resolve_image(&self, reference: &str, platform: &FrontendPlatform) -> Result<ResolvedImage, String> {
        let wanted: Platform = platform.to_string().parse().map_err(|e| format!("platform {platform}: {e}"))?;
        if wanted != self.platform {
            return Err(format!(
                "platform {platform} is not supported: kiln builds for the host platform ({}) only",
                self.platform
            ));
        }
        let parsed = Reference::parse(reference).map_err(|e| e.to_string())?;
        // A digest like every other vertex id, as tools reading rawjson expect.
        let vertex = kiln_store::Digest::of(format!("resolve {reference}").as_bytes()).to_string();
        self.progress.event(Event::Started {
            vertex: vertex.clone(),
            name: format!("[internal] load metadata for {reference}"),
            at: std::time::SystemTime::now(),
        });
        let image = self.lookup(&parsed, &vertex);
        self.progress.event(Event::Completed {
            vertex,
            error: image.as_ref().err().cloned(),
            at: std::time::SystemTime::now(),
        });
        let image = image?;
        let found = image.platform();
        if found != self.platform {
            return Err(format!("image {reference} is for {found}, not for {}", self.platform));
        }
        let platform = FrontendPlatform::parse(&found.to_string()).ok();
        Ok(ResolvedImage {
            reference: parsed.with_digest(&image.manifest_digest).to_string(),
            config: frontend_config(&image),
            platform,
            has_layers: !image.layers.is_empty(),
        })
    }
}
