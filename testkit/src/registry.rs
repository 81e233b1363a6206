//! A real OCI registry for tests: Debian's `docker-registry` binary (distribution 2.8) serving on a
//! free loopback port from its own storage dir in a temp dir, in three flavours ([`Flavour`]):
//! plain HTTP, htpasswd basic auth, and TLS with a throwaway CA made by `openssl`.
//!
//! [`Registry::kill`] and [`Registry::restart`] let fault tests take it down and bring it back on the
//! same port with the same storage; [`Registry::blob_data_path`] names the file a blob is served
//! from, so a test can corrupt it. [`FaultProxy`] sits in front of a registry and answers chosen
//! requests with an error status or cuts a response short, to exercise retries.
//!
//! Missing prerequisites panic naming the Debian package, so a test never skips silently.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

/// The user name the [`Flavour::BasicAuth`] registry accepts.
pub const USER: &str = "kiln-tester";
/// The password the [`Flavour::BasicAuth`] registry accepts.
pub const PASSWORD: &str = "s3cret-Passw0rd";

/// How the registry is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    /// Plain HTTP, anonymous access.
    Plain,
    /// Plain HTTP with htpasswd (bcrypt) basic auth for [`USER`]/[`PASSWORD`].
    BasicAuth,
    /// HTTPS with a server certificate for `127.0.0.1`/`localhost` signed by a throwaway CA
    /// ([`Registry::ca_cert`]), anonymous access.
    Tls,
}

/// A running registry process; killed when dropped.
pub struct Registry {
    dir: TempDir,
    flavour: Flavour,
    port: u16,
    child: Option<Child>,
}

impl Registry {
    /// Starts a registry of the given flavour and waits until it answers.
    pub fn start(flavour: Flavour) -> Registry {
        assert!(
            Path::new(REGISTRY_BIN).is_file(),
            "{REGISTRY_BIN} not found: install docker-registry (Debian package)"
        );
        let dir = tempfile::Builder::new().prefix("kiln-registry-").tempdir().expect("temp dir for the registry");
        std::fs::create_dir_all(dir.path().join("storage")).expect("registry storage dir");
        match flavour {
            Flavour::Plain => {}
            Flavour::BasicAuth => write_htpasswd(dir.path()),
            Flavour::Tls => make_certificates(dir.path()),
        }
        let mut registry = Registry { dir, flavour, port: 0, child: None };
        // The port is picked by binding :0 and releasing it, so another process may grab it before
        // the registry binds: try a few ports.
        for _ in 0..5 {
            registry.port = free_port();
            if registry.spawn_and_wait() {
                return registry;
            }
        }
        panic!("docker-registry did not start; its log:\n{}", registry.log());
    }

    /// A plain HTTP registry.
    pub fn plain() -> Registry {
        Registry::start(Flavour::Plain)
    }

    /// A basic-auth registry for [`USER`]/[`PASSWORD`].
    pub fn basic_auth() -> Registry {
        Registry::start(Flavour::BasicAuth)
    }

    /// A TLS registry (CA at [`Registry::ca_cert`]).
    pub fn tls() -> Registry {
        Registry::start(Flavour::Tls)
    }

    /// The flavour it was started with.
    pub fn flavour(&self) -> Flavour {
        self.flavour
    }

    /// `127.0.0.1:<port>`: the registry part of image references.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The socket address it listens on.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The storage root (`storage.filesystem.rootdirectory`).
    pub fn storage_dir(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    /// The file the registry serves the blob `sha256:<hex>` from.
    pub fn blob_data_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        self.storage_dir().join("docker/registry/v2/blobs/sha256").join(&hex[..2]).join(hex).join("data")
    }

    /// The PEM CA certificate that signed the server certificate ([`Flavour::Tls`] only).
    pub fn ca_cert(&self) -> Option<PathBuf> {
        (self.flavour == Flavour::Tls).then(|| self.dir.path().join("ca.crt"))
    }

    /// Places the CA certificate as `<certs_d>/<host:port>/ca.crt`, the layout of
    /// `/etc/docker/certs.d`.
    pub fn install_ca(&self, certs_d: &Path) {
        let ca = self.ca_cert().expect("install_ca needs a TLS registry");
        let dir = certs_d.join(self.host());
        std::fs::create_dir_all(&dir).expect("certs.d host dir");
        std::fs::copy(ca, dir.join("ca.crt")).expect("copy ca.crt");
    }

    /// Kills the registry process (storage is kept).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the registry if it runs and starts it again on the same port and storage.
    pub fn restart(&mut self) {
        self.kill();
        // The old socket may linger for a moment; a few tries ride that out.
        for _ in 0..20 {
            if self.spawn_and_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(250));
        }
        panic!("docker-registry did not restart on port {}; its log:\n{}", self.port, self.log());
    }

    /// The registry's own log (stderr and stdout) so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    fn write_config(&self) -> PathBuf {
        let d = self.dir.path();
        let mut cfg = format!(
            "version: 0.1\n\
             log:\n  level: warn\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n  \
             maintenance:\n    uploadpurging:\n      enabled: false\n\
             http:\n  addr: 127.0.0.1:{port}\n  secret: kiln-test-secret\n",
            storage = self.storage_dir().display(),
            port = self.port,
        );
        match self.flavour {
            Flavour::Plain => {}
            Flavour::BasicAuth => cfg.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: kiln-test\n    path: {}\n",
                d.join("htpasswd").display()
            )),
            Flavour::Tls => cfg.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                d.join("server.crt").display(),
                d.join("server.key").display()
            )),
        }
        let path = d.join("config.yml");
        std::fs::write(&path, cfg).expect("write registry config");
        path
    }

    /// Spawns the process and waits until it answers; false if it exited (port taken).
    fn spawn_and_wait(&mut self) -> bool {
        let config = self.write_config();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("registry.log"))
            .expect("registry log file");
        let child = Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log fd"))
            .stderr(log)
            .spawn()
            .expect("spawn docker-registry");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut()
                && child.try_wait().expect("wait on docker-registry").is_some()
            {
                self.child = None;
                return false;
            }
            if self.answers() {
                return true;
            }
            thread::sleep(Duration::from_millis(50));
        }
        self.kill();
        panic!("docker-registry did not answer on {} within 30s; its log:\n{}", self.host(), self.log());
    }

    /// Whether `/v2/` answers (TLS: whether the port accepts connections).
    fn answers(&self) -> bool {
        let Ok(mut conn) = TcpStream::connect_timeout(&self.addr(), Duration::from_secs(1)) else {
            return false;
        };
        if self.flavour == Flavour::Tls {
            return true;
        }
        let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
        if conn.write_all(b"GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").is_err() {
            return false;
        }
        let mut status = String::new();
        let _ = BufReader::new(conn).read_line(&mut status);
        status.starts_with("HTTP/1.1 200") || status.starts_with("HTTP/1.1 401")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    l.local_addr().expect("local addr").port()
}

fn run_tool(cmd: &mut Command, package: &str) -> Vec<u8> {
    let out = match cmd.output() {
        Ok(out) => out,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            panic!("{:?} not found: install {package} (Debian package)", cmd.get_program())
        }
        Err(e) => panic!("running {cmd:?}: {e}"),
    };
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

fn write_htpasswd(dir: &Path) {
    let line = run_tool(Command::new("htpasswd").args(["-Bbn", USER, PASSWORD]), "apache2-utils");
    std::fs::write(dir.join("htpasswd"), line).expect("write htpasswd");
}

fn make_certificates(dir: &Path) {
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    run_tool(
        Command::new("openssl")
            .current_dir(dir)
            .args(["req", "-x509"])
            .args(ec)
            .args(["-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=kiln test CA"])
            .args(["-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"]),
        "openssl",
    );
    run_tool(
        Command::new("openssl").current_dir(dir).args(["req"]).args(ec).args([
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ]),
        "openssl",
    );
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
         keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .expect("write server.ext");
    run_tool(
        Command::new("openssl").current_dir(dir).args([
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ]),
        "openssl",
    );
}

/// What a [`FaultProxy`] does to a matching request.
#[derive(Debug, Clone)]
pub enum FaultAction {
    /// Answer with this status and an OCI error body carrying `message`, then close the connection.
    Respond { status: u16, message: String },
    /// Forward the request, pass this many bytes of the response through, then cut the connection.
    DropResponseAfter(u64),
}

/// One fault rule: requests with this method whose path contains `path_contains` get `action`,
/// for the first `times` matches (`None`: every time).
#[derive(Debug, Clone)]
pub struct FaultRule {
    /// HTTP method to match (`"GET"`, `"PUT"`, ...); `None` matches any.
    pub method: Option<String>,
    /// Substring of the request path to match (`""` matches any).
    pub path_contains: String,
    /// What to do.
    pub action: FaultAction,
    /// How many matching requests get the fault; `None` for all of them.
    pub times: Option<usize>,
}

impl FaultRule {
    /// A rule answering `status` with `message` to matching requests.
    pub fn respond(
        method: Option<&str>,
        path_contains: &str,
        status: u16,
        message: &str,
        times: Option<usize>,
    ) -> Self {
        FaultRule {
            method: method.map(str::to_owned),
            path_contains: path_contains.to_owned(),
            action: FaultAction::Respond { status, message: message.to_owned() },
            times,
        }
    }
}

struct ProxyState {
    upstream: SocketAddr,
    rules: Mutex<Vec<(FaultRule, usize)>>,
    injected: AtomicUsize,
    stop: AtomicBool,
}

/// A fault-injecting HTTP/1.1 proxy on a loopback port in front of a plain HTTP registry.
/// Requests are parsed one by one (clients do not pipeline), so rules apply per request even on
/// kept-alive connections.
pub struct FaultProxy {
    state: Arc<ProxyState>,
    addr: SocketAddr,
    accept: Option<thread::JoinHandle<()>>,
}

impl FaultProxy {
    /// Starts a proxy forwarding to `upstream` with these rules.
    pub fn start(upstream: SocketAddr, rules: Vec<FaultRule>) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy port");
        let addr = listener.local_addr().expect("proxy addr");
        let state = Arc::new(ProxyState {
            upstream,
            rules: Mutex::new(rules.into_iter().map(|r| (r, 0)).collect()),
            injected: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
        });
        let st = state.clone();
        let accept = thread::spawn(move || {
            for conn in listener.incoming() {
                if st.stop.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(conn) = conn {
                    let st = st.clone();
                    thread::spawn(move || {
                        let _ = serve_connection(&st, conn);
                    });
                }
            }
        });
        FaultProxy { state, addr, accept: Some(accept) }
    }

    /// `127.0.0.1:<port>` of the proxy: use it as the registry host.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// How many faults were injected so far.
    pub fn injected(&self) -> usize {
        self.state.injected.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

/// Reads one request head (up to the blank line); `None` at a clean end of stream.
fn read_head(r: &mut BufReader<TcpStream>) -> io::Result<Option<Vec<u8>>> {
    let mut head = Vec::new();
    loop {
        let mut line = Vec::new();
        if r.read_until(b'\n', &mut line)? == 0 {
            return if head.is_empty() { Ok(None) } else { Err(io::ErrorKind::UnexpectedEof.into()) };
        }
        head.extend_from_slice(&line);
        if line == b"\r\n" || line == b"\n" {
            return Ok(Some(head));
        }
    }
}

fn serve_connection(st: &ProxyState, client: TcpStream) -> io::Result<()> {
    let mut client_out = client.try_clone()?;
    let mut reader = BufReader::new(client);
    // A TLS ClientHello (a client probing for HTTPS): this proxy speaks plain HTTP only, and
    // waiting for an HTTP head that never comes would stall the client until its timeout.
    if reader.fill_buf()?.first() == Some(&0x16) {
        return Ok(());
    }
    let upstream = TcpStream::connect(st.upstream)?;
    let mut upstream_out = upstream.try_clone()?;
    // Bytes of response the pump may still pass before cutting the connection (u64::MAX: no limit).
    let budget = Arc::new(Mutex::new(u64::MAX));
    // Set when this side answers the client itself: the pump must then leave the client open.
    let faulting = Arc::new(AtomicBool::new(false));
    let pump = {
        let mut from = upstream.try_clone()?;
        let mut to = client_out.try_clone()?;
        let budget = budget.clone();
        let faulting = faulting.clone();
        thread::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = match from.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                let mut left = budget.lock().expect("budget lock");
                let pass = (n as u64).min(*left) as usize;
                if to.write_all(&buf[..pass]).is_err() {
                    break;
                }
                if *left != u64::MAX {
                    *left -= pass as u64;
                    if pass < n || *left == 0 {
                        break;
                    }
                }
            }
            if !faulting.load(Ordering::SeqCst) {
                let _ = to.shutdown(Shutdown::Both);
            }
            let _ = from.shutdown(Shutdown::Both);
        })
    };
    while let Some(head) = read_head(&mut reader)? {
        let text = String::from_utf8_lossy(&head).into_owned();
        let mut first = text.split_whitespace();
        let method = first.next().unwrap_or_default().to_owned();
        let path = first.next().unwrap_or_default().to_owned();
        let content_length = text
            .lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
        match take_fault(st, &method, &path) {
            Some(FaultAction::Respond { status, message }) => {
                let body = format!(r#"{{"errors":[{{"code":"UNKNOWN","message":"{message}","detail":null}}]}}"#);
                let resp = format!(
                    "HTTP/1.1 {status} Injected\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
                     Connection: close\r\n\r\n{body}",
                    body.len()
                );
                // Read the body first: closing with unread data makes the kernel send a reset,
                // and the client would see that instead of the answer.
                io::copy(&mut (&mut reader).take(content_length), &mut io::sink())?;
                faulting.store(true, Ordering::SeqCst);
                let _ = upstream_out.shutdown(Shutdown::Both);
                let _ = pump.join();
                client_out.write_all(resp.as_bytes())?;
                let _ = client_out.shutdown(Shutdown::Both);
                return Ok(());
            }
            Some(FaultAction::DropResponseAfter(n)) => *budget.lock().expect("budget lock") = n,
            None => {}
        }
        upstream_out.write_all(&head)?;
        io::copy(&mut (&mut reader).take(content_length), &mut upstream_out)?;
    }
    let _ = upstream_out.shutdown(Shutdown::Write);
    let _ = pump.join();
    Ok(())
}

fn take_fault(st: &ProxyState, method: &str, path: &str) -> Option<FaultAction> {
    let mut rules = st.rules.lock().expect("rules lock");
    for (rule, used) in rules.iter_mut() {
        let method_ok = rule.method.as_deref().is_none_or(|m| m.eq_ignore_ascii_case(method));
        if method_ok && path.contains(&rule.path_contains) && rule.times.is_none_or(|t| *used < t) {
            *used += 1;
            st.injected.fetch_add(1, Ordering::SeqCst);
            return Some(rule.action.clone());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get_status(addr: &str, path: &str) -> String {
        let mut conn = TcpStream::connect(addr).unwrap();
        write!(conn, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
        let mut status = String::new();
        BufReader::new(conn).read_line(&mut status).unwrap();
        status.trim_end().to_owned()
    }

    #[test]
    fn flavours_answer_and_restart() {
        let mut plain = Registry::plain();
        assert_eq!(get_status(&plain.host(), "/v2/"), "HTTP/1.1 200 OK");
        plain.kill();
        assert!(TcpStream::connect(plain.addr()).is_err());
        plain.restart();
        assert_eq!(get_status(&plain.host(), "/v2/"), "HTTP/1.1 200 OK");

        let auth = Registry::basic_auth();
        assert_eq!(get_status(&auth.host(), "/v2/"), "HTTP/1.1 401 Unauthorized");

        let tls = Registry::tls();
        assert!(tls.ca_cert().unwrap().is_file());
        assert!(TcpStream::connect(tls.addr()).is_ok());
    }

    #[test]
    fn proxy_injects_then_forwards() {
        let reg = Registry::plain();
        let proxy =
            FaultProxy::start(reg.addr(), vec![FaultRule::respond(Some("GET"), "/v2/", 503, "try later", Some(2))]);
        assert_eq!(get_status(&proxy.host(), "/v2/"), "HTTP/1.1 503 Injected");
        assert_eq!(get_status(&proxy.host(), "/v2/"), "HTTP/1.1 503 Injected");
        assert_eq!(get_status(&proxy.host(), "/v2/"), "HTTP/1.1 200 OK");
        assert_eq!(proxy.injected(), 2);
    }
}
