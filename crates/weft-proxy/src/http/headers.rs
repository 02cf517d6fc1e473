//! Header handling shared by both directions: hop-by-hop headers, request ids.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

// Names the request path looks up on every request: a `HeaderName` is hashed as it is,
// where a `&str` is first parsed and lowercased into a new name.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_ENVOY_ATTEMPT_COUNT: HeaderName = HeaderName::from_static("x-envoy-attempt-count");
pub const X_ENVOY_ORIGINAL_PATH: HeaderName = HeaderName::from_static("x-envoy-original-path");
pub const X_ENVOY_UPSTREAM_RQ_TIMEOUT_MS: HeaderName =
    HeaderName::from_static("x-envoy-upstream-rq-timeout-ms");
pub const X_ENVOY_UPSTREAM_RQ_PER_TRY_TIMEOUT_MS: HeaderName =
    HeaderName::from_static("x-envoy-upstream-rq-per-try-timeout-ms");
pub const X_ENVOY_UPSTREAM_SERVICE_TIME: HeaderName =
    HeaderName::from_static("x-envoy-upstream-service-time");
pub const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Hop-by-hop headers (RFC 9110 §7.6.1) never cross a proxy, except the upgrade pair on an
/// upgrade and `te: trailers`, which gRPC needs end to end.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().to_ascii_lowercase().as_bytes()).ok())
        .filter(|n| !(keep_upgrade && n == header::UPGRADE))
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        KEEP_ALIVE,
        PROXY_CONNECTION,
        header::TRANSFER_ENCODING,
        header::PROXY_AUTHORIZATION,
        header::PROXY_AUTHENTICATE,
    ] {
        headers.remove(name);
    }
    if !keep_upgrade {
        headers.remove(header::CONNECTION);
        headers.remove(header::UPGRADE);
    }
    if headers.get(header::TE).is_some_and(|v| v != "trailers") {
        headers.remove(header::TE);
    }
}

pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
}

/// Envoy generates `x-request-id` (a UUIDv4) when the caller sent none.
pub fn ensure_request_id(headers: &mut HeaderMap) {
    if headers.contains_key(X_REQUEST_ID) {
        return;
    }
    let r = fastrand::u128(..);
    let r = (r & !(0xf << 76) | (0x4 << 76)) & !(0x3 << 62) | (0x2 << 62);
    let mut s = String::with_capacity(36);
    for (shift, digits) in [(96, 8), (80, 4), (64, 4), (48, 4), (0, 12)] {
        if shift != 96 {
            s.push('-');
        }
        push_hex(&mut s, r >> shift, digits);
    }
    headers.insert(
        X_REQUEST_ID,
        HeaderValue::from_str(&s).expect("hex is a valid header"),
    );
}

/// Appends the low `digits` hex digits of `value`, lowercase and zero-padded: what
/// `{:0N$x}` writes, without the formatting machinery (ids are written on every request).
pub fn push_hex(buf: &mut String, value: u128, digits: u32) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for i in (0..digits).rev() {
        buf.push(char::from(HEX[((value >> (i * 4)) & 0xf) as usize]));
    }
}

pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert("end-user", HeaderValue::from_static("jason"));
        strip_hop_by_hop(&mut h, false);
        assert!(
            h.get("x-secret").is_none()
                && h.get("connection").is_none()
                && h.get("keep-alive").is_none()
        );
        assert_eq!(h.get("te").unwrap(), "trailers");
        assert_eq!(h.get("end-user").unwrap(), "jason");
    }

    #[test]
    fn request_ids_look_like_uuids() {
        let mut h = HeaderMap::new();
        ensure_request_id(&mut h);
        let id = h.get("x-request-id").unwrap().to_str().unwrap();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        let groups: Vec<usize> = id.split('-').map(str::len).collect();
        assert_eq!(groups, [8, 4, 4, 4, 12]);
        assert!(id.bytes().all(|b| b == b'-' || b.is_ascii_hexdigit()));
        assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"), "{id}");
    }

    #[test]
    fn hex_is_what_format_writes() {
        let mut rng = fastrand::Rng::with_seed(7);
        for digits in [4, 8, 12, 16, 32] {
            for _ in 0..100 {
                let v = rng.u128(..);
                let masked = if digits == 32 {
                    v
                } else {
                    v & ((1 << (digits * 4)) - 1)
                };
                let mut s = String::new();
                push_hex(&mut s, v, digits);
                assert_eq!(s, format!("{masked:0w$x}", w = digits as usize));
            }
        }
    }
}
