//! Bookinfo end to end on loopback: every service on its own 127.0.0.1 port, pointed at the
//! others through `Config`, driven over real HTTP/1.1 connections.

use bytes::Bytes;
use http::header::{HOST, LOCATION, SET_COOKIE};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use weft_demo::bookinfo::client::{Upstream, FORWARDED_HEADERS};
use weft_demo::bookinfo::ratings::ProductRatings;
use weft_demo::bookinfo::{serve_on, App, Config, ReviewsVersion};

const REVIEWS_UNAVAILABLE: &str = "Sorry, product reviews are currently unavailable for this book.";
const DETAILS_UNAVAILABLE: &str = "Sorry, product details are currently unavailable for this book.";
const RATINGS_UNAVAILABLE: &str = "Ratings service is currently unavailable";
const FULL_STAR: &str = "<span class=\"glyphicon glyphicon-star\">";
const EMPTY_STAR: &str = "<span class=\"glyphicon glyphicon-star-empty\">";

async fn loopback_listener() -> TcpListener {
    TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback")
}

async fn start(app: App, config: Config) -> SocketAddr {
    let listener = loopback_listener().await;
    let addr = listener.local_addr().expect("bound address");
    tokio::spawn(serve_on(app, config, listener));
    addr
}

/// An address nothing listens on: connections to it are refused.
async fn refusing_address() -> SocketAddr {
    loopback_listener()
        .await
        .local_addr()
        .expect("bound address")
}

fn podname(version: ReviewsVersion) -> String {
    format!("reviews-{version}-7f9c")
}

/// Stand-ins for the real services, where a test needs a failing one.
#[derive(Default)]
struct Replacements {
    details: Option<SocketAddr>,
    reviews: Option<SocketAddr>,
    ratings: Option<SocketAddr>,
}

/// Starts details, ratings, reviews `version` and productpage; returns productpage.
async fn bookinfo(version: ReviewsVersion, replace: Replacements) -> SocketAddr {
    let details = match replace.details {
        Some(addr) => addr,
        None => start(App::Details, Config::default()).await,
    };
    let ratings = match replace.ratings {
        Some(addr) => addr,
        None => start(App::Ratings, Config::default()).await,
    };
    let reviews = match replace.reviews {
        Some(addr) => addr,
        None => {
            let config = Config {
                ratings: ratings.into(),
                podname: Some(podname(version)),
                ..Config::default()
            };
            start(App::Reviews { version }, config).await
        }
    };
    let config = Config {
        details: details.into(),
        reviews: reviews.into(),
        ratings: ratings.into(),
        ..Config::default()
    };
    start(App::Productpage, config).await
}

/// One request on a fresh connection; the whole answer.
async fn send(addr: SocketAddr, request: Request<Full<Bytes>>) -> hyper::Result<Response<Bytes>> {
    let stream = TcpStream::connect(addr)
        .await
        .expect("connect to a test server");
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let (parts, body) = sender.send_request(request).await?.into_parts();
    Ok(Response::from_parts(
        parts,
        body.collect().await?.to_bytes(),
    ))
}

async fn request(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Response<Bytes> {
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header(HOST, addr.to_string());
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let request = builder
        .body(Full::new(Bytes::from(body.to_owned())))
        .expect("valid request");
    send(addr, request).await.expect("an answer")
}

async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Response<Bytes> {
    request(addr, Method::GET, path, headers, "").await
}

fn text(response: &Response<Bytes>) -> &str {
    std::str::from_utf8(response.body()).expect("UTF-8 body")
}

fn json(response: &Response<Bytes>) -> serde_json::Value {
    serde_json::from_slice(response.body()).expect("JSON body")
}

async fn product_page(productpage: SocketAddr) -> String {
    let page = get(productpage, "/productpage", &[]).await;
    assert_eq!(page.status(), StatusCode::OK);
    text(&page).to_owned()
}

#[tokio::test]
async fn reviews_v1_page_has_the_book_its_details_and_reviews_without_stars() {
    let productpage = bookinfo(ReviewsVersion::V1, Replacements::default()).await;
    let page = product_page(productpage).await;

    assert!(
        page.contains("<title>Simple Bookstore App</title>"),
        "{page}"
    );
    assert!(page.contains("The Comedy of Errors"), "{page}");
    assert!(
        page.contains("<dt>Publisher:</dt><dd>PublisherA</dd>"),
        "{page}"
    );
    assert!(
        page.contains("<dt>ISBN-13:</dt><dd>123-1234567890</dd>"),
        "{page}"
    );
    assert_eq!(
        page.matches("<blockquote class=\"review\">").count(),
        2,
        "{page}"
    );
    assert!(
        page.contains("Reviews served by: reviews-v1-7f9c</p>"),
        "{page}"
    );
    assert!(!page.contains("class=\"stars\""), "{page}");
    assert!(!page.contains("glyphicon"), "{page}");
    assert!(!page.contains(RATINGS_UNAVAILABLE), "{page}");
    assert!(
        page.contains("<form method=\"post\" action=\"login\""),
        "{page}"
    );
}

#[tokio::test]
async fn reviews_v2_shows_black_stars_and_v3_red_ones() {
    for (version, color, other) in [
        (ReviewsVersion::V2, "black", "red"),
        (ReviewsVersion::V3, "red", "black"),
    ] {
        let productpage = bookinfo(version, Replacements::default()).await;
        let page = product_page(productpage).await;

        assert!(
            page.contains(&format!(
                "<span class=\"stars\" data-color=\"{color}\" data-stars=\"5\">"
            )),
            "{page}"
        );
        assert!(
            page.contains(&format!(
                "<span class=\"stars\" data-color=\"{color}\" data-stars=\"4\">"
            )),
            "{page}"
        );
        assert_eq!(
            page.matches(&format!("<font color=\"{color}\">")).count(),
            2,
            "{page}"
        );
        assert!(!page.contains(&format!("data-color=\"{other}\"")), "{page}");
        // Reviewer1 gives 5 of 5, Reviewer2 4 of 5.
        assert_eq!(page.matches(FULL_STAR).count(), 9, "{page}");
        assert_eq!(page.matches(EMPTY_STAR).count(), 1, "{page}");
        assert!(
            page.contains(&format!("Reviews served by: {}</p>", podname(version))),
            "{page}"
        );
    }
}

#[tokio::test]
async fn each_service_answers_its_json_and_health() {
    let details = start(App::Details, Config::default()).await;
    let ratings = start(App::Ratings, Config::default()).await;
    let reviews = start(
        App::Reviews {
            version: ReviewsVersion::V2,
        },
        Config {
            ratings: ratings.into(),
            podname: Some("reviews-v2-7f9c".to_owned()),
            clustername: "east".to_owned(),
            ..Config::default()
        },
    )
    .await;

    assert_eq!(
        json(&get(details, "/details/7", &[]).await),
        serde_json::json!({
            "id": 7, "author": "William Shakespeare", "year": 1595, "type": "paperback",
            "pages": 200, "publisher": "PublisherA", "language": "English",
            "ISBN-10": "1234567890", "ISBN-13": "123-1234567890"
        })
    );
    assert_eq!(
        json(&get(ratings, "/ratings/7", &[]).await),
        serde_json::json!({"id": 7, "ratings": {"Reviewer1": 5, "Reviewer2": 4}})
    );
    let reviewed = json(&get(reviews, "/reviews/7", &[]).await);
    assert_eq!(reviewed["id"], "7");
    assert_eq!(reviewed["podname"], "reviews-v2-7f9c");
    assert_eq!(reviewed["clustername"], "east");
    assert_eq!(reviewed["reviews"][0]["reviewer"], "Reviewer1");
    assert_eq!(
        reviewed["reviews"][0]["rating"],
        serde_json::json!({"stars": 5, "color": "black"})
    );
    assert_eq!(
        reviewed["reviews"][1]["rating"],
        serde_json::json!({"stars": 4, "color": "black"})
    );

    for (addr, collection, status) in [
        (details, "details", "Details is healthy"),
        (ratings, "ratings", "Ratings is healthy"),
        (reviews, "reviews", "Reviews is healthy"),
    ] {
        assert_eq!(
            json(&get(addr, "/health", &[]).await),
            serde_json::json!({ "status": status })
        );
        let bad_id = get(addr, &format!("/{collection}/abc"), &[]).await;
        assert_eq!(bad_id.status(), StatusCode::BAD_REQUEST, "{collection}");
        assert_eq!(
            get(addr, "/elsewhere", &[]).await.status(),
            StatusCode::NOT_FOUND
        );
    }
}

#[tokio::test]
async fn reviews_v1_answers_without_ratings() {
    // v1 must not call ratings: a refused ratings address changes nothing.
    let reviews = start(
        App::Reviews {
            version: ReviewsVersion::V1,
        },
        Config {
            ratings: refusing_address().await.into(),
            ..Config::default()
        },
    )
    .await;
    let reviewed = json(&get(reviews, "/reviews/0", &[]).await);
    assert_eq!(
        reviewed["podname"], "reviews-v1",
        "the fallback without HOSTNAME"
    );
    assert_eq!(reviewed["clustername"], "null");
    for review in reviewed["reviews"].as_array().expect("reviews") {
        assert!(review.get("rating").is_none(), "{review}");
    }
}

#[tokio::test]
async fn productpage_serves_the_index_the_api_and_health() {
    let productpage = bookinfo(ReviewsVersion::V3, Replacements::default()).await;

    let index = get(productpage, "/", &[]).await;
    assert!(
        text(&index).contains("href=\"productpage?u=normal\""),
        "{}",
        text(&index)
    );
    assert_eq!(
        text(&get(productpage, "/health", &[]).await),
        "Product page is healthy"
    );

    let products = json(&get(productpage, "/api/v1/products", &[]).await);
    assert_eq!(products[0]["id"], 0);
    assert_eq!(products[0]["title"], "The Comedy of Errors");
    assert!(products[0]["descriptionHtml"]
        .as_str()
        .expect("html")
        .contains("Shakespeare"));

    assert_eq!(
        json(&get(productpage, "/api/v1/products/0", &[]).await)["publisher"],
        "PublisherA"
    );
    let reviews = json(&get(productpage, "/api/v1/products/0/reviews", &[]).await);
    assert_eq!(
        reviews["reviews"][1]["rating"],
        serde_json::json!({"stars": 4, "color": "red"})
    );
    let ratings = json(&get(productpage, "/api/v1/products/0/ratings", &[]).await);
    assert_eq!(ratings["ratings"]["Reviewer1"], 5);
    assert_eq!(
        get(productpage, "/api/v1/products/0/other", &[])
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn ratings_down_shows_ratings_unavailable_in_each_review() {
    let ratings = refusing_address().await;
    let productpage = bookinfo(
        ReviewsVersion::V2,
        Replacements {
            ratings: Some(ratings),
            ..Replacements::default()
        },
    )
    .await;
    let page = product_page(productpage).await;

    assert_eq!(
        page.matches(&format!(
            "<p class=\"rating-error\"><i>{RATINGS_UNAVAILABLE}</i></p>"
        ))
        .count(),
        2,
        "{page}"
    );
    assert!(!page.contains("class=\"stars\""), "{page}");
    assert!(
        page.contains("Reviews served by: reviews-v2-7f9c"),
        "{page}"
    );

    let api = get(productpage, "/api/v1/products/0/ratings", &[]).await;
    assert_eq!(api.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        json(&api),
        serde_json::json!({"error": "Sorry, product ratings are currently unavailable for this book."})
    );
}

#[tokio::test]
async fn reviews_or_details_down_show_their_messages() {
    let productpage = bookinfo(
        ReviewsVersion::V2,
        Replacements {
            reviews: Some(refusing_address().await),
            ..Replacements::default()
        },
    )
    .await;
    let page = product_page(productpage).await;
    assert!(page.contains(REVIEWS_UNAVAILABLE), "{page}");
    assert!(!page.contains("Reviews served by:"), "{page}");
    assert!(
        page.contains("<dt>Publisher:</dt><dd>PublisherA</dd>"),
        "{page}"
    );
    let api = get(productpage, "/api/v1/products/0/reviews", &[]).await;
    assert_eq!(api.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        json(&api),
        serde_json::json!({ "error": REVIEWS_UNAVAILABLE })
    );

    let productpage = bookinfo(
        ReviewsVersion::V2,
        Replacements {
            details: Some(refusing_address().await),
            ..Replacements::default()
        },
    )
    .await;
    let page = product_page(productpage).await;
    assert!(page.contains(DETAILS_UNAVAILABLE), "{page}");
    assert!(!page.contains("Publisher:"), "{page}");
    assert_eq!(page.matches("class=\"stars\"").count(), 2, "{page}");
}

/// Ratings that answers only after `delay`, counting the requests it receives.
async fn delayed_ratings(delay: Duration) -> (SocketAddr, watch::Receiver<usize>) {
    let listener = loopback_listener().await;
    let addr = listener.local_addr().expect("bound address");
    let (count, requests) = watch::channel(0);
    let count = Arc::new(count);
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.expect("accept");
            let count = count.clone();
            tokio::spawn(async move {
                let service = service_fn(move |_: Request<Incoming>| {
                    let count = count.clone();
                    async move {
                        count.send_modify(|n| *n += 1);
                        tokio::time::sleep(delay).await;
                        let body =
                            serde_json::to_vec(&ProductRatings::for_product(0)).expect("JSON");
                        Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(
                            body,
                        ))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, requests)
}

/// The fault-injection task: ratings 7 s late behind reviews v2 (which waits 10 s) outlasts
/// productpage's two 3 s tries at reviews, so the page shows the reviews error after 6 s.
/// The clock is paused and jumps only to the next timer, so 6 s is exact up to the
/// instants at which the loopback I/O happens; the bound allows 500 ms of slack.
#[tokio::test(start_paused = true)]
async fn ratings_delay_behind_reviews_v2_outlasts_productpage_two_tries() {
    let (ratings, ratings_requests) = delayed_ratings(Duration::from_secs(7)).await;
    let productpage = bookinfo(
        ReviewsVersion::V2,
        Replacements {
            ratings: Some(ratings),
            ..Replacements::default()
        },
    )
    .await;

    let started = tokio::time::Instant::now();
    let page = product_page(productpage).await;
    let elapsed = started.elapsed();

    assert!(page.contains(REVIEWS_UNAVAILABLE), "{page}");
    assert!(
        (Duration::from_secs(6)..Duration::from_millis(6500)).contains(&elapsed),
        "two 3 s tries, took {elapsed:?}"
    );
    // One ratings call per try at reviews.
    assert_eq!(*ratings_requests.borrow(), 2);
}

/// Reviews v3 gives ratings 2.5 s, inside productpage's 3 s: the page comes back after 2.5 s
/// (500 ms of slack, as above) with the ratings error and no stars.
#[tokio::test(start_paused = true)]
async fn ratings_delay_behind_reviews_v3_shows_ratings_unavailable() {
    let (ratings, ratings_requests) = delayed_ratings(Duration::from_secs(7)).await;
    let productpage = bookinfo(
        ReviewsVersion::V3,
        Replacements {
            ratings: Some(ratings),
            ..Replacements::default()
        },
    )
    .await;

    let started = tokio::time::Instant::now();
    let page = product_page(productpage).await;
    let elapsed = started.elapsed();

    assert_eq!(page.matches(RATINGS_UNAVAILABLE).count(), 2, "{page}");
    assert!(!page.contains("class=\"stars\""), "{page}");
    assert!(
        (Duration::from_millis(2500)..Duration::from_secs(3)).contains(&elapsed),
        "one 2.5 s ratings call, took {elapsed:?}"
    );
    assert_eq!(*ratings_requests.borrow(), 1);
}

/// A request as an explicit proxy saw it.
#[derive(Debug)]
struct Seen {
    authority: String,
    headers: HeaderMap,
}

/// An explicit HTTP proxy that records each absolute-form request, then forwards it to
/// the address its authority (`details:9080` and so on) stands for.
async fn recording_proxy(
    routes: Vec<(Upstream, SocketAddr)>,
) -> (SocketAddr, Arc<Mutex<Vec<Seen>>>) {
    let listener = loopback_listener().await;
    let addr = listener.local_addr().expect("bound address");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let routes = Arc::new(routes);
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.expect("accept");
            let (routes, log) = (routes.clone(), log.clone());
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<Incoming>| {
                    let (routes, log) = (routes.clone(), log.clone());
                    async move {
                        let authority = request
                            .uri()
                            .authority()
                            .map(|a| a.to_string())
                            .unwrap_or_default();
                        assert_eq!(
                            request.headers()[HOST],
                            authority.as_str(),
                            "Host is the original authority"
                        );
                        log.lock().expect("log").push(Seen {
                            authority: authority.clone(),
                            headers: request.headers().clone(),
                        });
                        let target = routes
                            .iter()
                            .find(|(upstream, _)| upstream.to_string() == authority)
                            .map(|(_, addr)| *addr);
                        let response = match target {
                            Some(target) => {
                                let mut forward = Request::get(request.uri().path())
                                    .body(Full::new(Bytes::new()))
                                    .expect("valid request");
                                *forward.headers_mut() = request.headers().clone();
                                send(target, forward)
                                    .await
                                    .expect("the real service answers")
                                    .map(Full::new)
                            }
                            None => Response::builder()
                                .status(StatusCode::BAD_GATEWAY)
                                .body(Full::new(Bytes::new()))
                                .expect("valid response"),
                        };
                        Ok::<_, std::convert::Infallible>(response)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, seen)
}

/// Bookinfo as inside a mesh: services named `details`, `reviews` and `ratings` on 9080,
/// reached only through the explicit proxy. Returns productpage and the proxy's log.
async fn bookinfo_behind_proxy(version: ReviewsVersion) -> (SocketAddr, Arc<Mutex<Vec<Seen>>>) {
    let mesh_names = Config::default();
    let details = start(App::Details, Config::default()).await;
    let ratings = start(App::Ratings, Config::default()).await;
    // The proxy's address is needed before reviews starts, and reviews' before the proxy
    // starts: bind reviews' listener first.
    let reviews_listener = loopback_listener().await;
    let reviews = reviews_listener.local_addr().expect("bound address");
    let (proxy, seen) = recording_proxy(vec![
        (mesh_names.details.clone(), details),
        (mesh_names.reviews.clone(), reviews),
        (mesh_names.ratings.clone(), ratings),
    ])
    .await;
    let behind_proxy = Config {
        proxy: Some(proxy),
        podname: Some(podname(version)),
        ..Config::default()
    };
    tokio::spawn(serve_on(
        App::Reviews { version },
        behind_proxy.clone(),
        reviews_listener,
    ));
    (start(App::Productpage, behind_proxy).await, seen)
}

fn seen_by(seen: &Mutex<Vec<Seen>>, service: &str) -> HeaderMap {
    let seen = seen.lock().expect("log");
    let authority = format!("{service}:9080");
    let mut requests = seen.iter().filter(|s| s.authority == authority);
    let first = requests
        .next()
        .unwrap_or_else(|| panic!("no request to {authority}: {seen:?}"));
    assert!(
        requests.next().is_none(),
        "one request to {authority}: {seen:?}"
    );
    first.headers.clone()
}

#[tokio::test]
async fn login_sends_end_user_to_reviews_and_ratings_and_logout_clears_it() {
    let (productpage, seen) = bookinfo_behind_proxy(ReviewsVersion::V2).await;

    let login = request(
        productpage,
        Method::POST,
        "/login",
        &[("content-type", "application/x-www-form-urlencoded")],
        "username=jason&passwd=secret",
    )
    .await;
    assert_eq!(login.status(), StatusCode::FOUND);
    assert_eq!(login.headers()[LOCATION], "/productpage");
    let cookies: Vec<_> = login
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().expect("ASCII"))
        .collect();
    assert_eq!(cookies, ["user=jason; Path=/", "email=jason; Path=/"]);

    let cookie = "user=jason; email=jason";
    let page = get(productpage, "/productpage", &[("cookie", cookie)]).await;
    let page = text(&page);
    assert!(page.contains("<span class=\"user\">jason</span>"), "{page}");
    assert!(page.contains("sign out"), "{page}");
    assert_eq!(page.matches("data-color=\"black\"").count(), 2, "{page}");
    for service in ["details", "reviews", "ratings"] {
        let headers = seen_by(&seen, service);
        assert_eq!(headers["end-user"], "jason", "{service}");
        assert_eq!(headers["cookie"], cookie, "{service}");
    }

    let logout = get(productpage, "/logout", &[("cookie", cookie)]).await;
    assert_eq!(logout.status(), StatusCode::FOUND);
    assert_eq!(logout.headers()[LOCATION], "/productpage");
    let cleared: Vec<_> = logout
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().expect("ASCII"))
        .collect();
    assert_eq!(
        cleared,
        ["user=; Path=/; Max-Age=0", "email=; Path=/; Max-Age=0"]
    );
}

#[tokio::test]
async fn trace_headers_reach_every_hop_and_only_the_session_names_the_user() {
    let (productpage, seen) = bookinfo_behind_proxy(ReviewsVersion::V3).await;
    let trace: Vec<(&str, String)> = FORWARDED_HEADERS
        .iter()
        .map(|name| (*name, format!("{name}-value-1")))
        .collect();
    let mut headers: Vec<(&str, &str)> = trace
        .iter()
        .map(|(name, value)| (*name, value.as_str()))
        .collect();
    // Only a login names the user: a caller's own end-user goes no further.
    headers.push(("end-user", "mallory"));

    let page = get(productpage, "/productpage", &headers).await;
    let page = text(&page);
    assert_eq!(page.matches("data-color=\"red\"").count(), 2, "{page}");

    for service in ["details", "reviews", "ratings"] {
        let received = seen_by(&seen, service);
        for (name, value) in &trace {
            assert_eq!(
                received.get(*name).map(|v| v.to_str().expect("ASCII")),
                Some(value.as_str()),
                "{name} to {service}"
            );
        }
        assert!(
            received.get("end-user").is_none(),
            "{service}: {received:?}"
        );
    }
}
