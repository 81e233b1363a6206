//! `kiln build` end to end, as a user runs it: the `kiln` binary builds the Dockerfiles of
//! `testdata/build/` on the busybox base, and the tests look at what a user would: the files
//! of the built root filesystem, the image config, the registry's manifest, what `kiln run`
//! prints, and which steps the progress output says came from the cache.

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use kiln_testkit::kiln::Kiln;
use kiln_testkit::registry::Registry;
use kiln_testkit::skopeo::skopeo;

fn kiln() -> Kiln {
    Kiln::with_busybox(env!("CARGO_BIN_EXE_kiln"))
}

/// A testdata case directory.
fn case(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/build").join(name)
}

/// Copies a testdata case into the environment, so a test can change its files.
fn copy_case(k: &Kiln, name: &str) -> PathBuf {
    let dest = k.path(name);
    copy_tree(&case(name), &dest);
    dest
}

fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Builds `context` with `extra` flags and `--progress rawjson`; returns the names of the
/// steps that ran and of those that were cached.
fn build_steps(k: &Kiln, context: &Path, extra: &[&str]) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut args = vec!["build", "--progress", "rawjson"];
    args.extend_from_slice(extra);
    let context = context.to_str().unwrap();
    args.push(context);
    let out = k.kiln(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "kiln {args:?} failed: {stderr}");
    let (mut ran, mut cached) = (BTreeSet::new(), BTreeSet::new());
    let mut names = std::collections::HashMap::new();
    let mut was_cached = std::collections::HashMap::new();
    for line in stderr.lines().filter(|l| l.starts_with('{')) {
        let status: serde_json::Value = serde_json::from_str(line).unwrap();
        for v in status["vertexes"].as_array().into_iter().flatten() {
            let digest = v["digest"].as_str().unwrap().to_owned();
            if let Some(name) = v["name"].as_str() {
                names.insert(digest.clone(), name.to_owned());
            }
            if v["cached"].as_bool() == Some(true) {
                was_cached.insert(digest, true);
            }
        }
    }
    for (digest, name) in names {
        // Only the Dockerfile's steps: `[stage n/m] …`.
        if !name.starts_with('[') || name.starts_with("[internal]") || name.contains("FROM ") {
            continue;
        }
        if was_cached.contains_key(&digest) {
            cached.insert(name);
        } else {
            ran.insert(name);
        }
    }
    (ran, cached)
}

/// The built image's root filesystem, written out by `--output type=local`.
fn rootfs(k: &Kiln, context: &Path, extra: &[&str]) -> PathBuf {
    let dest = k.path(&format!("rootfs-{}", k.dir.path().read_dir().unwrap().count()));
    let out = format!("type=local,dest={}", dest.display());
    let mut args = vec!["build", "--progress", "plain", "-o", &out];
    args.extend_from_slice(extra);
    args.push(context.to_str().unwrap());
    k.ok(&args);
    dest
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

#[test]
fn demo_builds_runs_and_pushes_to_a_registry() {
    let k = kiln();
    let registry = Registry::plain();
    let name = format!("{}/demo/app:1.0", registry.host());
    let context = case("demo");
    let iid = k.path("iid");
    let metadata = k.path("metadata.json");
    k.ok(&[
        "build",
        "--progress",
        "plain",
        "-t",
        &name,
        "--push",
        "--iidfile",
        iid.to_str().unwrap(),
        "--metadata-file",
        metadata.to_str().unwrap(),
        context.to_str().unwrap(),
    ]);

    // `kiln run` runs the entrypoint with the default CMD, as the user `app`.
    let out = k.ok(&["run", &name]);
    assert_eq!(
        out, "Hello, world! (running as app in /app)\nHELLO FROM A KILN BUILD\nnumbers: 1 2 3 4 5 \n",
        "kiln run output"
    );
    assert!(k.ok(&["run", &name, "kiln"]).starts_with("Hello, kiln!"));

    let image = k.inspect(&name);
    let config = &image["Config"]["config"];
    assert_eq!(config["User"], "app");
    assert_eq!(config["WorkingDir"], "/app");
    assert_eq!(config["Entrypoint"], serde_json::json!(["/usr/local/bin/hello"]));
    assert_eq!(config["Cmd"], serde_json::json!(["world"]));
    assert_eq!(config["Labels"]["org.opencontainers.image.version"], "1.0");
    assert!(config["Env"].as_array().unwrap().contains(&serde_json::json!("APP_HOME=/app")));
    // One layer per non-empty history entry: busybox's, then WORKDIR and the three COPYs.
    let history = image["Config"]["history"].as_array().unwrap();
    let layers = image["Manifest"]["layers"].as_array().unwrap();
    let non_empty = history.iter().filter(|h| h["empty_layer"] != true).count();
    assert_eq!(non_empty, layers.len(), "history {history:#?}");
    assert_eq!(layers.len(), 5);
    assert_eq!(history.last().unwrap()["created_by"], "CMD [\"world\"]");

    assert_eq!(read(&iid), image["Id"].as_str().unwrap());
    let meta: serde_json::Value = serde_json::from_str(&read(&metadata)).unwrap();
    assert_eq!(meta["containerimage.digest"], image["Digest"]);
    // The registry serves exactly the manifest kiln stored.
    let raw = skopeo(&["inspect", "--raw", "--tls-verify=false", &format!("docker://{name}")]);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&raw).unwrap(), image["Manifest"]);
}

#[test]
fn every_core_instruction_lands_in_the_image() {
    let k = kiln();
    let context = case("instructions");
    k.ok(&["build", "-q", "-t", "instructions:1", context.to_str().unwrap()]);
    // `--output type=local` writes files and names nothing (the build is a cache hit).
    let root = rootfs(&k, &context, &[]);

    assert_eq!(read(&root.join("workdir.txt")), "/base/nested\n");
    assert_eq!(read(&root.join("exec.txt")), "exec-form hello kiln\n");
    assert_eq!(read(&root.join("heredoc.txt")), "heredoc line 1\ngreeting=hello\n");
    assert_eq!(read(&root.join("copied/one.txt")), "first text file\n");
    assert_eq!(read(&root.join("copied/two.txt")), "second text file\n");
    assert!(!root.join("copied/three.dat").exists(), "*.txt must not match three.dat");
    // A directory source copies its contents.
    assert_eq!(read(&root.join("subdir-contents/inner.txt")), "in sub\n");
    assert_eq!(read(&root.join("subdir-contents/deeper/leaf.txt")), "deeper\n");
    let owned = fs::metadata(root.join("owned/readme.md")).unwrap();
    assert_eq!((owned.uid(), owned.gid(), owned.permissions().mode() & 0o7777), (1000, 1000, 0o640));
    let numeric = fs::metadata(root.join("numeric/readme.md")).unwrap();
    assert_eq!((numeric.uid(), numeric.gid()), (1234, 1234));
    let plain = fs::metadata(root.join("copied/one.txt")).unwrap();
    assert_eq!((plain.uid(), plain.gid()), (0, 0), "context files are owned by root");
    // ADD unpacks local archives, recognised by their content, and copies other files.
    assert_eq!(read(&root.join("unpacked/pkg/data.txt")), "from the archive\n");
    assert_eq!(read(&root.join("unpacked-by-content/pkg/data.txt")), "from the archive\n");
    assert_eq!(read(&root.join("added/one.txt")), "first text file\n");
    assert!(fs::symlink_metadata(root.join("bin/wget")).is_err(), "a deleted file stays deleted");
    assert_eq!(read(&root.join("shell.txt")), "shell=/bin/sh\n");
    // BuildKit keeps what later steps write below a VOLUME.
    assert_eq!(read(&root.join("data/kept.txt")), "after volume\n");

    let image = k.inspect("instructions:1");
    let config = &image["Config"]["config"];
    let env: Vec<&str> = config["Env"].as_array().unwrap().iter().map(|e| e.as_str().unwrap()).collect();
    assert!(env.contains(&"NAME=kiln") && env.contains(&"MESSAGE=hello kiln"), "{env:?}");
    assert!(!env.iter().any(|e| e.starts_with("GREETING=")), "ARG values are not ENV");
    assert_eq!(config["Labels"]["com.example.greeting"], "hello");
    assert_eq!(config["Labels"]["com.example.multi word"], "yes");
    assert_eq!(config["ExposedPorts"], serde_json::json!({"53/udp": {}, "8080/tcp": {}}));
    assert_eq!(config["Volumes"], serde_json::json!({"/data": {}}));
    assert_eq!(config["User"], "app");
    assert_eq!(config["WorkingDir"], "/base/nested");
    assert_eq!(config["StopSignal"], "SIGTERM");
    assert_eq!(config["Shell"], serde_json::json!(["/bin/sh", "-e", "-c"]));
    assert_eq!(config["Healthcheck"]["Test"], serde_json::json!(["CMD", "/bin/true"]));
    assert_eq!(config["Healthcheck"]["Interval"], 30_000_000_000u64);
    assert_eq!(config["Healthcheck"]["Retries"], 2);
    assert_eq!(config["OnBuild"], serde_json::json!(["RUN echo \"triggered\" > /tmp/onbuild.txt"]));
    assert_eq!(config["Entrypoint"], serde_json::json!(["/bin/echo", "entry"]));
    assert_eq!(config["Cmd"], serde_json::json!(["default", "args"]));
    assert_eq!(image["Config"]["author"], "kiln tests <tests@kiln.invalid>");
    let history = image["Config"]["history"].as_array().unwrap();
    let created_by: Vec<&str> = history.iter().map(|h| h["created_by"].as_str().unwrap_or("")).collect();
    assert!(created_by.contains(&"RUN |1 GREETING=hello /bin/sh -c pwd > /workdir.txt # buildkit"), "{created_by:#?}");
    assert_eq!(k.ok(&["run", "instructions:1"]), "entry default args\n");

    // ONBUILD triggers run in a child build, and are not inherited further.
    let child = k.path("child");
    fs::create_dir_all(&child).unwrap();
    fs::write(child.join("Dockerfile"), "FROM instructions:1\nRUN cat /tmp/onbuild.txt\n").unwrap();
    k.ok(&["build", "-q", "-t", "child:1", child.to_str().unwrap()]);
    let child_root = rootfs(&k, &child, &[]);
    assert_eq!(read(&child_root.join("tmp/onbuild.txt")), "triggered\n");
    assert!(k.inspect("child:1")["Config"]["config"]["OnBuild"].is_null());
}

#[test]
fn cache_hits_follow_content_not_timestamps() {
    let k = kiln();
    let context = copy_case(&k, "demo");
    let (ran, cached) = build_steps(&k, &context, &[]);
    assert!(cached.is_empty(), "a cold build has no hits: {cached:?}");
    let all: BTreeSet<String> = ran.clone();
    assert_eq!(all.len(), 8, "{all:#?}");

    // Nothing changed: every step is cached.
    let (ran, cached) = build_steps(&k, &context, &[]);
    assert!(ran.is_empty(), "ran again: {ran:?}");
    assert_eq!(cached, all);

    // Only timestamps changed, and an ignored file: still every step cached.
    let greeting = context.join("greeting.txt");
    let f = fs::File::options().write(true).open(&greeting).unwrap();
    f.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(3600)).unwrap();
    fs::write(context.join("notes.md"), "changed notes").unwrap();
    let (ran, _) = build_steps(&k, &context, &[]);
    assert!(ran.is_empty(), "mtime or ignored changes re-ran: {ran:?}");

    // One file changed: the steps that read it and what builds on them run, the others hit,
    // including steps after the first miss in other stages.
    fs::write(&greeting, "a changed greeting\n").unwrap();
    let (ran, cached) = build_steps(&k, &context, &[]);
    let ran: Vec<&str> = ran.iter().map(String::as_str).collect();
    assert_eq!(
        ran,
        [
            "[stage-2 3/5] COPY --from=text /src/shout.txt ./",
            "[stage-2 4/5] COPY --from=numbers /numbers.txt ./",
            "[stage-2 5/5] COPY --chmod=755 hello.sh /usr/local/bin/hello",
            "[text 3/4] COPY greeting.txt ./",
            "[text 4/4] RUN tr 'a-z' 'A-Z' < greeting.txt > shout.txt",
        ]
    );
    assert!(cached.iter().any(|s| s.starts_with("[numbers 2/2] RUN seq 1")), "{cached:?}");

    // A build arg one stage's RUN uses: that stage and what copies from it rebuild.
    let (ran, cached) = build_steps(&k, &context, &["--build-arg", "COUNT=3"]);
    assert!(ran.iter().any(|s| s.starts_with("[numbers 2/2] RUN")), "{ran:?}");
    assert!(cached.iter().any(|s| s.starts_with("[text 4/4] RUN")), "{cached:?}");
    assert!(!ran.iter().any(|s| s.starts_with("[text")), "{ran:?}");

    // --no-cache runs everything again.
    let (ran, cached) = build_steps(&k, &context, &["--no-cache"]);
    assert!(cached.is_empty(), "{cached:?}");
    assert_eq!(ran, all);
}

#[test]
fn a_failing_step_names_its_location_and_output_and_the_store_stays_usable() {
    let k = kiln();
    let dir = k.path("failing");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("Dockerfile"), "FROM busybox\nRUN echo before > /f\nRUN echo oops-output && exit 3\n").unwrap();
    let err = k.fails(&["build", "--progress", "plain", dir.to_str().unwrap()]);
    assert!(err.contains("Dockerfile:3"), "{err}");
    assert!(err.contains("exit code: 3"), "{err}");
    assert!(err.contains("oops-output"), "{err}");

    // Fixed, it builds, reusing the step that succeeded.
    fs::write(dir.join("Dockerfile"), "FROM busybox\nRUN echo before > /f\nRUN echo fixed\n").unwrap();
    let (ran, cached) = build_steps(&k, &dir, &[]);
    assert_eq!(cached.into_iter().collect::<Vec<_>>(), ["[2/3] RUN echo before > /f"]);
    assert_eq!(ran.into_iter().collect::<Vec<_>>(), ["[3/3] RUN echo fixed"]);
    // No snapshot or mount is left behind.
    let mounts = read(Path::new("/proc/self/mountinfo"));
    assert!(!mounts.contains(k.root().to_str().unwrap()), "{mounts}");
}

#[test]
fn unsupported_requests_fail_with_a_clear_error() {
    let k = kiln();
    let dir = k.path("mounts");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("Dockerfile"), "FROM busybox\nRUN --mount=type=volume,target=/c true\n").unwrap();
    let err = k.fails(&["build", dir.to_str().unwrap()]);
    assert!(err.contains("Dockerfile:2") && err.contains("unsupported mount type \"volume\""), "{err}");
    let err = k.fails(&["build", "--platform", "linux/s390x", dir.to_str().unwrap()]);
    assert!(err.contains("host platform"), "{err}");
    let err = k.fails(&["build", "--secret", "id=a,src=/nonexistent", dir.to_str().unwrap()]);
    assert!(err.contains("/nonexistent is not a file"), "{err}");
    let err = k.fails(&["build", "-o", "type=tar", dir.to_str().unwrap()]);
    assert!(err.contains("type=tar needs dest=FILE"), "{err}");
}

#[test]
fn outputs_targets_and_dockerfile_sources() {
    let k = kiln();
    let context = case("demo");
    let ctx = context.to_str().unwrap();

    // --target builds one stage; -q prints only the image id.
    let id = k.ok(&["build", "-q", "--target", "numbers", "--build-arg", "COUNT=2", "-t", "numbers:1", ctx]);
    assert_eq!(id.trim(), k.inspect("numbers:1")["Id"].as_str().unwrap());
    assert_eq!(k.ok(&["run", "numbers:1", "cat", "/numbers.txt"]), "1\n2\n");

    // An OCI layout and a docker archive.
    for (kind, marker) in [("oci", "index.json"), ("docker", "manifest.json")] {
        let dest = k.path(&format!("{kind}.tar"));
        k.ok(&["build", "-q", "-t", "demo:x", "-o", &format!("type={kind},dest={}", dest.display()), ctx]);
        let listing = std::process::Command::new("tar").arg("-tf").arg(&dest).output().unwrap();
        let listing = String::from_utf8(listing.stdout).unwrap();
        assert!(listing.lines().any(|l| l == marker), "{kind}: {listing}");
    }
    // name= names the image in an archive, as -t does.
    let dest = k.path("named.tar");
    k.ok(&["build", "-q", "-o", &format!("type=docker,dest={},name=named:2", dest.display()), ctx]);
    let manifest = std::process::Command::new("tar").arg("-xOf").arg(&dest).arg("manifest.json").output().unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(&manifest.stdout).unwrap();
    assert_eq!(manifest[0]["RepoTags"], serde_json::json!(["named:2"]), "{manifest:#}");

    // -f - reads the Dockerfile from stdin; --label is set on the image.
    let mut child = k
        .command(&["build", "-q", "-f", "-", "--label", "from=stdin", "-t", "stdin:1", ctx])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"FROM busybox\nCOPY greeting.txt /\n").unwrap();
    assert!(child.wait_with_output().unwrap().status.success());
    assert_eq!(k.inspect("stdin:1")["Config"]["config"]["Labels"]["from"], "stdin");
    assert_eq!(k.ok(&["run", "stdin:1", "cat", "/greeting.txt"]), "hello from a kiln build\n");

    // A Dockerfile outside the context.
    let outside = k.path("Other.Dockerfile");
    fs::write(&outside, "FROM busybox\nCOPY hello.sh /h\n").unwrap();
    k.ok(&["build", "-q", "-f", outside.to_str().unwrap(), "-t", "outside:1", ctx]);
    assert!(k.ok(&["run", "outside:1", "cat", "/h"]).starts_with("#!/bin/sh"));
}

#[test]
fn add_downloads_urls_and_verifies_checksums() {
    let k = kiln();
    let server = kiln_testkit::http::FileServer::start(vec![("/files/tool.sh", b"#!/bin/sh\necho tool\n".to_vec())]);
    let url = format!("{}/files/tool.sh", server.url());
    let good = "sha256:5c3a4a7d4a6de2e2fe0b50b1df3e0d8c4d6b4de4e7a3d4cbd9b0d53e2c4d1234";
    let dir = k.path("add-url");
    fs::create_dir_all(&dir).unwrap();

    // The real digest of the body, as a user would compute it with sha256sum.
    let digest = {
        let out = std::process::Command::new("sha256sum")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                c.stdin.take().unwrap().write_all(b"#!/bin/sh\necho tool\n")?;
                c.wait_with_output()
            })
            .unwrap();
        format!("sha256:{}", String::from_utf8(out.stdout).unwrap().split_whitespace().next().unwrap())
    };
    fs::write(
        dir.join("Dockerfile"),
        format!("FROM busybox\nADD {url} /opt/\nADD --checksum={digest} {url} /verified/tool.sh\n"),
    )
    .unwrap();
    let root = rootfs(&k, &dir, &[]);
    assert_eq!(read(&root.join("opt/tool.sh")), "#!/bin/sh\necho tool\n");
    let meta = fs::metadata(root.join("verified/tool.sh")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o600, "downloads are 0600, as BuildKit makes them");
    assert_eq!(meta.mtime(), 784111777, "the mtime is the server's Last-Modified");

    fs::write(dir.join("Dockerfile"), format!("FROM busybox\nADD --checksum={good} {url} /x\n")).unwrap();
    let err = k.fails(&["build", dir.to_str().unwrap()]);
    assert!(err.contains("checksum mismatch") && err.contains("Dockerfile:2"), "{err}");
    fs::write(dir.join("Dockerfile"), format!("FROM busybox\nADD {}/missing /x\n", server.url())).unwrap();
    let err = k.fails(&["build", dir.to_str().unwrap()]);
    assert!(err.contains("404") && err.contains("/missing"), "{err}");
}

/// A loopback port nothing listens on.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn independent_stages_run_at_once_and_jobs_limits_them() {
    let k = kiln();
    let dir = k.path("rendezvous");
    fs::create_dir_all(&dir).unwrap();
    // Stage a waits for stage b to connect: the build only succeeds when both RUN steps are
    // running at the same time (RUN steps share the host network by default).
    fs::write(
        dir.join("Dockerfile"),
        "FROM busybox AS a\nARG PORT\nARG WAIT=60\n\
         RUN nc -l -p $PORT > /got & for i in $(seq 1 $((WAIT * 10))); do [ -s /got ] && exit 0; sleep 0.1; done; exit 1\n\
         FROM busybox AS b\nARG PORT\nARG WAIT=60\n\
         RUN for i in $(seq 1 $((WAIT * 10))); do echo rendezvous | nc 127.0.0.1 $PORT && exit 0; sleep 0.1; done; exit 1\n\
         FROM busybox\nCOPY --from=a /got /got\nCOPY --from=b /etc/passwd /b-passwd\n",
    )
    .unwrap();
    let port = free_port().to_string();
    let root = rootfs(&k, &dir, &["--build-arg", &format!("PORT={port}")]);
    assert_eq!(read(&root.join("got")), "rendezvous\n");

    // With one RUN at a time the two steps cannot meet.
    let port = free_port().to_string();
    let err = k.fails(&[
        "build",
        "--progress",
        "plain",
        "--jobs",
        "1",
        "--build-arg",
        &format!("PORT={port}"),
        "--build-arg",
        "WAIT=3",
        dir.to_str().unwrap(),
    ]);
    assert!(err.contains("did not complete successfully"), "{err}");
}

#[test]
fn an_interrupted_build_leaves_nothing_behind_and_the_next_build_works() {
    let k = kiln();
    let dir = k.path("interrupted");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("Dockerfile"), "FROM busybox\nRUN echo started-long-step && sleep 1000\n").unwrap();
    for signal in ["INT", "KILL"] {
        let mut child =
            k.command(&["build", "--progress", "plain", dir.to_str().unwrap()]).stderr(Stdio::piped()).spawn().unwrap();
        // Wait until the step's process is running (its output line arrives).
        let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
        let mut seen = String::new();
        loop {
            let mut line = String::new();
            assert!(std::io::BufRead::read_line(&mut stderr, &mut line).unwrap() > 0, "no output: {seen}");
            seen.push_str(&line);
            if line.contains("started-long-step") && !line.contains("RUN") {
                break;
            }
        }
        let status = std::process::Command::new("kill").arg(format!("-{signal}")).arg(child.id().to_string()).status();
        assert!(status.unwrap().success());
        let status = child.wait().unwrap();
        assert!(!status.success());
        if signal == "INT" {
            let mut rest = String::new();
            std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
            assert!(rest.contains("cancelled"), "{rest}");
        }
        // The step's processes are gone once kiln is (the sandbox dies with it).
        let mut gone = false;
        for _ in 0..100 {
            let ps = std::process::Command::new("pgrep").args(["-f", "sleep 1000"]).output().unwrap();
            if ps.stdout.is_empty() {
                gone = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        assert!(gone, "the step's process outlived kiln ({signal})");
    }
    // The next build cleans up what the killed one left, and works.
    fs::write(dir.join("Dockerfile"), "FROM busybox\nRUN echo ok > /ok\n").unwrap();
    let root = rootfs(&k, &dir, &[]);
    assert_eq!(read(&root.join("ok")), "ok\n");
    let mounts = read(Path::new("/proc/self/mountinfo"));
    assert!(!mounts.contains(k.root().to_str().unwrap()), "{mounts}");
    let leftovers: Vec<_> =
        fs::read_dir(k.root().join("tmp/runner")).map(|d| d.flatten().collect()).unwrap_or_default();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn stage_chains_image_sources_heredoc_scripts_and_build_flags() {
    let k = kiln();
    let context = case("features");
    // A listener on the host that a `--network=none` step must not reach.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = format!("PORT={}", listener.local_addr().unwrap().port());
    let flags = ["--build-arg", &port, "--build-arg", "SOURCE_DATE_EPOCH=1700000000", "--compression", "zstd"];
    let mut args = vec!["build", "-q", "-t", "features:1"];
    args.extend_from_slice(&flags);
    args.push(context.to_str().unwrap());
    k.ok(&args);
    let root = rootfs(&k, &context, &flags);

    assert_eq!(read(&root.join("base.txt")), "from base\n");
    assert_eq!(read(&root.join("script.txt")), "script ran as /dev/pipes/EOT\n");
    assert!(!root.join("dev/pipes").exists(), "the heredoc script is mounted, not committed");
    let mode = |p: &str| fs::metadata(root.join(p)).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode("usr/local/bin/tool"), 0o755);
    assert_eq!(mode("notes.txt"), 0o755);
    assert_eq!(read(&root.join("passwd-from-image")), read(&root.join("etc/passwd")));
    assert_eq!(read(&root.join("network.txt")), "unreachable\n");
    drop(listener);

    let image = k.inspect("features:1");
    let config = &image["Config"];
    assert_eq!(config["config"]["Entrypoint"], serde_json::json!(["/bin/cat"]));
    assert!(config["config"]["Cmd"].is_null(), "a new ENTRYPOINT resets the base's CMD: {config:#}");
    assert_eq!(config["created"], "2023-11-14T22:13:20Z", "SOURCE_DATE_EPOCH is the creation time");
    let layers = image["Manifest"]["layers"].as_array().unwrap();
    // busybox's imported layer keeps its gzip; every layer this build made is zstd.
    assert!(layers[0]["mediaType"].as_str().unwrap().ends_with("+gzip"));
    assert!(layers[1..].iter().all(|l| l["mediaType"].as_str().unwrap().ends_with("+zstd")), "{layers:#?}");

    // --no-cache-filter runs the named stage's steps again and reuses the others.
    let mut filtered = flags.to_vec();
    filtered.extend_from_slice(&["--no-cache-filter", "child"]);
    let (ran, cached) = build_steps(&k, &context, &filtered);
    assert!(ran.iter().any(|s| s.starts_with("[child")), "{ran:?}");
    assert!(!ran.iter().any(|s| s.starts_with("[base")), "{ran:?}");
    assert!(cached.iter().any(|s| s.starts_with("[base")), "{cached:?}");
}

#[test]
fn pull_re_resolves_base_tags_at_their_registry() {
    let k = kiln();
    let registry = Registry::plain();
    let base = format!("{}/kiln/base:1", registry.host());
    let dir = k.path("pull");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("Dockerfile"), format!("FROM {base}\nRUN cat /version\n")).unwrap();
    let push_version = |version: &str| {
        let ctx = k.path(&format!("base-{version}"));
        fs::create_dir_all(&ctx).unwrap();
        fs::write(ctx.join("Dockerfile"), format!("FROM busybox\nRUN echo {version} > /version\n")).unwrap();
        k.ok(&["build", "-q", "-t", &base, "--push", ctx.to_str().unwrap()]);
    };
    push_version("v1");
    k.ok(&["rmi", &base]);
    // Not in the store: pulled from the registry.
    let root = rootfs(&k, &dir, &[]);
    assert_eq!(read(&root.join("version")), "v1\n");

    // The registry's tag moves on; the store's copy is used until --pull asks again.
    push_version("v2");
    let ctx_v1 = k.path("base-v1");
    k.ok(&["build", "-q", "-t", &base, ctx_v1.to_str().unwrap()]);
    let root = rootfs(&k, &dir, &[]);
    assert_eq!(read(&root.join("version")), "v1\n");
    let root = rootfs(&k, &dir, &["--pull"]);
    assert_eq!(read(&root.join("version")), "v2\n");

    // Pulls and pushes are in the progress stream: a step each, its blobs as sub-tasks.
    k.ok(&["rmi", &base]);
    let pushed = format!("{}/kiln/pushed:1", registry.host());
    let out = k.kiln(&["build", "--progress", "rawjson", "--pull", "-t", &pushed, "--push", dir.to_str().unwrap()]);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "{stderr}");
    let statuses: Vec<serde_json::Value> = stderr.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let vertex_named = |prefix: &str| {
        let v = statuses.iter().flat_map(|s| s["vertexes"].as_array().cloned().unwrap_or_default());
        v.filter(|v| v["name"].as_str().is_some_and(|n| n.starts_with(prefix))).map(|v| v["digest"].clone()).next()
    };
    let subtasks_done = |vertex: &serde_json::Value| {
        let s = statuses.iter().flat_map(|s| s["statuses"].as_array().cloned().unwrap_or_default());
        s.filter(|s| s["vertex"] == *vertex && s["completed"].is_string())
            .map(|s| s["id"].as_str().unwrap().to_owned())
            .collect::<BTreeSet<_>>()
    };
    let push = vertex_named(&format!("pushing {pushed}")).expect("a pushing step");
    let layers = k.inspect(&pushed)["Manifest"]["layers"].as_array().unwrap().len();
    // Every layer and the config, each done.
    assert_eq!(subtasks_done(&push).len(), layers + 1, "{stderr}");
    let pull = vertex_named("[internal] load metadata for").expect("a resolve step");
    assert!(subtasks_done(&pull).iter().all(|id| id.starts_with("sha256:")), "{stderr}");
    assert!(!subtasks_done(&pull).is_empty(), "the pull's blobs: {stderr}");
}

#[test]
fn copy_link_layers_are_reused_on_a_new_base_and_heredoc_files_are_written() {
    let k = kiln();
    let dir = k.path("link");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("app.txt"), "the app\n").unwrap();
    fs::write(
        dir.join("Dockerfile"),
        "FROM busybox\nARG V=1\nRUN echo $V > /v\nCOPY --link app.txt /app/app.txt\n\
         COPY <<EOF /greeting.txt\nhello $V\nEOF\n\
         COPY --chmod=755 <<script.sh <<notes.txt /opt/\n#!/bin/sh\necho script\nscript.sh\njust notes\nnotes.txt\n\
         COPY --chown=app:app <<'RAW' /raw.txt\nkeep $V literal\nRAW\n\
         COPY --link --chmod=600 app.txt /app/private.txt\n",
    )
    .unwrap();
    k.ok(&["build", "-q", "-t", "link:1", dir.to_str().unwrap()]);
    let (ran, cached) = build_steps(&k, &dir, &["-t", "link:2", "--build-arg", "V=2"]);
    assert!(ran.iter().any(|s| s.starts_with("[2/7] RUN")), "{ran:?}");
    assert!(
        cached.iter().any(|s| s.starts_with("[3/7] COPY --link app.txt")),
        "a new base must not invalidate a linked copy: {ran:?}"
    );
    // As in BuildKit, --chmod makes a --link copy an ordinary one: it follows its base.
    assert!(ran.iter().any(|s| s.starts_with("[7/7] COPY --link --chmod=600")), "{ran:?}");
    k.ok(&["build", "-q", "-t", "link:2", "--build-arg", "V=2", dir.to_str().unwrap()]);
    let layers = |tag: &str| k.inspect(tag)["Manifest"]["layers"].as_array().unwrap().clone();
    let (one, two) = (layers("link:1"), layers("link:2"));
    assert_ne!(one[1], two[1], "the RUN layers differ");
    assert_eq!(one[2], two[2], "the linked layer is the same blob on both bases");

    let root = rootfs(&k, &dir, &["--build-arg", "V=2"]);
    assert_eq!(read(&root.join("v")), "2\n");
    assert_eq!(read(&root.join("app/app.txt")), "the app\n");
    assert_eq!(read(&root.join("greeting.txt")), "hello 2\n");
    assert_eq!(read(&root.join("raw.txt")), "keep $V literal\n");
    let raw = fs::metadata(root.join("raw.txt")).unwrap();
    assert_eq!((raw.uid(), raw.gid()), (1000, 1000));
    let script = fs::metadata(root.join("opt/script.sh")).unwrap();
    assert_eq!(script.permissions().mode() & 0o777, 0o755);
    assert_eq!(read(&root.join("opt/notes.txt")), "just notes\n");
    assert_eq!(fs::metadata(root.join("app/private.txt")).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(k.ok(&["run", "link:2", "/opt/script.sh"]), "script\n");
}

#[test]
fn a_rebuild_from_the_cache_gives_the_same_image() {
    let k = kiln();
    let ctx = case("demo");
    let first = k.ok(&["build", "-q", ctx.to_str().unwrap()]);
    // The image is as new as its newest step: a later no-op rebuild changes nothing.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let second = k.ok(&["build", "-q", ctx.to_str().unwrap()]);
    assert_eq!(first, second);
    let third = k.ok(&["build", "-q", "--no-cache", ctx.to_str().unwrap()]);
    assert_ne!(first, third, "steps that ran again are newer");
}

#[test]
fn copy_parents_and_exclude() {
    let k = kiln();
    let dir = k.path("parents");
    for (path, content) in [
        ("a/b/one.txt", "1\n"),
        ("a/c/two.txt", "2\n"),
        ("a/c/skip.md", "no\n"),
        ("docs/x.txt", "x\n"),
        ("docs/y.md", "y\n"),
    ] {
        let p = dir.join(path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, content).unwrap();
    }
    fs::write(
        dir.join("Dockerfile"),
        "FROM busybox\nCOPY --parents a/./**/*.txt /kept/\nCOPY --exclude=*.md docs /docs\n\
         COPY --parents --exclude=**/skip.md --exclude=**/b a/ /whole/\n",
    )
    .unwrap();
    let root = rootfs(&k, &dir, &[]);
    // --parents without a pivot keeps the whole path; two --exclude both apply.
    assert_eq!(read(&root.join("whole/a/c/two.txt")), "2\n");
    assert!(!root.join("whole/a/c/skip.md").exists() && !root.join("whole/a/b").exists());
    assert_eq!(read(&root.join("kept/b/one.txt")), "1\n");
    assert_eq!(read(&root.join("kept/c/two.txt")), "2\n");
    assert!(!root.join("kept/c/skip.md").exists() && !root.join("kept/a").exists());
    assert_eq!(read(&root.join("docs/x.txt")), "x\n");
    assert!(!root.join("docs/y.md").exists(), "--exclude");
}

#[test]
fn output_flags_that_would_be_ignored_are_errors() {
    let k = kiln();
    let ctx = case("demo");
    let ctx = ctx.to_str().unwrap();
    let err = k.fails(&["build", "-t", "x:1", "-o", "type=local,dest=out", ctx]);
    assert!(err.contains("-t and --push have nothing to name or push"), "{err}");
    let err = k.fails(&["build", "--push", "-t", "x:1", "-o", "type=oci,dest=x.tar", ctx]);
    assert!(err.contains("--push needs an image output"), "{err}");
    let err = k.fails(&["build", "-o", "type=image,dest=somewhere", ctx]);
    assert!(err.contains("option \"dest\" is not supported for type=image"), "{err}");
    let err = k.fails(&["build", "-o", "type=image,name=x:1,push=yes", ctx]);
    assert!(err.contains("push=\"yes\" is not true or false"), "{err}");
}

/// The media types and diffIDs of the layers of `image`.
fn layer_types(k: &Kiln, image: &str) -> (Vec<String>, Vec<String>) {
    let image = k.inspect(image);
    let types = image["Manifest"]["layers"].as_array().unwrap().iter();
    let types = types.map(|l| l["mediaType"].as_str().unwrap().to_owned()).collect();
    let diff_ids = image["Config"]["rootfs"]["diff_ids"].as_array().unwrap().iter();
    (types, diff_ids.map(|d| d.as_str().unwrap().to_owned()).collect())
}

#[test]
fn cached_steps_follow_compression_source_date_epoch_and_no_cache_runs() {
    let k = kiln();
    let dir = k.path("stamps");
    fs::create_dir_all(&dir).unwrap();
    // Each RUN writes something new every time it runs, so a hit is told from a re-run.
    fs::write(
        dir.join("Dockerfile"),
        "FROM busybox AS stamp\nRUN cat /proc/sys/kernel/random/uuid > /stamp\n\
         FROM busybox\nCOPY --from=stamp /stamp /stamp\nRUN cat /proc/sys/kernel/random/uuid > /second\n",
    )
    .unwrap();
    let ctx = dir.to_str().unwrap();
    let stamps = |image: &str| (k.ok(&["run", image, "cat", "/stamp"]), k.ok(&["run", image, "cat", "/second"]));
    k.ok(&["build", "-q", "-t", "s:gzip", ctx]);
    let (gzip_types, gzip_ids) = layer_types(&k, "s:gzip");
    assert!(gzip_types[1..].iter().all(|t| t.ends_with("+gzip")), "{gzip_types:?}");

    // Another compression: every step is a hit, and its layers come in the compression asked
    // for, holding the same tars.
    let (ran, _) = build_steps(&k, &dir, &["--compression", "zstd", "-t", "s:zstd"]);
    assert!(ran.is_empty(), "a compression change re-ran {ran:?}");
    let (zstd_types, zstd_ids) = layer_types(&k, "s:zstd");
    assert!(zstd_types[0].ends_with("+gzip"), "the base's layer is kept as pulled: {zstd_types:?}");
    assert!(zstd_types[1..].iter().all(|t| t.ends_with("+zstd")), "{zstd_types:?}");
    assert_eq!(zstd_ids, gzip_ids);
    assert_eq!(stamps("s:zstd"), stamps("s:gzip"));
    let (ran, _) = build_steps(&k, &dir, &["--compression", "uncompressed", "-t", "s:plain"]);
    assert!(ran.is_empty(), "{ran:?}");
    let (plain_types, _) = layer_types(&k, "s:plain");
    assert!(plain_types[1..].iter().all(|t| t.ends_with(".tar")), "{plain_types:?}");

    // --no-cache runs every step, and the next plain build reuses what it made, not the
    // older entries.
    k.ok(&["build", "-q", "--no-cache", "-t", "s:fresh", ctx]);
    assert_ne!(stamps("s:fresh").0, stamps("s:gzip").0);
    let (ran, _) = build_steps(&k, &dir, &["-t", "s:after"]);
    assert!(ran.is_empty(), "{ran:?}");
    assert_eq!(stamps("s:after"), stamps("s:fresh"));

    // --no-cache-filter on the first stage: its new /stamp reaches the final stage, whose
    // steps built on the old one do not hit.
    let (ran, _) = build_steps(&k, &dir, &["--no-cache-filter", "stamp", "-t", "s:filtered"]);
    assert!(ran.iter().any(|s| s.starts_with("[stage-1 3/3] RUN")), "{ran:?}");
    let (stamp, second) = stamps("s:filtered");
    assert_ne!(stamp, stamps("s:after").0);
    assert_ne!(second, stamps("s:after").1);
    let (ran, _) = build_steps(&k, &dir, &["-t", "s:again"]);
    assert!(ran.is_empty(), "{ran:?}");
    assert_eq!(stamps("s:again"), (stamp, second));

    // SOURCE_DATE_EPOCH changes the layers (clamped mtimes): the steps run again.
    let epoch = ["--build-arg", "SOURCE_DATE_EPOCH=1700000000"];
    let (ran, _) = build_steps(&k, &dir, &epoch);
    assert!(ran.iter().any(|s| s.contains("RUN")), "{ran:?}");
    let root = rootfs(&k, &dir, &epoch);
    assert!(fs::metadata(root.join("second")).unwrap().mtime() <= 1_700_000_000);
}

/// The entries of a tar (as `tar -tv` lists them: mode, owner, size, name, link).
fn tar_listing(tar: &[u8]) -> Vec<String> {
    let mut child = std::process::Command::new("tar")
        .args(["-tv", "--numeric-owner", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let tar = tar.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&tar));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(out.status.success(), "not a tar");
    // `-rwxr-xr-x 0/0 1234 2023-11-14 22:13 ./bin/sh`: keep mode, owner, size and name.
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            format!("{} {} {} {}", f[0], f[1], f[2], f[5..].join(" "))
        })
        .collect()
}

#[test]
fn outputs_to_files_standard_output_and_names() {
    let k = kiln();
    let ctx = case("demo");
    let ctx = ctx.to_str().unwrap();

    // type=tar: the root filesystem as one tar, the same entries as type=local's directory.
    let tar_path = k.path("rootfs.tar");
    k.ok(&["build", "-q", "-o", &format!("type=tar,dest={}", tar_path.display()), ctx]);
    let from_file = tar_listing(&fs::read(&tar_path).unwrap());
    assert!(
        from_file.iter().any(|e| e.starts_with("-rwxr-xr-x 0/0") && e.ends_with(" usr/local/bin/hello")),
        "{from_file:#?}"
    );
    assert!(from_file.iter().any(|e| e.ends_with(" app/shout.txt")), "{from_file:#?}");
    let local = rootfs(&k, &case("demo"), &[]);
    let mut local_names: Vec<String> = Vec::new();
    let walk =
        std::process::Command::new("find").arg(".").arg("-mindepth").arg("1").current_dir(&local).output().unwrap();
    for line in String::from_utf8(walk.stdout).unwrap().lines() {
        local_names.push(line.trim_start_matches("./").to_owned());
    }
    let mut tar_names: Vec<String> = from_file
        .iter()
        .map(|e| e.splitn(4, ' ').nth(3).unwrap().split(" -> ").next().unwrap().split(" link to ").next().unwrap())
        .map(|n| n.trim_end_matches('/').to_owned())
        .collect();
    local_names.sort();
    tar_names.sort();
    assert_eq!(tar_names, local_names);

    // `-o -` writes the same tar to standard output; -q then prints nothing there.
    let out = k.kiln(&["build", "-q", "-o", "-", ctx]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(tar_listing(&out.stdout), from_file);
    // An archive on standard output is the archive only, with -q too.
    let out = k.kiln(&["build", "-q", "-o", "type=docker", ctx]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(tar_listing(&out.stdout).iter().any(|e| e.ends_with(" manifest.json")));

    // -o DIR is type=local; -t twice names the image twice; the metadata file names them.
    let dir = k.path("short");
    k.ok(&["build", "-q", "-o", dir.to_str().unwrap(), ctx]);
    assert!(dir.join("usr/local/bin/hello").is_file());
    let metadata = k.path("metadata.json");
    let id = k.ok(&["build", "-q", "-t", "one:1", "-t", "two:2", "--metadata-file", metadata.to_str().unwrap(), ctx]);
    assert_eq!(k.inspect("one:1")["Id"], k.inspect("two:2")["Id"]);
    assert_eq!(k.inspect("one:1")["Id"].as_str().unwrap(), id.trim());
    let meta: serde_json::Value = serde_json::from_str(&read(&metadata)).unwrap();
    assert_eq!(meta["image.name"], "docker.io/library/one:1,docker.io/library/two:2");
    assert_eq!(meta["containerimage.descriptor"]["digest"], meta["containerimage.digest"]);
    assert!(meta["containerimage.descriptor"]["size"].as_u64().unwrap() > 0);
    // Without a name, no `image.name` (as buildx).
    k.ok(&["build", "-q", "--metadata-file", metadata.to_str().unwrap(), ctx]);
    let meta: serde_json::Value = serde_json::from_str(&read(&metadata)).unwrap();
    assert!(meta.get("image.name").is_none(), "{meta:#}");

    // type=image with a name stores it; rawjson progress is JSON lines only.
    let out = k.kiln(&["build", "--progress", "rawjson", "-o", "type=image,name=named:1", ctx]);
    assert!(out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    for line in stderr.lines() {
        serde_json::from_str::<serde_json::Value>(line).unwrap_or_else(|e| panic!("not JSON: {line:?}: {e}"));
    }
    assert_eq!(k.inspect("named:1")["Id"].as_str().unwrap(), id.trim());
}

#[test]
fn the_network_flag_sets_the_default_of_run_steps() {
    let k = kiln();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // Every connection is closed at once, so a step's `nc` that got through ends.
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            drop(conn);
        }
    });
    let dir = k.path("network");
    fs::create_dir_all(&dir).unwrap();
    fs::write(
        dir.join("Dockerfile"),
        format!(
            "FROM busybox\nRUN if nc -w 1 127.0.0.1 {port} </dev/null; then echo reachable; else echo unreachable; fi > /net\n\
             RUN --network=host if nc -w 1 127.0.0.1 {port} </dev/null; then echo reachable; else echo unreachable; fi > /host\n"
        ),
    )
    .unwrap();
    // Without the flag RUN shares the host's network (as BuildKit without CNI: DIFFERENCES.md).
    let root = rootfs(&k, &dir, &[]);
    assert_eq!(read(&root.join("net")), "reachable\n");
    // --network none isolates the steps that do not choose; `RUN --network=host` still may.
    let root = rootfs(&k, &dir, &["--network", "none"]);
    assert_eq!(read(&root.join("net")), "unreachable\n");
    assert_eq!(read(&root.join("host")), "reachable\n");
}

/// How many context files a build read for their content (from `kiln --debug`'s log).
fn context_files_read(k: &Kiln, context: &Path) -> u64 {
    let out = k.kiln(&["--debug", "build", "--progress", "plain", context.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let line = stderr.lines().find(|l| l.contains("context checksums")).unwrap_or_else(|| panic!("{stderr}"));
    assert!(!line.contains('\x1b'), "colour codes in a log that is not a terminal: {line:?}");
    let value = line.split("files_read=").nth(1).and_then(|v| v.split_whitespace().next());
    value.and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{line}"))
}

#[test]
fn an_unchanged_context_is_not_read_again() {
    let k = kiln();
    let dir = k.path("statcache");
    fs::create_dir_all(dir.join("src")).unwrap();
    for i in 0..50 {
        fs::write(dir.join(format!("src/f{i}.txt")), format!("file {i}\n")).unwrap();
    }
    fs::write(dir.join("Dockerfile"), "FROM busybox\nCOPY src /src\n").unwrap();
    // Hashes of files changed within the last second are not trusted (racy clean): wait.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert_eq!(context_files_read(&k, &dir), 50, "the first build reads every file it copies");
    assert_eq!(context_files_read(&k, &dir), 0, "an unchanged context is hashed from the stat cache");
    // A new mtime alone: that file is read again (its content is the same, so the COPY hits).
    let f = fs::File::options().write(true).open(dir.join("src/f7.txt")).unwrap();
    f.set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(60)).unwrap();
    drop(f);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert_eq!(context_files_read(&k, &dir), 1);
    let (ran, _) = build_steps(&k, &dir, &[]);
    assert!(ran.is_empty(), "{ran:?}");
}
