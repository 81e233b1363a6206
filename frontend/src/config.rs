//! The image configuration that travels with each stage (not an op of the graph).
//!
//! It starts as the base image's config (supplied by the builder through an
//! [`ImageResolver`]) or an empty one for `scratch`, and ENV, CMD, ENTRYPOINT, LABEL, EXPOSE,
//! USER, WORKDIR, VOLUME, HEALTHCHECK, SHELL, STOPSIGNAL, ONBUILD and MAINTAINER change it.
//! Every instruction appends a history entry whose `created_by` matches BuildKit's.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::graph::Platform;

/// BuildKit's history comment for entries made by the Dockerfile frontend.
pub const HISTORY_COMMENT: &str = "buildkit.dockerfile.v0";

/// The `PATH` BuildKit sets when an image has none (Linux).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// One entry of the image history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct History {
    /// e.g. `RUN /bin/sh -c make # buildkit`, `ENV A=b`.
    pub created_by: String,
    /// `buildkit.dockerfile.v0` for entries made here; whatever the base image had otherwise.
    pub comment: String,
    /// True when the step made no layer.
    pub empty_layer: bool,
}

/// HEALTHCHECK settings (durations in nanoseconds, as the image config stores them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Healthcheck {
    /// `["NONE"]`, `["CMD", …]` or `["CMD-SHELL", "…"]`.
    pub test: Vec<String>,
    /// `--interval`, 0 when not given.
    pub interval: u64,
    /// `--timeout`, 0 when not given.
    pub timeout: u64,
    /// `--start-period`, 0 when not given.
    pub start_period: u64,
    /// `--start-interval`, 0 when not given.
    pub start_interval: u64,
    /// `--retries`, 0 when not given.
    pub retries: u64,
}

/// The parts of an OCI/Docker image config a Dockerfile reads and writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ImageConfig {
    /// `KEY=value` entries, in order.
    pub env: Vec<String>,
    /// CMD, `None` when unset.
    pub cmd: Option<Vec<String>>,
    /// ENTRYPOINT, `None` when unset.
    pub entrypoint: Option<Vec<String>>,
    /// LABELs.
    pub labels: BTreeMap<String, String>,
    /// EXPOSEd ports as `80/tcp`.
    pub exposed_ports: BTreeSet<String>,
    /// USER, empty when unset.
    pub user: String,
    /// WORKDIR, empty when unset.
    pub working_dir: String,
    /// VOLUMEs.
    pub volumes: BTreeSet<String>,
    /// HEALTHCHECK.
    pub healthcheck: Option<Healthcheck>,
    /// SHELL, empty for the default `/bin/sh -c`.
    pub shell: Vec<String>,
    /// STOPSIGNAL.
    pub stop_signal: Option<String>,
    /// ONBUILD triggers, as written after `ONBUILD `.
    pub on_build: Vec<String>,
    /// Docker's `ArgsEscaped`, set by CMD like BuildKit does.
    pub args_escaped: bool,
    /// MAINTAINER.
    pub author: Option<String>,
    /// The history, base image entries first.
    pub history: Vec<History>,
}

impl ImageConfig {
    /// The value of environment variable `key`, if set.
    pub fn env_get(&self, key: &str) -> Option<&str> {
        self.env.iter().find_map(|e| e.split_once('=').filter(|(k, _)| *k == key).map(|(_, v)| v))
    }

    /// Sets `key=value`, replacing an existing entry in place (BuildKit's `addEnv`).
    pub fn env_set(&mut self, key: &str, value: &str) {
        set_env(&mut self.env, key, value);
    }

    /// Appends a history entry the way BuildKit's `commitToHistory` does: ` # buildkit` is
    /// added for steps that ran as an op with a build-graph state (RUN, COPY, ADD).
    pub fn commit(&mut self, created_by: String, with_layer: bool, buildkit_suffix: bool) {
        let created_by = if buildkit_suffix { format!("{created_by} # buildkit") } else { created_by };
        self.history.push(History { created_by, comment: HISTORY_COMMENT.to_owned(), empty_layer: !with_layer });
    }
}

/// Sets `key=value` in a `KEY=value` list, replacing in place or appending.
pub fn set_env(env: &mut Vec<String>, key: &str, value: &str) {
    let entry = format!("{key}={value}");
    match env.iter_mut().find(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) == key) {
        Some(slot) => *slot = entry,
        None => env.push(entry),
    }
}

/// What the builder tells the frontend about a base image.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResolvedImage {
    /// The reference to pull, ideally pinned (`…@sha256:…`) so the graph digest changes when
    /// the image does.
    pub reference: String,
    /// The image's config.
    pub config: ImageConfig,
    /// The platform the image is for, when known.
    pub platform: Option<Platform>,
    /// False for an image without layers (then the stage starts from scratch).
    pub has_layers: bool,
}

/// The builder's side of base-image lookups: asked once per reachable `FROM <image>` and
/// per `COPY --from=<image>`.
pub trait ImageResolver {
    /// Resolves `reference` (normalised, e.g. `docker.io/library/alpine:latest`) for
    /// `platform`; the error text is shown to the user with the Dockerfile position.
    fn resolve_image(&self, reference: &str, platform: &Platform) -> Result<ResolvedImage, String>;
}
