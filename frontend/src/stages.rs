//! Stage resolution and lowering: typed instructions plus build options become a [`BuildGraph`].
//!
//! This follows BuildKit's `dockerfile2llb`: global ARGs (before the first FROM) are usable in
//! FROM only, unless a stage re-declares them; `--build-arg` overrides defaults; the platform
//! ARGs (TARGETPLATFORM, BUILDARCH, …) are predefined globals; proxy build args reach RUN
//! without a declaration and stay out of the history; an ARG's value joins the environment
//! of every later RUN of its stage (and of stages built FROM it). One ENV line is expanded
//! against the values before it. Only the stages the target reaches are lowered, and only
//! their base images are resolved. ONBUILD triggers of the base run right after FROM.

use std::collections::BTreeMap;

use crate::ast::go_quote;
use crate::config::{DEFAULT_PATH, ImageConfig, ImageResolver, ResolvedImage, set_env};
use crate::error::{DockerfileError, Pos};
use crate::graph::{
    BuildGraph, Copy, Digest, Exec, FileAction, FileOp, Mount, Network, Op, Platform, Security, Source, StageOutput,
};
use crate::instructions::{
    AddArgs, CommandLine, CopyArgs, Healthcheck, Instruction, Kind, RunArgs, parse_instructions,
};
use crate::shell::{Env, Lexer};
use crate::{Dockerfile, parse_str};

/// What the user asked for besides the Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildOptions {
    /// `--build-arg KEY=value`.
    pub build_args: BTreeMap<String, String>,
    /// `--target`: the stage to build (default: the last one).
    pub target: Option<String>,
    /// `--platform`: the target platform (default: the build platform).
    pub platform: Option<Platform>,
    /// The platform kiln runs on.
    pub build_platform: Platform,
    /// The name errors give the Dockerfile (`Dockerfile`).
    pub file_name: String,
    /// `--label KEY=value`: added to the target image's labels (not to its history).
    pub labels: BTreeMap<String, String>,
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions {
            build_args: BTreeMap::new(),
            target: None,
            platform: None,
            build_platform: Platform::linux_amd64(),
            file_name: crate::error::DEFAULT_FILE_NAME.to_owned(),
            labels: BTreeMap::new(),
        }
    }
}

/// Why a Dockerfile could not be lowered.
#[derive(Debug, thiserror::Error)]
pub enum FrontendError {
    /// A failure located in the Dockerfile (`Dockerfile:LINE:COL: …`).
    #[error(transparent)]
    Dockerfile(#[from] DockerfileError),
    /// `--target` names no stage.
    #[error("target stage {0:?} could not be found")]
    TargetNotFound(String),
    /// The Dockerfile has no FROM.
    #[error("{0}: the Dockerfile contains no stages to build")]
    NoStages(String),
}

/// Build args that BuildKit applies to RUN as proxy settings without an ARG declaration.
const PROXY_ARGS: [&str; 5] = ["http_proxy", "https_proxy", "ftp_proxy", "no_proxy", "all_proxy"];

/// ARGs that never enter the environment.
const NON_ENV_ARGS: [&str; 2] = ["BUILDKIT_SBOM_SCAN_CONTEXT", "BUILDKIT_SBOM_SCAN_STAGE"];

/// Parses `text` and lowers it (see [`lower_dockerfile`]).
pub fn lower(text: &str, opts: &BuildOptions, resolver: &dyn ImageResolver) -> Result<BuildGraph, FrontendError> {
    let df = parse_str(text).map_err(|e| e.with_file(&opts.file_name))?;
    lower_dockerfile(&df, opts, resolver)
}

/// Lowers a parsed Dockerfile to a build graph holding the stages the target reaches.
pub fn lower_dockerfile(
    df: &Dockerfile,
    opts: &BuildOptions,
    resolver: &dyn ImageResolver,
) -> Result<BuildGraph, FrontendError> {
    let file = opts.file_name.clone();
    let instrs = parse_instructions(df).map_err(|e| e.with_file(&file))?;
    let mut lw = Lowerer::new(df, opts, resolver, instrs)?;
    let target = match &opts.target {
        None => lw.stages.len() - 1,
        Some(t) => lw.find_stage(t).ok_or_else(|| FrontendError::TargetNotFound(t.clone()))?,
    };
    lw.globals.set("TARGETSTAGE", lw.stages[target].name.clone().unwrap_or_default());
    lw.meta_args()?;
    lw.stage(target)?;
    let mut graph = std::mem::take(&mut lw.graph);
    for (index, done) in lw.done.iter_mut().enumerate() {
        if let Some(mut state) = done.take() {
            if index == target {
                graph.target = graph.stages.len();
                state.image.labels.extend(opts.labels.clone());
            }
            graph.stages.push(StageOutput {
                name: lw.stages[index].name.clone(),
                index,
                root: state.root,
                image: state.image,
                platform: state.platform,
            });
        }
    }
    Ok(graph)
}

/// One `FROM` and the instructions up to the next.
struct StageDef {
    name: Option<String>,
    from: crate::instructions::FromArgs,
    /// Where the FROM keyword and its arguments are.
    pos: Pos,
    args_pos: Pos,
    instrs: Vec<Instruction>,
}

/// An ordered `KEY=value` list that the expander can read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct EnvList(Vec<String>);

impl EnvList {
    fn set(&mut self, key: &str, value: String) {
        set_env(&mut self.0, key, &value);
    }
}

impl Env for EnvList {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.0.iter().find_map(|e| match e.split_once('=') {
            Some((k, v)) if k == name => Some(v),
            None if e == name => Some(""),
            _ => None,
        })
    }
}

/// Everything a stage carries while its instructions are dispatched.
#[derive(Debug, Clone)]
struct StageState {
    root: Digest,
    image: ImageConfig,
    /// The environment RUN sees and expansion reads: image ENV plus ARG values.
    env: EnvList,
    cwd: String,
    user: String,
    platform: Platform,
    /// Declared ARGs with their values, for RUN's history prefix (`|2 A=1 B=2`).
    build_args: Vec<(String, Option<String>)>,
    cmd_set: bool,
}

struct Lowerer<'a> {
    df: &'a Dockerfile,
    opts: &'a BuildOptions,
    resolver: &'a dyn ImageResolver,
    lexer: Lexer,
    meta: Vec<Instruction>,
    stages: Vec<StageDef>,
    globals: EnvList,
    target_platform: Platform,
    graph: BuildGraph,
    done: Vec<Option<StageState>>,
    images: BTreeMap<(String, Platform), ResolvedImage>,
}

impl<'a> Lowerer<'a> {
    fn new(
        df: &'a Dockerfile,
        opts: &'a BuildOptions,
        resolver: &'a dyn ImageResolver,
        instrs: Vec<Instruction>,
    ) -> Result<Self, FrontendError> {
        let mut meta = Vec::new();
        let mut stages: Vec<StageDef> = Vec::new();
        for ins in instrs {
            match (&ins.kind, stages.last_mut()) {
                (Kind::From(f), _) => stages.push(StageDef {
                    name: f.name.clone(),
                    from: f.clone(),
                    pos: ins.pos,
                    args_pos: ins.args_pos,
                    instrs: Vec::new(),
                }),
                (_, Some(stage)) => stage.instrs.push(ins),
                (Kind::Arg(_), None) => meta.push(ins),
                (_, None) => {
                    return Err(df
                        .error(ins.pos, "no build stage in current context")
                        .with_file(&opts.file_name)
                        .into());
                }
            }
        }
        if stages.is_empty() {
            return Err(FrontendError::NoStages(opts.file_name.clone()));
        }
        let target_platform = opts.platform.clone().unwrap_or_else(|| opts.build_platform.clone());
        let mut globals = EnvList::default();
        let (b, t) = (&opts.build_platform, &target_platform);
        for (k, v) in [
            ("BUILDPLATFORM", b.to_string()),
            ("BUILDOS", b.os.clone()),
            ("BUILDOSVERSION", String::new()),
            ("BUILDARCH", b.architecture.clone()),
            ("BUILDVARIANT", b.variant.clone()),
            ("TARGETPLATFORM", t.to_string()),
            ("TARGETOS", t.os.clone()),
            ("TARGETOSVERSION", String::new()),
            ("TARGETARCH", t.architecture.clone()),
            ("TARGETVARIANT", t.variant.clone()),
        ] {
            globals.set(k, opts.build_args.get(k).cloned().unwrap_or(v));
        }
        let count = stages.len();
        Ok(Lowerer {
            df,
            opts,
            resolver,
            lexer: Lexer::new(df.escape),
            meta,
            stages,
            globals,
            target_platform,
            graph: BuildGraph::default(),
            done: vec![None; count],
            images: BTreeMap::new(),
        })
    }

    fn err(&self, pos: Pos, message: impl Into<String>) -> FrontendError {
        self.df.error(pos, message).with_file(&self.opts.file_name).into()
    }

    fn find_stage(&self, name: &str) -> Option<usize> {
        let lower = name.to_lowercase();
        self.stages.iter().position(|s| s.name.as_deref() == Some(lower.as_str()))
    }

    /// BuildKit's `buildMetaArgs`: global ARG defaults, expanded in order, overridden by
    /// `--build-arg`.
    fn meta_args(&mut self) -> Result<(), FrontendError> {
        for ins in std::mem::take(&mut self.meta) {
            let Kind::Arg(decls) = &ins.kind else { continue };
            for d in decls {
                let value = match (self.opts.build_args.get(&d.key), &d.default) {
                    (Some(v), _) => Some(v.clone()),
                    (None, Some(def)) => Some(self.expand(def, &self.globals.clone(), ins.pos)?),
                    (None, None) => None,
                };
                if let Some(v) = value {
                    self.globals.set(&d.key, v);
                }
            }
        }
        Ok(())
    }

    fn expand(&self, word: &str, env: &EnvList, pos: Pos) -> Result<String, FrontendError> {
        self.lexer.process_word(word, env).map_err(|e| self.err(pos, e.to_string()))
    }

    /// Lowers stage `index` (once) and returns its final state.
    fn stage(&mut self, index: usize) -> Result<StageState, FrontendError> {
        if let Some(done) = &self.done[index] {
            return Ok(done.clone());
        }
        let def = &self.stages[index];
        let (args, from_pos, from_args_pos) = (def.from.clone(), def.pos, def.args_pos);
        let globals = self.globals.clone();
        let base = self.expand(&args.image, &globals, from_args_pos)?;
        if base.is_empty() {
            return Err(self.err(from_args_pos, format!("base name ({}) should not be blank", args.image)));
        }
        let platform = match &args.platform {
            Some(p) => {
                let text = self.expand(p, &globals, from_pos)?;
                if text.is_empty() {
                    return Err(self.err(from_pos, format!("empty platform value from expression {p}")));
                }
                Platform::parse(&text).map_err(|e| self.err(from_pos, format!("failed to parse platform {p}: {e}")))?
            }
            None => self.target_platform.clone(),
        };
        // Only an earlier stage can be a base; any other name is an image.
        let base_stage = self.find_stage(&base).filter(|&i| i < index);
        let label = match (&self.stages[index].name, self.stages.len()) {
            (_, 1) => String::new(),
            (Some(n), _) => n.clone(),
            (None, _) => format!("stage-{index}"),
        };
        let own_steps = self.stages[index]
            .instrs
            .iter()
            .filter(|i| matches!(i.kind, Kind::Run(_) | Kind::Copy(_) | Kind::Add(_) | Kind::Workdir(_)))
            .count();
        let from_image = base_stage.is_none() && base != "scratch";
        let mut steps = Steps { label, done: 0, total: own_steps + usize::from(from_image) };
        let (mut st, triggers) = match base_stage {
            Some(b) => {
                let mut st = self.stage(b)?;
                // "CMD was set" is tracked per stage: a child's ENTRYPOINT still resets CMD.
                st.cmd_set = false;
                let triggers = std::mem::take(&mut st.image.on_build);
                (st, triggers)
            }
            None => {
                let (root, mut image, platform) =
                    self.image_source(&base, &platform, from_args_pos, Some(&mut steps))?;
                let triggers = std::mem::take(&mut image.on_build);
                let st = StageState {
                    root,
                    env: EnvList::default(),
                    cwd: "/".into(),
                    user: String::new(),
                    platform,
                    build_args: Vec::new(),
                    cmd_set: false,
                    image,
                };
                (st, triggers)
            }
        };
        if st.image.env_get("PATH").is_none() {
            st.image.env.push(format!("PATH={DEFAULT_PATH}"));
        }
        for e in st.image.env.clone() {
            let (k, v) = e.split_once('=').unwrap_or((e.as_str(), ""));
            st.env.set(k, v.to_owned());
        }
        if !st.image.working_dir.is_empty() {
            st.cwd = st.image.working_dir.clone();
        }
        st.user = st.image.user.clone();
        let mut instrs = Vec::new();
        for t in &triggers {
            instrs.push(self.trigger(t, from_pos)?);
        }
        // BuildKit counts every trigger as a step.
        steps.total += triggers.len();
        instrs.extend(self.stages[index].instrs.clone());
        for (n, ins) in instrs.iter().enumerate() {
            self.dispatch(&mut st, ins, index, &mut steps, n < triggers.len())?;
        }
        self.done[index] = Some(st.clone());
        Ok(st)
    }

    /// Parses one ONBUILD trigger text; errors point at the FROM that ran it.
    fn trigger(&self, text: &str, at: Pos) -> Result<Instruction, FrontendError> {
        let bad = |e: DockerfileError| self.err(at, format!("ONBUILD trigger {text:?}: {}", e.message));
        let df = parse_str(text).map_err(bad)?;
        match df.instructions.as_slice() {
            [node] => Instruction::from_node(node, &df).map_err(bad),
            _ => Err(self.err(at, "onbuild trigger should be a single expression")),
        }
    }

    /// The root vertex, config and platform for `FROM <image>` / `COPY --from=<image>`.
    fn image_source(
        &mut self,
        name: &str,
        platform: &Platform,
        pos: Pos,
        steps: Option<&mut Steps>,
    ) -> Result<(Digest, ImageConfig, Platform), FrontendError> {
        if name.eq_ignore_ascii_case("scratch") {
            let root = self.graph.add(Op::Source(Source::Scratch), "scratch");
            return Ok((root, ImageConfig::default(), platform.clone()));
        }
        let reference = normalize_reference(name)
            .map_err(|e| self.err(pos, format!("failed to parse stage name {name:?}: {e}")))?;
        let key = (reference.clone(), platform.clone());
        let resolved = match self.images.get(&key) {
            Some(r) => r.clone(),
            None => {
                let r = self
                    .resolver
                    .resolve_image(&reference, platform)
                    .map_err(|e| self.err(pos, format!("{name}: {e}")))?;
                self.images.insert(key, r.clone());
                r
            }
        };
        let root = if resolved.has_layers {
            let reference = if resolved.reference.is_empty() { reference } else { resolved.reference.clone() };
            let text = format!("FROM {reference}");
            let desc = match steps {
                Some(steps) => steps.name(&text, false),
                None => text,
            };
            let op = Op::Source(Source::Image { reference, platform: platform.clone() });
            self.graph.add_at(op, desc, Some(pos))
        } else {
            self.graph.add(Op::Source(Source::Scratch), "scratch")
        };
        Ok((root, resolved.config, platform.clone()))
    }

    /// The vertex a `--from=` (COPY or RUN --mount) names: an earlier stage or an image.
    /// `verb` names the use in errors (`copy from`, `mount from`).
    fn stage_or_image(&mut self, from: &str, current: usize, pos: Pos, verb: &str) -> Result<Digest, FrontendError> {
        let index = match from.parse::<i64>() {
            Ok(n) if n < 0 || n as usize >= self.stages.len() => {
                return Err(self.err(pos, format!("invalid stage index {n}")));
            }
            Ok(n) => Some(n as usize),
            Err(_) => self.find_stage(from),
        };
        match index {
            Some(i) if i >= current => Err(self.err(
                pos,
                format!(
                    "cannot {verb} stage {from:?}, it needs to be defined before current stage {:?}",
                    self.stages[current].name.clone().unwrap_or_else(|| format!("stage-{current}"))
                ),
            )),
            Some(i) => Ok(self.stage(i)?.root),
            None => {
                let platform = self.target_platform.clone();
                Ok(self.image_source(from, &platform, pos, None)?.0)
            }
        }
    }

    fn dispatch(
        &mut self,
        st: &mut StageState,
        ins: &Instruction,
        index: usize,
        steps: &mut Steps,
        onbuild: bool,
    ) -> Result<(), FrontendError> {
        let at = ins.args_pos;
        let desc = match &ins.kind {
            Kind::Run(_) => {
                let mut raw = self.lexer;
                raw.raw_quotes = true;
                raw.skip_unset_env = true;
                steps.name(&progress_text(&raw, &ins.original, &st.env), onbuild)
            }
            Kind::Copy(_) | Kind::Add(_) | Kind::Workdir(_) => {
                steps.name(&progress_text(&self.lexer, &ins.original, &st.env), onbuild)
            }
            _ => String::new(),
        };
        match &ins.kind {
            Kind::From(_) => {}
            Kind::Env(kvs) => {
                let before = st.env.clone();
                let mut msg = String::from("ENV");
                for kv in kvs {
                    let k = self.expand(&kv.key, &before, at)?;
                    let v = self.expand(&kv.value, &before, at)?;
                    msg.push_str(&format!(" {k}={v}"));
                    st.env.set(&k, v.clone());
                    st.image.env_set(&k, &v);
                }
                st.image.commit(msg, false, false);
            }
            Kind::Arg(decls) => {
                let mut parts = Vec::new();
                for d in decls {
                    let value = match (self.opts.build_args.get(&d.key), &d.default) {
                        (Some(v), _) => Some(v.clone()),
                        (None, Some(def)) => Some(self.expand(def, &st.env, at)?),
                        (None, None) => self.globals.lookup(&d.key).map(str::to_owned),
                    };
                    if let Some(v) = &value {
                        if !NON_ENV_ARGS.contains(&d.key.as_str()) {
                            st.env.set(&d.key, v.clone());
                        }
                    }
                    parts.push(match &value {
                        Some(v) => format!("{}={v}", d.key),
                        None => d.key.clone(),
                    });
                    st.build_args.push((d.key.clone(), value));
                }
                st.image.commit(format!("ARG {}", parts.join(" ")), false, false);
            }
            Kind::Run(run) => self.run(st, run, index, ins, desc)?,
            Kind::Copy(c) => self.copy(st, CopyKind::Copy(c), index, ins, desc)?,
            Kind::Add(a) => self.copy(st, CopyKind::Add(a), index, ins, desc)?,
            Kind::Workdir(w) => {
                let w = self.expand(w, &st.env, at)?;
                if w.is_empty() {
                    return Err(self.err(at, "normalizing workdir: cannot normalize nothing"));
                }
                let wd = crate::dockerignore::clean(&if w.starts_with('/') { w } else { format!("{}/{w}", st.cwd) });
                st.image.working_dir = wd.clone();
                st.cwd = wd.clone();
                let with_layer = wd != "/";
                if with_layer {
                    let action = FileAction::Mkdir {
                        path: wd.clone(),
                        mode: 0o755,
                        make_parents: true,
                        user: st.image.user.clone(),
                    };
                    let op = Op::File(FileOp { root: st.root.clone(), actions: vec![action] });
                    st.root = self.graph.add_at(op, desc, Some(ins.pos));
                }
                st.image.commit(format!("WORKDIR {wd}"), with_layer, false);
            }
            Kind::User(u) => {
                let u = self.expand(u, &st.env, at)?;
                st.user = u.clone();
                st.image.user = u.clone();
                st.image.commit(format!("USER {u}"), false, false);
            }
            Kind::Cmd(c) => {
                let args = with_shell(&st.image, c);
                st.image.commit(format!("CMD {}", go_quote_list(&args)), false, false);
                st.image.cmd = Some(args);
                st.image.args_escaped = true;
                st.cmd_set = true;
            }
            Kind::Entrypoint(c) => {
                let args = with_shell(&st.image, c);
                st.image.commit(format!("ENTRYPOINT {}", go_quote_list(&args)), false, false);
                st.image.entrypoint = Some(args);
                if !st.cmd_set {
                    st.image.cmd = None;
                }
            }
            Kind::Shell(s) => {
                st.image.shell = s.clone();
                st.image.commit(format!("SHELL [{}]", s.join(" ")), false, false);
            }
            Kind::Label(kvs) => {
                let mut msg = String::from("LABEL");
                for kv in kvs {
                    let k = self.expand(&kv.key, &st.env, at)?;
                    let v = self.expand(&kv.value, &st.env, at)?;
                    msg.push_str(&format!(" {k}={v}"));
                    st.image.labels.insert(k, v);
                }
                st.image.commit(msg, false, false);
            }
            Kind::Expose(ports) => {
                let mut words = Vec::new();
                for p in ports {
                    words.extend(self.lexer.process_words(p, &st.env).map_err(|e| self.err(at, e.to_string()))?);
                }
                let mut set = std::collections::BTreeSet::new();
                for w in &words {
                    set.extend(parse_port_spec(w).map_err(|e| self.err(at, e))?);
                }
                let shown: Vec<String> = set.iter().map(|p| format!("{p}:{{}}")).collect();
                st.image.exposed_ports.extend(set);
                st.image.commit(format!("EXPOSE map[{}]", shown.join(" ")), false, false);
            }
            Kind::Volume(vols) => {
                let mut out = Vec::new();
                for v in vols {
                    let v = self.expand(v, &st.env, at)?;
                    if v.is_empty() {
                        return Err(self.err(at, "VOLUME specified can not be an empty string"));
                    }
                    out.push(v);
                }
                st.image.commit(format!("VOLUME [{}]", out.join(" ")), false, false);
                st.image.volumes.extend(out);
            }
            Kind::StopSignal(s) => {
                let s = self.expand(s, &st.env, at)?;
                if !valid_signal(&s) {
                    return Err(self.err(at, format!("Invalid signal: {s}")));
                }
                st.image.commit(format!("STOPSIGNAL {s}"), false, false);
                st.image.stop_signal = Some(s);
            }
            Kind::Healthcheck(h) => {
                let hc = match h {
                    Healthcheck::None => crate::config::Healthcheck { test: vec!["NONE".into()], ..Default::default() },
                    Healthcheck::Check(c) => crate::config::Healthcheck {
                        test: c.test.clone(),
                        interval: c.interval.as_nanos() as u64,
                        timeout: c.timeout.as_nanos() as u64,
                        start_period: c.start_period.as_nanos() as u64,
                        start_interval: c.start_interval.as_nanos() as u64,
                        retries: u64::from(c.retries),
                    },
                };
                st.image.commit(format!("HEALTHCHECK {}", healthcheck_history(&hc)), false, false);
                st.image.healthcheck = Some(hc);
            }
            Kind::Onbuild(o) => st.image.on_build.push(o.expression.clone()),
            Kind::Maintainer(m) => {
                st.image.author = Some(m.clone());
                st.image.commit(format!("MAINTAINER {m}"), false, false);
            }
        }
        Ok(())
    }

    fn run(
        &mut self,
        st: &mut StageState,
        run: &RunArgs,
        index: usize,
        ins: &Instruction,
        mut desc: String,
    ) -> Result<(), FrontendError> {
        let at = ins.args_pos;
        let mount_pos: Vec<Pos> = ins.flags.iter().filter(|f| f.name == "mount").map(|f| f.pos).collect();
        let mut args = run.command.args.clone();
        let mut mounts = Vec::new();
        if !run.heredocs.is_empty() {
            if args.len() != 1 || !run.command.prepend_shell {
                return Err(self.err(at, format!("parsing produced an invalid run command: {args:?}")));
            }
            let first = &run.heredocs[0];
            if crate::parser::heredoc_word(&args[0]).is_some() {
                let data = first.chomped();
                let summary = first.content.trim();
                let more = if summary.contains('\n') { "..." } else { "" };
                desc.push_str(&format!(" ({}{more})", summary.lines().next().unwrap_or("")));
                if data.starts_with("#!") {
                    // A lone heredoc script with a shebang runs as a file mounted from scratch.
                    let script = FileAction::Mkfile { path: format!("/{}", first.name), mode: 0o755, content: data };
                    let scratch = self.graph.add(Op::Source(Source::Scratch), "scratch");
                    let file = self
                        .graph
                        .add(Op::File(FileOp { root: scratch, actions: vec![script] }), "preparing inline document");
                    mounts.push(Mount::Input { dest: "/dev/pipes/".into(), source: file, source_path: "/".into() });
                    args = vec![format!("/dev/pipes/{}", first.name)];
                } else {
                    args = vec![data];
                }
            } else {
                let mut full = args[0].clone();
                for h in &run.heredocs {
                    full.push('\n');
                    full.push_str(&h.content);
                    full.push_str(&h.name);
                }
                args = vec![full];
            }
        }
        if run.command.prepend_shell {
            args = with_shell(&st.image, &CommandLine { args, prepend_shell: true });
        }
        for (n, spec) in run.mounts.iter().enumerate() {
            let at = mount_pos.get(n).copied().unwrap_or(at);
            // The stage graph is fixed before ARGs are known, so BuildKit refuses a `from`
            // that would need expanding (`parseMount` without an expander).
            if mount_fields(spec).any(|f| f.key == "from" && f.value.is_some_and(has_variable)) {
                return Err(self.err(at, "'from' doesn't support variable expansion, define alias stage instead"));
            }
            let expanded = self.expand(spec, &st.env, at)?;
            let mut kind = "bind".to_owned();
            let mut from = None;
            for field in mount_fields(&expanded) {
                match (field.key.as_str(), field.value) {
                    ("type", Some(v)) => kind = v.to_ascii_lowercase(),
                    ("from", Some(v)) => from = Some(v).filter(|v| !v.is_empty()),
                    _ => {}
                }
            }
            let from = from.map(|f| self.stage_or_image(f, index, at, "mount from")).transpose()?;
            mounts.push(Mount::Flag { spec: expanded, kind, from });
        }
        let network = match run.network.as_deref() {
            None | Some("default") => Network::Default,
            Some("none") => Network::None,
            Some("host") => Network::Host,
            Some(other) => return Err(self.err(at, format!("unsupported network mode {other:?}"))),
        };
        let security = match run.security.as_deref() {
            None | Some("sandbox") => Security::Sandbox,
            Some("insecure") => Security::Insecure,
            Some(other) => return Err(self.err(at, format!("unsupported security mode {other:?}"))),
        };
        let proxy_env = self
            .opts
            .build_args
            .iter()
            .filter(|(k, _)| PROXY_ARGS.iter().any(|p| p.eq_ignore_ascii_case(k)))
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let exec = Exec {
            root: st.root.clone(),
            mounts,
            args: args.clone(),
            env: st.env.0.clone(),
            proxy_env,
            cwd: st.cwd.clone(),
            user: st.user.clone(),
            network,
            security,
        };
        st.root = self.graph.add_at(Op::Exec(exec), desc, Some(ins.pos));
        st.image.commit(format!("RUN {}", run_command_string(&args, &st.build_args, &st.env)), true, true);
        Ok(())
    }

    fn copy(
        &mut self,
        st: &mut StageState,
        c: CopyKind<'_>,
        index: usize,
        ins: &Instruction,
        desc: String,
    ) -> Result<(), FrontendError> {
        let at = ins.args_pos;
        let p = c.params();
        let env = st.env.clone();
        let ex = |this: &Self, w: &Option<String>| -> Result<Option<String>, FrontendError> {
            w.as_ref().map(|w| this.expand(w, &env, at)).transpose()
        };
        let chown = ex(self, p.chown)?.filter(|s| !s.is_empty());
        let chmod = ex(self, p.chmod)?.filter(|s| !s.is_empty());
        let flag_pos = |name: &str| ins.flags.iter().find(|f| f.name == name).map_or(ins.pos, |f| f.pos);
        if let Some(m) = &chmod {
            if !valid_chmod(m) {
                return Err(self.err(
                    flag_pos("chmod"),
                    format!("invalid chmod parameter: '{m}'. it should be octal string and between 0 and 07777, or a symbolic mode like u+x"),
                ));
            }
        }
        let mut sources = Vec::new();
        for s in p.sources {
            sources.push(self.expand(s, &env, at)?);
        }
        let dest_raw = self.expand(p.dest, &env, at)?;
        let mut exclude = Vec::new();
        for e in p.excludes {
            exclude.push(self.expand(e, &env, at)?);
        }
        let checksum = ex(self, p.checksum)?;
        let is_add = matches!(c, CopyKind::Add(_));
        if let Some(cs) = &checksum {
            if sources.len() != 1 || !is_http(&sources[0]) {
                return Err(self.err(at, format!("checksum {cs} can only be given for a single HTTP(S) source")));
            }
        }
        let from = match p.from {
            Some(f) => self.stage_or_image(f, index, flag_pos("from"), "copy from")?,
            None => self.graph.add(Op::Source(Source::Context { name: "context".into() }), "load build context"),
        };
        let dest = dest_path(&st.cwd, &dest_raw);
        let mut msg = String::from(if is_add { "ADD" } else { "COPY" });
        if p.parents {
            msg.push_str(" --parents");
        }
        if let Some(o) = &chown {
            msg.push_str(&format!(" --chown={o}"));
        }
        if let Some(m) = &chmod {
            msg.push_str(&format!(" --chmod={m}"));
        }
        let template = Copy {
            from: from.clone(),
            src: String::new(),
            dest: dest.clone(),
            chown: chown.clone(),
            chmod: chmod.clone(),
            link: p.link,
            include_patterns: Vec::new(),
            exclude: exclude.clone(),
            allow_wildcard: false,
            dir_contents_only: false,
            follow_symlinks: false,
            attempt_unpack: false,
        };
        let mut actions = Vec::new();
        for src in &sources {
            msg.push(' ');
            msg.push_str(src);
            if is_git(src) && !is_add {
                return Err(self.err(at, "source can't be a git ref for COPY"));
            }
            if is_git(src) {
                let (remote, reference) = match src.split_once('#') {
                    Some((r, f)) => (r.to_owned(), f.to_owned()),
                    None => (src.clone(), String::new()),
                };
                let git = Source::Git { remote, reference, keep_git_dir: p.keep_git_dir };
                let from = self.graph.add_at(Op::Source(git), format!("ADD {src}"), Some(ins.pos));
                actions.push(FileAction::Copy(Copy { from, src: "/".into(), ..template.clone() }));
            } else if is_http(src) {
                if !is_add {
                    return Err(self.err(at, "source can't be a URL for COPY"));
                }
                let path = src.split(['?', '#']).next().unwrap_or(src);
                let base = path.splitn(4, '/').nth(3).and_then(|p| p.rsplit('/').next()).unwrap_or("");
                let filename = if base.is_empty() || base == "." { "__unnamed__".to_owned() } else { base.to_owned() };
                let http = Source::Http { url: src.clone(), checksum: checksum.clone(), filename: filename.clone() };
                let from = self.graph.add_at(Op::Source(http), format!("ADD {src}"), Some(ins.pos));
                actions.push(FileAction::Copy(Copy { from, src: filename, ..template.clone() }));
            } else {
                let (src_path, include) = if p.parents {
                    match src.split_once("/./") {
                        Some((parent, pattern)) => {
                            (parent.to_owned(), crate::dockerignore::clean(&format!("/{pattern}")))
                        }
                        None => ("/".to_owned(), crate::dockerignore::clean(&format!("/{src}"))),
                    }
                } else {
                    (src.clone(), String::new())
                };
                actions.push(FileAction::Copy(Copy {
                    src: crate::dockerignore::clean(&format!("/{src_path}")),
                    include_patterns: if p.parents {
                        vec![include.trim_start_matches('/').to_owned()]
                    } else {
                        Vec::new()
                    },
                    allow_wildcard: true,
                    dir_contents_only: true,
                    follow_symlinks: true,
                    attempt_unpack: is_add,
                    ..template.clone()
                }));
            }
        }
        for content in p.contents {
            msg.push_str(&format!(" <<{}", content.path));
            let data = if content.expand {
                let mut raw = Lexer::new('\\');
                raw.skip_process_quotes = true;
                raw.process_word(&content.data, &env).map_err(|e| self.err(at, e.to_string()))?
            } else {
                content.data.clone()
            };
            let name = format!("/{}", content.path);
            let file = FileAction::Mkfile { path: name.clone(), mode: 0o644, content: data };
            let scratch = self.graph.add(Op::Source(Source::Scratch), "scratch");
            let from =
                self.graph.add(Op::File(FileOp { root: scratch, actions: vec![file] }), "preparing inline document");
            actions.push(FileAction::Copy(Copy { from, src: name, ..template.clone() }));
        }
        msg.push(' ');
        msg.push_str(&dest_raw);
        st.root = self.graph.add_at(Op::File(FileOp { root: st.root.clone(), actions }), desc, Some(ins.pos));
        st.image.commit(msg, true, true);
        Ok(())
    }
}

/// BuildKit's progress prefix for a stage's steps: `[name 2/5] `.
struct Steps {
    label: String,
    done: usize,
    total: usize,
}

impl Steps {
    fn name(&mut self, text: &str, onbuild: bool) -> String {
        if self.total == 0 {
            return text.to_owned();
        }
        self.done += 1;
        let width = self.total.to_string().len();
        let label = if self.label.is_empty() { String::new() } else { format!("{} ", self.label) };
        let onbuild = if onbuild { "ONBUILD " } else { "" };
        format!("[{label}{:>width$}/{}] {onbuild}{text}", self.done, self.total)
    }
}

/// The instruction line as progress shows it: variables expanded where possible, keyword
/// upper-cased.
fn progress_text(lexer: &Lexer, original: &str, env: &EnvList) -> String {
    let text = lexer.process_word(original, env).unwrap_or_else(|_| original.to_owned());
    match text.split_once(' ') {
        Some((k, rest)) => format!("{} {rest}", k.to_uppercase()),
        None => text.to_uppercase(),
    }
}

/// COPY and ADD share lowering; this gives both the same view.
enum CopyKind<'a> {
    Copy(&'a CopyArgs),
    Add(&'a AddArgs),
}

/// The fields COPY and ADD have in common (absent ones empty).
struct CopyParams<'a> {
    sources: &'a [String],
    contents: &'a [crate::instructions::SourceContent],
    dest: &'a str,
    from: Option<&'a str>,
    chown: &'a Option<String>,
    chmod: &'a Option<String>,
    checksum: &'a Option<String>,
    excludes: &'a [String],
    link: bool,
    parents: bool,
    keep_git_dir: bool,
}

const NONE: Option<String> = None;

impl<'a> CopyKind<'a> {
    fn params(&self) -> CopyParams<'a> {
        match *self {
            CopyKind::Copy(c) => CopyParams {
                sources: &c.sources,
                contents: &c.contents,
                dest: &c.dest,
                from: c.from.as_deref(),
                chown: &c.chown,
                chmod: &c.chmod,
                checksum: &NONE,
                excludes: &c.excludes,
                link: c.link,
                parents: c.parents,
                keep_git_dir: false,
            },
            CopyKind::Add(a) => CopyParams {
                sources: &a.sources,
                contents: &a.contents,
                dest: &a.dest,
                from: None,
                chown: &a.chown,
                chmod: &a.chmod,
                checksum: &a.checksum,
                excludes: &a.excludes,
                link: a.link,
                parents: false,
                keep_git_dir: a.keep_git_dir,
            },
        }
    }
}

/// One field of a `RUN --mount` value: `key=value`, or a bare `key` (a flag such as `ro`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountField<'a> {
    /// The key, lowercased: BuildKit's `parseMount` compares keys case-insensitively.
    pub key: String,
    /// The value; `None` for a bare flag.
    pub value: Option<&'a str>,
    /// The field as written, for error messages.
    pub text: &'a str,
}

/// The fields of a `RUN --mount` value in order, empty ones skipped: what the frontend reads
/// `type` and `from` from, and the builder every other key.
pub fn mount_fields(spec: &str) -> impl Iterator<Item = MountField<'_>> {
    spec.split(',').map(str::trim).filter(|text| !text.is_empty()).map(|text| match text.split_once('=') {
        Some((key, value)) => MountField { key: key.to_ascii_lowercase(), value: Some(value), text },
        None => MountField { key: text.to_ascii_lowercase(), value: None, text },
    })
}

/// Whether `value` would be expanded: BuildKit's test is the regexp `\$.` (a `$` and any
/// character but a newline after it).
fn has_variable(value: &str) -> bool {
    value.as_bytes().windows(2).any(|w| w[0] == b'$' && w[1] != b'\n')
}

fn is_http(src: &str) -> bool {
    (src.starts_with("http://") || src.starts_with("https://")) && !is_git(src)
}

/// A git source as BuildKit's `gitutil.ParseGitRef` recognises the common forms.
fn is_git(src: &str) -> bool {
    let base = src.split('#').next().unwrap_or(src);
    src.starts_with("git://")
        || src.starts_with("git@")
        || src.starts_with("ssh://")
        || ((src.starts_with("http://") || src.starts_with("https://")) && base.ends_with(".git"))
}

/// BuildKit's `pathRelativeToWorkingDir`: absolute and cleaned, a trailing `/` kept.
fn dest_path(cwd: &str, dest: &str) -> String {
    let dest = if dest.is_empty() || dest == "." { "./" } else { dest };
    let joined = if dest.starts_with('/') { dest.to_owned() } else { format!("{cwd}/{dest}") };
    let mut out = crate::dockerignore::clean(&joined);
    if (dest.ends_with('/') || dest.ends_with("/.")) && !out.ends_with('/') {
        out.push('/');
    }
    out
}

/// The shell form gets the stage's SHELL (default `/bin/sh -c`) in front.
fn with_shell(image: &ImageConfig, c: &CommandLine) -> Vec<String> {
    if !c.prepend_shell {
        return c.args.clone();
    }
    let mut out =
        if image.shell.is_empty() { vec!["/bin/sh".to_owned(), "-c".to_owned()] } else { image.shell.clone() };
    out.push(c.args.join(" "));
    out
}

/// Go's `%q` of a `[]string`: `["a" "b"]`.
fn go_quote_list(items: &[String]) -> String {
    format!("[{}]", items.iter().map(|s| go_quote(s)).collect::<Vec<_>>().join(" "))
}

/// BuildKit's `runCommandString`: `|N K=V … args`, declared ARGs with their current values.
fn run_command_string(args: &[String], build_args: &[(String, Option<String>)], env: &EnvList) -> String {
    let mut pairs: Vec<(String, String)> = Vec::new();
    for (k, v) in build_args {
        let value = env.lookup(k).map(str::to_owned).unwrap_or_else(|| v.clone().unwrap_or_default());
        match pairs.iter_mut().find(|(pk, _)| pk == k) {
            Some(slot) => slot.1 = value,
            None => pairs.push((k.clone(), value)),
        }
    }
    let mut parts: Vec<String> = Vec::new();
    if !pairs.is_empty() {
        parts.push(format!("|{}", pairs.len()));
        parts.extend(pairs.into_iter().map(|(k, v)| format!("{k}={v}")));
    }
    parts.extend(args.iter().cloned());
    parts.join(" ")
}

/// Docker's `nat.ParsePortSpecs` for one word: `[ip:][host:]port[-end][/proto]` gives the
/// container ports as `port/proto`.
fn parse_port_spec(spec: &str) -> Result<Vec<String>, String> {
    let (rest, proto) = match spec.rsplit_once('/') {
        Some((r, p)) => (r, p.to_ascii_lowercase()),
        None => (spec, "tcp".to_owned()),
    };
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(format!("invalid proto: {proto}"));
    }
    let container = rest.rsplit(':').next().unwrap_or(rest);
    let parse = |s: &str| s.parse::<u16>().map_err(|_| format!("invalid containerPort: {container}"));
    let (start, end) = match container.split_once('-') {
        Some((a, b)) => (parse(a)?, parse(b)?),
        None => (parse(container)?, parse(container)?),
    };
    if end < start {
        return Err(format!("invalid range specified for container port: {container}"));
    }
    Ok((start..=end).map(|p| format!("{p}/{proto}")).collect())
}

/// `--chmod`: octal up to 07777, or (Dockerfile 1.14+) a symbolic mode as chmod(1) takes it:
/// comma-separated `[ugoa]*([-+=]([rwxXst]*|[ugo]))+` clauses.
fn valid_chmod(mode: &str) -> bool {
    if mode.chars().all(|c| c.is_ascii_digit()) {
        return u32::from_str_radix(mode, 8).is_ok_and(|v| v <= 0o7777);
    }
    mode.split(',').all(|clause| {
        let ops = clause.trim_start_matches(['u', 'g', 'o', 'a']);
        ops.starts_with(['+', '-', '='])
            && ops
                .split(['+', '-', '='])
                .skip(1)
                .all(|perms| perms.chars().all(|c| "rwxXst".contains(c)) || matches!(perms, "u" | "g" | "o"))
    })
}

/// `moby/sys/signal.ParseSignal`: a number or a known name, with or without `SIG`.
fn valid_signal(s: &str) -> bool {
    const NAMES: [&str; 31] = [
        "ABRT", "ALRM", "BUS", "CHLD", "CONT", "FPE", "HUP", "ILL", "INT", "IO", "IOT", "KILL", "PIPE", "POLL", "PROF",
        "PWR", "QUIT", "SEGV", "STKFLT", "STOP", "SYS", "TERM", "TRAP", "TSTP", "TTIN", "TTOU", "URG", "USR1", "USR2",
        "VTALRM", "WINCH",
    ];
    if let Ok(n) = s.parse::<u32>() {
        return n != 0 && n <= 64;
    }
    let name = s.strip_prefix("SIG").unwrap_or(s);
    NAMES.contains(&name) || name.starts_with("RTMIN") || name.starts_with("RTMAX") || name == "XCPU" || name == "XFSZ"
}

/// Go's `time.Duration.String()`.
fn go_duration(ns: u64) -> String {
    if ns == 0 {
        return "0s".into();
    }
    if ns < 1_000_000_000 {
        let (unit, div) = if ns < 1_000 {
            ("ns", 1)
        } else if ns < 1_000_000 {
            ("µs", 1_000)
        } else {
            ("ms", 1_000_000)
        };
        return format!("{}{unit}", trim_fraction(ns, div));
    }
    let (h, rem) = (ns / 3_600_000_000_000, ns % 3_600_000_000_000);
    let (m, rem) = (rem / 60_000_000_000, rem % 60_000_000_000);
    let secs = trim_fraction(rem, 1_000_000_000);
    match (h, m) {
        (0, 0) => format!("{secs}s"),
        (0, m) => format!("{m}m{secs}s"),
        (h, m) => format!("{h}h{m}m{secs}s"),
    }
}

/// `n / div` with the fraction written without trailing zeros.
fn trim_fraction(n: u64, div: u64) -> String {
    let (whole, frac) = (n / div, n % div);
    if frac == 0 {
        return whole.to_string();
    }
    let width = div.to_string().len() - 1;
    format!("{whole}.{}", format!("{frac:0width$}").trim_end_matches('0'))
}

/// Go's `fmt.Sprintf("%q", &HealthcheckConfig{…})`, as BuildKit writes it into the history.
fn healthcheck_history(h: &crate::config::Healthcheck) -> String {
    let retries = char::from_u32(h.retries as u32).map_or_else(|| "'\\ufffd'".to_owned(), go_quote_rune);
    format!(
        "&{{{} {} {} {} {} {retries}}}",
        go_quote_list(&h.test),
        go_quote(&go_duration(h.interval)),
        go_quote(&go_duration(h.timeout)),
        go_quote(&go_duration(h.start_period)),
        go_quote(&go_duration(h.start_interval)),
    )
}

/// Go's `strconv.QuoteRune`.
fn go_quote_rune(c: char) -> String {
    let quoted = go_quote(&c.to_string());
    let inner = &quoted[1..quoted.len() - 1];
    let inner = if inner == "\\\"" {
        "\""
    } else if inner == "'" {
        "\\'"
    } else {
        inner
    };
    format!("'{inner}'")
}

/// `reference.ParseNormalizedNamed` + `TagNameOnly`: `alpine` → `docker.io/library/alpine:latest`.
pub fn normalize_reference(name: &str) -> Result<String, String> {
    let (name_tag, digest) = match name.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (name, None),
    };
    let (repo, tag) = match name_tag.rfind(':') {
        Some(i) if !name_tag[i + 1..].contains('/') => (&name_tag[..i], Some(&name_tag[i + 1..])),
        _ => (name_tag, None),
    };
    if repo.is_empty() {
        return Err("invalid reference format".into());
    }
    let (domain, path) = match repo.split_once('/') {
        Some((d, p))
            if d.contains('.') || d.contains(':') || d == "localhost" || d.chars().any(|c| c.is_ascii_uppercase()) =>
        {
            (d.to_owned(), p.to_owned())
        }
        _ => ("docker.io".to_owned(), repo.to_owned()),
    };
    let path = if domain == "docker.io" && !path.contains('/') { format!("library/{path}") } else { path };
    let path_ok = path.split('/').all(|c| {
        !c.is_empty()
            && c.chars().all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || "._-".contains(ch))
            && c.starts_with(|ch: char| ch.is_ascii_alphanumeric())
    });
    if !path_ok {
        if path.chars().any(|c| c.is_ascii_uppercase()) {
            return Err("repository name must be lowercase".into());
        }
        return Err("invalid reference format".into());
    }
    if let Some(t) = tag {
        let ok = !t.is_empty()
            && t.len() <= 128
            && t.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
            && t.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
        if !ok {
            return Err("invalid reference format".into());
        }
    }
    let mut out = format!("{domain}/{path}");
    match (tag, digest) {
        (Some(t), _) => out.push_str(&format!(":{t}")),
        (None, None) => out.push_str(":latest"),
        (None, Some(_)) => {}
    }
    if let Some(d) = digest {
        out.push_str(&format!("@{d}"));
    }
    Ok(out)
}

/// One stage as `kiln build --call targets` lists it (BuildKit's `targets` subrequest).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TargetInfo {
    /// The `AS` name, if any.
    pub name: Option<String>,
    /// Position among the stages (0-based).
    pub index: usize,
    /// The FROM argument as written.
    pub base: String,
    /// `--platform` as written.
    pub platform: Option<String>,
    /// From a comment line above FROM that starts with the stage name (`# build compiles…`).
    pub description: String,
    /// Whether this is the stage built without `--target` (the last one).
    pub default: bool,
    /// The line of the FROM.
    pub line: usize,
}

/// One global ARG as `kiln build --call outline` lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ArgInfo {
    /// The ARG name.
    pub name: String,
    /// The default as written.
    pub default: Option<String>,
    /// From a comment line above the ARG that starts with its name.
    pub description: String,
    /// The line of the ARG.
    pub line: usize,
}

/// BuildKit's `getComment`: the text after `name ` on the first comment line starting so.
fn described(comments: &[String], name: &str) -> String {
    if name.is_empty() {
        return String::new();
    }
    let prefix = format!("{name} ");
    comments.iter().find_map(|c| c.strip_prefix(&prefix)).unwrap_or_default().to_owned()
}

/// The stages of `df`, for `--call targets`.
pub fn list_targets(df: &Dockerfile) -> Result<Vec<TargetInfo>, DockerfileError> {
    let instrs = parse_instructions(df)?;
    let mut out = Vec::new();
    for (node, ins) in df.instructions.iter().zip(&instrs) {
        if let Kind::From(f) = &ins.kind {
            out.push(TargetInfo {
                name: f.name.clone(),
                index: out.len(),
                base: f.image.clone(),
                platform: f.platform.clone(),
                description: described(&node.comments, f.name.as_deref().unwrap_or("")),
                default: false,
                line: ins.start_line,
            });
        }
    }
    if let Some(last) = out.last_mut() {
        last.default = true;
    }
    Ok(out)
}

/// The ARGs before the first FROM, for `--call outline`.
pub fn list_global_args(df: &Dockerfile) -> Result<Vec<ArgInfo>, DockerfileError> {
    let instrs = parse_instructions(df)?;
    let mut out = Vec::new();
    for (node, ins) in df.instructions.iter().zip(&instrs) {
        match &ins.kind {
            Kind::From(_) => break,
            Kind::Arg(decls) => out.extend(decls.iter().map(|d| ArgInfo {
                name: d.key.clone(),
                default: d.default.clone(),
                description: described(&node.comments, &d.key),
                line: ins.start_line,
            })),
            _ => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lowers Dockerfiles over `FROM scratch` only: no image is ever resolved.
    struct NoImages;

    impl ImageResolver for NoImages {
        fn resolve_image(&self, reference: &str, _: &Platform) -> Result<ResolvedImage, String> {
            Err(format!("{reference}: no images in this test"))
        }
    }

    fn lower_scratch(df: &str) -> Result<BuildGraph, FrontendError> {
        lower(df, &BuildOptions::default(), &NoImages)
    }

    /// The single RUN's `--mount` flags.
    fn mount_flags(graph: &BuildGraph) -> Vec<(String, Option<Digest>)> {
        graph
            .vertices
            .values()
            .filter_map(|v| match &v.op {
                Op::Exec(e) => Some(e.mounts.clone()),
                _ => None,
            })
            .flatten()
            .filter_map(|m| match m {
                Mount::Flag { kind, from, .. } => Some((kind, from)),
                Mount::Input { .. } => None,
            })
            .collect()
    }

    #[test]
    fn mount_keys_are_case_insensitive() {
        let graph = lower_scratch("FROM scratch AS seed\nFROM scratch\nRUN --mount=Type=Cache,From=seed,target=/c x\n")
            .unwrap();
        let flags = mount_flags(&graph);
        assert_eq!(flags.len(), 1);
        assert_eq!(flags[0].0, "cache");
        assert!(flags[0].1.is_some(), "From= must name the stage, not leave the mount on the context");
        let fields: Vec<_> = mount_fields("Type=bind, ro ,,SRC=a=b").map(|f| (f.key, f.value)).collect();
        assert_eq!(
            fields,
            [("type".to_owned(), Some("bind")), ("ro".to_owned(), None), ("src".to_owned(), Some("a=b"))]
        );
    }

    #[test]
    fn mount_from_refuses_variables_like_buildkit() {
        for df in [
            "FROM scratch AS seed\nFROM scratch\nARG S=seed\nRUN --mount=from=$S,target=/c x\n",
            "FROM scratch AS seed\nFROM scratch\nARG S=seed\nRUN --mount=target=/c,FROM=${S} x\n",
        ] {
            let err = lower_scratch(df).unwrap_err().to_string();
            assert!(
                err.starts_with(
                    "Dockerfile:4:5: 'from' doesn't support variable expansion, define alias stage instead\n"
                ),
                "{df:?}: {err}"
            );
        }
        // A trailing `$` is no variable for BuildKit's `\$.` either, and other keys expand.
        assert!(has_variable("a$b") && !has_variable("a$") && !has_variable("seed"));
        let graph = lower_scratch("FROM scratch\nARG T=cache\nRUN --mount=type=$T,target=/c x\n").unwrap();
        assert_eq!(mount_flags(&graph)[0].0, "cache");
    }
}
