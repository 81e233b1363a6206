//! Differential tests: kiln against the reference. Each `testdata/build` case is built by kiln, by
//! docker + BuildKit (Debian's dockerd 20.10, started privately) and by buildah, from the same
//! Dockerfile, context and busybox base; then the final root filesystems (paths, types, modes,
//! owners, link targets, content hashes; never mtimes) and image configs (the runtime fields and
//! the history's `created_by`/`empty_layer` sequence) must agree.
//!
//! Every difference that remains is either a kiln bug or listed, with its reason, in
//! `testdata/build/DIFFERENCES.md`; the filters below implement exactly that list, each next to
//! the line of the list it stands for.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};

use kiln_testkit::buildah::Buildah;
use kiln_testkit::dockerd::Dockerd;
use kiln_testkit::kiln::Kiln;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// What a path is, as far as an image's users can tell (mtimes left out on purpose).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    File { sha256: String },
    Dir,
    Symlink { target: String },
    Fifo,
    Char { major: u32, minor: u32 },
    Block { major: u32, minor: u32 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Node {
    kind: Kind,
    /// Permission bits with setuid/setgid/sticky.
    mode: u32,
    uid: u64,
    gid: u64,
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} mode {:04o} owner {}:{}", self.kind, self.mode, self.uid, self.gid)
    }
}

/// Whether a difference at a path (kiln's node, the peer's) is a documented, deliberate one.
type Documented<'a> = dyn Fn(&str, Option<&Node>, Option<&Node>) -> bool + 'a;

/// A root filesystem: paths relative to `/` (no leading slash) to what they are.
type Tree = BTreeMap<String, Node>;

fn sha256_of(mut r: impl Read) -> String {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = r.read(&mut buf).expect("reading file content");
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    hex::encode(hasher.finalize())
}

/// `a/b/` → `a/b`, `./a` → `a`, `.` → ``.
fn clean(path: &str) -> String {
    path.split('/').filter(|c| !c.is_empty() && *c != ".").collect::<Vec<_>>().join("/")
}

fn remove_below(tree: &mut Tree, dir: &str) {
    let prefix = format!("{dir}/");
    let below: Vec<String> =
        tree.range(prefix.clone()..).take_while(|(p, _)| p.starts_with(&prefix)).map(|(p, _)| p.clone()).collect();
    for p in below {
        tree.remove(&p);
    }
}

/// Applies one layer tar on `tree` with OCI whiteout semantics; hard links become copies of their
/// target (what a user reading the file sees).
fn apply_layer(tree: &mut Tree, layer: impl Read, what: &str) {
    let mut archive = tar::Archive::new(layer);
    for entry in archive.entries().unwrap_or_else(|e| panic!("reading {what}: {e}")) {
        let mut entry = entry.unwrap_or_else(|e| panic!("reading an entry of {what}: {e}"));
        let path = clean(&String::from_utf8_lossy(&entry.path_bytes()));
        if path.is_empty() {
            continue;
        }
        let (parent, name) = match path.rsplit_once('/') {
            Some((p, n)) => (p.to_owned(), n.to_owned()),
            None => (String::new(), path.clone()),
        };
        let join = |n: &str| if parent.is_empty() { n.to_owned() } else { format!("{parent}/{n}") };
        if name == ".wh..wh..opq" {
            remove_below(tree, &parent);
            continue;
        }
        if let Some(hidden) = name.strip_prefix(".wh.") {
            let gone = join(hidden);
            tree.remove(&gone);
            remove_below(tree, &gone);
            continue;
        }
        let header = entry.header().clone();
        let mode = header.mode().expect("mode") & 0o7777;
        let (uid, gid) = (header.uid().expect("uid"), header.gid().expect("gid"));
        let device =
            || (header.device_major().ok().flatten().unwrap_or(0), header.device_minor().ok().flatten().unwrap_or(0));
        let node = match header.entry_type() {
            tar::EntryType::Link => {
                let target = clean(&String::from_utf8_lossy(&entry.link_name_bytes().expect("hard link target")));
                tree.get(&target).cloned().unwrap_or_else(|| panic!("{what}: {path} links to missing {target}"))
            }
            tar::EntryType::Directory => Node { kind: Kind::Dir, mode, uid, gid },
            tar::EntryType::Symlink => {
                let target = String::from_utf8_lossy(&entry.link_name_bytes().expect("symlink target")).into_owned();
                Node { kind: Kind::Symlink { target }, mode: 0o777, uid, gid }
            }
            tar::EntryType::Fifo => Node { kind: Kind::Fifo, mode, uid, gid },
            tar::EntryType::Char => {
                let (major, minor) = device();
                Node { kind: Kind::Char { major, minor }, mode, uid, gid }
            }
            tar::EntryType::Block => {
                let (major, minor) = device();
                Node { kind: Kind::Block { major, minor }, mode, uid, gid }
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                Node { kind: Kind::File { sha256: sha256_of(&mut entry) }, mode, uid, gid }
            }
            other => panic!("{what}: {path} has an unexpected entry type {other:?}"),
        };
        // Like extraction: anything but a directory over a directory replaces the whole subtree.
        if node.kind != Kind::Dir || tree.get(&path).is_some_and(|old| old.kind != Kind::Dir) {
            remove_below(tree, &path);
        }
        tree.insert(path, node);
    }
}

/// A layer blob as a tar stream: uncompressed as it is, gzip through `gzip -dc`.
fn open_layer(path: &Path) -> Box<dyn Read> {
    let mut magic = [0u8; 2];
    let n = File::open(path).and_then(|mut f| f.read(&mut magic)).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let file = File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    if n == 2 && magic == [0x1f, 0x8b] {
        let mut child = Command::new("gzip")
            .arg("-dc")
            .stdin(file)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("running gzip -dc on {}: {e}", path.display()));
        let stdout = child.stdout.take().expect("gzip stdout");
        Box::new(Gunzip { child, stdout, path: path.to_owned() })
    } else {
        Box::new(file)
    }
}

/// `gzip -dc`'s output; at its end, gzip's exit status is checked, so a corrupt layer fails.
struct Gunzip {
    child: Child,
    stdout: ChildStdout,
    path: PathBuf,
}

impl Read for Gunzip {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.stdout.read(buf)?;
        if n == 0 && !buf.is_empty() {
            let status = self.child.wait()?;
            assert!(status.success(), "gzip -dc {} failed: {status}", self.path.display());
        }
        Ok(n)
    }
}

impl Drop for Gunzip {
    fn drop(&mut self) {
        // The tar reader may stop before the end (trailing zero blocks): reap gzip anyway.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An image as a docker-archive holds it: its config and its flattened root filesystem.
struct Image {
    config: Value,
    tree: Tree,
}

/// Reads a docker-archive tar (what `docker save`, `kiln save --format docker` and buildah's
/// `docker-archive:` transport write).
fn read_archive(archive: &Path, scratch: &Path) -> Image {
    fs::create_dir_all(scratch).unwrap();
    let status = Command::new("tar").arg("-xf").arg(archive).arg("-C").arg(scratch).status().expect("running tar");
    assert!(status.success(), "unpacking {}", archive.display());
    let manifest: Value = serde_json::from_slice(&fs::read(scratch.join("manifest.json")).unwrap()).unwrap();
    let entry = &manifest[0];
    let config = serde_json::from_slice(&fs::read(scratch.join(entry["Config"].as_str().unwrap())).unwrap()).unwrap();
    let mut tree = Tree::new();
    for layer in entry["Layers"].as_array().unwrap() {
        let path = scratch.join(layer.as_str().unwrap());
        apply_layer(&mut tree, open_layer(&path), &format!("{} layer {}", archive.display(), path.display()));
    }
    Image { config, tree }
}

/// A directory on disk (kiln's `--output type=local`) as a [`Tree`].
fn read_dir_tree(root: &Path) -> Tree {
    fn walk(root: &Path, dir: &Path, tree: &mut Tree) {
        let mut entries: Vec<_> = fs::read_dir(dir).unwrap().map(|e| e.unwrap()).collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let path = e.path();
            let rel = path.strip_prefix(root).unwrap().to_str().unwrap().to_owned();
            let meta = fs::symlink_metadata(&path).unwrap();
            let ft = meta.file_type();
            let dev = || (libc_major(meta.rdev()), libc_minor(meta.rdev()));
            let kind = if ft.is_dir() {
                Kind::Dir
            } else if ft.is_symlink() {
                Kind::Symlink { target: fs::read_link(&path).unwrap().to_str().unwrap().to_owned() }
            } else if ft.is_fifo() {
                Kind::Fifo
            } else if ft.is_char_device() {
                let (major, minor) = dev();
                Kind::Char { major, minor }
            } else if ft.is_block_device() {
                let (major, minor) = dev();
                Kind::Block { major, minor }
            } else {
                Kind::File { sha256: sha256_of(File::open(&path).unwrap()) }
            };
            let mode = if ft.is_symlink() { 0o777 } else { meta.mode() & 0o7777 };
            tree.insert(rel, Node { kind: kind.clone(), mode, uid: meta.uid().into(), gid: meta.gid().into() });
            if kind == Kind::Dir {
                walk(root, &path, tree);
            }
        }
    }
    let mut tree = Tree::new();
    walk(root, root, &mut tree);
    tree
}

fn libc_major(dev: u64) -> u32 {
    (((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0xfff)) as u32
}

fn libc_minor(dev: u64) -> u32 {
    (((dev >> 12) & 0xffff_ff00) | (dev & 0xff)) as u32
}

/// The config fields a container runtime and a user see, `null` and absent alike.
const CONFIG_FIELDS: [&str; 12] = [
    "Env",
    "Cmd",
    "Entrypoint",
    "User",
    "WorkingDir",
    "Labels",
    "ExposedPorts",
    "Volumes",
    "StopSignal",
    "Healthcheck",
    "OnBuild",
    "Shell",
];

fn config_field(config: &Value, field: &str) -> Value {
    match &config["config"][field] {
        // Docker writes `"OnBuild": null`, `"User": ""`; kiln leaves them out. Same meaning.
        Value::String(s) if s.is_empty() => Value::Null,
        // buildah writes `"Cmd": []` where BuildKit leaves it out: a container runs the same.
        Value::Array(a) if a.is_empty() => Value::Null,
        Value::Object(o) if o.is_empty() => Value::Null,
        v => v.clone(),
    }
}

/// The history as `(created_by, empty_layer)`, with `created_by` as `normalize` makes it.
fn history(config: &Value, normalize: impl Fn(&str) -> String) -> Vec<(String, bool)> {
    config["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (normalize(h["created_by"].as_str().unwrap_or("")), h["empty_layer"].as_bool().unwrap_or(false)))
        .collect()
}

/// Kiln's `created_by` as dockerd 20.10's older Dockerfile frontend writes it.
fn for_docker_20_10(created_by: &str) -> String {
    if created_by.starts_with("COPY ") || created_by.starts_with("ADD ") {
        // DIFFERENCES.md "history of COPY/ADD": 20.10 leaves `--chown`/`--chmod` out of
        // `created_by`; current BuildKit, which kiln follows, writes them.
        return created_by
            .split(' ')
            .filter(|w| !w.starts_with("--chown=") && !w.starts_with("--chmod="))
            .collect::<Vec<_>>()
            .join(" ");
    }
    if let Some(rest) = created_by.strip_prefix("HEALTHCHECK &{") {
        // DIFFERENCES.md "history of HEALTHCHECK": current BuildKit prints the health config
        // with its StartInterval (the fourth duration); 20.10's has no such field.
        if let Some(end) = rest.find("] ") {
            let (test, fields) = rest.split_at(end + 2);
            let mut words: Vec<&str> = fields.split(' ').collect();
            if words.len() == 5 {
                words.remove(3);
                return format!("HEALTHCHECK &{{{test}{}", words.join(" "));
            }
        }
    }
    created_by.to_owned()
}

/// Whether kiln's `created_by` says what docker 20.10's does. DIFFERENCES.md "history of ARG":
/// current BuildKit and kiln record the value an ARG gets; 20.10 records the Dockerfile's text,
/// so for an ARG given a `--build-arg` value (`overridden`) it has the default, and for one that
/// inherits a global ARG just the name. Such ARGs are compared by name.
fn same_arg_history(kiln: &str, docker: &str, overridden: &[&str]) -> bool {
    if kiln == docker {
        return true;
    }
    let (Some(k), Some(d)) = (kiln.strip_prefix("ARG "), docker.strip_prefix("ARG ")) else {
        return false;
    };
    let (k, d): (Vec<&str>, Vec<&str>) = (k.split(' ').collect(), d.split(' ').collect());
    let name = |w: &'_ str| w.split_once('=').map_or(w.to_owned(), |(n, _)| n.to_owned());
    k.len() == d.len()
        && k.iter().zip(&d).all(|(k, d)| {
            k == d || (name(k) == name(d) && (overridden.contains(&name(k).as_str()) || !d.contains('=')))
        })
}

/// One builder's result for a case.
struct Built {
    name: &'static str,
    image: Image,
}

/// Lists every difference between kiln's image and a peer's that `documented` does not accept
/// (`documented(path, kiln's node, peer's node)` is true for a deliberate, listed difference).
fn tree_differences(kiln: &Tree, peer: &Built, documented: &Documented<'_>) -> Vec<String> {
    let mut out = Vec::new();
    let mut paths: Vec<&String> = kiln.keys().chain(peer.image.tree.keys()).collect();
    paths.sort();
    paths.dedup();
    for path in paths {
        let (k, p) = (kiln.get(path), peer.image.tree.get(path));
        if k == p {
            continue;
        }
        if documented(path, k, p) {
            // Shown with --nocapture: what the documented differences accepted this time.
            eprintln!("documented difference from {}: /{path}: kiln {k:?}, {} {p:?}", peer.name, peer.name);
            continue;
        }
        out.push(match (k, p) {
            (Some(k), None) => format!("/{path}: only in kiln's image, not {}'s ({k})", peer.name),
            (None, Some(p)) => format!("/{path}: only in {}'s image ({p})", peer.name),
            (Some(k), Some(p)) => format!("/{path}: kiln {k}, {} {p}", peer.name),
            (None, None) => unreachable!(),
        });
    }
    out
}

fn config_differences(kiln: &Value, peer: &Built) -> Vec<String> {
    CONFIG_FIELDS
        .iter()
        .filter_map(|f| {
            let (k, p) = (config_field(kiln, f), config_field(&peer.image.config, f));
            (k != p).then(|| format!("config {f}: kiln {k}, {} {p}", peer.name))
        })
        .collect()
}

/// A case to compare: a testdata dir, and the Dockerfile all builders get.
struct Case {
    name: &'static str,
    context: PathBuf,
    dockerfile: PathBuf,
    /// Paths (relative to `/`) where buildah is known to differ in this case, each explained
    /// where the case is set up and in DIFFERENCES.md.
    buildah_exceptions: &'static [&'static str],
    /// A base image every builder first builds from this Dockerfile (same context) under this
    /// name, for a case whose `FROM` needs one (ONBUILD triggers).
    parent: Option<(&'static str, PathBuf)>,
    /// Build flags all builders get (`--build-arg`, `--target`).
    flags: Vec<String>,
    /// Config fields where buildah is known to differ in this case (DIFFERENCES.md).
    buildah_config_exceptions: &'static [&'static str],
}

impl Case {
    /// The case in `testdata/build/<dir>` with its Dockerfile, no flags, no known differences.
    fn of(dir: &'static str) -> Case {
        let context = case_dir(dir);
        Case {
            name: dir,
            dockerfile: context.join("Dockerfile"),
            context,
            buildah_exceptions: &[],
            parent: None,
            flags: vec![],
            buildah_config_exceptions: &[],
        }
    }
}

fn case_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/build").join(name)
}

/// Builds `case` with the three builders and returns kiln's image (checked against its own
/// `--output type=local` tree), docker's and buildah's.
fn build_all(k: &Kiln, case: &Case) -> (Image, Built, Built) {
    let ctx = case.context.to_str().unwrap();
    let file = case.dockerfile.to_str().unwrap();
    let base = k.path("busybox-docker.tar");
    k.ok(&["save", "--format", "docker", "-o", base.to_str().unwrap(), "busybox:latest"]);

    let parent = case.parent.as_ref().map(|(tag, file)| (*tag, file.to_str().unwrap()));
    if let Some((parent_tag, parent_file)) = parent {
        k.ok(&["build", "-q", "--network", "none", "-t", parent_tag, "-f", parent_file, ctx]);
    }
    let tag = format!("diff-{}:kiln", case.name);
    let flags: Vec<&str> = case.flags.iter().map(String::as_str).collect();
    let flags = &flags[..];
    k.ok(&[&["build", "--progress", "plain", "--network", "none", "-t", &tag, "-f", file], flags, &[ctx]].concat());
    let kiln_archive = k.path("kiln.tar");
    k.ok(&["save", "--format", "docker", "-o", kiln_archive.to_str().unwrap(), &tag]);
    let kiln_image = read_archive(&kiln_archive, &k.path("kiln-archive"));
    // What `--output type=local` writes is the image's filesystem, exactly.
    let local = k.path("kiln-local");
    let output = format!("type=local,dest={}", local.display());
    k.ok(&[&["build", "-q", "--network", "none", "-o", &output, "-f", file], flags, &[ctx]].concat());
    let local_tree = read_dir_tree(&local);
    assert_eq!(
        tree_differences(
            &kiln_image.tree,
            &Built { name: "kiln --output type=local", image: Image { config: Value::Null, tree: local_tree } },
            &|_, _, _| false
        ),
        Vec::<String>::new(),
        "{}: kiln's image and its --output type=local differ",
        case.name
    );

    let dockerd = Dockerd::start(&[]);
    dockerd.load(&base);
    if let Some((parent_tag, parent_file)) = parent {
        dockerd.ok(&["build", "-q", "--network", "none", "-t", parent_tag, "-f", parent_file, ctx]);
    }
    let docker_tag = format!("diff-{}:docker", case.name);
    dockerd.ok(&[&["build", "--network", "none", "--progress", "plain", "-t", &docker_tag, "-f", file], flags, &[ctx]]
        .concat());
    let docker_archive = k.path("docker.tar");
    dockerd.ok(&["save", "-o", docker_archive.to_str().unwrap(), &docker_tag]);
    let docker = Built { name: "docker", image: read_archive(&docker_archive, &k.path("docker-archive")) };
    drop(dockerd);

    let buildah = Buildah::new();
    buildah.load(&base);
    if let Some((parent_tag, parent_file)) = &case.parent {
        buildah.build(parent_tag, parent_file, &case.context, &[]);
    }
    let buildah_tag = format!("localhost/diff-{}:buildah", case.name);
    // DIFFERENCES.md "buildah": its RUN lacks CAP_MKNOD, which BuildKit's has.
    buildah.build(&buildah_tag, &case.dockerfile, &case.context, &[flags, &["--cap-add", "MKNOD"]].concat());
    let buildah_archive = k.path("buildah.tar");
    buildah.save(&buildah_tag, &buildah_archive);
    let buildah_built = Built { name: "buildah", image: read_archive(&buildah_archive, &k.path("buildah-archive")) };
    (kiln_image, docker, buildah_built)
}

/// Compares `case` across the builders; panics listing every undocumented difference.
fn compare(case: Case) {
    let k = Kiln::with_busybox(env!("CARGO_BIN_EXE_kiln"));
    let (kiln, docker, buildah) = build_all(&k, &case);
    // Equal trees must mean equal content, not two empty reads.
    assert!(
        kiln.tree.contains_key("bin/busybox"),
        "{}: kiln's image tree lacks the base: {:?}",
        case.name,
        kiln.tree.keys()
    );
    let mut diffs = Vec::new();

    diffs.extend(tree_differences(&kiln.tree, &docker, &docker_documented));
    diffs.extend(config_differences(&kiln.config, &docker));
    let overridden: Vec<&str> = case
        .flags
        .windows(2)
        .filter(|w| w[0] == "--build-arg")
        .filter_map(|w| w[1].split_once('='))
        .map(|(k, _)| k)
        .collect();
    let (kh, dh) = (history(&kiln.config, for_docker_20_10), history(&docker.image.config, str::to_owned));
    for i in 0..kh.len().max(dh.len()) {
        let same = match (kh.get(i), dh.get(i)) {
            (Some((k, k_empty)), Some((d, d_empty))) => k_empty == d_empty && same_arg_history(k, d, &overridden),
            _ => false,
        };
        if !same {
            diffs.push(format!("history[{i}] (created_by, empty_layer): kiln {:?}, docker {:?}", kh.get(i), dh.get(i)));
        }
    }

    let volumes: Vec<String> =
        kiln.config["config"]["Volumes"].as_object().into_iter().flatten().map(|(v, _)| clean(v)).collect();
    diffs.extend(tree_differences(&kiln.tree, &buildah, &|path, k, b| {
        buildah_documented(&volumes, path, k, b) || case.buildah_exceptions.contains(&path)
    }));
    // DIFFERENCES.md "buildah": its history has its own created_by format and one layer per
    // build, so only docker's history is compared.
    let mut buildah = buildah;
    normalize_buildah_config(&mut buildah.image.config);
    diffs.extend(
        config_differences(&kiln.config, &buildah)
            .into_iter()
            .filter(|d| !case.buildah_config_exceptions.iter().any(|f| d.starts_with(&format!("config {f}:")))),
    );

    assert!(diffs.is_empty(), "{}: kiln differs from the reference:\n{}", case.name, diffs.join("\n"));
}

/// DIFFERENCES.md "buildah": it labels every image with its own version, and keeps EXPOSE's
/// protocol as written (`8080/TCP`) where BuildKit and kiln lower-case it.
fn normalize_buildah_config(config: &mut Value) {
    let runtime = &mut config["config"];
    if let Some(labels) = runtime["Labels"].as_object_mut() {
        labels.remove("io.buildah.version");
    }
    if let Some(ports) = runtime["ExposedPorts"].as_object_mut() {
        *ports = std::mem::take(ports).into_iter().map(|(port, v)| (port.to_lowercase(), v)).collect();
    }
}

/// DIFFERENCES.md "named pipes in COPY": BuildKit's copy (fsutil) silently skips FIFOs and
/// sockets of a COPY source; kiln (like buildah) copies them.
fn docker_documented(_path: &str, kiln: Option<&Node>, docker: Option<&Node>) -> bool {
    matches!((kiln, docker), (Some(Node { kind: Kind::Fifo, .. }), None))
}

/// DIFFERENCES.md "buildah": what buildah 1.28 leaves in a rootfs that BuildKit and kiln do not
/// (`kiln_volumes`: the image's VOLUME paths, relative to `/`).
fn buildah_documented(kiln_volumes: &[String], path: &str, kiln: Option<&Node>, buildah: Option<&Node>) -> bool {
    match (kiln, buildah) {
        // The mount points of its RUN sandbox it creates and keeps.
        (None, Some(_)) => {
            matches!(path, "etc/hostname" | "run")
        }
        // What later steps write below a VOLUME is dropped (the legacy builder's semantics).
        (Some(_), None) => kiln_volumes.iter().any(|v| path.starts_with(&format!("{v}/"))),
        _ => false,
    }
}

#[test]
fn a_target_stage_with_build_args_matches_docker_and_buildah() {
    compare(Case {
        name: "demo-target",
        flags: ["--target", "numbers", "--build-arg", "COUNT=3", "--build-arg", "UNUSED=x"].map(String::from).to_vec(),
        ..Case::of("demo")
    });
}

#[test]
fn demo_matches_docker_and_buildah() {
    compare(Case::of("demo"));
}

/// DIFFERENCES.md "syntax 20.10 cannot parse": dockerd 20.10's frontend predates heredocs,
/// `RUN --network` and symbolic `--chmod`, so every builder gets `testdata/build/<dir>` with each
/// `(current, plain)` text of its Dockerfile written as `plain`: the same commands and modes in a
/// form 20.10 parses. kiln's own handling of the `current` forms is checked against BuildKit's
/// documented behaviour in `tests/build.rs`. The variant lives in the returned temp dir: keep it
/// until the comparison ends.
fn case_for_docker_20_10(dir: &'static str, rewrites: &[(&str, &str)]) -> (tempfile::TempDir, Case) {
    let mut dockerfile = fs::read_to_string(case_dir(dir).join("Dockerfile")).unwrap();
    for (current, plain) in rewrites {
        assert!(dockerfile.contains(current), "the {dir} case changed: update its docker 20.10 variant here");
        dockerfile = dockerfile.replace(current, plain);
    }
    let scratch = tempfile::tempdir().unwrap();
    let path = scratch.path().join("Dockerfile.docker-20.10");
    fs::write(&path, dockerfile).unwrap();
    (scratch, Case { dockerfile: path, ..Case::of(dir) })
}

#[test]
fn instructions_match_docker_and_buildah() {
    let heredoc =
        "RUN <<EOT\necho \"heredoc line 1\" > /heredoc.txt\necho \"greeting=$GREETING\" >> /heredoc.txt\nEOT\n";
    let plain = "RUN echo \"heredoc line 1\" > /heredoc.txt && echo \"greeting=$GREETING\" >> /heredoc.txt\n";
    let (_scratch, case) = case_for_docker_20_10("instructions", &[(heredoc, plain)]);
    compare(case);
}

#[test]
fn filesystem_details_match_docker_and_buildah() {
    compare(Case {
        // DIFFERENCES.md "hard links across RUN steps": the second RUN appends to /tree/keep/a,
        // whose hard link /tree/hard lies in a lower layer. On overlay snapshots (BuildKit, kiln)
        // the copy-up splits the link and /tree/hard keeps "a\n"; buildah's keeps the link.
        buildah_exceptions: &["opt/tools/tree/hard"],
        ..Case::of("filesystem")
    });
}

#[test]
fn onbuild_triggers_match_docker_and_buildah() {
    let parent = case_dir("onbuild").join("parent.Dockerfile");
    compare(Case { parent: Some(("onbuild-parent:1", parent)), ..Case::of("onbuild") });
}

/// The layer model the comparisons rest on: whiteouts, opaque dirs, replacements, hard links.
#[test]
fn layers_apply_with_oci_whiteouts() {
    fn layer(entries: &[(&str, tar::EntryType, &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, kind, data) in entries {
            let mut h = tar::Header::new_ustar();
            h.set_entry_type(*kind);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            h.set_mode(if *kind == tar::EntryType::Directory { 0o755 } else { 0o644 });
            if *kind == tar::EntryType::Link || *kind == tar::EntryType::Symlink {
                h.set_link_name(data).unwrap();
                h.set_size(0);
                b.append_data(&mut h, path, io::empty()).unwrap();
            } else {
                h.set_size(data.len() as u64);
                b.append_data(&mut h, path, data.as_bytes()).unwrap();
            }
        }
        b.into_inner().unwrap()
    }
    use tar::EntryType::{Directory as D, Link as L, Regular as R, Symlink as S};
    let mut tree = Tree::new();
    apply_layer(
        &mut tree,
        &layer(&[
            ("d/", D, ""),
            ("d/a", R, "a"),
            ("d/sub/", D, ""),
            ("d/sub/b", R, "b"),
            ("o/", D, ""),
            ("o/x", R, "x"),
            ("f", R, "f"),
        ])[..],
        "lower",
    );
    apply_layer(
        &mut tree,
        &layer(&[
            ("d/.wh.sub", R, ""),
            ("o/.wh..wh..opq", R, ""),
            ("o/y", R, "y"),
            ("f/", D, ""),
            ("h", L, "d/a"),
            ("l", S, "d/a"),
        ])[..],
        "upper",
    );
    let paths: Vec<&str> = tree.keys().map(String::as_str).collect();
    assert_eq!(paths, ["d", "d/a", "f", "h", "l", "o", "o/y"]);
    assert_eq!(tree["h"], tree["d/a"], "a hard link reads as its target");
    assert_eq!(tree["f"].kind, Kind::Dir);
    assert_eq!(tree["l"].kind, Kind::Symlink { target: "d/a".into() });
}

#[test]
fn copy_semantics_match_docker_and_buildah() {
    compare(Case::of("copy-semantics"));
}

#[test]
fn add_from_urls_matches_docker_and_buildah() {
    let server = kiln_testkit::http::FileServer::start(vec![
        ("/files/tool.sh", b"#!/bin/sh\necho tool\n".to_vec()),
        ("/files/data.tar", fs::read(case_dir("copy-semantics").join("owned.tar")).unwrap()),
    ]);
    compare(Case { flags: vec!["--build-arg".into(), format!("BASE_URL={}", server.url())], ..Case::of("add-url") });
}

#[test]
fn tar_edge_cases_match_docker_and_buildah() {
    compare(Case::of("tar-edges"));
}

#[test]
fn config_forms_match_docker_and_buildah() {
    compare(Case {
        // DIFFERENCES.md "buildah": it makes VOLUME directories, ignores `# escape=` in ENV
        // (so the RUN that echoes them writes other values), uses /bin/sh -c rather than SHELL
        // for a shell-form CMD, and keeps EXPOSE port ranges unexpanded.
        buildah_exceptions: &["v1", "v2", "w/env.txt"],
        buildah_config_exceptions: &["Env", "Cmd", "ExposedPorts"],
        ..Case::of("config-forms")
    });
}

/// Stage chains, an image as a COPY source, symbolic `--chmod`, `RUN --network=none`, CMD reset
/// by ENTRYPOINT. DIFFERENCES.md "syntax 20.10 cannot parse": the heredoc RUN (its `#!/bin/sh`
/// script, which kiln and BuildKit run as `/dev/pipes/EOT`, `tests/build.rs`) is a plain RUN for
/// every builder, so `$0` is `/bin/sh` everywhere. `COPY --from=busybox:latest` finds the base
/// every builder has under that name.
#[test]
fn features_match_docker_and_buildah() {
    let heredoc = "RUN <<EOT\n#!/bin/sh\necho \"script ran as $0\" > /script.txt\nEOT\n";
    let plain = "RUN echo \"script ran as $0\" > /script.txt\n";
    // 20.10 knows no `RUN --network`; every build here has `--network none`, so without the flag
    // the step gets the same namespace (only `lo`).
    let network = ("RUN --network=none sh -c", "RUN sh -c");
    // 20.10 ignores a non-octal `--chmod` (buildah 1.28 rejects it): the same modes in octal,
    // `a+x,go-w` of the context's 0644 notes.txt being 0755.
    let chmod =
        [("--chmod=u=rwx,go=rx tool.sh", "--chmod=755 tool.sh"), ("--chmod=a+x,go-w notes", "--chmod=755 notes")];
    let (_scratch, case) = case_for_docker_20_10("features", &[(heredoc, plain), network, chmod[0], chmod[1]]);
    // A listener on the host that the `--network=none` step must not reach, as in tests/build.rs
    // (every build here has `--network none` as well). All builders get the same PORT.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = format!("PORT={}", listener.local_addr().unwrap().port());
    compare(Case { flags: vec!["--build-arg".into(), port], ..case });
    drop(listener);
}
