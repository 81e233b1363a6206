//! The `--progress` renderers as a user sees them: one build's events (two parallel steps, a
//! cached one, output, a layer download, a failure) rendered as plain text, raw JSON and the
//! live view.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use kiln_builder::progress::{Event, LogStream, Progress, ProgressMode, Renderer};

/// A sink the test can read after the renderer wrote to it.
#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Sink {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

const FROM: &str = "sha256:1111";
const COPY: &str = "sha256:2222";
const MAKE: &str = "sha256:3333";
const TEST: &str = "sha256:4444";
/// Two steps of their own for the tests of how plain output interleaves parallel steps.
const A: &str = "sha256:aaaa";
const B: &str = "sha256:bbbb";
const FAILURE: &str = "process \"/bin/sh -c make test\" did not complete successfully: exit code: 2";

/// The build's clock: `ms` milliseconds after a fixed start.
fn t(ms: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000) + Duration::from_millis(ms)
}

fn started(vertex: &str, name: &str, ms: u64) -> Event {
    Event::Started { vertex: vertex.into(), name: name.into(), at: t(ms) }
}

fn log(vertex: &str, stream: LogStream, line: &str, ms: u64) -> Event {
    Event::Log { vertex: vertex.into(), stream, line: line.into(), at: t(ms) }
}

fn status(current: u64, done: bool) -> Event {
    Event::Status { vertex: FROM.into(), id: "sha256:abcd".into(), current, total: 2_000_000, done }
}

fn completed(vertex: &str, error: Option<&str>, ms: u64) -> Event {
    Event::Completed { vertex: vertex.into(), error: error.map(str::to_owned), at: t(ms) }
}

/// A base image pulled, a cached COPY, then `make` and `make test` running at once; the
/// test step's output arrives while `make` is printing, and it fails.
fn build() -> Vec<Event> {
    vec![
        started(FROM, "[base 1/2] FROM docker.io/library/busybox", 0),
        status(0, false),
        status(50_000, false),
        status(1_000_000, false),
        status(2_000_000, true),
        completed(FROM, None, 1_200),
        started(COPY, "[base 2/2] COPY src /src", 1_300),
        Event::Cached { vertex: COPY.into() },
        completed(COPY, None, 1_300),
        started(MAKE, "[build 1/1] RUN make", 1_400),
        started(TEST, "[test 1/1] RUN make test", 1_500),
        log(MAKE, LogStream::Stdout, "cc -c main.c", 1_600),
        log(TEST, LogStream::Stdout, "running 3 tests", 1_700),
        log(MAKE, LogStream::Stderr, "cc -o app main.o", 2_000),
        completed(MAKE, None, 2_500),
        log(TEST, LogStream::Stderr, "FAIL: parses_empty_input", 2_600),
        completed(TEST, Some(FAILURE), 2_700),
    ]
}

/// A renderer for `mode` writing to a sink the test reads.
fn open(mode: ProgressMode) -> (Sink, Renderer) {
    let sink = Sink::default();
    let renderer = Renderer::to_writer(mode, Box::new(sink.clone()));
    (sink, renderer)
}

/// `events` rendered in `mode`, and the finished renderer.
fn render(mode: ProgressMode, events: Vec<Event>) -> (String, Renderer) {
    let (sink, renderer) = open(mode);
    for event in events {
        renderer.event(event);
    }
    renderer.finish();
    (sink.text(), renderer)
}

/// Plain output without the download timers, which are kiln's wall-clock time (the only
/// times events do not carry).
fn without_status_timers(text: &str) -> Vec<String> {
    text.lines()
        .map(|line| {
            if !line.starts_with("#1 sha256:abcd") {
                return line.to_owned();
            }
            let words: Vec<&str> = line
                .split(' ')
                .filter(|w| !(w.ends_with('s') && w[..w.len() - 1].parse::<f64>().is_ok() && w.contains('.')))
                .collect();
            words.join(" ")
        })
        .collect()
}

#[test]
fn plain_output_is_buildkits_one_step_at_a_time() {
    let (text, renderer) = render(ProgressMode::Plain, build());
    let expected = [
        "#1 [base 1/2] FROM docker.io/library/busybox",
        "#1 sha256:abcd 0B / 2.00MB",
        // 50kB (2.5%) is too little progress to print a line for.
        "#1 sha256:abcd 1.00MB / 2.00MB",
        "#1 sha256:abcd 2.00MB / 2.00MB done",
        "#1 DONE 1.2s",
        "",
        "#2 [base 2/2] COPY src /src",
        "#2 CACHED",
        "",
        "#3 [build 1/1] RUN make",
        "#3 0.200 cc -c main.c",
        "#3 0.600 cc -o app main.o",
        "#3 DONE 1.1s",
        "",
        "#4 [test 1/1] RUN make test",
        "#4 0.200 running 3 tests",
        "#4 1.100 FAIL: parses_empty_input",
        &format!("#4 ERROR: {FAILURE}"),
    ];
    assert_eq!(without_status_timers(&text), expected, "{text}");
    assert_eq!(renderer.last_logs(&TEST.into(), 5), ["running 3 tests", "FAIL: parses_empty_input"]);
    assert_eq!(renderer.last_logs(&TEST.into(), 1), ["FAIL: parses_empty_input"]);
    assert_eq!(renderer.last_logs(&MAKE.into(), 10), ["cc -c main.c", "cc -o app main.o"]);
    assert!(renderer.last_logs(&"sha256:none".into(), 10).is_empty());
}

#[test]
fn plain_output_leaves_a_quiet_step_for_one_that_waited_too_long() {
    let events = vec![
        started(A, "[a 1/1] RUN sleep 20", 0),
        log(A, LogStream::Stdout, "a starts", 100),
        started(B, "[b 1/1] RUN ./long-test", 200),
        log(B, LogStream::Stdout, "b first", 300),
        // `a` has been quiet for 5s and had the log for longer: `b` gets its turn.
        log(B, LogStream::Stdout, "b second", 6_000),
        log(B, LogStream::Stdout, "b third", 6_100),
        log(A, LogStream::Stdout, "a wakes", 6_200),
        // `a` completing is printed at once, interrupting `b`.
        completed(A, None, 7_000),
        log(B, LogStream::Stdout, "b last", 8_000),
        completed(B, None, 9_000),
    ];
    let (text, _) = render(ProgressMode::Plain, events);
    let expected = "\
#1 [a 1/1] RUN sleep 20
#1 0.100 a starts
#1 ...

#2 [b 1/1] RUN ./long-test
#2 0.100 b first
#2 5.800 b second
#2 5.900 b third
#2 ...

#1 [a 1/1] RUN sleep 20
#1 6.200 a wakes
#1 DONE 7.0s

#2 [b 1/1] RUN ./long-test
#2 7.800 b last
#2 DONE 8.8s
";
    assert_eq!(text, expected);
}

#[test]
fn plain_output_prints_held_back_lines_when_the_build_ends() {
    let events = vec![
        started(A, "[a 1/1] RUN make", 0),
        log(A, LogStream::Stdout, "a output", 10),
        started(B, "[b 1/1] RUN make", 20),
        log(B, LogStream::Stdout, "b output", 30),
    ];
    let (sink, renderer) = open(ProgressMode::Plain);
    for event in events {
        renderer.event(event);
    }
    assert_eq!(sink.text(), "#1 [a 1/1] RUN make\n#1 0.010 a output\n", "b is held back while a runs");
    renderer.finish();
    let expected = "#1 [a 1/1] RUN make\n#1 0.010 a output\n#1 ...\n\n#2 [b 1/1] RUN make\n#2 0.010 b output\n";
    assert_eq!(sink.text(), expected);
    renderer.event(log(A, LogStream::Stdout, "after the end", 40));
    assert_eq!(sink.text(), expected, "nothing is printed after finish");
    assert_eq!(renderer.last_logs(&A.into(), 1), ["after the end"], "but output is still kept");
}

#[test]
fn plain_output_shows_a_step_that_started_then_hit_the_cache_in_one_piece() {
    // kiln's solver reports a step as started before it looks in the cache.
    let events = vec![
        started(A, "[a 2/2] RUN make", 0),
        started(B, "[b 2/2] COPY . .", 1),
        Event::Cached { vertex: B.into() },
        completed(B, None, 2),
        Event::Cached { vertex: A.into() },
        completed(A, None, 3),
    ];
    let (text, _) = render(ProgressMode::Plain, events);
    let expected = "\
#2 [b 2/2] COPY . .
#2 CACHED

#1 [a 2/2] RUN make
#1 CACHED
";
    assert_eq!(text, expected);
}

#[test]
fn plain_output_shows_a_silent_step_once_it_ran_for_half_a_second() {
    let (sink, renderer) = open(ProgressMode::Plain);
    renderer.event(started(A, "[a 1/1] RUN sleep 1", 0));
    renderer.event(started(B, "[b 1/1] RUN sleep 2", 400));
    assert_eq!(sink.text(), "", "a step is not shown before it has run for half a second or said something");
    renderer.event(started(MAKE, "[c 1/1] RUN sleep 3", 600));
    assert_eq!(sink.text(), "#1 [a 1/1] RUN sleep 1\n", "a is shown; b has the log next, once a is done");
    renderer.event(log(A, LogStream::Stdout, "first words", 2_000));
    renderer.event(completed(A, None, 2_010));
    renderer.event(completed(B, None, 3_020));
    renderer.finish();
    let expected = "\
#1 [a 1/1] RUN sleep 1
#1 2.000 first words
#1 DONE 2.0s

#2 [b 1/1] RUN sleep 2
#2 DONE 2.6s

#3 [c 1/1] RUN sleep 3
";
    assert_eq!(sink.text(), expected);
}

/// `A` fails; the solver stops `B`, which BuildKit shows as cancelled rather than failed.
fn failure_cancels_a_parallel_step() -> Vec<Event> {
    vec![
        started(A, "[a 1/1] RUN false", 0),
        started(B, "[b 1/1] RUN sleep 60", 0),
        completed(A, Some("process \"/bin/sh -c false\" did not complete successfully: exit code: 1"), 100),
        completed(B, Some("process \"/bin/sh -c sleep 60\" was cancelled (signal 9)"), 200),
    ]
}

#[test]
fn plain_output_shows_steps_stopped_by_a_failure_as_canceled() {
    let (text, _) = render(ProgressMode::Plain, failure_cancels_a_parallel_step());
    let expected = "\
#1 [a 1/1] RUN false
#1 ERROR: process \"/bin/sh -c false\" did not complete successfully: exit code: 1

#2 [b 1/1] RUN sleep 60
#2 CANCELED
";
    assert_eq!(text, expected);
}

#[test]
fn rawjson_lines_are_buildkit_solve_statuses() {
    let (text, renderer) = render(ProgressMode::RawJson, build());
    let lines: Vec<serde_json::Value> =
        text.lines().map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"))).collect();
    assert_eq!(lines.len(), build().len() - 1, "one line per event but the Completed that repeats Cached");

    let first = &lines[0];
    assert_eq!(first["vertexes"][0]["digest"], FROM);
    assert_eq!(first["vertexes"][0]["name"], "[base 1/2] FROM docker.io/library/busybox");
    assert_eq!(first["vertexes"][0]["started"], "2023-11-14T22:13:20.000000000Z");
    assert!(first["vertexes"][0].get("completed").is_none());
    assert!(first.get("logs").is_none() && first.get("statuses").is_none());

    let done = &lines[4]["statuses"][0];
    assert_eq!(done["id"], "sha256:abcd");
    assert_eq!(done["vertex"], FROM);
    assert_eq!(done["current"], 2_000_000);
    assert_eq!(done["total"], 2_000_000);
    assert!(done["timestamp"].is_string() && done["started"].is_string() && done["completed"].is_string());
    assert!(lines[1]["statuses"][0].get("completed").is_none());

    let cached = &lines[7]["vertexes"][0];
    assert_eq!(cached["digest"], COPY);
    assert_eq!(cached["cached"], true);
    assert_eq!(cached["started"], cached["completed"]);

    let logs: Vec<&serde_json::Value> = lines.iter().filter_map(|l| l["logs"].get(0)).collect();
    let decoded: Vec<(String, u64, String)> = logs
        .iter()
        .map(|l| {
            let data = base64::engine::general_purpose::STANDARD.decode(l["data"].as_str().unwrap()).unwrap();
            (l["vertex"].as_str().unwrap().to_owned(), l["stream"].as_u64().unwrap(), String::from_utf8(data).unwrap())
        })
        .collect();
    assert_eq!(
        decoded,
        [
            (MAKE.to_owned(), 1, "cc -c main.c\n".to_owned()),
            (TEST.to_owned(), 1, "running 3 tests\n".to_owned()),
            (MAKE.to_owned(), 2, "cc -o app main.o\n".to_owned()),
            (TEST.to_owned(), 2, "FAIL: parses_empty_input\n".to_owned()),
        ]
    );
    assert_eq!(logs[0]["timestamp"], "2023-11-14T22:13:21.600000000Z");

    let failed = &lines.last().unwrap()["vertexes"][0];
    assert_eq!(failed["digest"], TEST);
    assert_eq!(failed["error"], FAILURE);
    assert_eq!(failed["completed"], "2023-11-14T22:13:22.700000000Z");
    assert!(failed.get("cached").is_none());
    assert_eq!(renderer.last_logs(&TEST.into(), 1), ["FAIL: parses_empty_input"]);
}

/// The text of the last frame: after the last cursor movement, without colours.
fn final_frame(text: &str) -> Vec<String> {
    let last = text.rfind("[+] Building").expect("a frame was drawn");
    let mut frame = String::new();
    let mut chars = text[last..].chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            frame.push(c);
        }
    }
    frame.lines().map(str::to_owned).collect()
}

#[test]
fn tty_final_frame_shows_every_step_with_its_outcome() {
    let (text, renderer) = render(ProgressMode::Tty, build());
    let frame = final_frame(&text);
    let padded = |label: &str, timer: &str| format!(" => {label:<width$}{timer}", width = 79 - 4 - timer.len());
    assert_eq!(
        frame,
        [
            "[+] Building 2.7s (4/4) FINISHED".to_owned(),
            padded("[base 1/2] FROM docker.io/library/busybox", " 1.2s"),
            padded("CACHED [base 2/2] COPY src /src", " 0.0s"),
            padded("[build 1/1] RUN make", " 1.1s"),
            padded("ERROR [test 1/1] RUN make test", " 1.2s"),
        ],
        "{text:?}"
    );
    assert!(text.contains("\x1b[31m => ERROR [test 1/1] RUN make test"), "failed step in red");
    assert_eq!(renderer.last_logs(&TEST.into(), 1), ["FAIL: parses_empty_input"]);
}

#[test]
fn tty_final_frame_shows_steps_stopped_by_a_failure_as_canceled() {
    let (text, _) = render(ProgressMode::Tty, failure_cancels_a_parallel_step());
    let frame = final_frame(&text);
    assert!(frame[1].starts_with(" => ERROR [a 1/1] RUN false "), "{frame:?}");
    assert!(frame[2].starts_with(" => CANCELED [b 1/1] RUN sleep 60 "), "{frame:?}");
    assert!(text.contains("\x1b[33m => CANCELED [b 1/1]"), "cancelled step in yellow: {text:?}");
}

#[test]
fn tty_live_frames_show_running_steps_output() {
    let (sink, renderer) = open(ProgressMode::Tty);
    renderer.event(started(MAKE, "[build 1/1] RUN make", 0));
    renderer.event(started(TEST, "[test 1/1] RUN make test", 0));
    renderer.event(log(MAKE, LogStream::Stdout, "cc -c main.c", 10));
    renderer.event(log(TEST, LogStream::Stdout, "running 3 tests", 20));
    // The ticker redraws about every 100ms; wait for a frame rather than for a time.
    let mut waited = 0;
    while !sink.text().contains("running 3 tests") {
        assert!(waited < 300, "no live frame drawn in 30s: {:?}", sink.text());
        std::thread::sleep(Duration::from_millis(100));
        waited += 1;
    }
    let frame = final_frame(&sink.text());
    assert!(frame[1].starts_with(" => [build 1/1] RUN make "), "{frame:?}");
    assert_eq!(frame[2], " => => # cc -c main.c");
    assert!(frame[3].starts_with(" => [test 1/1] RUN make test "), "{frame:?}");
    assert_eq!(frame[4], " => => # running 3 tests");
    renderer.finish();
}

#[test]
fn quiet_prints_nothing_but_keeps_output_for_the_error_message() {
    let (text, renderer) = render(ProgressMode::Quiet, build());
    assert_eq!(text, "");
    assert_eq!(renderer.last_logs(&TEST.into(), 2), ["running 3 tests", "FAIL: parses_empty_input"]);
}

#[test]
fn progress_modes_parse_like_buildx_spells_them() {
    for (name, mode) in [
        ("auto", ProgressMode::Auto),
        ("tty", ProgressMode::Tty),
        ("plain", ProgressMode::Plain),
        ("rawjson", ProgressMode::RawJson),
        ("quiet", ProgressMode::Quiet),
    ] {
        assert_eq!(name.parse::<ProgressMode>(), Ok(mode));
        assert_eq!(mode.to_string(), name);
    }
    let error = "fancy".parse::<ProgressMode>().unwrap_err();
    assert_eq!(error.to_string(), "invalid progress mode \"fancy\": expected one of auto, tty, plain, rawjson, quiet");
}
