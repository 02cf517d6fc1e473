//! details: the book's publishing details, the same for every product id as in Istio's
//! Ruby service.

use super::{healthy, json_reply, route, Reply, Route};
use http::{Request, StatusCode};
use serde::{Deserialize, Serialize};

/// What `GET /details/<id>` answers, field for field as Istio's details v1.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BookDetails {
    pub id: i64,
    pub author: String,
    pub year: u16,
    #[serde(rename = "type")]
    pub kind: String,
    pub pages: u32,
    pub publisher: String,
    pub language: String,
    #[serde(rename = "ISBN-10")]
    pub isbn_10: String,
    #[serde(rename = "ISBN-13")]
    pub isbn_13: String,
}

impl BookDetails {
    /// The Comedy of Errors, under any id.
    pub fn for_product(id: i64) -> Self {
        BookDetails {
            id,
            author: "William Shakespeare".to_owned(),
            year: 1595,
            kind: "paperback".to_owned(),
            pages: 200,
            publisher: "PublisherA".to_owned(),
            language: "English".to_owned(),
            isbn_10: "1234567890".to_owned(),
            isbn_13: "123-1234567890".to_owned(),
        }
    }
}

pub(super) fn handle<B>(request: &Request<B>) -> Reply {
    match route(request, "/details/") {
        Route::Health => healthy("Details is healthy"),
        Route::Product(id) => json_reply(StatusCode::OK, &BookDetails::for_product(id)),
        Route::Reject(reply) => reply,
    }
}
