//! Measures the sandbox's per-step overhead: `Sandbox::run` of `true` in a busybox rootfs, in a
//! loop, with the embedded runtime and (if installed) runc. Needs root.
//!
//! `cargo run --release -p kiln-runner --example step_overhead -- [N] [embedded|runc|both] [CMD..]`
//! prints the mean, median and slowest step in ms; `CMD` (default `true`) is what each step runs.

use std::time::Instant;

use kiln_runner::sandbox::{CancelToken, Exec, HelperCommand, Runtime, Sandbox, Stdio};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // This binary is also the sandbox helper.
    kiln_runner::sandbox::helper_main_if_requested();
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(50);
    let which = args.next().unwrap_or_else(|| "both".to_owned());
    let command: Vec<String> = args.collect();
    let command = if command.is_empty() { vec!["true".to_owned()] } else { command };

    // Not /tmp: kiln keeps snapshots and state elsewhere, and file creation in a watched /tmp
    // can cost more than the whole sandbox.
    let dir = tempfile::tempdir_in("/var/tmp")?;
    let tar = kiln_testkit::busybox::rootfs_tar(dir.path());
    let rootfs = dir.path().join("rootfs");
    std::fs::create_dir(&rootfs)?;
    let status = std::process::Command::new("tar").arg("-xf").arg(&tar).arg("-C").arg(&rootfs).status()?;
    if !status.success() {
        return Err("tar -xf of the busybox rootfs failed".into());
    }

    let mut runtimes = Vec::new();
    if which != "runc" {
        runtimes.push(Runtime::Embedded);
    }
    if which != "embedded" && std::process::Command::new("runc").arg("--version").output().is_ok() {
        runtimes.push(Runtime::Oci("runc".into()));
    }
    let exec = Exec::new(&rootfs, command);
    for runtime in runtimes {
        let state = dir.path().join("state");
        let sandbox = Sandbox::new(runtime.clone(), HelperCommand::current_exe()?).with_state_dir(&state);
        // One untimed warm-up (page cache, the shared /kiln cgroup parent).
        sandbox.run_checked(&exec, Stdio::Inherit, &CancelToken::new())?;
        let mut times = Vec::with_capacity(n);
        for _ in 0..n {
            let start = Instant::now();
            sandbox.run_checked(&exec, Stdio::Inherit, &CancelToken::new())?;
            times.push(start.elapsed().as_secs_f64() * 1000.0);
        }
        times.sort_by(f64::total_cmp);
        let mean = times.iter().sum::<f64>() / n.max(1) as f64;
        let median = times.get(n / 2).copied().unwrap_or(0.0);
        let max = times.last().copied().unwrap_or(0.0);
        println!("{runtime:?}: {n} steps, mean {mean:.2} ms, median {median:.2} ms, max {max:.2} ms");
    }
    Ok(())
}
