//! The processes a comparison runs: the upstream, a Weft pair and an Envoy pair, each pair a
//! client-side and a server-side proxy on loopback, configured to do the same work: a
//! header match, two subsets by label, Istio's default retry policy, Istio's metrics, and
//! Istio's default 1 % trace sampling with spans sent to one Zipkin collector (the control
//! plane's built-in one) as Istio's proxies send them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const UPSTREAM: &str = "127.0.0.21:8080";
const WEFT_CLIENT: &str = "127.0.0.22";
const WEFT_SERVER: &str = "127.0.0.23";
const ENVOY_CLIENT: &str = "127.0.0.24";
const ENVOY_SERVER: &str = "127.0.0.25";
/// The Zipkin collector both pairs report spans to.
const COLLECTOR: &str = "127.0.0.26";
/// Istio's default sampling percentage.
const SAMPLING: f64 = 1.0;
/// The service name every variant's requests carry.
pub const AUTHORITY: &str = "bench.default.svc.cluster.local:8080";

/// A child process that is killed when dropped.
pub struct Process {
    pub name: &'static str,
    child: Child,
}

impl Process {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    #[error("cannot start {what}: {source}")]
    Spawn {
        what: String,
        source: std::io::Error,
    },
    #[error("{0} did not start listening within 10 s; see its log in {1}")]
    NotListening(&'static str, PathBuf),
    #[error("cannot write {0}: {1}")]
    Write(PathBuf, std::io::Error),
}

fn spawn(name: &'static str, mut cmd: Command, logs: &Path) -> Result<Process, TopologyError> {
    let log = logs.join(format!("{name}.log"));
    let file = std::fs::File::create(&log).map_err(|e| TopologyError::Write(log.clone(), e))?;
    let err = file
        .try_clone()
        .map_err(|e| TopologyError::Write(log.clone(), e))?;
    let child = cmd
        .stdout(Stdio::from(file))
        .stderr(Stdio::from(err))
        .stdin(Stdio::null())
        .spawn()
        .map_err(|source| TopologyError::Spawn {
            what: format!("{name} ({cmd:?})"),
            source,
        })?;
    Ok(Process { name, child })
}

/// Waits until something accepts connections at `addr`.
pub async fn wait_listening(
    name: &'static str,
    addr: &str,
    logs: &Path,
) -> Result<(), TopologyError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < deadline {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(TopologyError::NotListening(
        name,
        logs.join(format!("{name}.log")),
    ))
}

fn write(path: PathBuf, text: &str) -> Result<(), TopologyError> {
    std::fs::write(&path, text).map_err(|e| TopologyError::Write(path, e))
}

/// Istio config for the Weft pair: the service's endpoints are the server-side proxy's
/// inbound port, as a pod's address would be.
pub fn weft_config() -> String {
    format!(
        "apiVersion: v1
kind: ConfigMap
metadata: {{name: istio, namespace: istio-system}}
data:
  mesh: |-
    defaultConfig:
      tracing:
        sampling: {SAMPLING}
        zipkin: {{address: \"{COLLECTOR}:9411\"}}
---
apiVersion: v1
kind: Service
metadata:
  name: bench
spec:
  selector: {{app: bench}}
  ports:
  - {{name: http, port: 8080}}
  - {{name: grpc, port: 8081}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: bench-v1
spec:
  address: {WEFT_SERVER}
  labels: {{app: bench, version: v1}}
  ports: {{http: 15006, grpc: 15006}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: bench-v2
spec:
  address: {WEFT_SERVER}
  labels: {{app: bench, version: v2}}
  ports: {{http: 15006, grpc: 15006}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: bench
spec:
  host: bench
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: bench
spec:
  hosts: [bench]
  http:
  - match:
    - headers:
        end-user: {{exact: jason}}
    route:
    - destination: {{host: bench, subset: v2}}
  - route:
    - destination: {{host: bench, subset: v1}}
"
    )
}

/// The same work in Envoy's static bootstrap: one route table with the header match, a
/// cluster per subset, Istio's default retry policy; the server side forwards to the app.
fn envoy_bootstrap(listen: &str, admin: &str, client_side: bool) -> String {
    let upstream_protocol = "
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        \"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        use_downstream_protocol_config:
          http_protocol_options: {}
          http2_protocol_options: {}";
    let cluster = |name: &str, target: &str| {
        let (host, port) = target.split_once(':').expect("host:port");
        format!(
            "  - name: {name}
    type: STATIC
    connect_timeout: 10s
    load_assignment:
      cluster_name: {name}
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: {{address: {host}, port_value: {port}}}{upstream_protocol}
"
        )
    };
    let (routes, clusters) = if client_side {
        let retry = "
                  retry_policy:
                    retry_on: connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes
                    retriable_status_codes: [503]
                    num_retries: 2
                    retry_host_predicate:
                    - name: envoy.retry_host_predicates.previous_hosts
                      typed_config:
                        \"@type\": type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate
                    host_selection_retry_max_attempts: 5";
        let server = format!("{ENVOY_SERVER}:10001");
        (
            format!(
                "
              - match:
                  prefix: /
                  headers:
                  - name: end-user
                    string_match: {{exact: jason}}
                route:
                  cluster: outbound|8080|v2|bench{retry}
              - match: {{prefix: /}}
                route:
                  cluster: outbound|8080|v1|bench{retry}"
            ),
            cluster("outbound|8080|v1|bench", &server)
                + &cluster("outbound|8080|v2|bench", &server),
        )
    } else {
        (
            "
              - match: {prefix: /}
                route:
                  cluster: inbound|8080||"
                .to_string(),
            cluster("inbound|8080||", UPSTREAM),
        )
    };
    let (host, port) = listen.split_once(':').expect("host:port");
    let (admin_host, admin_port) = admin.split_once(':').expect("host:port");
    format!(
        "admin:
  address:
    socket_address: {{address: {admin_host}, port_value: {admin_port}}}
static_resources:
  listeners:
  - name: main
    address:
      socket_address: {{address: {host}, port_value: {port}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          \"@type\": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: main
          codec_type: AUTO
          tracing:
            random_sampling: {{value: {SAMPLING}}}
            provider:
              name: envoy.tracers.zipkin
              typed_config:
                \"@type\": type.googleapis.com/envoy.config.trace.v3.ZipkinConfig
                collector_cluster: zipkin
                collector_endpoint: /api/v2/spans
                collector_endpoint_version: HTTP_JSON
                trace_id_128bit: true
                shared_span_context: false
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              \"@type\": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
          route_config:
            virtual_hosts:
            - name: bench
              domains: [\"*\"]
              routes:{routes}
  clusters:
{clusters}  - name: zipkin
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: zipkin
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: {{address: {COLLECTOR}, port_value: 9411}}
"
    )
}

/// Everything one comparison runs, started and ready.
pub struct Topology {
    pub upstream: Process,
    pub collector: Process,
    pub weft: [Process; 2],
    pub envoy: Option<[Process; 2]>,
    pub weft_entry: SocketAddr,
    pub envoy_entry: SocketAddr,
}

pub async fn start(
    weft_bin: &Path,
    envoy_bin: Option<&Path>,
    workers: usize,
    dir: &Path,
) -> Result<Topology, TopologyError> {
    for sub in ["weft-config", "collector-config"] {
        std::fs::create_dir_all(dir.join(sub))
            .map_err(|e| TopologyError::Write(dir.to_path_buf(), e))?;
    }
    write(dir.join("weft-config/bench.yaml"), &weft_config())?;
    let mut upstream = Command::new(weft_bin);
    upstream.args(["bench", "server", "--listen", UPSTREAM]);
    let upstream = spawn("upstream", upstream, dir)?;
    let mut collector = Command::new(weft_bin);
    collector
        .arg("control")
        .arg("--config-dir")
        .arg(dir.join("collector-config"))
        .args(["--grpc", &format!("{COLLECTOR}:15010")])
        .args(["--monitoring", &format!("{COLLECTOR}:15014")])
        .args(["--grpc-tls", &format!("{COLLECTOR}:15012")])
        .args(["--zipkin", &format!("{COLLECTOR}:9411")])
        .arg("--no-dashboard")
        // Its admin token stays in the run's directory, not the user's credentials.
        .env("WEFT_HOME", dir)
        .env("WEFT_LOG", "warn");
    let collector = spawn("collector", collector, dir)?;
    let weft = |name: &'static str, ip: &str, inbound_target: Option<&str>| {
        let mut cmd = Command::new(weft_bin);
        cmd.arg("proxy")
            .arg("--config")
            .arg(dir.join("weft-config"))
            .args([
                "--no-capture",
                "--access-log",
                "off",
                "--workers",
                &workers.to_string(),
            ])
            .args([
                "--outbound",
                &format!("{ip}:15001"),
                "--inbound",
                &format!("{ip}:15006"),
            ])
            .args([
                "--admin",
                &format!("{ip}:15000"),
                "--health",
                &format!("{ip}:15021"),
                "--stats",
                &format!("{ip}:15020"),
                "--envoy-stats",
                &format!("{ip}:15090"),
            ])
            .env("WEFT_LOG", "warn");
        if let Some(t) = inbound_target {
            cmd.args(["--inbound-target", t]);
        }
        spawn(name, cmd, dir)
    };
    let weft = [
        weft("weft-client", WEFT_CLIENT, None)?,
        weft("weft-server", WEFT_SERVER, Some(UPSTREAM))?,
    ];
    let envoy = match envoy_bin {
        None => None,
        Some(bin) => {
            let mut pair = Vec::new();
            for (name, ip, listen, client) in [
                ("envoy-client", ENVOY_CLIENT, "10000", true),
                ("envoy-server", ENVOY_SERVER, "10001", false),
            ] {
                let config = dir.join(format!("{name}.yaml"));
                write(
                    config.clone(),
                    &envoy_bootstrap(&format!("{ip}:{listen}"), &format!("{ip}:9901"), client),
                )?;
                let mut cmd = Command::new(bin);
                cmd.arg("-c").arg(&config).args([
                    "--concurrency",
                    &workers.to_string(),
                    "--log-level",
                    "warn",
                ]);
                cmd.args(["--base-id", if client { "11" } else { "12" }]);
                pair.push(spawn(name, cmd, dir)?);
            }
            let server = pair.pop().expect("two");
            let client = pair.pop().expect("two");
            Some([client, server])
        }
    };
    wait_listening("upstream", UPSTREAM, dir).await?;
    wait_listening("collector", &format!("{COLLECTOR}:9411"), dir).await?;
    wait_listening("weft-client", &format!("{WEFT_CLIENT}:15001"), dir).await?;
    wait_listening("weft-server", &format!("{WEFT_SERVER}:15006"), dir).await?;
    if envoy.is_some() {
        wait_listening("envoy-client", &format!("{ENVOY_CLIENT}:10000"), dir).await?;
        wait_listening("envoy-server", &format!("{ENVOY_SERVER}:10001"), dir).await?;
    }
    Ok(Topology {
        upstream,
        collector,
        weft,
        envoy,
        weft_entry: format!("{WEFT_CLIENT}:15001")
            .parse()
            .expect("valid address"),
        envoy_entry: format!("{ENVOY_CLIENT}:10000")
            .parse()
            .expect("valid address"),
    })
}
