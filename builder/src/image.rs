//! Image configs between the store and the frontend: a base image's config as the frontend
//! reads it, and a built stage's config and history as the image config kiln stores.
//!
//! The history follows BuildKit's exporter (`normalizeLayersAndHistory`): an entry the
//! frontend made with a layer whose step changed nothing is marked `empty_layer` and gets no
//! layer, so every non-empty entry matches one layer. Base image entries keep their own times;
//! the build's entries get the build time (or `SOURCE_DATE_EPOCH`).

use std::collections::BTreeMap;
use std::time::SystemTime;

use kiln_frontend::config::{self as fe, Healthcheck};
use kiln_store::image::{ContainerConfig, HealthConfig, History, Image, ImageConfig, Layer, RootFs};

/// The config of a base image as the frontend reads it.
pub fn frontend_config(image: &Image) -> fe::ImageConfig {
    let c = image.config.config.clone().unwrap_or_default();
    fe::ImageConfig {
        env: c.env.unwrap_or_default(),
        cmd: c.cmd,
        entrypoint: c.entrypoint,
        labels: c.labels.unwrap_or_default(),
        exposed_ports: c.exposed_ports.unwrap_or_default().into_keys().collect(),
        user: c.user.unwrap_or_default(),
        working_dir: c.working_dir.unwrap_or_default(),
        volumes: c.volumes.unwrap_or_default().into_keys().collect(),
        healthcheck: c.healthcheck.map(|h| Healthcheck {
            test: h.test.unwrap_or_default(),
            interval: nanos(h.interval),
            timeout: nanos(h.timeout),
            start_period: nanos(h.start_period),
            start_interval: nanos(h.start_interval),
            retries: nanos(h.retries),
        }),
        shell: c.shell.unwrap_or_default(),
        stop_signal: c.stop_signal,
        on_build: c.on_build.unwrap_or_default(),
        args_escaped: c.args_escaped.unwrap_or(false),
        author: image.config.author.clone(),
        history: image
            .config
            .history
            .iter()
            .map(|h| fe::History {
                created_by: h.created_by.clone().unwrap_or_default(),
                comment: h.comment.clone().unwrap_or_default(),
                empty_layer: h.empty_layer.unwrap_or(false),
            })
            .collect(),
    }
}

fn nanos(v: Option<i64>) -> u64 {
    v.map_or(0, |v| v.max(0) as u64)
}

/// What the solver learnt about a stage's filesystem, for its image config.
pub struct BuiltStage<'a> {
    /// The stage's config as the frontend produced it.
    pub config: &'a fe::ImageConfig,
    /// The platform it was built for.
    pub platform: &'a kiln_frontend::graph::Platform,
    /// The base image it started from (through `FROM <stage>` chains), if any.
    pub base: Option<&'a Image>,
    /// Whether each step of the stage that the frontend gave a layer (RUN, COPY, ADD, WORKDIR
    /// other than `/`, bottom first, after the base's) actually produced one.
    pub step_layers: Vec<bool>,
    /// The filesystem's layers, bottom first.
    pub layers: &'a [Layer],
    /// The creation time of the image and of the build's history entries.
    pub created: SystemTime,
}

/// The image config of a built stage.
pub fn image_config(stage: &BuiltStage<'_>) -> ImageConfig {
    let fc = stage.config;
    let created = humantime::format_rfc3339_seconds(stage.created).to_string();
    let empty_object = || serde_json::Value::Object(serde_json::Map::new());
    let set = |items: &std::collections::BTreeSet<String>| {
        (!items.is_empty()).then(|| items.iter().map(|k| (k.clone(), empty_object())).collect::<BTreeMap<_, _>>())
    };
    let container = ContainerConfig {
        user: (!fc.user.is_empty()).then(|| fc.user.clone()),
        exposed_ports: set(&fc.exposed_ports),
        env: Some(fc.env.clone()),
        entrypoint: fc.entrypoint.clone(),
        cmd: fc.cmd.clone(),
        volumes: set(&fc.volumes),
        working_dir: (!fc.working_dir.is_empty()).then(|| fc.working_dir.clone()),
        labels: (!fc.labels.is_empty()).then(|| fc.labels.clone()),
        stop_signal: fc.stop_signal.clone(),
        args_escaped: fc.args_escaped.then_some(true),
        healthcheck: fc.healthcheck.as_ref().map(|h| HealthConfig {
            test: Some(h.test.clone()),
            interval: (h.interval > 0).then_some(h.interval as i64),
            timeout: (h.timeout > 0).then_some(h.timeout as i64),
            start_period: (h.start_period > 0).then_some(h.start_period as i64),
            start_interval: (h.start_interval > 0).then_some(h.start_interval as i64),
            retries: (h.retries > 0).then_some(h.retries as i64),
        }),
        on_build: (!fc.on_build.is_empty()).then(|| fc.on_build.clone()),
        shell: (!fc.shell.is_empty()).then(|| fc.shell.clone()),
        extra: BTreeMap::new(),
    };
    ImageConfig {
        created: Some(created.clone()),
        author: fc.author.clone(),
        architecture: stage.platform.architecture.clone(),
        os: stage.platform.os.clone(),
        variant: (!stage.platform.variant.is_empty()).then(|| stage.platform.variant.clone()),
        config: Some(container),
        rootfs: RootFs { kind: "layers".into(), diff_ids: stage.layers.iter().map(|l| l.diff_id.clone()).collect() },
        history: history(stage, &created),
        extra: BTreeMap::new(),
    }
}

/// The history: the base's entries as they were, then the build's, with `empty_layer` set on
/// the steps that produced no layer.
fn history(stage: &BuiltStage<'_>, created: &str) -> Vec<History> {
    let base: &[History] = stage.base.map_or(&[], |b| &b.config.history);
    let ours = stage.config.history.get(base.len()..).unwrap_or_default();
    // The frontend's layer-making entries, in order, are the stage's steps.
    let mut steps = stage.step_layers.iter();
    let mut out: Vec<History> = base.to_vec();
    for h in ours {
        let empty = h.empty_layer || !steps.next().copied().unwrap_or(true);
        out.push(History {
            created: Some(created.to_owned()),
            created_by: Some(h.created_by.clone()),
            author: None,
            comment: Some(h.comment.clone()),
            empty_layer: empty.then_some(true),
        });
    }
    out
}
