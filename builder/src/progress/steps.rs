//! What every renderer knows about the build so far: the steps in order of first appearance,
//! their times, outcome, sub-tasks and last output lines. Renderers read this model; only
//! [`Steps::apply`] changes it.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, SystemTime};

use super::{Event, VertexId};

/// How many output lines of a step are kept: enough for the failure message and the live view.
const KEPT_LOG_LINES: usize = 100;

/// A sub-task of a step (a layer download, an export phase), as last reported.
#[derive(Debug)]
pub(super) struct SubTask {
    /// The sub-task's name, e.g. `sha256:3f4a…`.
    pub id: String,
    /// Units done.
    pub current: u64,
    /// Units in all, 0 when unknown.
    pub total: u64,
    /// When kiln first heard of it (status events carry no time of their own).
    pub started: SystemTime,
    /// When kiln last heard of it.
    pub updated: SystemTime,
    /// When it was reported done.
    pub done: Option<SystemTime>,
}

impl SubTask {
    /// `1.20MB / 3.40MB`, `1.20MB`, or empty when nothing is known, as BuildKit shows it.
    pub fn progress_text(&self) -> String {
        match (self.current, self.total) {
            (_, 0) if self.current == 0 => String::new(),
            (current, 0) => human_bytes(current),
            (current, total) => format!("{} / {}", human_bytes(current), human_bytes(total)),
        }
    }

    /// Time from first report to done (or to the last report while running).
    pub fn elapsed(&self) -> Duration {
        since(self.started, self.done.unwrap_or(self.updated))
    }
}

/// One step of the build.
#[derive(Debug)]
pub(super) struct Step {
    /// `#N` in plain output: 1 for the first step that appeared.
    pub number: usize,
    /// The vertex.
    pub vertex: VertexId,
    /// How it is shown; the vertex id until a `Started` event names it.
    pub name: String,
    /// When it started.
    pub started: Option<SystemTime>,
    /// When it finished (for a cached step: when it was found in the cache).
    pub completed: Option<SystemTime>,
    /// Found in the cache.
    pub cached: bool,
    /// Why it failed.
    pub error: Option<String>,
    /// The last output lines, oldest first, decoded lossily.
    pub logs: VecDeque<String>,
    /// Sub-tasks in order of first report.
    pub subtasks: Vec<SubTask>,
}

impl Step {
    /// Whether the step failed only because the build was stopped (another step failed, or
    /// Ctrl-C). BuildKit shows such steps as `CANCELED`, recognising its `context canceled`
    /// error text; kiln's solver says `… was cancelled (signal N)` or `build cancelled`.
    pub fn cancelled(&self) -> bool {
        self.error.as_deref().is_some_and(|e| {
            let e = e.trim_end();
            e.ends_with("cancelled") || e.ends_with("canceled") || e.contains(" was cancelled (signal ")
        })
    }

    /// The time the step has taken: until it completed, else until `now`.
    pub fn elapsed(&self, now: SystemTime) -> Duration {
        self.started.map_or(Duration::ZERO, |started| since(started, self.completed.unwrap_or(now)))
    }
}

/// The steps of one build, in order of first appearance.
#[derive(Debug, Default)]
pub(super) struct Steps {
    steps: Vec<Step>,
    by_vertex: HashMap<VertexId, usize>,
    /// The latest time any event carried: the build's clock as the solver saw it.
    pub last_event_at: Option<SystemTime>,
}

impl Steps {
    /// Records `event`, received at `now`. Returns the position of the step it concerns, or
    /// `None` when it changed nothing worth showing (a second start, a completion of a step
    /// already completed, e.g. `Completed` after `Cached`).
    pub fn apply(&mut self, event: &Event, now: SystemTime) -> Option<usize> {
        if let Some(at) = event_time(event) {
            self.last_event_at = Some(self.last_event_at.map_or(at, |last| last.max(at)));
        }
        let clock = self.last_event_at.unwrap_or(now);
        let position = self.position(event_vertex(event));
        let step = &mut self.steps[position];
        match event {
            Event::Started { name, at, .. } => {
                let first = step.started.is_none();
                step.name.clone_from(name);
                step.started.get_or_insert(*at);
                if !first {
                    return None;
                }
            }
            Event::Cached { .. } => {
                if step.completed.is_some() {
                    return None;
                }
                // BuildKit reports a cache hit as a vertex that started and completed at once.
                let at = *step.started.get_or_insert(clock);
                step.completed = Some(at);
                step.cached = true;
            }
            Event::Log { line, .. } => {
                if step.logs.len() == KEPT_LOG_LINES {
                    step.logs.pop_front();
                }
                step.logs.push_back(String::from_utf8_lossy(line).into_owned());
            }
            Event::Status { id, current, total, done, .. } => {
                let subtask = match step.subtasks.iter().position(|s| s.id == *id) {
                    Some(i) => &mut step.subtasks[i],
                    None => {
                        step.subtasks.push(SubTask {
                            id: id.clone(),
                            current: 0,
                            total: 0,
                            started: now,
                            updated: now,
                            done: None,
                        });
                        step.subtasks.last_mut()?
                    }
                };
                subtask.current = *current;
                subtask.total = *total;
                subtask.updated = now;
                if *done {
                    subtask.done.get_or_insert(now);
                }
            }
            Event::Completed { error, at, .. } => {
                if step.completed.is_some() {
                    return None;
                }
                step.started.get_or_insert(*at);
                step.completed = Some(*at);
                step.error.clone_from(error);
            }
        }
        Some(position)
    }

    /// The step at `position` (as returned by [`Steps::apply`]).
    pub fn get(&self, position: usize) -> &Step {
        &self.steps[position]
    }

    /// The step of `vertex`, if any event named it.
    pub fn find(&self, vertex: &VertexId) -> Option<&Step> {
        self.by_vertex.get(vertex).map(|&i| &self.steps[i])
    }

    /// All steps in order of first appearance.
    pub fn iter(&self) -> impl Iterator<Item = &Step> {
        self.steps.iter()
    }

    fn position(&mut self, vertex: &VertexId) -> usize {
        if let Some(&i) = self.by_vertex.get(vertex) {
            return i;
        }
        let i = self.steps.len();
        self.steps.push(Step {
            number: i + 1,
            vertex: vertex.clone(),
            name: vertex.clone(),
            started: None,
            completed: None,
            cached: false,
            error: None,
            logs: VecDeque::new(),
            subtasks: Vec::new(),
        });
        self.by_vertex.insert(vertex.clone(), i);
        i
    }
}

/// The step an event concerns.
pub(super) fn event_vertex(event: &Event) -> &VertexId {
    match event {
        Event::Started { vertex, .. }
        | Event::Cached { vertex }
        | Event::Log { vertex, .. }
        | Event::Status { vertex, .. }
        | Event::Completed { vertex, .. } => vertex,
    }
}

/// The time an event carries, if it carries one.
pub(super) fn event_time(event: &Event) -> Option<SystemTime> {
    match event {
        Event::Started { at, .. } | Event::Log { at, .. } | Event::Completed { at, .. } => Some(*at),
        Event::Cached { .. } | Event::Status { .. } => None,
    }
}

/// `later - earlier`, zero when the clocks disagree about the order.
pub(super) fn since(earlier: SystemTime, later: SystemTime) -> Duration {
    later.duration_since(earlier).unwrap_or(Duration::ZERO)
}

/// Sizes the way BuildKit prints them (decimal units): `512B`, `1.20MB`, `3.40GB`.
pub(super) fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    let mut unit = 0;
    let mut scale = 1u64;
    while unit + 1 < UNITS.len() && n / scale >= 1000 {
        scale *= 1000;
        unit += 1;
    }
    if unit == 0 { format!("{n}B") } else { format!("{:.2}{}", n as f64 / scale as f64, UNITS[unit]) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_shown_in_decimal_units_like_buildkit() {
        assert_eq!(human_bytes(0), "0B");
        assert_eq!(human_bytes(999), "999B");
        assert_eq!(human_bytes(1000), "1.00kB");
        assert_eq!(human_bytes(1_200_000), "1.20MB");
        assert_eq!(human_bytes(3_456_789_012), "3.46GB");
        assert_eq!(human_bytes(u64::MAX), "18.45EB");
    }

    #[test]
    fn only_the_last_lines_of_a_step_are_kept() {
        let mut steps = Steps::default();
        let at = SystemTime::UNIX_EPOCH;
        for i in 0..KEPT_LOG_LINES + 5 {
            let line = format!("line {i}").into_bytes();
            steps.apply(&Event::Log { vertex: "v".into(), stream: super::super::LogStream::Stdout, line, at }, at);
        }
        let logs = &steps.find(&"v".to_owned()).map(|s| s.logs.clone()).unwrap_or_default();
        assert_eq!(logs.len(), KEPT_LOG_LINES);
        assert_eq!(logs.front().map(String::as_str), Some("line 5"));
        assert_eq!(logs.back().map(String::as_str), Some(format!("line {}", KEPT_LOG_LINES + 4).as_str()));
    }
}
