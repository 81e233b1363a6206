//! BuildKit parser conformance: every `parser/ok` case dumps byte for byte like BuildKit,
//! every `parser/negative` case fails, and `parser/line` has BuildKit's start and end lines.
//! Data: the shared conformance folder next to the repository (see its README.md).

use std::fs;
use std::path::{Path, PathBuf};

fn conformance() -> PathBuf {
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/conformance/parser"));
    assert!(
        dir.is_dir(),
        "conformance data missing: {} must exist (the shared/ folder beside the repository)",
        dir.display()
    );
    dir.to_path_buf()
}

fn cases(sub: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(conformance().join(sub))
        .unwrap_or_else(|e| panic!("reading {sub}: {e}"))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    v.sort();
    v
}

#[test]
fn ok_cases_dump_like_buildkit() {
    let cases = cases("ok");
    assert!(cases.len() >= 33, "expected at least 33 ok cases, found {}", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let input = fs::read(case.join("Dockerfile")).unwrap();
        let expected = fs::read_to_string(case.join("result")).unwrap();
        match kiln_frontend::parse(&input) {
            Ok(df) => {
                let got = df.dump() + "\n";
                if got != expected {
                    failures.push(format!("{}:\n--- expected\n{expected}--- got\n{got}", case.display()));
                }
            }
            Err(e) => failures.push(format!("{}: unexpected error: {e}", case.display())),
        }
    }
    assert!(failures.is_empty(), "{} of {} cases differ:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

#[test]
fn negative_cases_fail() {
    let cases = cases("negative");
    assert!(cases.len() >= 4, "expected at least 4 negative cases, found {}", cases.len());
    for case in &cases {
        let input = fs::read(case.join("Dockerfile")).unwrap();
        if let Ok(df) = kiln_frontend::parse(&input) {
            panic!("{} parsed but must fail:\n{}", case.display(), df.dump());
        }
    }
}

#[test]
fn negative_cases_fail_with_buildkit_messages() {
    let dir = conformance().join("negative");
    let msg =
        |case: &str| kiln_frontend::parse(&fs::read(dir.join(case).join("Dockerfile")).unwrap()).unwrap_err().message;
    assert_eq!(msg("empty_dockerfile"), "file with no instructions");
    assert_eq!(msg("only_comments"), "file with no instructions");
    assert_eq!(msg("env_no_value"), "ENV must have two arguments");
    assert_eq!(msg("shykes-nested-json"), "when using JSON array syntax, arrays must be comprised of strings only");
}

#[test]
fn line_numbers_match_buildkit() {
    let dir = conformance().join("line");
    let df = kiln_frontend::parse(&fs::read(dir.join("Dockerfile")).unwrap()).unwrap();
    let tsv = fs::read_to_string(dir.join("expected-lines.tsv")).unwrap();
    let mut checked = 0;
    for row in tsv.lines().filter(|l| !l.starts_with('#') && !l.starts_with("node\t")) {
        let cols: Vec<&str> = row.split('\t').collect();
        let (start, end): (usize, usize) = (cols[1].parse().unwrap(), cols[2].parse().unwrap());
        let got = match cols[0] {
            "root" => (df.start_line(), df.end_line()),
            child => {
                let i: usize = child.strip_prefix("child:").unwrap().parse().unwrap();
                (df.instructions[i].start_line, df.instructions[i].end_line)
            }
        };
        assert_eq!(got, (start, end), "{}", cols[0]);
        checked += 1;
    }
    assert_eq!(checked, 4);
    assert_eq!(df.instructions.len(), 3);
}
