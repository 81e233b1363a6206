//! Typed instructions: BuildKit's `instructions.ParseInstruction`, one [`Node`] at a time.
//!
//! [`parse_instructions`] checks every node of a [`Dockerfile`] and gives each a [`Kind`] with
//! the instruction's arguments and flags in named fields. Unknown instructions, flags an
//! instruction does not take, repeated single-value flags, bad flag values and wrong argument
//! counts are errors located at the keyword, the flag or the arguments.
//!
//! Nothing is expanded here: every word is raw, exactly as the parser left it, so `ENV a="x y"`
//! gives the value `"x y"` with its quotes, `COPY --from=$X` gives `$X`, and `RUN echo $HOME`
//! keeps `$HOME`. The expander (`crate::shell`) and the stage lowering do the expansion and
//! quote removal BuildKit does at dispatch time. Only these are decided here, on raw words like
//! BuildKit: the stage name of `FROM … AS name` (lower-cased and validated), HEALTHCHECK
//! durations and retries, boolean flags, and which COPY/ADD sources are heredocs.
//!
//! Typical use:
//!
//! ```
//! use kiln_frontend::instructions::{parse_instructions, Kind};
//! let df = kiln_frontend::parse_str("FROM alpine AS base\nRUN --mount=type=cache,target=/c echo hi\n").unwrap();
//! let instrs = parse_instructions(&df).unwrap();
//! let Kind::From(from) = &instrs[0].kind else { panic!() };
//! assert_eq!((from.image.as_str(), from.name.as_deref()), ("alpine", Some("base")));
//! let Kind::Run(run) = &instrs[1].kind else { panic!() };
//! assert_eq!(run.mounts, ["type=cache,target=/c"]);
//! assert_eq!((run.command.args.as_slice(), run.command.prepend_shell), (&["echo hi".to_string()][..], true));
//! ```
//!
//! ONBUILD keeps its trigger unparsed as BuildKit does ([`Onbuild::expression`], the text
//! stored in the image config); [`Onbuild::trigger`] is the trigger's syntax node, which
//! [`Instruction::from_node`] can type when the trigger runs.

use std::collections::HashMap;
use std::time::Duration;

use crate::ast::{Dockerfile, Heredoc, Node, go_quote, go_to_lower};
use crate::error::{DockerfileError, Pos};
use crate::parser::heredoc_word;

/// One typed instruction with its location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    /// What the instruction is, with its arguments.
    pub kind: Kind,
    /// The flags as written (raw values), in order; the typed fields in `kind` hold the same.
    pub flags: Vec<FlagUse>,
    /// The logical line (continuations joined), e.g. for history entries.
    pub original: String,
    /// First physical line (1-based).
    pub start_line: usize,
    /// Last physical line used, heredoc bodies included.
    pub end_line: usize,
    /// Where the keyword is.
    pub pos: Pos,
    /// Where the arguments start.
    pub args_pos: Pos,
}

/// One `--name[=value]` flag as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlagUse {
    /// The name without dashes (`mount`).
    pub name: String,
    /// The text after `=`, raw; `None` when there was no `=`.
    pub value: Option<String>,
    /// Where the flag starts.
    pub pos: Pos,
}

/// The instruction kinds, one per Dockerfile keyword.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// `FROM [--platform=…] image [AS name]`: starts a stage.
    From(FromArgs),
    /// `RUN [--mount=…] [--network=…] [--security=…] command`.
    Run(RunArgs),
    /// `CMD`: the default command.
    Cmd(CommandLine),
    /// `ENTRYPOINT`.
    Entrypoint(CommandLine),
    /// `SHELL ["exe", "args"…]` (JSON form only).
    Shell(Vec<String>),
    /// `COPY`.
    Copy(CopyArgs),
    /// `ADD`.
    Add(AddArgs),
    /// `ENV k=v …` or `ENV k v`.
    Env(Vec<KeyValue>),
    /// `ARG a[=default] …`.
    Arg(Vec<ArgDecl>),
    /// `LABEL k=v …` or `LABEL k v`.
    Label(Vec<KeyValue>),
    /// `EXPOSE 80/tcp …`, raw words in source order.
    Expose(Vec<String>),
    /// `VOLUME ["/a"]` or `VOLUME /a /b`, each trimmed and non-empty.
    Volume(Vec<String>),
    /// `USER name[:group]`, the whole rest raw.
    User(String),
    /// `WORKDIR path`, the whole rest raw.
    Workdir(String),
    /// `STOPSIGNAL signal`, raw.
    StopSignal(String),
    /// `HEALTHCHECK`.
    Healthcheck(Healthcheck),
    /// `ONBUILD instruction`.
    Onbuild(Onbuild),
    /// `MAINTAINER name` (deprecated; becomes the image author).
    Maintainer(String),
}

/// `FROM` arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FromArgs {
    /// The base: an image reference, a stage name or `scratch`, raw (may contain `$ARG`s).
    pub image: String,
    /// The stage name after `AS`, lower-cased and checked like BuildKit
    /// (`^[a-z][a-z0-9-_.]*$`).
    pub name: Option<String>,
    /// `--platform`, raw.
    pub platform: Option<String>,
}

/// A command in exec (JSON) or shell form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandLine {
    /// Exec form: the JSON elements. Shell form: one string, the command text.
    /// Empty for `CMD` with nothing after it.
    pub args: Vec<String>,
    /// True for the shell form: the stage's SHELL is put in front when it runs.
    pub prepend_shell: bool,
}

/// `RUN` arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunArgs {
    /// The command.
    pub command: CommandLine,
    /// Each `--mount=` value, raw, in order (interpreted by the mounts work).
    pub mounts: Vec<String>,
    /// `--network=` value, raw.
    pub network: Option<String>,
    /// `--security=` value, raw.
    pub security: Option<String>,
    /// Heredocs on the line (`RUN <<EOF`), bodies raw (see [`Heredoc::chomped`]).
    pub heredocs: Vec<Heredoc>,
}

/// A COPY/ADD source given inline as a heredoc (`COPY <<EOF /dst`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceContent {
    /// The heredoc name, used as the file name.
    pub path: String,
    /// The body, tabs already stripped for `<<-`.
    pub data: String,
    /// Whether variables in `data` are to be expanded (the delimiter was not quoted).
    pub expand: bool,
}

/// `COPY` arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyArgs {
    /// Source paths (not heredocs), raw, in order.
    pub sources: Vec<String>,
    /// Heredoc sources, in order.
    pub contents: Vec<SourceContent>,
    /// The destination, raw.
    pub dest: String,
    /// Whether the arguments were a JSON array.
    pub json: bool,
    /// `--from=` stage name, index or image, raw.
    pub from: Option<String>,
    /// `--chown=`, raw.
    pub chown: Option<String>,
    /// `--chmod=`, raw.
    pub chmod: Option<String>,
    /// `--link`.
    pub link: bool,
    /// `--parents`.
    pub parents: bool,
    /// Each `--exclude=` pattern, raw.
    pub excludes: Vec<String>,
}

/// `ADD` arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddArgs {
    /// Source paths or URLs (not heredocs), raw, in order.
    pub sources: Vec<String>,
    /// Heredoc sources, in order.
    pub contents: Vec<SourceContent>,
    /// The destination, raw.
    pub dest: String,
    /// Whether the arguments were a JSON array.
    pub json: bool,
    /// `--chown=`, raw.
    pub chown: Option<String>,
    /// `--chmod=`, raw.
    pub chmod: Option<String>,
    /// `--link`.
    pub link: bool,
    /// `--keep-git-dir`.
    pub keep_git_dir: bool,
    /// `--checksum=`, raw.
    pub checksum: Option<String>,
    /// Each `--exclude=` pattern, raw.
    pub excludes: Vec<String>,
}

/// One ENV or LABEL pair, both raw (quotes and `$` references still in).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: String,
    /// The value.
    pub value: String,
    /// True for the old `ENV key value` form (BuildKit's `NoDelim`): the value is the whole
    /// rest of the line.
    pub no_delim: bool,
}

/// One ARG declaration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgDecl {
    /// The name.
    pub key: String,
    /// The default after `=`, raw; `None` when there is no `=`.
    pub default: Option<String>,
}

/// `HEALTHCHECK` arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Healthcheck {
    /// `HEALTHCHECK NONE`: disable any inherited check (config test `["NONE"]`).
    None,
    /// `HEALTHCHECK [options] CMD …`.
    Check(HealthConfig),
}

/// A health check, as it goes into the image config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthConfig {
    /// `["CMD", args…]` for the exec form, `["CMD-SHELL", "command"]` for the shell form.
    pub test: Vec<String>,
    /// `--interval`; zero when not given.
    pub interval: Duration,
    /// `--timeout`; zero when not given.
    pub timeout: Duration,
    /// `--start-period`; zero when not given.
    pub start_period: Duration,
    /// `--start-interval`; zero when not given.
    pub start_interval: Duration,
    /// `--retries`; zero when not given.
    pub retries: u32,
}

/// `ONBUILD` arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Onbuild {
    /// The trigger as stored in the image config: the line without `ONBUILD`, followed by
    /// each heredoc body and name (BuildKit's `Expression`).
    pub expression: String,
    /// The trigger's syntax node (never ONBUILD, FROM or MAINTAINER).
    pub trigger: Node,
}

/// Types every instruction of `df`, in order.
pub fn parse_instructions(df: &Dockerfile) -> Result<Vec<Instruction>, DockerfileError> {
    df.instructions.iter().map(|n| Instruction::from_node(n, df)).collect()
}

/// The keywords kiln knows, upper-case.
pub const KEYWORDS: [&str; 18] = [
    "ADD",
    "ARG",
    "CMD",
    "COPY",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "FROM",
    "HEALTHCHECK",
    "LABEL",
    "MAINTAINER",
    "ONBUILD",
    "RUN",
    "SHELL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
];

#[derive(Clone, Copy, PartialEq)]
enum FlagKind {
    Bool,
    Str,
    Strs,
}

/// Flag values after BuildKit's `BFlags.Parse`.
struct Flags {
    values: HashMap<&'static str, Vec<String>>,
}

impl Flags {
    fn string(&self, name: &str) -> Option<String> {
        self.values.get(name).and_then(|v| v.last().cloned())
    }

    fn strings(&self, name: &str) -> Vec<String> {
        self.values.get(name).cloned().unwrap_or_default()
    }

    fn bool(&self, name: &str) -> bool {
        self.string(name).as_deref() == Some("true")
    }
}

/// Argument-checking helpers bound to one node.
struct Ctx<'a> {
    node: &'a Node,
    df: &'a Dockerfile,
    upper: String,
}

impl Ctx<'_> {
    fn err(&self, message: impl Into<String>) -> DockerfileError {
        self.df.error(self.node.args_pos, message)
    }

    fn flags(&self, spec: &[(&'static str, FlagKind)]) -> Result<Flags, DockerfileError> {
        let mut values: HashMap<&'static str, Vec<String>> = HashMap::new();
        for (i, flag) in self.node.flags.iter().enumerate() {
            let pos = self.node.flag_pos.get(i).copied().unwrap_or(self.node.keyword_pos);
            let body = flag.strip_prefix("--").unwrap_or(flag);
            let (name, value) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (body, None),
            };
            let Some(&(key, kind)) = spec.iter().find(|(n, _)| *n == name) else {
                let accepted = if spec.is_empty() {
                    format!("{} takes no flags", self.upper)
                } else {
                    let names: Vec<String> = spec.iter().map(|(n, _)| format!("--{n}")).collect();
                    format!("{} takes {}", self.upper, names.join(", "))
                };
                return Err(self.df.error(pos, format!("unknown flag: --{name} ({accepted})")));
            };
            let entry = values.entry(key).or_default();
            if !entry.is_empty() && kind != FlagKind::Strs {
                return Err(self.df.error(pos, format!("duplicate flag specified: --{name}")));
            }
            let v = match (kind, value) {
                (FlagKind::Bool, None) => "true".to_string(),
                (FlagKind::Bool, Some(v)) if v.eq_ignore_ascii_case("true") || v.eq_ignore_ascii_case("false") => {
                    v.to_ascii_lowercase()
                }
                (FlagKind::Bool, Some("")) | (_, None) => {
                    return Err(self.df.error(pos, format!("missing a value on flag: --{name}")));
                }
                (FlagKind::Bool, Some(v)) => {
                    return Err(self.df.error(pos, format!("expecting boolean value for flag --{name}, not: {v}")));
                }
                (_, Some(v)) => v.to_string(),
            };
            entry.push(v);
        }
        Ok(Flags { values })
    }

    fn exactly_one(&self) -> Result<String, DockerfileError> {
        match self.node.args.as_slice() {
            [one] => Ok(one.clone()),
            _ => Err(self.err(format!("{} requires exactly one argument", self.upper))),
        }
    }

    fn at_least_one(&self) -> Result<(), DockerfileError> {
        if self.node.args.is_empty() {
            return Err(self.err(format!("{} requires at least one argument", self.upper)));
        }
        Ok(())
    }

    /// BuildKit's `handleJSONArgs` plus the shell-form flag.
    fn command_line(&self) -> CommandLine {
        let args = if self.node.json || self.node.args.is_empty() {
            self.node.args.clone()
        } else {
            vec![self.node.args.join(" ")]
        };
        CommandLine { args, prepend_shell: !self.node.json }
    }

    fn key_values(&self) -> Result<Vec<KeyValue>, DockerfileError> {
        self.at_least_one()?;
        let mut out = Vec::new();
        for t in self.node.args.chunks(3) {
            let [key, value, delim] = t else {
                return Err(self.err(format!("Bad input to {}, too many arguments", self.upper)));
            };
            if key.is_empty() {
                return Err(self.err(format!("{} names can not be blank", self.upper)));
            }
            out.push(KeyValue { key: key.clone(), value: value.clone(), no_delim: delim.is_empty() });
        }
        Ok(out)
    }

    /// BuildKit's `parseSourcesAndDest`: splits COPY/ADD arguments, resolving heredocs.
    fn sources_and_dest(&self) -> Result<(Vec<String>, Vec<SourceContent>, String), DockerfileError> {
        let args = &self.node.args;
        if args.len() < 2 {
            return Err(self.err(format!(
                "{} requires at least two arguments, but only one was provided. Destination could not be determined",
                self.upper
            )));
        }
        let (srcs, dest) = args.split_at(args.len() - 1);
        let dest = dest[0].clone();
        if heredoc_word(&dest).is_some() {
            return Err(self.err(format!("{} cannot accept a heredoc as a destination", self.upper)));
        }
        let mut paths = Vec::new();
        let mut contents = Vec::new();
        for src in srcs {
            match heredoc_word(src) {
                Some(h) => {
                    // Like BuildKit, the last heredoc of that name supplies the body.
                    let body = self.node.heredocs.iter().rev().find(|d| d.name == h.name);
                    let raw = body.map(|d| d.content.clone()).unwrap_or_default();
                    let data = Heredoc { content: raw, ..h.clone() }.chomped();
                    contents.push(SourceContent { path: h.name, data, expand: h.expand });
                }
                None => paths.push(src.clone()),
            }
        }
        Ok((paths, contents, dest))
    }
}

/// Go's `time.ParseDuration`, in nanoseconds.
fn parse_go_duration(orig: &str) -> Result<i64, String> {
    let invalid = || format!("time: invalid duration {}", go_quote(orig));
    let mut s = orig;
    let mut neg = false;
    if let Some(c @ ('-' | '+')) = s.chars().next() {
        neg = c == '-';
        s = &s[1..];
    }
    if s == "0" {
        return Ok(0);
    }
    if s.is_empty() {
        return Err(invalid());
    }
    let mut total: u64 = 0;
    while !s.is_empty() {
        let b = s.as_bytes();
        if !(b[0] == b'.' || b[0].is_ascii_digit()) {
            return Err(invalid());
        }
        let int_len = b.iter().take_while(|c| c.is_ascii_digit()).count();
        let mut v: u64 = 0;
        for &d in &b[..int_len] {
            v = v
                .checked_mul(10)
                .and_then(|v| v.checked_add(u64::from(d - b'0')))
                .filter(|&v| v <= 1 << 63)
                .ok_or_else(invalid)?;
        }
        s = &s[int_len..];
        let mut frac: u64 = 0;
        let mut scale = 1f64;
        let mut frac_len = 0;
        if let Some(rest) = s.strip_prefix('.') {
            s = rest;
            frac_len = s.bytes().take_while(u8::is_ascii_digit).count();
            let mut overflow = false;
            for &d in &s.as_bytes()[..frac_len] {
                if overflow {
                    continue;
                }
                match frac.checked_mul(10).and_then(|f| f.checked_add(u64::from(d - b'0'))).filter(|&f| f <= 1 << 63) {
                    Some(f) => {
                        frac = f;
                        scale *= 10.0;
                    }
                    None => overflow = true,
                }
            }
            s = &s[frac_len..];
        }
        if int_len == 0 && frac_len == 0 {
            return Err(invalid());
        }
        let unit_len = s.find(|c: char| c == '.' || c.is_ascii_digit()).unwrap_or(s.len());
        let (u, rest) = s.split_at(unit_len);
        s = rest;
        if u.is_empty() {
            return Err(format!("time: missing unit in duration {}", go_quote(orig)));
        }
        let unit: u64 = match u {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(format!("time: unknown unit {} in duration {}", go_quote(u), go_quote(orig))),
        };
        if v > (1 << 63) / unit {
            return Err(invalid());
        }
        v *= unit;
        if frac > 0 {
            v = v
                .checked_add((frac as f64 * (unit as f64 / scale)) as u64)
                .filter(|&v| v <= 1 << 63)
                .ok_or_else(invalid)?;
        }
        total = total.checked_add(v).filter(|&t| t <= 1 << 63).ok_or_else(invalid)?;
    }
    if neg {
        return Ok((total as i128).wrapping_neg() as i64);
    }
    if total > i64::MAX as u64 {
        return Err(invalid());
    }
    Ok(total as i64)
}

/// BuildKit's shortest allowed HEALTHCHECK interval (Docker's `MinimumDuration`), 1ms.
const MINIMUM_DURATION_NS: i64 = 1_000_000;

impl Instruction {
    /// Types one syntax node of `df` (BuildKit's `ParseInstruction`).
    pub fn from_node(node: &Node, df: &Dockerfile) -> Result<Instruction, DockerfileError> {
        let name = node.name();
        let upper = name.to_uppercase();
        let cx = Ctx { node, df, upper: upper.clone() };
        use FlagKind::{Bool, Str, Strs};
        let kind = match name.as_str() {
            "from" => {
                let f = cx.flags(&[("platform", Str)])?;
                let args = &node.args;
                let stage = match args.as_slice() {
                    [_, as_kw, n] if as_kw.eq_ignore_ascii_case("as") => {
                        let lower = go_to_lower(n);
                        let mut chars = lower.chars();
                        let valid = chars.next().is_some_and(|c| c.is_ascii_lowercase())
                            && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c));
                        if !valid {
                            return Err(cx.err(format!(
                                "invalid name for build stage: {}, name can't start with a number or contain symbols",
                                go_quote(n)
                            )));
                        }
                        Some(lower)
                    }
                    [_] => None,
                    _ => return Err(cx.err("FROM requires either one or three arguments")),
                };
                Kind::From(FromArgs { image: args[0].clone(), name: stage, platform: f.string("platform") })
            }
            "run" => {
                let f = cx.flags(&[("mount", Strs), ("network", Str), ("security", Str)])?;
                Kind::Run(RunArgs {
                    command: cx.command_line(),
                    mounts: f.strings("mount"),
                    network: f.string("network"),
                    security: f.string("security"),
                    heredocs: node.heredocs.clone(),
                })
            }
            "cmd" => {
                cx.flags(&[])?;
                Kind::Cmd(cx.command_line())
            }
            "entrypoint" => {
                cx.flags(&[])?;
                Kind::Entrypoint(cx.command_line())
            }
            "shell" => {
                cx.flags(&[])?;
                cx.at_least_one()?;
                if !node.json {
                    return Err(cx.err("SHELL requires the arguments to be in JSON form"));
                }
                Kind::Shell(node.args.clone())
            }
            "copy" => {
                let (sources, contents, dest) = cx.sources_and_dest()?;
                let f = cx.flags(&[
                    ("from", Str),
                    ("chown", Str),
                    ("chmod", Str),
                    ("link", Bool),
                    ("parents", Bool),
                    ("exclude", Strs),
                ])?;
                Kind::Copy(CopyArgs {
                    sources,
                    contents,
                    dest,
                    json: node.json,
                    from: f.string("from"),
                    chown: f.string("chown"),
                    chmod: f.string("chmod"),
                    link: f.bool("link"),
                    parents: f.bool("parents"),
                    excludes: f.strings("exclude"),
                })
            }
            "add" => {
                let (sources, contents, dest) = cx.sources_and_dest()?;
                let f = cx.flags(&[
                    ("chown", Str),
                    ("chmod", Str),
                    ("link", Bool),
                    ("keep-git-dir", Bool),
                    ("checksum", Str),
                    ("exclude", Strs),
                ])?;
                Kind::Add(AddArgs {
                    sources,
                    contents,
                    dest,
                    json: node.json,
                    chown: f.string("chown"),
                    chmod: f.string("chmod"),
                    link: f.bool("link"),
                    keep_git_dir: f.bool("keep-git-dir"),
                    checksum: f.string("checksum"),
                    excludes: f.strings("exclude"),
                })
            }
            "env" => {
                cx.flags(&[])?;
                Kind::Env(cx.key_values()?)
            }
            "label" => {
                cx.flags(&[])?;
                Kind::Label(cx.key_values()?)
            }
            "arg" => {
                cx.at_least_one()?;
                cx.flags(&[])?;
                let mut decls = Vec::new();
                for a in &node.args {
                    let decl = match a.split_once('=') {
                        Some(("", _)) => return Err(cx.err("ARG names can not be blank")),
                        Some((k, v)) => ArgDecl { key: k.to_string(), default: Some(v.to_string()) },
                        None => ArgDecl { key: a.clone(), default: None },
                    };
                    decls.push(decl);
                }
                Kind::Arg(decls)
            }
            "expose" => {
                cx.at_least_one()?;
                cx.flags(&[])?;
                Kind::Expose(node.args.clone())
            }
            "volume" => {
                cx.at_least_one()?;
                cx.flags(&[])?;
                let mut vols = Vec::new();
                for v in &node.args {
                    let v = v.trim_matches(char::is_whitespace);
                    if v.is_empty() {
                        return Err(cx.err("VOLUME specified can not be an empty string"));
                    }
                    vols.push(v.to_string());
                }
                Kind::Volume(vols)
            }
            "user" => {
                let u = cx.exactly_one()?;
                cx.flags(&[])?;
                Kind::User(u)
            }
            "workdir" => {
                let w = cx.exactly_one()?;
                cx.flags(&[])?;
                Kind::Workdir(w)
            }
            "stopsignal" => {
                let s = cx.exactly_one()?;
                cx.flags(&[])?;
                Kind::StopSignal(s)
            }
            "maintainer" => {
                let m = cx.exactly_one()?;
                cx.flags(&[])?;
                Kind::Maintainer(m)
            }
            "healthcheck" => Kind::Healthcheck(healthcheck(&cx)?),
            "onbuild" => {
                cx.flags(&[])?;
                let Some(trigger) = node.sub.as_deref() else {
                    return Err(cx.err("ONBUILD requires at least one argument"));
                };
                let t = trigger.name().to_uppercase();
                match t.as_str() {
                    "ONBUILD" => return Err(cx.err("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")),
                    "MAINTAINER" | "FROM" => return Err(cx.err(format!("{t} isn't allowed as an ONBUILD trigger"))),
                    _ => {}
                }
                let mut expression = strip_onbuild(&node.original).to_string();
                for h in &node.heredocs {
                    expression.push('\n');
                    expression.push_str(&h.content);
                    expression.push_str(&h.name);
                }
                Kind::Onbuild(Onbuild { expression, trigger: trigger.clone() })
            }
            _ => {
                let hint = suggest(&node.keyword).map(|k| format!(" (did you mean {k}?)")).unwrap_or_default();
                return Err(df.error(node.keyword_pos, format!("unknown instruction: {}{hint}", node.keyword)));
            }
        };
        let flags = node
            .flags
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let body = f.strip_prefix("--").unwrap_or(f);
                let (name, value) = match body.split_once('=') {
                    Some((n, v)) => (n.to_string(), Some(v.to_string())),
                    None => (body.to_string(), None),
                };
                FlagUse { name, value, pos: node.flag_pos.get(i).copied().unwrap_or(node.keyword_pos) }
            })
            .collect();
        Ok(Instruction {
            kind,
            flags,
            original: node.original.clone(),
            start_line: node.start_line,
            end_line: node.end_line,
            pos: node.keyword_pos,
            args_pos: node.args_pos,
        })
    }
}

/// BuildKit's `(?i)^\s*ONBUILD\s*` removal from the original line.
fn strip_onbuild(original: &str) -> &str {
    let is_space = |c: char| matches!(c, '\t' | '\n' | '\u{c}' | '\r' | ' ');
    let s = original.trim_start_matches(is_space);
    match s.get(..7) {
        Some(k) if k.eq_ignore_ascii_case("onbuild") => s[7..].trim_start_matches(is_space),
        _ => original,
    }
}

fn healthcheck(cx: &Ctx<'_>) -> Result<Healthcheck, DockerfileError> {
    use FlagKind::Str;
    let node = cx.node;
    cx.at_least_one()?;
    let f = cx.flags(&[
        ("interval", Str),
        ("timeout", Str),
        ("start-period", Str),
        ("start-interval", Str),
        ("retries", Str),
    ])?;
    let typ = node.args[0].to_uppercase();
    let args = &node.args[1..];
    if typ == "NONE" {
        // BuildKit ignores the options of HEALTHCHECK NONE.
        if !args.is_empty() {
            return Err(cx.err("HEALTHCHECK NONE takes no arguments"));
        }
        return Ok(Healthcheck::None);
    }
    if typ != "CMD" {
        return Err(cx.err(format!("Unknown type {} in HEALTHCHECK (try CMD)", go_quote(&typ))));
    }
    let cmd: Vec<String> = if node.json || args.is_empty() { args.to_vec() } else { vec![args.join(" ")] };
    if cmd.is_empty() {
        return Err(cx.err("Missing command after HEALTHCHECK CMD"));
    }
    let mut test = vec![if node.json { "CMD" } else { "CMD-SHELL" }.to_string()];
    test.extend(cmd);
    let flag_pos = |name: &str| {
        let i =
            node.flags.iter().position(|fl| fl.strip_prefix("--").is_some_and(|b| b.split('=').next() == Some(name)));
        i.and_then(|i| node.flag_pos.get(i).copied()).unwrap_or(node.args_pos)
    };
    let interval = |name: &str| -> Result<Duration, DockerfileError> {
        let Some(s) = f.string(name).filter(|s| !s.is_empty()) else { return Ok(Duration::ZERO) };
        let ns = parse_go_duration(&s).map_err(|m| cx.df.error(flag_pos(name), m))?;
        if ns == 0 {
            return Ok(Duration::ZERO);
        }
        if ns < MINIMUM_DURATION_NS {
            return Err(cx.df.error(flag_pos(name), format!("Interval {} cannot be less than 1ms", go_quote(name))));
        }
        Ok(Duration::from_nanos(ns.unsigned_abs()))
    };
    let retries = match f.string("retries").filter(|s| !s.is_empty()) {
        None => 0,
        Some(r) => {
            let n = parse_go_int32(&r).map_err(|m| cx.df.error(flag_pos("retries"), m))?;
            u32::try_from(n)
                .map_err(|_| cx.df.error(flag_pos("retries"), format!("--retries cannot be negative ({n})")))?
        }
    };
    Ok(Healthcheck::Check(HealthConfig {
        test,
        interval: interval("interval")?,
        timeout: interval("timeout")?,
        start_period: interval("start-period")?,
        start_interval: interval("start-interval")?,
        retries,
    }))
}

/// Go's `strconv.ParseInt(s, 10, 32)` with its error texts.
fn parse_go_int32(s: &str) -> Result<i32, String> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("strconv.ParseInt: parsing {}: invalid syntax", go_quote(s)));
    }
    s.parse::<i32>().map_err(|_| format!("strconv.ParseInt: parsing {}: value out of range", go_quote(s)))
}

/// The known keyword closest to `word` when it is a likely typo.
fn suggest(word: &str) -> Option<&'static str> {
    let w = word.to_uppercase();
    let dist = |a: &str, b: &str| {
        let a: Vec<char> = a.chars().collect();
        let b: Vec<char> = b.chars().collect();
        let mut prev: Vec<usize> = (0..=b.len()).collect();
        for i in 1..=a.len() {
            let mut cur = vec![i; b.len() + 1];
            for j in 1..=b.len() {
                let cost = usize::from(a[i - 1] != b[j - 1]);
                cur[j] = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
            }
            prev = cur;
        }
        prev[b.len()]
    };
    KEYWORDS.iter().map(|k| (dist(&w, k), *k)).filter(|(d, k)| *d > 0 && *d <= 2.min(k.len() / 2)).min().map(|(_, k)| k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("5s"), Ok(5_000_000_000));
        assert_eq!(parse_go_duration("1h2m3.5s"), Ok(3_723_500_000_000));
        assert_eq!(parse_go_duration("1.5ms"), Ok(1_500_000));
        assert_eq!(parse_go_duration("300µs"), Ok(300_000));
        assert_eq!(parse_go_duration("0"), Ok(0));
        assert_eq!(parse_go_duration("-2s"), Ok(-2_000_000_000));
        assert_eq!(parse_go_duration("5"), Err("time: missing unit in duration \"5\"".into()));
        assert_eq!(parse_go_duration("5x"), Err("time: unknown unit \"x\" in duration \"5x\"".into()));
        assert_eq!(parse_go_duration(".s"), Err("time: invalid duration \".s\"".into()));
        assert_eq!(parse_go_duration("99999999999h"), Err("time: invalid duration \"99999999999h\"".into()));
    }

    #[test]
    fn suggestions() {
        assert_eq!(suggest("RUNN"), Some("RUN"));
        assert_eq!(suggest("cpoy"), Some("COPY"));
        assert_eq!(suggest("XYZZY"), None);
    }
}
