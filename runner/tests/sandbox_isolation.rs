//! The sandbox in real namespaces: what a step sees (pid 1, hostname, env, cwd, user, the
//! step-only files), output streaming and exit codes, and what it cannot reach.

mod sandbox_util;

use std::io::BufRead;

use kiln_runner::sandbox::{Network, Outcome, Runtime, SandboxError, Stream};
use sandbox_util::{busybox_rootfs, run, sandbox, sh};

/// Entry point of the helper process when this binary is re-executed as the sandbox helper.
#[test]
fn sandbox_helper_entry() {
    kiln_runner::sandbox::helper_main_if_requested();
}

#[test]
fn step_is_pid_1_with_its_own_hostname_and_no_host_processes() {
    let root = busybox_rootfs();
    let state = tempfile::tempdir().unwrap();
    let sb = sandbox(Runtime::Embedded, state.path());
    let out = run(&sb, &sh(root.path(), "echo pid=$$; hostname; ls -d /proc/[0-9]* | wc -l")).unwrap();
    assert_eq!(out.outcome, Outcome::Exited(0), "stderr: {}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[0], "pid=1");
    assert_eq!(lines[1], "kilnsandbox");
    // sh, ls and wc: nothing of the host's hundreds of processes.
    let visible: usize = lines[2].trim().parse().unwrap();
    assert!(visible <= 4, "the step sees {visible} processes");
}

#[test]
fn env_cwd_user_and_supplementary_groups() {
    let root = busybox_rootfs();
    std::fs::write(root.path().join("etc/group"), "root:x:0:\napp:x:1000:\nwheel:x:10:app\n").unwrap();
    let state = tempfile::tempdir().unwrap();
    let sb = sandbox(Runtime::Embedded, state.path());
    let mut exec =
        sh(root.path(), "echo $FOO; pwd; id; echo home=$HOME; touch /home/app/mine && stat -c %u:%g /home/app/mine");
    exec.env = vec!["FOO=bar baz".into()];
    exec.cwd = "/home/app/work/dir".into();
    exec.user = "app".into();
    let out = run(&sb, &exec).unwrap();
    assert_eq!(out.outcome, Outcome::Exited(0), "stderr: {}", out.stderr);
    assert_eq!(
        out.stdout,
        "bar baz\n/home/app/work/dir\nuid=1000(app) gid=1000(app) groups=10(wheel),1000(app)\nhome=/home/app\n1000:1000\n"
    );
    // The working directory was created (by root, 0755) in the rootfs.
    let created = std::fs::metadata(root.path().join("home/app/work/dir")).unwrap();
    assert!(created.is_dir());

    exec.user = "4321:99".into();
    exec.cwd = "/".into();
    exec.args = vec!["/bin/sh".into(), "-c".into(), "id -u; id -g".into()];
    let out = run(&sb, &exec).unwrap();
    assert_eq!(out.stdout, "4321\n99\n");

    exec.user = "ghost".into();
    let err = run(&sb, &exec).err().expect("an unknown user must fail");
    assert!(err.to_string().contains("unable to find user ghost"), "{err}");
}

#[test]
fn output_streams_line_by_line_and_exit_codes_name_the_command() {
    let root = busybox_rootfs();
    let state = tempfile::tempdir().unwrap();
    let sb = sandbox(Runtime::Embedded, state.path());
    let exec = sh(root.path(), "echo one; echo two >&2; printf 'three\\nfour'; exit 3");
    let out = run(&sb, &exec).unwrap();
    assert_eq!(out.outcome, Outcome::Exited(3));
    let stdout: Vec<&[u8]> =
        out.events.iter().filter(|e| e.stream == Stream::Stdout).map(|e| e.line.as_slice()).collect();
    assert_eq!(stdout, vec![&b"one\n"[..], b"three\n", b"four"]);
    assert_eq!(out.stderr, "two\n");
    let err = out.outcome.check(&exec).unwrap_err();
    assert_eq!(
        err.to_string(),
        "process \"/bin/sh -c echo one; echo two >&2; printf 'three\\nfour'; exit 3\" did not complete successfully: exit code: 3"
    );
    let missing = run(&sb, &sh(root.path(), "x").clone_with_args(vec!["/no/such/binary".into()])).err().unwrap();
    assert!(matches!(missing, SandboxError::Runtime { .. }), "{missing}");
    assert!(missing.to_string().contains("/no/such/binary"), "{missing}");
}

trait CloneWithArgs {
    fn clone_with_args(&self, args: Vec<String>) -> Self;
}

impl CloneWithArgs for kiln_runner::sandbox::Exec {
    fn clone_with_args(&self, args: Vec<String>) -> Self {
        let mut e = self.clone();
        e.args = args;
        e
    }
}

#[test]
fn step_only_files_are_provided_and_leave_no_trace() {
    let root = busybox_rootfs();
    let etc = root.path().join("etc");
    let before = std::fs::metadata(&etc).unwrap().modified().unwrap();
    let state = tempfile::tempdir().unwrap();
    let sb = sandbox(Runtime::Embedded, state.path());
    let out = run(&sb, &sh(root.path(), "cat /etc/hostname; grep -c kilnsandbox /etc/hosts; test -f /etc/resolv.conf && echo resolv; echo x > /etc/hosts || echo read-only")).unwrap();
    assert_eq!(out.stdout, "kilnsandbox\n1\nresolv\nread-only\n", "stderr: {}", out.stderr);
    for name in ["hosts", "resolv.conf", "hostname"] {
        assert!(!etc.join(name).exists(), "/etc/{name} was left in the rootfs");
    }
    assert_eq!(std::fs::metadata(&etc).unwrap().modified().unwrap(), before, "/etc's mtime changed");
    assert!(kiln_runner::sandbox::is_step_only_path(std::path::Path::new("/etc/resolv.conf")));
    // The step's state (bundle, runtime state) is gone.
    let left: Vec<_> = std::fs::read_dir(state.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n != ".libcontainer")
        .collect();
    assert!(left.is_empty(), "left in the state dir: {left:?}");
    assert_eq!(std::fs::read_dir(state.path().join(".libcontainer")).unwrap().count(), 0);
}

#[test]
fn network_none_has_only_lo_and_cannot_reach_the_host() {
    let root = busybox_rootfs();
    let state = tempfile::tempdir().unwrap();
    let sb = sandbox(Runtime::Embedded, state.path());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let probe = format!(
        "echo hello | nc -w 2 127.0.0.1 {port} && echo connected || echo refused; ls /sys/class/net; cat /sys/class/net/lo/flags"
    );

    let mut exec = sh(root.path(), &probe);
    exec.network = Network::None;
    let out = run(&sb, &exec).unwrap();
    assert_eq!(out.stdout, "refused\nlo\n0x9\n", "stderr: {}", out.stderr);
    assert!(listener.accept().is_err(), "the host listener got a connection from a network-none step");

    // The same probe on the host network does connect: the test can tell the two apart.
    listener.set_nonblocking(false).unwrap();
    let server = std::thread::spawn(move || {
        let (conn, _) = listener.accept().unwrap();
        let mut got = String::new();
        std::io::BufReader::new(conn).read_line(&mut got).unwrap();
        got // dropping the connection lets nc finish
    });
    exec.network = Network::Host;
    let out = run(&sb, &exec).unwrap();
    assert!(out.stdout.starts_with("connected\n"), "stdout: {} stderr: {}", out.stdout, out.stderr);
    assert_eq!(server.join().unwrap(), "hello\n");
}

#[test]
fn escapes_stay_inside() {
    let root = busybox_rootfs();
    let state = tempfile::tempdir().unwrap();
    let secret_dir = tempfile::tempdir().unwrap();
    let secret = secret_dir.path().join("host-secret");
    std::fs::write(&secret, "host only").unwrap();
    let sb = sandbox(Runtime::Embedded, state.path());
    let script = format!(
        "ln -s /proc/1/root /escape; cat /escape{s} 2>/dev/null && echo LEAK1; \
         cat /proc/1/root{s} 2>/dev/null && echo LEAK2; \
         mkdir -p /m; mount -t tmpfs none /m 2>/dev/null && echo MOUNTED; \
         mount --bind / /m 2>/dev/null && echo BOUND; \
         chroot /escape /bin/cat {s} 2>/dev/null && echo LEAK3; \
         mkdir -p /jail; chroot /jail /bin/true 2>/dev/null; cd /../../../..; cat .{s} 2>/dev/null && echo LEAK4; \
         cat /proc/kcore 2>/dev/null | head -c 1 | wc -c; \
         echo 1 > /proc/sys/kernel/domainname 2>/dev/null && echo SYSCTL; \
         echo done",
        s = secret.display()
    );
    let out = run(&sb, &sh(root.path(), &script)).unwrap();
    assert_eq!(out.stdout, "0\ndone\n", "stderr: {}", out.stderr);
    assert!(root.path().join("escape").is_symlink(), "the write to / landed in the rootfs");
}

#[test]
fn oom_kill_is_reported_with_the_limit() {
    let root = busybox_rootfs();
    let state = tempfile::tempdir().unwrap();
    let sb = sandbox(Runtime::Embedded, state.path());
    let mut exec = sh(root.path(), "dd if=/dev/zero of=/dev/null bs=256M count=1 && echo survived");
    exec.limits.memory = Some(32 << 20);
    let out = run(&sb, &exec).unwrap();
    assert_eq!(out.outcome, Outcome::OomKilled { limit: 32 << 20 }, "stdout: {} stderr: {}", out.stdout, out.stderr);
    let err = out.outcome.check(&exec).unwrap_err().to_string();
    assert!(err.contains("out of memory (memory limit 33554432 bytes)"), "{err}");
}

#[test]
fn pids_limit_stops_fork_bombs() {
    let root = busybox_rootfs();
    let state = tempfile::tempdir().unwrap();
    let sb = sandbox(Runtime::Embedded, state.path());
    let mut exec = sh(root.path(), "i=0; while [ $i -lt 40 ]; do sleep 30 & i=$((i+1)); done; echo all-forked");
    exec.limits.pids = Some(10);
    let out = run(&sb, &exec).unwrap();
    assert!(!out.stdout.contains("all-forked"), "40 processes forked under a limit of 10");
    assert!(out.stderr.contains("can't fork"), "stderr: {}", out.stderr);
}

#[test]
fn runc_gets_the_same_sandbox() {
    let runc = std::process::Command::new("runc").arg("--version").output();
    assert!(runc.is_ok_and(|o| o.status.success()), "this test needs runc: install the Debian package runc");
    let root = busybox_rootfs();
    let state = tempfile::tempdir().unwrap();
    let sb = sandbox(Runtime::Oci("runc".into()), state.path());
    let mut exec =
        sh(root.path(), "echo pid=$$; hostname; id; cat /sys/class/net/lo/flags; ls /sys/class/net; cat /etc/hostname");
    exec.user = "app".into();
    exec.network = Network::None;
    let out = run(&sb, &exec).unwrap();
    assert_eq!(out.outcome, Outcome::Exited(0), "stderr: {}", out.stderr);
    assert_eq!(out.stdout, "pid=1\nkilnsandbox\nuid=1000(app) gid=1000(app) groups=1000(app)\n0x9\nlo\nkilnsandbox\n");
    assert!(!root.path().join("etc/hostname").exists());

    let mut oom = sh(root.path(), "dd if=/dev/zero of=/dev/null bs=256M count=1 && echo survived");
    oom.limits.memory = Some(32 << 20);
    assert_eq!(run(&sb, &oom).unwrap().outcome, Outcome::OomKilled { limit: 32 << 20 });
    let left: Vec<_> =
        std::fs::read_dir(state.path()).unwrap().flatten().map(|e| e.file_name()).filter(|n| n != ".oci").collect();
    assert!(left.is_empty(), "left in the state dir: {left:?}");
}

#[test]
fn seccomp_is_docker_s_profile_with_both_runtimes() {
    let runc = std::process::Command::new("runc").arg("--version").output();
    assert!(runc.is_ok_and(|o| o.status.success()), "this test needs runc: install the Debian package runc");
    let root = busybox_rootfs();
    let state = tempfile::tempdir().unwrap();
    // unshare(CLONE_NEWUSER) needs no capability: only the profile (unshare only with
    // CAP_SYS_ADMIN) refuses it. Exactly one filter: the embedded runtime's init must not load
    // the profile a second time besides the precompiled one.
    let script = "grep ^Seccomp /proc/self/status; unshare -U true 2>&1; echo unshare=$?; \
                  unshare -U true 2>&1; echo again=$?";
    for runtime in [Runtime::Embedded, Runtime::Oci("runc".into())] {
        let sb = sandbox(runtime.clone(), state.path());
        // Twice: the first step compiles the program, the second gets it from the cache.
        for _ in 0..2 {
            let out = run(&sb, &sh(root.path(), script)).unwrap();
            assert_eq!(
                out.stdout,
                "Seccomp:\t2\nSeccomp_filters:\t1\n\
                 unshare: unshare(0x10000000): Operation not permitted\nunshare=1\n\
                 unshare: unshare(0x10000000): Operation not permitted\nagain=1\n",
                "{runtime:?}, stderr: {}",
                out.stderr
            );
        }
    }
}
