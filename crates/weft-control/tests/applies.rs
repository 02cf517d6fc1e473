//! Applies through the control plane's API: concurrent ones are serialised and all land,
//! each object in its own intact file.

use std::time::Duration;
use weft_control::{ControlOptions, ControlPlane};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_applies_all_land_and_every_file_stays_whole() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = ControlOptions::new(dir.path().to_path_buf());
    opts.grpc = "127.0.0.1:0".parse().unwrap();
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
    opts.grpc = "127.0.0.1:0".parse().unwrap();
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
