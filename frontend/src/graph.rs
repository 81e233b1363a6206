//! The build graph: a content-addressed DAG of plain-data ops (DESIGN.md "The build graph").
//!
//! An op names its inputs by their [`Digest`]s, and its own digest is the sha256 of its
//! canonical encoding, so a digest covers the op and, transitively, everything it reads.
//! The encoding is `serde_json` of the op: every type here has a fixed field order and only
//! ordered collections, so equal ops always encode to equal bytes. Equal ops built twice are
//! one vertex. Descriptions for progress output live next to the op and are not hashed.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::config::ImageConfig;

/// `sha256:<hex>` of an op's canonical encoding.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Digest(String);

impl Digest {
    /// The digest of `bytes`.
    pub fn of_bytes(bytes: &[u8]) -> Self {
        Digest(format!("sha256:{}", hex::encode(Sha256::digest(bytes))))
    }

    /// The `sha256:<hex>` text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An OS/architecture/variant triple, normalised like containerd's `platforms.Normalize`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Platform {
    /// `linux`, `windows`, …
    pub os: String,
    /// `amd64`, `arm64`, `arm`, …
    pub architecture: String,
    /// `v7`, `v6`, …; empty when none.
    pub variant: String,
}

impl Platform {
    /// `linux/amd64`, the default build and target platform.
    pub fn linux_amd64() -> Self {
        Platform { os: "linux".into(), architecture: "amd64".into(), variant: String::new() }
    }

    /// Parses `os[/arch[/variant]]` or a bare architecture (then the OS is `linux`), with
    /// containerd's aliases (`aarch64` → `arm64`, `x86_64` → `amd64`, `arm` → `arm/v7`, …).
    pub fn parse(text: &str) -> Result<Self, String> {
        let parts: Vec<String> = text.split('/').map(str::to_ascii_lowercase).collect();
        let known_os = |s: &str| {
            matches!(
                s,
                "linux" | "windows" | "darwin" | "freebsd" | "netbsd" | "openbsd" | "solaris" | "illumos" | "aix"
            )
        };
        let (os, arch, variant) = match parts.as_slice() {
            [a] if known_os(a) => (a.clone(), "amd64".to_owned(), String::new()),
            [a] => ("linux".to_owned(), a.clone(), String::new()),
            [o, a] => (o.clone(), a.clone(), String::new()),
            [o, a, v] => (o.clone(), a.clone(), v.clone()),
            _ => return Err(format!("invalid platform {text:?}: expected os[/arch[/variant]]")),
        };
        if os.is_empty()
            || arch.is_empty()
            || !os.chars().chain(arch.chars()).all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(format!("invalid platform {text:?}"));
        }
        let (architecture, variant) = match (arch.as_str(), variant.as_str()) {
            ("i386", _) => ("386".to_owned(), String::new()),
            ("x86_64" | "x86-64" | "amd64", "") => ("amd64".to_owned(), String::new()),
            ("x86_64" | "x86-64" | "amd64", "v1") => ("amd64".to_owned(), String::new()),
            ("aarch64" | "arm64", "8" | "v8" | "") => ("arm64".to_owned(), String::new()),
            ("aarch64", v) => ("arm64".to_owned(), v.to_owned()),
            ("armhf", "") => ("arm".to_owned(), "v7".to_owned()),
            ("armel", "") => ("arm".to_owned(), "v6".to_owned()),
            ("arm", "") => ("arm".to_owned(), "v7".to_owned()),
            ("arm", "5" | "6" | "7" | "8") => ("arm".to_owned(), format!("v{variant}")),
            (a, v) => (a.to_owned(), v.to_owned()),
        };
        Ok(Platform { os, architecture, variant })
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if !self.variant.is_empty() {
            write!(f, "/{}", self.variant)?;
        }
        Ok(())
    }
}

/// Where a stage's or a copy's files come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// A registry image (normalised reference, possibly pinned `…@sha256:…`).
    Image {
        /// e.g. `docker.io/library/alpine:3.20`.
        reference: String,
        /// The platform to pull.
        platform: Platform,
    },
    /// The empty filesystem.
    Scratch,
    /// A local build context (`context` is the main one); the builder hashes the files an op
    /// reads from it into that op's cache key.
    Context {
        /// The context's name.
        name: String,
    },
    /// A remote file (`ADD https://…`).
    Http {
        /// The URL as written.
        url: String,
        /// `ADD --checksum=…`, to verify the download.
        checksum: Option<String>,
        /// The file name the download is stored under.
        filename: String,
    },
    /// A git repository (`ADD https://…/repo.git#ref:subdir`).
    Git {
        /// The remote URL.
        remote: String,
        /// The ref or commit, with `:subdir` when given.
        reference: String,
        /// `ADD --keep-git-dir`.
        keep_git_dir: bool,
    },
}

/// RUN's network mode (`RUN --network=…`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Network {
    /// The builder's default (kiln: an isolated network with outbound access).
    #[default]
    Default,
    /// No network at all.
    None,
    /// The host's network namespace.
    Host,
}

/// RUN's security mode (`RUN --security=…`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Security {
    /// The normal sandbox.
    #[default]
    Sandbox,
    /// All capabilities, as `--security=insecure`.
    Insecure,
}

/// A mount in a RUN besides its root filesystem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mount {
    /// Another vertex's output mounted read-only at `dest` (the script of `RUN <<EOF` with a
    /// `#!` line is mounted at `/dev/pipes/`).
    Input {
        /// Mount point inside the container.
        dest: String,
        /// The vertex mounted.
        source: Digest,
        /// The directory of that vertex that is mounted.
        source_path: String,
    },
    /// A `RUN --mount=…` flag after variable expansion, not yet interpreted: the mounts issue
    /// gives these meaning, and the builder must reject a kind it does not handle.
    Flag {
        /// The flag value as expanded, e.g. `type=cache,target=/root/.cache`.
        spec: String,
        /// The `type=` value (`bind` when absent).
        kind: String,
        /// The vertex named by `from=` (a stage or an image), when present.
        from: Option<Digest>,
    },
}

/// A RUN: a process in a sandbox over a snapshot of `root`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exec {
    /// The filesystem the command runs on; its changes are the result.
    pub root: Digest,
    /// Further mounts, in order.
    pub mounts: Vec<Mount>,
    /// argv, shell already prepended for the shell form.
    pub args: Vec<String>,
    /// The environment as `KEY=value`, in order (ENV, ARG values, a default `PATH`).
    pub env: Vec<String>,
    /// Proxy variables from `--build-arg` (HTTP_PROXY, …): in the environment of the process
    /// but not in the image history, and not part of the digest (see [`Op::digest`]).
    pub proxy_env: Vec<String>,
    /// The working directory.
    pub cwd: String,
    /// The user (`name`, `uid`, `uid:gid`, …); empty for root.
    pub user: String,
    /// Network mode.
    pub network: Network,
    /// Security mode.
    pub security: Security,
}

/// One COPY/ADD source copied into a [`FileOp`]'s root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Copy {
    /// The vertex the files come from (context, stage, image, HTTP, git or a heredoc file).
    pub from: Digest,
    /// Source path in `from`, absolute, may contain wildcards.
    pub src: String,
    /// Destination, absolute; a trailing `/` means "into this directory".
    pub dest: String,
    /// `--chown` as written (after expansion).
    pub chown: Option<String>,
    /// `--chmod` as written (octal or symbolic).
    pub chmod: Option<String>,
    /// `--link`.
    pub link: bool,
    /// `--parents` include pattern (the part after the `/./` pivot or the whole source).
    pub include_patterns: Vec<String>,
    /// `--exclude` patterns.
    pub exclude: Vec<String>,
    /// Wildcards in `src` are allowed (and may match nothing).
    pub allow_wildcard: bool,
    /// A directory source copies its contents, not itself.
    pub dir_contents_only: bool,
    /// Follow a symlink named as the source.
    pub follow_symlinks: bool,
    /// ADD: unpack local archives.
    pub attempt_unpack: bool,
}

/// One change a [`FileOp`] makes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileAction {
    /// COPY/ADD of one source.
    Copy(Copy),
    /// WORKDIR: create a directory (with parents).
    Mkdir {
        /// Absolute path.
        path: String,
        /// Permission bits.
        mode: u32,
        /// Create missing parents.
        make_parents: bool,
        /// Owner (the current USER), empty for root.
        user: String,
    },
    /// A file with inline content (heredocs of `COPY <<EOF` and `RUN <<EOF`).
    Mkfile {
        /// Absolute path.
        path: String,
        /// Permission bits.
        mode: u32,
        /// The bytes of the file.
        content: String,
    },
}

/// COPY, ADD, WORKDIR: file actions applied in order on a snapshot of `root`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileOp {
    /// The filesystem changed.
    pub root: Digest,
    /// The actions, in order.
    pub actions: Vec<FileAction>,
}

/// One vertex of the graph.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// A filesystem from outside the graph.
    Source(Source),
    /// RUN.
    Exec(Exec),
    /// COPY/ADD/WORKDIR and inline files.
    File(FileOp),
}

impl Op {
    /// The sha256 of the canonical encoding (which embeds the inputs' digests). Like
    /// BuildKit's cache map, a RUN's proxy settings are left out: a proxy changes how
    /// downloads travel, not what the step produces.
    pub fn digest(&self) -> Digest {
        // Serialising plain data with fixed field order into memory cannot fail.
        let bytes = match self {
            Op::Exec(e) if !e.proxy_env.is_empty() => {
                serde_json::to_vec(&Op::Exec(Exec { proxy_env: Vec::new(), ..e.clone() }))
            }
            op => serde_json::to_vec(op),
        }
        .unwrap_or_default();
        Digest::of_bytes(&bytes)
    }

    /// The digests this op reads, in order.
    pub fn inputs(&self) -> Vec<&Digest> {
        match self {
            Op::Source(_) => Vec::new(),
            Op::Exec(e) => std::iter::once(&e.root)
                .chain(e.mounts.iter().filter_map(|m| match m {
                    Mount::Input { source, .. } => Some(source),
                    Mount::Flag { from, .. } => from.as_ref(),
                }))
                .collect(),
            Op::File(f) => std::iter::once(&f.root)
                .chain(f.actions.iter().filter_map(|a| match a {
                    FileAction::Copy(c) => Some(&c.from),
                    _ => None,
                }))
                .collect(),
        }
    }
}

/// A vertex: the op, and how progress output and errors name it (not part of the digest).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vertex {
    /// What to do.
    pub op: Op,
    /// e.g. `[build 2/4] RUN make`.
    pub description: String,
    /// Where in the Dockerfile the instruction that made it is (the first, when equal
    /// instructions share the vertex); `None` for vertices no instruction names.
    pub pos: Option<crate::Pos>,
}

/// One build stage as the target sees it: its final filesystem and image config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageOutput {
    /// The `AS` name (lower-cased), if any.
    pub name: Option<String>,
    /// Position among the Dockerfile's stages (0-based), as `COPY --from=N` counts.
    pub index: usize,
    /// The vertex holding the stage's final filesystem.
    pub root: Digest,
    /// The image config the stage produces (env, cmd, history, …).
    pub image: ImageConfig,
    /// The platform the stage builds for.
    pub platform: Platform,
}

/// The lowered Dockerfile: vertices by digest plus the stages the target reaches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct BuildGraph {
    /// Every vertex, keyed by its digest.
    pub vertices: BTreeMap<Digest, Vertex>,
    /// The stages that were built, in Dockerfile order; unreachable stages are absent.
    pub stages: Vec<StageOutput>,
    /// Index into `stages` of the target.
    pub target: usize,
}

impl BuildGraph {
    /// Adds `op` (once: an equal op is the same vertex) and returns its digest.
    pub fn add(&mut self, op: Op, description: impl Into<String>) -> Digest {
        self.add_at(op, description, None)
    }

    /// [`add`](Self::add) for an op made by the instruction at `pos`.
    pub fn add_at(&mut self, op: Op, description: impl Into<String>, pos: Option<crate::Pos>) -> Digest {
        let digest = op.digest();
        self.vertices.entry(digest.clone()).or_insert_with(|| Vertex { op, description: description.into(), pos });
        digest
    }

    /// The vertex with `digest`.
    pub fn get(&self, digest: &Digest) -> Option<&Vertex> {
        self.vertices.get(digest)
    }

    /// The target stage.
    pub fn target_stage(&self) -> Option<&StageOutput> {
        self.stages.get(self.target)
    }

    /// The stage named `name` (case-insensitive), if it was built.
    pub fn stage(&self, name: &str) -> Option<&StageOutput> {
        let name = name.to_lowercase();
        self.stages.iter().find(|s| s.name.as_deref() == Some(name.as_str()))
    }

    /// Every vertex `root` depends on, itself included, inputs before users.
    pub fn closure(&self, root: &Digest) -> Vec<Digest> {
        let mut out = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        let mut stack = vec![(root.clone(), false)];
        while let Some((d, expanded)) = stack.pop() {
            if expanded {
                out.push(d);
                continue;
            }
            if !seen.insert(d.clone()) {
                continue;
            }
            stack.push((d.clone(), true));
            if let Some(v) = self.vertices.get(&d) {
                stack.extend(v.op.inputs().into_iter().rev().map(|i| (i.clone(), false)));
            }
        }
        out
    }
}
