//! BuildKit's shell corpora (`envVarTest`, `wordsTest`) run against our lexer; see
//! `shared/conformance/shell/FORMAT.md` for the line formats.

use std::path::PathBuf;

use kiln_frontend::shell::Lexer;

fn corpus(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/conformance/shell").join(name);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("conformance corpus {} is missing ({e}); it is required", path.display()))
}

#[test]
fn env_var_test_unix_and_all_platform_lines() {
    let env: Vec<(String, String)> = [("PWD", "/home"), ("SHELL", "bash"), ("KOREAN", "한국어"), ("NULL", "")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let lex = Lexer::new('\\');
    let (mut ran, mut failures) = (0, Vec::new());
    for (n, line) in corpus("envVarTest").lines().enumerate() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.trim().split('|').map(str::trim).collect();
        assert_eq!(fields.len(), 3, "line {}: {line:?}", n + 1);
        let (platform, source, expected) = (fields[0], fields[1], fields[2]);
        assert!(matches!(platform, "A" | "U" | "W"), "line {}: bad platform {platform}", n + 1);
        if platform == "W" {
            continue;
        }
        ran += 1;
        let got = lex.process_word(source, &env);
        let ok = match (&got, expected) {
            (Err(_), "error") => true,
            (Ok(w), e) => e != "error" && w == e,
            _ => false,
        };
        if !ok {
            failures.push(format!("line {}: {source:?} expected {expected:?} got {got:?}", n + 1));
        }
    }
    assert_eq!(ran, 228, "the corpus has 226 A and 2 U lines");
    assert!(failures.is_empty(), "{} of {ran} failed:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn words_test() {
    let lex = Lexer::new('\\');
    let mut env: Vec<(String, String)> = Vec::new();
    let (mut ran, mut failures) = (0, Vec::new());
    for (n, line) in corpus("wordsTest").lines().enumerate() {
        if line.starts_with('#') {
            continue;
        }
        if let Some(def) = line.strip_prefix("ENV ") {
            let def = def.trim_start_matches(' ');
            let (k, v) = def.split_once('=').expect("ENV line has =");
            env.push((k.to_owned(), v.to_owned()));
            continue;
        }
        let parts: Vec<&str> = line.split('|').collect();
        assert_eq!(parts.len(), 2, "line {}: {line:?}", n + 1);
        let input = parts[0].trim();
        let expected: Vec<String> = parts[1].trim_start_matches(' ').split(',').map(str::to_owned).collect();
        let got = lex.process_words(input, &env).unwrap_or_else(|_| vec!["error".to_owned()]);
        ran += 1;
        if got != expected {
            failures.push(format!("line {}: {input:?} expected {expected:?} got {got:?}", n + 1));
        }
    }
    assert_eq!(ran, 24);
    assert!(failures.is_empty(), "{} of {ran} failed:\n{}", failures.len(), failures.join("\n"));
}
