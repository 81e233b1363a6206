//! `kiln login` / `kiln logout` against a real basic-auth registry, with a temp DOCKER_CONFIG.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use kiln_testkit::registry::{PASSWORD, Registry, USER};

fn kiln(docker_config: &Path, args: &[&str], stdin: &str) -> Output {
    let root = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .env("DOCKER_CONFIG", docker_config)
        .env("KILN_ROOT", root.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

fn config(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap()
}

#[test]
fn login_checks_stores_and_logout_removes() {
    let reg = Registry::basic_auth();
    let host = reg.host();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("config.json"),
        r#"{"auths":{"other.example:443":{"auth":"eDp5"}},"detachKeys":"ctrl-e"}"#,
    )
    .unwrap();

    let out = kiln(dir.path(), &["login", "-u", USER, "--password-stdin", &host], "wrong-password\n");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!("login to {host} failed")) && stderr.contains("authentication failed"),
        "{stderr}"
    );
    assert!(!stderr.contains("wrong-password"), "{stderr}");
    assert!(config(dir.path())["auths"].get(&host).is_none());

    let out = kiln(dir.path(), &["login", "-u", USER, "--password-stdin", &host], &format!("{PASSWORD}\n"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "Login Succeeded\n");
    let c = config(dir.path());
    // base64("kiln-tester:s3cret-Passw0rd"), as docker writes it; other settings untouched.
    assert_eq!(c["auths"][&host]["auth"], "a2lsbi10ZXN0ZXI6czNjcmV0LVBhc3N3MHJk");
    assert_eq!(c["auths"]["other.example:443"]["auth"], "eDp5");
    assert_eq!(c["detachKeys"], "ctrl-e");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("config.json")).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "config.json must not be readable by others: {mode:o}");

    let out = kiln(dir.path(), &["logout", &host], "");
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), format!("Removing login credentials for {host}\n"));
    let c = config(dir.path());
    assert!(c["auths"].get(&host).is_none());
    assert_eq!(c["auths"]["other.example:443"]["auth"], "eDp5");
    let out = kiln(dir.path(), &["logout", &host], "");
    assert_eq!(String::from_utf8_lossy(&out.stdout), format!("Not logged in to {host}\n"));
}

#[test]
fn login_without_password_source_fails() {
    let dir = tempfile::tempdir().unwrap();
    let out = kiln(dir.path(), &["login", "-u", USER, "127.0.0.1:1"], "");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--password-stdin"));
}
