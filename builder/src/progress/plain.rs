//! `--progress plain`: BuildKit's plain text format for CI logs.
//!
//! ```text
//! #3 [build 1/2] RUN make
//! #3 0.203 cc -o app main.c
//! #3 DONE 1.1s
//! ```
//!
//! Steps run in parallel, but a log reads best one step at a time, so like BuildKit's
//! `textMux` the printer stays with one step (the *current* one) and holds back the others'
//! lines until the current step completes, has been quiet for a while, or a held-back step
//! has waited too long; leaving a running step prints `#N ...`. Completed steps are printed
//! at once. A step that has only started is shown once it has something to say or after
//! [`SHOW_START_AFTER`] (BuildKit batches updates on a tick, so a cache hit, which kiln's
//! solver reports as started then cached, prints as one piece there too). All times are the
//! solver's (the events' timestamps), so the same events always print the same text.

use std::collections::HashMap;
use std::io::Write as _;
use std::time::{Duration, SystemTime};

use super::Event;
use super::steps::{Steps, since};

/// How long a started step with nothing to show yet waits before its header is printed.
const SHOW_START_AFTER: Duration = Duration::from_millis(500);
/// How long the current step keeps the log before a quiet spell lets another step in.
const ANTI_FLICKER: Duration = Duration::from_secs(5);
/// How quiet the current step must be before it gives way (after [`ANTI_FLICKER`]).
const QUIET: Duration = Duration::from_secs(1);
/// The longest a step's output is held back.
const MAX_DELAY: Duration = Duration::from_secs(10);
/// A sub-task's progress is printed again only after this much progress (of its total)…
const MIN_PROGRESS_DELTA: f64 = 0.05;
/// …or this much time.
const MIN_TIME_DELTA: Duration = Duration::from_secs(5);

/// Output held back for a step that is not the current one.
#[derive(Debug)]
struct Held {
    step: usize,
    /// The build's clock when the step started waiting (its start, or its first held line).
    waiting_since: SystemTime,
    /// The build's clock when its first held line arrived.
    text_since: Option<SystemTime>,
    text: Vec<u8>,
    completed: bool,
}

impl Held {
    /// Whether it has something to show: a header alone only after a while.
    fn ready(&self, clock: SystemTime) -> bool {
        self.completed || self.text_since.is_some() || since(self.waiting_since, clock) >= SHOW_START_AFTER
    }
}

/// The plain printer's memory between events.
#[derive(Debug, Default)]
pub(super) struct PlainPrinter {
    /// The step whose output is being printed, while it runs.
    current: Option<usize>,
    /// When it became current, and when it last printed (the build's clock).
    current_since: Option<SystemTime>,
    current_output: Option<SystemTime>,
    /// Whether anything was printed yet (a blank line separates steps after the first).
    printed_any: bool,
    /// Held-back output, in order of its first line.
    held: Vec<Held>,
    /// The progress and time of each sub-task's last printed line.
    shown_subtasks: HashMap<(usize, String), (u64, SystemTime)>,
}

impl PlainPrinter {
    /// Appends to `out` what `event` (already applied to `steps`, concerning the step at
    /// `position`) makes visible now.
    pub fn on_event(&mut self, steps: &Steps, position: usize, event: &Event, out: &mut Vec<u8>) {
        let clock = steps.last_event_at.unwrap_or(SystemTime::UNIX_EPOCH);
        let mut text = Vec::new();
        self.format(steps, position, event, &mut text);
        let completes = matches!(event, Event::Cached { .. } | Event::Completed { .. });
        if text.is_empty() && !matches!(event, Event::Started { .. }) {
            return;
        }
        if self.current == Some(position) {
            out.extend_from_slice(&text);
            self.current_output = Some(clock);
            if completes {
                self.current = None;
            }
        } else {
            let held = match self.held.iter().position(|h| h.step == position) {
                Some(i) => &mut self.held[i],
                None => {
                    let held = Held {
                        step: position,
                        waiting_since: clock,
                        text_since: None,
                        text: Vec::new(),
                        completed: false,
                    };
                    self.held.push(held);
                    let last = self.held.len() - 1;
                    &mut self.held[last]
                }
            };
            if !text.is_empty() {
                held.text_since.get_or_insert(clock);
                held.text.extend_from_slice(&text);
            }
            held.completed |= completes;
        }
        self.settle(steps, clock, out);
    }

    /// Re-runs the switching rules at `clock` (the build's clock advanced by the wall time
    /// since the last event), so held-back output of a quiet build still appears.
    pub fn tick(&mut self, steps: &Steps, clock: SystemTime, out: &mut Vec<u8>) {
        self.settle(steps, clock, out);
    }

    /// Prints everything still held back: the build is over.
    pub fn flush(&mut self, steps: &Steps, out: &mut Vec<u8>) {
        let clock = steps.last_event_at.unwrap_or(SystemTime::UNIX_EPOCH);
        while !self.held.is_empty() {
            let i = self.held.iter().position(|h| h.completed).unwrap_or(0);
            self.release(steps, i, clock, out);
        }
    }

    /// Switches to held-back output as the rules allow: completed steps first, then the
    /// oldest ready one when no step is current, when it waited too long, or when the current
    /// step has had its turn and gone quiet.
    fn settle(&mut self, steps: &Steps, clock: SystemTime, out: &mut Vec<u8>) {
        loop {
            let Some(ready) = self.held.iter().position(|h| h.ready(clock)) else { return };
            let next = if let Some(i) = self.held.iter().position(|h| h.completed) {
                i
            } else if self.current.is_none() {
                ready
            } else {
                let held = &self.held[ready];
                let waited = since(held.text_since.unwrap_or(held.waiting_since), clock);
                let shown_for = self.current_since.map_or(Duration::MAX, |t| since(t, clock));
                let quiet_for = self.current_output.map_or(Duration::MAX, |t| since(t, clock));
                if waited < MAX_DELAY && (shown_for < ANTI_FLICKER || quiet_for < QUIET) {
                    return;
                }
                ready
            };
            self.release(steps, next, clock, out);
        }
    }

    fn release(&mut self, steps: &Steps, i: usize, clock: SystemTime, out: &mut Vec<u8>) {
        let held = self.held.remove(i);
        self.switch_to(steps, held.step, clock, out);
        out.extend_from_slice(&held.text);
        self.current_output = Some(clock);
        if held.completed {
            self.current = None;
        }
    }

    /// Makes `position` the current step, printing its header (and `#N ...` for the step it
    /// interrupts) unless it already is.
    fn switch_to(&mut self, steps: &Steps, position: usize, clock: SystemTime, out: &mut Vec<u8>) {
        if self.current == Some(position) {
            return;
        }
        if let Some(old) = self.current {
            let _ = writeln!(out, "#{} ...", steps.get(old).number);
        }
        if self.printed_any {
            out.push(b'\n');
        }
        self.printed_any = true;
        let step = steps.get(position);
        let _ = writeln!(out, "#{} {}", step.number, step.name);
        self.current = Some(position);
        self.current_since = Some(clock);
    }

    /// The lines `event` adds to its step's section (without the header).
    fn format(&mut self, steps: &Steps, position: usize, event: &Event, text: &mut Vec<u8>) {
        let step = steps.get(position);
        let n = step.number;
        match event {
            Event::Started { .. } => {}
            Event::Cached { .. } => {
                let _ = writeln!(text, "#{n} CACHED");
            }
            Event::Log { line, at, .. } => {
                let secs = step.started.map_or(Duration::ZERO, |s| since(s, *at)).as_secs_f64();
                let precision = if secs < 10.0 {
                    3
                } else if secs < 100.0 {
                    2
                } else {
                    1
                };
                let _ = write!(text, "#{n} {secs:.precision$} ");
                text.extend_from_slice(line);
                text.push(b'\n');
            }
            Event::Status { id, .. } => {
                let Some(subtask) = step.subtasks.iter().find(|s| s.id == *id) else { return };
                let key = (position, id.clone());
                if subtask.done.is_none()
                    && let Some(&(last_current, last_time)) = self.shown_subtasks.get(&key)
                {
                    let progress = if subtask.total > 0 {
                        subtask.current.saturating_sub(last_current) as f64 / subtask.total as f64
                    } else {
                        0.0
                    };
                    if progress < MIN_PROGRESS_DELTA && since(last_time, subtask.updated) < MIN_TIME_DELTA {
                        return;
                    }
                }
                self.shown_subtasks.insert(key, (subtask.current, subtask.updated));
                let _ = write!(text, "#{n} {id}");
                let progress = subtask.progress_text();
                if !progress.is_empty() {
                    let _ = write!(text, " {progress}");
                }
                let elapsed = subtask.elapsed().as_secs_f64();
                if elapsed > 0.01 {
                    let _ = write!(text, " {elapsed:.1}s");
                }
                if subtask.done.is_some() {
                    text.extend_from_slice(b" done");
                }
                text.push(b'\n');
            }
            Event::Completed { error: Some(_), .. } if step.cancelled() => {
                let _ = writeln!(text, "#{n} CANCELED");
            }
            Event::Completed { error: Some(error), .. } => {
                let _ = writeln!(text, "#{n} ERROR: {error}");
            }
            Event::Completed { error: None, at, .. } => {
                let secs = step.started.map_or(Duration::ZERO, |s| since(s, *at)).as_secs_f64();
                let _ = writeln!(text, "#{n} DONE {secs:.1}s");
            }
        }
    }
}
