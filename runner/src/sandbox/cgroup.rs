//! The step's cgroup as seen from outside the runtime: where it is, whether the OOM killer
//! fired in it, and removing it when the runtime could not (its helper was killed).
//!
//! Steps live in `/kiln/<step id>` below the root of each hierarchy (cgroup v1: one per
//! controller, `/sys/fs/cgroup/<controller>/kiln/<id>`; v2: `/sys/fs/cgroup/kiln/<id>`). The
//! shared `/kiln` parent stays: removing it would race with concurrent steps.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// The root every hierarchy is mounted under.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// The cgroup path (relative to the hierarchy roots) of step `id`.
pub(super) fn path_of(id: &str) -> String {
    format!("/kiln/{id}")
}

/// Whether the host runs the unified (v2) hierarchy at [`CGROUP_ROOT`].
fn is_v2() -> bool {
    Path::new(CGROUP_ROOT).join("cgroup.controllers").exists()
}

/// The directories of cgroup `path` in every hierarchy that has it.
fn dirs(path: &str) -> Vec<PathBuf> {
    let relative = path.trim_start_matches('/');
    if is_v2() {
        return vec![Path::new(CGROUP_ROOT).join(relative)];
    }
    let Ok(entries) = std::fs::read_dir(CGROUP_ROOT) else { return Vec::new() };
    entries.flatten().map(|e| e.path().join(relative)).filter(|p| p.is_dir()).collect()
}

/// How many processes the OOM killer killed in cgroup `path` (0 if unknown).
pub(super) fn oom_kills(path: &str) -> u64 {
    let relative = path.trim_start_matches('/');
    let file = if is_v2() {
        Path::new(CGROUP_ROOT).join(relative).join("memory.events")
    } else {
        Path::new(CGROUP_ROOT).join("memory").join(relative).join("memory.oom_control")
    };
    let Ok(text) = std::fs::read_to_string(&file) else { return 0 };
    text.lines().filter_map(|l| l.strip_prefix("oom_kill ")).filter_map(|n| n.trim().parse().ok()).next().unwrap_or(0)
}

/// Kills whatever is left in cgroup `path` and removes it from every hierarchy.
pub(super) fn remove(path: &str) -> std::io::Result<()> {
    for dir in dirs(path) {
        for attempt in 0..50 {
            if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
                for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                    // SAFETY: kill(2) has no memory-safety preconditions.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
            match std::fs::remove_dir(&dir) {
                Ok(()) => break,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                // EBUSY while the killed processes are still exiting.
                Err(e) if attempt == 49 => {
                    return Err(std::io::Error::new(e.kind(), format!("{}: {e}", dir.display())));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
    Ok(())
}
