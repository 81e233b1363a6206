//! A step's own mounts (`RUN --mount` binds, caches, secrets, ssh sockets, tmpfs, heredoc
//! scripts under `/dev/pipes`) on a real overlay (and copy) snapshot, with the embedded runtime
//! and runc: what the step sees and may write, and that the mount points made for it (and their
//! parents) never reach the layer nor stay in the rootfs, whether the step succeeds or fails.

mod diff_support;
mod sandbox_util;

use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use kiln_runner::diff::DiffOptions;
use kiln_runner::sandbox::{Exec, Outcome, Runtime, Sandbox, SandboxError, StepMount};
use kiln_runner::snapshot::{Backend, Snapshot, Snapshotter};
use kiln_store::Store;
use kiln_store::image::Layer;
use sandbox_util::{import_busybox, run, sandbox, sh};

/// Entry point of the helper process when this binary is re-executed as the sandbox helper.
#[test]
fn sandbox_helper_entry() {
    kiln_runner::sandbox::helper_main_if_requested();
}

/// The busybox image imported into a fresh store, a snapshotter on it, host-side sources of
/// every kind of mount, and a sandbox. Fields drop in order: the directories last.
struct Setup {
    sandbox: Sandbox,
    sources: Sources,
    snapshotter: Snapshotter,
    layers: Vec<Layer>,
    store: Store,
    _state: tempfile::TempDir,
    _dir: tempfile::TempDir,
}

impl Setup {
    fn new(runtime: Runtime) -> Setup {
        Setup::with_backend(runtime, Backend::Overlay)
    }

    fn with_backend(runtime: Runtime, backend: Backend) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        let sandbox = sandbox(runtime, state.path());
        let store = Store::open(&dir.path().join("store")).unwrap();
        let layers = import_busybox(&store, dir.path());
        let snapshotter = match backend {
            Backend::Overlay => Snapshotter::new(&store).unwrap(),
            Backend::Copy => Snapshotter::with_backend(&store, Backend::Copy).unwrap(),
        };
        assert_eq!(snapshotter.backend(), backend, "{:?}", snapshotter.fallback_reason());
        Setup { sandbox, sources: Sources::new(), snapshotter, layers, store, _state: state, _dir: dir }
    }

    /// A fresh snapshot of the image and its rootfs.
    fn snapshot(&self) -> (Snapshot, PathBuf) {
        let snapshot = self.snapshotter.prepare(&self.layers).unwrap();
        let rootfs = snapshot.rootfs().to_owned();
        (snapshot, rootfs)
    }

    /// `sh -c script` in `rootfs` with every kind of mount and a secret variable.
    fn step(&self, rootfs: &Path, script: &str) -> Exec {
        let mut exec = sh(rootfs, script);
        exec.mounts = self.sources.mounts();
        exec.secret_env = vec![SECRET_VAR.into()];
        exec
    }

    /// The paths of the entries of `snapshot`'s diff, as the layer's tar has them.
    fn diff_paths(&self, snapshot: &mut Snapshot) -> Vec<String> {
        let diff = snapshot.diff(&DiffOptions::default()).unwrap();
        let (entries, _) = diff_support::read_layer(self.store.blobs(), &diff.layer.digest);
        assert_eq!(entries.len() as u64, diff.entries);
        entries.into_iter().map(|e| e.path).collect()
    }
}

/// Host-side sources of every kind of mount a step can get.
struct Sources {
    _dir: tempfile::TempDir,
    cache: PathBuf,
    readonly: PathBuf,
    secret: PathBuf,
    socket: PathBuf,
    _listener: UnixListener,
    script: PathBuf,
}

const SECRET: &str = "s3cr3t-9f2c1e";
const SECRET_VAR: &str = "TOKEN=env-s3cr3t-77ab";

impl Sources {
    fn new() -> Sources {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache");
        std::fs::create_dir(&cache).unwrap();
        std::fs::write(cache.join("seed"), "from the last build\n").unwrap();
        let readonly = dir.path().join("context");
        std::fs::create_dir(&readonly).unwrap();
        std::fs::write(readonly.join("data.txt"), "context file\n").unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, SECRET).unwrap();
        let socket = dir.path().join("agent.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let script = dir.path().join("script");
        std::fs::write(&script, "echo from the heredoc\n").unwrap();
        Sources { _dir: dir, cache, readonly, secret, socket, _listener: listener, script }
    }

    /// One mount of each kind, at mount points the image lacks (and whose parents it lacks too,
    /// except `/root` and `/run`).
    fn mounts(&self) -> Vec<StepMount> {
        let bind = |source: &Path, dest: &str, readonly| StepMount::Bind {
            source: source.to_owned(),
            dest: dest.into(),
            readonly,
        };
        vec![
            bind(&self.cache, "/root/.cache/pip", false),
            bind(&self.readonly, "/src/deep/ctx", true),
            bind(&self.secret, "/run/secrets/token", true),
            bind(&self.socket, "/run/buildkit/ssh_agent.0", true),
            StepMount::Tmpfs { dest: "/scratch/tmp".into(), size: Some(1 << 20) },
            bind(&self.script, "/dev/pipes/script.sh", true),
        ]
    }
}

/// The mount points of [`Sources::mounts`] and the parents made for them: none may remain.
const MADE_FOR_THE_STEP: [&str; 7] =
    ["root/.cache", "src", "run/secrets", "run/buildkit", "scratch", "dev/pipes", "root/.cache/pip"];

/// The times of directories the mount points were made in, as the image has them.
fn times_of(rootfs: &Path) -> Vec<(String, i64, i64)> {
    ["", "root", "run", "dev"]
        .iter()
        .map(|p| {
            let m = std::fs::symlink_metadata(rootfs.join(p)).unwrap();
            (p.to_string(), m.mtime(), m.mtime_nsec())
        })
        .collect()
}

fn assert_no_leftovers(rootfs: &Path) {
    for path in MADE_FOR_THE_STEP {
        assert!(
            std::fs::symlink_metadata(rootfs.join(path)).is_err(),
            "/{path} made for the step is still in the rootfs"
        );
    }
}

fn every_mount_kind(runtime: Runtime, backend: Backend) {
    let setup = Setup::with_backend(runtime, backend);
    let sources = &setup.sources;
    let (mut snapshot, rootfs) = setup.snapshot();
    let times_before = times_of(&rootfs);

    let exec = setup.step(
        &rootfs,
        r#"set -e
cat /root/.cache/pip/seed
echo appended > /root/.cache/pip/added
cat /src/deep/ctx/data.txt
if touch /src/deep/ctx/new 2>/dev/null; then echo the read-only bind is writable; fi
cat /run/secrets/token; echo
test -S /run/buildkit/ssh_agent.0 && stat -c 'socket inode %i' /run/buildkit/ssh_agent.0
df -k /scratch/tmp | awk 'NR == 2 { print "tmpfs of " $2 " KiB" }'
echo small > /scratch/tmp/small
if dd if=/dev/zero of=/scratch/tmp/big bs=1024 count=2048 2>/dev/null; then echo 2 MiB fit in the tmpfs; fi
sh /dev/pipes/script.sh
echo "token $TOKEN"
echo mark > /etc/marker"#,
    );
    assert!(!exec.command().contains("env-s3cr3t") && !format!("{exec:?}").contains("env-s3cr3t"));

    let out = run(&setup.sandbox, &exec).unwrap();
    assert_eq!(out.outcome, Outcome::Exited(0), "stderr: {}", out.stderr);
    let socket_inode = std::fs::metadata(&sources.socket).unwrap().ino();
    assert_eq!(
        out.stdout,
        format!(
            "from the last build\ncontext file\n{SECRET}\nsocket inode {socket_inode}\ntmpfs of 1024 KiB\n\
             from the heredoc\ntoken env-s3cr3t-77ab\n"
        )
    );
    // The rw bind wrote through to its source; the read-only one did not.
    assert_eq!(std::fs::read_to_string(sources.cache.join("added")).unwrap(), "appended\n");
    assert!(!sources.readonly.join("new").exists());

    assert_no_leftovers(&rootfs);
    assert_eq!(times_of(&rootfs), times_before, "directories holding mount points kept changed times");
    assert_eq!(setup.diff_paths(&mut snapshot), ["etc/", "etc/marker"]);
}

#[test]
fn every_mount_kind_embedded() {
    every_mount_kind(Runtime::Embedded, Backend::Overlay);
}

#[test]
fn every_mount_kind_runc() {
    every_mount_kind(Runtime::Oci("runc".into()), Backend::Overlay);
}

/// The copy-based snapshot's diff compares metadata, not an upperdir: restored times matter.
#[test]
fn every_mount_kind_copy_snapshot() {
    every_mount_kind(Runtime::Embedded, Backend::Copy);
}

fn failing_step_cleans_up(runtime: Runtime) {
    let setup = Setup::new(runtime);

    // A step that exits non-zero.
    let (mut snapshot, rootfs) = setup.snapshot();
    let times_before = times_of(&rootfs);
    let exec = setup.step(&rootfs, "test -s /run/secrets/token && exit 3");
    let out = run(&setup.sandbox, &exec).unwrap();
    assert_eq!(out.outcome, Outcome::Exited(3), "stderr: {}", out.stderr);
    let message = out.outcome.check(&exec).unwrap_err().to_string();
    assert!(!message.contains("env-s3cr3t"), "{message}");
    assert_no_leftovers(&rootfs);
    assert_eq!(times_of(&rootfs), times_before);
    assert_eq!(setup.diff_paths(&mut snapshot), Vec::<String>::new());

    // A step whose command cannot even start.
    let (mut snapshot, rootfs) = setup.snapshot();
    let mut exec = setup.step(&rootfs, "");
    exec.args = vec!["/no/such/program".into()];
    let reported = match run(&setup.sandbox, &exec) {
        Ok(out) => {
            assert_ne!(out.outcome, Outcome::Exited(0));
            format!("{} {}", out.stderr, out.outcome.check(&exec).unwrap_err())
        }
        Err(e) => e.to_string(),
    };
    assert!(!reported.contains("env-s3cr3t"), "{reported}");
    assert_no_leftovers(&rootfs);
    assert_eq!(setup.diff_paths(&mut snapshot), Vec::<String>::new());
}

#[test]
fn failing_step_cleans_up_embedded() {
    failing_step_cleans_up(Runtime::Embedded);
}

#[test]
fn failing_step_cleans_up_runc() {
    failing_step_cleans_up(Runtime::Oci("runc".into()));
}

#[test]
fn a_mount_point_of_the_wrong_type_is_an_error_naming_it() {
    let setup = Setup::new(Runtime::Embedded);
    let sources = &setup.sources;
    let (mut snapshot, rootfs) = setup.snapshot();

    let cases = [
        // A directory mount where the image has a file, and below a file.
        (StepMount::Tmpfs { dest: "/etc/passwd".into(), size: None }, "/etc/passwd: Not a directory"),
        (
            StepMount::Bind { source: sources.cache.clone(), dest: "/etc/passwd/x".into(), readonly: false },
            "/etc/passwd: Not a directory",
        ),
        // A file mount where the image has a directory.
        (
            StepMount::Bind { source: sources.secret.clone(), dest: "/tmp".into(), readonly: true },
            "/tmp: Is a directory",
        ),
    ];
    for (mount, expected) in cases {
        let mut exec = sh(&rootfs, "true");
        // Mount points made before the failing one are removed again.
        exec.mounts = vec![StepMount::Tmpfs { dest: "/scratch/tmp".into(), size: None }, mount];
        let err = run(&setup.sandbox, &exec).err().expect("a mount point of the wrong type must fail");
        assert!(matches!(err, SandboxError::Io { .. }), "{err:?}");
        let message = err.to_string();
        assert!(message.contains(expected), "{message}");
        assert_no_leftovers(&rootfs);
    }

    let mut exec = sh(&rootfs, "true");
    exec.mounts = vec![StepMount::Tmpfs { dest: "relative/dir".into(), size: None }];
    let message = run(&setup.sandbox, &exec).err().expect("a relative mount destination must fail").to_string();
    assert!(message.contains("\"relative/dir\" is not an absolute path"), "{message}");
    assert_eq!(setup.diff_paths(&mut snapshot), Vec::<String>::new());
}

#[test]
fn a_step_writing_beside_its_mount_keeps_that_directory() {
    let setup = Setup::new(Runtime::Embedded);
    let (mut snapshot, rootfs) = setup.snapshot();

    // /root/.cache was made for the mount, but the step also wrote into it: that is the step's
    // own change and belongs to the layer; only the mount point itself goes.
    let mut exec = sh(&rootfs, "echo mine > /root/.cache/other");
    exec.mounts =
        vec![StepMount::Bind { source: setup.sources.cache.clone(), dest: "/root/.cache/pip".into(), readonly: false }];
    let out = run(&setup.sandbox, &exec).unwrap();
    assert_eq!(out.outcome, Outcome::Exited(0), "stderr: {}", out.stderr);
    assert!(!rootfs.join("root/.cache/pip").exists());
    assert_eq!(std::fs::read_to_string(rootfs.join("root/.cache/other")).unwrap(), "mine\n");
    assert_eq!(setup.diff_paths(&mut snapshot), ["root/", "root/.cache/", "root/.cache/other"]);
}
