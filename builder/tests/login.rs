//! `kiln login` / `kiln logout` against a real basic-auth registry, with a temp DOCKER_CONFIG.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use kiln_testkit::registry::{PASSWORD, Registry, USER};

fn kiln(docker_config: &Path, args: &[&str], stdin: &str) -> Output {
    let root = tempfile::tempdir().unwrap();
    kiln_in(root.path(), docker_config, None, args, stdin)
}

/// Runs kiln on store `root`, with `bin` (if given) in front of PATH.
fn kiln_in(root: &Path, docker_config: &Path, bin: Option<&Path>, args: &[&str], stdin: &str) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kiln"));
    if let Some(bin) = bin {
        let path = std::env::var("PATH").unwrap_or_default();
        cmd.env("PATH", format!("{}:{path}", bin.display()));
    }
    let mut child = cmd
        .args(args)
        .env("DOCKER_CONFIG", docker_config)
        .env("KILN_ROOT", root)
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

/// A credential helper (`credsStore`) in the style of docker's: it keeps one credential in a
/// file next to itself.
const HELPER: &str = r#"#!/bin/sh
dir=$(dirname "$0")
case "$1" in
  store) cat > "$dir/stored.json" ;;
  get) if [ -f "$dir/stored.json" ]; then sed 's/"ServerURL":"[^"]*",//' "$dir/stored.json"; else echo "credentials not found in native keychain"; exit 1; fi ;;
  erase) cat > "$dir/erased.txt"; rm -f "$dir/stored.json" ;;
esac
"#;

#[test]
fn login_uses_the_credential_store_and_push_reads_it() {
    use std::os::unix::fs::PermissionsExt;
    let reg = Registry::basic_auth();
    let host = reg.host();
    let dir = tempfile::tempdir().unwrap();
    let bin = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    let helper = bin.path().join("docker-credential-kilntest");
    std::fs::write(&helper, HELPER).unwrap();
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(dir.path().join("config.json"), r#"{"credsStore":"kilntest"}"#).unwrap();
    let run = |args: &[&str], stdin: &str| kiln_in(root.path(), dir.path(), Some(bin.path()), args, stdin);

    let out = run(&["login", "-u", USER, "--password-stdin", &host], PASSWORD);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stored: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bin.path().join("stored.json")).unwrap()).unwrap();
    assert_eq!(stored["ServerURL"], host.as_str());
    assert_eq!(stored["Username"], USER);
    assert_eq!(stored["Secret"], PASSWORD);
    // docker leaves an empty entry in the file and the secret in the helper only.
    let c = config(dir.path());
    assert_eq!(c["auths"][&host], serde_json::json!({}));
    assert!(!std::fs::read_to_string(dir.path().join("config.json")).unwrap().contains(PASSWORD));

    // A push reads the credentials back through the helper.
    let rootfs = tempfile::tempdir().unwrap();
    std::fs::write(rootfs.path().join("hello.txt"), "hello\n").unwrap();
    let tar = root.path().join("rootfs.tar");
    let status = Command::new("tar").arg("-C").arg(rootfs.path()).arg("-cf").arg(&tar).arg(".").status().unwrap();
    assert!(status.success());
    let image = format!("{host}/helper/app:1");
    let out = run(&["import", tar.to_str().unwrap(), &image], "");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = run(&["push", &image], "");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let out = run(&["logout", &host], "");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read_to_string(bin.path().join("erased.txt")).unwrap(), host);
    assert!(!bin.path().join("stored.json").exists());
    assert!(config(dir.path())["auths"].get(&host).is_none());
    let out = run(&["push", &image], "");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("authentication failed"));
}
