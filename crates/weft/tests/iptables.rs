//! `weft iptables`, the init container's program, for real: inside a fresh user and network
//! namespace it loads istio-init's rules from the injector's flags, and outbound connections
//! then land on the proxy's 15001, but for the proxy's own user, excluded ranges and
//! excluded ports; connections from a peer namespace beyond the veth pair land on the
//! proxy's 15006 with their original destination, but for the excluded inbound ports.
//! `iptables-save` shows the rules it loaded.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use weft_platform::iptables::INJECTED;
use weft_proxy::transport::orig_dst::{OriginalDst, SoOriginalDst};

const CHILD: &str = "WEFT_IPTABLES_TEST_CHILD";
/// An address beyond the namespace's veth pair: nothing answers there, so a connection that
/// is not captured never completes.
const REMOTE: &str = "10.1.0.2:80";
/// The pod's address, on its end of the veth pair.
const POD: &str = "10.1.0.1";
/// The other end's, in a network namespace of its own: another pod, or the kubelet.
const PEER: &str = "10.1.0.3";

/// The namespace's users: this one as root, and the proxy's 1337, whose owner match the
/// kernel refuses unless the namespace maps it.
const ID_MAP: &str = "0 0 1\n1337 1337 1\n";

#[test]
fn istio_inits_rules_capture_outbound_and_inbound_but_for_the_proxy_and_exclusions() {
    if std::env::var_os(CHILD).is_some() {
        return inside();
    }
    let child = Command::new("unshare")
        .args(["--user", "--net", "--"])
        .arg(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "istio_inits_rules_capture_outbound_and_inbound_but_for_the_proxy_and_exclusions",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("`unshare` (util-linux) runs the test in its own namespaces");
    // unshare execs the test in its own process: once that has its user namespace, map it.
    let ns = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/user")).ok();
    let pid = child.id().to_string();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while ns(&pid) == ns("self") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "unshare made no user namespace"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    for map in ["uid_map", "gid_map"] {
        std::fs::write(format!("/proc/{pid}/{map}"), ID_MAP).unwrap_or_else(|e| {
            panic!("cannot write the namespace's {map} ({e}): mapping the proxy's uid 1337 beside root needs CAP_SETUID and CAP_SETGID (run as root)")
        });
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "inside its namespaces (it needs user and network namespaces, and iptables):\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .env(
            "XTABLES_LOCKFILE",
            std::env::temp_dir().join("weft-iptables-test.lock"),
        )
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn weft_iptables(args: &[&str]) {
    // Each case starts from no rules.
    run("iptables", &["-t", "nat", "-F"]);
    run("iptables", &["-t", "nat", "-X"]);
    let mut all = vec!["iptables"];
    all.extend_from_slice(args);
    run(env!("CARGO_BIN_EXE_weft"), &all);
}

/// Whether a connection to `REMOTE` lands on the proxy's outbound port.
async fn captured(proxy: &TcpListener) -> bool {
    let connect = tokio::time::timeout(
        Duration::from_millis(300),
        TcpStream::connect(REMOTE.parse::<SocketAddr>().unwrap()),
    );
    let accept = tokio::time::timeout(Duration::from_millis(300), proxy.accept());
    let (connected, accepted) = tokio::join!(connect, accept);
    let connected = connected.is_ok_and(|c| c.is_ok());
    assert_eq!(
        connected,
        accepted.is_ok(),
        "a connection completed without the proxy, or the proxy took one that did not"
    );
    connected
}

/// A network namespace holding the veth pair's other end, kept by a process that sleeps in
/// it; commands run there by `nsenter`.
struct Peer(std::process::Child);

impl Peer {
    fn start() -> Peer {
        // It says so once it is in its namespace. (This process may hold no capabilities
        // in its own, unshare's children all of them: it cannot read theirs in /proc.)
        let mut holder = Command::new("unshare")
            .args(["--net", "--", "sh", "-c", "echo ready && exec sleep 600"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("`unshare` (util-linux) makes the peer's namespace");
        let mut ready = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(holder.stdout.take().unwrap()),
            &mut ready,
        )
        .unwrap();
        let peer = Peer(holder);
        assert_eq!(ready, "ready\n", "unshare made no network namespace");
        let pid = peer.pid();
        run("ip", &["link", "set", "v1", "netns", &pid]);
        peer.run(&["ip", "addr", "add", &format!("{PEER}/24"), "dev", "v1"]);
        peer.run(&["ip", "link", "set", "v1", "up"]);
        peer
    }

    fn pid(&self) -> String {
        self.0.id().to_string()
    }

    fn command(&self, args: &[&str]) -> Vec<String> {
        let mut all: Vec<String> = ["--target", &self.pid(), "--net", "--"]
            .map(String::from)
            .to_vec();
        all.extend(args.iter().map(|a| a.to_string()));
        all
    }

    fn run(&self, args: &[&str]) -> String {
        let all = self.command(args);
        run(
            "nsenter",
            &all.iter().map(String::as_str).collect::<Vec<_>>(),
        )
    }

    /// Connects from the peer to the pod's `port` and sends a line; where it lands: the
    /// port of the listener that took it, and the destination it was redirected from.
    async fn connect(&self, port: u16, listeners: [&TcpListener; 2]) -> (u16, Option<SocketAddr>) {
        let mut client = tokio::process::Command::new("nsenter")
            .args(self.command(&[
                "bash",
                "-c",
                &format!("echo inbound >/dev/tcp/{POD}/{port}"),
            ]))
            .kill_on_drop(true)
            .spawn()
            .expect("`nsenter` (util-linux) and bash connect from the peer's namespace");
        let accepted = tokio::time::timeout(Duration::from_secs(5), async {
            tokio::select! {
                a = listeners[0].accept() => a,
                a = listeners[1].accept() => a,
            }
        })
        .await
        .unwrap_or_else(|_| panic!("a connection from the peer to {POD}:{port} landed nowhere"));
        let (mut stream, from) = accepted.unwrap();
        assert_eq!(from.ip().to_string(), PEER);
        let mut line = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut stream, &mut line)
            .await
            .unwrap();
        assert_eq!(line, "inbound\n");
        assert!(client.wait().await.unwrap().success());
        (
            stream.local_addr().unwrap().port(),
            SoOriginalDst.lookup(&stream),
        )
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn inside() {
    // The parent maps this namespace's users once it exists.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string("/proc/self/uid_map").is_ok_and(|m| m.contains("1337")) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the namespace's users were never mapped"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    run("ip", &["link", "set", "lo", "up"]);
    run(
        "ip",
        &["link", "add", "v0", "type", "veth", "peer", "name", "v1"],
    );
    run("ip", &["addr", "add", "10.1.0.1/24", "dev", "v0"]);
    run("ip", &["link", "set", "v0", "up"]);
    run("ip", &["link", "set", "v1", "up"]);
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let proxy = TcpListener::bind("0.0.0.0:15001").await.unwrap();
            // The app on 9080 (this process may hold no capabilities in its namespace, so
            // no port below 1024), the proxy's health on 15021 (an excluded inbound port),
            // and the proxy's inbound 15006.
            let app = TcpListener::bind("0.0.0.0:9080").await.unwrap();
            let health = TcpListener::bind("0.0.0.0:15021").await.unwrap();
            let inbound = TcpListener::bind("0.0.0.0:15006").await.unwrap();
            let peer = Peer::start();
            assert!(!captured(&proxy).await, "captured before any rule");
            assert_eq!(
                peer.connect(9080, [&app, &inbound]).await,
                (9080, None),
                "inbound captured before any rule"
            );

            weft_iptables(&INJECTED);
            assert!(captured(&proxy).await, "outbound did not reach 15001");
            let pod_app = SocketAddr::from(([10, 1, 0, 1], 9080));
            assert_eq!(
                peer.connect(9080, [&app, &inbound]).await,
                (15006, Some(pod_app)),
                "inbound to the app did not reach 15006"
            );
            assert_eq!(
                peer.connect(15021, [&health, &inbound]).await,
                (15021, None),
                "the excluded health port was captured"
            );
            let saved = run("iptables-save", &["-t", "nat"]);
            for line in [
                "-A PREROUTING -p tcp -j ISTIO_INBOUND",
                "-A ISTIO_INBOUND -p tcp -m tcp --dport 15020 -j RETURN",
                "-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT",
                "-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006",
                "-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN",
                "-A ISTIO_OUTPUT -j ISTIO_REDIRECT",
                "-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001",
            ] {
                assert!(saved.lines().any(|l| l == line), "no {line:?} in\n{saved}");
            }

            // The proxy's own user (here this test's, the namespace's only one) goes out
            // as it is.
            let mut own = INJECTED;
            own[5] = "0";
            weft_iptables(&own);
            assert!(!captured(&proxy).await, "the proxy's user was captured");

            // Excluded ranges and ports are left alone; others still go to the proxy.
            let mut excluded = INJECTED;
            excluded[11] = "10.1.0.0/24";
            weft_iptables(&excluded);
            assert!(!captured(&proxy).await, "an excluded range was captured");
            let mut other_range = INJECTED;
            other_range[11] = "10.2.0.0/16";
            weft_iptables(&other_range);
            assert!(captured(&proxy).await);
            weft_iptables(&[&INJECTED[..], &["-o", "80"]].concat());
            assert!(!captured(&proxy).await, "an excluded port was captured");
        });
}
