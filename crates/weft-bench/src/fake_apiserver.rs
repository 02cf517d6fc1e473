//! A fake Kubernetes API server, for tests and the control plane's Kubernetes benchmark
//! only: no Kubernetes API server can run on Weft's development machines. It keeps objects in memory and speaks enough of the API for kube-rs's watcher
//! and the real `kubectl`: discovery (`/api`, `/apis`, resource lists, Istio's groups from
//! the CRDs it holds), list with a resourceVersion (held back while a test
//! holds the kind's lists), watch from a resourceVersion with bookmarks naming the server's
//! version and a 410 Gone for one older than its history, get, create, update, delete,
//! merge patches and server-side apply (fields merged into the object: no field managers,
//! no conflicts), TokenReviews of the tokens it issued, and a pod's port-forward (the
//! WebSocket `v4.channel.k8s.io` protocol, to the pod's IP). Plain HTTP on 127.0.0.1; a
//! kubeconfig points clients at it.

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc, watch};

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// A resource type the server serves.
#[derive(Debug, Clone, PartialEq)]
struct Type {
    group: String,
    version: String,
    plural: String,
    kind: String,
    namespaced: bool,
    /// What kubectl also takes for it (`svc`, `crd`, `vs`).
    short_names: Vec<String>,
}

impl Type {
    fn new(group: &str, version: &str, plural: &str, kind: &str, namespaced: bool) -> Type {
        Type {
            group: group.into(),
            version: version.into(),
            plural: plural.into(),
            kind: kind.into(),
            namespaced,
            short_names: Vec::new(),
        }
    }

    fn short(mut self, names: &[&str]) -> Type {
        self.short_names = names.iter().map(|n| n.to_string()).collect();
        self
    }

    fn api_version(&self) -> String {
        match self.group.as_str() {
            "" => self.version.clone(),
            g => format!("{g}/{}", self.version),
        }
    }

    /// Objects of a CRD's kind are one type whatever version they are asked at.
    fn key(&self) -> (String, String) {
        (self.group.clone(), self.plural.clone())
    }
}

fn builtin() -> Vec<Type> {
    vec![
        Type::new("", "v1", "namespaces", "Namespace", false).short(&["ns"]),
        Type::new("", "v1", "services", "Service", true).short(&["svc"]),
        Type::new("", "v1", "pods", "Pod", true).short(&["po"]),
        Type::new("", "v1", "configmaps", "ConfigMap", true).short(&["cm"]),
        Type::new("", "v1", "secrets", "Secret", true),
        Type::new("", "v1", "serviceaccounts", "ServiceAccount", true).short(&["sa"]),
        Type::new("apps", "v1", "deployments", "Deployment", true).short(&["deploy"]),
        Type::new(
            "discovery.k8s.io",
            "v1",
            "endpointslices",
            "EndpointSlice",
            true,
        ),
        Type::new(
            "apiextensions.k8s.io",
            "v1",
            "customresourcedefinitions",
            "CustomResourceDefinition",
            false,
        )
        .short(&["crd", "crds"]),
        Type::new(
            "authentication.k8s.io",
            "v1",
            "tokenreviews",
            "TokenReview",
            false,
        ),
        Type::new(
            "rbac.authorization.k8s.io",
            "v1",
            "clusterroles",
            "ClusterRole",
            false,
        ),
        Type::new("rbac.authorization.k8s.io", "v1", "roles", "Role", true),
        Type::new(
            "rbac.authorization.k8s.io",
            "v1",
            "rolebindings",
            "RoleBinding",
            true,
        ),
        Type::new("coordination.k8s.io", "v1", "leases", "Lease", true),
        Type::new(
            "rbac.authorization.k8s.io",
            "v1",
            "clusterrolebindings",
            "ClusterRoleBinding",
            false,
        ),
        Type::new(
            "admissionregistration.k8s.io",
            "v1",
            "mutatingwebhookconfigurations",
            "MutatingWebhookConfiguration",
            false,
        ),
    ]
}

#[derive(Debug, Clone)]
struct Event {
    rv: u64,
    kind: &'static str,
    type_key: (String, String),
    object: Value,
}

#[derive(Default)]
struct State {
    /// By type, then (namespace, name).
    objects: BTreeMap<(String, String), BTreeMap<(String, String), Value>>,
    history: Vec<Event>,
    /// Watches from this resourceVersion or before get 410 Gone.
    compacted: u64,
    rv: u64,
    next_ip: u8,
    /// Service account tokens it has issued, with the user each stands for and its audience.
    tokens: BTreeMap<String, (String, String)>,
}

pub struct FakeApiServer {
    pub addr: SocketAddr,
    away: Arc<std::sync::atomic::AtomicBool>,
    state: Arc<Mutex<State>>,
    events: broadcast::Sender<Event>,
    /// Closing it ends every open watch, as an API server restart does.
    cut: Arc<Mutex<broadcast::Sender<()>>>,
    /// Requests seen, `METHOD path?query`, for tests that check what clients asked.
    pub requests: Arc<Mutex<Vec<String>>>,
    /// Bookmarks sent: the resource watched (its plural) and the resourceVersion named.
    pub bookmarks: Arc<Mutex<Vec<(String, u64)>>>,
    /// Types (group, plural) whose lists wait until released.
    held: Arc<watch::Sender<BTreeSet<(String, String)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeApiServer {
    pub async fn start() -> FakeApiServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State {
            rv: 100,
            ..State::default()
        }));
        let (events, _) = broadcast::channel(4096);
        let cut = Arc::new(Mutex::new(broadcast::channel(1).0));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let bookmarks = Arc::new(Mutex::new(Vec::new()));
        let held = Arc::new(watch::channel(BTreeSet::new()).0);
        let away = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let server = Server {
            away: away.clone(),
            state: state.clone(),
            events: events.clone(),
            cut: cut.clone(),
            requests: requests.clone(),
            bookmarks: bookmarks.clone(),
            held: held.clone(),
        };
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let server = server.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let server = server.clone();
                        async move { Ok::<_, Infallible>(server.handle(req).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        let fake = FakeApiServer {
            addr,
            away,
            state,
            events,
            cut,
            requests,
            bookmarks,
            held,
            task,
        };
        for ns in ["default", "kube-system", "istio-system"] {
            fake.put(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}));
        }
        fake
    }

    /// The request handler's view of this server, for writes made by the test itself.
    fn server(&self) -> Server {
        Server {
            away: self.away.clone(),
            state: self.state.clone(),
            events: self.events.clone(),
            cut: self.cut.clone(),
            requests: self.requests.clone(),
            bookmarks: self.bookmarks.clone(),
            held: self.held.clone(),
        }
    }

    /// A kubeconfig that points a client at this server.
    pub fn kubeconfig(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://{}\nusers:\n- name: fake\n  user:\n    token: fake-token\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: default\ncurrent-context: fake\n",
            self.addr
        )
    }

    /// Creates or replaces an object, as a controller writing through the API would.
    pub fn put(&self, object: Value) -> Value {
        let server = self.server();
        let t = server
            .type_of(
                object["apiVersion"].as_str().unwrap(),
                object["kind"].as_str().unwrap(),
            )
            .expect("a type the fake serves");
        let ns = if t.namespaced {
            object["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default")
                .to_string()
        } else {
            String::new()
        };
        server.store(&t, &ns, object)
    }

    /// An object as stored, if there is one.
    pub fn get(&self, api_version: &str, kind: &str, namespace: &str, name: &str) -> Option<Value> {
        let server = self.server();
        let t = server.type_of(api_version, kind)?;
        server.get(&t, if t.namespaced { namespace } else { "" }, name)
    }

    pub fn delete(&self, api_version: &str, kind: &str, namespace: &str, name: &str) {
        let server = self.server();
        let t = server.type_of(api_version, kind).unwrap();
        server.remove(&t, namespace, name);
    }

    /// A service account token for `audience`, as the kubelet projects one into a pod; a
    /// TokenReview then names `system:serviceaccount:NS:SA`.
    pub fn issue_token(&self, namespace: &str, service_account: &str, audience: &str) -> String {
        let mut s = self.state.lock().unwrap();
        let token = format!(
            "fake-token-{}-{namespace}-{service_account}",
            s.tokens.len()
        );
        s.tokens.insert(
            token.clone(),
            (
                format!("system:serviceaccount:{namespace}:{service_account}"),
                audience.to_string(),
            ),
        );
        token
    }

    /// Forgets the history, so a watch resuming from any resourceVersion it has seen gets
    /// 410 Gone (the version moves on, as other writes move it on a real server).
    pub fn compact(&self) {
        let mut s = self.state.lock().unwrap();
        s.history.clear();
        s.rv += 1;
        s.compacted = s.rv;
    }

    /// Goes away (every request answered 503, every watch ended) or comes back.
    pub fn set_away(&self, away: bool) {
        self.away.store(away, std::sync::atomic::Ordering::SeqCst);
        if away {
            self.cut_watches();
        }
    }

    /// Holds every list of `group`'s `plural` (`""` for the core group) until released: the
    /// request is taken, and answered only then, as by a slow API server.
    pub fn hold_lists(&self, group: &str, plural: &str) {
        self.held.send_modify(|h| {
            h.insert((group.to_string(), plural.to_string()));
        });
    }

    /// Answers the lists [`FakeApiServer::hold_lists`] held, and those to come.
    pub fn release_lists(&self, group: &str, plural: &str) {
        self.held.send_modify(|h| {
            h.remove(&(group.to_string(), plural.to_string()));
        });
    }

    /// Ends every open watch, as an API server going away does.
    pub fn cut_watches(&self) {
        let (tx, _) = broadcast::channel(1);
        *self.cut.lock().unwrap() = tx;
    }
}

#[derive(Clone)]
struct Server {
    /// While set, every request is answered 503, as by an API server that is down.
    away: Arc<std::sync::atomic::AtomicBool>,
    state: Arc<Mutex<State>>,
    events: broadcast::Sender<Event>,
    cut: Arc<Mutex<broadcast::Sender<()>>>,
    requests: Arc<Mutex<Vec<String>>>,
    bookmarks: Arc<Mutex<Vec<(String, u64)>>>,
    held: Arc<watch::Sender<BTreeSet<(String, String)>>>,
}

fn full(status: StatusCode, body: Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())).boxed())
        .unwrap()
}

fn status(code: StatusCode, reason: &str, message: String) -> Response<Body> {
    full(
        code,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code.as_u16()}),
    )
}

/// RFC 7386, which server-side apply is here too: objects merge, everything else is
/// replaced, null removes.
fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

impl Server {
    fn types(&self) -> Vec<Type> {
        let mut all = builtin();
        let s = self.state.lock().unwrap();
        let crds = s.objects.get(&(
            "apiextensions.k8s.io".into(),
            "customresourcedefinitions".into(),
        ));
        for crd in crds.into_iter().flat_map(|m| m.values()) {
            let spec = &crd["spec"];
            for v in spec["versions"].as_array().into_iter().flatten() {
                if v["served"] != true {
                    continue;
                }
                let short: Vec<&str> = spec["names"]["shortNames"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                all.push(
                    Type::new(
                        spec["group"].as_str().unwrap_or_default(),
                        v["name"].as_str().unwrap_or_default(),
                        spec["names"]["plural"].as_str().unwrap_or_default(),
                        spec["names"]["kind"].as_str().unwrap_or_default(),
                        spec["scope"] == "Namespaced",
                    )
                    .short(&short),
                );
            }
        }
        all
    }

    fn type_of(&self, api_version: &str, kind: &str) -> Option<Type> {
        self.types()
            .into_iter()
            .find(|t| t.api_version() == api_version && t.kind == kind)
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        if self.away.load(std::sync::atomic::Ordering::SeqCst) {
            self.requests
                .lock()
                .unwrap()
                .push(format!("503 {} {}", req.method(), req.uri()));
            return status(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                "the API server is away".into(),
            );
        }
        let segments: Vec<String> = req
            .uri()
            .path()
            .trim_matches('/')
            .split('/')
            .map(str::to_string)
            .collect();
        if let ["api", "v1", "namespaces", ns, "pods", pod, "portforward"] = segments
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .as_slice()
        {
            let (ns, pod) = (ns.to_string(), pod.to_string());
            return self.port_forward(req, &ns, &pod);
        }
        let (parts, body) = req.into_parts();
        let path = parts.uri.path().to_string();
        let query: BTreeMap<String, String> = parts
            .uri
            .query()
            .unwrap_or_default()
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.replace("%2F", "/").replace("%3D", "=")))
            .collect();
        self.requests.lock().unwrap().push(format!(
            "{} {}",
            parts.method,
            parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("")
        ));
        let body = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        match segments.as_slice() {
            ["version"] => full(
                StatusCode::OK,
                json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0-weft-fake",
                    "platform": "linux/amd64"}),
            ),
            ["api"] => full(
                StatusCode::OK,
                json!({"kind": "APIVersions", "versions": ["v1"],
                    "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]}),
            ),
            ["apis"] => self.groups(),
            ["api", "v1"] => self.resources("", "v1"),
            ["apis", group, version] => self.resources(group, version),
            ["api", "v1", rest @ ..] => {
                self.resource(&parts.method, "", "v1", rest, &query, &parts.headers, &body)
                    .await
            }
            ["apis", group, version, rest @ ..] => {
                self.resource(
                    &parts.method,
                    group,
                    version,
                    rest,
                    &query,
                    &parts.headers,
                    &body,
                )
                .await
            }
            _ => status(
                StatusCode::NOT_FOUND,
                "NotFound",
                format!("{path} is not served"),
            ),
        }
    }

    fn groups(&self) -> Response<Body> {
        let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for t in self.types().into_iter().filter(|t| !t.group.is_empty()) {
            let versions = groups.entry(t.group.clone()).or_default();
            if !versions.contains(&t.version) {
                versions.push(t.version.clone());
            }
        }
        let groups: Vec<Value> = groups
            .into_iter()
            .map(|(name, versions)| {
                let list: Vec<Value> = versions
                    .iter()
                    .map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v}))
                    .collect();
                json!({"name": name, "versions": list, "preferredVersion": list[0]})
            })
            .collect();
        full(
            StatusCode::OK,
            json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}),
        )
    }

    fn resources(&self, group: &str, version: &str) -> Response<Body> {
        let resources: Vec<Value> = self
            .types()
            .into_iter()
            .filter(|t| t.group == group && t.version == version)
            .map(|t| {
                json!({"name": t.plural, "singularName": t.kind.to_lowercase(),
                    "namespaced": t.namespaced, "kind": t.kind, "shortNames": t.short_names,
                    "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]})
            })
            .collect();
        if resources.is_empty() {
            return status(
                StatusCode::NOT_FOUND,
                "NotFound",
                format!("{group}/{version}"),
            );
        }
        let group_version = match group {
            "" => version.to_string(),
            g => format!("{g}/{version}"),
        };
        full(
            StatusCode::OK,
            json!({"kind": "APIResourceList", "apiVersion": "v1",
                "groupVersion": group_version, "resources": resources}),
        )
    }

    #[allow(clippy::too_many_arguments)]
    async fn resource(
        &self,
        method: &Method,
        group: &str,
        version: &str,
        rest: &[&str],
        query: &BTreeMap<String, String>,
        headers: &http::HeaderMap,
        body: &[u8],
    ) -> Response<Body> {
        // [namespaces, NS,] PLURAL [, NAME]; `namespaces` alone is the Namespace type.
        let (namespace, plural, name) = match rest {
            ["namespaces", ns, plural] => (Some(*ns), *plural, None),
            ["namespaces", ns, plural, name] => (Some(*ns), *plural, Some(*name)),
            // The status subresource: a patch of it carries only `status`.
            ["namespaces", ns, plural, name, "status"] => (Some(*ns), *plural, Some(*name)),
            [plural] => (None, *plural, None),
            [plural, name] => (None, *plural, Some(*name)),
            _ => return status(StatusCode::NOT_FOUND, "NotFound", rest.join("/")),
        };
        let Some(t) = self
            .types()
            .into_iter()
            .find(|t| t.group == group && t.version == version && t.plural == plural)
        else {
            return status(
                StatusCode::NOT_FOUND,
                "NotFound",
                format!("{plural} is not served"),
            );
        };
        let namespace = if t.namespaced { namespace } else { None };
        match (method, name) {
            (&Method::GET, None) if query.get("watch").is_some_and(|w| w == "true" || w == "1") => {
                self.watch(&t, namespace, query)
            }
            (&Method::GET, None) => {
                let mut held = self.held.subscribe();
                let _ = held.wait_for(|h| !h.contains(&t.key())).await;
                self.list(&t, namespace)
            }
            (&Method::GET, Some(name)) => match self.get(&t, namespace.unwrap_or(""), name) {
                Some(o) => full(StatusCode::OK, self.typed(&t, o)),
                None => not_found(&t, name),
            },
            (&Method::POST, None) if t.plural == "tokenreviews" => {
                let Ok(review) = serde_json::from_slice::<Value>(body) else {
                    return status(StatusCode::BAD_REQUEST, "BadRequest", "not JSON".into());
                };
                full(StatusCode::CREATED, self.review(review))
            }
            (&Method::POST, None) => {
                let Ok(object) = serde_json::from_slice::<Value>(body) else {
                    return status(StatusCode::BAD_REQUEST, "BadRequest", "not JSON".into());
                };
                let name = object["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                if self.get(&t, namespace.unwrap_or(""), &name).is_some() {
                    return status(
                        StatusCode::CONFLICT,
                        "AlreadyExists",
                        format!("{} \"{name}\" already exists", t.plural),
                    );
                }
                let stored = self.store(&t, namespace.unwrap_or(""), object);
                full(StatusCode::CREATED, self.typed(&t, stored))
            }
            (&Method::PUT, Some(name)) => {
                let Ok(object) = serde_json::from_slice::<Value>(body) else {
                    return status(StatusCode::BAD_REQUEST, "BadRequest", "not JSON".into());
                };
                let Some(current) = self.get(&t, namespace.unwrap_or(""), name) else {
                    return not_found(&t, name);
                };
                // Optimistic concurrency: an update names the version it read.
                let read = &object["metadata"]["resourceVersion"];
                if !read.is_null() && *read != current["metadata"]["resourceVersion"] {
                    return status(
                        StatusCode::CONFLICT,
                        "Conflict",
                        format!(
                            "Operation cannot be fulfilled on {} \"{name}\": the object has been modified",
                            t.plural
                        ),
                    );
                }
                let stored = self.store(&t, namespace.unwrap_or(""), object);
                full(StatusCode::OK, self.typed(&t, stored))
            }
            (&Method::PATCH, Some(name)) => {
                let content_type = headers
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                let patch: Value = if content_type.starts_with("application/apply-patch+yaml") {
                    match serde_norway::from_slice(body) {
                        Ok(v) => v,
                        Err(e) => {
                            return status(StatusCode::BAD_REQUEST, "BadRequest", e.to_string())
                        }
                    }
                } else if content_type.contains("merge-patch") {
                    match serde_json::from_slice(body) {
                        Ok(v) => v,
                        Err(e) => {
                            return status(StatusCode::BAD_REQUEST, "BadRequest", e.to_string())
                        }
                    }
                } else {
                    return status(
                        StatusCode::UNSUPPORTED_MEDIA_TYPE,
                        "UnsupportedMediaType",
                        format!("the fake takes merge patches and server-side apply, not {content_type}"),
                    );
                };
                let ns = namespace.unwrap_or("");
                let existing = self.get(&t, ns, name);
                let applying = content_type.starts_with("application/apply-patch+yaml");
                let mut object = match existing {
                    Some(o) => o,
                    None if applying => json!({}),
                    None => return not_found(&t, name),
                };
                merge(&mut object, &patch);
                object["metadata"]["name"] = json!(name);
                let created = self.get(&t, ns, name).is_none();
                let stored = self.store(&t, ns, object);
                let code = if created {
                    StatusCode::CREATED
                } else {
                    StatusCode::OK
                };
                full(code, self.typed(&t, stored))
            }
            (&Method::DELETE, Some(name)) => match self.remove(&t, namespace.unwrap_or(""), name) {
                Some(o) => full(StatusCode::OK, self.typed(&t, o)),
                None => not_found(&t, name),
            },
            _ => status(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                format!("{method} is not served here"),
            ),
        }
    }

    /// A TokenReview answered: authenticated when the token is one it issued for one of the
    /// audiences asked about.
    fn review(&self, mut review: Value) -> Value {
        let token = review["spec"]["token"].as_str().unwrap_or_default();
        let asked: Vec<&str> = review["spec"]["audiences"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let known = self.state.lock().unwrap().tokens.get(token).cloned();
        review["status"] = match known {
            Some((user, audience)) if asked.is_empty() || asked.contains(&audience.as_str()) => {
                json!({"authenticated": true, "user": {"username": user}, "audiences": [audience]})
            }
            Some(_) => json!({"authenticated": false, "error": "token audiences are invalid"}),
            None => json!({"authenticated": false, "error": "invalid bearer token"}),
        };
        review
    }

    /// `kubectl port-forward`'s request: the connection upgraded to a WebSocket whose
    /// channel 0 carries the bytes to and from the pod's IP and port (channel 1, errors,
    /// stays quiet); each channel's first frame names the port, as the kubelet's does.
    fn port_forward(&self, req: Request<Incoming>, namespace: &str, pod: &str) -> Response<Body> {
        use futures_util::{SinkExt, StreamExt};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        use tokio_tungstenite::tungstenite::{
            handshake::derive_accept_key, protocol::Role, Message,
        };
        self.requests
            .lock()
            .unwrap()
            .push(format!("GET {}", req.uri()));
        let port: Option<u16> = req.uri().query().and_then(|q| {
            q.split('&')
                .find_map(|kv| kv.strip_prefix("ports="))
                .and_then(|p| p.parse().ok())
        });
        let pods = Type::new("", "v1", "pods", "Pod", true);
        let ip = self
            .get(&pods, namespace, pod)
            .and_then(|p| p["status"]["podIP"].as_str().map(str::to_string));
        let key = req.headers().get("sec-websocket-key").cloned();
        let (Some(port), Some(ip), Some(key)) = (port, ip, key) else {
            return status(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                format!("port-forward to {namespace}/{pod} needs ?ports=PORT, a pod with an IP and a WebSocket upgrade"),
            );
        };
        let accept = derive_accept_key(key.as_bytes());
        tokio::spawn(async move {
            let Ok(upgraded) = hyper::upgrade::on(req).await else {
                return;
            };
            let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
                TokioIo::new(upgraded),
                Role::Server,
                None,
            )
            .await;
            let (mut to_client, mut from_client) = ws.split();
            let [lo, hi] = port.to_le_bytes();
            for channel in [0u8, 1] {
                if to_client
                    .send(Message::Binary(vec![channel, lo, hi].into()))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            let Ok(upstream) = tokio::net::TcpStream::connect((ip.as_str(), port)).await else {
                return;
            };
            let (mut read, mut write) = upstream.into_split();
            let to_pod = async {
                while let Some(Ok(message)) = from_client.next().await {
                    if let Message::Binary(b) = message {
                        if b.first() == Some(&0) && write.write_all(&b[1..]).await.is_err() {
                            break;
                        }
                    }
                }
                let _ = write.shutdown().await;
            };
            let from_pod = async {
                let mut buf = vec![0u8; 16 * 1024];
                while let Ok(n) = read.read(&mut buf[1..]).await {
                    if n == 0 {
                        break;
                    }
                    buf[0] = 0;
                    let frame = bytes::Bytes::copy_from_slice(&buf[..n + 1]);
                    if to_client.send(Message::Binary(frame)).await.is_err() {
                        break;
                    }
                }
                let _ = to_client.close().await;
            };
            tokio::join!(to_pod, from_pod);
        });
        Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("upgrade", "websocket")
            .header("connection", "Upgrade")
            .header("sec-websocket-accept", accept)
            .header("sec-websocket-protocol", "v4.channel.k8s.io")
            .body(Full::new(Bytes::new()).boxed())
            .unwrap()
    }

    fn get(&self, t: &Type, namespace: &str, name: &str) -> Option<Value> {
        let s = self.state.lock().unwrap();
        s.objects
            .get(&t.key())?
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }

    /// The object as asked for at `t`'s version.
    fn typed(&self, t: &Type, mut o: Value) -> Value {
        o["apiVersion"] = json!(t.api_version());
        o["kind"] = json!(t.kind);
        o
    }

    fn list(&self, t: &Type, namespace: Option<&str>) -> Response<Body> {
        let s = self.state.lock().unwrap();
        let items: Vec<Value> = s
            .objects
            .get(&t.key())
            .into_iter()
            .flatten()
            .filter(|((ns, _), _)| namespace.is_none_or(|n| n == ns))
            .map(|(_, o)| self.typed(t, o.clone()))
            .collect();
        full(
            StatusCode::OK,
            json!({"apiVersion": t.api_version(), "kind": format!("{}List", t.kind),
                "metadata": {"resourceVersion": s.rv.to_string()}, "items": items}),
        )
    }

    /// Stores an object with the server's fields, and tells the watches.
    fn store(&self, t: &Type, namespace: &str, mut object: Value) -> Value {
        let mut s = self.state.lock().unwrap();
        s.rv += 1;
        let rv = s.rv;
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let key = (namespace.to_string(), name.clone());
        let previous = s.objects.get(&t.key()).and_then(|m| m.get(&key)).cloned();
        let meta = &mut object["metadata"];
        if t.namespaced {
            meta["namespace"] = json!(namespace);
        }
        meta["resourceVersion"] = json!(rv.to_string());
        meta["uid"] = previous
            .as_ref()
            .map(|p| p["metadata"]["uid"].clone())
            .unwrap_or_else(|| json!(format!("uid-{rv}")));
        meta["creationTimestamp"] = previous
            .as_ref()
            .map(|p| p["metadata"]["creationTimestamp"].clone())
            .unwrap_or_else(|| json!("2026-12-01T00:00:00Z"));
        if t.kind == "Service" && object["spec"]["clusterIP"].is_null() {
            s.next_ip += 1;
            object["spec"]["clusterIP"] = json!(format!("10.96.0.{}", 10 + s.next_ip));
        }
        object["apiVersion"] = json!(t.api_version());
        object["kind"] = json!(t.kind);
        s.objects
            .entry(t.key())
            .or_default()
            .insert(key, object.clone());
        let event = Event {
            rv,
            kind: if previous.is_some() {
                "MODIFIED"
            } else {
                "ADDED"
            },
            type_key: t.key(),
            object: object.clone(),
        };
        s.history.push(event.clone());
        // Under the lock, so a bookmark naming the version now comes after every event up
        // to it.
        let _ = self.events.send(event);
        object
    }

    fn remove(&self, t: &Type, namespace: &str, name: &str) -> Option<Value> {
        let mut s = self.state.lock().unwrap();
        let mut object = s
            .objects
            .get_mut(&t.key())?
            .remove(&(namespace.to_string(), name.to_string()))?;
        s.rv += 1;
        let rv = s.rv;
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        let event = Event {
            rv,
            kind: "DELETED",
            type_key: t.key(),
            object: object.clone(),
        };
        s.history.push(event.clone());
        let _ = self.events.send(event);
        Some(object)
    }

    /// A watch: the events after the asked resourceVersion (everything, as ADDED, without
    /// one), then live events and, if asked for (`allowWatchBookmarks=true`), a bookmark
    /// each second naming the server's version, as a real one's progress notifications do;
    /// 410 Gone for a resourceVersion older than the history.
    fn watch(
        &self,
        t: &Type,
        namespace: Option<&str>,
        query: &BTreeMap<String, String>,
    ) -> Response<Body> {
        let (tx, mut rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(64);
        let line = |v: Value| Ok(Frame::data(Bytes::from(format!("{v}\n"))));
        let from: Option<u64> = query
            .get("resourceVersion")
            .and_then(|v| v.parse().ok())
            .filter(|v| *v != 0);
        let bookmarks = query
            .get("allowWatchBookmarks")
            .is_some_and(|b| b == "true");
        let mut live = self.events.subscribe();
        let mut cut = self.cut.lock().unwrap().subscribe();
        let namespace = namespace.map(str::to_string);
        let wanted = {
            let key = t.key();
            let namespace = namespace.clone();
            move |e: &Event| {
                e.type_key == key
                    && namespace
                        .as_deref()
                        .is_none_or(|n| e.object["metadata"]["namespace"] == n)
            }
        };
        let typed = {
            let t = t.clone();
            move |mut o: Value| {
                o["apiVersion"] = json!(t.api_version());
                o["kind"] = json!(t.kind);
                o
            }
        };
        let (backlog, gone) = {
            let s = self.state.lock().unwrap();
            match from {
                Some(rv) if rv <= s.compacted => (Vec::new(), true),
                Some(rv) => (
                    s.history
                        .iter()
                        .filter(|e| e.rv > rv && wanted(e))
                        .map(|e| json!({"type": e.kind, "object": typed(e.object.clone())}))
                        .collect(),
                    false,
                ),
                None => (
                    s.objects
                        .get(&t.key())
                        .into_iter()
                        .flatten()
                        .filter(|((ns, _), _)| namespace.as_deref().is_none_or(|n| n == ns))
                        .map(|(_, o)| json!({"type": "ADDED", "object": typed(o.clone())}))
                        .collect(),
                    false,
                ),
            }
        };
        let kind = t.kind.clone();
        let api_version = t.api_version();
        let plural = t.plural.clone();
        let (state, sent_bookmarks) = (self.state.clone(), self.bookmarks.clone());
        tokio::spawn(async move {
            // A live event's line, if it is one this watch wants.
            let event_line =
                |e: Event| wanted(&e).then(|| json!({"type": e.kind, "object": typed(e.object)}));
            if gone {
                let _ = tx
                    .send(line(json!({"type": "ERROR", "object": {"kind": "Status",
                        "apiVersion": "v1", "metadata": {}, "status": "Failure",
                        "message": "too old resource version", "reason": "Expired", "code": 410}})))
                    .await;
                return;
            }
            for event in backlog {
                if tx.send(line(event)).await.is_err() {
                    return;
                }
            }
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    // A cut watch forwards nothing more, whatever else is ready.
                    biased;
                    _ = cut.recv() => return,
                    event = live.recv() => match event.map(&event_line) {
                        Ok(Some(v)) => {
                            if tx.send(line(v)).await.is_err() {
                                return;
                            }
                        }
                        Ok(None) => {}
                        Err(_) => return,
                    },
                    _ = tick.tick(), if bookmarks => {
                        // Every event up to the version now is in `live` (each is sent
                        // under the lock): forwarded first, the bookmark can name it.
                        let now = state.lock().unwrap().rv;
                        loop {
                            match live.try_recv().map(&event_line) {
                                Ok(Some(v)) => {
                                    if tx.send(line(v)).await.is_err() {
                                        return;
                                    }
                                }
                                Ok(None) => {}
                                Err(broadcast::error::TryRecvError::Empty) => break,
                                Err(_) => return,
                            }
                        }
                        let v = json!({"type": "BOOKMARK", "object": {"kind": kind,
                            "apiVersion": api_version, "metadata": {"resourceVersion": now.to_string()}}});
                        if tx.send(line(v)).await.is_err() {
                            return;
                        }
                        sent_bookmarks.lock().unwrap().push((plural.clone(), now));
                    }
                }
            }
        });
        Response::builder()
            .header("content-type", "application/json")
            .body(BodyExt::boxed(StreamBody::new(
                futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)),
            )))
            .unwrap()
    }
}

fn not_found(t: &Type, name: &str) -> Response<Body> {
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        format!("{} \"{name}\" not found", t.plural),
    )
}
