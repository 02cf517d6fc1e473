//! Istio's Bookinfo tasks as acceptance tests: `weft demo --load 20` runs as a child
//! process, Istio's own networking files are applied unchanged with `weft apply -f`, and
//! each task's outcome is checked through the ingress gateway on 127.0.0.1:8080, as a
//! browser sees it: request routing, fault injection, traffic shifting, and a focused
//! canary on the login email.
//!
//! One test: the gateway's port is the one Istio's bookinfo-gateway names, so the scenarios
//! share one demo and run in sequence. Every apply is followed by a wait until every proxy
//! acknowledged a new version. Needs root or unprivileged user namespaces, and fails (never
//! skips) without them or when 127.0.0.1:8080 is taken.

mod support;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, SET_COOKIE};
use http::Request;
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use support::*;
use tokio::time::Instant;

const NETWORKING: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/istio-samples/bookinfo/networking"
);
/// The policies of Istio's "Authorization for HTTP traffic" task, as the task writes them.
const AUTHORIZATION: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../examples/bookinfo/authorization"
);
/// The STRICT mesh-wide PeerAuthentication of Istio's "Mutual TLS Migration" task.
const MTLS_STRICT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../examples/bookinfo/mtls/strict.yaml"
);
const FOCUSED_CANARY: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../examples/bookinfo/virtual-service-reviews-focused-canary.yaml"
);
const GATEWAY: &str = "127.0.0.1:8080";
const PROMETHEUS: &str = "127.0.0.1:9090";
const ZIPKIN: &str = "127.0.0.1:9411";
const DASHBOARD: &str = "127.0.0.1:20001";
/// Istio's Grafana dashboards (mesh, service, workload).
const GRAFANA: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/istio-samples/grafana"
);
/// Bookinfo's six pods, the ingress gateway, tcp-echo, sleep, ext-authz, legacy's curl,
/// edition.cnn.com and my-nginx.
const PODS: usize = 13;
/// Every pod but legacy's curl, edition.cnn.com and my-nginx, which run outside the mesh.
const PROXIES: usize = 10;
const REVIEWS_UNAVAILABLE: &str = "Sorry, product reviews are currently unavailable for this book.";
const RATINGS_UNAVAILABLE: &str = "Ratings service is currently unavailable";

/// The requests each statistical check sends. With 200 requests a share p is observed with
/// a binomial standard deviation of sqrt(p(1-p)/200): 3.5 points at 50%, 2.8 at 20%, 2.1
/// at 10%. Checks allow 4 of them (±14, ±11, ±8.5 points), so a correct split fails a
/// check about once in 16,000 runs, and a split off by more than that fails it at least
/// half the time.
const SAMPLE: usize = 200;
const SIGMAS: f64 = 4.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Stars {
    /// reviews v1: no stars anywhere on the page.
    None,
    /// reviews v2.
    Black,
    /// reviews v3.
    Red,
}

struct Page {
    elapsed: Duration,
    status: u16,
    html: String,
}

impl Page {
    /// Both details and reviews answered, and reviews got its ratings.
    fn is_whole(&self) -> bool {
        self.status == 200
            && !self.html.contains("class=\"error\"")
            && !self.html.contains("class=\"rating-error\"")
    }

    fn stars(&self) -> Stars {
        let black = self.html.contains("data-color=\"black\"");
        let red = self.html.contains("data-color=\"red\"");
        match (black, red) {
            (true, false) => Stars::Black,
            (false, true) => Stars::Red,
            (false, false) if !self.html.contains("glyphicon") => Stars::None,
            _ => panic!("a page with mixed stars:\n{}", self.html),
        }
    }

    fn served_by(&self) -> &str {
        self.html
            .split_once("Reviews served by: ")
            .and_then(|(_, rest)| rest.split(['<', ' ']).next())
            .unwrap_or("")
    }
}

struct Demo {
    weft: Weft,
    state: tempfile::TempDir,
    control: SocketAddr,
    client: HttpClient,
}

impl Demo {
    fn start(load: u32) -> Demo {
        // Istio's Gateway names 8080; say so plainly rather than fail somewhere later.
        if let Err(e) = std::net::TcpListener::bind(GATEWAY) {
            panic!(
                "{GATEWAY} is taken ({e}): weft demo's ingress gateway listens there, as \
                 Istio's bookinfo-gateway says; stop whatever holds it (ss -ltnp 'sport = :8080')"
            );
        }
        let state = tempfile::tempdir().unwrap();
        let control = free_addrs::<1>()[0];
        let weft = Weft::spawn(&[
            "--control-plane".into(),
            control.to_string(),
            "demo".into(),
            "--load".into(),
            load.to_string(),
            "--state-dir".into(),
            state.path().join("run").display().to_string(),
            // Required, so that a machine without it fails here; scraped often, so that
            // the test waits seconds, not Istio's 15 s.
            "--prometheus".into(),
            "--scrape-interval".into(),
            "2".into(),
        ]);
        Demo {
            weft,
            state,
            control,
            client: client(),
        }
    }

    async fn weft(&self, args: &[&str]) -> (std::process::ExitStatus, String, String) {
        let mut all = vec!["--control-plane".to_string(), self.control.to_string()];
        all.extend(args.iter().map(|a| a.to_string()));
        if matches!(args[0], "status" | "logs" | "down" | "exec") {
            // Before exec's `--`, after which its arguments are the command's.
            let at = all.len() - args.len() + 1;
            let dir = self.state.path().join("run").display().to_string();
            all.splice(at..at, ["--state-dir".to_string(), dir]);
        }
        run_weft(&all).await
    }

    /// Waits for every pod to be ready and the page to render whole through the gateway;
    /// fails at once if the demo exits.
    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Some(status) = self.weft.exited() {
                panic!("weft demo exited ({status})\n{}", self.weft.output());
            }
            if self.pods_ready().await && self.page(None).await.is_some_and(|p| p.is_whole()) {
                return;
            }
            if Instant::now() >= deadline {
                let sandbox =
                    std::fs::read_to_string(self.state.path().join("run/logs/sandbox.log"))
                        .unwrap_or_default();
                panic!(
                    "Bookinfo never came up: {:?}\n{}\n--- sandbox.log ---\n{sandbox}",
                    self.weft(&["status"]).await.1,
                    self.weft.output()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn pods_ready(&self) -> bool {
        let (status, out, _) = self.weft(&["status", "-o", "json"]).await;
        let pods = serde_json::from_str::<Value>(&out).ok().and_then(|s| {
            s["pods"]
                .as_array()
                .map(|pods| pods.iter().filter(|p| p["ready"] == true).count())
        });
        status.success() && pods == Some(PODS)
    }

    /// Each proxy's (sync state, acknowledged version), by name.
    async fn proxies(&self) -> BTreeMap<String, (String, String)> {
        let (status, out, err) = self.weft(&["proxy-status", "-o", "json"]).await;
        assert!(status.success(), "weft proxy-status: {err}");
        let rows: Vec<Value> = serde_json::from_str(&out).unwrap();
        rows.iter()
            .map(|r| {
                let field = |k: &str| r[k].as_str().unwrap_or_default().to_string();
                (field("name"), (field("status"), field("ackedVersion")))
            })
            .collect()
    }

    /// `weft apply -f file`; when it changed anything, waits until every proxy is SYNCED
    /// again, on a new version for those whose view the change touched (a namespace's
    /// policies reach that namespace's proxies only).
    async fn apply(&self, file: &Path) -> String {
        let before = self.proxies().await;
        assert_eq!(before.len(), PROXIES, "{before:?}");
        let (status, out, err) = self
            .weft(&["apply", "-f", &file.display().to_string()])
            .await;
        assert!(
            status.success(),
            "weft apply -f {} failed:\n{out}{err}",
            file.display()
        );
        let changed = out
            .lines()
            .any(|l| l.ends_with(" created") || l.ends_with(" configured"));
        if changed {
            let synced = poll_until(Duration::from_secs(20), || async {
                let now = self.proxies().await;
                let all = now.len() == before.len()
                    && now.iter().all(|(_, (state, _))| state == "SYNCED")
                    && now.iter().any(|(name, (_, acked))| {
                        before.get(name).is_some_and(|(_, old)| old != acked)
                    });
                all.then_some(())
            })
            .await;
            assert!(
                synced.is_some(),
                "proxies never acknowledged {}: {:?}",
                file.display(),
                self.weft(&["proxy-status"]).await.1
            );
        }
        out
    }

    async fn apply_istio(&self, name: &str) -> String {
        self.apply(&Path::new(NETWORKING).join(name)).await
    }

    /// GET /productpage through the gateway, as a browser holding `cookie`.
    async fn page(&self, cookie: Option<&str>) -> Option<Page> {
        let headers: Vec<(&str, &str)> = cookie.map(|c| ("cookie", c)).into_iter().collect();
        let gateway: SocketAddr = GATEWAY.parse().unwrap();
        let started = Instant::now();
        let answer = send(
            &self.client,
            "GET",
            gateway,
            GATEWAY,
            "/productpage",
            &headers,
        )
        .await
        .ok()?;
        Some(Page {
            elapsed: started.elapsed(),
            status: answer.status.as_u16(),
            html: answer.text(),
        })
    }

    async fn must_page(&self, cookie: Option<&str>) -> Page {
        match self.page(cookie).await {
            Some(page) => page,
            None => panic!("no page through the gateway for cookie {cookie:?}"),
        }
    }

    /// Signs in as productpage's login form does; returns the cookies as a browser sends
    /// them back (`user=…; email=…`).
    async fn login(&self, user: &str) -> String {
        let form = format!("username={}&passwd=anything", user.replace('@', "%40"));
        let request = Request::post(format!("http://{GATEWAY}/login"))
            .header("host", GATEWAY)
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from(form)))
            .unwrap();
        let response = self.client.request(request).await.expect("POST /login");
        assert_eq!(response.status(), 302, "POST /login as {user}");
        let cookies: Vec<String> = response
            .headers()
            .get_all(SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok()?.split(';').next().map(str::to_string))
            .collect();
        let _ = response.into_body().collect().await;
        assert_eq!(cookies.len(), 2, "user and email cookies: {cookies:?}");
        cookies.join("; ")
    }

    /// `n` pages, cycling through `users` (None: signed out); every one must be whole.
    async fn sample(&self, users: &[Option<String>], n: usize) -> BTreeMap<Stars, usize> {
        let mut counts = BTreeMap::new();
        for i in 0..n {
            let cookie = users[i % users.len()].as_deref();
            let page = self.must_page(cookie).await;
            assert!(
                page.is_whole(),
                "a broken page for {cookie:?}:\n{}",
                page.html
            );
            *counts.entry(page.stars()).or_insert(0) += 1;
        }
        counts
    }

    /// Every page for `users` shows `want`.
    async fn always(&self, what: &str, users: &[Option<String>], want: Stars) {
        let counts = self.sample(users, 30).await;
        eprintln!("{what}: {counts:?}");
        assert_eq!(counts.keys().collect::<Vec<_>>(), [&want], "{what}");
    }

    /// About `share` of `SAMPLE` pages show `want`; none show `never`.
    async fn split(
        &self,
        what: &str,
        users: &[Option<String>],
        want: Stars,
        share: f64,
        never: Stars,
    ) {
        let counts = self.sample(users, SAMPLE).await;
        let got = counts.get(&want).copied().unwrap_or(0) as f64 / SAMPLE as f64;
        let tolerance = SIGMAS * (share * (1.0 - share) / SAMPLE as f64).sqrt();
        eprintln!(
            "{what}: {counts:?}: {want:?} {:.1}% (expected {:.0}% ± {:.1} points)",
            got * 100.0,
            share * 100.0,
            tolerance * 100.0
        );
        assert!(
            (got - share).abs() <= tolerance,
            "{what}: {want:?} on {:.1}% of {SAMPLE} pages, expected {:.0}% ± {:.1}: {counts:?}",
            got * 100.0,
            share * 100.0,
            tolerance * 100.0
        );
        assert!(!counts.contains_key(&never), "{what}: {counts:?}");
    }

    /// Lines of the gateway's access log that served the page.
    /// The series an instant PromQL query returns from the demo's Prometheus (none when it
    /// does not answer).
    async fn promql(&self, query: &str) -> Vec<Value> {
        self.promql_checked(query).await.unwrap_or_default()
    }

    /// An instant query's result, or why Prometheus refused it.
    async fn promql_checked(&self, query: &str) -> Result<Vec<Value>, String> {
        let encoded: String = query
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        let path = format!("/api/v1/query?query={encoded}");
        let addr: SocketAddr = PROMETHEUS.parse().unwrap();
        let a = send(&self.client, "GET", addr, PROMETHEUS, &path, &[])
            .await
            .map_err(|e| e.to_string())?;
        let v: Value = serde_json::from_slice(&a.body).map_err(|e| e.to_string())?;
        match v["status"].as_str() {
            Some("success") => Ok(v["data"]["result"].as_array().cloned().unwrap_or_default()),
            _ => Err(format!("{}: {}", a.status, v["error"])),
        }
    }

    /// Fills a dashboard's variables in order, as Grafana does: a query variable's options
    /// are its `query_result(...)` lines through its regex; "All" (or several values)
    /// becomes Grafana's escaped `(a|b)`; otherwise the saved choice if it is an option,
    /// else the first. `fixed` values are kept.
    async fn grafana_variables(
        &self,
        variables: &[Value],
        fixed: &BTreeMap<String, String>,
    ) -> (BTreeMap<String, String>, BTreeMap<String, Vec<String>>) {
        let mut values: BTreeMap<String, String> = [
            ("__rate_interval", "1m"),
            ("__interval", "15s"),
            ("__range", "5m"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .into();
        let mut options_of = BTreeMap::new();
        for var in variables {
            let name = var["name"].as_str().unwrap_or_default().to_string();
            let current = &var["current"]["value"];
            let all = current == "$__all" || current.get(0).is_some_and(|v| v == "$__all");
            let options: Vec<String> = match var["type"].as_str() {
                Some("datasource") => vec!["prometheus".into()],
                Some("custom") => var["query"]
                    .as_str()
                    .unwrap_or_default()
                    .split(',')
                    .map(|o| o.trim().to_string())
                    .collect(),
                Some("query") => {
                    let query = var["query"]
                        .as_str()
                        .or_else(|| var["query"]["query"].as_str())
                        .unwrap_or_default();
                    let query = fill(query, &values);
                    let inner = query
                        .trim()
                        .strip_prefix("query_result(")
                        .and_then(|q| q.strip_suffix(')'))
                        .unwrap_or(&query);
                    let regex = var["regex"].as_str().unwrap_or_default().trim_matches('/');
                    let regex = regex::Regex::new(if regex.is_empty() { "(.*)" } else { regex })
                        .expect("Grafana's variable regex");
                    let lines = self.promql_checked(inner).await.unwrap_or_default();
                    let mut found: Vec<String> = lines
                        .iter()
                        .filter_map(|series| {
                            let line = query_result_line(series);
                            Some(regex.captures(&line)?.get(1)?.as_str().to_string())
                        })
                        .collect();
                    found.sort();
                    found.dedup();
                    found
                }
                _ => Vec::new(),
            };
            let multi = var["multi"] == true || var["includeAll"] == true;
            let value = match fixed.get(&name) {
                Some(v) => v.clone(),
                None if all
                    || (multi && current.is_array() && current.as_array().unwrap().len() > 1) =>
                {
                    let chosen: Vec<String> = if all {
                        options.clone()
                    } else {
                        current
                            .as_array()
                            .unwrap()
                            .iter()
                            .filter_map(|v| v.as_str().map(String::from))
                            .collect()
                    };
                    format!(
                        "({})",
                        chosen
                            .iter()
                            .map(|o| grafana_escape(o))
                            .collect::<Vec<_>>()
                            .join("|")
                    )
                }
                None => {
                    let saved = current.as_str().or_else(|| current.get(0)?.as_str());
                    let one = saved
                        .filter(|s| options.iter().any(|o| o == s))
                        .map(String::from)
                        .or_else(|| options.first().cloned())
                        .unwrap_or_default();
                    if multi {
                        grafana_escape(&one)
                    } else {
                        one
                    }
                }
            };
            values.insert(name.clone(), value);
            options_of.insert(name, options);
        }
        (values, options_of)
    }

    /// Evaluates every panel expression of a dashboard of Istio's, once for each choice of
    /// its service or workload, as a user picks them. Returns how many
    /// expressions there are and those that never returned data, with whether an exemption
    /// explains it.
    async fn grafana_dashboard(&self, file: &Path) -> (usize, Vec<(String, Option<&'static str>)>) {
        let d: Value = serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
        let variables = d["templating"]["list"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let mut exprs = Vec::new();
        collect_exprs(&d["panels"], &mut exprs);
        // What the dashboard is about: its service or workload.
        let primary = variables
            .iter()
            .filter_map(|v| v["name"].as_str())
            .find(|n| matches!(*n, "service" | "workload"));
        let choices: Vec<BTreeMap<String, String>> = match primary {
            None => vec![BTreeMap::new()],
            Some(name) => {
                let (_, options) = self.grafana_variables(&variables, &BTreeMap::new()).await;
                options[name]
                    .iter()
                    .map(|o| BTreeMap::from([(name.to_string(), o.clone())]))
                    .collect()
            }
        };
        let mut answered = vec![false; exprs.len()];
        for fixed in &choices {
            let (values, _) = self.grafana_variables(&variables, fixed).await;
            for (i, expr) in exprs.iter().enumerate() {
                if !answered[i] {
                    let query = fill(expr, &values);
                    match self.promql_checked(&query).await {
                        Ok(r) => answered[i] = !r.is_empty(),
                        Err(e) => panic!("{}: Prometheus refused {query}: {e}", file.display()),
                    }
                }
            }
        }
        let silent = exprs
            .iter()
            .zip(answered)
            .filter(|(_, a)| !a)
            .map(|(e, _)| (e.clone(), grafana_exemption(e)))
            .collect();
        (exprs.len(), silent)
    }

    /// Waits until `query` returns series from the demo's Prometheus.
    async fn wait_for_series(&self, query: &str) -> Vec<Value> {
        let found = poll_until(Duration::from_secs(60), || async {
            Some(self.promql(query).await).filter(|r| !r.is_empty())
        })
        .await;
        match found {
            Some(series) => series,
            None => panic!(
                "Prometheus at {PROMETHEUS} has nothing for {query}; its targets: {:?}",
                self.promql("up").await
            ),
        }
    }

    /// The versioned-app graph from a dashboard once it shows Bookinfo's calls: the gateway
    /// to productpage, productpage to reviews and details, reviews to ratings, sleep to
    /// tcp-echo over TCP.
    async fn bookinfo_graph(&self, dashboard: SocketAddr) -> Value {
        let path = "/api/namespaces/graph?graphType=versionedApp&duration=60s";
        // Sources by prefix: sleep and the gateway have no version label (`latest`).
        let wanted = [
            ("istio-ingressgateway", "svc-default-productpage", "http"),
            ("app-default-productpage-v1", "svc-default-reviews", "http"),
            ("app-default-productpage-v1", "svc-default-details", "http"),
            ("svc-default-reviews", "app-default-reviews-v2", "http"),
            ("svc-default-ratings", "app-default-ratings-v1", "http"),
            ("app-default-sleep", "svc-default-tcp-echo", "tcp"),
        ];
        let last = std::cell::RefCell::new(Value::Null);
        let found = poll_until(Duration::from_secs(90), || {
            let last = &last;
            async move {
                let a = send(&self.client, "GET", dashboard, DASHBOARD, path, &[])
                    .await
                    .ok()?;
                let graph: Value = serde_json::from_slice(&a.body).unwrap_or_default();
                *last.borrow_mut() = graph.clone();
                let edges = graph["elements"]["edges"].as_array()?;
                let all = wanted.iter().all(|(from, to, proto)| {
                    edges.iter().any(|e| {
                        let d = &e["data"];
                        d["source"].as_str().is_some_and(|s| s.contains(from))
                            && d["target"] == *to
                            && d["traffic"]["protocol"] == *proto
                            && d["traffic"]["rates"].as_object().is_some_and(|r| {
                                r.values().any(|v| {
                                    v.as_str()
                                        .is_some_and(|v| v.parse::<f64>().is_ok_and(|v| v > 0.0))
                                })
                            })
                    })
                });
                all.then_some(graph)
            }
        })
        .await;
        found.unwrap_or_else(|| {
            panic!(
                "the dashboard at {dashboard} never graphed Bookinfo: {}",
                last.borrow()
            )
        })
    }

    /// GET on the demo's trace collector (Zipkin's v2 API), as JSON.
    async fn zipkin(&self, path: &str) -> Value {
        let addr: SocketAddr = ZIPKIN.parse().unwrap();
        match send(&self.client, "GET", addr, ZIPKIN, path, &[]).await {
            Ok(a) => serde_json::from_slice(&a.body).unwrap_or_default(),
            Err(_) => Value::Null,
        }
    }

    /// A trace from the collector in which the ratings span descends, parent by parent, from
    /// reviews, productpage and the ingress gateway: Bookinfo forwards the trace headers and
    /// every sidecar adds its span.
    async fn connected_trace(&self) -> Vec<Value> {
        let found = poll_until(Duration::from_secs(60), || async {
            let traces = self
                .zipkin("/api/v2/traces?serviceName=ratings.default&limit=50")
                .await;
            traces
                .as_array()?
                .iter()
                .filter_map(Value::as_array)
                .find(|spans| {
                    let chain = ancestry(spans, "ratings.default");
                    [
                        "reviews.default",
                        "productpage.default",
                        "istio-ingressgateway.istio-system",
                    ]
                    .iter()
                    .all(|s| chain.contains(&s.to_string()))
                })
                .cloned()
        })
        .await;
        match found {
            Some(trace) => trace,
            None => panic!(
                "no trace links ratings to the gateway at {ZIPKIN}: {:?}",
                self.zipkin("/api/v2/traces?limit=3").await
            ),
        }
    }

    /// The ingress gateway's sidecar log.
    async fn gateway_log(&self) -> String {
        let (status, log, err) = self
            .weft(&[
                "logs",
                "istio-ingressgateway",
                "-n",
                "istio-system",
                "--proxy",
            ])
            .await;
        assert!(status.success(), "weft logs: {err}");
        log
    }

    async fn gateway_pages_served(&self) -> usize {
        self.gateway_log()
            .await
            .lines()
            .filter(|l| l.contains("\"GET /productpage HTTP/1.1\" 200"))
            .count()
    }
}

/// Grafana's escaping of a value inside a regex matcher (`=~"$var"`) for Prometheus.
fn grafana_escape(value: &str) -> String {
    let mut out = String::new();
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\\\\\"),
            '$' | '^' | '*' | '{' | '}' | '[' | ']' | '\'' | '+' | '?' | '.' | '(' | ')' | '|' => {
                out.push_str("\\\\");
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

/// `$var`, `${var}` and `[[var]]`, longest names first.
fn fill(text: &str, values: &BTreeMap<String, String>) -> String {
    let mut names: Vec<&String> = values.keys().collect();
    names.sort_by_key(|n| std::cmp::Reverse(n.len()));
    let mut out = text.to_string();
    for name in names {
        let v = &values[name];
        out = out
            .replace(&format!("${{{name}}}"), v)
            .replace(&format!("[[{name}]]"), v)
            .replace(&format!("${name}"), v);
    }
    out
}

/// A series as Grafana's `query_result` prints it: `name{k="v",…} value timestamp`.
fn query_result_line(series: &Value) -> String {
    let metric = series["metric"].as_object().cloned().unwrap_or_default();
    let name = metric
        .get("__name__")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let labels: Vec<String> = metric
        .iter()
        .filter(|(k, _)| *k != "__name__")
        .map(|(k, v)| format!("{k}=\"{}\"", v.as_str().unwrap_or_default()))
        .collect();
    format!(
        "{name}{{{}}} {} {}",
        labels.join(","),
        series["value"][1].as_str().unwrap_or_default(),
        series["value"][0]
    )
}

fn collect_exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(o) => {
            for t in o
                .get("targets")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(e) = t["expr"].as_str() {
                    out.push(e.to_string());
                }
            }
            for (k, v) in o {
                if k != "targets" {
                    collect_exprs(v, out);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| collect_exprs(i, out)),
        _ => {}
    }
}

/// The issuer of Istio's "Authentication Policy" task, made by the test: an ES256 key, its
/// JWKS, and the tokens it signs.
struct TestIssuer {
    pair: ring::signature::EcdsaKeyPair,
    jwks: String,
}

impl TestIssuer {
    const NAME: &'static str = "testing@secure.istio.io";

    fn new() -> TestIssuer {
        use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        let point = pair.public_key().as_ref();
        let jwks = serde_json::json!({"keys": [{
            "kty": "EC", "crv": "P-256", "alg": "ES256", "kid": "test",
            "x": b64url(&point[1..33]), "y": b64url(&point[33..65]),
        }]})
        .to_string();
        TestIssuer { pair, jwks }
    }

    /// A token for the task's subject, valid for an hour.
    fn token(&self) -> String {
        let exp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 3600;
        let header = b64url(br#"{"alg":"ES256","typ":"JWT","kid":"test"}"#);
        let claims = serde_json::json!({"iss": Self::NAME, "sub": Self::NAME, "exp": exp});
        let signed = format!("{header}.{}", b64url(claims.to_string().as_bytes()));
        let signature = self
            .pair
            .sign(&ring::rand::SystemRandom::new(), signed.as_bytes())
            .unwrap();
        format!("{signed}.{}", b64url(signature.as_ref()))
    }
}

fn b64url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Why an expression of Istio's dashboards may return nothing on the demo: every hop between
/// the demo's sidecars is mutual TLS, and legacy's curl (outside the mesh) fills those for
/// plaintext callers, but none selects plaintext *destinations* of a sidecar's calls
/// (`destination_principal!~"spiffe.*"` as the source: no mesh workload calls out of the
/// mesh on the demo); Istio's proxies report `connection_security_policy` only as the
/// destination (`unknown` as the source), so source reports selecting `mutual_tls` are
/// empty on Istio too; TCP expressions need the sleep → tcp-echo traffic.
fn grafana_exemption(expr: &str) -> Option<&'static str> {
    let mtls = regex::Regex::new(r#"[^!]="mutual_tls""#).unwrap();
    if expr.contains(r#"connection_security_policy!="mutual_tls""#)
        || expr.contains(r#"principal!~"spiffe"#)
    {
        Some("plaintext")
    } else if mtls.is_match(expr) && expr.contains(r#"reporter="source""#) {
        Some("mTLS as the source")
    } else if expr.contains("istio_tcp_") {
        Some("TCP")
    } else {
        None
    }
}

/// The services of `service`'s first span and of each of its ancestors, by parent id.
fn ancestry(spans: &[Value], service: &str) -> Vec<String> {
    let service_of = |s: &Value| {
        s["localEndpoint"]["serviceName"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    let by_id: BTreeMap<&str, &Value> = spans
        .iter()
        .filter_map(|s| Some((s["id"].as_str()?, s)))
        .collect();
    let mut chain = Vec::new();
    let mut at = spans.iter().find(|s| service_of(s) == service);
    while let Some(span) = at {
        chain.push(service_of(span));
        at = span["parentId"]
            .as_str()
            .and_then(|p| by_id.get(p).copied());
        if chain.len() > spans.len() {
            break;
        }
    }
    chain
}

/// Istio's networking files that concern the demo's services: all but those for the
/// ratings database (MySQL, also on a VM), cert-manager and Google APIs.
fn demo_networking_files() -> Vec<PathBuf> {
    let entries = std::fs::read_dir(NETWORKING).unwrap_or_else(|e| {
        panic!(
            "cannot read Istio's Bookinfo samples at {NETWORKING}: {e}\n\
             this test needs istio-samples checked out at ../shared beside the repository"
        )
    });
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("directory entry").path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.ends_with(".yaml")
                && !["ratings-db", "mysql", "certmanager", "google-apis"]
                    .iter()
                    .any(|skip| name.contains(skip))
        })
        .collect();
    files.sort();
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istio_bookinfo_tasks_on_weft_demo() {
    let started = Instant::now();
    let mut demo = Demo::start(20);
    demo.wait_ready().await;
    eprintln!("demo ready after {:.1} s", started.elapsed().as_secs_f64());
    let printed = poll_until(DEADLINE, || {
        let out = demo.weft.stdout();
        std::future::ready(out.contains("weft apply -f").then_some(out))
    })
    .await
    .unwrap_or_else(|| panic!("weft demo printed no guide\n{}", demo.weft.output()));
    assert!(
        printed.contains("http://127.0.0.1:8080/productpage")
            && printed.contains("weft status")
            && printed.contains("weft proxy-status")
            && printed.contains(
                "weft apply -f samples/bookinfo/networking/virtual-service-reviews-test-v2.yaml"
            ),
        "{printed}"
    );

    // The summary says where the traces are.
    let summary = poll_until(DEADLINE, || {
        std::future::ready(up_summary(demo.weft.stderr()))
    })
    .await
    .unwrap_or_default();
    assert!(
        summary.contains("traces at http://127.0.0.1:9411"),
        "{summary}"
    );

    // Every sidecar holds a certificate for its service account, which proxy-config shows.
    let secrets = poll_until(DEADLINE, || async {
        let (status, out, _) = demo
            .weft(&["proxy-config", "secret", "productpage-v1-0", "-o", "json"])
            .await;
        let rows: Vec<Value> = serde_json::from_str(&out)
            .ok()
            .filter(|_| status.success())?;
        (rows.len() == 2).then_some(rows)
    })
    .await
    .expect("weft proxy-config secret lists the certificate productpage's sidecar holds");
    assert_eq!(secrets[0]["resourceName"], "default");
    assert_eq!(secrets[0]["validCert"], true);
    assert_eq!(
        secrets[0]["uriSans"][0],
        "spiffe://cluster.local/ns/default/sa/bookinfo-productpage"
    );
    assert_eq!(secrets[1]["resourceName"], "ROOTCA");
    let (_, table, _) = demo
        .weft(&["proxy-config", "secret", "productpage-v1-0"])
        .await;
    assert!(
        table.starts_with("RESOURCE NAME") && table.contains("Cert Chain"),
        "{table}"
    );

    // --load 20: while this test sends nothing, the gateway keeps serving the page (40 pages
    // is two seconds' worth).
    let before = demo.gateway_pages_served().await;
    let grew = poll_until(Duration::from_secs(15), || async {
        let now = demo.gateway_pages_served().await;
        (now >= before + 40).then_some(now)
    })
    .await;
    assert!(
        grew.is_some(),
        "the gateway served {} pages under --load 20 (from {before})\n{}",
        demo.gateway_pages_served().await,
        demo.weft.output()
    );

    // Prometheus, run by the demo as Istio's addon, scrapes every sidecar: destination
    // reports name their caller (peer metadata), source reports the workload that answered,
    // both by the Deployment's name; bucket bounds select as Prometheus writes them.
    for query in [
        r#"istio_requests_total{reporter="destination",destination_app="reviews",source_workload="productpage-v1"}"#,
        r#"istio_requests_total{reporter="destination",destination_workload="productpage-v1",source_workload="istio-ingressgateway"}"#,
        r#"istio_requests_total{reporter="source",source_workload="productpage-v1",destination_workload="reviews-v2",destination_canonical_revision="v2"}"#,
        r#"istio_request_duration_milliseconds_bucket{reporter="destination",destination_app="ratings",source_app="reviews",le="100"}"#,
        // Sidecar to sidecar is mutual TLS, with both identities.
        r#"istio_requests_total{reporter="destination",connection_security_policy="mutual_tls",source_principal="spiffe://cluster.local/ns/default/sa/bookinfo-productpage"}"#,
        r#"istio_requests_total{reporter="source",source_workload="productpage-v1",destination_principal="spiffe://cluster.local/ns/default/sa/bookinfo-reviews"}"#,
        // The control plane under istiod's names: pushes by xDS type, its build.
        r#"pilot_xds_pushes{app="istiod",namespace="istio-system",type="eds"} > 0"#,
        r#"istio_build{app="istiod",component="pilot"} == 1"#,
        r#"istio_build{app="reviews",version="v2",component="proxy"} == 1"#,
    ] {
        demo.wait_for_series(query).await;
    }
    let (status, out, err) = demo
        .weft(&["dashboard", "prometheus", "--browser=false"])
        .await;
    assert!(
        status.success() && out.trim() == "http://127.0.0.1:9090",
        "{out}{err}"
    );
    // Istio's Grafana dashboards, filled as Grafana fills them: every expression returns
    // data for some choice of service or workload (TCP ones from sleep → tcp-echo), those
    // that select mutual TLS included.
    let mut dashboards: Vec<PathBuf> = std::fs::read_dir(GRAFANA)
        .unwrap_or_else(|e| panic!("Istio's dashboards at {GRAFANA}: {e}"))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    dashboards.sort();
    assert_eq!(dashboards.len(), 3, "{dashboards:?}");
    // Rates need two scrapes of every series in their window.
    for query in [
        r#"sum(rate(istio_requests_total{reporter="destination",destination_app="ratings"}[1m])) > 0"#,
        r#"sum(rate(istio_tcp_received_bytes_total{reporter="source",source_workload="sleep"}[1m])) > 0"#,
        r#"sum(rate(istio_tcp_sent_bytes_total{reporter="destination",destination_workload="tcp-echo-v1"}[1m])) > 0"#,
        // legacy's curl, outside the mesh: plaintext requests and TCP.
        r#"sum(rate(istio_requests_total{reporter="destination",destination_workload="details-v1",connection_security_policy="none"}[1m])) > 0"#,
        r#"sum(rate(istio_tcp_received_bytes_total{reporter="destination",destination_workload="tcp-echo-v1",connection_security_policy="none"}[1m])) > 0"#,
        r#"sum(rate(istio_tcp_sent_bytes_total{reporter="destination",destination_workload="tcp-echo-v1",connection_security_policy="none"}[1m])) > 0"#,
    ] {
        demo.wait_for_series(query).await;
    }
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for file in &dashboards {
        let (total, silent) = demo.grafana_dashboard(file).await;
        let unexplained: Vec<&String> = silent
            .iter()
            .filter(|(_, why)| why.is_none())
            .map(|(e, _)| e)
            .collect();
        assert!(
            unexplained.is_empty(),
            "{}: no data for {unexplained:#?}",
            file.display()
        );
        *counts.entry("expressions").or_default() += total;
        for (_, why) in &silent {
            *counts.entry(why.unwrap()).or_default() += 1;
        }
    }
    eprintln!("Istio's Grafana dashboards: {counts:?}");
    // Weft's own dashboards (grafana/ in the repo): every expression returns data.
    for name in [
        "weft-proxy-dashboard.json",
        "weft-control-plane-dashboard.json",
    ] {
        let file = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../grafana")
            .join(name);
        let (total, silent) = demo.grafana_dashboard(&file).await;
        assert!(
            total >= 8 && silent.is_empty(),
            "{name}: no data for {silent:#?}"
        );
    }
    assert_eq!(
        (
            counts["expressions"],
            counts.get("plaintext"),
            counts.get("mTLS as the source"),
            counts.get("TCP"),
        ),
        (159, Some(&1), Some(&15), None),
        "{counts:?}"
    );

    // Traces: the control plane's collector, on the host at 127.0.0.1:9411, holds whole
    // traces, each hop a span with Istio's names and tags.
    let trace = demo.connected_trace().await;
    let services = demo.zipkin("/api/v2/services").await;
    for s in [
        "istio-ingressgateway.istio-system",
        "productpage.default",
        "reviews.default",
        "ratings.default",
    ] {
        assert!(
            services.as_array().unwrap().contains(&Value::from(s)),
            "{services}"
        );
    }
    let reviews_client = trace
        .iter()
        .find(|s| {
            s["kind"] == "CLIENT"
                && s["localEndpoint"]["serviceName"] == "productpage.default"
                && s["name"] == "reviews.default.svc.cluster.local:9080/*"
        })
        .unwrap_or_else(|| panic!("no span for productpage calling reviews: {trace:?}"));
    for tag in [
        "http.url",
        "http.method",
        "http.status_code",
        "response_flags",
        "upstream_cluster",
        "istio.canonical_service",
        "istio.namespace",
        "node_id",
        "guid:x-request-id",
    ] {
        assert!(
            reviews_client["tags"].get(tag).is_some(),
            "{tag}: {reviews_client}"
        );
    }
    assert_eq!(
        reviews_client["tags"]["istio.canonical_service"],
        "productpage"
    );
    let series = demo
        .promql(r#"istio_requests_total{reporter="destination",destination_app="reviews"}"#)
        .await;
    assert!(
        series
            .iter()
            .all(|s| s["metric"]["source_workload"] == "productpage-v1"),
        "only productpage calls reviews: {series:?}"
    );

    // The dashboard, on the host at 127.0.0.1:20001, graphs the demo from its own
    // aggregator's scrapes, as Kiali's graph API shapes it.
    let dashboard: SocketAddr = DASHBOARD.parse().unwrap();
    let builtin = demo.bookinfo_graph(dashboard).await;
    // The same graph read from the demo's Prometheus by a second control plane's dashboard
    // (`weft control --prometheus`), which holds no config of its own.
    let empty = tempfile::tempdir().unwrap();
    let [grpc, monitoring, other] = free_addrs::<3>();
    let _reader = Weft::spawn(
        &[
            "control",
            "--config-dir",
            &empty.path().display().to_string(),
            "--grpc",
            &grpc.to_string(),
            "--monitoring",
            &monitoring.to_string(),
            "--grpc-tls",
            "127.0.0.1:0",
            "--dashboard",
            &other.to_string(),
            "--prometheus",
            &format!("http://{PROMETHEUS}"),
        ]
        .map(String::from),
    );
    let from_prometheus = demo.bookinfo_graph(other).await;
    let edges = |g: &Value| -> std::collections::BTreeSet<String> {
        g["elements"]["edges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["data"]["id"].as_str().unwrap().to_string())
            .collect()
    };
    // Kiali's isMTLS, from the destinations' reports in both: sidecar to sidecar is mTLS.
    for g in [&builtin, &from_prometheus] {
        let mtls = g["elements"]["edges"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| {
                let source = e["data"]["source"].as_str().unwrap_or_default();
                source.contains("default-productpage-v1")
                    && e["data"]["target"] == "svc-default-reviews"
            })
            .map(|e| e["data"]["isMTLS"].clone());
        assert_eq!(mtls, Some(Value::from("100")), "{g}");
    }
    for id in edges(&from_prometheus) {
        assert!(
            edges(&builtin).contains(&id) || id.contains("unknown"),
            "Prometheus shows {id}, the aggregator does not: {builtin}"
        );
    }
    // The web app in a real browser against the live demo (its generic checks: the graph's
    // edges, a service's charts, a trace's waterfall, the config and proxies pages).
    let web = Path::new(env!("CARGO_MANIFEST_DIR")).join("../weft-dashboard/web");
    assert!(
        web.join("node_modules/playwright-core").exists(),
        "the dashboard's browser tests need their packages: cd {} && npm ci (.ci/run does)",
        web.display()
    );
    let browser = tokio::process::Command::new("node")
        .arg("tests/dashboard.test.mjs")
        .current_dir(&web)
        .env("WEFT_DASHBOARD_URL", format!("http://{DASHBOARD}"))
        .output()
        .await
        .expect("node runs");
    eprintln!(
        "the dashboard's browser checks: {}",
        String::from_utf8_lossy(&browser.stdout)
            .lines()
            .filter(|l| l.starts_with("# pass") || l.starts_with("# fail"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    assert!(
        browser.status.success(),
        "the dashboard's browser checks failed against the demo:\n{}\n{}",
        String::from_utf8_lossy(&browser.stdout),
        String::from_utf8_lossy(&browser.stderr)
    );

    // Every file that concerns the demo's services applies unchanged, on top of the default
    // destination rules (some replace them), and every proxy acknowledges it.
    let files = demo_networking_files();
    let names: Vec<String> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for needed in [
        "bookinfo-gateway.yaml",
        "destination-rule-all.yaml",
        "virtual-service-all-v1.yaml",
        "virtual-service-reviews-90-10.yaml",
    ] {
        assert!(names.iter().any(|n| n == needed), "{needed}: {names:?}");
    }
    for file in &files {
        demo.apply_istio("destination-rule-all.yaml").await;
        let out = demo.apply(file).await;
        if file.ends_with("bookinfo-gateway.yaml") {
            // The demo's own Gateway and VirtualService are Istio's, under the same names.
            assert_eq!(
                out.lines().filter(|l| l.ends_with(" unchanged")).count(),
                2,
                "{out}"
            );
        }
    }
    eprintln!("{} of Istio's files applied: {names:?}", files.len());
    let rejected: Vec<Value> = {
        let (_, out, _) = demo.weft(&["proxy-status", "-o", "json"]).await;
        serde_json::from_str::<Vec<Value>>(&out)
            .unwrap()
            .into_iter()
            .filter(|p| p.get("rejection").is_some())
            .collect()
    };
    assert!(rejected.is_empty(), "proxies rejected config: {rejected:?}");

    // Request routing.
    demo.apply_istio("destination-rule-all.yaml").await;
    demo.apply_istio("virtual-service-all-v1.yaml").await;
    let jason = Some(demo.login("jason").await);
    let anonymous = None;
    let both = [jason.clone(), anonymous.clone()];
    demo.always("all-v1", &both, Stars::None).await;
    let page = demo.must_page(jason.as_deref()).await;
    assert!(
        page.html.contains("<span class=\"user\">jason</span>")
            && page.served_by().starts_with("reviews-v1"),
        "{}",
        page.html
    );
    demo.apply_istio("virtual-service-reviews-test-v2.yaml")
        .await;
    demo.always("test-v2, jason", std::slice::from_ref(&jason), Stars::Black)
        .await;
    demo.always(
        "test-v2, everyone else",
        std::slice::from_ref(&anonymous),
        Stars::None,
    )
    .await;

    // Fault injection, on the request-routing task's rules (jason on reviews v2).
    demo.apply_istio("virtual-service-ratings-test-delay.yaml")
        .await;
    let page = demo.must_page(jason.as_deref()).await;
    eprintln!(
        "ratings-test-delay: jason's page in {:.2} s",
        page.elapsed.as_secs_f64()
    );
    // productpage gives reviews 3 s and a second try: ~6 s, long before the 7 s delay ends.
    assert!(
        (5.5..=8.0).contains(&page.elapsed.as_secs_f64())
            && page.html.contains(REVIEWS_UNAVAILABLE),
        "after {:?}:\n{}",
        page.elapsed,
        page.html
    );
    let page = demo.must_page(None).await;
    assert!(
        page.is_whole() && page.elapsed < Duration::from_secs(2),
        "everyone else is not delayed: {:?}\n{}",
        page.elapsed,
        page.html
    );
    demo.apply_istio("virtual-service-ratings-test-abort.yaml")
        .await;
    let page = demo.must_page(jason.as_deref()).await;
    eprintln!(
        "ratings-test-abort: jason's page in {:.3} s",
        page.elapsed.as_secs_f64()
    );
    assert!(
        page.elapsed < Duration::from_secs(2)
            && page.html.contains(RATINGS_UNAVAILABLE)
            && !page.html.contains(REVIEWS_UNAVAILABLE),
        "after {:?}:\n{}",
        page.elapsed,
        page.html
    );

    // Traffic shifting, from everyone on v1 as Istio's task starts.
    demo.apply_istio("virtual-service-all-v1.yaml").await;
    let users = [anonymous.clone()];
    demo.apply_istio("virtual-service-reviews-50-v3.yaml").await;
    demo.split("reviews-50-v3", &users, Stars::Red, 0.5, Stars::Black)
        .await;
    // The dashboard's graph: the weight badge, and v3 taking traffic within a few scrapes
    // (the demo's load still runs).
    let shifted = poll_until(Duration::from_secs(60), || async {
        let a = send(
            &demo.client,
            "GET",
            dashboard,
            DASHBOARD,
            "/api/namespaces/graph?graphType=versionedApp&duration=10s",
            &[],
        )
        .await
        .ok()?;
        let g: Value = serde_json::from_slice(&a.body).ok()?;
        let reviews = g["elements"]["nodes"]
            .as_array()?
            .iter()
            .map(|n| &n["data"])
            .find(|d| d["id"] == "svc-default-reviews")?;
        let weights: Vec<(String, i64)> = reviews["weft"]["weights"]
            .as_array()?
            .iter()
            .filter_map(|w| Some((w["subset"].as_str()?.to_string(), w["weight"].as_i64()?)))
            .collect();
        let to_v3 = g["elements"]["edges"].as_array()?.iter().any(|e| {
            e["data"]["id"] == "svc-default-reviews>app-default-reviews-v3"
                && e["data"]["traffic"]["rates"]["http"]
                    .as_str()
                    .and_then(|r| r.parse::<f64>().ok())
                    .is_some_and(|r| r > 0.0)
        });
        (reviews["hasTrafficShifting"] == true
            && weights == [("v1".to_string(), 50), ("v3".to_string(), 50)]
            && to_v3)
            .then_some(())
    })
    .await;
    assert!(
        shifted.is_some(),
        "the dashboard never showed reviews split 50/50 with traffic to v3"
    );
    demo.apply_istio("virtual-service-reviews-v3.yaml").await;
    demo.always("reviews-v3", &users, Stars::Red).await;
    demo.apply_istio("virtual-service-reviews-80-20.yaml").await;
    demo.split("reviews-80-20", &users, Stars::Black, 0.2, Stars::Red)
        .await;
    demo.apply_istio("virtual-service-reviews-90-10.yaml").await;
    demo.split("reviews-90-10", &users, Stars::Black, 0.1, Stars::Red)
        .await;

    // Focused canary: half of some-company-name.com's users on v3, nobody else.
    demo.apply(Path::new(FOCUSED_CANARY)).await;
    let mut company = Vec::new();
    for user in ["alice", "bob", "carol", "dave"] {
        company.push(Some(
            demo.login(&format!("{user}@some-company-name.com")).await,
        ));
    }
    demo.split(
        "focused canary, some-company-name.com",
        &company,
        Stars::Red,
        0.5,
        Stars::Black,
    )
    .await;
    let mut others = vec![jason.clone(), anonymous.clone()];
    for user in [
        "erin@example.com",
        "frank@some-company-name.com.example.org",
    ] {
        others.push(Some(demo.login(user).await));
    }
    let counts = demo.sample(&others, 100).await;
    eprintln!("focused canary, everyone else: {counts:?}");
    assert_eq!(counts.keys().collect::<Vec<_>>(), [&Stars::None]);

    // Authorization for HTTP traffic, on reviews v3 so that reviews calls ratings.
    demo.apply_istio("virtual-service-reviews-v3.yaml").await;
    let policy = |name: &str| Path::new(AUTHORIZATION).join(name);
    demo.apply(&policy("allow-nothing.yaml")).await;
    let page = demo.must_page(None).await;
    assert_eq!(
        (page.status, page.html.as_str()),
        (403, "RBAC: access denied"),
        "allow-nothing"
    );
    demo.apply(&policy("productpage-viewer.yaml")).await;
    let page = demo.must_page(None).await;
    assert!(
        page.status == 200
            && page.html.contains("Error fetching product details!")
            && page.html.contains("Error fetching product reviews!"),
        "productpage-viewer:\n{}",
        page.html
    );
    demo.apply(&policy("details-viewer.yaml")).await;
    let page = demo.must_page(None).await;
    assert!(
        !page.html.contains("id=\"details-error\"")
            && page.html.contains("Error fetching product reviews!"),
        "details-viewer:\n{}",
        page.html
    );
    demo.apply(&policy("reviews-viewer.yaml")).await;
    let page = demo.must_page(None).await;
    assert!(
        !page.html.contains("class=\"error\"") && page.html.contains(RATINGS_UNAVAILABLE),
        "reviews-viewer:\n{}",
        page.html
    );
    demo.apply(&policy("ratings-viewer.yaml")).await;
    demo.always("ratings-viewer", &users, Stars::Red).await;
    let (status, _, err) = demo.weft(&["delete", "-f", AUTHORIZATION]).await;
    assert!(status.success(), "{err}");
    eprintln!("Authorization for HTTP traffic: each policy restored its part of the page");

    // Mutual TLS Migration: legacy's curl, outside the mesh, reaches details in plaintext
    // under PERMISSIVE; a mesh-wide STRICT policy refuses it while the mesh goes on.
    let curl_attempts = || async {
        let (_, log, _) = demo.weft(&["logs", "curl", "-n", "legacy"]).await;
        log.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .collect::<Vec<_>>()
    };
    let before = curl_attempts().await;
    assert!(
        before.iter().any(|a| a["status"] == 200),
        "curl never reached details under PERMISSIVE: {before:?}"
    );
    demo.apply(Path::new(MTLS_STRICT)).await;
    let refused = poll_until(Duration::from_secs(20), || async {
        let now = curl_attempts().await;
        let after: Vec<Value> = now.into_iter().skip(before.len()).collect();
        // Two refusals in a row: the policy holds, not a blip.
        after
            .windows(2)
            .find(|w| w.iter().all(|a| a["error"].is_string()))
            .map(|w| w[1].clone())
    })
    .await;
    let refused = refused.unwrap_or_else(|| panic!("curl was never refused under STRICT"));
    eprintln!(
        "STRICT: curl outside the mesh is refused: {}",
        refused["error"]
    );
    demo.always("STRICT, mesh clients", &users, Stars::Red)
        .await;
    let (status, _, err) = demo.weft(&["delete", "-f", MTLS_STRICT]).await;
    assert!(status.success(), "{err}");
    let seen = curl_attempts().await.len();
    let back = poll_until(Duration::from_secs(20), || async {
        curl_attempts()
            .await
            .into_iter()
            .skip(seen)
            .find(|a| a["status"] == 200)
    })
    .await;
    assert!(
        back.is_some(),
        "curl never got back in once STRICT was deleted"
    );

    // Authentication Policy (end-user JWTs) at the ingress gateway, with a test issuer.
    let issuer = TestIssuer::new();
    let policies = tempfile::tempdir().unwrap();
    let jwt = policies.path().join("jwt-example.yaml");
    std::fs::write(
        &jwt,
        format!(
            "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata:\n  name: jwt-example\n  namespace: istio-system\nspec:\n  selector:\n    matchLabels:\n      istio: ingressgateway\n  jwtRules:\n  - issuer: \"{}\"\n    jwks: '{}'\n",
            TestIssuer::NAME,
            issuer.jwks
        ),
    )
    .unwrap();
    demo.apply(&jwt).await;
    let gateway: SocketAddr = GATEWAY.parse().unwrap();
    let status = |token: Option<String>| {
        let client = &demo.client;
        async move {
            let auth = token.map(|t| format!("Bearer {t}"));
            let headers: Vec<(&str, &str)> =
                auth.iter().map(|a| ("authorization", a.as_str())).collect();
            let a = send(client, "GET", gateway, GATEWAY, "/productpage", &headers)
                .await
                .unwrap();
            (a.status.as_u16(), a.text())
        }
    };
    assert_eq!(
        status(Some("deadbeef".into())).await,
        (
            401,
            "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections"
                .into()
        )
    );
    assert_eq!(status(None).await.0, 200, "no token is let through");
    assert_eq!(status(Some(issuer.token())).await.0, 200);
    let require = policies.path().join("frontend-ingress.yaml");
    std::fs::write(
        &require,
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: frontend-ingress\n  namespace: istio-system\nspec:\n  selector:\n    matchLabels:\n      istio: ingressgateway\n  action: DENY\n  rules:\n  - from:\n    - source:\n        notRequestPrincipals: [\"*\"]\n",
    )
    .unwrap();
    demo.apply(&require).await;
    assert_eq!(status(None).await, (403, "RBAC: access denied".into()));
    assert_eq!(status(Some(issuer.token())).await.0, 200);
    for file in [&require, &jwt] {
        let (ok, _, err) = demo
            .weft(&["delete", "-f", &file.display().to_string()])
            .await;
        assert!(ok.success(), "{err}");
    }
    eprintln!("Authentication Policy: 401 for a bad token, 200 without one, 403 without one once required, 200 with the issuer's");

    // Secure Gateways, with Bookinfo in httpbin's place: certificates made with openssl as
    // Istio's task makes them, Secrets made with weft create secret, and curl over HTTPS to
    // the gateway's 8443; then MUTUAL, which wants the client's certificate.
    let certs = tempfile::tempdir().unwrap();
    example_ca(certs.path());
    // rustls checks client certificates with webpki, which takes X.509 v3 only; OpenSSL
    // before 3.2 makes v1 from `x509 -req` without extensions, so the client's gets one.
    for (serial, (name, extensions)) in [
        ("bookinfo.example.com", None),
        (
            "client.example.com",
            Some("extendedKeyUsage = clientAuth\n"),
        ),
    ]
    .into_iter()
    .enumerate()
    {
        example_leaf(
            certs.path(),
            serial,
            name,
            &format!("{name} organization"),
            extensions,
        );
    }
    let cert = |f: &str| certs.path().join(f).display().to_string();
    let curl = |client: bool| {
        let mut args = vec![
            "-sS".to_string(),
            "-m".into(),
            "5".into(),
            "-o".into(),
            "/dev/null".into(),
            "-w".into(),
            "%{http_code}".into(),
            "--resolve".into(),
            "bookinfo.example.com:8443:127.0.0.1".into(),
            "--cacert".into(),
            cert("example.com.crt"),
        ];
        if client {
            args.extend([
                "--cert".into(),
                cert("client.example.com.crt"),
                "--key".into(),
                cert("client.example.com.key"),
            ]);
        }
        args.push("https://bookinfo.example.com:8443/productpage".into());
        let out = std::process::Command::new("curl")
            .args(&args)
            .output()
            .expect("curl (Debian's curl package) calls the gateway as Istio's task does");
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let weft_ok = |args: Vec<String>| {
        let demo = &demo;
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let (status, out, err) = demo.weft(&args).await;
            assert!(status.success(), "weft {args:?}: {out}{err}");
            out
        }
    };
    let created = weft_ok(vec![
        "create".into(),
        "secret".into(),
        "tls".into(),
        "bookinfo-credential".into(),
        "-n".into(),
        "istio-system".into(),
        "--key".into(),
        cert("bookinfo.example.com.key"),
        "--cert".into(),
        cert("bookinfo.example.com.crt"),
    ])
    .await;
    assert_eq!(created.trim(), "secret/bookinfo-credential created");
    let secure =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/bookinfo/secure-gateway");
    demo.apply(&secure.join("gateway.yaml")).await;
    let answered = poll_until(Duration::from_secs(20), || {
        std::future::ready((curl(false).0 == "200").then_some(()))
    })
    .await;
    if answered.is_none() {
        let log = demo.gateway_log().await;
        panic!("HTTPS on 8443 never answered 200: {:?}\n{log}", curl(false));
    }
    weft_ok(vec![
        "delete".into(),
        "secret".into(),
        "bookinfo-credential".into(),
        "-n".into(),
        "istio-system".into(),
    ])
    .await;
    weft_ok(vec![
        "create".into(),
        "secret".into(),
        "generic".into(),
        "bookinfo-credential".into(),
        "-n".into(),
        "istio-system".into(),
        format!("--from-file=tls.key={}", cert("bookinfo.example.com.key")),
        format!("--from-file=tls.crt={}", cert("bookinfo.example.com.crt")),
        format!("--from-file=ca.crt={}", cert("example.com.crt")),
    ])
    .await;
    demo.apply(&secure.join("gateway-mutual.yaml")).await;
    let refused = poll_until(Duration::from_secs(20), || {
        std::future::ready((curl(false).0 != "200").then_some(()))
    })
    .await;
    // The gateway holds the Secret's certificate and CA, named as Istio's SDS names them.
    let (_, held, _) = demo
        .weft(&[
            "proxy-config",
            "secret",
            "istio-ingressgateway-0.istio-system",
            "-o",
            "json",
        ])
        .await;
    let held: Vec<Value> = serde_json::from_str(&held).unwrap_or_default();
    let names: Vec<&str> = held
        .iter()
        .filter_map(|r| r["resourceName"].as_str())
        .collect();
    assert_eq!(
        names,
        [
            "default",
            "kubernetes://bookinfo-credential",
            "kubernetes://bookinfo-credential-cacert",
            "ROOTCA"
        ],
        "{held:?}"
    );
    assert!(
        refused.is_some(),
        "MUTUAL still answers a client without a certificate"
    );
    let (code, err) = curl(false);
    assert_eq!(code, "000", "{err}");
    assert_eq!(curl(true).0, "200", "{:?}", curl(true));
    demo.weft(&[
        "delete",
        "-f",
        &secure.join("gateway.yaml").display().to_string(),
    ])
    .await;
    weft_ok(vec![
        "delete".into(),
        "secret".into(),
        "bookinfo-credential".into(),
        "-n".into(),
        "istio-system".into(),
    ])
    .await;
    eprintln!("Secure Gateways: HTTPS with the Secret's certificate; MUTUAL refuses a client without one ({}) and serves one with it", err.trim());

    // Egress TLS Origination, run from sleep as Istio's task runs it from its curl pod
    // (weft exec as kubectl exec): edition.cnn.com, the demo's stand-in for the site, is
    // blocked by REGISTRY_ONLY; declared by the task's ServiceEntry, its plain HTTP is
    // redirected by the site and curl follows to HTTPS, which passes the sidecar by SNI;
    // with the task's DestinationRule the sidecar itself originates TLS for port 80, trusting
    // the system's CAs (where the platform's public CA is), so plain HTTP gets 200.
    let curl_cnn = |url: &'static str| {
        let demo = &demo;
        async move {
            let (status, out, err) = demo
                .weft(&[
                    "exec",
                    "sleep",
                    "--",
                    "curl",
                    "-sSL",
                    "-m",
                    "5",
                    "-o",
                    "/dev/null",
                    "-D",
                    "-",
                    url,
                ])
                .await;
            let lines: Vec<String> = out.lines().map(|l| l.trim_end().to_string()).collect();
            let statuses: Vec<String> = lines
                .iter()
                .filter(|l| l.starts_with("HTTP/"))
                .cloned()
                .collect();
            (status.success(), statuses, format!("{out}{err}"))
        }
    };
    const POLITICS: &str = "http://edition.cnn.com/politics";
    let (_, statuses, out) = curl_cnn(POLITICS).await;
    assert_eq!(statuses, ["HTTP/1.1 502 Bad Gateway"], "{out}");
    assert!(
        out.contains("blocked by outboundTrafficPolicy REGISTRY_ONLY"),
        "{out}"
    );
    let egress = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/bookinfo/egress-tls-origination");
    demo.apply(&egress.join("service-entry.yaml")).await;
    let (ok, statuses, out) = curl_cnn(POLITICS).await;
    assert!(ok, "{out}");
    assert_eq!(
        statuses,
        ["HTTP/1.1 301 Moved Permanently", "HTTP/2 200"],
        "{out}"
    );
    assert!(
        out.contains("location: https://edition.cnn.com/politics"),
        "{out}"
    );
    demo.apply(&egress.join("tls-origination.yaml")).await;
    let (ok, statuses, out) = curl_cnn(POLITICS).await;
    assert!(ok, "{out}");
    assert_eq!(statuses, ["HTTP/1.1 200 OK"], "{out}");
    let (ok, statuses, out) = curl_cnn("https://edition.cnn.com/politics").await;
    assert!(ok, "{out}");
    assert_eq!(statuses, ["HTTP/2 200"], "{out}");
    // The sidecar saw the request in the clear and sent it to 443.
    let (_, log, _) = demo.weft(&["logs", "sleep", "--proxy"]).await;
    assert!(
        log.lines()
            .any(|l| l.contains("\"GET /politics HTTP/1.1\" 200")
                && l.contains("\"edition.cnn.com:443\" outbound|80||edition.cnn.com")),
        "{log}"
    );
    let (ok, _, err) = demo
        .weft(&[
            "delete",
            "-f",
            &egress.join("tls-origination.yaml").display().to_string(),
        ])
        .await;
    assert!(ok.success(), "{err}");
    eprintln!("Egress TLS Origination: 502 under REGISTRY_ONLY, 301 then HTTP/2 200 once declared, 200 for plain HTTP once the sidecar originates TLS");

    // The task's mutual TLS origination: my-nginx (mesh-external, no sidecar) wants a client
    // certificate from example.com's CA. Its Secrets, made as the task makes them, reach it
    // as secret volumes; the client's Secret and the task's DestinationRule, as written,
    // make sleep's sidecar present that certificate when the app sends plain HTTP.
    let certs = tempfile::tempdir().unwrap();
    mutual_origination_certificates(certs.path());
    let cert = |f: &str| certs.path().join(f).display().to_string();
    const NGINX: &str = "http://my-nginx.mesh-external.svc.cluster.local:443";
    let curl_nginx = || async {
        let (status, out, err) = demo
            .weft(&["exec", "sleep", "--", "curl", "-sS", "-m", "5", NGINX])
            .await;
        (status.success(), format!("{out}{err}"))
    };
    // Plain HTTP to a TLS port the sidecar does not originate for: nginx closes it, and
    // the sidecar answers 503.
    let (_, out) = curl_nginx().await;
    assert!(
        out.contains("upstream connect error or disconnect/reset before headers"),
        "{out}"
    );
    for args in [
        vec![
            "create".to_string(),
            "secret".into(),
            "tls".into(),
            "nginx-server-certs".into(),
            "-n".into(),
            "mesh-external".into(),
            "--key".into(),
            cert("my-nginx.mesh-external.svc.cluster.local.key"),
            "--cert".into(),
            cert("my-nginx.mesh-external.svc.cluster.local.crt"),
        ],
        vec![
            "create".to_string(),
            "secret".into(),
            "generic".into(),
            "nginx-ca-certs".into(),
            "-n".into(),
            "mesh-external".into(),
            format!("--from-file={}", cert("example.com.crt")),
        ],
        vec![
            "create".to_string(),
            "secret".into(),
            "generic".into(),
            "client-credential".into(),
            format!("--from-file=tls.key={}", cert("client.example.com.key")),
            format!("--from-file=tls.crt={}", cert("client.example.com.crt")),
            format!("--from-file=ca.crt={}", cert("example.com.crt")),
        ],
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (status, out, err) = demo.weft(&args).await;
        assert!(status.success(), "weft {args:?}: {out}{err}");
    }
    demo.apply(&egress.join("originate-mtls.yaml")).await;
    let answered = poll_until(Duration::from_secs(20), || async {
        let (ok, out) = curl_nginx().await;
        (ok && out.contains("my-nginx answered GET /")).then_some(out)
    })
    .await;
    assert!(answered.is_some(), "{}", curl_nginx().await.1);
    let (_, log, _) = demo.weft(&["logs", "sleep", "--proxy"]).await;
    assert!(
        log.lines().any(|l| l.contains("\"GET / HTTP/1.1\" 200")
            && l.contains("outbound|443||my-nginx.mesh-external.svc.cluster.local")),
        "{log}"
    );
    eprintln!("Mutual TLS origination: plain HTTP to nginx's TLS port fails; with its Secrets, the client's and the DestinationRule, sleep's sidecar presents the client certificate and nginx answers");

    // External authorization: the ext-authz sample, MeshConfig's sample-ext-authz-http,
    // decides productpage's product API once the CUSTOM policy applies.
    let ext_authz = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/bookinfo/ext-authz/ext-authz.yaml");
    demo.apply(&ext_authz).await;
    let products = |decision: &'static str| {
        let client = &demo.client;
        async move {
            let a = send(
                client,
                "GET",
                gateway,
                GATEWAY,
                "/api/v1/products",
                &[("x-ext-authz", decision)],
            )
            .await
            .unwrap();
            (a.status.as_u16(), a.text())
        }
    };
    assert_eq!(
        products("deny").await,
        (
            403,
            "denied by ext_authz for not found header `x-ext-authz: allow` in the request".into()
        )
    );
    assert_eq!(products("allow").await.0, 200);
    // The page itself is not asked about.
    assert_eq!(demo.must_page(None).await.status, 200);
    let (ok, _, err) = demo
        .weft(&["delete", "-f", &ext_authz.display().to_string()])
        .await;
    assert!(ok.success(), "{err}");
    let lifted = poll_until(Duration::from_secs(20), || async {
        (products("deny").await.0 == 200).then_some(())
    })
    .await;
    assert!(lifted.is_some(), "deleting the policy never lifted it");
    eprintln!("External authorization: the ext-authz sample denies x-ext-authz: deny with its words and lets allow through");

    // weft down stops the demo, which exits cleanly.
    let (status, _, err) = demo.weft(&["down"]).await;
    assert!(status.success(), "{err}");
    let exit = demo.weft.wait_exit(Duration::from_secs(20)).await;
    assert!(
        exit.is_some_and(|s| s.success()),
        "{exit:?}\n{}",
        demo.weft.output()
    );
    assert!(
        demo.weft.stderr().contains("load: 20 requests/s"),
        "{}",
        demo.weft.output()
    );
    eprintln!("all of it in {:.1} s", started.elapsed().as_secs_f64());
}
