//! `RUN --mount` end to end: cache, bind, tmpfs, secret and ssh mounts as a user writes them,
//! checked in the built root filesystem, across builds, and in every byte a build leaves.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use kiln_testkit::kiln::Kiln;

fn kiln() -> Kiln {
    Kiln::with_busybox(env!("CARGO_BIN_EXE_kiln"))
}

/// A context directory with `dockerfile` and `files`.
fn context(k: &Kiln, name: &str, dockerfile: &str, files: &[(&str, &str)]) -> PathBuf {
    let dir = k.path(name);
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("Dockerfile"), dockerfile).unwrap();
    for (path, content) in files {
        let path = dir.join(path);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
    }
    dir
}

/// Builds `dir` into a fresh directory; returns it and kiln's stderr.
fn build(k: &Kiln, dir: &Path, extra: &[&str]) -> (PathBuf, String) {
    build_env(k, dir, extra, &[])
}

/// [`build`] with `env` set for kiln.
fn build_env(k: &Kiln, dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> (PathBuf, String) {
    let dest = k.path(&format!("out-{}", k.dir.path().read_dir().unwrap().count()));
    let output = format!("type=local,dest={}", dest.display());
    let mut args = vec!["build", "--progress", "plain", "-o", &output];
    args.extend_from_slice(extra);
    args.push(dir.to_str().unwrap());
    let out = k.command(&args).envs(env.iter().copied()).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "kiln {args:?} failed: {stderr}");
    (dest, stderr)
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

#[test]
fn cache_mounts_persist_across_builds_stay_out_of_layers_and_are_pruned() {
    let k = kiln();
    let dir = context(
        &k,
        "cache",
        "FROM busybox\nWORKDIR /app\n\
         RUN --mount=type=cache,target=/root/.cache/app,id=app-cache \
         sh -c 'echo run-$(cat /proc/sys/kernel/random/uuid) >> /root/.cache/app/log; wc -l < /root/.cache/app/log > /seen'\n",
        &[],
    );
    let (root, _) = build(&k, &dir, &["--no-cache"]);
    assert_eq!(read(&root.join("seen")).trim(), "1");
    assert!(!root.join("root/.cache").exists(), "the cache mount point must not reach the layer");
    assert!(!root.join("app/root").exists(), "an absolute target is not below the WORKDIR");
    // The second build sees what the first one left in the cache.
    let (root, _) = build(&k, &dir, &["--no-cache"]);
    assert_eq!(read(&root.join("seen")).trim(), "2");

    // `kiln prune --keep-cache-mounts` keeps it; `kiln prune` drops it.
    k.ok(&["prune", "--keep-cache-mounts"]);
    let (root, _) = build(&k, &dir, &["--no-cache"]);
    assert_eq!(read(&root.join("seen")).trim(), "3");
    let pruned = k.ok(&["prune"]);
    assert!(pruned.contains("app-cache"), "{pruned}");
    let (root, _) = build(&k, &dir, &["--no-cache"]);
    assert_eq!(read(&root.join("seen")).trim(), "1");
}

#[test]
fn bind_mounts_show_the_context_or_a_stage_and_key_on_the_files_they_show() {
    let k = kiln();
    let dir = context(
        &k,
        "bind",
        "FROM busybox AS tools\nRUN echo tool-output > /tool.txt\n\
         FROM busybox\n\
         RUN --mount=type=bind,source=src,target=/src sh -c 'ls /src > /listing; cat /src/a.txt > /a-copy'\n\
         RUN --mount=type=bind,from=tools,source=/tool.txt,target=/mnt/tool.txt cat /mnt/tool.txt > /from-stage\n\
         RUN --mount=type=bind,target=/ctx,rw sh -c 'echo scribble > /ctx/new; ls /ctx > /ctx-listing'\n",
        &[
            ("src/a.txt", "alpha\n"),
            ("src/secret.key", "ignored\n"),
            ("other.txt", "x\n"),
            (".dockerignore", "src/secret.key\n"),
        ],
    );
    let (root, _) = build(&k, &dir, &[]);
    assert_eq!(read(&root.join("listing")), "a.txt\n", ".dockerignore'd files are not in the bind");
    assert_eq!(read(&root.join("a-copy")), "alpha\n");
    assert_eq!(read(&root.join("from-stage")), "tool-output\n");
    assert!(read(&root.join("ctx-listing")).contains("new"), "rw binds accept writes");
    assert!(!dir.join("new").exists(), "writes to a bind never reach the context");
    for gone in ["src", "mnt", "ctx"] {
        assert!(!root.join(gone).exists(), "mount point /{gone} leaked into the image");
    }

    // Only the files a bind shows key its step.
    let steps = |extra: &[&str]| -> String {
        let mut args = vec!["build", "--progress", "plain"];
        args.extend_from_slice(extra);
        args.push(dir.to_str().unwrap());
        let out = k.kiln(&args);
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    fs::write(dir.join("src/secret.key"), "changed but ignored\n").unwrap();
    let log = steps(&[]);
    assert_eq!(log.matches("CACHED").count(), 4, "{log}");
    fs::write(dir.join("src/a.txt"), "beta\n").unwrap();
    let log = steps(&[]);
    // The src bind's step and the ones built on it run again; the other stage stays cached.
    assert_eq!(log.matches("CACHED").count(), 1, "{log}");
    let (root, _) = build(&k, &dir, &[]);
    assert_eq!(read(&root.join("a-copy")), "beta\n");
}

#[test]
fn tmpfs_mounts_are_sized_and_never_committed() {
    let k = kiln();
    let dir = context(
        &k,
        "tmpfs",
        "FROM busybox\n\
         RUN --mount=type=tmpfs,target=/scratch,size=1m sh -c 'echo x > /scratch/f && df -k /scratch | tail -1 > /df; \
         if dd if=/dev/zero of=/scratch/big bs=1024 count=2048 2>/dev/null; then echo fit; else echo full; fi > /fill'\n",
        &[],
    );
    let (root, _) = build(&k, &dir, &[]);
    assert_eq!(read(&root.join("fill")), "full\n", "a 1m tmpfs holds no 2 MiB file");
    assert!(read(&root.join("df")).split_whitespace().nth(1) == Some("1024"), "{}", read(&root.join("df")));
    assert!(!root.join("scratch").exists());
}

/// Every file under `dir`, decompressed when it is gzip or zstd, as bytes. A file that goes
/// away while it is read (a step of another build ending) is skipped.
fn all_bytes(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            let ft = entry.file_type().unwrap();
            if ft.is_dir() {
                stack.push(path);
            } else if ft.is_file() {
                let raw = match fs::read(&path) {
                    Ok(raw) => raw,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => panic!("reading {}: {e}", path.display()),
                };
                let plain = match raw.get(..2) {
                    Some([0x1f, 0x8b]) => Command::new("gzip").arg("-dc").arg(&path).output().unwrap().stdout,
                    _ => raw,
                };
                out.push((path, plain));
            }
        }
    }
    out
}

/// Whether `bytes` hold `needle`.
fn holds(bytes: &[u8], needle: &str) -> bool {
    bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// The `kiln-secret-*` directories in `/dev/shm` and the temp dir, where secret files are made.
fn secret_dirs() -> std::collections::BTreeSet<PathBuf> {
    [PathBuf::from("/dev/shm"), std::env::temp_dir()]
        .iter()
        .flat_map(|base| fs::read_dir(base).into_iter().flatten().flatten())
        .map(|e| e.path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("kiln-secret-")))
        .collect()
}

#[test]
fn secrets_reach_the_step_and_nothing_else() {
    let k = kiln();
    let value = "s3cr3t-value-7f1c9a";
    let env_value = "env-s3cr3t-2b8e4d0c";
    let secret_file = k.path("token.txt");
    fs::write(&secret_file, value).unwrap();
    let dir = context(
        &k,
        "secret",
        &format!(
            "FROM busybox\n\
             RUN --mount=type=secret,id=token sh -c 'test \"$(cat /run/secrets/token)\" = \"$(cat /run/secrets/token)\" && \
             stat -c %a /run/secrets/token > /mode && wc -c < /run/secrets/token > /length'\n\
             RUN --mount=type=secret,id=token,env=TOKEN,required sh -c 'echo ${{#TOKEN}} > /env-length'\n\
             RUN --mount=type=secret,id=absent ls /run/secrets > /absent-listing 2>&1 || true\n\
             RUN --mount=type=secret,src=envtok,required sh -c 'wc -c < /run/secrets/envtok > /src-length'\n\
             RUN --mount=type=secret,id=envtok,env=FROM_ENV,required sh -c 'echo ${{#FROM_ENV}} > /env-var-length'\n\
             USER 1000\n\
             RUN --mount=type=secret,id=token,target=/opt/creds/tok,uid=1000,gid=1001,mode=0440,required \
             sh -c 'test \"$(stat -c \"%u %g %a\" /opt/creds/tok)\" = \"1000 1001 440\" && \
             test $(wc -c < /opt/creds/tok) -eq {} && echo ok > /tmp/custom'\n",
            value.len()
        ),
        &[],
    );
    let file_flag = format!("id=token,src={}", secret_file.display());
    let secrets = ["--secret", &file_flag, "--secret", "id=envtok,env=KILN_TEST_SECRET"];
    // `kiln build EXTRA… --secret… CONTEXT`, with the variable the env secret is read from.
    let build_with_secrets = |extra: &[&str], context: &Path| -> Command {
        let mut args = vec!["build"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&secrets);
        args.push(context.to_str().unwrap());
        let mut command = k.command(&args);
        command.env("KILN_TEST_SECRET", env_value);
        command
    };
    let stderr_of = |command: &mut Command| -> String {
        let out = command.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{stderr}");
        stderr
    };
    let leftovers_before = secret_dirs();
    let (root, log) = build_env(&k, &dir, &secrets, &[("KILN_TEST_SECRET", env_value)]);
    let rawjson = stderr_of(&mut build_with_secrets(&["--progress", "rawjson", "--no-cache"], &dir));
    // Whatever kiln and its libraries log, at any level, is grepped too.
    let trace = stderr_of(build_with_secrets(&["--progress", "plain", "--no-cache"], &dir).env("RUST_LOG", "trace"));
    stderr_of(&mut build_with_secrets(&["-q", "-t", "secret:1"], &dir));

    assert_eq!(read(&root.join("mode")), "400\n");
    assert_eq!(read(&root.join("length")).trim(), value.len().to_string());
    assert_eq!(read(&root.join("env-length")).trim(), value.len().to_string());
    // An optional secret that was not given is no mount at all.
    assert_eq!(read(&root.join("absent-listing")), "ls: /run/secrets: No such file or directory\n");
    // `src=` names the secret when there is no id, and its file goes to /run/secrets/<id>.
    assert_eq!(read(&root.join("src-length")).trim(), env_value.len().to_string());
    assert_eq!(read(&root.join("env-var-length")).trim(), env_value.len().to_string());
    // The step checked the custom target's owner, group, mode and content itself.
    assert_eq!(read(&root.join("tmp/custom")), "ok\n");
    for gone in ["run/secrets", "opt/creds"] {
        assert!(!root.join(gone).exists(), "the secret mount point /{gone} leaked into the image");
    }

    // Not in a layer, a config, a manifest, the cache index, the sandbox's state, the progress
    // output, a trace log, any file.
    let sandbox_state = Path::new(kiln_runner::sandbox::DEFAULT_STATE_DIR);
    for needle in [value, env_value] {
        for (path, content) in all_bytes(&k.root()).into_iter().chain(all_bytes(&root)).chain(all_bytes(sandbox_state))
        {
            assert!(!holds(&content, needle), "the secret leaked into {}", path.display());
        }
        for (name, output) in [("plain", &log), ("rawjson", &rawjson), ("trace", &trace)] {
            assert!(!output.contains(needle), "the secret leaked into the {name} progress output");
        }
    }
    let inspect = k.ok(&["inspect", "secret:1"]);
    assert!(!inspect.contains(value) && !inspect.contains(env_value));
    let left: Vec<_> = secret_dirs().difference(&leftovers_before).cloned().collect();
    assert!(left.is_empty(), "secret directories left behind: {left:?}");

    // While a step runs, its `env=` secret is in the runtime's config of the step, which only
    // root may read.
    let running =
        context(&k, "running", "FROM busybox\nRUN --mount=type=secret,id=envtok,env=T,required sleep 3\n", &[]);
    let mut step = build_with_secrets(&["--no-cache"], &running).stderr(std::process::Stdio::null()).spawn().unwrap();
    let holder = (0..100).find_map(|_| {
        std::thread::sleep(std::time::Duration::from_millis(100));
        let mut configs = all_bytes(sandbox_state).into_iter().filter(|(p, _)| p.ends_with("config.json"));
        configs.find(|(_, content)| holds(content, env_value)).map(|(path, _)| path)
    });
    let holder = holder.expect("the running step's config.json");
    let mode = fs::metadata(holder.parent().unwrap()).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "{} is open to other users ({mode:o})", holder.display());
    assert!(step.wait().unwrap().success());

    // A required secret that was not given fails the step, naming it.
    let dir = context(&k, "required", "FROM busybox\nRUN --mount=type=secret,id=missing,required true\n", &[]);
    let err = k.fails(&["build", dir.to_str().unwrap()]);
    assert!(err.contains("secret missing not found") && err.contains("Dockerfile:2"), "{err}");
}

/// `ssh-add` and the libraries it loads, copied into `dir` (the step runs it with the loader).
fn bundle_ssh_add(dir: &Path) -> String {
    let ssh_add = String::from_utf8(Command::new("sh").args(["-c", "command -v ssh-add"]).output().unwrap().stdout)
        .unwrap()
        .trim()
        .to_owned();
    assert!(!ssh_add.is_empty(), "ssh-add is missing: install the Debian package openssh-client");
    fs::create_dir_all(dir).unwrap();
    fs::copy(&ssh_add, dir.join("ssh-add")).unwrap();
    let ldd = String::from_utf8(Command::new("ldd").arg(&ssh_add).output().unwrap().stdout).unwrap();
    let mut loader = String::new();
    for line in ldd.lines() {
        let path = line.split_whitespace().find(|w| w.starts_with('/')).map(str::to_owned);
        if let Some(path) = path {
            let name = Path::new(&path).file_name().unwrap().to_str().unwrap().to_owned();
            fs::copy(&path, dir.join(&name)).unwrap();
            if name.starts_with("ld-linux") {
                loader = name;
            }
        }
    }
    assert!(!loader.is_empty(), "no dynamic loader in ldd {ssh_add}: {ldd}");
    loader
}

/// A real `ssh-agent` (openssh-client) holding one new key with `comment`; killed on drop.
struct Agent {
    socket: PathBuf,
    process: std::process::Child,
}

impl Agent {
    fn start(k: &Kiln, name: &str, comment: &str) -> Agent {
        let dir = k.path(name);
        fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("agent.sock");
        let process = Command::new("ssh-agent")
            .args(["-D", "-a"])
            .arg(&socket)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("ssh-agent (openssh-client)");
        let agent = Agent { socket, process };
        for _ in 0..100 {
            if agent.socket.exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let key = dir.join("id_ed25519");
        let made =
            Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"]).arg(&key).status();
        assert!(made.unwrap().success());
        let added = Command::new("ssh-add").arg(&key).env("SSH_AUTH_SOCK", &agent.socket).output().unwrap();
        assert!(added.status.success(), "{}", String::from_utf8_lossy(&added.stderr));
        agent
    }

    /// `ID=SOCKET` for `--ssh`.
    fn flag(&self, id: &str) -> String {
        format!("{id}={}", self.socket.display())
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// The ssh proxy directories left in the store's temp dir.
fn ssh_proxy_dirs(k: &Kiln) -> Vec<PathBuf> {
    let tmp = k.root().join("blobs/tmp");
    let entries = fs::read_dir(tmp).into_iter().flatten().flatten().map(|e| e.path());
    entries.filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("ssh-"))).collect()
}

#[test]
fn ssh_mounts_forward_a_real_agent() {
    let k = kiln();
    let agent = Agent::start(&k, "agent", "kiln-test-key");
    let dir = k.path("ssh");
    let loader = bundle_ssh_add(&dir.join("tools"));
    fs::write(
        dir.join("Dockerfile"),
        format!(
            "FROM busybox\nRUN --mount=type=ssh --mount=type=bind,source=tools,target=/tools \
             /tools/{loader} --library-path /tools /tools/ssh-add -l > /keys.txt\n"
        ),
    )
    .unwrap();
    let (root, _) = build(&k, &dir, &["--ssh", &agent.flag("default")]);
    let keys = read(&root.join("keys.txt"));
    assert!(keys.contains("kiln-test-key") && keys.contains("ED25519"), "{keys}");
    assert!(!root.join("run/buildkit").exists());
    assert_eq!(ssh_proxy_dirs(&k), Vec::<PathBuf>::new(), "the proxy's directory outlived the step");
    drop(agent);

    // Without --ssh, a required agent is an error.
    fs::write(dir.join("Dockerfile"), "FROM busybox\nRUN --mount=type=ssh,required=true true\n").unwrap();
    let err = k.fails(&["build", dir.to_str().unwrap()]);
    assert!(err.contains("no ssh agent \"default\""), "{err}");
}

#[test]
fn ssh_mounts_get_a_socket_of_their_own_with_the_owner_and_mode_asked() {
    let k = kiln();
    let main = Agent::start(&k, "agent-main", "kiln-main-key");
    let other = Agent::start(&k, "agent-other", "kiln-other-key");
    let host_mode = || fs::metadata(&main.socket).unwrap().permissions().mode() & 0o7777;
    let before = host_mode();
    let dir = k.path("ssh-own");
    let loader = bundle_ssh_add(&dir.join("tools"));
    let ssh_add = format!("/tools/{loader} --library-path /tools /tools/ssh-add -l");
    let tools = "--mount=type=bind,source=tools,target=/tools";
    fs::write(
        dir.join("Dockerfile"),
        format!(
            "FROM busybox\n\
             RUN --mount=type=ssh {tools} sh -c 'stat -c \"%u %g %a %F\" $SSH_AUTH_SOCK > /default-socket; \
             chmod 777 $SSH_AUTH_SOCK && {ssh_add} > /after-chmod'\n\
             RUN --mount=type=ssh,id=other,target=/run/other.sock {tools} \
             sh -c 'SSH_AUTH_SOCK=/run/other.sock {ssh_add} > /other-keys'\n\
             USER 1000\n\
             RUN --mount=type=ssh {tools} sh -c 'if {ssh_add}; then echo listed; else echo refused; fi > /tmp/as-1000-default 2>&1'\n\
             RUN --mount=type=ssh,uid=1000,mode=0600 {tools} sh -c 'stat -c \"%u %g %a\" $SSH_AUTH_SOCK > /tmp/owned-socket; \
             {ssh_add} > /tmp/as-1000-keys'\n"
        ),
    )
    .unwrap();
    let (root, _) = build(&k, &dir, &["--ssh", &main.flag("default"), "--ssh", &other.flag("other")]);
    // BuildKit's defaults: root's socket, 0600, of the step's own.
    assert_eq!(read(&root.join("default-socket")), "0 0 600 socket\n");
    assert!(read(&root.join("after-chmod")).contains("kiln-main-key"));
    assert_eq!(host_mode(), before, "a chmod in the step changed the host's agent socket");
    // `id=` picks the agent of `--ssh ID=SOCKET`.
    let other_keys = read(&root.join("other-keys"));
    assert!(other_keys.contains("kiln-other-key") && !other_keys.contains("kiln-main-key"), "{other_keys}");
    // A root-owned 0600 socket refuses user 1000; `uid=1000` lets it list the keys.
    assert!(read(&root.join("tmp/as-1000-default")).contains("refused"));
    assert_eq!(read(&root.join("tmp/owned-socket")), "1000 0 600\n");
    assert!(read(&root.join("tmp/as-1000-keys")).contains("kiln-main-key"));
    assert!(!root.join("run/buildkit").exists() && !root.join("run/other.sock").exists());
    assert_eq!(ssh_proxy_dirs(&k), Vec::<PathBuf>::new(), "a proxy's directory outlived its step");

    // `--ssh default` is the agent of $SSH_AUTH_SOCK.
    fs::write(
        dir.join("Dockerfile"),
        format!("FROM busybox\nRUN --mount=type=ssh,required {tools} {ssh_add} > /keys\n"),
    )
    .unwrap();
    let sock = other.socket.to_str().unwrap();
    let (root, _) = build_env(&k, &dir, &["--ssh", "default"], &[("SSH_AUTH_SOCK", sock)]);
    assert!(read(&root.join("keys")).contains("kiln-other-key"));
}

#[test]
fn prune_lists_each_cache_mount_once_with_its_size() {
    let k = kiln();
    // Two builds at once hold `sized` privately: B waits until A listens, so A holds its
    // instance and B gets a second one. A writes 300 kB to its instance, B 200 kB to its own.
    let dir = context(
        &k,
        "prune-sizes",
        "FROM busybox\nARG P\nARG NAME\nARG KB\n\
         RUN --mount=type=cache,id=sized,target=/c,sharing=private --mount=type=cache,id=other,target=/o \
         sh -c 'dd if=/dev/zero of=/c/$NAME bs=1000 count=$KB 2>/dev/null; dd if=/dev/zero of=/o/f bs=1000 count=1 2>/dev/null; \
         if [ $NAME = a ]; then nc -l -p $P > /dev/null; else until echo x | nc 127.0.0.1 $P; do sleep 0.2; done; fi'\n",
        &[],
    );
    let port = format!("P={}", std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port());
    let a = spawn_build(
        &k,
        &dir,
        &k.path("prune-a"),
        &["--build-arg", &port, "--build-arg", "NAME=a", "--build-arg", "KB=300"],
    );
    let b = spawn_build(
        &k,
        &dir,
        &k.path("prune-b"),
        &["--build-arg", &port, "--build-arg", "NAME=b", "--build-arg", "KB=200"],
    );
    for build in [a, b] {
        let out = build.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }

    let kept = k.ok(&["prune", "--keep-cache-mounts"]);
    let listed: Vec<&str> = kept.lines().filter(|l| l.contains("cache mount")).collect();
    assert_eq!(listed, ["kept cache mount: other (1.0kB)", "kept cache mount: sized (500.0kB)"], "{kept}");
    // The first prune took everything else, so the second frees exactly the cache mounts.
    let pruned = k.ok(&["prune"]);
    let listed: Vec<&str> = pruned.lines().filter(|l| l.contains("cache mount")).collect();
    assert_eq!(listed, ["deleted cache mount: other (1.0kB)", "deleted cache mount: sized (500.0kB)"], "{pruned}");
    assert!(pruned.contains("Total reclaimed space: 501.0kB"), "{pruned}");
    let again = k.ok(&["prune", "--keep-cache-mounts"]);
    assert!(!again.contains("cache mount"), "{again}");
}

/// Builds `dir` as a child process with `--progress plain` and `extra` flags.
fn spawn_build(k: &Kiln, dir: &Path, dest: &Path, extra: &[&str]) -> std::process::Child {
    let output = format!("type=local,dest={}", dest.display());
    let mut args = vec!["build", "--no-cache", "--progress", "plain", "-o", &output];
    args.extend_from_slice(extra);
    args.push(dir.to_str().unwrap());
    k.command(&args).stderr(std::process::Stdio::piped()).spawn().unwrap()
}

#[test]
fn concurrent_builds_share_a_cache_mount_as_sharing_says() {
    let k = kiln();
    // Each step first looks for another step listening on the loopback port (RUN shares the
    // host network), then listens itself for a while: a step that hears or reaches the other
    // ran at the same time as it.
    let script = "sleep 0.5; if echo x | nc 127.0.0.1 $P 2>/dev/null; then echo overlap; \
                  else (sleep 10 | nc -l -p $P > /tmp/heard &); sleep 4; if [ -s /tmp/heard ]; then echo overlap; else echo alone; fi; fi";
    for (sharing, expected) in [("shared", "overlap"), ("locked", "alone")] {
        let dir = context(
            &k,
            &format!("sharing-{sharing}"),
            &format!(
                "FROM busybox\nARG P\nRUN --mount=type=cache,id=together,target=/c,sharing={sharing} sh -c '{script}' > /result\n"
            ),
            &[],
        );
        let port = format!("P={}", std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port());
        let (a_out, b_out) = (k.path(&format!("{sharing}-a")), k.path(&format!("{sharing}-b")));
        let mut a = spawn_build(&k, &dir, &a_out, &["--build-arg", &port]);
        // B starts once A's step has started.
        let mut a_err = std::io::BufReader::new(a.stderr.take().unwrap());
        let mut seen = String::new();
        loop {
            let mut line = String::new();
            assert!(std::io::BufRead::read_line(&mut a_err, &mut line).unwrap() > 0, "A ended early: {seen}");
            seen.push_str(&line);
            if line.contains("[2/2] RUN") {
                break;
            }
        }
        let b = spawn_build(&k, &dir, &b_out, &["--build-arg", &port]).wait_with_output().unwrap();
        std::io::Read::read_to_string(&mut a_err, &mut seen).unwrap();
        assert!(a.wait().unwrap().success(), "{seen}");
        assert!(b.status.success(), "{}", String::from_utf8_lossy(&b.stderr));
        assert_eq!(read(&a_out.join("result")).trim(), expected, "sharing={sharing}, build A");
        assert_eq!(read(&b_out.join("result")).trim(), expected, "sharing={sharing}, build B");
    }

    // private: a step that holds the cache gets it alone; one running at the same time gets
    // a directory of its own.
    let dir = context(
        &k,
        "sharing-private",
        "FROM busybox\nARG P\nARG NAME\n\
         RUN --mount=type=cache,id=apart,target=/c,sharing=private sh -c 'echo $NAME > /c/$NAME; \
         if [ $NAME = a ]; then nc -l -p $P > /dev/null; else sleep 0.5; until echo x | nc 127.0.0.1 $P; do sleep 0.2; done; fi; ls /c > /listing'\n",
        &[],
    );
    let port = format!("P={}", std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port());
    let (a_out, b_out) = (k.path("private-a"), k.path("private-b"));
    let a = spawn_build(&k, &dir, &a_out, &["--build-arg", &port, "--build-arg", "NAME=a"]);
    let b = spawn_build(&k, &dir, &b_out, &["--build-arg", &port, "--build-arg", "NAME=b"]);
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(
        a.status.success() && b.status.success(),
        "{}{}",
        String::from_utf8_lossy(&a.stderr),
        String::from_utf8_lossy(&b.stderr)
    );
    assert_eq!(read(&a_out.join("listing")), "a\n");
    assert_eq!(read(&b_out.join("listing")), "b\n");
}

#[test]
fn cache_mounts_are_seeded_from_a_stage_and_keyed_by_it() {
    let k = kiln();
    // PASS re-runs the last stage alone; SEED rebuilds the seed stage too.
    let dir = context(
        &k,
        "seed",
        "FROM busybox AS seed\nARG SEED=1\nRUN mkdir /seed && echo seeded-$SEED > /seed/s.txt\n\
         FROM busybox\nARG PASS=1\n\
         RUN --mount=type=cache,id=seeded,target=/c,from=seed,source=/seed,uid=1000,mode=0750 \
         sh -c 'echo $PASS >> /c/runs; cat /c/s.txt > /out; stat -c \"%u %a\" /c > /owner; wc -l < /c/runs > /uses'\n\
         RUN --mount=type=cache,id=seeded,target=/c ls -A /c > /plain\n",
        &[],
    );
    let (root, _) = build(&k, &dir, &["--build-arg", "PASS=1"]);
    assert_eq!(read(&root.join("out")), "seeded-1\n");
    // uid/mode do not apply to a cache seeded from a source: it keeps the source's owner.
    assert_eq!(read(&root.join("owner")), "0 755\n");
    assert_eq!(read(&root.join("uses")).trim(), "1");
    assert_eq!(read(&root.join("plain")), "", "`id=seeded` alone is another cache than `id=seeded,from=seed`");

    // The same seed: the same cache.
    let (root, _) = build(&k, &dir, &["--build-arg", "PASS=2"]);
    assert_eq!(read(&root.join("uses")).trim(), "2");
    // A changed seed stage: a fresh cache, seeded from the new content.
    let (root, _) = build(&k, &dir, &["--build-arg", "PASS=3", "--build-arg", "SEED=2"]);
    assert_eq!(read(&root.join("out")), "seeded-2\n");
    assert_eq!(read(&root.join("uses")).trim(), "1");
    assert_eq!(read(&root.join("plain")), "");
}

#[test]
fn cache_mount_owners_make_their_own_caches_and_ro_is_read_only() {
    let k = kiln();
    let dir = context(
        &k,
        "owned",
        "FROM busybox\nARG U\nARG N\n\
         RUN --mount=type=cache,id=owned,target=/c,uid=$U,gid=33 \
         sh -c 'stat -c \"%u %g %a\" /c > /owner; touch /c/f-$U-$N; ls /c > /listing'\n\
         RUN --mount=type=cache,id=owned,target=/c,uid=$U,gid=33,ro \
         sh -c 'ls /c > /ro-listing; if touch /c/x 2>/dev/null; then echo writable; else echo read-only; fi > /ro'\n",
        &[],
    );
    let (root, _) = build(&k, &dir, &["--build-arg", "U=1000", "--build-arg", "N=1"]);
    assert_eq!(read(&root.join("owner")), "1000 33 755\n");
    assert_eq!(read(&root.join("listing")), "f-1000-1\n");
    assert_eq!(read(&root.join("ro")), "read-only\n");
    assert_eq!(read(&root.join("ro-listing")), "f-1000-1\n", "ro mounts the same cache");
    // Another uid: another cache, owned by it.
    let (root, _) = build(&k, &dir, &["--build-arg", "U=2000", "--build-arg", "N=2"]);
    assert_eq!(read(&root.join("owner")), "2000 33 755\n");
    assert_eq!(read(&root.join("listing")), "f-2000-2\n");
    // The first uid's cache is still there, untouched by the second.
    let (root, _) = build(&k, &dir, &["--build-arg", "U=1000", "--build-arg", "N=3"]);
    assert_eq!(read(&root.join("listing")), "f-1000-1\nf-1000-3\n");
}

#[test]
fn cache_mount_source_without_from_is_a_subdirectory_of_the_cache() {
    let k = kiln();
    let dir = context(
        &k,
        "subdir",
        "FROM busybox\n\
         RUN --mount=type=cache,id=sub,target=/c sh -c 'mkdir -p /c/pkg && echo inside > /c/pkg/f'\n\
         RUN --mount=type=cache,id=sub,target=/p,source=pkg,uid=1234 sh -c 'cat /p/f > /seen; stat -c %u /p > /owner'\n",
        &[],
    );
    let (root, _) = build(&k, &dir, &[]);
    assert_eq!(read(&root.join("seen")), "inside\n");
    // uid does not apply with a source (and does not make it another cache).
    assert_eq!(read(&root.join("owner")), "0\n");

    // As in BuildKit, a missing subdirectory is an error, not created.
    let dir = context(&k, "missing", "FROM busybox\nRUN --mount=type=cache,id=fresh,target=/p,source=nope true\n", &[]);
    let err = k.fails(&["build", dir.to_str().unwrap()]);
    assert!(err.contains("Dockerfile:2") && err.contains("nope: No such file or directory"), "{err}");
}

#[test]
fn mount_keys_are_case_insensitive() {
    let k = kiln();
    let dir = context(
        &k,
        "keys",
        "FROM busybox AS tools\nRUN echo tool > /tool.txt\n\
         FROM busybox\n\
         RUN --mount=Type=bind,From=tools,Source=/tool.txt,Target=/t cat /t > /bound\n\
         RUN --mount=TYPE=cache,FROM=tools,ID=c,TARGET=/c,SHARING=Locked cat /c/tool.txt > /cached\n",
        &[("tool.txt", "from the context\n")],
    );
    let (root, _) = build(&k, &dir, &[]);
    assert_eq!(read(&root.join("bound")), "tool\n", "From= must mount the stage, not the context");
    assert_eq!(read(&root.join("cached")), "tool\n");
}

/// Builds `dir`, failing the test instead of hanging when it takes longer than a minute.
fn build_within_a_minute(k: &Kiln, dir: &Path) -> PathBuf {
    let dest = k.path("out-timed");
    let mut child = spawn_build(k, dir, &dest, &[]);
    // Drained meanwhile, so that a full pipe cannot stall the build.
    let mut pipe = child.stderr.take().unwrap();
    let stderr = std::thread::spawn(move || {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut pipe, &mut text).unwrap();
        text
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let stderr = stderr.join().unwrap();
            assert!(status.success(), "{stderr}");
            return dest;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the build did not finish within a minute (two mounts of a cache deadlocked?)");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn mounts_of_one_cache_in_one_step_share_it() {
    let k = kiln();
    let dir = context(
        &k,
        "twice",
        "FROM busybox\n\
         RUN --mount=type=cache,id=one,target=/a,sharing=locked --mount=type=cache,id=one,target=/b,sharing=locked \
         --mount=type=cache,id=two,target=/p1,sharing=private --mount=type=cache,id=two,target=/p2,sharing=private \
         sh -c 'echo x > /a/f; cat /b/f > /locked; echo y > /p1/f; cat /p2/f > /private'\n\
         RUN --mount=type=cache,target=/d/ sh -c 'echo z > /d/f'\n\
         RUN --mount=type=cache,target=/d cat /d/f > /cleaned\n",
        &[],
    );
    let root = build_within_a_minute(&k, &dir);
    assert_eq!(read(&root.join("locked")), "x\n");
    assert_eq!(read(&root.join("private")), "y\n");
    assert_eq!(read(&root.join("cleaned")), "z\n", "the default id is the cleaned target");
}

#[test]
fn bad_mount_flags_fail_at_their_line_before_anything_runs() {
    let k = kiln();
    for (flag, why) in [
        ("type=cache,target=/c,bogus=1", "unexpected key 'bogus' in 'bogus=1'"),
        ("type=cache,target=/c,sharing=sometimes", "unsupported sharing value \"sometimes\""),
        ("type=cache,target=/", "invalid mount target \"/\""),
        ("type=bind,from=$STAGE,target=/s", "'from' doesn't support variable expansion, define alias stage instead"),
    ] {
        let dir = context(
            &k,
            "bad-flag",
            &format!("FROM busybox\nARG STAGE=x\nRUN echo ran > /f\nRUN --mount={flag} true\n"),
            &[],
        );
        let err = k.fails(&["build", "--progress", "plain", dir.to_str().unwrap()]);
        assert!(err.contains("Dockerfile:4") && err.contains(why), "{flag}: {err}");
        assert!(!err.contains("[2/3] RUN echo ran"), "{flag}: a step ran before the error: {err}");
    }
}

/// Whether a step has written `file` into some cache mount directory of `k`'s store.
fn in_a_cache_mount(k: &Kiln, file: &str) -> bool {
    let dirs = fs::read_dir(k.root().join("cache-mounts")).into_iter().flatten().flatten();
    dirs.into_iter().any(|entry| entry.path().join(file).exists())
}

#[test]
fn a_step_waiting_for_a_locked_cache_says_so_and_stops_when_cancelled() {
    let k = kiln();
    let dir = context(
        &k,
        "held",
        "FROM busybox\nARG WHO\n\
         RUN --mount=type=cache,id=held,target=/c,sharing=locked sh -c 'echo $WHO > /c/who; sleep 8'\n",
        &[],
    );
    let mut a = spawn_build(&k, &dir, &k.path("held-a"), &["--build-arg", "WHO=a"]);
    // B starts once A's step holds the cache.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !in_a_cache_mount(&k, "who") {
        assert!(std::time::Instant::now() < deadline, "A's step never ran");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let mut b = spawn_build(&k, &dir, &k.path("held-b"), &["--build-arg", "WHO=b"]);
    let mut b_err = std::io::BufReader::new(b.stderr.take().unwrap());
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        assert!(std::io::BufRead::read_line(&mut b_err, &mut line).unwrap() > 0, "B never said it waits: {seen}");
        seen.push_str(&line);
        if line.contains("waiting for cache mount \"held\"") {
            break;
        }
    }
    let interrupted = std::time::Instant::now();
    let killed = Command::new("kill").args(["-INT", &b.id().to_string()]).status().unwrap();
    assert!(killed.success());
    std::io::Read::read_to_string(&mut b_err, &mut seen).unwrap();
    assert!(!b.wait().unwrap().success(), "{seen}");
    assert!(interrupted.elapsed() < std::time::Duration::from_secs(4), "B waited for A's step to end: {seen}");
    assert!(seen.contains("cancelled"), "{seen}");
    let mut a_err = String::new();
    std::io::Read::read_to_string(&mut a.stderr.take().unwrap(), &mut a_err).unwrap();
    assert!(a.wait().unwrap().success(), "{a_err}");
}

#[test]
fn mounts_from_an_image_and_rw_binds_of_a_stage() {
    let k = kiln();
    let dir = context(
        &k,
        "from-image",
        "FROM busybox AS tools\nRUN echo tool > /tool.txt\n\
         FROM busybox\n\
         RUN --mount=type=bind,from=busybox:latest,source=/etc,target=/img sh -c 'cat /img/passwd > /passwd-via-bind'\n\
         RUN --mount=type=cache,target=/c,from=busybox:latest,source=/etc cat /c/group > /group-via-cache\n\
         RUN --mount=type=bind,from=tools,target=/t,rw sh -c 'echo scribble >> /t/tool.txt; cat /t/tool.txt > /rw-seen'\n\
         RUN --mount=type=bind,from=tools,target=/t cat /t/tool.txt > /after-rw\n\
         RUN --mount=type=cache,id=one,target=/a --mount=type=cache,id=two,target=/b sh -c 'echo a > /a/f; echo b > /b/f; cat /a/f /b/f > /two-caches'\n",
        &[],
    );
    let (root, _) = build(&k, &dir, &[]);
    assert_eq!(read(&root.join("passwd-via-bind")), read(&root.join("etc/passwd")));
    assert_eq!(read(&root.join("group-via-cache")), read(&root.join("etc/group")));
    assert_eq!(read(&root.join("rw-seen")), "tool\nscribble\n", "a rw bind of a stage takes writes");
    assert_eq!(read(&root.join("after-rw")), "tool\n", "and they are discarded after the step");
    assert_eq!(read(&root.join("two-caches")), "a\nb\n");
    for gone in ["img", "c", "t", "a", "b"] {
        assert!(!root.join(gone).exists(), "mount point /{gone} leaked into the image");
    }
}
