//! The control plane's per-proxy views over a real gRPC stream: what each proxy is sent
//! (Sidecar egress hosts, exportTo, endpoints of what it sees), that a change reaches only
//! the proxies it concerns and as a delta, announced workloads, and reconnects.

use std::collections::BTreeSet;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use weft_control::{ControlOptions, ControlPlane};
use weft_discovery::discovery::discovery_client::DiscoveryClient;
use weft_discovery::discovery::{proxy_message, Ack, Hello, ProxyMessage, Update};

const DEADLINE: Duration = Duration::from_secs(10);

async fn control(grace: Duration) -> (ControlPlane, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = ControlOptions::new(dir.path().to_path_buf());
    opts.grpc = Some("127.0.0.1:0".parse().unwrap());
    opts.monitoring = "127.0.0.1:0".parse().unwrap();
    opts.endpoint_grace = grace;
    (ControlPlane::start(opts).await.unwrap(), dir)
}

async fn apply(cp: &ControlPlane, yaml: &str) {
    cp.state.apply("test.yaml", yaml).await.unwrap();
}

/// A proxy as the stream sees it: says hello, acknowledges everything.
struct Sim {
    tx: mpsc::Sender<ProxyMessage>,
    updates: Streaming<Update>,
}

impl Sim {
    async fn connect(cp: &ControlPlane, hello: Hello) -> Sim {
        let mut client = DiscoveryClient::connect(format!("http://{}", cp.grpc_addr.unwrap()))
            .await
            .unwrap();
        let (tx, rx) = mpsc::channel(8);
        tx.send(message(proxy_message::Message::Hello(hello)))
            .await
            .unwrap();
        let updates = client
            .stream(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        Sim { tx, updates }
    }

    /// The next update, acknowledged.
    async fn next(&mut self) -> Update {
        let u = tokio::time::timeout(DEADLINE, self.updates.message())
            .await
            .expect("an update in time")
            .unwrap()
            .expect("the stream is open");
        let ack = proxy_message::Message::Ack(Ack {
            version: u.version.clone(),
        });
        self.tx.send(message(ack)).await.unwrap();
        u
    }
}

fn message(m: proxy_message::Message) -> ProxyMessage {
    ProxyMessage { message: Some(m) }
}

fn hello(name: &str, namespace: &str) -> Hello {
    Hello {
        name: name.into(),
        namespace: namespace.into(),
        proxy_version: "test".into(),
        ..Default::default()
    }
}

/// A reviews pod at 10.1.2.3 that announces itself with `join_token`.
fn reviews_pod(join_token: &str) -> Hello {
    Hello {
        address: "10.1.2.3".into(),
        labels: [("app".to_string(), "reviews".to_string())].into(),
        join_token: join_token.into(),
        ..hello("reviews-v1-abc", "default")
    }
}

/// `Kind namespace/name` of what an update carries.
fn names(u: &Update) -> BTreeSet<String> {
    u.resources
        .iter()
        .map(|r| {
            let k = r.key.as_ref().unwrap();
            format!("{} {}/{}", k.kind, k.namespace, k.name)
        })
        .collect()
}

fn removed(u: &Update) -> BTreeSet<String> {
    u.removed
        .iter()
        .map(|k| format!("{} {}/{}", k.kind, k.namespace, k.name))
        .collect()
}

fn service(name: &str, ns: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  selector: {{app: {name}}}\n  ports: [{{name: http, port: 8080}}]\n---\n"
    )
}

fn endpoint(name: &str, ns: &str, app: &str, address: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {{address: {address}, labels: {{app: {app}}}}}\n---\n"
    )
}

const SHOP_SIDECAR: &str = "apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: shop}
spec:
  egress:
  - hosts: [\"./*\"]
";

#[tokio::test]
async fn a_proxy_gets_only_what_its_sidecar_and_export_to_let_it_see_and_changes_as_deltas() {
    let (cp, _dir) = control(Duration::from_secs(30)).await;
    let mut config = String::new();
    config += &service("cart", "shop");
    config += &endpoint("cart-1", "shop", "cart", "10.0.0.1");
    config += &service("ledger", "billing");
    config += &endpoint("ledger-1", "billing", "ledger", "10.0.1.1");
    config += "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: ledger, namespace: billing}\nspec:\n  hosts: [ledger]\n  exportTo: [\".\"]\n  http: [{route: [{destination: {host: ledger}}]}]\n---\n";
    // A client no service selects: every view has it, to name it as a caller.
    config += &endpoint("batch-0", "analytics", "batch", "10.0.2.1");
    config += SHOP_SIDECAR;
    apply(&cp, &config).await;

    let mut shop = Sim::connect(&cp, hello("web-0", "shop")).await;
    let mut outsider = Sim::connect(&cp, hello("report-0", "analytics")).await;
    let first = shop.next().await;
    assert!(first.full);
    assert_eq!(
        names(&first),
        BTreeSet::from([
            "Service shop/cart".to_string(),
            "WorkloadEntry shop/cart-1".into(),
            "WorkloadEntry analytics/batch-0".into(),
            "Sidecar shop/default".into(),
        ])
    );
    // No Sidecar in analytics: every service, but not billing's namespace-private route.
    let seen = names(&outsider.next().await);
    assert!(seen.contains("Service billing/ledger") && seen.contains("Service shop/cart"));
    assert!(seen.contains("WorkloadEntry billing/ledger-1"));
    assert!(seen.contains("WorkloadEntry analytics/batch-0"));
    assert!(!seen.contains("VirtualService billing/ledger"), "{seen:?}");

    // A billing endpoint moves: only the outsider hears of it, as a delta on its version.
    let outsider_version = first_version(&cp, "report-0").await;
    apply(&cp, &endpoint("ledger-1", "billing", "ledger", "10.0.1.2")).await;
    let delta = outsider.next().await;
    assert!(!delta.full);
    assert_eq!(delta.base_version, outsider_version);
    assert_eq!(
        names(&delta),
        BTreeSet::from(["WorkloadEntry billing/ledger-1".to_string()])
    );
    // Then a shop endpoint is added: the shop proxy's next update is that alone, so it was
    // never sent the billing change.
    apply(&cp, &endpoint("cart-2", "shop", "cart", "10.0.0.2")).await;
    let next = shop.next().await;
    assert_eq!(
        names(&next),
        BTreeSet::from(["WorkloadEntry shop/cart-2".to_string()])
    );
    assert_eq!(next.base_version, first.version);
    assert_eq!(names(&outsider.next().await), names(&next));

    // Removing the Service takes it out of view; its endpoints stay, as workloads of no
    // service, which every view names callers by.
    cp.state
        .delete(vec![weft_discovery::wire::Key {
            kind: weft_api::Kind::Service,
            namespace: "shop".into(),
            name: "cart".into(),
        }])
        .await
        .unwrap();
    let gone = shop.next().await;
    assert_eq!(
        removed(&gone),
        BTreeSet::from(["Service shop/cart".to_string()])
    );
    assert!(gone.resources.is_empty());
}

async fn first_version(cp: &ControlPlane, name: &str) -> String {
    let mesh = cp.state.mesh();
    let (_, p) = mesh.find_proxy(name).expect("connected");
    p.sent.clone()
}

#[tokio::test]
async fn a_sidecar_that_starts_selecting_a_proxy_moves_it_to_a_new_view() {
    let (cp, _dir) = control(Duration::from_secs(30)).await;
    apply(
        &cp,
        &(service("cart", "shop") + &service("ledger", "billing")),
    )
    .await;
    let mut web = Sim::connect(
        &cp,
        Hello {
            labels: [("app".to_string(), "web".to_string())].into(),
            ..hello("web-0", "shop")
        },
    )
    .await;
    let before = web.next().await;
    assert!(names(&before).contains("Service billing/ledger"));
    apply(
        &cp,
        "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: web, namespace: shop}\nspec:\n  workloadSelector: {labels: {app: web}}\n  egress: [{hosts: [\"billing/*\"]}]\n",
    )
    .await;
    let moved = web.next().await;
    assert!(moved.full, "a proxy that changes views starts afresh");
    assert_eq!(
        names(&moved),
        BTreeSet::from([
            "Service billing/ledger".to_string(),
            "Sidecar shop/web".into()
        ])
    );
}

#[tokio::test]
async fn announced_workloads_become_endpoints_and_leave_after_the_grace_period() {
    let (cp, _dir) = control(Duration::from_millis(200)).await;
    apply(&cp, &service("reviews", "default")).await;
    let mut caller = Sim::connect(&cp, hello("productpage-0", "default")).await;
    assert_eq!(
        names(&caller.next().await),
        BTreeSet::from(["Service default/reviews".to_string()])
    );
    let reviews = Sim::connect(&cp, reviews_pod(cp.join_token.as_str())).await;
    let announced = caller.next().await;
    assert_eq!(
        names(&announced),
        BTreeSet::from(["WorkloadEntry default/reviews-v1-abc-10-1-2-3".to_string()])
    );
    let json: serde_json::Value = serde_json::from_slice(&announced.resources[0].json).unwrap();
    assert_eq!(json["spec"]["address"], "10.1.2.3");
    drop(reviews);
    let withdrawn = caller.next().await;
    assert_eq!(
        removed(&withdrawn),
        BTreeSet::from(["WorkloadEntry default/reviews-v1-abc-10-1-2-3".to_string()])
    );
}

#[tokio::test]
async fn a_proxy_without_the_join_token_follows_config_but_is_no_endpoint() {
    let (cp, _dir) = control(Duration::from_secs(30)).await;
    apply(&cp, &service("reviews", "default")).await;
    let mut caller = Sim::connect(&cp, hello("productpage-0", "default")).await;
    caller.next().await;
    let wrong = format!("{}0", &cp.join_token.as_str()[1..]);
    let mut intruders = Vec::new();
    for (i, token) in ["", wrong.as_str()].into_iter().enumerate() {
        let mut intruder = Sim::connect(
            &cp,
            Hello {
                name: format!("fake-reviews-{i}"),
                address: format!("10.6.6.{i}"),
                ..reviews_pod(token)
            },
        )
        .await;
        // Still sent config.
        assert_eq!(
            names(&intruder.next().await),
            BTreeSet::from(["Service default/reviews".to_string()])
        );
        intruders.push(intruder);
    }
    // The legitimate pod's announcement is the first thing the caller hears of.
    let _reviews = Sim::connect(&cp, reviews_pod(cp.join_token.as_str())).await;
    assert_eq!(
        names(&caller.next().await),
        BTreeSet::from(["WorkloadEntry default/reviews-v1-abc-10-1-2-3".to_string()])
    );
    let mesh = cp.state.mesh();
    let registered: Vec<(String, bool)> = mesh
        .proxies()
        .map(|(_, p)| (p.hello.address.clone(), p.registered))
        .collect();
    assert!(
        registered.contains(&("10.6.6.0".into(), false)),
        "{registered:?}"
    );
    assert!(
        registered.contains(&("10.6.6.1".into(), false)),
        "{registered:?}"
    );
    assert!(
        registered.contains(&("10.1.2.3".into(), true)),
        "{registered:?}"
    );
    // The token is never kept where proxy-status could show it.
    assert!(mesh.proxies().all(|(_, p)| p.hello.join_token.is_empty()));
    let announced: Vec<_> = mesh
        .objects()
        .iter()
        .filter(|(k, _)| k.kind == weft_api::Kind::WorkloadEntry)
        .map(|(k, _)| k.name.clone())
        .collect();
    assert_eq!(announced, ["reviews-v1-abc-10-1-2-3"]);
}

#[tokio::test]
async fn a_proxy_that_reconnects_holding_the_current_version_is_sent_nothing() {
    let (cp, _dir) = control(Duration::from_secs(30)).await;
    apply(&cp, &service("reviews", "default")).await;
    let mut first = Sim::connect(&cp, hello("productpage-0", "default")).await;
    let held = first.next().await.version;
    drop(first);
    let mut again = Sim::connect(
        &cp,
        Hello {
            held_version: held.clone(),
            ..hello("productpage-0", "default")
        },
    )
    .await;
    let u = again.next().await;
    assert!(u.full && u.unchanged && u.resources.is_empty());
    assert_eq!(u.version, held);
    let mut stale = Sim::connect(
        &cp,
        Hello {
            held_version: "0000000000000000".into(),
            ..hello("productpage-1", "default")
        },
    )
    .await;
    let u = stale.next().await;
    assert!(u.full && !u.unchanged && u.resources.len() == 1);
}

#[tokio::test]
async fn files_edited_in_the_directory_are_pushed_and_a_broken_one_changes_nothing() {
    let (cp, dir) = control(Duration::from_secs(30)).await;
    let mut proxy = Sim::connect(&cp, hello("productpage-0", "default")).await;
    assert!(proxy.next().await.resources.is_empty());
    let file = dir.path().join("team.yaml");
    std::fs::write(&file, service("reviews", "default")).unwrap();
    assert_eq!(
        names(&proxy.next().await),
        BTreeSet::from(["Service default/reviews".to_string()])
    );
    // Files that are not config (hidden, temporary) change nothing when they change.
    let hidden = dir.path().join(".notes.yaml.tmp");
    std::fs::write(&hidden, "scratch").unwrap();
    let touched = cp.state.reload(Some(&[hidden].into())).await.unwrap();
    assert_eq!(touched, 0);
    // A typo does not take reviews away; the fix, with a new service, adds only that.
    std::fs::write(
        &file,
        "apiVersion: v1\nkind: Service\nmetadata: {name: reviews\n",
    )
    .unwrap();
    std::fs::write(
        &file,
        service("reviews", "default") + &service("ratings", "default"),
    )
    .unwrap();
    let next = proxy.next().await;
    assert_eq!(
        names(&next),
        BTreeSet::from(["Service default/ratings".to_string()])
    );
    assert!(next.removed.is_empty());
    assert!(cp.state.broken_files().is_empty());
    std::fs::remove_file(&file).unwrap();
    assert_eq!(removed(&proxy.next().await).len(), 2);
}

#[tokio::test]
async fn a_restarted_control_plane_remembers_announced_workloads_until_their_grace_ends() {
    let dir = tempfile::tempdir().unwrap();
    let start = |grace: Duration| {
        let mut opts = ControlOptions::new(dir.path().to_path_buf());
        opts.grpc = Some("127.0.0.1:0".parse().unwrap());
        opts.monitoring = "127.0.0.1:0".parse().unwrap();
        opts.endpoint_grace = grace;
        ControlPlane::start(opts)
    };
    let first = start(Duration::from_secs(30)).await.unwrap();
    apply(&first, &service("reviews", "default")).await;
    let announcing = Sim::connect(&first, reviews_pod(first.join_token.as_str())).await;
    let file = first.state.registrations.file().unwrap().to_path_buf();
    let kept = tokio::time::timeout(DEADLINE, async {
        while !std::fs::read_to_string(&file).is_ok_and(|t| t.contains("10.1.2.3")) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    kept.await.expect("the announced workload is written down");
    drop((announcing, first));

    let second = start(Duration::from_millis(300)).await.unwrap();
    let mut caller = Sim::connect(&second, hello("productpage-0", "default")).await;
    assert_eq!(
        names(&caller.next().await),
        BTreeSet::from([
            "Service default/reviews".to_string(),
            "WorkloadEntry default/reviews-v1-abc-10-1-2-3".into()
        ])
    );
    // Its proxy never comes back: it goes when the grace period ends.
    assert_eq!(
        removed(&caller.next().await),
        BTreeSet::from(["WorkloadEntry default/reviews-v1-abc-10-1-2-3".to_string()])
    );
}
