//! productpage's HTML, laid out as Istio's templates lay it out, with markers tests and
//! scripts can count without parsing HTML:
//!
//! | what | marker |
//! | --- | --- |
//! | page title | `<title>Simple Bookstore App</title>` |
//! | signed-in user | `<span class="user">jason</span>` and a `sign out` link to `logout`; otherwise the login form (`<form method="post" action="login">`, fields `username` and `passwd`) |
//! | details | `<dl class="details">` with `<dt>Publisher:</dt><dd>PublisherA</dd>` and the like |
//! | details failed | `<p class="error" id="details-error">Sorry, product details are currently unavailable for this book.</p>` |
//! | one review | `<blockquote class="review">` holding the text and `<small>Reviewer1</small>` |
//! | stars (v2, v3) | `<span class="stars" data-color="black" data-stars="5">` (or `red`) holding `<font color="black">`, then one `<span class="glyphicon glyphicon-star">` per star and one `<span class="glyphicon glyphicon-star-empty">` per missing star up to 5 |
//! | no stars (v1) | no `class="stars"` and no `glyphicon` anywhere in the page |
//! | rating failed | `<p class="rating-error"><i>Ratings service is currently unavailable</i></p>` |
//! | reviews' pod | `<p class="served-by">Reviews served by: reviews-v2-7f9c</p>`, plus ` on cluster NAME` when reviews names one |
//! | reviews failed | `<p class="error" id="reviews-error">Sorry, product reviews are currently unavailable for this book.</p>` |
//!
//! So `grep -o 'glyphicon glyphicon-star"' | wc -l` counts full stars (9 for the default
//! ratings, 5 + 4) and `data-color="red"` tells v3 from v2.

use super::details::BookDetails;
use super::productpage::{Product, DETAILS_UNAVAILABLE, REVIEWS_UNAVAILABLE};
use super::reviews::{ProductReviews, Rating};
use super::NO_CLUSTER_NAME;
use std::fmt::Write;

/// The most stars a rating shows; more from ratings would be a bug there, not here.
const MAX_STARS: u8 = 5;

/// `s` safe inside HTML text and double- or single-quoted attributes.
pub fn escape(s: &str) -> String {
    let mut escaped = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    escaped
}

/// Istio's Bookinfo look (its Bootstrap navbar, summary, details and reviews side by side,
/// star glyphs), inline: the page fetches nothing.
const STYLE: &str = "\
body { margin: 0; font-family: 'Helvetica Neue', Helvetica, Arial, sans-serif; font-size: 14px; \
  color: #333; background: #fff; line-height: 1.43; }
nav { display: flex; align-items: center; justify-content: space-between; background: #222; \
  border-bottom: 1px solid #080808; padding: 0 15px; min-height: 50px; color: #9d9d9d; }
nav .brand { color: #9d9d9d; font-size: 18px; }
nav form { display: flex; gap: 6px; margin: 0; }
nav input { padding: 5px 8px; border: 1px solid #ccc; border-radius: 4px; font-size: 13px; }
nav button { padding: 5px 12px; border: 1px solid #adadad; border-radius: 4px; background: #e6e6e6; \
  cursor: pointer; }
nav .signed-in { margin: 0; color: #9d9d9d; } nav .signed-in a { color: #fff; }
main { max-width: 1170px; margin: 0 auto; padding: 0 15px 30px; }
.product-title { text-align: center; font-size: 24px; font-weight: 500; margin: 20px 0 10px; }
.summary { font-size: 15px; }
.columns { display: flex; gap: 30px; flex-wrap: wrap; }
.columns > section { flex: 1 1 400px; }
h4 { font-size: 18px; font-weight: 500; margin: 20px 0 10px; }
dl.details { display: grid; grid-template-columns: max-content 1fr; gap: 4px 12px; margin: 0; }
dl.details dt { font-weight: bold; } dl.details dd { margin: 0; }
blockquote.review { border-left: 5px solid #eee; margin: 0 0 20px; padding: 10px 20px; font-size: 16px; }
blockquote.review p { margin: 0 0 10px; }
blockquote.review small { display: block; color: #777; font-size: 80%; }
blockquote.review small::before { content: '\\2014 \\00A0'; }
.stars { font-size: 20px; letter-spacing: 2px; }
.error { color: #a94442; } .rating-error { color: #777; }
.served-by { color: #777; font-size: 12px; margin-top: 20px; }
a { color: #337ab7; }
";

fn layout(body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html>\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>Simple Bookstore App</title>\n<style>{STYLE}</style>\n\
         </head>\n<body>\n{body}</body>\n</html>\n"
    )
}

/// `GET /`: what the app is, and the links Istio's index offers.
pub fn index_page(product: &Product) -> String {
    layout(&format!(
        "<nav><span class=\"brand\">BookInfo Sample</span></nav>\n<main>\n\
         <h1 class=\"product-title\">Simple Bookstore App</h1>\n\
         <p>Hello! This is a simple bookstore application consisting of four services: \
         productpage calls details and reviews, and reviews calls ratings.</p>\n\
         <p>The book on sale: {title}.</p>\n\
         <p><a href=\"productpage?u=normal\">Normal user</a> \
         <a href=\"productpage?u=test\">Test user</a></p>\n</main>\n",
        title = escape(product.title),
    ))
}

/// `GET /productpage`: the book, its details and its reviews, or what failed.
pub fn product_page(
    product: &Product,
    user: Option<&str>,
    details: Option<&BookDetails>,
    reviews: Option<&ProductReviews>,
) -> String {
    let mut body = String::new();
    body.push_str("<nav><span class=\"brand\">BookInfo Sample</span>\n");
    match user {
        Some(user) => {
            let _ = writeln!(
                body,
                "<p class=\"signed-in\"><span class=\"user\">{}</span> ( <a href=\"logout\">sign out</a> )</p>",
                escape(user)
            );
        }
        None => body.push_str(
            "<form method=\"post\" action=\"login\" name=\"login_form\">\n\
             <input type=\"text\" name=\"username\" placeholder=\"User Name\">\n\
             <input type=\"password\" name=\"passwd\" placeholder=\"Password\">\n\
             <button type=\"submit\">Sign in</button>\n</form>\n",
        ),
    }
    body.push_str("</nav>\n<main>\n");
    // The summary is the product's own HTML (a link and bold text), as Istio renders it.
    let _ = writeln!(
        body,
        "<h3 class=\"product-title\">{}</h3>\n<p class=\"summary\">Summary: {}</p>",
        escape(product.title),
        product.description_html
    );
    let _ = write!(
        body,
        "<div class=\"columns\">\n<section>\n{}</section>\n<section>\n{}</section>\n</div>\n</main>\n",
        details_section(details),
        reviews_section(reviews)
    );
    layout(&body)
}

fn details_section(details: Option<&BookDetails>) -> String {
    let Some(details) = details else {
        return format!(
            "<h4>Error fetching product details!</h4>\n<p class=\"error\" id=\"details-error\">{DETAILS_UNAVAILABLE}</p>\n"
        );
    };
    let mut section = String::from("<h4>Book Details</h4>\n<dl class=\"details\">\n");
    let pages = details.pages.to_string();
    let rows = [
        ("Type", details.kind.as_str()),
        ("Pages", pages.as_str()),
        ("Publisher", details.publisher.as_str()),
        ("Language", details.language.as_str()),
        ("ISBN-10", details.isbn_10.as_str()),
        ("ISBN-13", details.isbn_13.as_str()),
    ];
    for (label, value) in rows {
        let _ = writeln!(section, "<dt>{label}:</dt><dd>{}</dd>", escape(value));
    }
    section.push_str("</dl>\n");
    section
}

fn reviews_section(reviews: Option<&ProductReviews>) -> String {
    let Some(reviews) = reviews else {
        return format!(
            "<h4>Error fetching product reviews!</h4>\n<p class=\"error\" id=\"reviews-error\">{REVIEWS_UNAVAILABLE}</p>\n"
        );
    };
    let mut section = String::from("<h4>Book Reviews</h4>\n");
    for review in &reviews.reviews {
        let _ = writeln!(
            section,
            "<blockquote class=\"review\">\n<p>{}</p>\n<small>{}</small>",
            escape(&review.text),
            escape(&review.reviewer)
        );
        match &review.rating {
            Some(Rating::Stars { stars, color }) => section.push_str(&stars_markup(*stars, color)),
            Some(Rating::Unavailable { error }) => {
                let _ = writeln!(
                    section,
                    "<p class=\"rating-error\"><i>{}</i></p>",
                    escape(error)
                );
            }
            None => {}
        }
        section.push_str("</blockquote>\n");
    }
    let _ = write!(
        section,
        "<p class=\"served-by\">Reviews served by: {}",
        escape(&reviews.podname)
    );
    if reviews.clustername != NO_CLUSTER_NAME {
        let _ = write!(section, " on cluster {}", escape(&reviews.clustername));
    }
    section.push_str("</p>\n");
    section
}

fn stars_markup(stars: u8, color: &str) -> String {
    let stars = stars.min(MAX_STARS);
    let color = escape(color);
    format!(
        "<span class=\"stars\" data-color=\"{color}\" data-stars=\"{stars}\"><font color=\"{color}\">{full}{empty}</font></span>\n",
        full = "<span class=\"glyphicon glyphicon-star\">★</span>".repeat(stars.into()),
        empty = "<span class=\"glyphicon glyphicon-star-empty\">☆</span>".repeat((MAX_STARS - stars).into()),
    )
}
