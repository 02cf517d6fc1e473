//! What the binary's end-to-end tests share: running `weft` as a child process, backends
//! that name themselves, an HTTP client, polling for a condition.
// Each test crate uses a different part of this module.
#![allow(dead_code)]

pub mod local_mesh;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::io::Read;
use std::net::SocketAddr;

use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::time::Instant;

pub const WEFT: &str = env!("CARGO_BIN_EXE_weft");

/// Generous: the machine that runs these may be slow and busy.
pub const DEADLINE: Duration = Duration::from_secs(10);
pub const POLL: Duration = Duration::from_millis(50);

/// `weft up`'s stderr once its whole summary is printed: the last line marks the end,
/// so a half-written summary never reaches an assertion.
pub fn up_summary(stderr: String) -> Option<String> {
    (stderr.contains("mesh up") && stderr.contains("weft down stops everything")).then_some(stderr)
}

/// Polls `check` until it yields a value or `timeout` passes.
pub async fn poll_until<T, F, Fut>(timeout: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(POLL).await;
    }
}

// ---------------------------------------------------------------------------------------------
// The child process
// ---------------------------------------------------------------------------------------------

/// A running `weft` whose stdout and stderr are collected by reader threads. Dropping it kills
/// the process and reaps it.
pub struct Weft {
    pub child: Child,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

pub fn collect(
    mut from: impl Read + Send + 'static,
    into: Arc<Mutex<String>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => into
                    .lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n])),
            }
        }
    })
}

impl Weft {
    pub fn spawn(args: &[String]) -> Weft {
        Weft::spawn_via(&[], args)
    }

    /// Runs `weft` through `wrapper` (e.g. `setpriv --reuid …`), with the same environment.
    pub fn spawn_via(wrapper: &[&str], args: &[String]) -> Weft {
        let (program, mut all): (&str, Vec<String>) = match wrapper.split_first() {
            Some((program, rest)) => (
                program,
                rest.iter()
                    .map(|a| a.to_string())
                    .chain([WEFT.to_string()])
                    .collect(),
            ),
            None => (WEFT, Vec::new()),
        };
        all.extend(args.iter().cloned());
        let mut child = Command::new(program)
            .args(&all)
            // The proxy reads these; keep the caller's environment out of the test.
            .env_remove("WEFT_CONFIG_DIR")
            .env_remove("POD_NAMESPACE")
            .env_remove("WEFT_LABELS")
            .env_remove("WEFT_WORKLOAD_NAME")
            .env_remove("SERVICE_ACCOUNT")
            .env_remove("WEFT_WORKERS")
            // Users see errors without backtraces; so should the assertions on stderr.
            .env_remove("RUST_BACKTRACE")
            .env_remove("RUST_LIB_BACKTRACE")
            .env("WEFT_LOG", "info")
            // Where control planes publish their admin tokens and the CLI finds them.
            .env("WEFT_HOME", test_home())
            .env_remove("WEFT_TOKEN")
            .env_remove("WEFT_TOKEN_FILE")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program} {all:?}: {e}"));
        let stdout = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let readers = vec![
            collect(child.stdout.take().unwrap(), stdout.clone()),
            collect(child.stderr.take().unwrap(), stderr.clone()),
        ];
        Weft {
            child,
            stdout,
            stderr,
            readers,
        }
    }

    pub fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Both streams, for failure messages.
    pub fn output(&self) -> String {
        format!(
            "--- weft stdout ---\n{}\n--- weft stderr ---\n{}",
            self.stdout(),
            self.stderr()
        )
    }

    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("try_wait")
    }

    /// Waits for the process to exit on its own, then for its output to be read to the end.
    /// SIGKILL: gone without a word, as a crashed process.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let status = poll_until(timeout, || std::future::ready(self.exited())).await?;
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        Some(status)
    }
}

impl Drop for Weft {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// This test process's `$WEFT_HOME`, shared by the control planes it starts and the CLI it
/// runs; its credentials directory is writable by the rootless `weft up` (as nobody) too.
pub fn test_home() -> std::path::PathBuf {
    static HOME: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    HOME.get_or_init(|| {
        use std::os::unix::fs::PermissionsExt;
        let home = std::env::temp_dir().join(format!("weft-test-home-{}", std::process::id()));
        let credentials = home.join("credentials");
        std::fs::create_dir_all(&credentials).expect("create the test's WEFT_HOME");
        for dir in [&home, &credentials] {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777))
                .expect("open the test's WEFT_HOME to the rootless weft up");
        }
        home
    })
    .clone()
}

/// Runs a short-lived `weft` command to completion (killed if it overstays `DEADLINE`).
pub async fn run_weft(args: &[String]) -> (ExitStatus, String, String) {
    run_weft_within(args, DEADLINE).await
}

/// [`run_weft`] for commands that take long by design (bulk applies on a busy machine).
pub async fn run_weft_within(args: &[String], deadline: Duration) -> (ExitStatus, String, String) {
    let mut weft = Weft::spawn(args);
    match weft.wait_exit(deadline).await {
        Some(status) => (status, weft.stdout(), weft.stderr()),
        None => panic!(
            "`weft {}` did not exit within {deadline:?}\n{}",
            args.join(" "),
            weft.output()
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP: backends and a client
// ---------------------------------------------------------------------------------------------

/// An HTTP/1.1 + HTTP/2 server that names itself in `x-served-by`.
pub struct Backend {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Backend {
    pub async fn start(ip: &str, name: &'static str) -> Backend {
        let listener = TcpListener::bind((ip, 0))
            .await
            .unwrap_or_else(|e| panic!("bind backend on {ip}: {e}"));
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| async move {
                        let path = req.uri().path().to_string();
                        let _ = req.into_body().collect().await;
                        Ok::<_, std::convert::Infallible>(
                            Response::builder()
                                .header("x-served-by", name)
                                .header("x-seen-path", path)
                                .body(Full::new(Bytes::from(name)))
                                .unwrap(),
                        )
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Backend { addr, task }
    }
}

pub struct Answer {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn served_by(&self) -> &str {
        self.headers
            .get("x-served-by")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

pub fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Sends a request to `to` with the `Host` header `host`, as an application that uses the
/// proxy as its HTTP proxy does. Errors (refused, reset, timeout) come back as text.
pub async fn send(
    c: &HttpClient,
    method: &str,
    to: SocketAddr,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Answer, String> {
    let mut req = Request::builder()
        .method(method)
        .uri(format!("http://{to}{path}"))
        .header("host", host);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(Bytes::new())).unwrap();
    let resp = tokio::time::timeout(DEADLINE, c.request(req))
        .await
        .map_err(|_| format!("{method} {path} via {to}: no answer within {DEADLINE:?}"))?
        .map_err(|e| format!("{method} {path} via {to}: {e:?}"))?;
    let (parts, body) = resp.into_parts();
    let body = tokio::time::timeout(DEADLINE, body.collect())
        .await
        .map_err(|_| format!("{method} {path} via {to}: body not finished in time"))?
        .map_err(|e| format!("{method} {path} via {to}: body: {e}"))?
        .to_bytes();
    Ok(Answer {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}

/// Addresses on 127.0.0.1 that were free a moment ago: all bound at once so they differ,
/// then released for the child to take.
pub fn free_addrs<const N: usize>() -> [SocketAddr; N] {
    let listeners: Vec<std::net::TcpListener> = (0..N)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"))
        .collect();
    std::array::from_fn(|i| listeners[i].local_addr().unwrap())
}

// ---------------------------------------------------------------------------------------------
// Proxies
// ---------------------------------------------------------------------------------------------

/// `weft proxy` following `control` as the workload `name`, on the given outbound, inbound,
/// admin and health addresses (stats on any free port: several proxies run at once).
pub fn proxy_args(
    control: SocketAddr,
    name: &str,
    [outbound, inbound, admin, health]: [SocketAddr; 4],
) -> Vec<String> {
    [
        "proxy",
        "--control-plane",
        &control.to_string(),
        "--workload-name",
        name,
        "--labels",
        "app=productpage",
        "--outbound",
        &outbound.to_string(),
        "--inbound",
        &inbound.to_string(),
        "--admin",
        &admin.to_string(),
        "--health",
        &health.to_string(),
        "--stats",
        "127.0.0.1:0",
        "--envoy-stats",
        "127.0.0.1:0",
        "--access-log",
        "off",
        "--no-capture",
    ]
    .map(String::from)
    .to_vec()
}

/// A `weft proxy` on a config directory of its own that declares the service `app:9080` at
/// `backend`; its inbound side sends to `backend`.
pub struct AppProxy {
    pub weft: Weft,
    pub outbound: SocketAddr,
    pub inbound: SocketAddr,
    pub admin: SocketAddr,
    pub health: SocketAddr,
    pub stats: SocketAddr,
    _config: tempfile::TempDir,
}

impl AppProxy {
    /// Starts one with `extra` flags and waits until it is ready.
    pub async fn start(backend: SocketAddr, extra: &[&str]) -> AppProxy {
        let config = tempfile::tempdir().unwrap();
        std::fs::write(
            config.path().join("mesh.yaml"),
            format!(
                "apiVersion: v1\nkind: Service\nmetadata: {{name: app}}\nspec:\n  selector: {{app: app}}\n  ports: [{{name: http, port: 9080}}]\n---\n\
                 apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{name: app}}\nspec:\n  address: {}\n  labels: {{app: app}}\n  ports: {{http: {}}}\n",
                backend.ip(),
                backend.port()
            ),
        )
        .unwrap();
        let [outbound, inbound, admin, health, stats] = free_addrs::<5>();
        let mut args: Vec<String> = [
            "proxy",
            "--config",
            &config.path().display().to_string(),
            "--no-capture",
            "--inbound-target",
            &backend.to_string(),
            "--outbound",
            &outbound.to_string(),
            "--inbound",
            &inbound.to_string(),
            "--admin",
            &admin.to_string(),
            "--health",
            &health.to_string(),
            "--stats",
            &stats.to_string(),
            "--envoy-stats",
            "127.0.0.1:0",
        ]
        .map(String::from)
        .to_vec();
        args.extend(extra.iter().map(|a| a.to_string()));
        let weft = Weft::spawn(&args);
        let c = client();
        let ready = poll_until(DEADLINE, || async {
            let a = send(&c, "GET", health, "localhost", "/healthz/ready", &[]).await;
            a.ok().filter(|a| a.status == 200)
        })
        .await;
        assert!(
            ready.is_some(),
            "weft proxy never became ready\n{}",
            weft.output()
        );
        AppProxy {
            weft,
            outbound,
            inbound,
            admin,
            health,
            stats,
            _config: config,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Fixtures: reviews v1 and v2, subsets, a header route
// ---------------------------------------------------------------------------------------------

pub fn service_yaml(v1: &Backend, v2: &Backend) -> String {
    let mut out = "apiVersion: v1
kind: Service
metadata:
  name: reviews
spec:
  selector:
    app: reviews
  ports:
  - name: http
    port: 9080
"
    .to_string();
    for (version, b) in [("v1", v1), ("v2", v2)] {
        out.push_str(&format!(
            "---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: reviews-{version}
spec:
  address: {ip}
  labels:
    app: reviews
    version: {version}
  ports:
    http: {port}
",
            ip = b.addr.ip(),
            port = b.addr.port()
        ));
    }
    out
}

pub const DESTINATION_RULE: &str = "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
spec:
  host: reviews
  subsets:
  - name: v1
    labels:
      version: v1
  - name: v2
    labels:
      version: v2
";

pub const JASON_TO_V2: &str = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts:
  - reviews
  http:
  - name: jason
    match:
    - headers:
        end-user:
          exact: jason
    route:
    - destination:
        host: reviews
        subset: v2
  - name: everyone-else
    route:
    - destination:
        host: reviews
        subset: v1
";

pub const ALL_TO_V2: &str = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts:
  - reviews
  http:
  - route:
    - destination:
        host: reviews
        subset: v2
";

/// Waits until `GET path` on `addr` answers 200; false if the process exits first or 20 s
/// pass.
pub async fn answers_ok(weft: &mut Weft, addr: SocketAddr, path: &str) -> bool {
    let c = client();
    let ready = poll_until(Duration::from_secs(20), || {
        let (c, exited) = (&c, weft.exited());
        async move {
            if exited.is_some() {
                return Some(false);
            }
            let r = send(c, "GET", addr, "localhost", path, &[]).await;
            r.ok().filter(|a| a.status == 200).map(|_| true)
        }
    })
    .await;
    ready == Some(true)
}

/// Runs openssl in `dir`, as Istio's tasks make their certificates; fails with its stderr.
pub fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl (Debian's openssl package) makes the task's certificates");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The certificates of Istio's "Mutual TLS origination": example.com's CA, nginx's
/// (`my-nginx.mesh-external.svc.cluster.local.crt`, `.key`) and the client's
/// (`client.example.com.crt`, `.key`), made with the task's openssl commands, but each
/// leaf with a subjectAltName: rustls verifies names in the subjectAltName only (never the
/// CN, as browsers do) and takes X.509 v3 certificates only.
pub fn mutual_origination_certificates(dir: &std::path::Path) {
    example_ca(dir);
    for (serial, name) in [
        "my-nginx.mesh-external.svc.cluster.local",
        "client.example.com",
    ]
    .iter()
    .enumerate()
    {
        let san = format!("subjectAltName = DNS:{name}\n");
        example_leaf(dir, serial, name, "some organization", Some(&san));
    }
}

/// A certificate for `name` from example.com's CA in `dir` (`NAME.key`, `NAME.crt`), as
/// Istio's TLS tasks make one with openssl; `extensions`, when given, go in with
/// `-extfile`.
pub fn example_leaf(
    dir: &std::path::Path,
    serial: usize,
    name: &str,
    organization: &str,
    extensions: Option<&str>,
) {
    let (csr, key, crt, ext) = (
        format!("{name}.csr"),
        format!("{name}.key"),
        format!("{name}.crt"),
        format!("{name}.ext"),
    );
    openssl(
        dir,
        &[
            "req",
            "-out",
            &csr,
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &key,
            "-subj",
            &format!("/CN={name}/O={organization}"),
        ],
    );
    let serial = serial.to_string();
    let mut sign = vec![
        "x509",
        "-req",
        "-sha256",
        "-days",
        "365",
        "-CA",
        "example.com.crt",
        "-CAkey",
        "example.com.key",
        "-set_serial",
        &serial,
        "-in",
        &csr,
        "-out",
        &crt,
    ];
    if let Some(extensions) = extensions {
        std::fs::write(dir.join(&ext), extensions).unwrap();
        sign.extend(["-extfile", &ext]);
    }
    openssl(dir, &sign);
}

/// example.com's CA (`example.com.crt`, `.key`) in `dir`, as Istio's TLS tasks make it.
pub fn example_ca(dir: &std::path::Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-sha256",
            "-nodes",
            "-days",
            "365",
            "-newkey",
            "rsa:2048",
            "-subj",
            "/O=example Inc./CN=example.com",
            "-keyout",
            "example.com.key",
            "-out",
            "example.com.crt",
        ],
    );
}
