//! The two halves of a step: kiln's side ([`run`]) prepares the rootfs and the OCI bundle,
//! hands the step to a helper and streams its output; the helper ([`helper_main_if_requested`])
//! is a single-threaded re-execution of kiln that creates, starts, waits for and deletes
//! containers, one step after the other.
//!
//! Why a helper process: the runtime forks, which is unsound from a multi-threaded (tokio)
//! process, and the clean-up must outlive kiln: kiln holds one end of a socket pair, and when
//! it closes (kiln exits, is killed, or cancels the step) the helper kills the running step's
//! pid namespace, deletes the container (cgroup included) and its state, then exits.
//!
//! Helpers are kept per [`Sandbox`] ([`Pool`]): a step takes an idle helper or starts one, and
//! gives it back when the step is over, so a build starts one helper per concurrently running
//! step instead of one per step (the re-exec costs milliseconds). The helper of a cancelled step
//! is not reused: closing its socket is what cancels.
//!
//! The control socket is a `SOCK_SEQPACKET` pair: one JSON message per request, carrying the
//! step's stdin, stdout and stderr as `SCM_RIGHTS`, and one JSON message per reply. File
//! descriptors of the helper: 0 is the control socket, 1 is `/dev/null` (a test harness may
//! print there), 2 is kiln's stderr.

use std::io::IoSlice;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio as ProcStdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use libcontainer::container::Container;
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use libcontainer::workload::default::DefaultExecutor;
use libcontainer::workload::{Executor, ExecutorError, ExecutorValidationError};
use oci_spec::runtime::Spec;
use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, Shutdown, SocketFlags, SocketType,
};
use serde::{Deserialize, Serialize};

use super::rootfs::{create_cwd, create_stubs};
use super::seccomp::{self, Filter};
use super::spec::{SpecInput, build};
use super::{
    CancelToken, Exec, HelperCommand, Network, Outcome, OutputEvent, Runtime, Sandbox, SandboxError, Stdio, Stream,
    cgroup,
};
use crate::user;

/// The environment variable that turns a kiln process into the sandbox helper.
const HELPER_MARKER: &str = "KILN_SANDBOX_HELPER";

/// Longest piece of a line delivered at once (a step printing without newlines stays bounded).
const MAX_LINE: usize = 64 * 1024;

/// Largest control message either side accepts: a request with the largest seccomp program
/// (4096 instructions, hex-encoded) and long paths fits, and so does any reply.
const MAX_MESSAGE: usize = 256 * 1024;

/// Where the compiled seccomp programs are kept, below the state directory: shared by all steps
/// (and kiln processes), so not part of any step's state.
const SECCOMP_CACHE: &str = ".seccomp";

/// What kiln asks the helper to run.
#[derive(Debug, Serialize, Deserialize)]
struct Request {
    id: String,
    /// The bundle: `config.json` and the step-only files.
    bundle: PathBuf,
    /// The runtime's own state root.
    state_root: PathBuf,
    /// `None`: embedded libcontainer.
    runtime: Option<PathBuf>,
    cgroup_path: String,
    network_none: bool,
    memory_limit: Option<u64>,
    /// The embedded runtime's seccomp filter, compiled (hex-encoded BPF); its spec has none.
    seccomp: Option<String>,
}

/// How the container ended, or why it could not run.
#[derive(Debug, Serialize, Deserialize)]
enum Reply {
    Exited(i32),
    Signaled(i32),
    OomKilled(u64),
    Error(String),
}

/// Step ids unique within this kiln process; the pid and time make them unique on the host.
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

fn new_id() -> String {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("kiln-{}-{}-{nanos:08x}", std::process::id(), NEXT_ID.fetch_add(1, Ordering::Relaxed))
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> SandboxError {
    let what = what.into();
    move |source| SandboxError::Io { what, source }
}

/// A helper process and kiln's end of its control socket.
#[derive(Debug)]
struct Helper {
    child: Child,
    control: OwnedFd,
}

impl Drop for Helper {
    /// Closing the socket ends the helper (killing a step it runs); waiting reaps it, after its
    /// clean-up.
    fn drop(&mut self) {
        let _ = rustix::net::shutdown(&self.control, Shutdown::Both);
        if let Err(e) = self.child.wait() {
            tracing::warn!("waiting for the sandbox helper {}: {e}", self.child.id());
        }
    }
}

/// The helpers of one [`Sandbox`] and its clones that are not running a step.
#[derive(Debug)]
pub(super) struct Pool {
    command: HelperCommand,
    idle: Mutex<Vec<Helper>>,
}

impl Pool {
    /// No helper yet: the first step starts one.
    pub(super) fn new(command: HelperCommand) -> Self {
        Pool { command, idle: Mutex::new(Vec::new()) }
    }

    fn take_idle(&self) -> Option<Helper> {
        // The lock guards a plain Vec: a panic elsewhere cannot leave it half-changed.
        self.idle.lock().unwrap_or_else(PoisonError::into_inner).pop()
    }

    fn give_back(&self, helper: Helper) {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner).push(helper);
    }

    fn spawn(&self) -> Result<Helper, SandboxError> {
        let (ours, theirs) =
            rustix::net::socketpair(AddressFamily::UNIX, SocketType::SEQPACKET, SocketFlags::CLOEXEC, None)
                .map_err(|e| io("creating the sandbox control socket")(e.into()))?;
        let child = Command::new(&self.command.program)
            .args(&self.command.args)
            .env(HELPER_MARKER, "1")
            // The runtime logs through `tracing`; if the host binary set up a subscriber before
            // becoming the helper, keep the runtime's chatter (e.g. missing controllers) quiet.
            .env("RUST_LOG", "off")
            .stdin(ProcStdio::from(theirs))
            .stdout(ProcStdio::null())
            .stderr(ProcStdio::inherit())
            .spawn()
            .map_err(io(format!("starting the sandbox helper {}", self.command.program.display())))?;
        Ok(Helper { child, control: ours })
    }
}

/// Removes a step's state if the helper could not (it was killed): runs on every exit path of
/// [`run`], including a panic unwinding through it.
struct StateGuard {
    bundle: PathBuf,
    runtime_state: PathBuf,
    cgroup_path: String,
}

impl Drop for StateGuard {
    fn drop(&mut self) {
        if let Err(e) = cgroup::remove(&self.cgroup_path) {
            tracing::warn!("removing the cgroup {}: {e}", self.cgroup_path);
        }
        for dir in [&self.runtime_state, &self.bundle] {
            if let Err(e) = std::fs::remove_dir_all(dir)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!("removing {}: {e}", dir.display());
            }
        }
    }
}

/// The host's resolv.conf for the step (BuildKit copies it; an absent one gives an empty file).
fn resolv_conf() -> Vec<u8> {
    std::fs::read("/etc/resolv.conf").unwrap_or_default()
}

fn pipe() -> Result<(OwnedFd, OwnedFd), SandboxError> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: fds points to two writable ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io("creating a pipe for the step's output")(std::io::Error::last_os_error()));
    }
    // SAFETY: pipe2 returned two new descriptors that nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Kiln's side of one step.
pub(super) fn run(
    sandbox: &Sandbox,
    exec: &Exec,
    stdio: Stdio<'_>,
    cancel: &CancelToken,
) -> Result<Outcome, SandboxError> {
    let command = exec.command();
    if exec.args.is_empty() {
        return Err(SandboxError::Runtime {
            command,
            runtime: sandbox.runtime_name(),
            message: "no command given".into(),
        });
    }
    let user = user::resolve(&exec.rootfs, &exec.user)
        .map_err(|source| SandboxError::User { command: command.clone(), source })?;
    create_cwd(&exec.rootfs, &exec.cwd)?;
    let stubs = create_stubs(&exec.rootfs, &exec.mounts)?;

    let id = new_id();
    let state_dir = sandbox.state_dir();
    let runtime_state = state_dir.join(match sandbox.runtime() {
        Runtime::Embedded => ".libcontainer",
        Runtime::Oci(_) => ".oci",
    });
    std::fs::create_dir_all(&runtime_state).map_err(io(format!("creating {}", runtime_state.display())))?;
    let bundle = state_dir.join(&id);
    // Root only: config.json holds the step's secret environment entries.
    std::fs::DirBuilder::new().mode(0o700).create(&bundle).map_err(io(format!("creating {}", bundle.display())))?;
    let guard = StateGuard {
        bundle: bundle.clone(),
        runtime_state: runtime_state.join(&id),
        cgroup_path: cgroup::path_of(&id),
    };
    let hosts = format!("127.0.0.1\tlocalhost {0}\n::1\tlocalhost ip6-localhost ip6-loopback\n", exec.hostname);
    for (name, content) in [
        ("hosts", hosts.into_bytes()),
        ("resolv.conf", resolv_conf()),
        ("hostname", format!("{}\n", exec.hostname).into_bytes()),
    ] {
        let path = bundle.join(name);
        std::fs::write(&path, content).map_err(io(format!("writing {}", path.display())))?;
    }
    let mut spec = build(
        exec,
        &SpecInput { user: &user, files_dir: &bundle, provided: &stubs.provided, cgroup_path: &guard.cgroup_path },
    )?;
    // The embedded runtime gets the profile compiled once (libcontainer would compile it in every
    // step's init); runc gets it in the spec.
    let seccomp = match sandbox.runtime() {
        Runtime::Embedded => spec
            .linux_mut()
            .as_mut()
            .and_then(|linux| linux.seccomp_mut().take())
            .map(|profile| seccomp::compiled(&profile, &state_dir.join(SECCOMP_CACHE)))
            .transpose()?,
        Runtime::Oci(_) => None,
    };
    let config = bundle.join("config.json");
    spec.save(&config).map_err(|e| SandboxError::Io {
        what: format!("writing {}", config.display()),
        source: std::io::Error::other(e),
    })?;

    let request = Request {
        id,
        bundle,
        state_root: runtime_state,
        runtime: match sandbox.runtime() {
            Runtime::Embedded => None,
            Runtime::Oci(path) => Some(path.clone()),
        },
        cgroup_path: guard.cgroup_path.clone(),
        network_none: exec.network == Network::None,
        memory_limit: exec.limits.memory,
        seccomp: seccomp.map(|program| hex::encode(&*program)),
    };
    let reply = drive_helper(sandbox, &request, stdio, cancel)?;
    drop(guard);
    drop(stubs);
    let runtime = sandbox.runtime_name();
    match reply {
        _ if cancel.is_cancelled() => Err(SandboxError::Cancelled { command }),
        Some(Reply::Exited(code)) => Ok(Outcome::Exited(code)),
        Some(Reply::Signaled(signal)) => Ok(Outcome::Signaled(signal)),
        Some(Reply::OomKilled(limit)) => Ok(Outcome::OomKilled { limit }),
        Some(Reply::Error(message)) => Err(SandboxError::Runtime { command, runtime, message }),
        None => Err(SandboxError::Runtime { command, runtime, message: "the sandbox helper died".into() }),
    }
}

/// Splits a stream into lines for the callback.
struct LineSplitter {
    stream: Stream,
    pending: Vec<u8>,
}

impl LineSplitter {
    fn feed(&mut self, data: &[u8], sink: &mut dyn FnMut(OutputEvent)) {
        self.pending.extend_from_slice(data);
        while let Some(pos) =
            self.pending.iter().position(|&b| b == b'\n').or((self.pending.len() >= MAX_LINE).then_some(MAX_LINE - 1))
        {
            let rest = self.pending.split_off(pos + 1);
            let line = std::mem::replace(&mut self.pending, rest);
            sink(OutputEvent { stream: self.stream, line });
        }
    }

    fn finish(&mut self, sink: &mut dyn FnMut(OutputEvent)) {
        if !self.pending.is_empty() {
            sink(OutputEvent { stream: self.stream, line: std::mem::take(&mut self.pending) });
        }
    }
}

/// The step's stdin/stdout/stderr descriptors, the pipes kiln reads its output from, and where
/// that output goes.
type StdioPlan<'a> =
    ([OwnedFd; 3], Vec<(std::fs::File, LineSplitter)>, Option<&'a mut (dyn FnMut(OutputEvent) + Send)>);

/// Sends `request` with the step's stdio to `helper`; fails if the helper is gone.
fn send_request(helper: &Helper, message: &[u8], fds: &[OwnedFd; 3]) -> std::io::Result<()> {
    let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(|f| f.as_fd()).collect();
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(3))];
    let mut ancillary = SendAncillaryBuffer::new(&mut space);
    if !ancillary.push(SendAncillaryMessage::ScmRights(&borrowed)) {
        return Err(std::io::Error::other("no room for the step's descriptors"));
    }
    // NOSIGNAL: a helper that died must give EPIPE, not SIGPIPE.
    let sent = rustix::net::sendmsg(&helper.control, &[IoSlice::new(message)], &mut ancillary, SendFlags::NOSIGNAL)?;
    if sent != message.len() {
        return Err(std::io::Error::other("the request was cut short"));
    }
    Ok(())
}

/// Hands `request` to a helper of the sandbox and pumps output until the step is over; the
/// helper's reply (`None` if it died without one).
fn drive_helper(
    sandbox: &Sandbox,
    request: &Request,
    stdio: Stdio<'_>,
    cancel: &CancelToken,
) -> Result<Option<Reply>, SandboxError> {
    let dup = |fd: RawFd, what: &str| -> Result<OwnedFd, SandboxError> {
        // SAFETY: fd is one of this process's standard descriptors, open for its lifetime.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        borrowed.try_clone_to_owned().map_err(io(format!("duplicating {what}")))
    };
    let (child_fds, mut readers, mut sink): StdioPlan<'_> = match stdio {
        Stdio::Inherit => ([dup(0, "stdin")?, dup(1, "stdout")?, dup(2, "stderr")?], Vec::new(), None),
        Stdio::Capture(callback) => {
            let null = std::fs::File::open("/dev/null").map_err(io("opening /dev/null"))?;
            let (out_r, out_w) = pipe()?;
            let (err_r, err_w) = pipe()?;
            let readers = vec![
                (std::fs::File::from(out_r), LineSplitter { stream: Stream::Stdout, pending: Vec::new() }),
                (std::fs::File::from(err_r), LineSplitter { stream: Stream::Stderr, pending: Vec::new() }),
            ];
            ([null.into(), out_w, err_w], readers, Some(callback))
        }
    };
    let message = serde_json::to_vec(request).map_err(|e| io("encoding the sandbox request")(e.into()))?;
    // An idle helper may have died since its last step (killed by someone): then it is reaped
    // and the next one, or a new one, gets the step.
    let helper = loop {
        match sandbox.helpers.take_idle() {
            Some(helper) => {
                if send_request(&helper, &message, &child_fds).is_ok() {
                    break helper;
                }
            }
            None => {
                let helper = sandbox.helpers.spawn()?;
                send_request(&helper, &message, &child_fds).map_err(io("sending the step to the sandbox helper"))?;
                break helper;
            }
        }
    };
    // The helper has its own copies: ours would keep the output pipes open after the step.
    drop(child_fds);

    let mut reply = None;
    let mut control_open = true;
    let mut cancelled = false;
    let mut buf = vec![0u8; MAX_MESSAGE];
    let mut noop = |_: OutputEvent| {};
    let sink: &mut dyn FnMut(OutputEvent) = match sink.as_mut() {
        Some(s) => *s,
        None => &mut noop,
    };
    let mut open = vec![true; readers.len()];
    loop {
        if control_open && cancel.is_cancelled() {
            // Closing our end is the helper's signal to kill the step.
            let _ = rustix::net::shutdown(&helper.control, Shutdown::Both);
            control_open = false;
            cancelled = true;
        }
        if !control_open && !open.iter().any(|o| *o) {
            break;
        }
        let mut pfds: Vec<libc::pollfd> = Vec::new();
        if control_open {
            pfds.push(libc::pollfd { fd: helper.control.as_raw_fd(), events: libc::POLLIN, revents: 0 });
        }
        for (i, (file, _)) in readers.iter().enumerate() {
            if open[i] {
                pfds.push(libc::pollfd { fd: file.as_raw_fd(), events: libc::POLLIN, revents: 0 });
            }
        }
        // Every event wakes the poll at once (the reply, output, the pipes closing); the timeout
        // only bounds how late a cancel is noticed.
        // SAFETY: pfds is a valid array of pollfd of the given length.
        let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, 100) };
        if n < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(io("waiting for the step")(err));
        }
        for p in pfds.iter().filter(|p| p.revents != 0) {
            if control_open && p.fd == helper.control.as_raw_fd() {
                // One message is the whole reply; nothing (0 bytes) means the helper is gone.
                if let Ok((k, len)) = rustix::net::recv(&helper.control, &mut buf[..], RecvFlags::TRUNC)
                    && k == len
                {
                    reply = serde_json::from_slice(&buf[..k]).ok();
                }
                control_open = false;
                continue;
            }
            if let Some(i) = readers.iter().position(|(f, _)| f.as_raw_fd() == p.fd) {
                let (file, splitter) = &mut readers[i];
                match std::io::Read::read(file, &mut buf) {
                    Ok(0) | Err(_) => {
                        splitter.finish(sink);
                        open[i] = false;
                    }
                    Ok(k) => splitter.feed(&buf[..k], sink),
                }
            }
        }
    }
    if reply.is_some() && !cancelled {
        sandbox.helpers.give_back(helper);
    }
    // Otherwise dropping `helper` waits for it: it has cleaned up when it exits.
    Ok(reply)
}

/// If this process was started as the sandbox helper, runs the helper and exits; otherwise
/// returns at once. Call it first thing in `main` of every binary that runs steps (kiln, and
/// test binaries that use [`super::HelperCommand`] pointing at themselves).
pub fn helper_main_if_requested() {
    if std::env::var_os(HELPER_MARKER).is_none() {
        return;
    }
    // SAFETY: fd 0 is the control socket kiln passed; nothing else in this process owns it.
    let control = unsafe { OwnedFd::from_raw_fd(0) };
    let code = match helper(&control) {
        Ok(()) => 0,
        Err(message) => {
            eprintln!("kiln sandbox helper: {message}");
            1
        }
    };
    std::process::exit(code);
}

extern "C" fn ignore(_: libc::c_int) {}

/// Terminal signals must not kill the helper before it cleans up; a handler (unlike SIG_IGN)
/// is reset by exec, so the step still gets default signal behaviour.
fn survive_terminal_signals() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT, libc::SIGPIPE] {
        // SAFETY: a zeroed sigaction with a valid handler and an empty mask is well-formed.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = ignore as extern "C" fn(libc::c_int) as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

/// The next request and the step's stdin, stdout and stderr; `None` when kiln closed the socket.
fn receive(control: &OwnedFd, buf: &mut [u8]) -> Result<Option<(Request, [OwnedFd; 3])>, String> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(3))];
    let mut ancillary = RecvAncillaryBuffer::new(&mut space);
    let received = loop {
        match rustix::net::recvmsg(
            control,
            &mut [std::io::IoSliceMut::new(buf)],
            &mut ancillary,
            RecvFlags::CMSG_CLOEXEC,
        ) {
            Err(rustix::io::Errno::INTR) => continue, // a terminal signal we survive
            other => break other.map_err(|e| format!("reading a request: {e}"))?,
        }
    };
    let mut fds: Vec<OwnedFd> = Vec::new();
    for message in ancillary.drain() {
        if let RecvAncillaryMessage::ScmRights(received_fds) = message {
            fds.extend(received_fds);
        }
    }
    if received.bytes == 0 {
        return Ok(None);
    }
    if received.flags.intersects(ReturnFlags::TRUNC | ReturnFlags::CTRUNC) {
        return Err("a request did not fit the buffer".into());
    }
    let request = serde_json::from_slice(&buf[..received.bytes]).map_err(|e| format!("decoding a request: {e}"))?;
    let fds: [OwnedFd; 3] =
        fds.try_into().map_err(|fds: Vec<_>| format!("a request came with {} descriptors, not 3", fds.len()))?;
    Ok(Some((request, fds)))
}

/// Reaps whatever child is left (a runtime's process re-parented to us, as subreaper): between
/// steps the helper has no child of its own.
fn reap_strays() {
    // SAFETY: waitpid with a null status pointer and WNOHANG has no memory-safety preconditions.
    while unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) } > 0 {}
}

/// The helper proper: steps one after the other until kiln closes the socket.
fn helper(control: &OwnedFd) -> Result<(), String> {
    survive_terminal_signals();
    let mut buf = vec![0u8; MAX_MESSAGE];
    while let Some((request, fds)) = receive(control, &mut buf)? {
        let reply = match &request.runtime {
            None => run_embedded(&request, fds, control),
            Some(binary) => run_oci_binary(&request, binary, fds, control),
        };
        if let Err(e) = std::fs::remove_dir_all(&request.bundle) {
            eprintln!("kiln sandbox helper: removing {}: {e}", request.bundle.display());
        }
        reap_strays();
        let out = serde_json::to_vec(&reply.unwrap_or_else(Reply::Error)).map_err(|e| e.to_string())?;
        // kiln may be gone (then the step was killed, and we are done): the next receive says so.
        let _ = rustix::net::send(control, &out, SendFlags::NOSIGNAL);
    }
    Ok(())
}

/// The workload of the embedded runtime: the default executor, plus `PR_SET_PDEATHSIG` so the
/// step dies with the helper even if the helper is SIGKILLed, and the step's precompiled
/// seccomp filter.
#[derive(Clone)]
struct StepExecutor {
    filter: Option<Filter>,
}

impl Executor for StepExecutor {
    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        // SAFETY: prctl(PR_SET_PDEATHSIG) has no memory-safety preconditions.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
        // libcontainer's init calls this last: after no_new_privs (so an unprivileged load is
        // allowed), the capability drop, the user switch and the start signal. Only the PATH
        // lookup and execve run under the filter before the command does, as with runc.
        if let Some(filter) = &self.filter
            && let Err(e) = filter.load()
        {
            // Past the start signal an error only ends the init: say why on the step's stderr.
            let message = format!("kiln: loading the step's seccomp filter: {e}");
            eprintln!("{message}");
            return Err(ExecutorError::Other(message));
        }
        DefaultExecutor {}.exec(spec)
    }

    fn validate(&self, spec: &Spec) -> Result<(), ExecutorValidationError> {
        DefaultExecutor {}.validate(spec)
    }
}

fn run_embedded(request: &Request, fds: [OwnedFd; 3], control: &OwnedFd) -> Result<Reply, String> {
    let [stdin, stdout, stderr] = fds;
    let filter = match &request.seccomp {
        Some(program) => {
            let bytes = hex::decode(program).map_err(|e| format!("decoding the seccomp program: {e}"))?;
            Some(Filter::from_bytes(&bytes)?)
        }
        None => None,
    };
    let built = ContainerBuilder::new(request.id.clone(), SyscallType::default())
        .with_root_path(&request.state_root)
        .map_err(|e| e.to_string())?
        .with_executor(StepExecutor { filter })
        .with_stdin(stdin)
        .with_stdout(stdout)
        .with_stderr(stderr)
        .as_init(&request.bundle)
        .with_systemd(false)
        .with_detach(false)
        .build();
    let mut container = match built {
        Ok(c) => c,
        Err(e) => {
            // A failed create may leave its state and cgroup; delete what exists.
            if let Ok(mut c) = Container::load(request.state_root.join(&request.id)) {
                let _ = c.delete(true);
            }
            let _ = cgroup::remove(&request.cgroup_path);
            return Err(e.to_string());
        }
    };
    let result = (|| {
        let pid = container.pid().ok_or("the runtime reported no pid")?.as_raw();
        if request.network_none {
            loopback_up(pid).map_err(|e| format!("bringing up lo in the step's network namespace: {e}"))?;
        }
        container.start().map_err(|e| e.to_string())?;
        wait_step(pid, control, request)
    })();
    if let Err(e) = container.delete(true) {
        eprintln!("kiln sandbox helper: deleting container {}: {e}", request.id);
        let _ = cgroup::remove(&request.cgroup_path);
    }
    result
}

/// Runs `binary` (runc or compatible) with the bundle: `create`, `start`, wait, `delete`.
fn run_oci_binary(request: &Request, binary: &Path, fds: [OwnedFd; 3], control: &OwnedFd) -> Result<Reply, String> {
    // The step's init is re-parented to us when `create` exits, so we can wait for it.
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER) has no memory-safety preconditions.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) };
    // The runtime's own messages go to a log: its stdio is the step's.
    let log = request.bundle.join("runtime.log");
    let oci = |args: &[&std::ffi::OsStr]| {
        let mut c = Command::new(binary);
        c.arg("--root").arg(&request.state_root).arg("--log").arg(&log).arg("--log-format").arg("json").args(args);
        c
    };
    let pid_file = request.bundle.join("pid");
    let [stdin, stdout, stderr] = fds;
    let create_args = [
        "create".as_ref(),
        "--bundle".as_ref(),
        request.bundle.as_os_str(),
        "--pid-file".as_ref(),
        pid_file.as_os_str(),
        request.id.as_ref(),
    ];
    let created = oci(&create_args)
        .stdin(stdin)
        .stdout(stdout)
        .stderr(stderr)
        .status()
        .map_err(|e| format!("running {}: {e}", binary.display()))?;
    let delete = || {
        let _ = oci(&["delete".as_ref(), "--force".as_ref(), request.id.as_ref()])
            .stdout(ProcStdio::null())
            .stderr(ProcStdio::null())
            .status();
        let _ = cgroup::remove(&request.cgroup_path);
    };
    if !created.success() {
        delete();
        return Err(format!("{} create: {}", binary.display(), runtime_errors(&log)));
    }
    let result = (|| {
        let pid: i32 = std::fs::read_to_string(&pid_file)
            .map_err(|e| format!("reading {}: {e}", pid_file.display()))?
            .trim()
            .parse()
            .map_err(|e| format!("{}: {e}", pid_file.display()))?;
        if request.network_none {
            loopback_up(pid).map_err(|e| format!("bringing up lo in the step's network namespace: {e}"))?;
        }
        let started = oci(&["start".as_ref(), request.id.as_ref()])
            .stdout(ProcStdio::null())
            .stderr(ProcStdio::null())
            .status()
            .map_err(|e| format!("running {} start: {e}", binary.display()))?;
        if !started.success() {
            return Err(format!("{} start: {}", binary.display(), runtime_errors(&log)));
        }
        wait_step(pid, control, request)
    })();
    delete();
    result
}

/// The error messages of an OCI runtime's JSON log (runc's `--log-format json`).
fn runtime_errors(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let errors: Vec<String> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["level"] == "error" || v["level"] == "fatal")
        .filter_map(|v| v["msg"].as_str().map(str::to_owned))
        .collect();
    if errors.is_empty() { "failed without an error message".to_owned() } else { errors.join("; ") }
}

/// Waits for the step's init `pid` to exit, or for kiln to go away (then kills it first).
fn wait_step(pid: i32, control: &OwnedFd, request: &Request) -> Result<Reply, String> {
    // SAFETY: pidfd_open has no memory-safety preconditions.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as RawFd;
    if pidfd < 0 {
        return Err(format!("pidfd_open({pid}): {}", std::io::Error::last_os_error()));
    }
    // SAFETY: pidfd_open returned a new descriptor that nothing else owns.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    loop {
        let mut pfds = [
            libc::pollfd { fd: pidfd.as_raw_fd(), events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: control.as_raw_fd(), events: libc::POLLIN, revents: 0 },
        ];
        // SAFETY: pfds is a valid array of two pollfd.
        let n = unsafe { libc::poll(pfds.as_mut_ptr(), 2, -1) };
        if n < 0 {
            continue; // EINTR from a terminal signal we survive
        }
        if pfds[0].revents != 0 {
            break;
        }
        if pfds[1].revents != 0 {
            let mut byte = [0u8; 1];
            // kiln never writes during a step: readable means closed.
            if matches!(rustix::net::recv(control, &mut byte[..], RecvFlags::empty()), Ok((0, _)) | Err(_)) {
                // Killing the pid namespace's init kills every process in it.
                // SAFETY: kill(2) has no memory-safety preconditions.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                break;
            }
        }
    }
    let mut status = 0;
    // SAFETY: status is a valid int to write to.
    if unsafe { libc::waitpid(pid, &mut status, 0) } < 0 {
        return Err(format!("waiting for the step (pid {pid}): {}", std::io::Error::last_os_error()));
    }
    let oom = request.memory_limit.filter(|_| cgroup::oom_kills(&request.cgroup_path) > 0);
    Ok(match (libc::WIFEXITED(status), oom) {
        (true, _) if libc::WEXITSTATUS(status) == 0 => Reply::Exited(0),
        (_, Some(limit)) => Reply::OomKilled(limit),
        (true, None) => Reply::Exited(libc::WEXITSTATUS(status)),
        (false, None) => Reply::Signaled(libc::WTERMSIG(status)),
    })
}

/// Brings `lo` up in the network namespace of `pid` (runc does this for a new namespace; the
/// embedded runtime does not), then returns to the helper's own namespace.
fn loopback_up(pid: i32) -> std::io::Result<()> {
    let own = std::fs::File::open("/proc/self/ns/net")?;
    let target = std::fs::File::open(format!("/proc/{pid}/ns/net"))?;
    let check = |r: libc::c_int| if r < 0 { Err(std::io::Error::last_os_error()) } else { Ok(r) };
    // SAFETY: setns on valid namespace descriptors; the helper is single-threaded.
    check(unsafe { libc::setns(target.as_raw_fd(), libc::CLONE_NEWNET) })?;
    let result = (|| {
        // SAFETY: socket(2) has no memory-safety preconditions.
        let sock = check(unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) })?;
        // SAFETY: sock is a new descriptor nothing else owns.
        let sock = unsafe { OwnedFd::from_raw_fd(sock) };
        // SAFETY: a zeroed ifreq is valid; the name fits in IFNAMSIZ.
        let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
        for (dst, src) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
            *dst = *src as libc::c_char;
        }
        // SAFETY: ioctls on a socket with a valid ifreq.
        unsafe {
            check(libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr))?;
            ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            check(libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &ifr))?;
        }
        Ok(())
    })();
    // SAFETY: as above, back to our own namespace.
    check(unsafe { libc::setns(own.as_raw_fd(), libc::CLONE_NEWNET) })?;
    result
}
