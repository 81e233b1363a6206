//! `--progress rawjson`: one JSON object per line, each a BuildKit `SolveStatus`
//! (`github.com/moby/buildkit/client`) holding what one event changed, so tools that read
//! `buildx build --progress rawjson` read kiln's output too.
//!
//! Like BuildKit, a vertex update carries the whole vertex (digest, name, times, cached,
//! error); log data is base64 (Go's encoding of `[]byte`), stream 1 is stdout and 2 stderr;
//! times are RFC 3339 in UTC.

use std::time::SystemTime;

use base64::Engine as _;
use serde::Serialize;

use super::steps::Step;
use super::{Event, LogStream};

/// `client.SolveStatus`; `warnings` are never produced.
#[derive(Serialize, Default)]
struct SolveStatus<'a> {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    vertexes: Vec<Vertex<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    statuses: Vec<VertexStatus<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    logs: Vec<VertexLog<'a>>,
}

/// `client.Vertex`; `inputs` are not known to the renderer and left out (they are optional).
#[derive(Serialize)]
struct Vertex<'a> {
    digest: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    started: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    completed: Option<String>,
    #[serde(skip_serializing_if = "is_false")]
    cached: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
}

/// `client.VertexStatus`.
#[derive(Serialize)]
struct VertexStatus<'a> {
    id: &'a str,
    vertex: &'a str,
    #[serde(skip_serializing_if = "is_zero")]
    total: u64,
    current: u64,
    timestamp: String,
    started: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    completed: Option<String>,
}

/// `client.VertexLog`.
#[derive(Serialize)]
struct VertexLog<'a> {
    vertex: &'a str,
    stream: u8,
    data: String,
    timestamp: String,
}

/// The JSON line (with its newline) for `event`, already applied to `step`.
pub(super) fn encode(step: &Step, event: &Event) -> Vec<u8> {
    let mut status = SolveStatus::default();
    match event {
        Event::Started { .. } | Event::Cached { .. } | Event::Completed { .. } => status.vertexes.push(Vertex {
            digest: &step.vertex,
            name: &step.name,
            started: step.started.map(time),
            completed: step.completed.map(time),
            cached: step.cached,
            error: step.error.as_deref(),
        }),
        Event::Log { vertex, stream, line, at } => {
            // Go's log data is the raw stream, newlines included; kiln's events are lines.
            let mut data = Vec::with_capacity(line.len() + 1);
            data.extend_from_slice(line);
            data.push(b'\n');
            status.logs.push(VertexLog {
                vertex,
                stream: match stream {
                    LogStream::Stdout => 1,
                    LogStream::Stderr => 2,
                },
                data: base64::engine::general_purpose::STANDARD.encode(data),
                timestamp: time(*at),
            });
        }
        Event::Status { vertex, id, .. } => {
            if let Some(subtask) = step.subtasks.iter().find(|s| s.id == *id) {
                status.statuses.push(VertexStatus {
                    id,
                    vertex,
                    total: subtask.total,
                    current: subtask.current,
                    timestamp: time(subtask.updated),
                    started: time(subtask.started),
                    completed: subtask.done.map(time),
                });
            }
        }
    }
    // Serialising plain strings and numbers cannot fail; an empty line would be the only trace.
    let mut line = serde_json::to_vec(&status).unwrap_or_default();
    line.push(b'\n');
    line
}

fn time(t: SystemTime) -> String {
    humantime::format_rfc3339_nanos(t).to_string()
}

fn is_false(b: &bool) -> bool {
    !b
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}
