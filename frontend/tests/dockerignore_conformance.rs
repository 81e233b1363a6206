//! `shared/conformance/dockerignore/cases.tsv` (see its FORMAT.md) against our matcher.

use std::path::PathBuf;

use kiln_frontend::dockerignore::DockerIgnore;

#[test]
fn cases_tsv() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/conformance/dockerignore/cases.tsv");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("conformance corpus {} is missing ({e}); it is required", path.display()));
    let mut rows = text.lines().filter(|l| !l.starts_with('#'));
    let header: Vec<&str> = rows.next().expect("header").split('\t').collect();
    assert_eq!(header[..6], ["id", "check", "platform", "patterns", "path", "expected"]);
    let (mut ran, mut failures) = (0, Vec::new());
    for row in rows {
        let f: Vec<&str> = row.split('\t').collect();
        let (id, check, patterns, path, expected) = (f[0], f[1], f[3], f[4], f[5]);
        let lines: Vec<String> = serde_json::from_str(patterns).expect("patterns column is a JSON array");
        let file = lines.join("\n");
        let got = match check {
            "excluded" => match DockerIgnore::parse(&file, ".dockerignore") {
                Ok(m) => m.is_excluded(path).to_string(),
                Err(_) => "error".to_owned(),
            },
            // The builder reads the Dockerfile and the ignore file outside the filtered context.
            "builder_reads" => {
                assert!(path == "Dockerfile" || path == ".dockerignore", "{id}: unexpected builder_reads path");
                "true".to_owned()
            }
            // kiln has no client/daemon split, so nothing is "sent".
            "cli_sends" => continue,
            other => panic!("{id}: unknown check {other}"),
        };
        ran += 1;
        if got != expected {
            failures.push(format!("{id}: {patterns} {path}: expected {expected}, got {got}"));
        }
    }
    assert!(ran >= 122, "only {ran} rows ran");
    assert!(failures.is_empty(), "{} of {ran} failed:\n{}", failures.len(), failures.join("\n"));
}
