//! `--progress tty`: BuildKit's live view, redrawn in place on a terminal.
//!
//! ```text
//! [+] Building 12.3s (5/9)
//!  => CACHED [base 2/3] COPY go.mod /src/                            0.0s
//!  => [build 1/2] RUN make                                           3.2s
//!  => => # cc -o app main.c
//! ```
//!
//! A frame is a pure function of the steps, the time and the terminal size ([`frame`]);
//! [`TtyView`] moves the cursor back over the previous frame and overwrites it. Plain ANSI
//! escapes are enough for that, and a whole-frame model matches BuildKit's layout (header
//! timer, right-aligned step timers, output lines under running steps, finished steps
//! giving way when the screen is full) better than a set of `indicatif` bars would.

use std::io::Write as _;
use std::time::SystemTime;

use unicode_width::UnicodeWidthChar as _;

use super::steps::{Step, Steps, since};

/// Output lines shown under each running step.
const SHOWN_LOG_LINES: usize = 6;
/// Below this many columns for a step's name the line is not worth showing (as in BuildKit).
const MIN_NAME_COLUMNS: usize = 12;

const BLUE: &str = "\x1b[34m";
const RED: &str = "\x1b[31m";
const YELLOW: &str = "\x1b[33m";
const FAINT: &str = "\x1b[2m";
const RESET: &str = "\x1b[0m";

/// The terminal's size in columns and rows; `rows: None` shows every line.
#[derive(Debug, Clone, Copy)]
pub(super) struct Size {
    /// Columns.
    pub columns: usize,
    /// Rows.
    pub rows: Option<usize>,
}

/// The frame for `steps` at `now` on a terminal of `size`. `finished`: the final frame, which
/// shows every step (it stays in the scrollback) and times the build by its events.
pub(super) fn frame(steps: &Steps, now: SystemTime, size: Size, finished: bool) -> Vec<String> {
    let now = if finished { steps.last_event_at.unwrap_or(now) } else { now };
    let columns = size.columns.max(MIN_NAME_COLUMNS + 12);
    let (mut total, mut done) = (0, 0);
    let mut start: Option<SystemTime> = None;
    for step in steps.iter() {
        total += 1;
        done += usize::from(step.completed.is_some());
        if let Some(started) = step.started {
            start = Some(start.map_or(started, |s| s.min(started)));
        }
    }
    let elapsed = start.map_or(0.0, |s| since(s, now).as_secs_f64());
    let finished_text = if finished && total > 0 && done == total { " FINISHED" } else { "" };
    let header = format!("[+] Building {elapsed:.1}s ({done}/{total}){finished_text}");

    // Each step's lines as a block, so a full screen drops whole finished steps first.
    let mut blocks: Vec<(bool, Vec<String>)> =
        steps.iter().map(|step| (step.completed.is_some(), step_lines(step, now, columns))).collect();
    if !finished && let Some(rows) = size.rows {
        let room = rows.saturating_sub(2);
        let mut used: usize = blocks.iter().map(|(_, lines)| lines.len()).sum();
        let mut i = 0;
        while used > room && i < blocks.len() {
            if blocks[i].0 {
                used -= blocks.remove(i).1.len();
            } else {
                i += 1;
            }
        }
    }
    let mut lines = vec![cut(&header, columns - 1)];
    lines.extend(blocks.into_iter().flat_map(|(_, lines)| lines));
    if !finished && let Some(rows) = size.rows {
        // Still too many running steps: keep the header and the latest lines.
        let room = rows.saturating_sub(1).max(1);
        if lines.len() > room {
            lines.drain(1..=lines.len() - room);
        }
    }
    lines
}

/// A step's line, and for a running step its sub-tasks and last output lines beneath it.
fn step_lines(step: &Step, now: SystemTime, columns: usize) -> Vec<String> {
    let mut label = String::new();
    if step.cancelled() {
        label.push_str("CANCELED ");
    } else if step.error.is_some() {
        label.push_str("ERROR ");
    }
    if step.cached {
        label.push_str("CACHED ");
    }
    label.push_str(&step.name.replace('\t', " "));
    let secs = step.elapsed(now).as_secs_f64();
    let mut line = aligned(" => ", &label, secs, columns);
    let color = match (&step.error, step.completed) {
        (Some(_), _) if step.cancelled() => YELLOW,
        (Some(_), _) => RED,
        (None, Some(_)) => BLUE,
        (None, None) => "",
    };
    if !color.is_empty() {
        line = format!("{color}{line}{RESET}");
    }
    let mut lines = vec![line];
    if step.completed.is_none() {
        for subtask in &step.subtasks {
            let mut label = subtask.id.clone();
            let progress = subtask.progress_text();
            if !progress.is_empty() {
                label = format!("{label} {progress}");
            }
            lines.push(aligned(" => => ", &label, subtask.elapsed().as_secs_f64(), columns));
        }
        let skip = step.logs.len().saturating_sub(SHOWN_LOG_LINES);
        for log in step.logs.iter().skip(skip) {
            let text = format!(" => => # {}", visible(log));
            lines.push(format!("{FAINT}{}{RESET}", cut(&text, columns - 1)));
        }
    }
    lines
}

/// `prefix` + `label` cut to fit, padded so the timer ends one column before the edge (a
/// character in the last column would make some terminals wrap).
fn aligned(prefix: &str, label: &str, secs: f64, columns: usize) -> String {
    let secs = if secs < 0.05 { 0.0 } else { secs };
    let timer = format!(" {secs:.1}s");
    let room = (columns - 1).saturating_sub(prefix.len() + timer.len());
    let label = cut(label, room);
    let pad = room - width(&label);
    format!("{prefix}{label}{:pad$}{timer}", "")
}

/// The longest prefix of `text` at most `columns` wide.
fn cut(text: &str, columns: usize) -> String {
    let mut used = 0;
    let mut out = String::new();
    for c in text.chars() {
        let w = c.width().unwrap_or(0);
        if used + w > columns {
            break;
        }
        used += w;
        out.push(c);
    }
    out
}

fn width(text: &str) -> usize {
    text.chars().map(|c| c.width().unwrap_or(0)).sum()
}

/// What a terminal would show of a step's output line: the text after its last carriage
/// return (progress bars redraw that way), without escape sequences or control characters
/// that would move the cursor inside the frame.
fn visible(line: &str) -> String {
    let line = line.rsplit('\r').next().unwrap_or(line);
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => {
                // CSI: ESC [ parameters… final byte in @..~; other escapes are two characters.
                if chars.next() == Some('[') {
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
            }
            '\t' => out.push(' '),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// The state of the terminal between frames.
#[derive(Debug, Default)]
pub(super) struct TtyView {
    /// Lines of the frame on screen, which the next frame overwrites.
    lines_on_screen: usize,
}

impl TtyView {
    /// The bytes that replace the frame on screen with `lines`.
    pub fn redraw(&mut self, lines: &[String]) -> Vec<u8> {
        let mut out = Vec::new();
        // Hidden cursor: it would flicker across the frame while it is rewritten.
        out.extend_from_slice(b"\x1b[?25l");
        if self.lines_on_screen > 0 {
            let _ = write!(out, "\x1b[{}A\r", self.lines_on_screen);
        }
        for line in lines {
            let _ = writeln!(out, "\x1b[2K{line}");
        }
        let stale = self.lines_on_screen.saturating_sub(lines.len());
        if stale > 0 {
            for _ in 0..stale {
                out.extend_from_slice(b"\x1b[2K\n");
            }
            let _ = write!(out, "\x1b[{stale}A");
        }
        out.extend_from_slice(b"\x1b[?25h");
        self.lines_on_screen = lines.len();
        out
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::{Event, LogStream};
    use super::*;

    fn t(ms: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000) + Duration::from_millis(ms)
    }

    fn started(steps: &mut Steps, vertex: &str, name: &str, ms: u64) {
        steps.apply(&Event::Started { vertex: vertex.into(), name: name.into(), at: t(ms) }, t(ms));
    }

    fn log(steps: &mut Steps, vertex: &str, line: &str, ms: u64) {
        let event = Event::Log { vertex: vertex.into(), stream: LogStream::Stdout, line: line.into(), at: t(ms) };
        steps.apply(&event, t(ms));
    }

    fn completed(steps: &mut Steps, vertex: &str, ms: u64) {
        steps.apply(&Event::Completed { vertex: vertex.into(), error: None, at: t(ms) }, t(ms));
    }

    #[test]
    fn running_steps_show_their_last_output_lines_and_finished_ones_collapse() {
        let mut steps = Steps::default();
        started(&mut steps, "a", "[a 1/2] RUN make", 0);
        started(&mut steps, "b", "[b 1/2] RUN make test", 100);
        for i in 0..8 {
            log(&mut steps, "a", &format!("a line {i}"), 200 + i);
            log(&mut steps, "b", &format!("b line {i}"), 300 + i);
        }
        started(&mut steps, "c", "[c 1/1] COPY . .", 400);
        log(&mut steps, "c", "c output", 450);
        completed(&mut steps, "c", 500);
        let size = Size { columns: 60, rows: None };
        let lines: Vec<String> = frame(&steps, t(2_000), size, false).iter().map(|l| visible(l)).collect();
        assert_eq!(lines[0], "[+] Building 2.0s (1/3)");
        assert_eq!(lines[1], format!(" => [a 1/2] RUN make{:34} 2.0s", ""));
        assert_eq!(
            lines[2..8],
            ["a line 2", "a line 3", "a line 4", "a line 5", "a line 6", "a line 7"].map(|l| format!(" => => # {l}"))
        );
        assert_eq!(lines[8], format!(" => [b 1/2] RUN make test{:29} 1.9s", ""));
        assert_eq!(lines[9], " => => # b line 2");
        assert_eq!(lines[15], format!(" => [c 1/1] COPY . .{:34} 0.1s", ""), "finished step without its output");
        assert_eq!(lines.len(), 16);
        for line in &lines {
            assert!(width(line) < 60, "{line:?} is wider than the terminal");
        }
    }

    #[test]
    fn a_full_screen_drops_finished_steps_before_running_ones() {
        let mut steps = Steps::default();
        for i in 0..5 {
            started(&mut steps, &format!("done{i}"), &format!("[s {i}/6] RUN true"), i);
            completed(&mut steps, &format!("done{i}"), i + 1);
        }
        started(&mut steps, "run", "[s 6/6] RUN sleep 9", 10);
        log(&mut steps, "run", "zzz", 20);
        let lines = frame(&steps, t(1_000), Size { columns: 80, rows: Some(6) }, false);
        let text: Vec<String> = lines.iter().map(|l| visible(l)).collect();
        assert_eq!(text.len(), 5, "{text:#?}");
        assert!(text[0].starts_with("[+] Building"));
        assert!(text[1].starts_with(" => [s 3/6] RUN true"), "{text:#?}");
        assert!(text[3].starts_with(" => [s 6/6] RUN sleep 9"), "{text:#?}");
        assert_eq!(text[4], " => => # zzz");
        // The final frame shows every step.
        assert_eq!(frame(&steps, t(1_000), Size { columns: 80, rows: Some(6) }, true).len(), 8);
    }

    #[test]
    fn long_names_and_output_are_cut_to_the_terminal_width() {
        let mut steps = Steps::default();
        let name = format!("[x 1/1] RUN echo {}", "漢".repeat(40));
        started(&mut steps, "x", &name, 0);
        log(&mut steps, "x", &format!("progress 10%\rprogress 99%\x1b[0m {}", "y".repeat(100)), 10);
        let lines = frame(&steps, t(3_000), Size { columns: 40, rows: None }, false);
        let text: Vec<String> = lines.iter().map(|l| visible(l)).collect();
        assert_eq!(width(&text[1]), 39, "{:?}", text[1]);
        assert!(text[1].ends_with(" 3.0s"), "{:?}", text[1]);
        assert!(text[2].starts_with(" => => # progress 99% yyy"), "{:?}", text[2]);
        assert_eq!(width(&text[2]), 39);
    }

    #[test]
    fn redraw_overwrites_the_previous_frame_and_clears_its_leftover_lines() {
        let mut view = TtyView::default();
        let first = view.redraw(&["one".into(), "two".into(), "three".into()]);
        assert_eq!(first, b"\x1b[?25l\x1b[2Kone\n\x1b[2Ktwo\n\x1b[2Kthree\n\x1b[?25h");
        let second = view.redraw(&["uno".into()]);
        assert_eq!(second, b"\x1b[?25l\x1b[3A\r\x1b[2Kuno\n\x1b[2K\n\x1b[2K\n\x1b[2A\x1b[?25h");
    }
}
