//! The sandbox a RUN step (and `kiln run`) executes in.
//!
//! What a step gets, as BuildKit gives it: new mount, pid, uts and ipc namespaces; the host's
//! network or, with [`Network::None`], a new network namespace holding only `lo`; the hostname
//! [`DEFAULT_HOSTNAME`]; `/proc`, a minimal `/dev`, a read-only `/sys`; `/etc/hosts`,
//! `/etc/resolv.conf` and `/etc/hostname` bind-mounted read-only for the step and never left in
//! the rootfs ([`STEP_ONLY_PATHS`]); its own mounts ([`StepMount`]: `RUN --mount`, heredoc
//! scripts), whose missing mount points are made for the step and removed after it; Docker's
//! default capabilities, seccomp profile, masked and read-only paths; `no_new_privs`; memory,
//! pids and cpu limits in a cgroup (v1 or v2).
//!
//! One OCI runtime spec describes all of it ([`spec`]), and either runtime gets that spec: the
//! embedded one (youki's `libcontainer`, the default) or any OCI runtime binary
//! ([`Runtime::Oci`], e.g. runc). The embedded runtime gets the seccomp profile compiled by kiln
//! (once, not in every step's init) instead of in the spec ([`seccomp`]). Both run from small
//! single-threaded helper processes (the kiln binary re-executed, see
//! [`helper_main_if_requested`]), kept by the [`Sandbox`] across steps: a helper survives kiln,
//! so when kiln is killed (Ctrl-C, SIGKILL, a panic) it sees its control socket close, kills the
//! step's pid namespace and removes the cgroup and the step's state. The step's init also
//! carries `PR_SET_PDEATHSIG`, so killing the helper itself takes the step with it.

mod cgroup;
mod helper;
mod rootfs;
mod seccomp;
mod spec;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

pub use helper::helper_main_if_requested;
pub use rootfs::{STEP_ONLY_PATHS, is_step_only_path};

use crate::user::UserError;

/// The hostname a step sees (BuildKit uses `buildkitsandbox`).
pub const DEFAULT_HOSTNAME: &str = "kilnsandbox";

/// The default `PATH` when the image sets none (BuildKit's and Docker's default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Where the runtime state of running steps lives (a tmpfs, so a reboot clears it).
pub const DEFAULT_STATE_DIR: &str = "/run/kiln/sandbox";

/// The network a step sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Network {
    /// The host's network namespace (BuildKit's default for RUN).
    #[default]
    Host,
    /// A new network namespace with only the loopback interface.
    None,
}

/// Resource limits of a step, applied through its cgroup.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Limits {
    /// Memory limit in bytes (swap is not allowed beyond it).
    pub memory: Option<u64>,
    /// Maximum number of processes and threads.
    pub pids: Option<i64>,
    /// CPU quota in CPUs (1.5 = one and a half CPUs).
    pub cpus: Option<f64>,
    /// Relative CPU weight (cgroup v1 shares, 1024 = default).
    pub cpu_shares: Option<u64>,
}

/// One process to run in a sandbox. Its `Debug` output shows [`Exec::secret_env`] by name only.
#[derive(Clone)]
pub struct Exec {
    /// The root filesystem (a mounted snapshot); the step may write to it.
    pub rootfs: PathBuf,
    /// The command line; `args[0]` is looked up in the `PATH` of `env`.
    pub args: Vec<String>,
    /// `KEY=value` pairs; `PATH` defaults to [`DEFAULT_PATH`], `HOME` to the user's home.
    pub env: Vec<String>,
    /// Absolute working directory, created (owned by root, 0755) if missing.
    pub cwd: String,
    /// The `USER` value (`name`, `uid`, `name:group`, `uid:gid`); empty = root.
    pub user: String,
    /// The network.
    pub network: Network,
    /// The hostname ([`DEFAULT_HOSTNAME`] unless set).
    pub hostname: String,
    /// Resource limits.
    pub limits: Limits,
    /// Mounts over the rootfs for the step's duration (`RUN --mount`, heredoc scripts), in
    /// order: a mount below another must come after it. A mount point the image lacks (and its
    /// missing parents) is created before the step and removed after it, so it never reaches
    /// the step's diff; below `/dev` (the step's own tmpfs) or below an earlier mount the
    /// runtime makes it on what is mounted there. One of the wrong type in the image (a file
    /// where a directory or tmpfs goes, a directory where a file or socket goes) is an error.
    pub mounts: Vec<StepMount>,
    /// Extra environment entries (`KEY=value`), after [`Exec::env`], kept out of
    /// [`Exec::command`], of `Debug` and of every message: secrets exposed as variables.
    pub secret_env: Vec<String>,
}

impl std::fmt::Debug for Exec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Only the names of secret variables: a logged Exec must not leak their values.
        let secret_names: Vec<&str> =
            self.secret_env.iter().map(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k)).collect();
        f.debug_struct("Exec")
            .field("rootfs", &self.rootfs)
            .field("args", &self.args)
            .field("env", &self.env)
            .field("cwd", &self.cwd)
            .field("user", &self.user)
            .field("network", &self.network)
            .field("hostname", &self.hostname)
            .field("limits", &self.limits)
            .field("mounts", &self.mounts)
            .field("secret_env", &secret_names)
            .finish()
    }
}

/// A mount a step gets besides its rootfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepMount {
    /// A host file or directory bind-mounted at `dest`.
    Bind {
        /// The host path (a directory, a regular file or a unix socket).
        source: PathBuf,
        /// The absolute mount point inside the container.
        dest: String,
        /// Mounted read-only.
        readonly: bool,
    },
    /// A fresh tmpfs at `dest`.
    Tmpfs {
        /// The absolute mount point inside the container.
        dest: String,
        /// Its size limit in bytes (the kernel's default, half the RAM, when `None`).
        size: Option<u64>,
    },
}

impl Exec {
    /// A step running `args` as root in `/` of `rootfs` on the host network, no limits.
    pub fn new(rootfs: impl Into<PathBuf>, args: Vec<String>) -> Self {
        Exec {
            rootfs: rootfs.into(),
            args,
            env: Vec::new(),
            cwd: "/".to_owned(),
            user: String::new(),
            network: Network::Host,
            hostname: DEFAULT_HOSTNAME.to_owned(),
            limits: Limits::default(),
            mounts: Vec::new(),
            secret_env: Vec::new(),
        }
    }

    /// The command as users wrote it, for messages.
    pub fn command(&self) -> String {
        self.args.join(" ")
    }
}

/// Which OCI runtime starts the container.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Runtime {
    /// youki's libcontainer, linked into kiln (no external binary needed).
    #[default]
    Embedded,
    /// An OCI runtime binary (`runc`, a path), driven with `create`/`start`/`delete`.
    Oci(PathBuf),
}

impl Runtime {
    /// `--runtime` values: `embedded` (the default) or an OCI runtime binary name or path.
    pub fn parse(value: &str) -> Runtime {
        match value {
            "" | "embedded" | "libcontainer" => Runtime::Embedded,
            other => Runtime::Oci(PathBuf::from(other)),
        }
    }
}

/// The program kiln re-executes as the sandbox helper.
#[derive(Debug, Clone)]
pub struct HelperCommand {
    /// The executable (kiln itself by default).
    pub program: PathBuf,
    /// Arguments put before nothing else; the helper is recognised by an environment marker.
    pub args: Vec<OsString>,
}

impl HelperCommand {
    /// The running executable itself; its `main` must call [`helper_main_if_requested`] first.
    pub fn current_exe() -> Result<Self, SandboxError> {
        let program = std::env::current_exe()
            .map_err(|source| SandboxError::Io { what: "finding the kiln executable".into(), source })?;
        Ok(HelperCommand { program, args: Vec::new() })
    }
}

/// Where a line of output came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// The step's standard output.
    Stdout,
    /// The step's standard error.
    Stderr,
}

/// One line of a step's output (with its newline, if it had one; long lines come in pieces).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputEvent {
    /// Which stream.
    pub stream: Stream,
    /// The bytes.
    pub line: Vec<u8>,
}

/// What the step's standard streams are connected to.
pub enum Stdio<'a> {
    /// stdin is `/dev/null`; stdout and stderr are delivered line by line to the callback.
    Capture(&'a mut (dyn FnMut(OutputEvent) + Send)),
    /// The step shares kiln's own stdin, stdout and stderr (`kiln run`).
    Inherit,
}

/// Set to stop a running step: its whole process tree is killed and cleaned up.
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    /// A token that is not cancelled.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks the step to stop.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether [`CancelToken::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// How a step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The process exited with this code.
    Exited(i32),
    /// The process was killed by this signal (not by the OOM killer).
    Signaled(i32),
    /// The kernel's OOM killer killed the step: it reached its memory limit.
    OomKilled {
        /// The memory limit in bytes.
        limit: u64,
    },
}

impl Outcome {
    /// The exit code a shell would report (128 + signal for signals, 137 for OOM kills).
    pub fn code(&self) -> i32 {
        match *self {
            Outcome::Exited(code) => code,
            Outcome::Signaled(sig) => 128 + sig,
            Outcome::OomKilled { .. } => 137,
        }
    }

    /// `Ok` for exit code 0; otherwise the error naming the command and how it ended.
    pub fn check(self, exec: &Exec) -> Result<(), SandboxError> {
        let command = exec.command();
        match self {
            Outcome::Exited(0) => Ok(()),
            Outcome::Exited(code) => Err(SandboxError::ExitCode { command, code }),
            Outcome::Signaled(signal) => Err(SandboxError::Signaled { command, signal }),
            Outcome::OomKilled { limit } => Err(SandboxError::OomKilled { command, limit }),
        }
    }
}

/// Why a step could not run or did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The command ran and exited non-zero.
    #[error("process \"{command}\" did not complete successfully: exit code: {code}")]
    ExitCode {
        /// The command line.
        command: String,
        /// Its exit code.
        code: i32,
    },
    /// The command was killed by a signal.
    #[error("process \"{command}\" was killed by signal {signal}")]
    Signaled {
        /// The command line.
        command: String,
        /// The signal number.
        signal: i32,
    },
    /// The OOM killer ended the command at its memory limit.
    #[error("process \"{command}\" was killed: out of memory (memory limit {limit} bytes)")]
    OomKilled {
        /// The command line.
        command: String,
        /// The memory limit in bytes.
        limit: u64,
    },
    /// The step was cancelled.
    #[error("process \"{command}\" was cancelled")]
    Cancelled {
        /// The command line.
        command: String,
    },
    /// `USER` could not be resolved in the rootfs.
    #[error("resolving USER for \"{command}\": {source}")]
    User {
        /// The command line.
        command: String,
        /// Why.
        #[source]
        source: UserError,
    },
    /// The runtime could not create or start the container.
    #[error("starting \"{command}\" in the sandbox ({runtime}): {message}")]
    Runtime {
        /// The command line.
        command: String,
        /// `embedded` or the runtime binary.
        runtime: String,
        /// The runtime's own message.
        message: String,
    },
    /// An OS operation of the sandbox itself failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, naming the path.
        what: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Runs steps: one runtime, one state directory, one helper program. Clones share the helper
/// processes, which are kept between steps and end when the last clone is dropped.
#[derive(Debug, Clone)]
pub struct Sandbox {
    runtime: Runtime,
    state_dir: PathBuf,
    helpers: Arc<helper::Pool>,
}

impl Sandbox {
    /// A sandbox using `runtime`, the helper `helper` and state under [`DEFAULT_STATE_DIR`].
    pub fn new(runtime: Runtime, helper: HelperCommand) -> Self {
        Sandbox { runtime, state_dir: PathBuf::from(DEFAULT_STATE_DIR), helpers: Arc::new(helper::Pool::new(helper)) }
    }

    /// Keeps runtime state under `dir` instead of [`DEFAULT_STATE_DIR`].
    pub fn with_state_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.state_dir = dir.into();
        self
    }

    /// The runtime in use.
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// Runs `exec` to its end and says how it ended. Blocks: call it from a plain thread (or
    /// `spawn_blocking`). When `cancel` is set, or kiln dies, the step's processes are killed.
    pub fn run(&self, exec: &Exec, stdio: Stdio<'_>, cancel: &CancelToken) -> Result<Outcome, SandboxError> {
        helper::run(self, exec, stdio, cancel)
    }

    /// [`Sandbox::run`], with anything but exit code 0 as an error naming the command.
    pub fn run_checked(&self, exec: &Exec, stdio: Stdio<'_>, cancel: &CancelToken) -> Result<(), SandboxError> {
        self.run(exec, stdio, cancel)?.check(exec)
    }

    fn runtime_name(&self) -> String {
        match &self.runtime {
            Runtime::Embedded => "embedded libcontainer".to_owned(),
            Runtime::Oci(path) => path.display().to_string(),
        }
    }

    fn state_dir(&self) -> &Path {
        &self.state_dir
    }
}
