//! Build progress: the events the solver emits while it works, and the renderers that show
//! them (`--progress auto|tty|plain|rawjson|quiet`).
//!
//! The solver knows nothing of terminals: it sends [`Event`]s to a [`Progress`] sink, and a
//! [`Renderer`] turns them into output for one mode, the way BuildKit's `progressui` does for
//! a `SolveStatus` stream: `plain` prints as events arrive ([`plain`]), `tty` redraws a live
//! view from a ticker thread ([`tty`]), `rawjson` writes one JSON line per event ([`rawjson`]).
//! Every mode keeps the last output lines of each step ([`Renderer::last_logs`]) for the
//! failure message.

mod plain;
mod rawjson;
mod steps;
mod transfer;
mod tty;

use std::fmt;
use std::io::{IsTerminal as _, Write};
use std::str::FromStr;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

pub use transfer::TransferProgress;

use plain::PlainPrinter;
use steps::Steps;
use tty::{Size, TtyView};

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

/// `--progress` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProgressMode {
    /// `tty` when stderr is a terminal, else `plain`.
    #[default]
    Auto,
    /// The live view, redrawn in place.
    Tty,
    /// Text lines for CI logs.
    Plain,
    /// One JSON `SolveStatus` per line, as `buildx --progress rawjson` writes.
    RawJson,
    /// Nothing.
    Quiet,
}

/// The spelling of each mode on the command line.
const MODE_NAMES: [(&str, ProgressMode); 5] = [
    ("auto", ProgressMode::Auto),
    ("tty", ProgressMode::Tty),
    ("plain", ProgressMode::Plain),
    ("rawjson", ProgressMode::RawJson),
    ("quiet", ProgressMode::Quiet),
];

/// A `--progress` value that names no mode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid progress mode {value:?}: expected one of auto, tty, plain, rawjson, quiet")]
pub struct ParseProgressModeError {
    /// The value given.
    pub value: String,
}

impl FromStr for ProgressMode {
    type Err = ParseProgressModeError;

    fn from_str(s: &str) -> Result<ProgressMode, ParseProgressModeError> {
        MODE_NAMES
            .iter()
            .find(|(name, _)| *name == s)
            .map(|&(_, mode)| mode)
            .ok_or_else(|| ParseProgressModeError { value: s.to_owned() })
    }
}

impl fmt::Display for ProgressMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = MODE_NAMES.iter().find(|(_, mode)| mode == self).map_or("auto", |(name, _)| name);
        f.write_str(name)
    }
}

/// How often the live view is redrawn.
const TTY_PERIOD: Duration = Duration::from_millis(100);
/// How often plain output checks whether held-back lines (or a silent step's header) are due.
const PLAIN_PERIOD: Duration = Duration::from_millis(250);
/// The terminal assumed when the size cannot be read (and for [`Renderer::to_writer`]).
const DEFAULT_COLUMNS: usize = 80;

/// A running renderer: the solver sends it events (it implements [`Progress`]); once the
/// build has ended, successfully or not, [`Renderer::finish`] draws the final state and stops
/// the ticker thread. Output errors (a closed stderr) are ignored: progress never fails a build.
pub struct Renderer {
    shared: Arc<Shared>,
    ticker: Mutex<Option<JoinHandle<()>>>,
}

/// What the caller's threads and the ticker thread share.
struct Shared {
    state: Mutex<State>,
    /// Taken before the state lock is released, so output keeps the order of events.
    out: Mutex<Box<dyn Write + Send>>,
    stopped: Mutex<bool>,
    wake: Condvar,
}

struct State {
    steps: Steps,
    view: View,
    finished: bool,
    /// When the last event arrived, to advance the build's clock while nothing happens.
    last_event: Instant,
}

enum View {
    Quiet,
    Plain(PlainPrinter),
    RawJson,
    Tty { view: TtyView, size: SizeSource },
}

/// Where the live view learns the terminal's size.
#[derive(Clone, Copy)]
enum SizeSource {
    Fixed(Size),
    /// Asked again for every frame: the terminal may be resized during a build.
    Stderr,
}

impl Renderer {
    /// A renderer writing to stderr, like BuildKit. `Auto` is `Tty` when stderr is a
    /// terminal, else `Plain`.
    pub fn stderr(mode: ProgressMode) -> Renderer {
        let mode = match mode {
            ProgressMode::Auto if std::io::stderr().is_terminal() => ProgressMode::Tty,
            ProgressMode::Auto => ProgressMode::Plain,
            mode => mode,
        };
        Renderer::new(mode, Box::new(std::io::stderr()), SizeSource::Stderr, true)
    }

    /// A renderer writing to `out` (for tests): `Tty` draws for an 80-column terminal of
    /// unlimited height, `Auto` is `Plain`. Plain output depends only on the events (the idle
    /// check that releases held-back lines of a quiet build runs only for [`Renderer::stderr`]).
    pub fn to_writer(mode: ProgressMode, out: Box<dyn Write + Send>) -> Renderer {
        let mode = if mode == ProgressMode::Auto { ProgressMode::Plain } else { mode };
        Renderer::new(mode, out, SizeSource::Fixed(Size { columns: DEFAULT_COLUMNS, rows: None }), false)
    }

    fn new(mode: ProgressMode, out: Box<dyn Write + Send>, size: SizeSource, live: bool) -> Renderer {
        let (view, period) = match mode {
            ProgressMode::Quiet => (View::Quiet, None),
            ProgressMode::Auto | ProgressMode::Plain => {
                (View::Plain(PlainPrinter::default()), live.then_some(PLAIN_PERIOD))
            }
            ProgressMode::RawJson => (View::RawJson, None),
            ProgressMode::Tty => (View::Tty { view: TtyView::default(), size }, Some(TTY_PERIOD)),
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(State { steps: Steps::default(), view, finished: false, last_event: Instant::now() }),
            out: Mutex::new(out),
            stopped: Mutex::new(false),
            wake: Condvar::new(),
        });
        // Without a ticker thread (spawning failed) the final state is still drawn by finish.
        let ticker = period.and_then(|period| {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new().name("kiln-progress".into()).spawn(move || shared.run_ticker(period)).ok()
        });
        Renderer { shared, ticker: Mutex::new(ticker) }
    }

    /// Draws the final state (tty: the full last frame; plain: any held-back lines), stops the
    /// ticker thread and ignores later events. Takes `&self` so that [`Renderer::last_logs`]
    /// works afterwards and a shared renderer can be finished; calling it twice is harmless.
    pub fn finish(&self) {
        *lock(&self.shared.stopped) = true;
        self.shared.wake.notify_all();
        if let Some(ticker) = lock(&self.ticker).take() {
            // A panicked ticker has drawn its last frame; finishing goes on without it.
            let _ = ticker.join();
        }
        let mut state = lock(&self.shared.state);
        if state.finished {
            return;
        }
        state.finished = true;
        let State { steps, view, .. } = &mut *state;
        let mut bytes = Vec::new();
        match view {
            View::Plain(printer) => printer.flush(steps, &mut bytes),
            View::Tty { view, size } => {
                bytes = view.redraw(&tty::frame(steps, SystemTime::now(), size.get(), true));
            }
            View::Quiet | View::RawJson => {}
        }
        self.shared.write(state, &bytes);
    }

    /// The last `n` output lines of a step, oldest first (at most the last 100 are kept).
    pub fn last_logs(&self, vertex: &VertexId, n: usize) -> Vec<String> {
        let state = lock(&self.shared.state);
        let Some(step) = state.steps.find(vertex) else { return Vec::new() };
        step.logs.iter().skip(step.logs.len().saturating_sub(n)).cloned().collect()
    }
}

impl Drop for Renderer {
    fn drop(&mut self) {
        self.finish();
    }
}

impl Progress for Renderer {
    fn event(&self, event: Event) {
        let mut state = lock(&self.shared.state);
        let State { steps, view, finished, last_event } = &mut *state;
        let Some(position) = steps.apply(&event, SystemTime::now()) else { return };
        *last_event = Instant::now();
        if *finished {
            return;
        }
        let mut bytes = Vec::new();
        match view {
            View::Plain(printer) => printer.on_event(steps, position, &event, &mut bytes),
            View::RawJson => bytes = rawjson::encode(steps.get(position), &event),
            // The live view draws on its own clock.
            View::Quiet | View::Tty { .. } => {}
        }
        self.shared.write(state, &bytes);
    }
}

impl Shared {
    /// Writes `bytes`, releasing the state lock as soon as the output lock is held.
    fn write(&self, state: MutexGuard<'_, State>, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let mut out = lock(&self.out);
        drop(state);
        let _ = out.write_all(bytes).and_then(|()| out.flush());
    }

    fn run_ticker(&self, period: Duration) {
        let mut stopped = lock(&self.stopped);
        while !*stopped {
            stopped = self.wake.wait_timeout(stopped, period).map_or_else(|e| e.into_inner().0, |(guard, _)| guard);
            if *stopped {
                return;
            }
            drop(stopped);
            self.tick();
            stopped = lock(&self.stopped);
        }
    }

    /// One tick: the next live frame, or held-back plain lines that are now due.
    fn tick(&self) {
        let mut state = lock(&self.state);
        let State { steps, view, finished, last_event } = &mut *state;
        if *finished {
            return;
        }
        let mut bytes = Vec::new();
        match view {
            View::Tty { view, size } => {
                if steps.iter().next().is_some() {
                    bytes = view.redraw(&tty::frame(steps, SystemTime::now(), size.get(), false));
                }
            }
            View::Plain(printer) => {
                if let Some(at) = steps.last_event_at {
                    printer.tick(steps, at + last_event.elapsed(), &mut bytes);
                }
            }
            View::Quiet | View::RawJson => {}
        }
        self.write(state, &bytes);
    }
}

impl SizeSource {
    fn get(self) -> Size {
        match self {
            SizeSource::Fixed(size) => size,
            SizeSource::Stderr => stderr_size().unwrap_or(Size { columns: DEFAULT_COLUMNS, rows: None }),
        }
    }
}

/// The size of the terminal on stderr, if it is one.
fn stderr_size() -> Option<Size> {
    let mut size = libc::winsize { ws_row: 0, ws_col: 0, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCGWINSZ only writes a `winsize` to the pointer, which points at one.
    let rc = unsafe { libc::ioctl(libc::STDERR_FILENO, libc::TIOCGWINSZ, &mut size) };
    (rc == 0 && size.ws_col > 0)
        .then(|| Size { columns: size.ws_col.into(), rows: (size.ws_row > 0).then_some(size.ws_row.into()) })
}

/// Locks `mutex`, even if a thread panicked holding it: progress state stays usable.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
