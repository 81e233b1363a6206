//! Store-wide coordination between kiln processes with `flock(2)`.
//!
//! Every [`Store`](crate::Store) handle holds the store lock (`<root>/lock`) for its whole life:
//! commands that read or add content (`build`, `pull`, `push`, `images`, `save`, ...) hold it
//! *shared*, so any number of them run side by side; `kiln prune` holds it *exclusive*, so the
//! garbage collector never sees a half-finished writer: a blob stored but not yet tagged, a
//! snapshot being unpacked, an overlay mounted on a lowerdir.
//!
//! Acquiring never fails fast: a process that has to wait is told who it is waiting for (pid
//! and command line, read from `/proc/locks`), then blocks until the holder is done. `kiln prune`
//! started during a long build therefore prints "waiting for kiln build (pid 1234)" and runs
//! when the build ends, and a build started during a prune waits for the prune. flock gives no
//! writer preference: a prune can wait as long as shared holders keep overlapping.
//!
//! The same primitive guards short critical sections (the metadata DB, one snapshot's unpack)
//! through [`lock_file`]. Locks are tied to open file descriptions, so two handles in one process
//! exclude each other like two processes do (a process holding a shared store handle that asks
//! for an exclusive one waits forever: `kiln prune` opens only the exclusive one), and the kernel
//! releases them when a process dies, killed or not: no stale lock files to clean up.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rustix::fs::{FlockOperation, flock};

/// Errors taking a lock. Each names the lock file.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Opening, creating or locking the lock file failed.
    #[error("cannot lock {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// How a lock is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// Any number of holders at once; excludes exclusive holders.
    Shared,
    /// One holder; excludes everyone else.
    Exclusive,
}

/// A process that holds (or waits for) a lock, as reported to someone who has to wait.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockHolder {
    /// Its process id.
    pub pid: u32,
    /// Its command line (arguments joined by spaces), or empty if it could not be read.
    pub command: String,
}

impl fmt::Display for LockHolder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.command.is_empty() {
            write!(f, "pid {}", self.pid)
        } else {
            write!(f, "{} (pid {})", self.command, self.pid)
        }
    }
}

/// The store-wide lock, held for as long as this value lives.
#[derive(Debug)]
pub struct StoreLock {
    // Held for its lock only: closing the descriptor releases it.
    _file: File,
    mode: LockMode,
}

impl StoreLock {
    /// The lock file below a store root.
    pub fn path(root: &Path) -> PathBuf {
        root.join("lock")
    }

    /// Takes the store lock of `root` in `mode`, waiting as long as needed. If it has to wait,
    /// `on_wait` is called first with the processes holding the lock, so the caller can say
    /// what it waits for.
    pub fn acquire(root: &Path, mode: LockMode, on_wait: impl FnOnce(&[LockHolder])) -> Result<StoreLock, LockError> {
        Ok(StoreLock { _file: lock_file(&StoreLock::path(root), mode, on_wait)?, mode })
    }

    /// How this lock is held.
    pub fn mode(&self) -> LockMode {
        self.mode
    }
}

/// Opens (creating it if needed) `path` and flocks it in `mode`, waiting as long as needed;
/// `on_wait` is called with the current holders before waiting. The lock lasts as long as
/// the returned file is open.
pub fn lock_file(path: &Path, mode: LockMode, on_wait: impl FnOnce(&[LockHolder])) -> Result<File, LockError> {
    let err = |source| LockError::Io { path: path.to_owned(), source };
    let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path).map_err(err)?;
    let (try_op, wait_op) = match mode {
        LockMode::Shared => (FlockOperation::NonBlockingLockShared, FlockOperation::LockShared),
        LockMode::Exclusive => (FlockOperation::NonBlockingLockExclusive, FlockOperation::LockExclusive),
    };
    match flock(&file, try_op) {
        Ok(()) => return Ok(file),
        Err(rustix::io::Errno::WOULDBLOCK) => {}
        Err(e) => return Err(err(e.into())),
    }
    on_wait(&holders(path));
    loop {
        match flock(&file, wait_op) {
            Ok(()) => return Ok(file),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(err(e.into())),
        }
    }
}

/// The processes currently holding a flock on `path` (not those waiting for one), from
/// `/proc/locks`. Best effort: an unreadable `/proc` yields an empty list.
pub fn holders(path: &Path) -> Vec<LockHolder> {
    let (Ok(meta), Ok(table)) = (fs::metadata(path), fs::read_to_string("/proc/locks")) else {
        return Vec::new();
    };
    // /proc/locks names a file as "MAJOR:MINOR:INODE", the device numbers in hex.
    let dev = meta.dev();
    let id = format!("{:02x}:{:02x}:{}", rustix::fs::major(dev), rustix::fs::minor(dev), meta.ino());
    let mut out: Vec<LockHolder> = Vec::new();
    for line in table.lines() {
        // "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF"; waiters have "->" after the index.
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.get(1) != Some(&"FLOCK") || fields.get(5) != Some(&id.as_str()) {
            continue;
        }
        let Some(pid) = fields.get(4).and_then(|p| p.parse::<u32>().ok()) else { continue };
        if out.iter().all(|h| h.pid != pid) {
            out.push(LockHolder { pid, command: command_line(pid) });
        }
    }
    out
}

/// Names lock holders for a message: "kiln build (pid 12)", "kiln images (pid 3), kiln pull x
/// (pid 4)", or "another process" when `/proc/locks` could not say.
pub fn describe(holders: &[LockHolder]) -> String {
    if holders.is_empty() {
        return "another process".to_owned();
    }
    holders.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

/// The command line of a process, arguments separated by spaces ("" if it cannot be read).
fn command_line(pid: u32) -> String {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|raw| {
            raw.split(|&b| b == 0).filter(|a| !a.is_empty()).map(String::from_utf8_lossy).collect::<Vec<_>>().join(" ")
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_coexist_exclusive_waits_and_names_holder() {
        let root = tempfile::tempdir().unwrap();
        let a = StoreLock::acquire(root.path(), LockMode::Shared, |_| panic!("shared must not wait")).unwrap();
        let b = StoreLock::acquire(root.path(), LockMode::Shared, |_| panic!("shared must not wait")).unwrap();
        assert_eq!(a.mode(), LockMode::Shared);

        let (tx, rx) = std::sync::mpsc::channel();
        let path = root.path().to_owned();
        let t = std::thread::spawn(move || {
            let lock = StoreLock::acquire(&path, LockMode::Exclusive, |h| tx.send(h.to_vec()).unwrap()).unwrap();
            assert_eq!(lock.mode(), LockMode::Exclusive);
        });
        // The exclusive taker reports us (this process) as the holder, then waits for both to go.
        let seen = rx.recv().unwrap();
        let me = std::process::id();
        assert_eq!(seen.iter().map(|h| h.pid).collect::<Vec<_>>(), vec![me], "{seen:?}");
        assert!(seen[0].to_string().contains(&format!("(pid {me})")), "{}", seen[0]);
        drop(a);
        drop(b);
        t.join().unwrap();
    }
}
