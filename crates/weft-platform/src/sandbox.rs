//! The sandbox: the first process of the platform's own network, mount and PID namespaces
//! (and user namespace, rootless). It lays the bridge, runs the control plane, starts one
//! pod per replica, and keeps `status.json` current. On SIGTERM it stops its pods (their
//! sidecars drain) and exits; when it exits the kernel tears down every pod, link and rule
//! with its namespaces: nothing is left behind.

use crate::addons::{Prometheus, PROMETHEUS_PORT, PROMETHEUS_SOCKET};
use crate::forward::unix_to_tcp;
use crate::mesh;
use crate::plan::{self, Plan};
use crate::pod::{pod_ready, PodSpec};
use crate::state::{write_atomic, PodStatus, StateDir, Status};
use crate::stop::{StopSignals, SANDBOX_GRACE};
use crate::sys::run;
use crate::PlatformError;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::process::{Child, Command};
use weft_control::registrations::announced_workload;
use weft_control::{ControlOptions, ControlPlane};
use weft_dashboard::{Dashboard, DashboardOptions};
use weft_discovery::discovery::Hello;
use weft_discovery::wire::Key;

pub const BRIDGE: &str = "weft0";
pub const CONTROL_SOCKET: &str = "control.sock";
/// The built-in trace collector's Zipkin API, forwarded to the host.
pub const ZIPKIN_SOCKET: &str = "zipkin.sock";
pub const DASHBOARD_SOCKET: &str = "dashboard.sock";

pub fn gateway_socket(port: u16) -> String {
    format!("gateway-{port}.sock")
}

pub struct SandboxOptions {
    pub state: StateDir,
    pub mesh_file: PathBuf,
    pub weft: PathBuf,
    /// `root` or `rootless`, for `weft status`.
    pub mode: String,
    /// The Prometheus addon, when asked for.
    pub prometheus: Option<Prometheus>,
    /// How often the dashboard's aggregator scrapes the pods.
    pub scrape_interval: Duration,
}

pub async fn run_sandbox(opts: SandboxOptions) -> Result<(), PlatformError> {
    // First: PID 1 of a namespace gets no signal it has no handler for.
    let mut stop = StopSignals::install().map_err(|source| PlatformError::Io {
        what: "listening for SIGTERM",
        source,
    })?;
    let mesh = mesh::load(&opts.mesh_file)?;
    let plan = plan::plan(&mesh)?;
    let bridge = format!("{}/{}", plan.bridge_ip, plan.pod_range.prefix_len());
    run("ip", &["link", "set", "lo", "up"])?;
    run("ip", &["link", "add", BRIDGE, "type", "bridge"])?;
    run("ip", &["addr", "add", &bridge, "dev", BRIDGE])?;
    run("ip", &["link", "set", BRIDGE, "up"])?;

    // Only 15012: pods and the host's CLI both come with certificates.
    let control_addr = SocketAddr::from((plan.bridge_ip, weft_discovery::SECURE_CONTROL_PORT));
    let control = ControlPlane::start(ControlOptions {
        monitoring: (plan.bridge_ip, weft_discovery::MONITORING_PORT).into(),
        zipkin: Some((plan.bridge_ip, weft_control::collector::ZIPKIN_PORT).into()),
        grpc_tls: Some(control_addr),
        ..ControlOptions::new(opts.state.config())
    })
    .await?;
    let restored = restored(&control, &plan);
    // A mesh of Workloads alone has no config to apply (and an empty apply is refused).
    if !plan.resources.is_empty() {
        control
            .state
            .apply(&opts.mesh_file.display().to_string(), &as_yaml(&plan))
            .await?;
    }
    let zipkin = (plan.bridge_ip, weft_control::collector::ZIPKIN_PORT).into();
    // On the sandbox's loopback: the host's forward is the way in.
    let dashboard = Dashboard::start(
        DashboardOptions {
            scrape_interval: opts.scrape_interval,
            ..DashboardOptions::default()
        },
        &control,
    )
    .await?;
    let mut forwarders = vec![
        unix_to_tcp(opts.state.root.join(CONTROL_SOCKET), control_addr).map_err(io)?,
        unix_to_tcp(opts.state.root.join(ZIPKIN_SOCKET), zipkin).map_err(io)?,
        unix_to_tcp(opts.state.root.join(DASHBOARD_SOCKET), dashboard.addr).map_err(io)?,
    ];
    let monitoring = (plan.bridge_ip, weft_discovery::MONITORING_PORT).into();
    let _prometheus = match &opts.prometheus {
        Some(p) => {
            let child = p.start(&opts.state, &plan, monitoring)?;
            let socket = opts.state.root.join(PROMETHEUS_SOCKET);
            forwarders
                .push(unix_to_tcp(socket, ([127, 0, 0, 1], PROMETHEUS_PORT).into()).map_err(io)?);
            Some(child)
        }
        None => None,
    };

    // Istio's `istio-ca-root-cert`: what every sidecar trusts.
    crate::state::write_atomic(
        &root_cert_file(&opts.state),
        control.ca.root_pem().as_bytes(),
    )
    .map_err(|source| PlatformError::Io {
        what: "writing the mesh's root certificate",
        source,
    })?;
    let public_ca = crate::public_ca::PublicCa::prepare(&opts.state)?;
    let mut pods: Vec<(Child, PodSpec)> = Vec::new();
    for (index, pod) in plan.pods.iter().enumerate() {
        let spec = pod_spec(&opts, &plan, pod, &control, &public_ca)?;
        for port in pod.workload.spec.gateway.iter().flat_map(|g| &g.host_ports) {
            let socket = opts.state.root.join(gateway_socket(*port));
            forwarders.push(unix_to_tcp(socket, (pod.ip, *port).into()).map_err(io)?);
        }
        pods.push((start_pod(&opts, &spec, index).await?, spec));
    }
    tracing::info!(pods = pods.len(), "mesh up");
    let mut endpoints = OutsideEndpoints::default();
    let mut secret_volumes = crate::secret_volumes::SecretVolumes::default();
    loop {
        secret_volumes.follow(&control, pods.iter().map(|(_, spec)| spec));
        let mut ready = Vec::with_capacity(pods.len());
        for (_, spec) in &pods {
            ready.push(pod_ready(spec).await);
        }
        endpoints.follow(&control, &pods, &ready);
        write_status(&opts, &control_addr, &pods, &ready, &restored);
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = stop.recv() => break,
        }
    }
    stop_pods(&mut pods).await;
    drop((dashboard, control, forwarders));
    Ok(())
}

/// SIGTERM to every pod at once, then SIGKILL for those that outlive their grace period.
/// The control plane stays up meanwhile: draining sidecars keep their config.
async fn stop_pods(pods: &mut [(Child, PodSpec)]) {
    let deadline = tokio::time::Instant::now() + SANDBOX_GRACE;
    for (child, _) in pods.iter() {
        if let Some(pid) = child.id() {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
        }
    }
    for (child, spec) in pods.iter_mut() {
        if tokio::time::timeout_at(deadline, child.wait())
            .await
            .is_err()
        {
            tracing::warn!(pod = %spec.name, "still running at the end of its grace period: killing it");
            let _ = child.kill().await;
        }
    }
}

fn io(e: std::io::Error) -> PlatformError {
    PlatformError::Io {
        what: "opening the sandbox's sockets",
        source: e,
    }
}

/// The mesh file's config, with the planned clusterIPs, as documents to apply.
fn as_yaml(plan: &Plan) -> String {
    plan.resources
        .iter()
        .map(|r| serde_norway::to_string(r).expect("resources serialize"))
        .collect::<Vec<_>>()
        .join("---\n")
}

/// The pod as its processes need it; a pod with a proxy gets a fresh credential for its
/// service account (an old one would verify too, but a new start need not find the old
/// file).
fn pod_spec(
    opts: &SandboxOptions,
    plan: &Plan,
    pod: &plan::Pod,
    control: &ControlPlane,
    public_ca: &crate::public_ca::PublicCa,
) -> Result<PodSpec, PlatformError> {
    let spec = &pod.workload.spec;
    let mut env = spec.env.clone();
    let secrets_dir =
        crate::secret_volumes::secrets_dir(&opts.state.pods(), &pod.namespace, &pod.name);
    if !spec.secret_volumes.is_empty() {
        env.insert("SECRETS_DIR".into(), secrets_dir.display().to_string());
    }
    if spec.public_certificate {
        let (cert, key) = public_ca.issue(&pod.namespace, &pod.name, &spec.hostnames)?;
        env.insert("TLS_CERT_FILE".into(), cert.display().to_string());
        env.insert("TLS_KEY_FILE".into(), key.display().to_string());
    }
    let credential_file = opts
        .state
        .pods()
        .join(format!("{}.{}.credential", pod.namespace, pod.name));
    if spec.sidecar {
        write_credential(control, pod, &spec.service_account, &credential_file)?;
    }
    Ok(PodSpec {
        name: pod.name.clone(),
        namespace: pod.namespace.clone(),
        workload: pod.workload.name.clone(),
        ip: pod.ip,
        prefix_len: plan.pod_range.prefix_len(),
        gateway_ip: plan.bridge_ip,
        labels: spec.labels.clone(),
        service_account: spec.service_account.clone(),
        command: spec.command.clone(),
        env,
        gateway: spec.gateway.is_some(),
        sidecar: spec.sidecar,
        ports: spec.ports.clone(),
        service_routes: if spec.sidecar {
            Vec::new()
        } else {
            plan.service_routes()
        },
        // Checked when the mesh file was read.
        app_metrics: spec.app_metrics().ok().flatten(),
        hosts: pod.hosts_file(plan.bridge_ip, &plan.services, &plan.external),
        control_plane: control
            .grpc_tls_addr
            .expect("the sandbox's control plane serves 15012"),
        credential_file,
        root_cert_file: root_cert_file(&opts.state),
        weft: opts.weft.clone(),
        state_root: opts.state.root.clone(),
        secret_volumes: spec.secret_volumes.clone(),
        secrets_dir,
    })
}

fn root_cert_file(state: &crate::state::StateDir) -> std::path::PathBuf {
    state.root.join("root-cert.pem")
}

fn write_credential(
    control: &ControlPlane,
    pod: &plan::Pod,
    service_account: &str,
    file: &std::path::Path,
) -> Result<(), PlatformError> {
    let credential = control
        .issue_pod_credential(&weft_security::credential::PodClaims {
            namespace: pod.namespace.clone(),
            service_account: service_account.to_string(),
            pod: pod.name.clone(),
        })
        .map_err(|source| PlatformError::Credential {
            pod: pod.name.clone(),
            source,
        })?;
    weft_security::secret_file::write_secret(file, credential.as_bytes()).map_err(|source| {
        PlatformError::Secret {
            pod: pod.name.clone(),
            source,
        }
    })
}

/// Starts the pod's first process in new network and mount namespaces and hands it its end
/// of a veth pair on the bridge.
async fn start_pod(
    opts: &SandboxOptions,
    spec: &PodSpec,
    index: usize,
) -> Result<Child, PlatformError> {
    let file = PodSpec::file(&opts.state, &spec.namespace, &spec.name);
    let json = serde_json::to_vec_pretty(spec).expect("specs serialize");
    write_atomic(&file, &json).map_err(|source| PlatformError::Io {
        what: "writing a pod's spec",
        source,
    })?;
    let log = log_file(&opts.state.log_file(&spec.namespace, &spec.name, "pod"))?;
    let child = Command::new("unshare")
        .args(["--net", "--mount", "--"])
        .arg(&opts.weft)
        .args(["platform", "pod", "--spec"])
        .arg(&file)
        // Every process of the pod, sidecar and app, trusts the public CA.
        .env("SSL_CERT_FILE", crate::public_ca::bundle_file(&opts.state))
        .stdout(log.try_clone().map_err(|source| PlatformError::Io {
            what: "opening a log",
            source,
        })?)
        .stderr(log)
        // Stopped by the sandbox's SIGTERM alone, in order (see `stop_pods`).
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| PlatformError::Io {
            what: "starting a pod with unshare (util-linux)",
            source,
        })?;
    let pid = child.id().expect("a child that just started has a pid");
    own_network_namespace(pid, &spec.name).await?;
    let pid = pid.to_string();
    let host_end = format!("wp{index}");
    run(
        "ip",
        &[
            "link", "add", &host_end, "type", "veth", "peer", "name", "eth0", "netns", &pid,
        ],
    )?;
    run("ip", &["link", "set", &host_end, "master", BRIDGE])?;
    run("ip", &["link", "set", &host_end, "up"])?;
    Ok(child)
}

/// Waits until `unshare` has given the pod its own network namespace: a veth end moved to
/// the pod's PID before that would land in the sandbox's.
async fn own_network_namespace(pid: u32, pod: &str) -> Result<(), PlatformError> {
    let ours = std::fs::read_link("/proc/self/ns/net").ok();
    for _ in 0..500 {
        let theirs = std::fs::read_link(format!("/proc/{pid}/ns/net")).ok();
        if theirs.is_some() && theirs != ours {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Err(PlatformError::Pod(crate::pod::PodError::NoInterface {
        pod: pod.to_string(),
    }))
}

fn log_file(path: &Path) -> Result<std::fs::File, PlatformError> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|source| PlatformError::Io {
            what: "opening a log",
            source,
        })
}

/// What an earlier run applied that the mesh file does not define (`Kind ns/name`).
fn restored(control: &ControlPlane, plan: &Plan) -> Vec<String> {
    let defined: std::collections::BTreeSet<String> =
        plan.resources.iter().map(|r| r.display_name()).collect();
    control
        .state
        .mesh()
        .config_objects()
        .map(|(_, o)| o.resource.display_name())
        .filter(|name| !defined.contains(name))
        .collect()
}

/// Kubernetes' endpoints controller for pods outside the mesh: a labelled pod without a
/// sidecar is an endpoint of the Services that select it while it is ready, with no
/// `security.istio.io/tlsMode` label, so mesh clients reach it in plaintext (pods with a
/// sidecar announce themselves).
#[derive(Default)]
struct OutsideEndpoints {
    /// By pod index: whether it is announced now; absent before the first look.
    announced: std::collections::HashMap<usize, bool>,
}

impl OutsideEndpoints {
    fn follow(&mut self, control: &ControlPlane, pods: &[(Child, PodSpec)], ready: &[bool]) {
        let outside = pods
            .iter()
            .enumerate()
            .filter(|(_, (_, s))| !s.sidecar && !s.labels.is_empty());
        for (index, (_, spec)) in outside {
            let ready = ready[index];
            if self.announced.get(&index) == Some(&ready) {
                continue;
            }
            let hello = Hello {
                name: spec.name.clone(),
                namespace: spec.namespace.clone(),
                address: spec.ip.to_string(),
                labels: spec.labels.clone().into_iter().collect(),
                service_account: spec.service_account.clone(),
                workload_name: spec.workload.clone(),
                ..Hello::default()
            };
            if ready {
                control.state.announce(&hello);
            } else if let Some(workload) = announced_workload(&hello) {
                // Also on the first look: an earlier run's entry for a pod not ready yet.
                control.state.withdraw(Key::of(&workload));
            }
            self.announced.insert(index, ready);
        }
    }
}

fn write_status(
    opts: &SandboxOptions,
    control: &SocketAddr,
    pods: &[(Child, PodSpec)],
    ready: &[bool],
    restored: &[String],
) {
    let mut status = Status {
        mode: opts.mode.clone(),
        control_plane: control.to_string(),
        pods: Vec::new(),
        restored: restored.to_vec(),
    };
    for ((_, spec), ready) in pods.iter().zip(ready) {
        let restarts = std::fs::read_to_string(spec.restarts_file())
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0);
        status.pods.push(PodStatus {
            name: spec.name.clone(),
            namespace: spec.namespace.clone(),
            workload: spec.workload.clone(),
            ip: spec.ip.to_string(),
            ready: *ready,
            restarts,
        });
    }
    let json = serde_json::to_vec_pretty(&status).expect("status serializes");
    let _ = write_atomic(&opts.state.status_file(), &json);
}
