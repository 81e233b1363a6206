//! COPY, ADD, WORKDIR and inline files: [`fileop`](crate::fileop) actions applied to an overlay
//! snapshot of the step's root, whose change becomes the step's layer. A COPY from another
//! stage or an image reads a snapshot of that filesystem, mounted for the step.

use std::collections::BTreeMap;

use kiln_frontend::graph::{Digest as VertexDigest, FileAction, FileOp};
use kiln_runner::snapshot::Snapshot;
use kiln_store::image::Layer;

use super::{Output, Solved, Solver};
use crate::fileop::{self, SourceTree};

/// Whether `op` is a `COPY --link`/`ADD --link`: its layer is made on an empty filesystem,
/// independent of its root, so its cache key leaves the root out and a rebuilt base reuses it
/// (BuildKit's `MergeOp` of a copy onto scratch). As in BuildKit's `dispatchCopy`, a copy with
/// `--chmod` is not linked: it is applied onto its root like any copy.
pub(super) fn is_linked(op: &FileOp) -> bool {
    !op.actions.is_empty() && op.actions.iter().all(|a| matches!(a, FileAction::Copy(c) if c.link && c.chmod.is_none()))
}

impl Solver {
    /// Applies `op`'s actions; returns the layer of the change (`None` when nothing changed).
    pub(super) fn run_file(
        &self,
        op: &FileOp,
        inputs: &BTreeMap<VertexDigest, Solved>,
    ) -> Result<Option<Layer>, String> {
        let mut sources: Vec<Snapshot> = Vec::new();
        let result = (|| {
            let root = if is_linked(op) { &[] } else { inputs.get(&op.root).map(Solved::layers).unwrap_or_default() };
            let mut snapshot = self.prepare(root)?;
            let applied = self.apply_actions(&snapshot, op, inputs, &mut sources);
            let layer = applied.and_then(|()| self.diff(&mut snapshot));
            let below = inputs.get(&op.root).map(Solved::layers).unwrap_or_default();
            let cleaned = self.finish(snapshot, below, layer.as_ref().ok().and_then(Option::as_ref));
            let layer = layer?;
            cleaned?;
            Ok(layer)
        })();
        for snapshot in sources {
            if let Err(e) = snapshot.cleanup() {
                tracing::warn!("removing a source snapshot: {e}");
            }
        }
        result
    }

    /// Applies every action of `op` onto `snapshot`, mounting source filesystems into
    /// `sources` (which the caller cleans up).
    fn apply_actions(
        &self,
        snapshot: &Snapshot,
        op: &FileOp,
        inputs: &BTreeMap<VertexDigest, Solved>,
        sources: &mut Vec<Snapshot>,
    ) -> Result<(), String> {
        // One mount per source filesystem, however many actions read it.
        let mut mounted: BTreeMap<&VertexDigest, usize> = BTreeMap::new();
        for action in &op.actions {
            let tree = match action {
                FileAction::Copy(copy) => {
                    let from = inputs.get(&copy.from).ok_or_else(|| format!("source {} was not solved", copy.from))?;
                    Some(match &from.output {
                        Output::Context => self.context_tree(),
                        Output::Download(dir) => SourceTree { root: dir.path(), ignore: None, reset_owner: true },
                        Output::Fs { layers, .. } => {
                            let index = match mounted.get(&copy.from) {
                                Some(&i) => i,
                                None => {
                                    sources.push(self.prepare(layers)?);
                                    mounted.insert(&copy.from, sources.len() - 1);
                                    sources.len() - 1
                                }
                            };
                            SourceTree { root: sources[index].rootfs(), ignore: None, reset_owner: false }
                        }
                    })
                }
                FileAction::Mkdir { .. } | FileAction::Mkfile { .. } => None,
            };
            fileop::apply(snapshot.rootfs(), action, tree.as_ref()).map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}
