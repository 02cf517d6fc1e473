//! kube-rs's client against tower-test's mock service, for tests of the exact requests the
//! cluster code sends (paths, query parameters, content types, bodies), answered as the API
//! server would.

use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use kube::Client;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use tower_test::mock::{pair, Handle, SendResponse};

pub type Mock = Handle<Request<Body>, Response<Body>>;

/// A client whose every request arrives at the returned handle.
pub fn client() -> (Client, Mock) {
    let (service, handle) = pair::<Request<Body>, Response<Body>>();
    (Client::new(service, "default"), handle)
}

/// One request as the client sent it, waiting for its answer.
pub struct Sent {
    pub method: Method,
    /// The path and query, as sent (`/api/v1/namespaces?&limit=500`).
    pub uri: String,
    pub path: String,
    /// The query's parameters, as sent (percent-encoded), by name.
    pub query: BTreeMap<String, String>,
    pub content_type: Option<String>,
    /// The body as JSON (null when it has none).
    pub body: Value,
    respond: SendResponse<Response<Body>>,
}

impl Sent {
    /// `METHOD path?query`, for messages.
    pub fn line(&self) -> String {
        format!("{} {}", self.method, self.uri)
    }

    pub fn respond(self, response: Response<Body>) {
        self.respond.send_response(response);
    }

    /// Answers with `body` as JSON.
    pub fn ok(self, body: Value) {
        self.respond(answer(StatusCode::OK, body));
    }
}

/// The next request the client sends.
pub async fn next(mock: &mut Mock) -> Sent {
    try_next(mock).await.expect("a request")
}

/// The next request, or none once every clone of the client is gone.
pub async fn try_next(mock: &mut Mock) -> Option<Sent> {
    let (request, respond) = mock.next_request().await?;
    let (parts, body) = request.into_parts();
    let bytes = body.collect_bytes().await.unwrap();
    let query = parts
        .uri
        .query()
        .unwrap_or_default()
        .split('&')
        // kube-rs starts every query with `&`.
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k.to_string(), v.to_string())
        })
        .collect();
    Some(Sent {
        uri: parts.uri.path_and_query().unwrap().to_string(),
        path: parts.uri.path().to_string(),
        query,
        content_type: parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_string()),
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        method: parts.method,
        respond,
    })
}

/// Waits for `task`, failing on any request it sends meanwhile: the test has answered every
/// request it expects.
pub async fn finish<T>(mut task: tokio::task::JoinHandle<T>, mock: &mut Mock) -> T {
    tokio::select! {
        done = &mut task => done.unwrap(),
        request = mock.next_request() => match request {
            Some((request, _)) => {
                panic!("an unexpected request: {} {}", request.method(), request.uri())
            }
            // The client is gone with the task.
            None => task.await.unwrap(),
        }
    }
}

pub fn answer(code: StatusCode, body: Value) -> Response<Body> {
    Response::builder()
        .status(code)
        .body(Body::from(serde_json::to_vec(&body).unwrap()))
        .unwrap()
}

/// A `Status` failure, as the API server answers one.
pub fn failure(code: StatusCode, reason: &str) -> Response<Body> {
    answer(
        code,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason,
            "code": code.as_u16(), "message": reason}),
    )
}

pub fn not_found() -> Response<Body> {
    failure(StatusCode::NOT_FOUND, "NotFound")
}

/// A query's parameters, for comparing with [`Sent::query`].
pub fn query(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}
