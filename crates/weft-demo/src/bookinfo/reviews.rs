//! reviews: two reviews of the book; v2 and v3 add each reviewer's stars from ratings
//! (black and red), v1 none, as Istio's three reviews deployments do.

use super::client::{forwarded, CallPolicy, Client, Upstream, FORWARDED_HEADERS};
use super::ratings::ProductRatings;
use super::{healthy, json_reply, route, Config, Reply, ReviewsVersion, Route};
use http::{HeaderMap, Request, StatusCode};
use serde::{Deserialize, Serialize};

/// What a review shows when ratings failed or timed out.
pub const RATINGS_UNAVAILABLE: &str = "Ratings service is currently unavailable";

/// The header that names the logged-in user; reviews passes it on to ratings.
pub const END_USER: &str = "end-user";

const REVIEWS: [(&str, &str); 2] = [
    (
        "Reviewer1",
        "An extremely entertaining play by Shakespeare. The slapstick humour is refreshing!",
    ),
    (
        "Reviewer2",
        "Absolutely fun and entertaining. The play lacks thematic depth when compared to other plays by Shakespeare.",
    ),
];

/// What `GET /reviews/<id>` answers. `id` is a string, as Istio's Java app writes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductReviews {
    pub id: String,
    pub podname: String,
    pub clustername: String,
    pub reviews: Vec<Review>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Review {
    pub reviewer: String,
    pub text: String,
    /// Absent from v1's reviews.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rating: Option<Rating>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Rating {
    Stars { stars: u8, color: String },
    Unavailable { error: String },
}

pub(super) struct Reviews {
    version: ReviewsVersion,
    podname: String,
    clustername: String,
    client: Client,
    ratings: Upstream,
}

impl Reviews {
    pub(super) fn new(version: ReviewsVersion, config: Config) -> Self {
        Reviews {
            version,
            podname: config
                .podname
                .unwrap_or_else(|| format!("reviews-{version}")),
            clustername: config.clustername,
            client: Client::new(config.proxy),
            ratings: config.ratings,
        }
    }

    pub(super) async fn handle<B>(&self, request: &Request<B>) -> Reply {
        match route(request, "/reviews/") {
            Route::Health => healthy("Reviews is healthy"),
            Route::Product(id) => {
                json_reply(StatusCode::OK, &self.reviews(id, request.headers()).await)
            }
            Route::Reject(reply) => reply,
        }
    }

    async fn reviews(&self, id: i64, incoming: &HeaderMap) -> ProductReviews {
        let stars = match self.version.star_ratings() {
            Some(style) => Some((style.color, self.ratings(id, incoming, style.timeout).await)),
            None => None,
        };
        let reviews = REVIEWS
            .iter()
            .map(|(reviewer, text)| Review {
                reviewer: (*reviewer).to_owned(),
                text: (*text).to_owned(),
                rating: stars.as_ref().map(|(color, ratings)| {
                    match ratings.as_ref().and_then(|r| r.ratings.get(*reviewer)) {
                        Some(&stars) => Rating::Stars {
                            stars,
                            color: (*color).to_owned(),
                        },
                        None => Rating::Unavailable {
                            error: RATINGS_UNAVAILABLE.to_owned(),
                        },
                    }
                }),
            })
            .collect();
        ProductReviews {
            id: id.to_string(),
            podname: self.podname.clone(),
            clustername: self.clustername.clone(),
            reviews,
        }
    }

    /// One attempt, as Istio's reviews makes; `None` when ratings cannot say.
    async fn ratings(
        &self,
        id: i64,
        incoming: &HeaderMap,
        timeout: std::time::Duration,
    ) -> Option<ProductRatings> {
        let mut headers = forwarded(incoming, &FORWARDED_HEADERS);
        headers.extend(forwarded(incoming, &[END_USER]));
        let policy = CallPolicy {
            timeout,
            attempts: 1,
        };
        let path = format!("/ratings/{id}");
        match self
            .client
            .get_json(&self.ratings, &path, &headers, policy)
            .await
        {
            Ok(ratings) => Some(ratings),
            Err(error) => {
                tracing::warn!(upstream = %self.ratings, %path, %error, "ratings unavailable");
                None
            }
        }
    }
}
