//! Nothing of a step survives it: no process, cgroup, mount or state directory after the step
//! is cancelled, or after the kiln process running it is SIGKILLed.

mod sandbox_util;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kiln_runner::sandbox::{CancelToken, Outcome, Runtime, Sandbox, SandboxError, Stdio};
use sandbox_util::{busybox_rootfs, helper_command, run, sandbox, sh};

/// Entry point of the helper process when this binary is re-executed as the sandbox helper.
#[test]
fn sandbox_helper_entry() {
    kiln_runner::sandbox::helper_main_if_requested();
}

/// Stands in for kiln in `sigkill_of_kiln_leaves_nothing_behind`: runs one long step.
#[test]
fn kiln_stand_in() {
    let Ok(dirs) = std::env::var("KILN_TEST_STAND_IN") else { return };
    let (rootfs, state) = dirs.split_once('|').unwrap();
    let sb = sandbox(Runtime::Embedded, Path::new(state));
    let _ = sb.run(&sh(Path::new(rootfs), "touch /started; exec sleep 4242"), Stdio::Inherit, &CancelToken::new());
}

/// Pids of processes whose command line is `sleep <secs>` (each test uses its own number).
fn sleepers(secs: &str) -> Vec<i32> {
    let cmdline = format!("sleep\0{secs}\0").into_bytes();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == cmdline))
        .collect()
}

/// cgroup directories of steps whose id starts with `prefix`, in every hierarchy.
fn step_cgroups(prefix: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for hierarchy in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        if let Ok(steps) = std::fs::read_dir(hierarchy.path().join("kiln")) {
            found.extend(
                steps
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(prefix)),
            );
        }
    }
    found
}

fn mounts_under(path: &Path) -> Vec<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines().filter(|l| l.contains(path.to_str().unwrap())).map(str::to_owned).collect()
}

fn state_entries(state: &Path) -> Vec<String> {
    let mut left = Vec::new();
    for dir in [state.to_path_buf(), state.join(".libcontainer")] {
        if let Ok(entries) = std::fs::read_dir(&dir) {
            left.extend(
                entries
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    // The compiled seccomp programs are shared by steps, not a step's state.
                    .filter(|n| n != ".libcontainer" && n != ".seccomp"),
            );
        }
    }
    left
}

/// Polls `cond` until it holds (the kernel reaps asynchronously); panics with `what` if it never does.
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < Duration::from_secs(60), "{what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn sigkill_of_kiln_leaves_nothing_behind() {
    sandbox_util::require_root();
    let root = busybox_rootfs();
    let state = tempfile::tempdir().unwrap();
    let mut kiln = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "kiln_stand_in", "--nocapture", "--test-threads=1", "-q"])
        .env("KILN_TEST_STAND_IN", format!("{}|{}", root.path().display(), state.path().display()))
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let prefix = format!("kiln-{}-", kiln.id());
    eventually("the step never started", || root.path().join("started").exists());
    // While it runs, all of it is there: the checks below can see it.
    assert_eq!(sleepers("4242").len(), 1);
    assert!(!step_cgroups(&prefix).is_empty(), "no cgroup found for the running step");
    assert!(!state_entries(state.path()).is_empty());

    kiln.kill().unwrap();
    kiln.wait().unwrap();
    eventually("the step's processes survived kiln", || sleepers("4242").is_empty());
    eventually("the step's cgroups survived kiln", || step_cgroups(&prefix).is_empty());
    eventually("the step's state survived kiln", || state_entries(state.path()).is_empty());
    assert_eq!(mounts_under(root.path()), Vec::<String>::new());
}

#[test]
fn cancel_kills_the_whole_tree_and_cleans_up() {
    let root = busybox_rootfs();
    let state = tempfile::tempdir().unwrap();
    let sb = sandbox(Runtime::Embedded, state.path());
    let cancel = CancelToken::new();
    let started = root.path().join("started");
    let watcher = {
        let cancel = cancel.clone();
        std::thread::spawn(move || {
            eventually("the step never started", || started.exists());
            cancel.cancel();
        })
    };
    // A tree: a background child that ignores SIGTERM, and a foreground sleep.
    let exec = sh(root.path(), "trap '' TERM; sleep 4343 & touch /started; wait");
    let mut sink = |_| {};
    let err = sb.run(&exec, Stdio::Capture(&mut sink), &cancel).unwrap_err();
    watcher.join().unwrap();
    assert!(matches!(err, SandboxError::Cancelled { .. }), "{err}");
    eventually("processes survived the cancel", || sleepers("4343").is_empty());
    assert_eq!(state_entries(state.path()), Vec::<String>::new());
    assert_eq!(mounts_under(root.path()), Vec::<String>::new());
}

/// Live processes (not zombies: a zombie's command line is empty) whose command line has `arg`.
fn processes_with_arg(arg: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.split(|b| *b == 0).any(|a| a == arg.as_bytes()))
        })
        .collect()
}

#[test]
fn a_sandbox_keeps_its_helper_across_steps_and_ends_it_when_dropped() {
    sandbox_util::require_root();
    let marker = "helper-reuse-marker";
    let root = busybox_rootfs();
    let state = tempfile::tempdir().unwrap();
    let sb = Sandbox::new(Runtime::Embedded, helper_command(&["--skip", marker])).with_state_dir(state.path());
    let step = sh(root.path(), "echo $$");
    for _ in 0..3 {
        let out = run(&sb, &step).unwrap();
        assert_eq!((out.outcome, out.stdout.as_str()), (Outcome::Exited(0), "1\n"), "stderr: {}", out.stderr);
    }
    let helpers = processes_with_arg(marker);
    assert_eq!(helpers.len(), 1, "three steps one after the other need one helper: {helpers:?}");
    // Clones share it.
    let clone = sb.clone();
    assert_eq!(run(&clone, &step).unwrap().outcome, Outcome::Exited(0));
    assert_eq!(processes_with_arg(marker), helpers);

    // An idle helper that died is replaced, unnoticed by the step.
    // SAFETY: kill(2) has no memory-safety preconditions; the pid is our child (a zombie until reaped).
    assert_eq!(unsafe { libc::kill(helpers[0], libc::SIGKILL) }, 0);
    eventually("the killed helper kept running", || processes_with_arg(marker).is_empty());
    assert_eq!(run(&sb, &step).unwrap().outcome, Outcome::Exited(0));
    let replaced = processes_with_arg(marker);
    assert!(replaced.len() == 1 && replaced != helpers, "{replaced:?}");

    drop(sb);
    assert_eq!(processes_with_arg(marker).len(), 1, "a clone still holds the helper");
    drop(clone);
    // Dropping waits for the helper, so it is gone at once.
    assert_eq!(processes_with_arg(marker), Vec::<i32>::new());
    assert_eq!(state_entries(state.path()), Vec::<String>::new());
}
