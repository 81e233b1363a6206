//! The agent socket a `RUN --mount=type=ssh` step sees: a proxy of its own, as BuildKit gives
//! (`session/sshforward/ssh.go`, `MountSSHSocket`), never the host agent's socket itself.
//!
//! The proxy listens on `ssh_auth_sock` in a private directory, the socket owned and moded
//! as the mount asks, so the step sees that owner and mode, and a `chmod` or `chown` in the step
//! changes the proxy's socket, not the host's. One thread accepts; each connection gets a new
//! connection to the real agent and two threads copying bytes, one each way. Dropping the
//! [`SshProxy`] stops it: open connections are shut down, every thread is joined and the
//! directory is removed.

use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::{PermissionsExt, chown};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use rustix::fs::{Mode, OFlags};

/// The socket's name in its directory (BuildKit's).
const SOCKET_NAME: &str = "ssh_auth_sock";

/// Why a proxy could not start.
#[derive(Debug, thiserror::Error)]
#[error("ssh agent proxy at {}: {what}: {source}", .path.display())]
pub struct SshProxyError {
    /// The proxy's socket.
    path: PathBuf,
    /// What was being done.
    what: &'static str,
    /// The OS error.
    #[source]
    source: io::Error,
}

/// A listening proxy socket forwarding to an agent; it serves until dropped.
pub struct SshProxy {
    socket: PathBuf,
    /// Dropped to tell the accept thread to stop (its peer then reads end of file).
    stop: Option<UnixStream>,
    thread: Option<JoinHandle<()>>,
    /// Removed on drop, after the thread is joined.
    _dir: tempfile::TempDir,
}

impl SshProxy {
    /// Listens in `dir` (a new private directory, which the proxy owns from now on) with a
    /// socket owned by `uid`:`gid` with mode `mode`, forwarding every connection to `agent`.
    pub fn start(dir: tempfile::TempDir, agent: &Path, uid: u32, gid: u32, mode: u32) -> Result<Self, SshProxyError> {
        let socket = dir.path().join(SOCKET_NAME);
        let fail = |what| {
            let path = socket.clone();
            move |source| SshProxyError { path, what, source }
        };
        // Others may pass through but never list it, as for secrets.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711))
            .map_err(fail("setting the directory's mode"))?;
        // A socket path must fit in 108 bytes and the store root may be long: bind through a
        // descriptor of the directory, whose /proc name is always short.
        let dir_fd = rustix::fs::open(dir.path(), OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
            .map_err(|e| fail("opening the directory")(e.into()))?;
        let short = format!("/proc/self/fd/{}/{SOCKET_NAME}", dir_fd.as_raw_fd());
        let listener = UnixListener::bind(&short).map_err(fail("listening"))?;
        drop(dir_fd);
        chown(&socket, Some(uid), Some(gid)).map_err(fail("changing the owner"))?;
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(mode)).map_err(fail("changing the mode"))?;
        // Accepting only once poll says so; a client gone in between must not block the loop.
        listener.set_nonblocking(true).map_err(fail("setting up the listener"))?;
        let (stop, stopped) = UnixStream::pair().map_err(fail("creating the stop signal"))?;
        let agent = agent.to_owned();
        let thread = std::thread::Builder::new()
            .name("kiln-ssh-proxy".to_owned())
            .spawn(move || serve(&listener, &stopped, &agent))
            .map_err(fail("starting the accept thread"))?;
        Ok(SshProxy { socket, stop: Some(stop), thread: Some(thread), _dir: dir })
    }

    /// The proxy's socket on the host, to bind into the step.
    pub fn socket(&self) -> &Path {
        &self.socket
    }
}

impl Drop for SshProxy {
    fn drop(&mut self) {
        drop(self.stop.take());
        if self.thread.take().is_some_and(|thread| thread.join().is_err()) {
            tracing::warn!("the ssh agent proxy at {} panicked", self.socket.display());
        }
    }
}

/// One client of the proxy and its connection to the agent.
struct Connection {
    client: UnixStream,
    agent: UnixStream,
    copies: [JoinHandle<()>; 2],
}

impl Connection {
    /// Connects `client` to the agent at `agent` and starts copying both ways.
    fn open(client: UnixStream, agent: &Path) -> io::Result<Connection> {
        let upstream = UnixStream::connect(agent)?;
        let copies = [
            copy_until_eof(client.try_clone()?, upstream.try_clone()?)?,
            copy_until_eof(upstream.try_clone()?, client.try_clone()?)?,
        ];
        Ok(Connection { client, agent: upstream, copies })
    }

    fn finished(&self) -> bool {
        self.copies.iter().all(JoinHandle::is_finished)
    }

    /// Ends both directions now (a finished connection is already over) and joins its threads.
    fn close(self) {
        for stream in [&self.client, &self.agent] {
            // Already shut down or reset by the peer is fine: the point is that it is over.
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
        for copy in self.copies {
            if copy.join().is_err() {
                tracing::warn!("an ssh agent proxy connection panicked");
            }
        }
    }
}

/// Copies `from` to `to` on a new thread; at `from`'s end of file, `to` sees one too, so the
/// other side learns the conversation is over as it would talking to the agent directly.
fn copy_until_eof(mut from: UnixStream, mut to: UnixStream) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name("kiln-ssh-copy".to_owned()).spawn(move || {
        if let Err(e) = io::copy(&mut from, &mut to) {
            tracing::debug!("ssh agent proxy connection: {e}");
        }
        let _ = to.shutdown(std::net::Shutdown::Write);
    })
}

/// The accept loop: serves `listener` until `stopped` becomes readable (its peer was dropped),
/// then closes every connection.
fn serve(listener: &UnixListener, stopped: &UnixStream, agent: &Path) {
    let mut connections: Vec<Connection> = Vec::new();
    loop {
        match wait_readable(listener, stopped) {
            Ok(false) => {}
            Ok(true) => break,
            Err(e) => {
                tracing::warn!("ssh agent proxy: waiting for connections: {e}");
                break;
            }
        }
        let (done, live) = connections.into_iter().partition(Connection::finished);
        connections = live;
        done.into_iter().for_each(Connection::close);
        match listener.accept() {
            Ok((client, _)) => match Connection::open(client, agent) {
                Ok(connection) => connections.push(connection),
                // The client sees its connection closed, as if the agent had refused it.
                Err(e) => tracing::warn!("ssh agent proxy: connecting to the agent {}: {e}", agent.display()),
            },
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => {}
            Err(e) => {
                tracing::warn!("ssh agent proxy: accepting a connection: {e}");
                break;
            }
        }
    }
    connections.into_iter().for_each(Connection::close);
}

/// Blocks until `listener` has a connection waiting (`false`) or `stopped` is readable (`true`).
fn wait_readable(listener: &UnixListener, stopped: &UnixStream) -> io::Result<bool> {
    let mut fds = [
        libc::pollfd { fd: listener.as_fd().as_raw_fd(), events: libc::POLLIN, revents: 0 },
        libc::pollfd { fd: stopped.as_fd().as_raw_fd(), events: libc::POLLIN, revents: 0 },
    ];
    loop {
        // SAFETY: `fds` is a valid array of two pollfds whose descriptors outlive the call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if n >= 0 {
            return Ok(fds[1].revents != 0);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}
