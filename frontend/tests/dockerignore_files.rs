//! Choosing the ignore file (`<Dockerfile>.dockerignore` first) and pruning directories.

use std::path::PathBuf;

use kiln_frontend::dockerignore::{DockerIgnore, find_ignore_file};

fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kiln-f2-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    dir
}

#[test]
fn dockerfile_specific_ignore_file_wins() {
    let ctx = scratch_dir("specific");
    std::fs::write(ctx.join(".dockerignore"), "*.log\n").unwrap();
    std::fs::write(ctx.join("sub/Dockerfile2.dockerignore"), "# only secrets\nsecret\n").unwrap();
    let (used, ignore) = find_ignore_file(&ctx, Some(&ctx.join("sub/Dockerfile2"))).unwrap().unwrap();
    assert_eq!(used, ctx.join("sub/Dockerfile2.dockerignore"));
    assert!(ignore.is_excluded("secret/key"));
    assert!(!ignore.is_excluded("app.log"));

    let (used, ignore) = find_ignore_file(&ctx, Some(&ctx.join("Dockerfile"))).unwrap().unwrap();
    assert_eq!(used, ctx.join(".dockerignore"));
    assert!(ignore.is_excluded("app.log"));

    // A Dockerfile from standard input has no file beside it: the context's file applies.
    let (used, _) = find_ignore_file(&ctx, None).unwrap().unwrap();
    assert_eq!(used, ctx.join(".dockerignore"));
    std::fs::remove_dir_all(&ctx).unwrap();
}

#[test]
fn no_ignore_file_means_nothing_ignored() {
    let ctx = scratch_dir("none");
    assert!(find_ignore_file(&ctx, Some(&ctx.join("Dockerfile"))).unwrap().is_none());
    std::fs::remove_dir_all(&ctx).unwrap();
}

#[test]
fn bad_pattern_error_names_the_file() {
    let ctx = scratch_dir("bad");
    std::fs::write(ctx.join(".dockerignore"), "ok\n[\n").unwrap();
    let err = find_ignore_file(&ctx, Some(&ctx.join("Dockerfile"))).unwrap_err().to_string();
    assert!(err.contains(".dockerignore") && err.contains("\"[\""), "{err}");
    std::fs::remove_dir_all(&ctx).unwrap();
}

#[test]
fn directories_are_skipped_only_when_nothing_below_can_come_back() {
    let m = DockerIgnore::parse("node_modules\nbuild\n!build/keep.txt\ndocs\n!*/README.md\n", ".dockerignore").unwrap();
    assert!(!m.can_skip_dir("src"), "not excluded");
    assert!(!m.can_skip_dir("build"), "a literal exception below it");
    assert!(!m.can_skip_dir("docs"), "a wildcard exception could match below it");
    assert!(!m.can_skip_dir("node_modules"), "*/README.md could match node_modules/README.md");
    assert!(m.is_excluded("node_modules/x/y.js"));
    assert!(!m.is_excluded("build/keep.txt"));

    let m = DockerIgnore::parse("node_modules\ntarget\n!src/**\n", ".dockerignore").unwrap();
    assert!(m.can_skip_dir("node_modules"));
    assert!(m.can_skip_dir("target/debug"));
    assert!(!m.is_excluded("src/main.rs"));
    assert_eq!(m.patterns().collect::<Vec<_>>(), ["node_modules", "target", "!src/**"]);
}
