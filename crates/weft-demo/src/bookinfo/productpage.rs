//! productpage: the page people see. It calls details and reviews for every page (and
//! for the JSON API Istio's gateway exposes), passes the caller's trace headers on, and
//! sends the signed-in user as `end-user`, which Istio's routing tasks match on.
//!
//! Its clients behave as Istio's Python productpage: details gets 3 s; reviews gets 3 s
//! and a second try (a "bug" Istio keeps on purpose, so a 7 s ratings delay behind
//! reviews v2 shows the reviews error after about 6 s in the fault-injection task).

use super::client::{forwarded, CallError, CallPolicy, Client, Upstream, FORWARDED_HEADERS};
use super::details::BookDetails;
use super::ratings::ProductRatings;
use super::reviews::{ProductReviews, END_USER};
use super::{html, json_reply, not_found, reply, Config, Reply};
use bytes::Bytes;
use http::header::{COOKIE, LOCATION, SET_COOKIE};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt::Write;
use std::time::Duration;

pub const DETAILS_UNAVAILABLE: &str =
    "Sorry, product details are currently unavailable for this book.";
pub const REVIEWS_UNAVAILABLE: &str =
    "Sorry, product reviews are currently unavailable for this book.";
pub const PRODUCT_RATINGS_UNAVAILABLE: &str =
    "Sorry, product ratings are currently unavailable for this book.";

/// A login form is a few dozen bytes.
const MAX_FORM_BYTES: usize = 64 * 1024;

/// The cookie that names the signed-in user.
const USER_COOKIE: &str = "user";

/// The cookies `POST /login` sets to the user name and `GET /logout` clears.
const SESSION_COOKIES: [&str; 2] = [USER_COOKIE, "email"];

/// The one book the store sells (`/productpage` always shows product 0, as Istio's does).
#[derive(Debug, Serialize)]
pub struct Product {
    pub id: i64,
    pub title: &'static str,
    #[serde(rename = "descriptionHtml")]
    pub description_html: &'static str,
}

pub const PRODUCT: Product = Product {
    id: 0,
    title: "The Comedy of Errors",
    description_html: "<a href=\"https://en.wikipedia.org/wiki/The_Comedy_of_Errors\">Wikipedia Summary</a>: \
        The Comedy of Errors is one of <b>William Shakespeare's</b> early plays. It is his shortest \
        and one of his most farcical comedies, with a major part of the humour coming from slapstick \
        and mistaken identity, in addition to puns and word play.",
};

/// A service productpage calls, how, and what the caller sees when it fails.
struct Dependency {
    upstream: Upstream,
    /// The first path segment: `details` in `/details/<id>`.
    collection: &'static str,
    policy: CallPolicy,
    unavailable: &'static str,
}

pub(super) struct Productpage {
    client: Client,
    details: Dependency,
    reviews: Dependency,
    ratings: Dependency,
}

impl Productpage {
    pub(super) fn new(config: Config) -> Self {
        let once = CallPolicy {
            timeout: Duration::from_secs(3),
            attempts: 1,
        };
        Productpage {
            client: Client::new(config.proxy),
            details: Dependency {
                upstream: config.details,
                collection: "details",
                policy: once,
                unavailable: DETAILS_UNAVAILABLE,
            },
            reviews: Dependency {
                upstream: config.reviews,
                collection: "reviews",
                // Istio's productpage tries reviews twice on purpose (see the module docs).
                policy: CallPolicy {
                    attempts: 2,
                    ..once
                },
                unavailable: REVIEWS_UNAVAILABLE,
            },
            ratings: Dependency {
                upstream: config.ratings,
                collection: "ratings",
                policy: once,
                unavailable: PRODUCT_RATINGS_UNAVAILABLE,
            },
        }
    }

    pub(super) async fn handle(&self, request: Request<Incoming>) -> Reply {
        let incoming = request.headers();
        match (request.method(), request.uri().path()) {
            (&Method::GET, "/") => html_reply(html::index_page(&PRODUCT)),
            (&Method::GET, "/health") => {
                reply(StatusCode::OK, "text/plain", "Product page is healthy")
            }
            (&Method::GET, "/productpage") => self.page(incoming).await,
            (&Method::POST, "/login") => login(request).await,
            (&Method::GET, "/logout") => set_session(None),
            (&Method::GET, "/api/v1/products") => json_reply(StatusCode::OK, &[PRODUCT]),
            (&Method::GET, path) => match path.strip_prefix("/api/v1/products/") {
                Some(product) => self.api(product, incoming).await,
                None => not_found(),
            },
            _ => not_found(),
        }
    }

    async fn page(&self, incoming: &HeaderMap) -> Reply {
        let user = signed_in_user(incoming);
        let headers = outbound_headers(incoming, user.as_deref());
        let id = PRODUCT.id.to_string();
        let (details, reviews) = tokio::join!(
            self.fetch::<BookDetails>(&self.details, &id, &headers),
            self.fetch::<ProductReviews>(&self.reviews, &id, &headers),
        );
        html_reply(html::product_page(
            &PRODUCT,
            user.as_deref(),
            details.ok().as_ref(),
            reviews.ok().as_ref(),
        ))
    }

    /// `/api/v1/products/<id>` (details), `…/<id>/reviews` and `…/<id>/ratings`.
    async fn api(&self, product: &str, incoming: &HeaderMap) -> Reply {
        let headers = outbound_headers(incoming, signed_in_user(incoming).as_deref());
        match product.split_once('/') {
            None => {
                self.api_reply::<BookDetails>(&self.details, product, &headers)
                    .await
            }
            Some((id, "reviews")) => {
                self.api_reply::<ProductReviews>(&self.reviews, id, &headers)
                    .await
            }
            Some((id, "ratings")) => {
                self.api_reply::<ProductRatings>(&self.ratings, id, &headers)
                    .await
            }
            Some(_) => not_found(),
        }
    }

    /// The dependency's JSON, or its status (500 when it did not answer) and an error.
    async fn api_reply<T: DeserializeOwned + Serialize>(
        &self,
        dependency: &Dependency,
        id: &str,
        headers: &HeaderMap,
    ) -> Reply {
        match self.fetch::<T>(dependency, id, headers).await {
            Ok(document) => json_reply(StatusCode::OK, &document),
            Err(error) => json_reply(
                error.status(),
                &serde_json::json!({ "error": dependency.unavailable }),
            ),
        }
    }

    async fn fetch<T: DeserializeOwned>(
        &self,
        dependency: &Dependency,
        id: &str,
        headers: &HeaderMap,
    ) -> Result<T, CallError> {
        let path = format!("/{}/{id}", dependency.collection);
        let outcome = self
            .client
            .get_json(&dependency.upstream, &path, headers, dependency.policy)
            .await;
        if let Err(error) = &outcome {
            tracing::warn!(upstream = %dependency.upstream, path, %error, "upstream unavailable");
        }
        outcome
    }
}

fn html_reply(page: String) -> Reply {
    reply(StatusCode::OK, "text/html; charset=utf-8", page)
}

/// The caller's trace headers, and `end-user` from the session (never the caller's own
/// `end-user`: only productpage decides who is signed in).
fn outbound_headers(incoming: &HeaderMap, user: Option<&str>) -> HeaderMap {
    let mut headers = forwarded(incoming, &FORWARDED_HEADERS);
    if let Some(user) = user {
        let value = HeaderValue::from_str(user).unwrap_or_else(|_| {
            HeaderValue::from_str(&cookie_encode(user)).expect("encoded is ASCII")
        });
        headers.insert(END_USER, value);
    }
    headers
}

/// The `user` cookie `POST /login` set, if any.
fn signed_in_user(incoming: &HeaderMap) -> Option<String> {
    incoming
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == USER_COOKIE)
        .map(|(_, value)| percent_decode(value, false))
        .filter(|user| !user.is_empty())
}

/// `POST /login` with a form of `username` and `passwd` (any password will do).
async fn login(request: Request<Incoming>) -> Reply {
    let form = match Limited::new(request.into_body(), MAX_FORM_BYTES)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(error) => {
            let message = format!("cannot read the login form: {error}");
            return reply(StatusCode::BAD_REQUEST, "text/plain", message);
        }
    };
    let username = form_field(&form, "username").filter(|user| !user.is_empty());
    set_session(username.as_deref())
}

/// Redirects to the page, setting the session cookies to `user` or clearing them.
fn set_session(user: Option<&str>) -> Reply {
    let mut response = Response::builder()
        .status(StatusCode::FOUND)
        .header(LOCATION, "/productpage");
    for name in SESSION_COOKIES {
        let cookie = match user {
            Some(user) => format!("{name}={}; Path=/", cookie_encode(user)),
            None => format!("{name}=; Path=/; Max-Age=0"),
        };
        response = response.header(SET_COOKIE, cookie);
    }
    response
        .body(Full::new(Bytes::new()))
        .expect("cookie values are encoded to valid header values")
}

/// The first value of `name` in an `application/x-www-form-urlencoded` body.
fn form_field(form: &[u8], name: &str) -> Option<String> {
    String::from_utf8_lossy(form)
        .split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .find(|(key, _)| percent_decode(key, true) == name)
        .map(|(_, value)| percent_decode(value, true))
}

/// Decodes `%XX` escapes (and `+` as a space in forms); malformed escapes stay as written.
fn percent_decode(s: &str, plus_is_space: bool) -> String {
    let bytes = s.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |at: usize| bytes.get(at).and_then(|b| (*b as char).to_digit(16));
        match bytes[i] {
            b'%' => match (hex(i + 1), hex(i + 2)) {
                (Some(high), Some(low)) => {
                    decoded.push((high * 16 + low) as u8);
                    i += 3;
                    continue;
                }
                _ => decoded.push(b'%'),
            },
            b'+' if plus_is_space => decoded.push(b' '),
            byte => decoded.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

/// `%XX`-escapes what a cookie value may not hold (RFC 6265 cookie-octet) and `%` itself.
fn cookie_encode(value: &str) -> String {
    let mut encoded = String::with_capacity(value.len());
    for byte in value.bytes() {
        let allowed = matches!(byte, 0x21 | 0x23..=0x24 | 0x26..=0x2B | 0x2D..=0x3A | 0x3C..=0x5B | 0x5D..=0x7E);
        if allowed {
            encoded.push(byte as char);
        } else {
            let _ = write!(encoded, "%{byte:02X}");
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_fields_are_decoded() {
        let form = b"username=jason+bourne&passwd=p%40ss%3D1&flag";
        assert_eq!(
            form_field(form, "username").as_deref(),
            Some("jason bourne")
        );
        assert_eq!(form_field(form, "passwd").as_deref(), Some("p@ss=1"));
        assert_eq!(form_field(form, "flag").as_deref(), Some(""));
        assert_eq!(form_field(form, "missing"), None);
    }

    #[test]
    fn cookie_values_round_trip() {
        for user in ["jason", "Jason Bourne", "a;b=c,d\"e%f", "jösé"] {
            let encoded = cookie_encode(user);
            assert!(HeaderValue::from_str(&encoded).is_ok(), "{encoded}");
            assert!(!encoded.contains([';', ' ', ',', '"']), "{encoded}");
            assert_eq!(percent_decode(&encoded, false), user);
        }
    }

    #[test]
    fn malformed_escapes_stay_as_written() {
        assert_eq!(percent_decode("100%", true), "100%");
        assert_eq!(percent_decode("%zz+", false), "%zz+");
    }

    #[test]
    fn session_user_comes_from_the_user_cookie() {
        let mut headers = HeaderMap::new();
        headers.insert(
            COOKIE,
            HeaderValue::from_static("theme=dark; user=Jason%20B; email=x"),
        );
        assert_eq!(signed_in_user(&headers).as_deref(), Some("Jason B"));
        headers.insert(COOKIE, HeaderValue::from_static("user="));
        assert_eq!(signed_in_user(&headers), None);
    }
}
