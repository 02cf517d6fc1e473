//! The web app, built from `web/` (`npm run build`) into `assets/` and embedded, so a user
//! installs nothing. The page routes by URL fragment, so every other path is the page.

use bytes::Bytes;
use http::{header, Response, StatusCode};
use http_body_util::Full;

const INDEX: &[u8] = include_bytes!("../assets/index.html");
const APP_JS: &[u8] = include_bytes!("../assets/app.js");
const APP_CSS: &[u8] = include_bytes!("../assets/app.css");

pub fn get(path: &str) -> Response<Full<Bytes>> {
    let (body, kind) = match path {
        "/app.js" => (APP_JS, "text/javascript; charset=utf-8"),
        "/app.css" => (APP_CSS, "text/css; charset=utf-8"),
        "/" | "/index.html" => (INDEX, "text/html; charset=utf-8"),
        _ => {
            return Response::builder()
                .status(StatusCode::NOT_FOUND)
                .header(header::CONTENT_TYPE, "text/plain")
                .body(Full::new(Bytes::from_static(
                    b"not found: the dashboard is at /\n",
                )))
                .expect("valid response")
        }
    };
    Response::builder()
        .header(header::CONTENT_TYPE, kind)
        // Nothing is fetched from elsewhere, and the page is not to be framed.
        .header(
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'",
        )
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        .body(Full::new(Bytes::from_static(body)))
        .expect("valid response")
}
