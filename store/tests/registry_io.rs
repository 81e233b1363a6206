//! Registry I/O against real `docker-registry` processes: round trips in all three flavours,
//! HEAD-skip, cross-repo mounts, index pulls, and faults (killed registry, corrupted blob,
//! wrong password, injected 500/429/dropped responses).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kiln_store::image::{self, ImageConfig, Layer, Platform, media_type};
use kiln_store::layer::{Compression, MediaTypeFamily};
use kiln_store::registry::{
    BlobOutcome, NoProgress, Progress, Reference, RegistryClient, RegistryError, RegistryOptions, RemoteCause,
    RetryPolicy, auth,
};
use kiln_store::{Digest, Store};
use kiln_testkit::registry::{FaultAction, FaultProxy, FaultRule, PASSWORD, Registry, USER};
use tempfile::TempDir;

/// A store in a temp dir plus the dirs the client options point at.
struct Env {
    _root: TempDir,
    store: Store,
    certs_d: TempDir,
    docker_config: TempDir,
}

impl Env {
    fn new() -> Env {
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(root.path()).unwrap();
        Env { _root: root, store, certs_d: tempfile::tempdir().unwrap(), docker_config: tempfile::tempdir().unwrap() }
    }

    fn client(&self) -> RegistryClient {
        RegistryClient::new(RegistryOptions {
            certs_dir: self.certs_d.path().to_owned(),
            docker_config_dir: Some(self.docker_config.path().to_owned()),
            retry: RetryPolicy {
                attempts: 4,
                initial_backoff: Duration::from_millis(50),
                max_backoff: Duration::from_millis(200),
            },
            ..RegistryOptions::default()
        })
    }

    fn login(&self, registry: &Registry, password: &str) {
        auth::save_credentials(self.docker_config.path(), &registry.host(), USER, password).unwrap();
    }

    /// Stores an image whose layers are `sizes` bytes of content derived from `seed`.
    fn image(&self, seed: u8, sizes: &[usize]) -> Digest {
        let layers: Vec<Layer> = sizes
            .iter()
            .enumerate()
            .map(|(i, &size)| {
                let mut w = self.store.blobs().writer().unwrap();
                let mut block = vec![0u8; 1 << 20];
                let mut left = size;
                let mut n = 0u32;
                while left > 0 {
                    let tag = format!("{seed}-{i}-{n};");
                    for (j, b) in block.iter_mut().enumerate() {
                        *b = tag.as_bytes()[j % tag.len()];
                    }
                    let len = left.min(block.len());
                    w.write_all(&block[..len]).unwrap();
                    left -= len;
                    n += 1;
                }
                let digest = w.commit(None).unwrap();
                Layer {
                    digest: digest.clone(),
                    size: size as u64,
                    media_type: kiln_store::layer::Compression::Uncompressed
                        .media_type(kiln_store::layer::MediaTypeFamily::Oci)
                        .into(),
                    diff_id: digest,
                }
            })
            .collect();
        let mut config = ImageConfig { architecture: "amd64".into(), os: "linux".into(), ..ImageConfig::default() };
        config.rootfs.diff_ids = layers.iter().map(|l| l.diff_id.clone()).collect();
        image::commit_image(self.store.blobs(), &config, &layers).unwrap().manifest_digest
    }

    fn blob(&self, d: &Digest) -> Vec<u8> {
        self.store.blobs().read(d).unwrap()
    }
}

/// Records outcomes, retries and bytes; optionally slows uploads down.
#[derive(Default)]
struct Recorder {
    outcomes: Mutex<Vec<(Digest, BlobOutcome)>>,
    retries: Mutex<Vec<(Digest, u32)>>,
    bytes: Mutex<HashMap<Digest, u64>>,
    delay_per_chunk: Option<Duration>,
}

impl Progress for Recorder {
    fn blob_advanced(&self, digest: &Digest, bytes: u64) {
        *self.bytes.lock().unwrap().entry(digest.clone()).or_default() += bytes;
        if let Some(d) = self.delay_per_chunk {
            std::thread::sleep(d);
        }
    }
    fn blob_retrying(&self, digest: &Digest, attempt: u32, _cause: &RemoteCause) {
        self.bytes.lock().unwrap().remove(digest);
        self.retries.lock().unwrap().push((digest.clone(), attempt));
    }
    fn blob_done(&self, digest: &Digest, outcome: &BlobOutcome) {
        self.outcomes.lock().unwrap().push((digest.clone(), outcome.clone()));
    }
}

impl Recorder {
    fn outcomes(&self) -> Vec<BlobOutcome> {
        let mut v: Vec<BlobOutcome> = self.outcomes.lock().unwrap().iter().map(|(_, o)| o.clone()).collect();
        v.sort_by_key(|o| format!("{o:?}"));
        v
    }
}

fn reference(host: &str, repo: &str) -> Reference {
    Reference::parse(&format!("{host}/{repo}")).unwrap()
}

fn amd64() -> Platform {
    "linux/amd64".parse().unwrap()
}

/// Pushes an image, pulls it into a fresh store, checks digests and bytes, then pushes again
/// (every blob must be skipped).
async fn round_trip(env: &Env, host: &str) {
    let manifest = env.image(1, &[300_000, 2_000_000]);
    let dest = reference(host, "kiln/round-trip:v1");
    let rec = Arc::new(Recorder::default());
    let client = env.client();
    let pushed = client.push(&env.store, &manifest, &dest, rec.clone()).await.unwrap();
    assert_eq!(pushed, manifest);
    assert_eq!(rec.outcomes(), vec![BlobOutcome::Uploaded; 3]);

    let fresh = Env { docker_config: tempfile::tempdir().unwrap(), ..Env::new() };
    copy_dir(env.docker_config.path(), fresh.docker_config.path());
    copy_dir(env.certs_d.path(), fresh.certs_d.path());
    let pulled = fresh.client().pull(&fresh.store, &dest, &amd64(), Arc::new(NoProgress)).await.unwrap();
    assert_eq!(pulled.digest, manifest);
    assert_eq!(pulled.media_type, media_type::OCI_MANIFEST);
    assert_eq!(pulled.index, None);
    let img = image::Image::load(fresh.store.blobs(), &manifest).unwrap();
    for d in img.blobs() {
        assert_eq!(fresh.blob(d), env.blob(d), "blob {d}");
    }

    let again = Arc::new(Recorder::default());
    client.push(&env.store, &manifest, &dest, again.clone()).await.unwrap();
    assert_eq!(again.outcomes(), vec![BlobOutcome::Exists; 3]);
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    for entry in walk(from) {
        let rel = entry.strip_prefix(from).unwrap();
        std::fs::create_dir_all(to.join(rel).parent().unwrap()).unwrap();
        std::fs::copy(&entry, to.join(rel)).unwrap();
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() { out.extend(walk(&p)) } else { out.push(p) }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_plain_http() {
    let reg = Registry::plain();
    round_trip(&Env::new(), &reg.host()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_basic_auth() {
    let reg = Registry::basic_auth();
    let env = Env::new();
    env.login(&reg, PASSWORD);
    round_trip(&env, &reg.host()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_tls_with_certs_d() {
    let reg = Registry::tls();
    let env = Env::new();
    // Without the CA in certs.d a loopback TLS registry is still verified, and refused.
    let manifest = env.image(2, &[1000]);
    let err = env.client().push(&env.store, &manifest, &reference(&reg.host(), "a/b:1"), Arc::new(NoProgress)).await;
    let err = err.unwrap_err();
    assert!(matches!(&err, RegistryError::Connect { cause: RemoteCause::Certificate(_), .. }), "{err}");
    assert!(err.to_string().contains(&reg.host()), "{err}");

    reg.install_ca(env.certs_d.path());
    round_trip(&env, &reg.host()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insecure_registry_skips_verification() {
    let reg = Registry::tls();
    let env = Env::new();
    let manifest = env.image(3, &[1000]);
    let client = RegistryClient::new(RegistryOptions {
        insecure_registries: vec![reg.host()],
        certs_dir: env.certs_d.path().to_owned(),
        ..RegistryOptions::default()
    });
    client.push(&env.store, &manifest, &reference(&reg.host(), "a/b:1"), Arc::new(NoProgress)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_repo_mount() {
    let reg = Registry::plain();
    let env = Env::new();
    let manifest = env.image(4, &[500_000]);
    let client = env.client();
    client.push(&env.store, &manifest, &reference(&reg.host(), "team/one:1"), Arc::new(NoProgress)).await.unwrap();
    let rec = Arc::new(Recorder::default());
    client.push(&env.store, &manifest, &reference(&reg.host(), "team/two:1"), rec.clone()).await.unwrap();
    let from = format!("{}/team/one", reg.host());
    assert_eq!(rec.outcomes(), vec![BlobOutcome::Mounted { from: from.clone() }, BlobOutcome::Mounted { from }]);
    assert!(rec.bytes.lock().unwrap().is_empty(), "nothing uploaded");

    // The mounted repository serves the image.
    let other = Env::new();
    let pulled =
        other.client().pull(&other.store, &reference(&reg.host(), "team/two:1"), &amd64(), Arc::new(NoProgress)).await;
    assert_eq!(pulled.unwrap().digest, manifest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_mount_falls_back_to_upload() {
    let reg = Registry::plain();
    let env = Env::new();
    let manifest = env.image(5, &[200_000]);
    let img = image::Image::load(env.store.blobs(), &manifest).unwrap();
    // The store believes the blobs exist in a repository where they do not.
    env.store.meta().add_blob_sources(img.blobs(), &format!("{}/nowhere/repo", reg.host())).unwrap();
    let rec = Arc::new(Recorder::default());
    env.client().push(&env.store, &manifest, &reference(&reg.host(), "team/app:1"), rec.clone()).await.unwrap();
    assert_eq!(rec.outcomes(), vec![BlobOutcome::Uploaded; 2]);
    // The upload sessions the refused mounts opened were cancelled: distribution removes a
    // cancelled session's `startedat` and `data` (it keeps an empty hash state), so none of
    // those may be left.
    let uploads = reg.storage_dir().join("docker/registry/v2/repositories/team/app/_uploads");
    let left: Vec<_> = std::fs::read_dir(&uploads)
        .map(|d| d.map(|e| e.unwrap().path()).filter(|p| p.join("startedat").exists()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "open upload sessions: {left:?}");
}

/// Issues one raw HTTP request to a plain registry; returns the whole response.
fn raw_request(host: &str, method: &str, path: &str, content_type: &str, body: &[u8]) -> String {
    let mut conn = TcpStream::connect(host).unwrap();
    write!(
        conn,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    conn.write_all(body).unwrap();
    let mut resp = String::new();
    conn.read_to_string(&mut resp).unwrap();
    resp
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_platform_from_index() {
    let reg = Registry::plain();
    let env = Env::new();
    let manifest = env.image(6, &[10_000]);
    env.client()
        .push(&env.store, &manifest, &reference(&reg.host(), "multi/app:amd64"), Arc::new(NoProgress))
        .await
        .unwrap();
    let size = env.blob(&manifest).len();
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[{{"mediaType":"{}","digest":"{manifest}","size":{size},"platform":{{"architecture":"amd64","os":"linux"}}}}]}}"#,
        media_type::OCI_INDEX,
        media_type::OCI_MANIFEST
    );
    let status =
        raw_request(&reg.host(), "PUT", "/v2/multi/app/manifests/latest", media_type::OCI_INDEX, index.as_bytes());
    assert!(status.contains("201"), "{status}");

    let other = Env::new();
    let r = reference(&reg.host(), "multi/app");
    let pulled = other.client().pull(&other.store, &r, &amd64(), Arc::new(NoProgress)).await.unwrap();
    assert_eq!(pulled.digest, manifest);
    assert_eq!(pulled.index, Some(Digest::of(index.as_bytes())));

    let err = other.client().pull(&other.store, &r, &"linux/arm64".parse().unwrap(), Arc::new(NoProgress)).await;
    let err = err.unwrap_err().to_string();
    assert!(err.contains("no manifest for platform linux/arm64") && err.contains("linux/amd64"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_schema2_bytes_and_media_types_survive() {
    let reg = Registry::plain();
    let env = Env::new();
    let img = image::Image::load(env.store.blobs(), &env.image(12, &[20_000])).unwrap();
    // The same blobs under a Docker v2 schema 2 manifest, spaced the way kiln never writes JSON:
    // push and pull must keep these exact bytes and this media type.
    let docker = format!(
        "{{\n   \"schemaVersion\": 2,\n   \"mediaType\": \"{}\",\n   \"config\": {{ \"mediaType\": \"{}\", \"size\": {}, \"digest\": \"{}\" }},\n   \"layers\": [ {{ \"mediaType\": \"{}\", \"size\": {}, \"digest\": \"{}\" }} ]\n}}",
        media_type::DOCKER_MANIFEST,
        media_type::DOCKER_CONFIG,
        img.config_raw.len(),
        img.config_digest,
        Compression::Uncompressed.media_type(MediaTypeFamily::Docker),
        img.layers[0].size,
        img.layers[0].digest
    );
    let digest = env.store.blobs().put(docker.as_bytes()).unwrap();
    let dest = reference(&reg.host(), "docker/app:v2");
    assert_eq!(env.client().push(&env.store, &digest, &dest, Arc::new(NoProgress)).await.unwrap(), digest);

    let mut conn = TcpStream::connect(reg.host()).unwrap();
    write!(
        conn,
        "GET /v2/docker/app/manifests/v2 HTTP/1.1\r\nHost: {}\r\nAccept: {}\r\nConnection: close\r\n\r\n",
        reg.host(),
        media_type::DOCKER_MANIFEST
    )
    .unwrap();
    let mut resp = String::new();
    conn.read_to_string(&mut resp).unwrap();
    assert!(resp.contains(&format!("Content-Type: {}", media_type::DOCKER_MANIFEST)), "{resp}");
    assert!(resp.contains(&format!("Docker-Content-Digest: {digest}")), "{resp}");

    let list = format!(
        r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[{{"mediaType":"{}","digest":"{digest}","size":{},"platform":{{"architecture":"amd64","os":"linux"}}}}]}}"#,
        media_type::DOCKER_MANIFEST_LIST,
        media_type::DOCKER_MANIFEST,
        docker.len()
    );
    let resp = raw_request(
        &reg.host(),
        "PUT",
        "/v2/docker/app/manifests/list",
        media_type::DOCKER_MANIFEST_LIST,
        list.as_bytes(),
    );
    assert!(resp.starts_with("HTTP/1.1 201"), "{resp}");

    let other = Env::new();
    let r = reference(&reg.host(), "docker/app:list");
    let pulled = other.client().pull(&other.store, &r, &amd64(), Arc::new(NoProgress)).await.unwrap();
    assert_eq!(pulled.digest, digest);
    assert_eq!(pulled.media_type, media_type::DOCKER_MANIFEST);
    assert_eq!(pulled.index, Some(Digest::of(list.as_bytes())));
    assert_eq!(other.blob(&digest), docker.as_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_killed_mid_push_then_rerun() {
    let mut reg = Registry::plain();
    let env = Env::new();
    let manifest = env.image(7, &[64 << 20]);
    let big = image::Image::load(env.store.blobs(), &manifest).unwrap().layers[0].digest.clone();
    let dest = reference(&reg.host(), "big/app:1");
    // 1 ms per 256 KiB chunk: the upload takes at least a quarter of a second.
    let rec = Arc::new(Recorder { delay_per_chunk: Some(Duration::from_millis(1)), ..Recorder::default() });
    let client = env.client();
    let push = client.push(&env.store, &manifest, &dest, rec.clone());
    let killer = async {
        loop {
            // Kill once the config is up and the big layer is well under way, so the layer's
            // upload is what breaks.
            let config_done = rec.outcomes.lock().unwrap().iter().any(|(d, _)| d != &big);
            if config_done && rec.bytes.lock().unwrap().get(&big).copied().unwrap_or(0) >= 8 << 20 {
                reg.kill();
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    };
    let (result, ()) = tokio::join!(push, killer);
    let err = result.unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(&err, RegistryError::Remote { cause: RemoteCause::Connection(_), .. }),
        "expected a connection error, got {msg}"
    );
    assert!(msg.contains(&format!("blob {big}")) && msg.contains(&format!("{}/big/app", reg.host())), "{msg}");
    assert!(msg.contains("after 4 attempts"), "{msg}");

    reg.restart();
    let rec = Arc::new(Recorder::default());
    if let Err(e) = env.client().push(&env.store, &manifest, &dest, rec.clone()).await {
        panic!("re-run after restart: {e}\nregistry log:\n{}", reg.log());
    }
    let other = Env::new();
    let pulled = other.client().pull(&other.store, &dest, &amd64(), Arc::new(NoProgress)).await.unwrap();
    assert_eq!(pulled.digest, manifest);
    assert_eq!(other.store.blobs().size(&big).unwrap(), 64 << 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_blob_is_rejected_and_nothing_stored() {
    let reg = Registry::plain();
    let env = Env::new();
    // A big second layer is still downloading when the first fails: it is stopped, and its
    // temp file is gone by the time the pull returns.
    let manifest = env.image(8, &[100_000, 32 << 20]);
    let layer = image::Image::load(env.store.blobs(), &manifest).unwrap().layers[0].digest.clone();
    let dest = reference(&reg.host(), "corrupt/app:1");
    env.client().push(&env.store, &manifest, &dest, Arc::new(NoProgress)).await.unwrap();

    let data = reg.blob_data_path(&layer.to_string());
    let mut bytes = std::fs::read(&data).unwrap();
    bytes[50_000] ^= 0xff;
    std::fs::write(&data, bytes).unwrap();

    let other = Env::new();
    let err = other.client().pull(&other.store, &dest, &amd64(), Arc::new(NoProgress)).await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(&err, RegistryError::Remote { cause: RemoteCause::Digest(_), attempts: 1, .. }), "{msg}");
    assert!(msg.contains(&format!("blob {layer}")) && msg.contains(&reg.host()), "{msg}");
    let stored = other.store.blobs().list().unwrap();
    assert!(!stored.contains(&layer) && !stored.contains(&manifest), "{stored:?}");
    assert_eq!(std::fs::read_dir(other.store.blobs().tmp_dir()).unwrap().count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_or_missing_password_is_an_auth_error() {
    let reg = Registry::basic_auth();
    let env = Env::new();
    let manifest = env.image(9, &[1000]);
    let dest = reference(&reg.host(), "auth/app:1");

    let err = env.client().push(&env.store, &manifest, &dest, Arc::new(NoProgress)).await.unwrap_err();
    assert!(err.is_auth(), "{err}");
    assert!(err.to_string().contains(&reg.host()), "{err}");

    env.login(&reg, "not-the-password");
    let err = env.client().push(&env.store, &manifest, &dest, Arc::new(NoProgress)).await.unwrap_err();
    let msg = err.to_string();
    assert!(err.is_auth(), "{msg}");
    assert!(msg.contains(&reg.host()) && msg.contains("authentication failed"), "{msg}");
    assert!(!msg.contains("not-the-password"), "{msg}");
    let err = env.client().pull(&env.store, &dest, &amd64(), Arc::new(NoProgress)).await.unwrap_err();
    assert!(err.is_auth() && err.to_string().contains(&reg.host()), "{err}");

    let client = env.client();
    let err = client.login(&reg.host(), USER, "not-the-password").await.unwrap_err();
    assert!(err.is_auth() && err.to_string().contains(&reg.host()), "{err}");
    client.login(&reg.host(), USER, PASSWORD).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_are_retried() {
    let reg = Registry::plain();
    let env = Env::new();
    let manifest = env.image(10, &[400_000]);
    let layer = image::Image::load(env.store.blobs(), &manifest).unwrap().layers[0].digest.clone();
    let proxy = FaultProxy::start(
        reg.addr(),
        vec![
            FaultRule::respond(Some("PUT"), "/blobs/uploads/", 500, "storage hiccup", Some(2)),
            FaultRule::respond(Some("HEAD"), "/blobs/", 429, "slow down", Some(1)),
            FaultRule::respond(Some("GET"), "/manifests/", 503, "busy", Some(1)),
            FaultRule {
                method: Some("GET".into()),
                path_contains: format!("/blobs/{layer}"),
                action: FaultAction::DropResponseAfter(1000),
                times: Some(1),
            },
        ],
    );
    let dest = reference(&proxy.host(), "retry/app:1");
    let rec = Arc::new(Recorder::default());
    env.client().push(&env.store, &manifest, &dest, rec.clone()).await.unwrap();
    assert!(!rec.retries.lock().unwrap().is_empty());

    let other = Env::new();
    let rec = Arc::new(Recorder::default());
    let pulled = other.client().pull(&other.store, &dest, &amd64(), rec.clone()).await.unwrap();
    assert_eq!(pulled.digest, manifest);
    assert_eq!(rec.retries.lock().unwrap().len(), 1, "the dropped blob download was retried");
    assert_eq!(proxy.injected(), 5);
    let img = image::Image::load(other.store.blobs(), &manifest).unwrap();
    for d in img.blobs() {
        assert_eq!(other.blob(d), env.blob(d));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_500_names_everything() {
    let reg = Registry::plain();
    let proxy = FaultProxy::start(
        reg.addr(),
        vec![FaultRule::respond(Some("PUT"), "/blobs/uploads/", 500, "disk on fire", None)],
    );
    let env = Env::new();
    let manifest = env.image(11, &[1000]);
    let img = image::Image::load(env.store.blobs(), &manifest).unwrap();
    let err = env
        .client()
        .push(&env.store, &manifest, &reference(&proxy.host(), "fire/app:1"), Arc::new(NoProgress))
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains(&format!("{}/fire/app", proxy.host())), "{msg}");
    assert!(msg.contains("after 4 attempts"), "{msg}");
    assert!(msg.contains("HTTP 500") && msg.contains("disk on fire (UNKNOWN)"), "{msg}");
    assert!(img.blobs().any(|d| msg.contains(&format!("pushing blob {d}"))), "{msg}");
}
