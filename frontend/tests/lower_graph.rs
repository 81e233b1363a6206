//! Lowering Dockerfiles to the build graph: ARG/ENV scoping, stages and targets, ONBUILD,
//! image config and history, and digest stability (golden digests in `tests/golden/`).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::PathBuf;

use kiln_frontend::config::{ImageConfig, ImageResolver, ResolvedImage};
use kiln_frontend::graph::{BuildGraph, Digest, Exec, FileAction, Mount, Op, Platform, Source};
use kiln_frontend::{BuildOptions, FrontendError, lower};

/// A registry stand-in: known images with configs, and a log of what was asked.
#[derive(Default)]
struct FakeRegistry {
    configs: BTreeMap<String, ImageConfig>,
    asked: RefCell<Vec<String>>,
}

impl FakeRegistry {
    fn with(mut self, reference: &str, config: ImageConfig) -> Self {
        self.configs.insert(reference.to_owned(), config);
        self
    }
}

impl ImageResolver for FakeRegistry {
    fn resolve_image(&self, reference: &str, platform: &Platform) -> Result<ResolvedImage, String> {
        self.asked.borrow_mut().push(format!("{reference} {platform}"));
        let config = self.configs.get(reference).cloned().unwrap_or_else(|| ImageConfig {
            env: vec!["PATH=/usr/local/bin:/usr/bin:/bin".into()],
            ..Default::default()
        });
        Ok(ResolvedImage {
            reference: format!("{reference}@sha256:{}", "a".repeat(64)),
            config,
            platform: Some(platform.clone()),
            has_layers: true,
        })
    }
}

fn opts(args: &[(&str, &str)]) -> BuildOptions {
    BuildOptions {
        build_args: args.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        ..Default::default()
    }
}

fn build(df: &str, o: &BuildOptions) -> BuildGraph {
    lower(df, o, &FakeRegistry::default()).unwrap_or_else(|e| panic!("lowering failed: {e}"))
}

/// The RUNs of the target stage's chain, root first.
fn execs(g: &BuildGraph) -> Vec<Exec> {
    let root = &g.target_stage().expect("target").root;
    g.closure(root)
        .iter()
        .filter_map(|d| match &g.get(d).expect("vertex").op {
            Op::Exec(e) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

fn env_of(e: &Exec, key: &str) -> Option<String> {
    e.env.iter().find_map(|kv| kv.strip_prefix(&format!("{key}=")).map(str::to_owned))
}

fn history(g: &BuildGraph) -> Vec<String> {
    g.target_stage().expect("target").image.history.iter().map(|h| h.created_by.clone()).collect()
}

#[test]
fn global_args_reach_from_only_unless_redeclared() {
    let df = "ARG TAG=3.20\nARG V=global\nFROM alpine:${TAG}\nRUN echo a\nARG V\nRUN echo b\n";
    let g = build(df, &opts(&[]));
    let runs = execs(&g);
    assert_eq!(env_of(&runs[0], "V"), None, "global ARG not visible before redeclaration");
    assert_eq!(env_of(&runs[1], "V").as_deref(), Some("global"));
    assert_eq!(env_of(&runs[1], "TAG"), None);
    let Some(Op::Source(Source::Image { reference, platform })) =
        g.vertices.values().map(|v| &v.op).find(|o| matches!(o, Op::Source(Source::Image { .. })))
    else {
        panic!("no image source")
    };
    assert!(reference.starts_with("docker.io/library/alpine:3.20@sha256:"), "{reference}");
    assert_eq!(platform.to_string(), "linux/amd64");
    assert_eq!(history(&g)[history(&g).len() - 2..], ["ARG V=global", "RUN |1 V=global /bin/sh -c echo b # buildkit"]);

    let g = build(df, &opts(&[("TAG", "edge"), ("V", "cli")]));
    let runs = execs(&g);
    assert_eq!(env_of(&runs[1], "V").as_deref(), Some("cli"), "--build-arg overrides");
    assert!(
        g.vertices.values().any(
            |v| matches!(&v.op, Op::Source(Source::Image { reference, .. }) if reference.contains("alpine:edge@"))
        )
    );
}

#[test]
fn env_on_one_line_sees_the_values_before_it() {
    let df = "FROM scratch\nENV A=1\nENV A=2 B=$A C=\"x y\"\nRUN run\n";
    let g = build(df, &opts(&[]));
    let run = &execs(&g)[0];
    assert_eq!(env_of(run, "A").as_deref(), Some("2"));
    assert_eq!(env_of(run, "B").as_deref(), Some("1"));
    assert_eq!(env_of(run, "C").as_deref(), Some("x y"));
    assert_eq!(env_of(run, "PATH").as_deref(), Some(kiln_frontend::config::DEFAULT_PATH));
    let image = &g.target_stage().unwrap().image;
    assert_eq!(
        image.env,
        [format!("PATH={}", kiln_frontend::config::DEFAULT_PATH), "A=2".into(), "B=1".into(), "C=x y".into()]
    );
    assert_eq!(history(&g), ["ENV A=1", "ENV A=2 B=1 C=x y", "RUN /bin/sh -c run # buildkit"]);
}

#[test]
fn arg_values_join_the_run_environment_but_not_the_image() {
    let df = "FROM scratch\nARG VERSION=1.0\nARG EMPTY\nRUN make V=$VERSION\n";
    let g = build(df, &opts(&[]));
    let run = &execs(&g)[0];
    assert_eq!(env_of(run, "VERSION").as_deref(), Some("1.0"));
    assert_eq!(env_of(run, "EMPTY"), None, "an ARG without value stays unset");
    assert_eq!(run.args, ["/bin/sh", "-c", "make V=$VERSION"], "RUN is expanded by the shell, not the frontend");
    assert!(g.target_stage().unwrap().image.env_get("VERSION").is_none());
    assert_eq!(history(&g)[2], "RUN |2 VERSION=1.0 EMPTY= /bin/sh -c make V=$VERSION # buildkit");
}

#[test]
fn proxy_args_reach_run_without_declaration_and_stay_out_of_history() {
    let df = "FROM scratch\nRUN curl x\n";
    let g = build(df, &opts(&[("HTTP_PROXY", "http://proxy:3128"), ("no_proxy", "local")]));
    let run = &execs(&g)[0];
    assert_eq!(run.proxy_env, ["HTTP_PROXY=http://proxy:3128", "no_proxy=local"]);
    assert_eq!(env_of(run, "HTTP_PROXY"), None);
    assert_eq!(history(&g), ["RUN /bin/sh -c curl x # buildkit"]);
    // As in BuildKit's cache map, the proxy does not change what the step is.
    let other = build(df, &opts(&[]));
    assert_eq!(g.target_stage().unwrap().root, other.target_stage().unwrap().root);
}

#[test]
fn platform_args_are_predefined_globals() {
    let df = "FROM --platform=$BUILDPLATFORM alpine AS build\nARG TARGETARCH\nARG BUILDOS\nRUN echo $TARGETARCH\n";
    let o = BuildOptions { platform: Some(Platform::parse("linux/arm64").unwrap()), ..opts(&[]) };
    let reg = FakeRegistry::default();
    let g = lower(df, &o, &reg).unwrap();
    let run = &execs(&g)[0];
    assert_eq!(env_of(run, "TARGETARCH").as_deref(), Some("arm64"));
    assert_eq!(env_of(run, "BUILDOS").as_deref(), Some("linux"));
    assert_eq!(*reg.asked.borrow(), ["docker.io/library/alpine:latest linux/amd64"]);
    assert_eq!(g.target_stage().unwrap().platform.to_string(), "linux/amd64");
    assert_eq!(Platform::parse("arm").unwrap().to_string(), "linux/arm/v7");
}

const MULTI: &str = "\
FROM alpine AS base
RUN apk add gcc

FROM base AS build
ARG FLAGS=-O2
RUN cc $FLAGS main.c

FROM debian AS unused
RUN echo never

FROM scratch
COPY --from=build /out/app /app
COPY --from=0 /etc/os-release /etc/
ENTRYPOINT [\"/app\"]
";

#[test]
fn only_reachable_stages_are_lowered_and_resolved() {
    let reg = FakeRegistry::default();
    let g = lower(MULTI, &opts(&[]), &reg).unwrap();
    assert_eq!(*reg.asked.borrow(), ["docker.io/library/alpine:latest linux/amd64"], "debian is never resolved");
    let names: Vec<Option<&str>> = g.stages.iter().map(|s| s.name.as_deref()).collect();
    assert_eq!(names, [Some("base"), Some("build"), None]);
    assert_eq!(g.target_stage().unwrap().index, 3);
    assert!(!g.vertices.values().any(|v| matches!(&v.op, Op::Exec(e) if e.args.iter().any(|a| a.contains("never")))));

    let build_root = g.stage("BUILD").unwrap().root.clone();
    let base_root = g.stage("base").unwrap().root.clone();
    let Op::File(f) = &g.get(&g.target_stage().unwrap().root).unwrap().op else { panic!("COPY is a file op") };
    let FileAction::Copy(c) = &f.actions[0] else { panic!() };
    assert_eq!((&c.from, c.src.as_str(), c.dest.as_str()), (&base_root, "/etc/os-release", "/etc/"));
    assert!(g.closure(&g.target_stage().unwrap().root).contains(&build_root));

    let t = BuildOptions { target: Some("Build".into()), ..opts(&[]) };
    let g = lower(MULTI, &t, &FakeRegistry::default()).unwrap();
    assert_eq!(g.stages.iter().map(|s| s.index).collect::<Vec<_>>(), [0, 1]);
    let run = &execs(&g)[1];
    assert_eq!(run.args, ["/bin/sh", "-c", "cc $FLAGS main.c"]);
    assert_eq!(env_of(run, "FLAGS").as_deref(), Some("-O2"));
    assert_eq!(
        history(&g),
        [
            "RUN /bin/sh -c apk add gcc # buildkit",
            "ARG FLAGS=-O2",
            "RUN |1 FLAGS=-O2 /bin/sh -c cc $FLAGS main.c # buildkit"
        ]
    );
}

#[test]
fn changing_an_arg_of_one_stage_changes_only_its_downstream() {
    let a = build(MULTI, &opts(&[]));
    let b = build(MULTI, &opts(&[("FLAGS", "-O3")]));
    assert_eq!(a.stage("base").unwrap().root, b.stage("base").unwrap().root);
    assert_ne!(a.stage("build").unwrap().root, b.stage("build").unwrap().root);
    assert_ne!(a.target_stage().unwrap().root, b.target_stage().unwrap().root);
    let only_a: Vec<&Digest> = a.vertices.keys().filter(|d| !b.vertices.contains_key(*d)).collect();
    assert_eq!(only_a.len(), 3, "the RUN in build, and the two COPY ops of the final stage: {only_a:?}");
    let again = build(MULTI, &opts(&[]));
    assert_eq!(a, again, "equal Dockerfile and args give an equal graph");
}

#[test]
fn stage_reference_errors_point_at_the_dockerfile() {
    let err = |df: &str, o: &BuildOptions| lower(df, o, &FakeRegistry::default()).unwrap_err().to_string();
    let e = err("FROM alpine\nCOPY --from=5 /a /b\n", &opts(&[]));
    assert!(e.starts_with("Dockerfile:2:6: invalid stage index 5"), "{e}");
    let to_a = BuildOptions { target: Some("a".into()), ..opts(&[]) };
    let e = err("FROM alpine AS a\nCOPY --from=later /x /y\nFROM alpine AS later\n", &to_a);
    assert!(
        e.starts_with(
            "Dockerfile:2:6: cannot copy from stage \"later\", it needs to be defined before current stage \"a\""
        ),
        "{e}"
    );
    let e = err("FROM alpine AS a\nRUN --mount=from=later,target=/l ls\nFROM alpine AS later\n", &to_a);
    assert!(e.starts_with("Dockerfile:2:5: cannot mount from stage \"later\""), "{e}");
    let e = err("FROM alpine\nCOPY --from=Bad_Image /x /y\n", &opts(&[]));
    assert!(e.starts_with("Dockerfile:2:6: failed to parse stage name \"Bad_Image\""), "{e}");
    let e = err("ARG IMG\nFROM $IMG\n", &opts(&[]));
    assert!(e.starts_with("Dockerfile:2:6: base name ($IMG) should not be blank"), "{e}");
    let e = err("FROM alpine\nRUN x\n", &BuildOptions { target: Some("nope".into()), ..opts(&[]) });
    assert_eq!(e, "target stage \"nope\" could not be found");
    let e = err("FROM alpine\nWORKDIR ${X:?must be set}\n", &opts(&[]));
    assert!(e.starts_with("Dockerfile:2:9: failed to process \"${X:?must be set}\": X: must be set"), "{e}");
    assert!(matches!(lower("ARG A\n", &opts(&[]), &FakeRegistry::default()), Err(FrontendError::NoStages(_))));
}

#[test]
fn onbuild_triggers_run_right_after_from() {
    let base = ImageConfig {
        env: vec!["PATH=/bin".into(), "HOME=/root".into()],
        working_dir: "/src".into(),
        user: "app".into(),
        on_build: vec!["RUN echo from-trigger $HOME".into(), "ENV TRIGGERED=1".into()],
        ..Default::default()
    };
    let reg = FakeRegistry::default().with("docker.io/library/onbuilder:latest", base);
    let g = lower("FROM onbuilder\nRUN echo mine\nONBUILD RUN echo later\n", &opts(&[]), &reg).unwrap();
    let runs = execs(&g);
    assert_eq!(runs[0].args, ["/bin/sh", "-c", "echo from-trigger $HOME"]);
    assert_eq!((runs[0].cwd.as_str(), runs[0].user.as_str()), ("/src", "app"));
    assert_eq!(env_of(&runs[1], "TRIGGERED").as_deref(), Some("1"));
    assert_eq!(g.target_stage().unwrap().image.on_build, ["RUN echo later"], "inherited triggers are consumed");

    let g = lower("FROM scratch AS parent\nONBUILD ENV CHILD=yes\nFROM parent\nRUN x\n", &opts(&[]), &reg).unwrap();
    assert_eq!(env_of(&execs(&g)[0], "CHILD").as_deref(), Some("yes"));
}

#[test]
fn image_config_and_history_match_buildkit() {
    let df = r#"FROM scratch
LABEL org.opencontainers.image.title="kiln test" version=$V
EXPOSE 80 53/udp 8000-8001
USER 1000:1000
WORKDIR app
WORKDIR /
VOLUME /data /cache
STOPSIGNAL SIGTERM
SHELL ["/bin/bash", "-c"]
HEALTHCHECK --interval=30s --timeout=3s --retries=3 CMD curl -f http://localhost/
CMD echo hi
ENTRYPOINT ["/entry"]
MAINTAINER someone
"#;
    let g = build(df, &opts(&[]));
    let image = &g.target_stage().unwrap().image;
    assert_eq!(image.labels.get("org.opencontainers.image.title").map(String::as_str), Some("kiln test"));
    assert_eq!(image.labels.get("version").map(String::as_str), Some(""));
    assert_eq!(image.exposed_ports.iter().collect::<Vec<_>>(), ["53/udp", "80/tcp", "8000/tcp", "8001/tcp"]);
    assert_eq!(image.user, "1000:1000");
    assert_eq!(image.working_dir, "/");
    assert_eq!(image.cmd.as_deref(), Some(&["/bin/bash".to_string(), "-c".into(), "echo hi".into()][..]));
    assert_eq!(image.entrypoint.as_deref(), Some(&["/entry".to_string()][..]));
    assert_eq!(image.stop_signal.as_deref(), Some("SIGTERM"));
    assert_eq!(image.author.as_deref(), Some("someone"));
    let hc = image.healthcheck.as_ref().unwrap();
    assert_eq!((hc.interval, hc.timeout, hc.retries), (30_000_000_000, 3_000_000_000, 3));
    assert_eq!(
        history(&g),
        [
            "LABEL org.opencontainers.image.title=kiln test version=",
            "EXPOSE map[53/udp:{} 80/tcp:{} 8000/tcp:{} 8001/tcp:{}]",
            "USER 1000:1000",
            "WORKDIR /app",
            "WORKDIR /",
            "VOLUME [/data /cache]",
            "STOPSIGNAL SIGTERM",
            "SHELL [/bin/bash -c]",
            r#"HEALTHCHECK &{["CMD-SHELL" "curl -f http://localhost/"] "30s" "3s" "0s" "0s" '\x03'}"#,
            r#"CMD ["/bin/bash" "-c" "echo hi"]"#,
            r#"ENTRYPOINT ["/entry"]"#,
            "MAINTAINER someone",
        ]
    );
    let layers: Vec<bool> = image.history.iter().map(|h| !h.empty_layer).collect();
    assert_eq!(layers.iter().filter(|l| **l).count(), 1, "only WORKDIR /app makes a layer");
    let Op::File(f) = &g.get(&g.target_stage().unwrap().root).unwrap().op else { panic!() };
    assert_eq!(
        f.actions,
        [FileAction::Mkdir { path: "/app".into(), mode: 0o755, make_parents: true, user: "1000:1000".into() }]
    );
}

#[test]
fn copy_and_run_details() {
    let df = "FROM scratch\nWORKDIR /w\nARG OWNER=1:1\nCOPY --chown=$OWNER --chmod=644 a.txt b/ ./dst/\nCOPY <<EOF /etc/motd\nhello $OWNER\nEOF\nRUN --mount=type=cache,target=/c --network=none <<EOF\n#!/bin/sh\necho hi\nEOF\nADD https://example.com/x.tar.gz /opt/\n";
    let g = build(df, &opts(&[]));
    let hist = history(&g);
    assert_eq!(hist[2], "COPY --chown=1:1 --chmod=644 a.txt b/ ./dst/ # buildkit");
    assert_eq!(hist[3], "COPY <<EOF /etc/motd # buildkit");
    assert_eq!(hist[4], "RUN |1 OWNER=1:1 /bin/sh -c /dev/pipes/EOF # buildkit");
    assert_eq!(hist[5], "ADD https://example.com/x.tar.gz /opt/ # buildkit");
    let copies: Vec<_> = g
        .vertices
        .values()
        .filter_map(|v| match &v.op {
            Op::File(f) => Some(f.actions.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    let srcs: Vec<(String, String)> = copies
        .iter()
        .filter_map(|a| match a {
            FileAction::Copy(c) => Some((c.src.clone(), c.dest.clone())),
            _ => None,
        })
        .collect();
    assert!(srcs.contains(&("/a.txt".into(), "/w/dst/".into())), "{srcs:?}");
    assert!(srcs.contains(&("/b".into(), "/w/dst/".into())));
    assert!(srcs.contains(&("/EOF".into(), "/etc/motd".into())));
    assert!(srcs.contains(&("x.tar.gz".into(), "/opt/".into())));
    assert!(copies.contains(&FileAction::Mkfile { path: "/EOF".into(), mode: 0o644, content: "hello 1:1\n".into() }));
    let run = &execs(&g)[0];
    assert_eq!(run.args, ["/bin/sh", "-c", "/dev/pipes/EOF"]);
    assert_eq!(run.network, kiln_frontend::graph::Network::None);
    assert!(matches!(&run.mounts[0], Mount::Input { dest, .. } if dest == "/dev/pipes/"));
    assert!(
        matches!(&run.mounts[1], Mount::Flag { spec, kind, from: None } if spec == "type=cache,target=/c" && kind == "cache")
    );
}

#[test]
fn progress_descriptions_follow_buildkit() {
    let g = build(MULTI, &opts(&[]));
    let mut names: Vec<&str> = g.vertices.values().map(|v| v.description.as_str()).collect();
    names.sort();
    assert!(names.contains(&"[base 1/2] FROM docker.io/library/alpine:latest@sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"), "{names:?}");
    assert!(names.contains(&"[base 2/2] RUN apk add gcc"), "{names:?}");
    assert!(names.contains(&"[build 1/1] RUN cc -O2 main.c"), "{names:?}");
    assert!(names.contains(&"[stage-3 1/2] COPY --from=build /out/app /app"), "{names:?}");
    let g = build("FROM scratch\nENV D=/srv\nWORKDIR $D\nRUN <<EOF\necho a\necho b\nEOF\n", &opts(&[]));
    let mut names: Vec<&str> = g.vertices.values().map(|v| v.description.as_str()).collect();
    names.sort();
    assert_eq!(names, ["[1/2] WORKDIR /srv", "[2/2] RUN <<EOF (echo a...)", "scratch"]);
}

#[test]
fn chmod_takes_octal_or_symbolic_modes() {
    for ok in ["755", "0644", "7777", "u+x", "a=rX,o-w", "ug+rw", "go=u"] {
        let df = format!("FROM scratch\nCOPY --chmod={ok} a /a\n");
        assert!(lower(&df, &opts(&[]), &FakeRegistry::default()).is_ok(), "{ok}");
    }
    for bad in ["10000", "888", "u+q", "x", "u", "u+x,"] {
        let df = format!("FROM scratch\nCOPY --chmod={bad} a /a\n");
        let e = lower(&df, &opts(&[]), &FakeRegistry::default()).unwrap_err().to_string();
        assert!(e.starts_with(&format!("Dockerfile:2:6: invalid chmod parameter: '{bad}'")), "{bad}: {e}");
    }
}

#[test]
fn unknown_images_fail_where_they_are_named() {
    struct Offline;
    impl ImageResolver for Offline {
        fn resolve_image(&self, reference: &str, _: &Platform) -> Result<ResolvedImage, String> {
            Err(format!("pull access denied for {reference}"))
        }
    }
    let e = lower("FROM scratch\nCOPY --from=nosuchstage /a /b\n", &opts(&[]), &Offline).unwrap_err().to_string();
    assert!(
        e.starts_with("Dockerfile:2:6: nosuchstage: pull access denied for docker.io/library/nosuchstage:latest"),
        "{e}"
    );
}

#[test]
fn labels_from_the_command_line_reach_only_the_target() {
    let o = BuildOptions { labels: [("team".to_string(), "core".to_string())].into(), ..opts(&[]) };
    let g = build(MULTI, &o);
    assert_eq!(g.target_stage().unwrap().image.labels.get("team").map(String::as_str), Some("core"));
    assert!(g.stage("build").unwrap().image.labels.is_empty());
    assert_eq!(g.target_stage().unwrap().root, build(MULTI, &opts(&[])).target_stage().unwrap().root);
}

/// Golden digests for the Dockerfiles in `tests/golden/*.Dockerfile`: the digest of every
/// stage root must stay what is checked in, so a change to the encoding is deliberate.
/// `KILN_UPDATE_GOLDEN=1` rewrites the `.digests` files.
#[test]
fn golden_digests() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{} missing: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "Dockerfile"))
        .collect();
    files.sort();
    assert!(files.len() >= 3, "golden Dockerfiles are missing in {}", dir.display());
    for df_path in files {
        let text = std::fs::read_to_string(&df_path).unwrap();
        let g = build(&text, &opts(&[("VERSION", "1.2.3")]));
        let mut got = String::new();
        for s in &g.stages {
            got.push_str(&format!("{} {}\n", s.name.clone().unwrap_or_else(|| format!("stage-{}", s.index)), s.root));
        }
        let golden = df_path.with_extension("digests");
        if std::env::var_os("KILN_UPDATE_GOLDEN").is_some() {
            std::fs::write(&golden, &got).unwrap();
        }
        let want = std::fs::read_to_string(&golden).unwrap_or_else(|e| panic!("{}: {e}", golden.display()));
        assert_eq!(got, want, "{} changed digests", df_path.display());
    }
}

#[test]
fn targets_and_global_args_are_listed_with_their_comments() {
    let df = kiln_frontend::parse_str(
        "# GO_VERSION the Go toolchain\nARG GO_VERSION=1.22\n# build compiles the binary\nFROM golang:${GO_VERSION} AS build\nRUN go build\n\nFROM scratch\n",
    )
    .unwrap();
    let targets = kiln_frontend::stages::list_targets(&df).unwrap();
    assert_eq!(targets.len(), 2);
    assert_eq!(
        (targets[0].name.as_deref(), targets[0].description.as_str(), targets[0].line),
        (Some("build"), "compiles the binary", 4)
    );
    assert_eq!((targets[1].base.as_str(), targets[1].default), ("scratch", true));
    let args = kiln_frontend::stages::list_global_args(&df).unwrap();
    assert_eq!(args.len(), 1);
    assert_eq!(
        (args[0].name.as_str(), args[0].default.as_deref(), args[0].description.as_str()),
        ("GO_VERSION", Some("1.22"), "the Go toolchain")
    );
}
