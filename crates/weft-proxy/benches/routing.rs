//! Route matching against a VirtualService with 1,000 http routes: the first route, the
//! last, and a miss. Tables are compiled once; matching allocates nothing.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use http::{HeaderMap, Method};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;
use weft_api::types::OutboundTrafficMode;
use weft_proxy::model::matcher::RequestView;
use weft_proxy::model::{compile, Snapshot};
use weft_proxy::workload::Workload;

fn thousand_routes() -> Snapshot {
    let mut yaml = String::from(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: reviews\nspec:\n  ports:\n  - {name: http, port: 9080}\n---\n\
         apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: reviews\nspec:\n  hosts: [reviews]\n  http:\n",
    );
    for i in 0..1000 {
        let _ = write!(
            yaml,
            "  - name: r{i}\n    match:\n    - uri: {{prefix: /api/v{i}/}}\n      headers:\n        x-tenant: {{exact: tenant-{i}}}\n    - uri: {{regex: \"/regex/{i}/[a-z]+\"}}\n    route:\n    - destination: {{host: reviews}}\n"
        );
    }
    let loaded = weft_api::load_str(&yaml, Path::new("bench.yaml"));
    assert!(!loaded.has_errors());
    compile(
        loaded.resources,
        &Workload {
            namespace: "default".into(),
            ..Workload::default()
        },
        OutboundTrafficMode::RegistryOnly,
        1,
        &BTreeMap::new(),
    )
    .unwrap()
}

fn bench(c: &mut Criterion) {
    let snapshot = thousand_routes();
    let vhost = snapshot.virtual_host(9080, "reviews:9080", None).unwrap();
    let mut headers = HeaderMap::new();
    let method = Method::GET;
    let mut lookup = |name: &str, path: &'static str, tenant: &'static str| {
        headers.insert("x-tenant", tenant.parse().unwrap());
        let headers = headers.clone();
        let method = method.clone();
        c.bench_function(name, move |b| {
            b.iter(|| {
                let view = RequestView::new(&method, path, "http", "reviews:9080", &headers, 9080);
                black_box(
                    vhost
                        .route_for(black_box(&view))
                        .map(|(r, _)| r.name.as_deref()),
                )
            })
        });
    };
    lookup("match 1000 routes: first", "/api/v0/items", "tenant-0");
    lookup(
        "match 1000 routes: last (prefix+header)",
        "/api/v999/items",
        "tenant-999",
    );
    lookup(
        "match 1000 routes: last (regex)",
        "/regex/999/abc",
        "nobody",
    );
    lookup("match 1000 routes: miss", "/nothing", "nobody");
    c.bench_function("virtual host lookup", |b| {
        b.iter(|| {
            black_box(
                snapshot
                    .virtual_host(
                        9080,
                        black_box("reviews.default.svc.cluster.local:9080"),
                        None,
                    )
                    .is_some(),
            )
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
