//! `RUN --mount` end to end: cache, bind, tmpfs, secret and ssh mounts as a user writes them,
//! checked in the built root filesystem, across builds, and in every byte a build leaves.

use std::fs;
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
    let dest = k.path(&format!("out-{}", k.dir.path().read_dir().unwrap().count()));
    let output = format!("type=local,dest={}", dest.display());
    let mut args = vec!["build", "--progress", "plain", "-o", &output];
    args.extend_from_slice(extra);
    args.push(dir.to_str().unwrap());
    let out = k.kiln(&args);
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

/// Every file under `dir`, decompressed when it is gzip or zstd, as bytes.
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
                let raw = fs::read(&path).unwrap();
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

#[test]
fn secrets_reach_the_step_and_nothing_else() {
    let k = kiln();
    let value = "s3cr3t-value-7f1c9a";
    let secret_file = k.path("token.txt");
    fs::write(&secret_file, value).unwrap();
    let dir = context(
        &k,
        "secret",
        "FROM busybox\n\
         RUN --mount=type=secret,id=token sh -c 'test \"$(cat /run/secrets/token)\" = \"$(cat /run/secrets/token)\" && \
         stat -c %a /run/secrets/token > /mode && wc -c < /run/secrets/token > /length'\n\
         RUN --mount=type=secret,id=token,env=TOKEN,required sh -c 'echo ${#TOKEN} > /env-length'\n\
         RUN --mount=type=secret,id=absent ls /run/secrets > /absent-listing 2>&1 || true\n",
        &[],
    );
    let src = format!("id=token,src={}", secret_file.display());
    let (root, log) = build(&k, &dir, &["--secret", &src]);
    let (_, rawjson) = {
        let out = k.kiln(&["build", "--progress", "rawjson", "--no-cache", "--secret", &src, dir.to_str().unwrap()]);
        assert!(out.status.success());
        ((), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    k.ok(&["build", "-q", "--secret", &src, "-t", "secret:1", dir.to_str().unwrap()]);
    assert_eq!(read(&root.join("mode")), "400\n");
    assert_eq!(read(&root.join("length")).trim(), value.len().to_string());
    assert_eq!(read(&root.join("env-length")).trim(), value.len().to_string());
    assert!(!root.join("run/secrets").exists(), "the secret mount point leaked into the image");

    // Not in a layer, a config, a manifest, the cache index, the progress output, any file.
    let needle = value.as_bytes();
    for (path, bytes) in all_bytes(&k.root()).into_iter().chain(all_bytes(&root)) {
        assert!(!bytes.windows(needle.len()).any(|w| w == needle), "the secret leaked into {}", path.display());
    }
    assert!(!log.contains(value) && !rawjson.contains(value), "the secret leaked into the progress output");
    let inspect = k.ok(&["inspect", "secret:1"]);
    assert!(!inspect.contains(value));

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

#[test]
fn ssh_mounts_forward_a_real_agent() {
    let k = kiln();
    let agent_dir = k.path("agent");
    fs::create_dir_all(&agent_dir).unwrap();
    let socket = agent_dir.join("agent.sock");
    let mut agent =
        Command::new("ssh-agent").args(["-D", "-a"]).arg(&socket).spawn().expect("ssh-agent (openssh-client)");
    for _ in 0..100 {
        if socket.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let key = agent_dir.join("id_ed25519");
    let made = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "kiln-test-key", "-f"])
        .arg(&key)
        .status();
    assert!(made.unwrap().success());
    let added = Command::new("ssh-add").arg(&key).env("SSH_AUTH_SOCK", &socket).output().unwrap();
    assert!(added.status.success(), "{}", String::from_utf8_lossy(&added.stderr));

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
    let sock = format!("default={}", socket.display());
    let (root, _) = build(&k, &dir, &["--ssh", &sock]);
    let keys = read(&root.join("keys.txt"));
    assert!(keys.contains("kiln-test-key") && keys.contains("ED25519"), "{keys}");
    assert!(!root.join("run/buildkit").exists());
    let _ = agent.kill();
    let _ = agent.wait();

    // Without --ssh, a required agent is an error.
    fs::write(dir.join("Dockerfile"), "FROM busybox\nRUN --mount=type=ssh,required=true true\n").unwrap();
    let err = k.fails(&["build", dir.to_str().unwrap()]);
    assert!(err.contains("no ssh agent \"default\""), "{err}");
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
fn cache_mounts_are_seeded_from_a_stage() {
    let k = kiln();
    let dir = context(
        &k,
        "seed",
        "FROM busybox AS seed\nRUN mkdir /seed && echo seeded > /seed/s.txt\n\
         FROM busybox\nRUN --mount=type=cache,id=seeded,target=/c,from=seed,source=/seed,uid=1000,mode=0750 \
         sh -c 'cat /c/s.txt > /out; stat -c \"%u %a\" /c > /owner'\n",
        &[],
    );
    let (root, _) = build(&k, &dir, &[]);
    assert_eq!(read(&root.join("out")), "seeded\n");
    assert_eq!(read(&root.join("owner")), "1000 750\n");
}
