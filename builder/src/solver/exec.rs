//! RUN: the command in the sandbox on an overlay snapshot of its root, output streamed to
//! progress line by line, and the snapshot's change written as the step's layer.

use std::collections::BTreeMap;

use kiln_frontend::graph::{Digest as VertexDigest, Exec, Mount, Network};
use kiln_runner::diff::DiffOptions;
use kiln_runner::sandbox::{self, Limits, Outcome, STEP_ONLY_PATHS, Stdio, StepMount, Stream};
use kiln_runner::snapshot::Snapshot;
use kiln_store::Digest;
use kiln_store::image::{Layer, chain_ids};

use super::mounts::{Prepared, RunMount};
use super::{Solved, Solver};
use crate::progress::{Event, LogStream};

impl Solver {
    /// Runs `exec`; returns the layer of its change (`None` when it changed nothing).
    pub(super) fn run_exec(
        &self,
        digest: &VertexDigest,
        exec: &Exec,
        inputs: &BTreeMap<VertexDigest, Solved>,
    ) -> Result<Option<Layer>, String> {
        let layers_of = |d: &VertexDigest| inputs.get(d).map(Solved::layers).unwrap_or_default();
        // Mounted inputs first, so that every snapshot is cleaned up whatever fails later.
        let mut prepared = Prepared::default();
        let result = (|| {
            let mut flags = Vec::new();
            let mut binds = Vec::new();
            for mount in &exec.mounts {
                match mount {
                    Mount::Input { dest, source, source_path } => {
                        let snapshot = self.prepare(layers_of(source))?;
                        let source_dir = snapshot.rootfs().join(source_path.trim_start_matches('/'));
                        prepared.snapshots.push(snapshot);
                        binds.push(StepMount::Bind { source: source_dir, dest: dest.clone(), readonly: true });
                    }
                    Mount::Flag { spec, from, .. } => {
                        let ssh_index = flags.iter().filter(|(m, _)| matches!(m, RunMount::Ssh { .. })).count();
                        let parsed =
                            RunMount::parse(spec, ssh_index, &exec.cwd).map_err(|e| format!("--mount={spec}: {e}"))?;
                        flags.push((parsed, from.as_ref().map(|d| layers_of(d).to_vec())));
                    }
                }
            }
            let flagged = self.prepare_mounts(&flags)?;
            binds.extend(flagged.mounts.iter().cloned());
            // Parents before what is mounted inside them (`/a` sorts before `/a/b`).
            binds.sort_by(|a, b| mount_dest(a).cmp(mount_dest(b)));
            let mut snapshot = self.prepare(layers_of(&exec.root))?;
            let run = self.run_in(digest, exec, &snapshot, binds, &flagged);
            drop(flagged);
            let layer = run.and_then(|()| self.diff(&mut snapshot));
            let cleaned = self.finish(snapshot, layers_of(&exec.root), layer.as_ref().ok().and_then(Option::as_ref));
            let layer = layer?;
            cleaned?;
            Ok(layer)
        })();
        prepared.cleanup();
        result
    }

    /// Runs the process of `exec` on `snapshot`.
    fn run_in(
        &self,
        digest: &VertexDigest,
        exec: &Exec,
        snapshot: &Snapshot,
        mounts: Vec<StepMount>,
        flagged: &Prepared,
    ) -> Result<(), String> {
        let mut step = sandbox::Exec::new(snapshot.rootfs(), exec.args.clone());
        step.env = exec.env.iter().chain(&exec.proxy_env).chain(&flagged.env).cloned().collect();
        step.secret_env = flagged.secret_env.clone();
        step.cwd = exec.cwd.clone();
        step.user = exec.user.clone();
        step.network = match exec.network {
            Network::Default => self.options.default_network,
            Network::None => sandbox::Network::None,
            Network::Host => sandbox::Network::Host,
        };
        step.limits = Limits { memory: self.options.memory, ..Limits::default() };
        step.mounts = mounts;
        let vertex = digest.to_string();
        let mut on_output = |event: sandbox::OutputEvent| {
            let stream = match event.stream {
                Stream::Stdout => LogStream::Stdout,
                Stream::Stderr => LogStream::Stderr,
            };
            self.progress.event(Event::Log {
                vertex: vertex.clone(),
                stream,
                line: event.line.strip_suffix(b"\n").map(<[u8]>::to_vec).unwrap_or(event.line),
                at: std::time::SystemTime::now(),
            });
        };
        let outcome =
            self.sandbox.run(&step, Stdio::Capture(&mut on_output), &self.cancel).map_err(|e| e.to_string())?;
        let command = serde_json::to_string(&exec.args).unwrap_or_default();
        match outcome {
            Outcome::Exited(0) => Ok(()),
            Outcome::Exited(code) => Err(format!("process {command} did not complete successfully: exit code: {code}")),
            Outcome::Signaled(sig) if self.cancel.is_cancelled() => {
                Err(format!("process {command} was cancelled (signal {sig})"))
            }
            Outcome::Signaled(sig) => Err(format!("process {command} was killed by signal {sig}")),
            Outcome::OomKilled { limit } => {
                Err(format!("process {command} was killed: out of memory (limit {limit} bytes, set with --memory)"))
            }
        }
    }

    /// A snapshot of `layers`, with the error as a message.
    pub(super) fn prepare(&self, layers: &[Layer]) -> Result<Snapshot, String> {
        self.snapshotter()?.prepare(layers).map_err(|e| format!("preparing a snapshot: {e}"))
    }

    /// Done with a step's snapshot, whose diff is `layer` on top of `below`: its upperdir is
    /// kept as the new layer's unpacked snapshot when it is exactly what the layer holds (no
    /// mtime clamping), else it is removed.
    pub(super) fn finish(&self, snapshot: Snapshot, below: &[Layer], layer: Option<&Layer>) -> Result<(), String> {
        let removing = |e: kiln_runner::snapshot::SnapshotError| format!("removing the step's snapshot: {e}");
        let chain_id = layer.filter(|_| self.options.source_date_epoch.is_none()).and_then(|layer| {
            let diff_ids: Vec<Digest> = below.iter().chain(std::iter::once(layer)).map(|l| l.diff_id.clone()).collect();
            chain_ids(&diff_ids).pop()
        });
        match chain_id {
            Some(chain_id) => self.snapshotter()?.keep(snapshot, &chain_id).map_err(removing),
            None => snapshot.cleanup().map_err(removing),
        }
    }

    /// The layer of what changed in `snapshot`, stored; `None` when nothing did.
    pub(super) fn diff(&self, snapshot: &mut Snapshot) -> Result<Option<Layer>, String> {
        let options = DiffOptions {
            compression: self.options.compression,
            source_date_epoch: self.options.source_date_epoch,
            skip: STEP_ONLY_PATHS.iter().map(Into::into).collect(),
        };
        let diff = snapshot.diff(&options).map_err(|e| e.to_string())?;
        if diff.entries == 0 {
            return Ok(None);
        }
        let l = diff.layer;
        Ok(Some(Layer { digest: l.digest, size: l.size, media_type: l.media_type.to_owned(), diff_id: l.diff_id }))
    }
}

/// Where a step mount goes.
fn mount_dest(mount: &StepMount) -> &str {
    match mount {
        StepMount::Bind { dest, .. } | StepMount::Tmpfs { dest, .. } => dest,
    }
}
