//! The processes a comparison runs: the upstream, Weft and Envoy pairs in plaintext and with
//! mTLS between the two hops, each pair a client-side and a server-side proxy on loopback,
//! configured to do the same work: a header match, two subsets by label, Istio's default
//! retry policy, Istio's metrics, and Istio's default 1 % trace sampling with spans sent to
//! one Zipkin collector (the control plane's built-in one) as Istio's proxies send them.
//! The mTLS pairs hold the same static workload certificates from one CA (Istio's
//! file-mounted certificates for Weft, the bootstrap's for Envoy): the client checks the
//! server's SPIFFE ID, the server requires the client's certificate.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const UPSTREAM: &str = "127.0.0.21:8080";
const WEFT_CLIENT: &str = "127.0.0.22";
const WEFT_SERVER: &str = "127.0.0.23";
const ENVOY_CLIENT: &str = "127.0.0.24";
const ENVOY_SERVER: &str = "127.0.0.25";
const WEFT_MTLS_CLIENT: &str = "127.0.0.27";
const WEFT_MTLS_SERVER: &str = "127.0.0.28";
const ENVOY_MTLS_CLIENT: &str = "127.0.0.29";
const ENVOY_MTLS_SERVER: &str = "127.0.0.30";
/// The server side's identity, which the client side checks.
const SERVER_IDENTITY: &str = "spiffe://cluster.local/ns/default/sa/bench";
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
    weft_config_for(WEFT_SERVER, false)
}

/// [`weft_config`] with the endpoints at `server`, marked as sidecars (auto mTLS) and
/// running as the server's service account when `mtls`.
fn weft_config_for(server: &str, mtls: bool) -> String {
    let (tls_label, account) = if mtls {
        (
            ", security.istio.io/tlsMode: istio",
            "\n  serviceAccount: bench",
        )
    } else {
        ("", "")
    };
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
  address: {server}
  labels: {{app: bench, version: v1{tls_label}}}
  ports: {{http: 15006, grpc: 15006}}{account}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: bench-v2
spec:
  address: {server}
  labels: {{app: bench, version: v2{tls_label}}}
  ports: {{http: 15006, grpc: 15006}}{account}
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
fn envoy_bootstrap(
    listen: &str,
    admin: &str,
    client_side: bool,
    server: &str,
    certs: Option<&Path>,
) -> String {
    // Istio's: the client checks the server's SPIFFE ID; the server requires a client
    // certificate from the mesh root.
    let tls_context = |certs: &Path, indent: &str| {
        let file = |f: &str| certs.join(f).display().to_string();
        format!(
            "{indent}common_tls_context:
{indent}  tls_certificates:
{indent}  - certificate_chain: {{filename: {}}}
{indent}    private_key: {{filename: {}}}
{indent}  validation_context:
{indent}    trusted_ca: {{filename: {}}}",
            file("cert-chain.pem"),
            file("key.pem"),
            file("root-cert.pem")
        )
    };
    let upstream_tls = match certs {
        Some(certs) if client_side => format!(
            "
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: outbound_.8080_._.bench.default.svc.cluster.local
{}
            match_typed_subject_alt_names:
            - san_type: URI
              matcher: {{exact: \"{SERVER_IDENTITY}\"}}",
            tls_context(certs, "        ")
        ),
        _ => String::new(),
    };
    let downstream_tls = match certs {
        Some(certs) if !client_side => format!(
            "transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          require_client_certificate: true
{}
      ",
            tls_context(certs, "          ")
        ),
        _ => String::new(),
    };
    let upstream_protocol = "
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        \"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        use_downstream_protocol_config:
          http_protocol_options: {}
          http2_protocol_options: {}";
    let cluster = |name: &str, target: &str, tls: &str| {
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
              socket_address: {{address: {host}, port_value: {port}}}{upstream_protocol}{tls}
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
        let server = format!("{server}:10001");
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
            cluster("outbound|8080|v1|bench", &server, &upstream_tls)
                + &cluster("outbound|8080|v2|bench", &server, &upstream_tls),
        )
    } else {
        (
            "
              - match: {prefix: /}
                route:
                  cluster: inbound|8080||"
                .to_string(),
            cluster("inbound|8080||", UPSTREAM, ""),
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
    - {downstream_tls}filters:
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

/// A client-side and a server-side proxy, measured as one variant.
pub struct Pair {
    /// `weft`, `envoy`, `weft-mtls`, `envoy-mtls`.
    pub variant: &'static str,
    pub entry: SocketAddr,
    /// The server-side proxy's listener, where a one-hop load goes.
    pub server: SocketAddr,
    pub proxies: [Process; 2],
}

/// Everything one comparison runs, started and ready.
pub struct Topology {
    pub upstream: Process,
    pub collector: Process,
    /// Weft's pairs, then Envoy's when it runs.
    pub pairs: Vec<Pair>,
}

/// The two workload certificates the mTLS pairs hold, from one CA made for the run:
/// `DIR/client` and `DIR/server`, each with Istio's file names.
fn write_certificates(dir: &Path) -> Result<(), TopologyError> {
    use weft_security::{ca::Ca, workload::WorkloadKey, Identity};
    let fail = |e: String| TopologyError::Write(dir.to_path_buf(), std::io::Error::other(e));
    let ca =
        Ca::load_or_create(&dir.join("ca"), "cluster.local").map_err(|e| fail(e.to_string()))?;
    for (side, account) in [("client", "bench-client"), ("server", "bench")] {
        let identity =
            Identity::new("cluster.local", "default", account).map_err(|e| fail(e.to_string()))?;
        let key = WorkloadKey::generate().map_err(|e| fail(e.to_string()))?;
        let csr = key.csr(&identity).map_err(|e| fail(e.to_string()))?;
        let chain = ca
            .sign(&csr, &identity, Duration::from_secs(24 * 3600))
            .map_err(|e| fail(e.to_string()))?;
        let at = dir.join(side);
        std::fs::create_dir_all(&at).map_err(|e| TopologyError::Write(at.clone(), e))?;
        write(at.join("cert-chain.pem"), &chain.concat())?;
        write(at.join("key.pem"), &key.private_key_pem())?;
        write(at.join("root-cert.pem"), ca.root_pem())?;
    }
    Ok(())
}

pub async fn start(
    weft_bin: &Path,
    envoy_bin: Option<&Path>,
    workers: usize,
    dir: &Path,
) -> Result<Topology, TopologyError> {
    for sub in ["weft-config", "weft-mtls-config", "collector-config"] {
        std::fs::create_dir_all(dir.join(sub))
            .map_err(|e| TopologyError::Write(dir.to_path_buf(), e))?;
    }
    write(dir.join("weft-config/bench.yaml"), &weft_config())?;
    write(
        dir.join("weft-mtls-config/bench.yaml"),
        &weft_config_for(WEFT_MTLS_SERVER, true),
    )?;
    let certs = dir.join("certs");
    write_certificates(&certs)?;
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
    let weft = |name: &'static str,
                ip: &str,
                config: &str,
                inbound_target: Option<&str>,
                certs: Option<PathBuf>| {
        let mut cmd = Command::new(weft_bin);
        cmd.arg("proxy")
            .arg("--config")
            .arg(dir.join(config))
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
        if let Some(certs) = certs {
            cmd.arg("--certs").arg(certs);
        }
        spawn(name, cmd, dir)
    };
    let mut pairs = vec![
        Pair {
            variant: "weft",
            entry: entry(WEFT_CLIENT, 15001),
            server: entry(WEFT_SERVER, 15006),
            proxies: [
                weft("weft-client", WEFT_CLIENT, "weft-config", None, None)?,
                weft(
                    "weft-server",
                    WEFT_SERVER,
                    "weft-config",
                    Some(UPSTREAM),
                    None,
                )?,
            ],
        },
        Pair {
            variant: "weft-mtls",
            entry: entry(WEFT_MTLS_CLIENT, 15001),
            server: entry(WEFT_MTLS_SERVER, 15006),
            proxies: [
                weft(
                    "weft-mtls-client",
                    WEFT_MTLS_CLIENT,
                    "weft-mtls-config",
                    None,
                    Some(certs.join("client")),
                )?,
                weft(
                    "weft-mtls-server",
                    WEFT_MTLS_SERVER,
                    "weft-mtls-config",
                    Some(UPSTREAM),
                    Some(certs.join("server")),
                )?,
            ],
        },
    ];
    if let Some(bin) = envoy_bin {
        let envoys = [
            (
                "envoy",
                ENVOY_CLIENT,
                ENVOY_SERVER,
                None,
                ["envoy-client", "envoy-server"],
                ["11", "12"],
            ),
            (
                "envoy-mtls",
                ENVOY_MTLS_CLIENT,
                ENVOY_MTLS_SERVER,
                Some(&certs),
                ["envoy-mtls-client", "envoy-mtls-server"],
                ["13", "14"],
            ),
        ];
        for (variant, client_ip, server_ip, certs, names, base_ids) in envoys {
            let mut sides = Vec::new();
            for (client, ip, listen) in [(true, client_ip, "10000"), (false, server_ip, "10001")] {
                let name = names[usize::from(!client)];
                let config = dir.join(format!("{name}.yaml"));
                let side_certs = certs.map(|c| c.join(if client { "client" } else { "server" }));
                write(
                    config.clone(),
                    &envoy_bootstrap(
                        &format!("{ip}:{listen}"),
                        &format!("{ip}:9901"),
                        client,
                        server_ip,
                        side_certs.as_deref(),
                    ),
                )?;
                let mut cmd = Command::new(bin);
                cmd.arg("-c").arg(&config).args([
                    "--concurrency",
                    &workers.to_string(),
                    "--log-level",
                    "warn",
                ]);
                cmd.args(["--base-id", base_ids[usize::from(!client)]]);
                sides.push(spawn(name, cmd, dir)?);
            }
            let server = sides.pop().expect("two");
            let client = sides.pop().expect("two");
            pairs.push(Pair {
                variant,
                entry: entry(client_ip, 10000),
                server: entry(server_ip, 10001),
                proxies: [client, server],
            });
        }
    }
    wait_listening("upstream", UPSTREAM, dir).await?;
    wait_listening("collector", &format!("{COLLECTOR}:9411"), dir).await?;
    for pair in &pairs {
        wait_listening(pair.proxies[0].name, &pair.entry.to_string(), dir).await?;
        wait_listening(pair.proxies[1].name, &pair.server.to_string(), dir).await?;
    }
    Ok(Topology {
        upstream,
        collector,
        pairs,
    })
}

/// That the mTLS pairs' server sides took their requests over mTLS: Weft's reports say
/// `mutual_tls` with the client's principal, Envoy's counted TLS handshakes.
pub async fn check_mtls(t: &Topology) -> Result<(), crate::compare::CompareError> {
    use crate::compare::CompareError::NotMtls;
    for pair in &t.pairs {
        let server = pair.server.ip();
        let (addr, path, wanted) = match pair.variant {
            "weft-mtls" => (
                format!("{server}:15020"),
                "/stats/prometheus",
                "connection_security_policy=\"mutual_tls\"".to_string(),
            ),
            "envoy-mtls" => (
                format!("{server}:9901"),
                "/stats?filter=listener.*ssl.handshake",
                "ssl.handshake: ".to_string(),
            ),
            _ => continue,
        };
        let body = crate::plain_get(&addr, path).await.map_err(NotMtls)?;
        let text = String::from_utf8_lossy(&body);
        let handshakes = text
            .lines()
            .find_map(|l| l.split_once(&wanted).map(|(_, n)| n.trim().to_string()));
        let ok = match pair.variant {
            "weft-mtls" => text.contains(&wanted) && text.contains("bench-client"),
            _ => handshakes.is_some_and(|n| n.parse::<u64>().is_ok_and(|n| n > 0)),
        };
        if !ok {
            return Err(NotMtls(format!(
                "{} ({addr}{path} lacks {wanted})",
                pair.variant
            )));
        }
    }
    Ok(())
}

fn entry(ip: &str, port: u16) -> SocketAddr {
    format!("{ip}:{port}").parse().expect("valid address")
}
