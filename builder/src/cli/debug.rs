//! `kiln debug …`: tools for looking inside kiln and at how it reads a Dockerfile.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};

/// `kiln debug` subcommands.
#[derive(Debug, Subcommand)]
pub enum DebugCommand {
    /// Print the Dockerfile's syntax tree in BuildKit's dump format, one instruction a line.
    DumpAst(DumpAstArgs),
}

/// Options of `kiln debug dump-ast`.
#[derive(Debug, Args)]
pub struct DumpAstArgs {
    /// The Dockerfile to read; `-` reads standard input.
    #[arg(short = 'f', long = "file", default_value = "Dockerfile")]
    pub file: PathBuf,
}

/// Runs a `kiln debug` subcommand.
pub fn run(cmd: DebugCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        DebugCommand::DumpAst(args) => dump_ast(&args),
    }
}

fn dump_ast(args: &DumpAstArgs) -> anyhow::Result<ExitCode> {
    let (name, bytes) = if args.file.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::stdin().read_to_end(&mut buf).context("reading the Dockerfile from standard input")?;
        ("Dockerfile".to_string(), buf)
    } else {
        let bytes = std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
        (args.file.display().to_string(), bytes)
    };
    let ok = render(&name, &bytes, &mut std::io::stdout().lock(), &mut std::io::stderr().lock())?;
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Writes the dump of `bytes` (a Dockerfile called `name`) to `out` and warnings to `err`, or
/// the located parse error to `err`; returns whether it parsed.
fn render(name: &str, bytes: &[u8], out: &mut impl Write, err: &mut impl Write) -> std::io::Result<bool> {
    match kiln_frontend::parse(bytes) {
        Ok(df) => {
            for w in &df.warnings {
                writeln!(err, "{name}:{}: warning: {}", w.line, w.message)?;
            }
            writeln!(out, "{}", df.dump())?;
            Ok(true)
        }
        Err(e) => {
            // The located message with its source line and caret is the whole report.
            writeln!(err, "{}", e.with_file(name))?;
            Ok(false)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(src: &str) -> (bool, String, String) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let ok = render("Dockerfile", src.as_bytes(), &mut out, &mut err).unwrap();
        (ok, String::from_utf8(out).unwrap(), String::from_utf8(err).unwrap())
    }

    #[test]
    fn dumps_in_buildkit_format() {
        let (ok, out, err) = run("FROM a\nCOPY --from=b x \\\n\n y\n");
        assert!(ok);
        assert_eq!(out, "(from \"a\")\n(copy [\"--from=b\"] \"x\" \"y\")\n");
        assert_eq!(err, "Dockerfile:4: warning: Empty continuation line found in: COPY --from=b x  y\n");
    }

    #[test]
    fn errors_name_line_column_and_show_a_caret() {
        let (ok, out, err) = run("FROM a\nRUN [\"a\", 1]\n");
        assert!(!ok);
        assert_eq!(out, "");
        assert_eq!(
            err,
            "Dockerfile:2:5: when using JSON array syntax, arrays must be comprised of strings only\n 2 | RUN [\"a\", 1]\n   |     ^\n"
        );
    }
}
