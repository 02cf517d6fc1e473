//! Transparent capture for real: inside a fresh user and network namespace, iptables
//! REDIRECTs an app's plain `connect()` to a service address into the proxy, which reads
//! the original destination with SO_ORIGINAL_DST and routes by it. No root needed on the
//! host and nothing on the host is touched. It fails, never skips, when it cannot run.

mod support;

use std::process::Command;
use std::sync::Arc;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weft_proxy::transport::orig_dst::SoOriginalDst;

const CHILD: &str = "WEFT_CAPTURE_TEST_CHILD";

#[test]
fn apps_plain_connect_reaches_the_proxy_with_its_original_destination() {
    if std::env::var_os(CHILD).is_some() {
        return inside_namespace();
    }
    in_namespaces(
        "apps_plain_connect_reaches_the_proxy_with_its_original_destination",
        &["--net"],
        CHILD,
        &[],
        "unprivileged user namespaces and iptables",
    );
}

fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e} (install iptables and iproute2)"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn inside_namespace() {
    run("ip", &["link", "set", "lo", "up"]);
    // istio-init's shape, narrowed to 127.10.0.0/16 so the test harness's own loopback
    // traffic is left alone. The endpoint lives in that range too: the proxy's upstream
    // connections get out only because they carry the mark the first rule exempts.
    run(
        "iptables",
        &[
            "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-m", "mark", "--mark", "1337", "-j",
            "RETURN",
        ],
    );
    run(
        "iptables",
        &[
            "-t",
            "nat",
            "-A",
            "OUTPUT",
            "-p",
            "tcp",
            "-d",
            "127.10.0.0/16",
            "-j",
            "REDIRECT",
            "--to-ports",
            "15001",
        ],
    );
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap().block_on(async {
        weft_proxy::transport::connect::mark_upstream_connections(1337).unwrap();
        let v1 = Backend::start("127.10.1.2", "v1", ok()).await;
        let yaml = format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: reviews\nspec:\n  clusterIP: 127.10.0.1\n  selector: {{app: reviews}}\n  ports:\n  - {{name: http, port: 9080}}\n---\n\
             apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata:\n  name: reviews-v1\nspec:\n  address: 127.10.1.2\n  labels: {{app: reviews, version: v1}}\n  ports: {{http: {}}}\n",
            v1.addr.port()
        );
        let mut setup = Setup { orig_dst: Arc::new(SoOriginalDst), ..Setup::default() };
        setup.labels = "app=productpage";
        let mut proxy = TestProxy::start_on(&yaml, setup, "0.0.0.0:15001".parse().unwrap()).await;

        // The app knows nothing of the proxy: it dials the service address.
        let mut app = tokio::net::TcpStream::connect("127.10.0.1:9080").await.expect("connect to the service VIP");
        app.write_all(b"GET /reviews/1 HTTP/1.1\r\nHost: 127.10.0.1:9080\r\nConnection: close\r\n\r\n").await.unwrap();
        let mut answer = String::new();
        app.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.contains("x-served-by: v1"), "{answer}");
        let entry = proxy.log.recv().await.unwrap();
        assert_eq!(entry.downstream_local, Some("127.10.0.1:9080".parse().unwrap()), "the original destination");
        assert_eq!(entry.upstream_cluster.as_deref(), Some("outbound|9080||reviews.default.svc.cluster.local"));

        // Opaque TCP to an address nobody declared is refused under REGISTRY_ONLY.
        let mut stray = tokio::net::TcpStream::connect("127.10.9.9:5432").await.unwrap();
        let _ = stray.write_all(b"\x00\x00\x00\x08").await;
        let mut buf = [0u8; 1];
        assert_eq!(stray.read(&mut buf).await.unwrap_or(0), 0, "blocked connections are closed");
        let entry = proxy.log.recv().await.unwrap();
        assert_eq!(entry.upstream_cluster.as_deref(), Some("BlackHoleCluster"));
    });
}
