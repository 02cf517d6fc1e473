//! Traces on real sockets: sidecars join or start a trace, make a span per hop, pass the new
//! span's context on in the caller's formats, and report spans to a real Zipkin API (the
//! control plane's collector) or as OTLP the official protos decode.

mod support;

use http_body_util::BodyExt;
use prost::Message;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use support::*;
use tokio::net::TcpListener;
use weft_control::collector::{self, Collector, Limits, Span};

const REVIEWS: &str = "reviews.default.svc.cluster.local";

async fn zipkin() -> (Arc<Collector>, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let c = Arc::new(Collector::new(Limits::default()));
    tokio::spawn(collector::serve(listener, c.clone()));
    (c, addr)
}

/// The mesh's `istio` ConfigMap: a tracing provider at `addr` and a sampling rate.
fn mesh_config(provider: &str, addr: SocketAddr, sampling: f64) -> String {
    let provider = match provider {
        "zipkin" => format!("zipkin: {{service: {}, port: {}}}", addr.ip(), addr.port()),
        _ => format!(
            "opentelemetry: {{service: {}, port: {}, http: {{path: /v1/traces}}}}",
            addr.ip(),
            addr.port()
        ),
    };
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: istio, namespace: istio-system}}\ndata:\n  mesh: |-\n    defaultConfig:\n      tracing: {{sampling: {sampling}}}\n    defaultProviders: {{tracing: [collector]}}\n    extensionProviders:\n    - name: collector\n      {provider}\n---\n"
    )
}

/// Service reviews with one endpoint, 127.0.0.1 on `port`, as the control plane announces
/// a workload.
fn reviews_at(port: u16) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: reviews}}\nspec:\n  selector: {{app: reviews}}\n  ports: [{{name: http, port: 9080}}]\n---\n\
         apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{name: reviews-v3-0-127-0-0-1}}\nspec:\n  address: 127.0.0.1\n  labels: {{app: reviews, version: v3}}\n  ports: {{http: {port}}}\n---\n"
    )
}

/// Waits until the collector holds `count` spans of trace `id`.
async fn spans_of(c: &Collector, id: &str, count: usize) -> Vec<Span> {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match c.trace(id) {
                Some(spans) if spans.len() >= count => return spans,
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("trace {id} did not reach {count} spans: {:?}", c.trace(id)))
}

fn header<'a>(parts: &'a http::request::Parts, name: &str) -> &'a str {
    parts
        .headers
        .get(name)
        .map(|v| v.to_str().unwrap())
        .unwrap_or_else(|| panic!("no {name}: {:?}", parts.headers))
}

fn tag<'a>(s: &'a Span, key: &str) -> &'a str {
    s.tags
        .get(key)
        .unwrap_or_else(|| panic!("no tag {key}: {s:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_between_two_sidecars_is_one_trace_of_a_client_and_a_server_span() {
    let (zipkin, zipkin_addr) = zipkin().await;
    let mesh = mesh_config("zipkin", zipkin_addr, 100.0);
    let app = Backend::start("127.0.0.1", "app", ok()).await;
    let server_yaml = mesh.clone() + &reviews_at(app.addr.port());
    let (server, _log) = inbound_sidecar_with(reviews_v3(), app.addr, &server_yaml).await;
    let client = TestProxy::start(&(mesh + &reviews_at(server.inbound_addr.port()))).await;

    let a = client.client().get("reviews:9080", "/reviews/0", &[]).await;
    assert_eq!(a.status, 200, "{}", a.text());
    let seen = app.seen.lock().unwrap()[0].clone();
    // A new trace: 128-bit, in both families, the app seeing the server span as its parent.
    let trace = header(&seen, "x-b3-traceid").to_string();
    assert_eq!(trace.len(), 32, "{trace}");
    let server_span = header(&seen, "x-b3-spanid").to_string();
    let client_span = header(&seen, "x-b3-parentspanid").to_string();
    assert_eq!(header(&seen, "x-b3-sampled"), "1");
    assert_eq!(
        header(&seen, "traceparent"),
        format!("00-{trace}-{server_span}-01")
    );

    let spans = spans_of(&zipkin, &trace, 2).await;
    let by_kind = |kind: &str| {
        spans
            .iter()
            .find(|s| s.kind.as_deref() == Some(kind))
            .unwrap_or_else(|| panic!("no {kind} span: {spans:?}"))
    };
    let (c, s) = (by_kind("CLIENT"), by_kind("SERVER"));
    assert_eq!(
        (c.id.as_str(), c.parent_id.as_deref()),
        (client_span.as_str(), None)
    );
    assert_eq!(
        (s.id.as_str(), s.parent_id.as_deref()),
        (server_span.as_str(), Some(client_span.as_str()))
    );
    let name = format!("{REVIEWS}:9080/*");
    assert_eq!(c.name.as_deref(), Some(name.as_str()));
    assert_eq!(s.name.as_deref(), Some(name.as_str()));
    let service = |s: &Span| s.local_endpoint.as_ref().unwrap().service_name.clone();
    assert_eq!(service(c).as_deref(), Some("productpage.default"));
    assert_eq!(service(s).as_deref(), Some("reviews.default"));
    for (key, value) in [
        ("http.method", "GET"),
        ("http.status_code", "200"),
        ("http.url", "http://reviews:9080/reviews/0"),
        ("response_flags", "-"),
        ("component", "proxy"),
        ("istio.canonical_service", "productpage"),
        ("istio.namespace", "default"),
        ("upstream_cluster", &format!("outbound|9080||{REVIEWS}")),
    ] {
        assert_eq!(tag(c, key), value, "{key}");
    }
    assert_eq!(tag(s, "istio.canonical_service"), "reviews");
    assert_eq!(
        tag(s, "upstream_cluster"),
        format!("inbound|{}||", app.addr.port())
    );
    assert!(tag(c, "node_id").starts_with("sidecar~"), "{c:?}");
    assert_eq!(tag(c, "guid:x-request-id"), tag(s, "guid:x-request-id"));
    assert!(!c.tags.contains_key("error"));

    // The Zipkin query API finds it by service, as the Zipkin and Jaeger UIs ask.
    let http = HttpClient::new(zipkin_addr);
    let services = http.get("zipkin", "/api/v2/services", &[]).await.text();
    assert!(
        services.contains("productpage.default") && services.contains("reviews.default"),
        "{services}"
    );
    let found = http
        .get(
            "zipkin",
            "/api/v2/traces?serviceName=reviews.default&limit=5",
            &[],
        )
        .await
        .text();
    assert!(found.contains(&trace), "{found}");
    let names = http
        .get(
            "zipkin",
            "/api/v2/spans?serviceName=productpage.default",
            &[],
        )
        .await
        .text();
    assert_eq!(names, format!("[\"{name}\"]"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callers_trace_is_joined_and_passed_on_in_its_own_format() {
    let (zipkin, zipkin_addr) = zipkin().await;
    let upstream = Backend::start("127.0.0.1", "reviews", Arc::new(|_| (503, None))).await;
    let yaml = mesh_config("zipkin", zipkin_addr, 0.0) + &reviews_at(upstream.addr.port());
    let proxy = TestProxy::start(&yaml).await;
    // B3 single-header from the app, sampled: joined even though the rate is 0 %.
    let trace = "80f198ee56343ba864fe8b2a57d3eff7";
    let b3 = format!("{trace}-e457b5a2e4d86bd1-1");
    let a = proxy
        .client()
        .get("reviews:9080", "/", &[("b3", &b3)])
        .await;
    assert_eq!(a.status, 503);
    let seen = upstream.seen.lock().unwrap()[0].clone();
    let forwarded = header(&seen, "b3");
    let parts: Vec<&str> = forwarded.split('-').collect();
    assert_eq!(
        (parts[0], parts[2], parts[3]),
        (trace, "1", "e457b5a2e4d86bd1"),
        "{forwarded}"
    );
    assert!(
        !seen.headers.contains_key("x-b3-traceid") && !seen.headers.contains_key("traceparent")
    );
    let spans = spans_of(&zipkin, trace, 1).await;
    assert_eq!(spans[0].parent_id.as_deref(), Some("e457b5a2e4d86bd1"));
    assert_eq!(spans[0].id, parts[1]);
    assert_eq!(tag(&spans[0], "error"), "true");
    assert_eq!(tag(&spans[0], "http.status_code"), "503");

    // W3C from the app, not sampled: passed on not sampled, and nothing is reported.
    let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00";
    proxy
        .client()
        .get("reviews:9080", "/", &[("traceparent", traceparent)])
        .await;
    let seen = upstream.seen.lock().unwrap()[1].clone();
    let forwarded = header(&seen, "traceparent");
    assert!(
        forwarded.starts_with("00-0af7651916cd43dd8448eb211c80319c-") && forwarded.ends_with("-00"),
        "{forwarded}"
    );
    assert!(!forwarded.contains("b7ad6b7169203331"));
    // No context and a 0 % rate: a new trace, not sampled, in both families.
    proxy.client().get("reviews:9080", "/", &[]).await;
    let seen = upstream.seen.lock().unwrap()[2].clone();
    assert_eq!(header(&seen, "x-b3-sampled"), "0");
    assert!(header(&seen, "traceparent").ends_with("-00"));
    // A later sampled request is reported; the unsampled ones before it never were.
    let b3 = "463ac35c9f6413ad48485a3953bb6124-a2fb4a1d1a96d312-1";
    proxy.client().get("reviews:9080", "/", &[("b3", b3)]).await;
    spans_of(&zipkin, "463ac35c9f6413ad48485a3953bb6124", 1).await;
    assert!(zipkin.trace("0af7651916cd43dd8448eb211c80319c").is_none());
    assert_eq!(zipkin.services(), ["productpage.default"]);
    let all = zipkin.traces(&collector::Query {
        limit: 10,
        ..Default::default()
    });
    assert_eq!(all.len(), 2, "{all:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telemetry_sets_the_sampling_rate_of_the_workloads_it_selects() {
    let (_zipkin, zipkin_addr) = zipkin().await;
    let upstream = Backend::start("127.0.0.1", "reviews", ok()).await;
    let base = mesh_config("zipkin", zipkin_addr, 0.0) + &reviews_at(upstream.addr.port());
    let telemetry = |app: &str| {
        format!("apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {{name: sample-all}}\nspec:\n  selector: {{matchLabels: {{app: {app}}}}}\n  tracing: [{{randomSamplingPercentage: 100}}]\n")
    };
    let proxy = TestProxy::start(&(base.clone() + &telemetry("ratings"))).await;
    proxy.client().get("reviews:9080", "/", &[]).await;
    assert_eq!(
        header(&upstream.seen.lock().unwrap()[0], "x-b3-sampled"),
        "0"
    );
    proxy.reconfigure(&(base + &telemetry("productpage"))).await;
    proxy.client().get("reviews:9080", "/", &[]).await;
    assert_eq!(
        header(&upstream.seen.lock().unwrap()[1], "x-b3-sampled"),
        "1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_go_out_as_otlp_that_the_official_protos_decode() {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let otlp_addr = listener.local_addr().unwrap();
    let (tx, mut bodies) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let tx = tx.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let tx = tx.clone();
                        async move {
                            let path = req.uri().path().to_string();
                            let kind = req.headers()[http::header::CONTENT_TYPE]
                                .to_str()
                                .unwrap()
                                .to_string();
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            tx.send((path, kind, body)).unwrap();
                            Ok::<_, std::convert::Infallible>(http::Response::new(
                                http_body_util::Full::new(bytes::Bytes::new()),
                            ))
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    let upstream = Backend::start("127.0.0.1", "reviews", ok()).await;
    let yaml = mesh_config("otel", otlp_addr, 100.0) + &reviews_at(upstream.addr.port());
    let proxy = TestProxy::start(&yaml).await;
    proxy.client().get("reviews:9080", "/reviews/1", &[]).await;
    let (path, kind, body) = tokio::time::timeout(Duration::from_secs(10), bodies.recv())
        .await
        .expect("spans exported")
        .unwrap();
    assert_eq!(
        (path.as_str(), kind.as_str()),
        ("/v1/traces", "application/x-protobuf")
    );
    let request = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
    let resource = &request.resource_spans[0];
    let service = &resource.resource.as_ref().unwrap().attributes[0];
    assert_eq!(service.key, "service.name");
    let span = &resource.scope_spans[0].spans[0];
    let seen = upstream.seen.lock().unwrap()[0].clone();
    assert_eq!(hex(&span.trace_id), header(&seen, "x-b3-traceid"));
    assert_eq!(hex(&span.span_id), header(&seen, "x-b3-spanid"));
    assert_eq!(span.name, format!("{REVIEWS}:9080/*"));
    assert_eq!(span.kind, 3, "CLIENT");
    assert!(span.end_time_unix_nano > span.start_time_unix_nano);
    let attribute = |key: &str| {
        span.attributes
            .iter()
            .find(|a| a.key == key)
            .and_then(|a| a.value.as_ref())
            .and_then(|v| match &v.value {
                Some(opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(s)) => {
                    Some(s.clone())
                }
                _ => None,
            })
    };
    assert_eq!(attribute("http.status_code").as_deref(), Some("200"));
    assert_eq!(
        attribute("istio.canonical_service").as_deref(),
        Some("productpage")
    );
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absent_collector_fails_reports_not_requests() {
    // Nothing listens here once the listener is gone.
    let gone = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let upstream = Backend::start("127.0.0.1", "reviews", ok()).await;
    let yaml = mesh_config("zipkin", gone, 100.0) + &reviews_at(upstream.addr.port());
    let proxy = TestProxy::start(&yaml).await;
    for _ in 0..20 {
        assert_eq!(
            proxy.client().get("reviews:9080", "/", &[]).await.status,
            200
        );
    }
    wait_for(
        proxy.proxy.stats_addr,
        "envoy_tracing_zipkin_reports_failed",
        &[],
        1.0,
    )
    .await;
}

/// Istio's four kinds of custom tag, a `formatter` one written in access-log operators.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_tags_from_telemetry_are_on_every_span() {
    let (zipkin, zipkin_addr) = zipkin().await;
    let upstream = Backend::start("127.0.0.1", "reviews", ok()).await;
    let telemetry = "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: tags, namespace: istio-system}\nspec:\n  tracing:\n  - customTags:\n      team: {literal: {value: platform}}\n      user: {header: {name: X-User, defaultValue: anonymous}}\n      home: {environment: {name: WEFT_TEST_UNSET_VARIABLE, defaultValue: none}}\n      outcome: {formatter: {value: '%RESPONSE_CODE% %REQ(X-USER)% via %UPSTREAM_CLUSTER%'}}\n";
    let yaml = mesh_config("zipkin", zipkin_addr, 100.0)
        + &reviews_at(upstream.addr.port())
        + "---\n"
        + telemetry;
    let proxy = TestProxy::start(&yaml).await;
    for user in [Some("jason"), None] {
        let headers: Vec<(&str, &str)> = user.map(|u| ("x-user", u)).into_iter().collect();
        proxy.client().get("reviews:9080", "/", &headers).await;
    }
    let seen = upstream.seen.lock().unwrap().clone();
    for (parts, user) in seen.iter().zip(["jason", "anonymous"]) {
        let spans = spans_of(&zipkin, header(parts, "x-b3-traceid"), 1).await;
        assert_eq!(tag(&spans[0], "team"), "platform");
        assert_eq!(tag(&spans[0], "user"), user);
        assert_eq!(tag(&spans[0], "home"), "none");
        let missing = if user == "anonymous" { "-" } else { user };
        assert_eq!(
            tag(&spans[0], "outcome"),
            format!("200 {missing} via outbound|9080||reviews.default.svc.cluster.local")
        );
    }
}
