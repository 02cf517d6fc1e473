//! Inside a pod: what istio-init and the kubelet do. Runs as the first process of the pod's
//! own network and mount namespaces, once the sandbox has moved the pod's end of a veth
//! pair in: brings up the network, gives the pod its `/etc/hosts`, writes istio-init's
//! iptables rules, then runs and supervises the sidecar and the app (a pod outside the mesh:
//! the app alone).

use crate::state::StateDir;
use crate::stop::{StopSignals, POD_GRACE, PROXY_DRAIN};
use crate::supervise::{Supervised, Supervisor};
use crate::sys::{run, SysError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The mark the sidecar puts on its own connections; istio-init's rules let it through
/// (Istio exempts the proxy's uid 1337; the number is kept).
pub const PROXY_MARK: &str = "1337";
/// Ports the capture leaves alone inbound, as istio-init does: health, stats, admin.
const INBOUND_EXEMPT: [&str; 4] = ["15000", "15020", "15021", "15090"];

/// Everything a pod needs to start, written by the sandbox as `pods/<ns>.<name>.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSpec {
    pub name: String,
    pub namespace: String,
    pub workload: String,
    pub ip: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway_ip: Ipv4Addr,
    pub labels: BTreeMap<String, String>,
    pub service_account: String,
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
    /// An ingress gateway: no app, no capture, the proxy in gateway mode.
    pub gateway: bool,
    /// `false`: outside the mesh, the app alone (no proxy, no capture); the sandbox makes
    /// it an endpoint while it is ready.
    pub sidecar: bool,
    /// What the app listens on: the readiness probe of a pod without a sidecar.
    pub ports: Vec<u16>,
    /// A pod without a sidecar reaches Services through these, as through kube-proxy.
    #[serde(default)]
    pub service_routes: Vec<crate::plan::ServiceRoute>,
    /// Where the app serves metrics for the sidecar to merge (`127.0.0.1:9080/metrics`).
    #[serde(default)]
    pub app_metrics: Option<String>,
    pub hosts: String,
    /// The control plane's TLS port (15012): the CA, and discovery for proxies holding a
    /// certificate from it.
    pub control_plane: SocketAddr,
    /// The pod's credential (owner-only), which buys its sidecar a certificate for the
    /// pod's service account, as a Kubernetes pod's service-account token does.
    pub credential_file: PathBuf,
    /// The mesh's root certificate (Istio's `istio-ca-root-cert`).
    pub root_cert_file: PathBuf,
    /// The `weft` binary (also what `command: [weft, …]` runs).
    pub weft: PathBuf,
    pub state_root: PathBuf,
    /// Secrets the sandbox keeps as files under `secrets_dir` (`secret_volumes.rs`); the
    /// app finds the directory at `$SECRETS_DIR`.
    #[serde(default)]
    pub secret_volumes: Vec<String>,
    #[serde(default)]
    pub secrets_dir: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum PodError {
    #[error("pod {pod}: {source}")]
    Sys { pod: String, source: SysError },
    #[error("pod {pod}: its network interface never arrived from the sandbox")]
    NoInterface { pod: String },
    #[error("pod {pod}: {what}: {source}")]
    Io {
        pod: String,
        what: &'static str,
        source: std::io::Error,
    },
}

impl PodSpec {
    pub fn file(state: &StateDir, namespace: &str, name: &str) -> PathBuf {
        state.pods().join(format!("{namespace}.{name}.json"))
    }

    pub fn restarts_file(&self) -> PathBuf {
        self.state()
            .pods()
            .join(format!("{}.{}.restarts", self.namespace, self.name))
    }

    fn state(&self) -> StateDir {
        StateDir {
            root: self.state_root.clone(),
        }
    }
}

/// The pod's first process: sets the pod up, then supervises until SIGTERM or SIGINT,
/// then stops its processes as a kubelet does.
pub async fn run_pod(spec: PodSpec) -> Result<(), PodError> {
    let mut stop = StopSignals::install().map_err(|source| PodError::Io {
        pod: spec.name.clone(),
        what: "listening for SIGTERM",
        source,
    })?;
    let sys = |source| PodError::Sys {
        pod: spec.name.clone(),
        source,
    };
    wait_for_interface(&spec).await?;
    let address = format!("{}/{}", spec.ip, spec.prefix_len);
    let gateway = spec.gateway_ip.to_string();
    for args in [
        &["link", "set", "lo", "up"][..],
        &["addr", "add", &address, "dev", "eth0"],
        &["link", "set", "eth0", "up"],
        &["route", "add", "default", "via", &gateway],
    ] {
        run("ip", args).map_err(sys)?;
    }
    let hosts = spec
        .state()
        .pods()
        .join(format!("{}.{}.hosts", spec.namespace, spec.name));
    std::fs::write(&hosts, &spec.hosts).map_err(|source| PodError::Io {
        pod: spec.name.clone(),
        what: "writing its hosts file",
        source,
    })?;
    run(
        "mount",
        &["--bind", &hosts.display().to_string(), "/etc/hosts"],
    )
    .map_err(sys)?;
    // The pod's machine trusts the public CA, for programs (curl) that read the system's
    // bundle by its path rather than by SSL_CERT_FILE.
    let bundle = crate::public_ca::bundle_file(&spec.state());
    if std::path::Path::new(crate::public_ca::SYSTEM_BUNDLE).is_file() && bundle.is_file() {
        run(
            "mount",
            &[
                "--bind",
                &bundle.display().to_string(),
                crate::public_ca::SYSTEM_BUNDLE,
            ],
        )
        .map_err(sys)?;
    }
    if spec.sidecar && !spec.gateway {
        capture(&gateway).map_err(sys)?;
    }
    if !spec.sidecar {
        kube_proxy(&spec.service_routes).map_err(sys)?;
    }
    let restarts = Arc::new(AtomicU32::new(0));
    // The pod lives as long as its proxy, or its app when it has no proxy.
    let (proxy, app) = if spec.sidecar {
        let proxy = Supervisor::start(proxy(&spec), restarts.clone());
        let app = if spec.gateway {
            None
        } else {
            // As Istio's holdApplicationUntilProxyStarts: the app's first calls find a
            // configured proxy.
            tokio::select! {
                _ = wait_ready(
                    "127.0.0.1:15021".parse().expect("static"),
                    Duration::from_secs(30),
                ) => {}
                _ = stop.recv() => {
                    terminate(Some(proxy), None).await;
                    return Ok(());
                }
            }
            Some(Supervisor::start(app(&spec), restarts.clone()))
        };
        (Some(proxy), app)
    } else {
        (None, Some(Supervisor::start(app(&spec), restarts.clone())))
    };
    let mut reported = u32::MAX;
    loop {
        let now = restarts.load(Ordering::Relaxed);
        if now != reported {
            let _ = crate::state::write_atomic(&spec.restarts_file(), now.to_string().as_bytes());
            reported = now;
        }
        if proxy
            .as_ref()
            .or(app.as_ref())
            .is_some_and(|main| main.is_finished())
        {
            return Ok(());
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = stop.recv() => {
                terminate(proxy, app).await;
                return Ok(());
            }
        }
    }
}

/// As a kubelet: SIGTERM to every process at once, so the sidecar drains while the app
/// finishes; SIGKILL for what outlives the grace period. Once the app has exited the
/// sidecar has nothing left to drain for: a second SIGTERM ends its drain, as Istio's
/// native sidecars are stopped only after the app.
async fn terminate(proxy: Option<Supervisor>, app: Option<Supervisor>) {
    let deadline = tokio::time::Instant::now() + POD_GRACE;
    for p in proxy.iter().chain(app.iter()) {
        p.terminate();
    }
    if let Some(app) = app {
        app.stopped(deadline).await;
        if let Some(proxy) = &proxy {
            // Signals do not queue: a second SIGTERM that arrives before the proxy has
            // handled the first merges with it. Draining fails readiness, so once 15021
            // says not ready the first has landed.
            let health = "127.0.0.1:15021".parse().expect("static");
            while is_ready(health).await && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            proxy.terminate();
        }
    }
    if let Some(proxy) = proxy {
        proxy.stopped(deadline).await;
    }
}

async fn wait_for_interface(spec: &PodSpec) -> Result<(), PodError> {
    for _ in 0..500 {
        if run("ip", &["link", "show", "eth0"]).is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(PodError::NoInterface {
        pod: spec.name.clone(),
    })
}

/// One rule of the pod's nat table (`-w`: waits for the xtables lock).
fn nat(args: &[&str]) -> Result<(), SysError> {
    let mut all = vec!["-w", "-t", "nat"];
    all.extend_from_slice(args);
    run("iptables", &all).map(drop)
}

/// istio-init's rules: inbound TCP to 15006 but for the proxy's own ports; outbound TCP to
/// 15001 but for the proxy's own (marked) connections, loopback and the control plane.
fn capture(control_plane_host: &str) -> Result<(), SysError> {
    nat(&["-N", "ISTIO_INBOUND"])?;
    nat(&["-A", "PREROUTING", "-p", "tcp", "-j", "ISTIO_INBOUND"])?;
    for port in INBOUND_EXEMPT {
        nat(&[
            "-A",
            "ISTIO_INBOUND",
            "-p",
            "tcp",
            "--dport",
            port,
            "-j",
            "RETURN",
        ])?;
    }
    nat(&[
        "-A",
        "ISTIO_INBOUND",
        "-p",
        "tcp",
        "-j",
        "REDIRECT",
        "--to-ports",
        "15006",
    ])?;
    nat(&["-N", "ISTIO_OUTPUT"])?;
    nat(&["-A", "OUTPUT", "-p", "tcp", "-j", "ISTIO_OUTPUT"])?;
    nat(&[
        "-A",
        "ISTIO_OUTPUT",
        "-m",
        "mark",
        "--mark",
        PROXY_MARK,
        "-j",
        "RETURN",
    ])?;
    nat(&["-A", "ISTIO_OUTPUT", "-o", "lo", "-j", "RETURN"])?;
    let control_plane = format!("{control_plane_host}/32");
    nat(&["-A", "ISTIO_OUTPUT", "-d", &control_plane, "-j", "RETURN"])?;
    nat(&[
        "-A",
        "ISTIO_OUTPUT",
        "-p",
        "tcp",
        "-j",
        "REDIRECT",
        "--to-ports",
        "15001",
    ])
}

/// kube-proxy's iptables mode for a pod outside the mesh: a connection to a Service's
/// clusterIP and port is DNATed to one of its pods, chosen at random with equal chances
/// (each rule takes 1/n of what the rules before it left).
fn kube_proxy(routes: &[crate::plan::ServiceRoute]) -> Result<(), SysError> {
    nat(&["-N", "KUBE-SERVICES"])?;
    nat(&["-A", "OUTPUT", "-p", "tcp", "-j", "KUBE-SERVICES"])?;
    for route in routes {
        let (vip, port) = (format!("{}/32", route.vip), route.port.to_string());
        let n = route.endpoints.len();
        for (i, endpoint) in route.endpoints.iter().enumerate() {
            let to = endpoint.to_string();
            let probability = format!("{:.5}", 1.0 / (n - i) as f64);
            let mut rule = vec![
                "-A",
                "KUBE-SERVICES",
                "-d",
                &vip,
                "-p",
                "tcp",
                "--dport",
                &port,
            ];
            if i + 1 < n {
                rule.extend([
                    "-m",
                    "statistic",
                    "--mode",
                    "random",
                    "--probability",
                    &probability,
                ]);
            }
            rule.extend(["-j", "DNAT", "--to-destination", &to]);
            nat(&rule)?;
        }
    }
    Ok(())
}

fn proxy(spec: &PodSpec) -> Supervised {
    let labels: Vec<String> = spec
        .labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let mut args: Vec<String> = [
        "proxy",
        "--control-plane",
        &format!("https://{}", spec.control_plane),
        "--pod-name",
        &spec.name,
        "--workload-name",
        &spec.workload,
        "--namespace",
        &spec.namespace,
        "--labels",
        &labels.join(","),
        "--service-account",
        &spec.service_account,
        "--address",
        &spec.ip.to_string(),
        "--upstream-mark",
        PROXY_MARK,
        "--credential-file",
        &spec.credential_file.display().to_string(),
        "--root-cert",
        &spec.root_cert_file.display().to_string(),
        "--drain-duration",
        &format!("{}ms", PROXY_DRAIN.as_millis()),
    ]
    .map(String::from)
    .to_vec();
    if let Some(at) = &spec.app_metrics {
        args.extend(["--app-metrics".into(), at.clone()]);
    }
    if spec.gateway {
        args.extend([
            "--gateway".into(),
            "--gateway-address".into(),
            "0.0.0.0".into(),
        ]);
    }
    Supervised {
        name: format!("{}/{} proxy", spec.namespace, spec.name),
        program: spec.weft.clone(),
        args,
        env: vec![("WEFT_LOG".into(), "info".into())],
        log: spec.state().log_file(&spec.namespace, &spec.name, "proxy"),
    }
}

fn app(spec: &PodSpec) -> Supervised {
    let (program, args) = spec.command.split_first().expect("checked: a command");
    // `weft …` means this weft, wherever it is installed.
    let program = if program == "weft" {
        spec.weft.clone()
    } else {
        PathBuf::from(program)
    };
    let mut env: Vec<(String, String)> = vec![
        ("HOSTNAME".into(), spec.name.clone()),
        ("POD_NAME".into(), spec.name.clone()),
        ("POD_NAMESPACE".into(), spec.namespace.clone()),
        ("INSTANCE_IP".into(), spec.ip.to_string()),
        ("SERVICE_ACCOUNT".into(), spec.service_account.clone()),
    ];
    env.extend(spec.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    let vars: BTreeMap<&str, &str> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let args = args.iter().map(|a| expand(a, &vars)).collect();
    Supervised {
        name: format!("{}/{} app", spec.namespace, spec.name),
        program,
        args,
        env,
        log: spec.state().log_file(&spec.namespace, &spec.name, "app"),
    }
}

/// A command argument with `$(VAR)` replaced by the container's variable, as Kubernetes
/// expands a container's command and args: `$$` is a literal `$`, and a reference to a
/// variable that is not set stays as written.
fn expand(arg: &str, vars: &BTreeMap<&str, &str>) -> String {
    let mut out = String::with_capacity(arg.len());
    let mut rest = arg;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some((name, tail)) = after
            .strip_prefix('(')
            .and_then(|inner| inner.split_once(')'))
            .filter(|(name, _)| vars.contains_key(name))
        {
            out.push_str(vars[name]);
            rest = tail;
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// Polls `GET /healthz/ready` until it answers 200 or `within` passes.
pub async fn wait_ready(addr: SocketAddr, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        if is_ready(addr).await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Whether the pod is ready: its sidecar's readiness endpoint answers 200, or, without a
/// sidecar, each of its ports accepts a connection (the kubelet's tcpSocket probe; a pod
/// without ports is ready once started, as a pod without probes).
pub async fn pod_ready(spec: &PodSpec) -> bool {
    if spec.sidecar {
        return is_ready((spec.ip, 15021).into()).await;
    }
    for &port in &spec.ports {
        let connect = tokio::net::TcpStream::connect((spec.ip, port));
        if !matches!(
            tokio::time::timeout(Duration::from_secs(1), connect).await,
            Ok(Ok(_))
        ) {
            return false;
        }
    }
    true
}

/// One readiness probe, as the kubelet sends it.
pub async fn is_ready(addr: SocketAddr) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let probe = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(b"GET /healthz/ready HTTP/1.0\r\n\r\n").await?;
        let mut head = [0u8; 12];
        s.read_exact(&mut head).await?;
        Ok::<bool, std::io::Error>(&head[9..12] == b"200")
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(1), probe).await,
        Ok(Ok(true))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_expand_variables_as_kubernetes_does() {
        let vars = BTreeMap::from([("SECRETS_DIR", "/s"), ("POD_NAME", "p")]);
        for (arg, want) in [
            ("$(SECRETS_DIR)/certs/tls.crt", "/s/certs/tls.crt"),
            ("$(POD_NAME)-$(POD_NAME)", "p-p"),
            ("$$(SECRETS_DIR)", "$(SECRETS_DIR)"),
            ("$(UNSET)/x", "$(UNSET)/x"),
            ("cost: $5 $(", "cost: $5 $("),
            ("plain", "plain"),
        ] {
            assert_eq!(expand(arg, &vars), want, "{arg}");
        }
    }
}
