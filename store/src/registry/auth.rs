//! Registry credentials, read and written the way docker keeps them.
//!
//! They live in `config.json` in the docker config dir (`$DOCKER_CONFIG`, else `~/.docker`):
//! `auths.<server>.auth` is base64 `user:password`; `credsStore` names a credential helper
//! (`docker-credential-<name>`) holding all of them, `credHelpers.<server>` one per registry.
//! `<server>` is `host[:port]`, or `https://index.docker.io/v1/` for Docker Hub. Reading goes
//! through the `docker_credential` crate; writing (for `kiln login`/`logout`) keeps every other
//! field of the file as it was.
//!
//! Secrets are never logged and never part of an error message.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;
use docker_credential::{CredentialRetrievalError, DockerCredential};
use oci_client::secrets::RegistryAuth;
use serde_json::{Map, Value, json};

use super::error::RegistryError;

/// The docker config dir: `explicit` if given, else `$DOCKER_CONFIG`, else `~/.docker`.
pub fn docker_config_dir(explicit: Option<&Path>) -> Result<PathBuf, RegistryError> {
    if let Some(dir) = explicit {
        return Ok(dir.to_owned());
    }
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG") {
        return Ok(PathBuf::from(dir));
    }
    match std::env::var_os("HOME") {
        Some(home) => Ok(Path::new(&home).join(".docker")),
        None => Err(RegistryError::Config {
            path: PathBuf::from("~/.docker"),
            message: "neither DOCKER_CONFIG nor HOME is set".to_owned(),
        }),
    }
}

/// The key docker files a registry's credentials under.
pub(crate) fn server_key(registry: &str) -> String {
    match registry {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" => "https://index.docker.io/v1/".to_owned(),
        other => other.to_owned(),
    }
}

/// The credentials configured for `registry`; anonymous when there are none.
pub(crate) fn lookup(config_dir: &Path, registry: &str) -> Result<RegistryAuth, RegistryError> {
    let path = config_dir.join("config.json");
    let file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(RegistryAuth::Anonymous),
        Err(e) => return Err(RegistryError::Config { path, message: e.to_string() }),
    };
    let cred_err = |message: String| RegistryError::Credentials { registry: registry.to_owned(), message };
    match docker_credential::get_credential_from_reader(std::io::BufReader::new(file), &server_key(registry)) {
        Ok(DockerCredential::UsernamePassword(user, password)) => Ok(RegistryAuth::Basic(user, password)),
        Ok(DockerCredential::IdentityToken(_)) => {
            tracing::warn!(
                "{}: the credentials for {registry} are an identity token, which kiln does not support; \
                 using anonymous access (run `kiln login {registry}` with a password or access token)",
                path.display()
            );
            Ok(RegistryAuth::Anonymous)
        }
        Err(CredentialRetrievalError::NoCredentialConfigured) => Ok(RegistryAuth::Anonymous),
        Err(CredentialRetrievalError::HelperFailure { helper, stdout, stderr }) => {
            if stdout.contains("credentials not found") || stderr.contains("credentials not found") {
                Ok(RegistryAuth::Anonymous)
            } else {
                Err(cred_err(format!("credential helper {helper} failed: {}", stderr.trim())))
            }
        }
        Err(CredentialRetrievalError::ConfigReadError) => {
            Err(RegistryError::Config { path, message: "not a valid docker config file".to_owned() })
        }
        Err(e) => Err(cred_err(e.to_string())),
    }
}

/// Where `kiln login` put the credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoredIn {
    /// In `config.json` itself (base64 `auth`), at this path.
    File(PathBuf),
    /// In this credential helper (`docker-credential-<name>`).
    Helper(String),
}

fn read_config(path: &Path) -> Result<Map<String, Value>, RegistryError> {
    let data = match std::fs::read(path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Map::new()),
        Err(e) => return Err(RegistryError::Config { path: path.to_owned(), message: e.to_string() }),
    };
    match serde_json::from_slice::<Value>(&data) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(RegistryError::Config { path: path.to_owned(), message: "not a JSON object".to_owned() }),
        Err(e) => Err(RegistryError::Config { path: path.to_owned(), message: e.to_string() }),
    }
}

/// Writes the config atomically, readable by its owner only (it holds secrets).
fn write_config(path: &Path, config: &Map<String, Value>) -> Result<(), RegistryError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let err = |e: std::io::Error| RegistryError::Config { path: path.to_owned(), message: e.to_string() };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(err)?;
    let mut tmp = tempfile::Builder::new().prefix(".config.json").tempfile_in(dir).map_err(err)?;
    tmp.as_file().set_permissions(std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    let mut data = serde_json::to_vec_pretty(config).map_err(|e| err(std::io::Error::other(e)))?;
    data.push(b'\n');
    tmp.write_all(&data).map_err(err)?;
    tmp.as_file().sync_all().map_err(err)?;
    tmp.persist(path).map_err(|e| err(e.error))?;
    Ok(())
}

/// The helper responsible for `key`: `credHelpers.<key>`, else `credsStore`.
fn helper_for(config: &Map<String, Value>, key: &str) -> Option<String> {
    let named = config.get("credHelpers").and_then(|h| h.get(key)).and_then(Value::as_str);
    let store = config.get("credsStore").and_then(Value::as_str);
    named.or(store).filter(|s| !s.is_empty()).map(str::to_owned)
}

/// Runs `docker-credential-<helper> <action>` with `input` on stdin.
fn run_helper(helper: &str, action: &str, input: &[u8], registry: &str) -> Result<(), RegistryError> {
    let program = format!("docker-credential-{helper}");
    let err = |message: String| RegistryError::Credentials { registry: registry.to_owned(), message };
    let mut child = Command::new(&program)
        .arg(action)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| err(format!("cannot run credential helper {program}: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input).map_err(|e| err(format!("writing to credential helper {program}: {e}")))?;
    }
    let output = child.wait_with_output().map_err(|e| err(format!("waiting for credential helper {program}: {e}")))?;
    if output.status.success() {
        return Ok(());
    }
    let said = format!(
        "{} {}",
        String::from_utf8_lossy(&output.stdout).trim(),
        String::from_utf8_lossy(&output.stderr).trim()
    );
    if action == "erase" && said.contains("credentials not found") {
        return Ok(());
    }
    Err(err(format!("credential helper {program} {action} failed: {}", said.trim())))
}

/// Stores credentials for `registry` as `docker login` does: in the configured credential
/// helper, else base64 in `config.json`'s `auths`.
pub fn save_credentials(
    config_dir: &Path,
    registry: &str,
    username: &str,
    password: &str,
) -> Result<StoredIn, RegistryError> {
    let path = config_dir.join("config.json");
    let mut config = read_config(&path)?;
    let key = server_key(registry);
    let helper = helper_for(&config, &key);
    let entry = match &helper {
        Some(h) => {
            let input = json!({ "ServerURL": key, "Username": username, "Secret": password });
            run_helper(h, "store", input.to_string().as_bytes(), registry)?;
            // docker keeps an empty entry so that the registry is listed as logged in.
            json!({})
        }
        None => {
            let auth = base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
            json!({ "auth": auth })
        }
    };
    let auths = config.entry("auths").or_insert_with(|| json!({}));
    if !auths.is_object() {
        *auths = json!({});
    }
    if let Some(map) = auths.as_object_mut() {
        map.insert(key, entry);
    }
    write_config(&path, &config)?;
    Ok(match helper {
        Some(h) => StoredIn::Helper(format!("docker-credential-{h}")),
        None => StoredIn::File(path),
    })
}

/// Removes the credentials of `registry` (from the helper and from `config.json`). Returns
/// whether any were stored.
pub fn erase_credentials(config_dir: &Path, registry: &str) -> Result<bool, RegistryError> {
    let path = config_dir.join("config.json");
    let mut config = read_config(&path)?;
    let key = server_key(registry);
    if let Some(h) = helper_for(&config, &key) {
        run_helper(&h, "erase", key.as_bytes(), registry)?;
    }
    let removed = config.get_mut("auths").and_then(Value::as_object_mut).and_then(|a| a.remove(&key)).is_some();
    if removed {
        write_config(&path, &config)?;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_lookup_erase_in_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), r#"{"psFormat":"table","auths":{"other:1":{"auth":"eDp5"}}}"#)
            .unwrap();
        assert_eq!(lookup(dir.path(), "reg:5000").unwrap(), RegistryAuth::Anonymous);
        let stored = save_credentials(dir.path(), "reg:5000", "alice", "pa:ss").unwrap();
        assert_eq!(stored, StoredIn::File(dir.path().join("config.json")));
        let v: Value = serde_json::from_slice(&std::fs::read(dir.path().join("config.json")).unwrap()).unwrap();
        assert_eq!(v["auths"]["reg:5000"]["auth"], "YWxpY2U6cGE6c3M=");
        assert_eq!(v["psFormat"], "table");
        assert_eq!(v["auths"]["other:1"]["auth"], "eDp5");
        assert_eq!(lookup(dir.path(), "reg:5000").unwrap(), RegistryAuth::Basic("alice".into(), "pa:ss".into()));
        assert!(erase_credentials(dir.path(), "reg:5000").unwrap());
        assert!(!erase_credentials(dir.path(), "reg:5000").unwrap());
        assert_eq!(lookup(dir.path(), "reg:5000").unwrap(), RegistryAuth::Anonymous);
        assert_eq!(server_key("docker.io"), "https://index.docker.io/v1/");
    }

    #[test]
    fn broken_config_is_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), "{oops").unwrap();
        let err = lookup(dir.path(), "reg").unwrap_err().to_string();
        assert!(err.contains("config.json"), "{err}");
        let err = save_credentials(dir.path(), "reg", "u", "secret-pw").unwrap_err().to_string();
        assert!(err.contains("config.json") && !err.contains("secret-pw"), "{err}");
    }
}
