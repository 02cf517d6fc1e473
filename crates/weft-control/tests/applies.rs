//! Applies through the control plane's API: concurrent ones are serialised and all land,
//! each object in its own intact file.

use std::time::Duration;
use weft_control::{ControlOptions, ControlPlane};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_applies_all_land_and_every_file_stays_whole() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = ControlOptions::new(dir.path().to_path_buf());
    opts.grpc = Some("127.0.0.1:0".parse().unwrap());
    opts.monitoring = "127.0.0.1:0".parse().unwrap();
    opts.endpoint_grace = Duration::from_secs(30);
    let cp = ControlPlane::start(opts).await.unwrap();
    let applies = (0..40).map(|i| {
        let state = cp.state.clone();
        tokio::spawn(async move {
            // Every apply also rewrites the shared Service: the last one wins whole.
            let yaml = format!(
                "apiVersion: v1\nkind: Service\nmetadata: {{name: shared, labels: {{writer: w{i}}}}}\nspec: {{ports: [{{name: http, port: 80}}]}}\n---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{name: w{i}}}\nspec: {{address: 10.0.0.{i}, labels: {{app: shared}}}}\n"
            );
            state.apply(&format!("w{i}.yaml"), &yaml).await.map(|_| ())
        })
    });
    for a in futures_join(applies).await {
        a.unwrap();
    }
    let loaded = weft_api::load_path(dir.path()).unwrap();
    assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics);
    assert_eq!(loaded.resources.len(), 41);
    let mesh = cp.state.mesh();
    assert_eq!(mesh.config_objects().count(), 41);
}

async fn futures_join<T>(tasks: impl Iterator<Item = tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::new();
    for t in tasks.collect::<Vec<_>>() {
        out.push(t.await.unwrap());
    }
    out
}

#[tokio::test]
async fn analysis_before_an_apply_sees_services_in_the_namespaces_it_names() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = ControlOptions::new(dir.path().to_path_buf());
    opts.grpc = Some("127.0.0.1:0".parse().unwrap());
    opts.monitoring = "127.0.0.1:0".parse().unwrap();
    let cp = ControlPlane::start(opts).await.unwrap();
    let svc = "apiVersion: v1\nkind: Service\nmetadata: {name: reviews, namespace: shop}\nspec: {selector: {app: reviews}, ports: [{name: http, port: 9080}]}\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: reviews, namespace: shop}\nspec: {host: reviews, subsets: [{name: v1, labels: {version: v1}}]}\n";
    cp.state.apply("svc.yaml", svc).await.unwrap();
    let vs = |subset: &str| {
        format!("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: to-shop, namespace: web}}\nspec:\n  hosts: [reviews.shop.svc.cluster.local]\n  http: [{{route: [{{destination: {{host: reviews.shop.svc.cluster.local, subset: {subset}}}}}]}}]\n")
    };
    cp.state.apply("vs.yaml", &vs("v1")).await.unwrap();
    let err = cp
        .state
        .apply("vs.yaml", &vs("v9"))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("IST0101") && err.contains("reviews.shop.svc.cluster.local+v9"),
        "{err}"
    );
}

#[tokio::test]
async fn admin_calls_without_the_admin_token_are_unauthenticated() {
    use tonic::service::interceptor::InterceptedService;
    use tonic::transport::Channel;
    use weft_discovery::admin::admin_client::AdminClient;
    use weft_discovery::admin::{ApplyRequest, DeleteRequest, GetRequest};
    use weft_discovery::credentials::{Bearer, Token};
    use weft_discovery::discovery::ResourceKey;

    let dir = tempfile::tempdir().unwrap();
    let mut opts = ControlOptions::new(dir.path().to_path_buf());
    opts.grpc = Some("127.0.0.1:0".parse().unwrap());
    opts.monitoring = "127.0.0.1:0".parse().unwrap();
    let cp = ControlPlane::start(opts).await.unwrap();
    let channel = Channel::from_shared(format!("http://{}", cp.grpc_addr.unwrap()))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let client = |token: Option<&Token>| -> AdminClient<InterceptedService<Channel, Bearer>> {
        AdminClient::with_interceptor(channel.clone(), Bearer::new(token))
    };
    let apply = ApplyRequest {
        source: "svc.yaml".into(),
        documents: "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {ports: [{name: http, port: 80}]}\n".into(),
    };
    let delete = DeleteRequest {
        keys: vec![ResourceKey {
            kind: "Service".into(),
            namespace: "default".into(),
            name: "a".into(),
        }],
    };
    let stranger = Token::generate().unwrap();
    for token in [None, Some(&stranger)] {
        let status = client(token).apply(apply.clone()).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
        assert!(
            status
                .message()
                .contains(&cp.admin_token_file.display().to_string()),
            "{}",
            status.message()
        );
        let status = client(token).delete(delete.clone()).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
        let status = client(token).get(GetRequest::default()).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
    }
    assert_eq!(cp.state.mesh().config_objects().count(), 0);
    client(Some(&cp.admin_token)).apply(apply).await.unwrap();
    client(Some(&cp.admin_token)).delete(delete).await.unwrap();
}

/// `--mesh-config FILE`, as istiod's `--meshConfig`: served as ConfigMap istio-system/istio,
/// re-read when the file changes, and beneath an `istio` ConfigMap applied to the directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mesh_config_file_is_served_watched_and_overridden_by_an_applied_one() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    let mesh_file = dir.path().join("mesh");
    std::fs::write(&mesh_file, "defaultConfig: {tracing: {sampling: 10}}\n").unwrap();
    let mut opts = ControlOptions::new(config);
    opts.grpc = Some("127.0.0.1:0".parse().unwrap());
    opts.monitoring = "127.0.0.1:0".parse().unwrap();
    opts.mesh_config = Some(mesh_file.clone());
    let cp = ControlPlane::start(opts).await.unwrap();
    let sampling = || {
        let mesh = cp.state.mesh();
        let found = mesh
            .config_objects()
            .find_map(|(k, o)| match &o.resource.spec {
                weft_api::Spec::MeshConfig(m)
                    if k.to_string() == "ConfigMap istio-system/istio" =>
                {
                    m.default_config.as_ref()?.tracing.as_ref()?.sampling
                }
                _ => None,
            });
        found
    };
    let becomes = |want: f64| {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let sampling = &sampling;
        async move {
            while sampling() != Some(want) {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "sampling {:?}, not {want}",
                    sampling()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    becomes(10.0).await;
    std::fs::write(&mesh_file, "defaultConfig: {tracing: {sampling: 20}}\n").unwrap();
    becomes(20.0).await;
    cp.state
        .apply(
            "istio.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio, namespace: istio-system}\ndata:\n  mesh: 'defaultConfig: {tracing: {sampling: 30}}'\n",
        )
        .await
        .unwrap();
    becomes(30.0).await;
    // A change to the file does not bring it back above the applied one: a broken file is
    // reported and serves nothing new, a fixed one is read again, and the applied one holds.
    let broken = |want: bool| {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let (state, file) = (cp.state.clone(), std::path::absolute(&mesh_file).unwrap());
        async move {
            while state.broken_files().contains_key(&file) != want {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "broken files: {:?}",
                    state.broken_files()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    std::fs::write(&mesh_file, "defaultConfig: {tracing: {sampling: 400}}\n").unwrap();
    broken(true).await;
    assert_eq!(sampling(), Some(30.0));
    std::fs::write(&mesh_file, "defaultConfig: {tracing: {sampling: 40}}\n").unwrap();
    broken(false).await;
    assert_eq!(sampling(), Some(30.0));
}
