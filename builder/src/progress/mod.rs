//! Build progress: the events the solver emits while it works, and the renderers that show
//! them (`--progress auto|tty|plain|rawjson|quiet`).
//!
//! The solver knows nothing of terminals: it sends [`Event`]s to a [`Progress`] sink, and one
//! renderer per mode turns them into output, the way BuildKit's `progressui` does for a
//! `SolveStatus` stream.

use std::time::SystemTime;

/// Identifies one vertex (a build step) in the events of a build: the vertex's graph digest.
pub type VertexId = String;

/// Which output stream a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStream {
    /// The step's standard output.
    Stdout,
    /// The step's standard error.
    Stderr,
}

/// Something that happened during a build.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A step started work (or started looking itself up in the cache).
    Started {
        /// The step.
        vertex: VertexId,
        /// How the step is shown, e.g. `[build 2/4] RUN make`.
        name: String,
        /// When.
        at: SystemTime,
    },
    /// A step was found in the cache and will not run.
    Cached {
        /// The step.
        vertex: VertexId,
    },
    /// One line of a step's output (without its newline), as the step printed it.
    Log {
        /// The step.
        vertex: VertexId,
        /// stdout or stderr.
        stream: LogStream,
        /// The bytes of the line.
        line: Vec<u8>,
        /// When.
        at: SystemTime,
    },
    /// A sub-task of a step advanced (a layer being pulled, pushed or exported): `current` of
    /// `total` units (bytes), total 0 when unknown.
    Status {
        /// The step.
        vertex: VertexId,
        /// The sub-task, e.g. `sha256:3f4a… ` or `exporting layers`.
        id: String,
        /// Units done.
        current: u64,
        /// Units in all, 0 when unknown.
        total: u64,
        /// True once the sub-task is finished.
        done: bool,
    },
    /// A step finished, successfully when `error` is `None`.
    Completed {
        /// The step.
        vertex: VertexId,
        /// Why it failed, when it did.
        error: Option<String>,
        /// When.
        at: SystemTime,
    },
}

/// Where the solver sends its events. Implementations must be cheap to call from many
/// threads at once.
pub trait Progress: Send + Sync {
    /// Records one event.
    fn event(&self, event: Event);
}
