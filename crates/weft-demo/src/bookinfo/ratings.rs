//! ratings: every product's stars from two reviewers, as Istio's ratings v1 answers
//! without a database.

use super::{healthy, json_reply, route, Reply, Route};
use http::{Request, StatusCode};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What `GET /ratings/<id>` answers: stars (1 to 5) by reviewer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductRatings {
    pub id: i64,
    pub ratings: BTreeMap<String, u8>,
}

impl ProductRatings {
    pub fn for_product(id: i64) -> Self {
        ProductRatings {
            id,
            ratings: BTreeMap::from([("Reviewer1".to_owned(), 5), ("Reviewer2".to_owned(), 4)]),
        }
    }
}

pub(super) fn handle<B>(request: &Request<B>) -> Reply {
    match route(request, "/ratings/") {
        Route::Health => healthy("Ratings is healthy"),
        Route::Product(id) => json_reply(StatusCode::OK, &ProductRatings::for_product(id)),
        Route::Reject(reply) => reply,
    }
}
