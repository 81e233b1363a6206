//! Parser and typed-instruction behaviour the conformance corpus does not cover: heredocs,
//! directives, CRLF/BOM, flags per instruction, and the located error messages users see.

use std::time::Duration;

use kiln_frontend::instructions::{Healthcheck, Instruction, Kind, parse_instructions};
use kiln_frontend::{DockerfileError, parse_str};

fn typed(src: &str) -> Vec<Instruction> {
    let df = parse_str(src).unwrap_or_else(|e| panic!("parse failed:\n{e}"));
    parse_instructions(&df).unwrap_or_else(|e| panic!("typing failed:\n{e}"))
}

fn typed_err(src: &str) -> DockerfileError {
    match parse_str(src) {
        Err(e) => e,
        Ok(df) => parse_instructions(&df).expect_err("must fail"),
    }
}

#[test]
fn heredocs_anywhere_several_per_line_with_chomp_and_quoting() {
    let src =
        "FROM alpine\nRUN python3 <<EOF\nprint(1)\nEOF\nCOPY <<A <<-\"B\" /dst/\na $X\nA\n\t\tb\n\tB\nRUN echo done\n";
    let df = parse_str(src).unwrap();
    assert_eq!(
        df.dump(),
        "(from \"alpine\")\n(run \"python3 <<EOF\")\n(copy \"<<A\" \"<<-\\\"B\\\"\" \"/dst/\")\n(run \"echo done\")"
    );
    let run = &df.instructions[1];
    assert_eq!((run.start_line, run.end_line), (2, 4));
    assert_eq!(run.heredocs[0].name, "EOF");
    assert_eq!(run.heredocs[0].content, "print(1)\n");
    assert!(run.heredocs[0].expand);
    let instrs = parse_instructions(&df).unwrap();
    let Kind::Copy(copy) = &instrs[2].kind else { panic!("{:?}", instrs[2].kind) };
    assert_eq!(copy.dest, "/dst/");
    assert!(copy.sources.is_empty());
    assert_eq!(copy.contents.len(), 2);
    assert_eq!(
        (copy.contents[0].path.as_str(), copy.contents[0].data.as_str(), copy.contents[0].expand),
        ("A", "a $X\n", true)
    );
    assert_eq!(
        (copy.contents[1].path.as_str(), copy.contents[1].data.as_str(), copy.contents[1].expand),
        ("B", "b\n", false)
    );
    assert_eq!((instrs[3].start_line, instrs[3].end_line), (10, 10));
}

#[test]
fn heredoc_in_json_form_is_not_a_heredoc_and_unterminated_heredoc_fails() {
    let df = parse_str("FROM a\nRUN [\"cat\", \"<<EOF\"]\nEOF\n").unwrap();
    assert!(df.instructions[1].heredocs.is_empty());
    assert_eq!(df.instructions.len(), 3, "EOF is an instruction line here");
    let err = parse_str("FROM a\nRUN cat <<EOF\nhello\n").unwrap_err();
    assert_eq!(err.pos.line, 2);
    assert!(err.message.starts_with("unterminated heredoc"), "{}", err.message);
}

#[test]
fn onbuild_heredoc_goes_into_the_expression() {
    let instrs = typed("FROM a\nONBUILD RUN <<EOF\necho hi\nEOF\n");
    let Kind::Onbuild(ob) = &instrs[1].kind else { panic!() };
    assert_eq!(ob.expression, "RUN <<EOF\necho hi\nEOF");
    assert_eq!(ob.trigger.name(), "run");
}

#[test]
fn directives_escape_backtick_crlf_and_bom() {
    let src = "\u{feff}# Syntax = docker/dockerfile:1\r\n# ESCAPE=`\r\n# check=skip=all\r\nFROM a\r\nRUN echo \\ `\r\n  b\r\n";
    let df = parse_str(src).unwrap();
    assert_eq!(df.escape, '`');
    assert_eq!(df.directive("syntax"), Some("docker/dockerfile:1"));
    assert_eq!(df.directive("check"), Some("skip=all"));
    assert_eq!(df.dump(), "(from \"a\")\n(run \"echo \\\\   b\")");
    // A directive after a comment is a comment, and a repeated one is an error.
    assert_eq!(parse_str("# hi\n# escape=`\nFROM a\n").unwrap().escape, '\\');
    let err = parse_str("# escape=`\n# escape=\\\nFROM a\n").unwrap_err();
    assert_eq!(err.message, "only one escape parser directive can be used");
    assert_eq!(err.pos.line, 2);
    assert_eq!(
        parse_str("# escape=x\nFROM a\n").unwrap_err().message,
        "invalid escape token 'x' does not match ` or \\"
    );
}

#[test]
fn continuation_with_trailing_whitespace_comments_and_blank_lines() {
    let df = parse_str("FROM a\nRUN a \\  \n# note\n\n  b \\\t\n c\n").unwrap();
    assert_eq!(df.dump(), "(from \"a\")\n(run \"a   b  c\")");
    assert_eq!((df.instructions[1].start_line, df.instructions[1].end_line), (2, 6));
    assert_eq!(df.warnings.len(), 1);
    assert_eq!(df.warnings[0].message, "Empty continuation line found in: RUN a   b  c");
}

#[test]
fn json_fallback_and_flags_kept_in_order_with_repeats() {
    let df = parse_str("FROM a\nCMD [\"a\", 'b']\nRUN --mount=type=cache,target=/a --mount=\"type=tmpfs,target=/b c\" --network=none x\n").unwrap();
    assert_eq!(df.instructions[1].args, ["[\"a\", 'b']"]);
    assert!(!df.instructions[1].json);
    assert_eq!(
        df.instructions[2].flags,
        ["--mount=type=cache,target=/a", "--mount=type=tmpfs,target=/b c", "--network=none"]
    );
    let instrs = parse_instructions(&df).unwrap();
    let Kind::Run(run) = &instrs[2].kind else { panic!() };
    assert_eq!(run.mounts, ["type=cache,target=/a", "type=tmpfs,target=/b c"]);
    assert_eq!(run.network.as_deref(), Some("none"));
    assert_eq!(instrs[2].flags[1].pos.column, 34);
}

#[test]
fn every_instruction_types() {
    let src = r#"ARG BASE=alpine V
FROM --platform=$BUILDPLATFORM ${BASE} AS Build
ENV A=1 B="x y"
ENV OLD value with spaces
LABEL k=v
EXPOSE 80 53/udp
VOLUME ["/data"]
VOLUME /a /b
USER app:app
WORKDIR /src
STOPSIGNAL SIGTERM
SHELL ["/bin/bash", "-c"]
ENTRYPOINT ["/bin/app"]
CMD run --help
HEALTHCHECK --interval=5s --timeout=3s --retries=3 CMD curl -f http://localhost/
COPY --from=build --chown=1:1 --chmod=644 --link --parents --exclude=*.md --exclude=x a b /dst/
ADD --keep-git-dir=true --checksum=sha256:abc --link=false https://x/y.tgz /
MAINTAINER me
ONBUILD COPY . /app
"#;
    let i = typed(src);
    let kinds: Vec<&Kind> = i.iter().map(|i| &i.kind).collect();
    let Kind::Arg(args) = kinds[0] else { panic!() };
    assert_eq!((args[0].key.as_str(), args[0].default.as_deref()), ("BASE", Some("alpine")));
    assert_eq!((args[1].key.as_str(), args[1].default.as_deref()), ("V", None));
    let Kind::From(from) = kinds[1] else { panic!() };
    assert_eq!(
        (from.image.as_str(), from.name.as_deref(), from.platform.as_deref()),
        ("${BASE}", Some("build"), Some("$BUILDPLATFORM"))
    );
    let Kind::Env(env) = kinds[2] else { panic!() };
    assert_eq!((env[1].key.as_str(), env[1].value.as_str(), env[1].no_delim), ("B", "\"x y\"", false));
    let Kind::Env(env) = kinds[3] else { panic!() };
    assert_eq!((env[0].key.as_str(), env[0].value.as_str(), env[0].no_delim), ("OLD", "value with spaces", true));
    assert!(matches!(kinds[4], Kind::Label(l) if l[0].key == "k"));
    assert_eq!(kinds[5], &Kind::Expose(vec!["80".into(), "53/udp".into()]));
    assert_eq!(kinds[6], &Kind::Volume(vec!["/data".into()]));
    assert_eq!(kinds[7], &Kind::Volume(vec!["/a".into(), "/b".into()]));
    assert_eq!(kinds[8], &Kind::User("app:app".into()));
    assert_eq!(kinds[9], &Kind::Workdir("/src".into()));
    assert_eq!(kinds[10], &Kind::StopSignal("SIGTERM".into()));
    assert_eq!(kinds[11], &Kind::Shell(vec!["/bin/bash".into(), "-c".into()]));
    let Kind::Entrypoint(ep) = kinds[12] else { panic!() };
    assert_eq!((ep.args.as_slice(), ep.prepend_shell), (&["/bin/app".to_string()][..], false));
    let Kind::Cmd(cmd) = kinds[13] else { panic!() };
    assert_eq!((ep.args.len(), cmd.args.as_slice(), cmd.prepend_shell), (1, &["run --help".to_string()][..], true));
    let Kind::Healthcheck(Healthcheck::Check(h)) = kinds[14] else { panic!() };
    assert_eq!(h.test, ["CMD-SHELL", "curl -f http://localhost/"]);
    assert_eq!((h.interval, h.timeout, h.retries), (Duration::from_secs(5), Duration::from_secs(3), 3));
    let Kind::Copy(c) = kinds[15] else { panic!() };
    assert_eq!((c.from.as_deref(), c.chown.as_deref(), c.chmod.as_deref()), (Some("build"), Some("1:1"), Some("644")));
    assert!(c.link && c.parents);
    assert_eq!(
        (c.excludes.as_slice(), c.sources.as_slice(), c.dest.as_str()),
        (&["*.md".to_string(), "x".to_string()][..], &["a".to_string(), "b".to_string()][..], "/dst/")
    );
    let Kind::Add(a) = kinds[16] else { panic!() };
    assert!(a.keep_git_dir && !a.link);
    assert_eq!(a.checksum.as_deref(), Some("sha256:abc"));
    assert_eq!(kinds[17], &Kind::Maintainer("me".into()));
    let Kind::Onbuild(ob) = kinds[18] else { panic!() };
    assert_eq!(ob.expression, "COPY . /app");
}

#[test]
fn healthcheck_none_and_bad_values() {
    assert_eq!(typed("FROM a\nHEALTHCHECK NONE\n")[1].kind, Kind::Healthcheck(Healthcheck::None));
    let json = typed("FROM a\nHEALTHCHECK CMD [\"/bin/check\", \"-q\"]\n");
    let Kind::Healthcheck(Healthcheck::Check(h)) = &json[1].kind else { panic!() };
    assert_eq!(h.test, ["CMD", "/bin/check", "-q"]);
    assert_eq!(typed_err("FROM a\nHEALTHCHECK NONE x\n").message, "HEALTHCHECK NONE takes no arguments");
    assert_eq!(typed_err("FROM a\nHEALTHCHECK FOO x\n").message, "Unknown type \"FOO\" in HEALTHCHECK (try CMD)");
    assert_eq!(typed_err("FROM a\nHEALTHCHECK --interval=5 CMD x\n").message, "time: missing unit in duration \"5\"");
    assert_eq!(
        typed_err("FROM a\nHEALTHCHECK --timeout=1us CMD x\n").message,
        "Interval \"timeout\" cannot be less than 1ms"
    );
    assert_eq!(typed_err("FROM a\nHEALTHCHECK --retries=-1 CMD x\n").message, "--retries cannot be negative (-1)");
    assert_eq!(typed_err("FROM a\nHEALTHCHECK CMD\n").message, "Missing command after HEALTHCHECK CMD");
}

#[test]
fn errors_are_located_with_source_line_and_caret() {
    let err = typed_err("FROM a\nCOPY --form=build /a /b\n");
    assert_eq!(
        err.to_string(),
        "Dockerfile:2:6: unknown flag: --form (COPY takes --from, --chown, --chmod, --link, --parents, --exclude)\n 2 | COPY --form=build /a /b\n   |      ^"
    );
    let err = typed_err("FROM a\n  ADD --from=x a b\n");
    assert_eq!((err.pos.line, err.pos.column), (2, 7));
    assert!(err.message.starts_with("unknown flag: --from (ADD takes"), "{}", err.message);
    let err = typed_err("FROM a\nRUNN x\n");
    assert_eq!(err.to_string(), "Dockerfile:2:1: unknown instruction: RUNN (did you mean RUN?)\n 2 | RUNN x\n   | ^");
    assert_eq!(typed_err("FROM a\nCMD --help\n").message, "unknown flag: --help (CMD takes no flags)");
    assert_eq!(typed_err("FROM a\nENV --x=1 A=b\n").message, "unknown flag: --x (ENV takes no flags)");
    assert_eq!(
        typed_err("FROM a\nCOPY --link=maybe a b\n").message,
        "expecting boolean value for flag --link, not: maybe"
    );
    assert_eq!(typed_err("FROM a\nCOPY --from a b\n").message, "missing a value on flag: --from");
    assert_eq!(typed_err("FROM a\nCOPY --from=x --from=y a b\n").message, "duplicate flag specified: --from");
    assert_eq!(
        typed_err("FROM --platform=a a AS 1x\n").message,
        "invalid name for build stage: \"1x\", name can't start with a number or contain symbols"
    );
    assert_eq!(typed_err("FROM a b\n").message, "FROM requires either one or three arguments");
    assert_eq!(
        typed_err("FROM a\nCOPY x\n").message,
        "COPY requires at least two arguments, but only one was provided. Destination could not be determined"
    );
    assert_eq!(
        typed_err("FROM a\nCOPY <<EOF <<EOF2\nx\nEOF\ny\nEOF2\n").message,
        "COPY cannot accept a heredoc as a destination"
    );
    assert_eq!(typed_err("FROM a\nSHELL /bin/sh -c\n").message, "SHELL requires the arguments to be in JSON form");
    assert_eq!(
        typed_err("FROM a\nONBUILD ONBUILD RUN x\n").message,
        "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed"
    );
    assert_eq!(typed_err("FROM a\nONBUILD FROM b\n").message, "FROM isn't allowed as an ONBUILD trigger");
    assert_eq!(typed_err("FROM a\nonbuild maintainer b\n").message, "MAINTAINER isn't allowed as an ONBUILD trigger");
    assert_eq!(typed_err("FROM a\nWORKDIR\n").message, "WORKDIR requires exactly one argument");
    assert_eq!(typed_err("FROM a\nARG =x\n").message, "ARG names can not be blank");
    assert_eq!(typed_err("FROM a\nVOLUME [\"\"]\n").message, "VOLUME specified can not be an empty string");
    assert_eq!(
        typed_err("FROM a\nENV a=b c\n").message,
        "Syntax error - can't find = in \"c\". Must be of the form: name=value"
    );
    let err = typed_err("FROM a\nRUN [\"a\", 1]\n");
    assert_eq!((err.pos.line, err.pos.column), (2, 5));
}

#[test]
fn error_positions_survive_continuations() {
    let err = typed_err("FROM a\nCOPY --link \\\n   --bogus=1 a b\n");
    assert_eq!((err.pos.line, err.pos.column), (3, 4));
    assert_eq!(err.source_line.as_deref(), Some("   --bogus=1 a b"));
}

#[test]
fn non_utf8_and_overlong_lines_are_errors_not_panics() {
    let err = kiln_frontend::parse(b"FROM a\nRUN \xff\n").unwrap_err();
    assert_eq!((err.pos.line, err.pos.column), (2, 5));
    let long = format!("FROM a\nRUN {}\n", "x".repeat(70_000));
    let err = parse_str(&long).unwrap_err();
    assert_eq!(err.message, "dockerfile line greater than max allowed size of 65535");
    assert_eq!(err.pos.line, 2);
}

#[test]
fn deep_onbuild_nesting_does_not_overflow() {
    let src = format!("FROM a\n{}RUN x\n", "ONBUILD ".repeat(8_000));
    let df = parse_str(&src).unwrap();
    assert!(df.dump().ends_with(&format!("(run \"x\"){}", ")".repeat(8_000))));
    assert!(parse_instructions(&df).is_err());
}
