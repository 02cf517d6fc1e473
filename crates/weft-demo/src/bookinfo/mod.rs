//! Istio's Bookinfo application: four HTTP services that call each other the way Istio's
//! samples do, so Istio's traffic-management tasks (request routing, fault injection,
//! traffic shifting, timeouts) run unchanged against a Weft mesh.
//!
//! | service | serves | calls |
//! | --- | --- | --- |
//! | productpage | `/`, `/productpage`, `/login`, `/logout`, `/api/v1/products…`, `/health` | details (3 s), reviews (3 s, tried twice) |
//! | details | `/details/<id>`, `/health` | — |
//! | reviews v1 / v2 / v3 | `/reviews/<id>`, `/health` | v2 and v3: ratings (10 s / 2.5 s) |
//! | ratings | `/ratings/<id>`, `/health` | — |
//!
//! [`Config::from_env`] reads what Istio's apps read: `DETAILS_HOSTNAME`,
//! `REVIEWS_HOSTNAME`, `RATINGS_HOSTNAME` (defaults `details`, `reviews`, `ratings`), their
//! `*_SERVICE_PORT` (default 9080), `SERVICES_DOMAIN` (appended to each host), `HOSTNAME`
//! (the pod name reviews reports) and `CLUSTER_NAME`; and Weft's `WEFT_HTTP_PROXY`, an
//! explicit proxy for every outbound call. The page's markers are listed in [`html`].

pub mod client;
pub mod details;
pub mod html;
pub mod productpage;
pub mod ratings;
pub mod reviews;

use bytes::Bytes;
use client::Upstream;
use http::header::CONTENT_TYPE;
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::Serialize;
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// Which Bookinfo service a process runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum App {
    Productpage,
    Details,
    Ratings,
    Reviews { version: ReviewsVersion },
}

/// The three reviews deployments: v1 shows no stars, v2 black ones, v3 red ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReviewsVersion {
    V1,
    V2,
    V3,
}

/// How a reviews version asks ratings for stars.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StarRatings {
    pub color: &'static str,
    pub timeout: Duration,
}

impl ReviewsVersion {
    /// `None` for v1, which never calls ratings. The timeouts are those of Istio's reviews
    /// (10 s for black stars, 2.5 s for red), which the timeout task depends on.
    pub fn star_ratings(self) -> Option<StarRatings> {
        match self {
            ReviewsVersion::V1 => None,
            ReviewsVersion::V2 => Some(StarRatings {
                color: "black",
                timeout: Duration::from_secs(10),
            }),
            ReviewsVersion::V3 => Some(StarRatings {
                color: "red",
                timeout: Duration::from_millis(2500),
            }),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not a reviews version: use v1, v2 or v3")]
pub struct UnknownVersion(String);

impl FromStr for ReviewsVersion {
    type Err = UnknownVersion;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "v1" => Ok(ReviewsVersion::V1),
            "v2" => Ok(ReviewsVersion::V2),
            "v3" => Ok(ReviewsVersion::V3),
            other => Err(UnknownVersion(other.to_owned())),
        }
    }
}

impl fmt::Display for ReviewsVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReviewsVersion::V1 => "v1",
            ReviewsVersion::V2 => "v2",
            ReviewsVersion::V3 => "v3",
        })
    }
}

/// Istio's Java reviews app prints an unset `CLUSTER_NAME` as `null`, and its
/// productpage hides the cluster when it reads that.
pub const NO_CLUSTER_NAME: &str = "null";

/// Where the services find each other, and what reviews reports about itself.
#[derive(Clone, Debug)]
pub struct Config {
    pub details: Upstream,
    pub reviews: Upstream,
    pub ratings: Upstream,
    /// Send every outbound call through this explicit HTTP proxy.
    pub proxy: Option<SocketAddr>,
    /// Reviews' `podname`; without one, `reviews-<version>`.
    pub podname: Option<String>,
    /// Reviews' `clustername`: [`NO_CLUSTER_NAME`] when unset.
    pub clustername: String,
}

impl Default for Config {
    /// Inside a mesh: the Kubernetes service names on port 9080, no proxy.
    fn default() -> Self {
        Config {
            details: Upstream::new("details", 9080),
            reviews: Upstream::new("reviews", 9080),
            ratings: Upstream::new("ratings", 9080),
            proxy: None,
            podname: None,
            clustername: NO_CLUSTER_NAME.to_owned(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{var}={value:?} is not a port number")]
    Port { var: &'static str, value: String },
    #[error("WEFT_HTTP_PROXY={0:?} is not an address like 127.0.0.1:15001")]
    Proxy(String),
}

impl Config {
    /// Reads the environment variables listed in the module docs.
    pub fn from_env() -> Result<Self, ConfigError> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let domain = var("SERVICES_DOMAIN").map_or(String::new(), |d| format!(".{d}"));
        let upstream = |host_var: &str, port_var: &'static str, default_host: &str| {
            let host = var(host_var).unwrap_or_else(|| default_host.to_owned());
            let port = match var(port_var) {
                Some(value) => value.parse().map_err(|_| ConfigError::Port {
                    var: port_var,
                    value,
                })?,
                None => 9080,
            };
            Ok(Upstream::new(format!("{host}{domain}"), port))
        };
        let proxy = var("WEFT_HTTP_PROXY")
            .map(|value| value.parse().map_err(|_| ConfigError::Proxy(value)))
            .transpose()?;
        Ok(Config {
            details: upstream("DETAILS_HOSTNAME", "DETAILS_SERVICE_PORT", "details")?,
            reviews: upstream("REVIEWS_HOSTNAME", "REVIEWS_SERVICE_PORT", "reviews")?,
            ratings: upstream("RATINGS_HOSTNAME", "RATINGS_SERVICE_PORT", "ratings")?,
            proxy,
            podname: var("HOSTNAME"),
            clustername: var("CLUSTER_NAME").unwrap_or_else(|| NO_CLUSTER_NAME.to_owned()),
        })
    }
}

/// Runs `app` on `listen` with its configuration from the environment.
pub async fn serve(app: App, listen: SocketAddr) -> std::io::Result<()> {
    let config =
        Config::from_env().map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let listener = TcpListener::bind(listen).await?;
    serve_on(app, config, listener).await
}

/// Runs `app` on a bound listener (tests bind port 0 first to learn the address).
pub async fn serve_on(app: App, config: Config, listener: TcpListener) -> std::io::Result<()> {
    tracing::info!(?app, addr = %listener.local_addr()?, "bookinfo service listening");
    let handler = Arc::new(Handler::new(app, config));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                // Out of descriptors and the like: wait for connections to close
                // rather than spin, and keep serving the ones already open.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let handler = handler.clone();
                async move { Ok::<_, std::convert::Infallible>(handler.handle(request).await) }
            });
            if let Err(error) = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%error, "connection ended");
            }
        });
    }
}

enum Handler {
    Productpage(productpage::Productpage),
    Details,
    Ratings,
    Reviews(reviews::Reviews),
}

impl Handler {
    fn new(app: App, config: Config) -> Self {
        match app {
            App::Productpage => Handler::Productpage(productpage::Productpage::new(config)),
            App::Details => Handler::Details,
            App::Ratings => Handler::Ratings,
            App::Reviews { version } => Handler::Reviews(reviews::Reviews::new(version, config)),
        }
    }

    async fn handle(&self, request: http::Request<Incoming>) -> Reply {
        match self {
            Handler::Productpage(productpage) => productpage.handle(request).await,
            Handler::Details => details::handle(&request),
            Handler::Ratings => ratings::handle(&request),
            Handler::Reviews(reviews) => reviews.handle(&request).await,
        }
    }
}

/// Every answer is small and built whole.
pub(crate) type Reply = Response<Full<Bytes>>;

pub(crate) fn reply(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Reply {
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, content_type)
        .body(Full::new(body.into()))
        .expect("static status and header are valid")
}

pub(crate) fn json_reply(status: StatusCode, body: &impl Serialize) -> Reply {
    let json = serde_json::to_vec(body).expect("Bookinfo's types serialize to JSON");
    reply(status, "application/json", json)
}

pub(crate) fn not_found() -> Reply {
    json_reply(
        StatusCode::NOT_FOUND,
        &serde_json::json!({"error": "not found"}),
    )
}

/// What details, ratings and reviews are asked: their health, or one product's document.
pub(crate) enum Route {
    Health,
    Product(i64),
    /// Not a route (404), or not a numeric product id (400, as Istio's services answer).
    Reject(Reply),
}

/// Routes `GET /health` and `GET <collection>/<id>` (`collection` like `/details/`).
pub(crate) fn route<B>(request: &http::Request<B>, collection: &str) -> Route {
    let path = request.uri().path();
    if request.method() != http::Method::GET {
        return Route::Reject(not_found());
    }
    if path == "/health" {
        return Route::Health;
    }
    match path.strip_prefix(collection).map(str::parse) {
        Some(Ok(id)) => Route::Product(id),
        Some(Err(_)) => Route::Reject(json_reply(
            StatusCode::BAD_REQUEST,
            &serde_json::json!({"error": "please provide numeric product id"}),
        )),
        None => Route::Reject(not_found()),
    }
}

/// The health answer of details, ratings and reviews.
pub(crate) fn healthy(status: &str) -> Reply {
    json_reply(StatusCode::OK, &serde_json::json!({ "status": status }))
}
