//! What each fuzz target does with its input, shared by the libFuzzer entries
//! (`fuzz_targets/`) and the stable smoke run (`tests/smoke.rs`). Each asserts the
//! properties the proxy relies on, so a broken property is a crash like a panic is.

pub mod mutate;

use http::request::Parts;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::Path;
use weft_proxy::http::{edge, path};
use weft_proxy::transport::{detect, sni};

/// Protocol sniffing and the ClientHello parser over the first bytes of a connection.
pub fn sniff(data: &[u8]) {
    // The listener classifies each longer prefix as bytes arrive.
    for end in 0..=data.len().min(64) {
        let _ = detect::classify(&data[..end]);
    }
    let _ = detect::classify(data);
    if let Some(want) = sni::record_len(data) {
        assert!(want >= 5);
    }
    if let Some(hello) = sni::parse(data) {
        if let Some(name) = &hello.server_name {
            assert_eq!(name, &name.to_ascii_lowercase());
        }
        let _ = hello.offers_istio();
    }
}

/// A request head as hyper parses it (httparse, then `http` types), then the proxy's
/// edge handling; and the path normaliser on its own.
pub fn request_head(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        normalise(text);
    }
    let Some(mut parts) = parse(data) else {
        return;
    };
    let before = parts.uri.clone();
    if edge::prepare(&mut parts).is_ok() && parts.method != http::Method::CONNECT {
        if let Some(pq) = parts.uri.path_and_query() {
            if pq.path() != "*" {
                assert!(
                    matches!(path::normalize(pq.path()), Ok(Cow::Borrowed(_))),
                    "{before} normalised to {} is not normal",
                    parts.uri
                );
            }
        }
        assert_eq!(parts.uri.query(), before.query(), "the query is kept");
        let hosts = parts.headers.get_all(http::header::HOST).iter().count();
        assert!(hosts <= 1);
    }
}

fn normalise(path: &str) {
    let Ok(once) = path::normalize(path) else {
        return;
    };
    assert!(once.starts_with('/'), "{path:?} → {once:?}");
    assert!(once.is_ascii());
    assert!(
        !once.split('/').any(|s| s == "." || s == ".."),
        "{path:?} → {once:?} keeps a dot segment"
    );
    match path::normalize(&once) {
        Ok(Cow::Borrowed(_)) => {}
        other => panic!("not idempotent: {path:?} → {once:?} → {other:?}"),
    }
}

/// Parses one request head as hyper's server does, or `None` where hyper would refuse it.
fn parse(data: &[u8]) -> Option<Parts> {
    let mut headers = [httparse::EMPTY_HEADER; 100];
    let mut req = httparse::Request::new(&mut headers);
    let httparse::Status::Complete(_) = req.parse(data).ok()? else {
        return None;
    };
    let mut builder = http::Request::builder().method(req.method?).uri(req.path?);
    for h in req.headers.iter() {
        builder = builder.header(h.name, h.value);
    }
    builder.body(()).ok().map(|r| r.into_parts().0)
}

/// The config loader over a file's text, and the proxy's compile when it loads clean.
pub fn load(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let loaded = weft_api::load_str(text, Path::new("fuzz.yaml"));
    if loaded.errors().next().is_some() {
        return;
    }
    let workload = weft_proxy::workload::Workload {
        name: "productpage-v1".into(),
        namespace: "default".into(),
        labels: weft_proxy::workload::parse_labels("app=productpage,version=v1")
            .expect("valid labels"),
        service_account: "bookinfo-productpage".into(),
        ..Default::default()
    };
    let _ = weft_proxy::model::compile(
        loaded.resources,
        &workload,
        weft_api::types::OutboundTrafficMode::RegistryOnly,
        1,
        &BTreeMap::new(),
    );
}

/// A proxy's metrics page as the dashboard's aggregator scrapes it: parsed (every line kept
/// or counted as malformed), then stored and read back.
pub fn exposition(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let parsed = weft_dashboard::scrape::exposition::parse(&text, |_| true);
    let sample_lines = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .count();
    assert_eq!(parsed.lines.len() + parsed.malformed, sample_lines);
    let db = weft_dashboard::tsdb::Db::default();
    let target = weft_dashboard::scrape::Target {
        pod: "p".into(),
        namespace: "n".into(),
        address: ([127, 0, 0, 1], 15020).into(),
    };
    weft_dashboard::scrape::store(&db, &target, &text, 1);
    let held = db.select(&[weft_dashboard::tsdb::Matcher::equal("pod", "p")], 0, 2);
    assert_eq!(held.len(), db.stats().series);
}

/// A Telemetry CEL expression (access-log filter, metric tag value) as config brings it,
/// parsed and, when it parses, evaluated over a request's attributes.
pub fn expression(data: &[u8]) {
    let Ok(source) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(expr) = weft_api::expression::parse(source) else {
        return;
    };
    let mut headers = http::HeaderMap::new();
    headers.insert("end-user", http::HeaderValue::from_static("jason"));
    let entry = weft_proxy::telemetry::access_log::Entry {
        method: "GET".into(),
        path: "/reviews/0?x=1".into(),
        status: 503,
        authority: Some("reviews:9080".into()),
        downstream_local: Some("10.0.0.2:9080".parse().unwrap()),
        request_headers: Some(std::sync::Arc::new(headers)),
        ..Default::default()
    };
    let attributes = weft_proxy::telemetry::attributes::Attributes { entry: &entry };
    let _ = attributes.admits(&expr);
    let _ = attributes.label(&expr);
}

/// What the API server sends the injection webhook (an AdmissionReview), and what
/// `weft kube-inject` reads (manifests): answered or refused, never a panic; an answer names
/// the request's uid and carries a patch that is a JSON array of `add`s.
pub fn admission(data: &[u8]) {
    let opts = weft_kube::inject::Options::default();
    if let Ok(answer) = weft_kube::webhook::review(data, &opts) {
        let request: serde_json::Value = serde_json::from_slice(data).expect("it was read");
        assert_eq!(answer["response"]["uid"], request["request"]["uid"]);
        if let Some(patch) = answer["response"]["patch"].as_str() {
            use base64::Engine;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(patch)
                .expect("base64");
            let ops: serde_json::Value = serde_json::from_slice(&bytes).expect("JSON");
            assert!(ops
                .as_array()
                .is_some_and(|o| o.iter().all(|op| op["op"] == "add")));
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(once) = weft_kube::inject::inject_yaml(text, &opts) {
            // Injected manifests are left as they are by a second injection.
            assert_eq!(
                weft_kube::inject::inject_yaml(&once, &opts).ok().as_deref(),
                Some(once.as_str())
            );
        }
    }
}
