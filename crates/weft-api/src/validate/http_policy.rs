//! The policies of an HTTP route: CORS, fault injection, mirroring, redirect, direct
//! response, retries and rewrite.

use super::common::{
    at_most_one, duration, int_percent, invalid, min_duration, one_of, percent, port, Path, Report,
    REQUIRED,
};
use super::http::{is_header_token, regex};
use super::virtual_service::destination;
use crate::types::{
    CorsPolicy, FaultAbort, FaultDelay, HttpDirectResponse, HttpFaultInjection, HttpMatchRequest,
    HttpRedirect, HttpRetry, HttpRewrite, HttpRoute,
};

/// Envoy's retry policies (`x-envoy-retry-on` and `x-envoy-retry-grpc-on`).
const RETRY_ON: &[&str] = &[
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "envoy-ratelimited",
    "http3-post-connect-failure",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

const HTTP_METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE",
];

const KB: usize = 1024;

pub fn cors_policy(r: &mut Report, path: &Path, cors: &CorsPolicy) {
    for (i, origin) in cors.allow_origins.iter().enumerate() {
        let at = path.field("allowOrigins").index(i);
        let fields = [
            ("exact", origin.exact.is_some()),
            ("prefix", origin.prefix.is_some()),
            ("regex", origin.regex.is_some()),
        ];
        if at_most_one(r, &at, &fields) > 1 {
            continue;
        }
        let value = [&origin.exact, &origin.prefix, &origin.regex]
            .into_iter()
            .flatten()
            .next();
        if value.is_none_or(|v| v.is_empty()) {
            r.error(&at, "'' is not a valid match type for CORS allow origins")
                .with_hint("give exact, prefix or regex a non-empty value, e.g. exact: https://example.com");
        } else if let Some(re) = &origin.regex {
            regex(r, &at.field("regex"), re);
        }
    }
    if !cors.allow_origin.is_empty() {
        r.warning(&path.field("allowOrigin"), "allowOrigin is deprecated")
            .with_hint("use allowOrigins: [{exact: ...}]");
    }
    for (i, method) in cors.allow_methods.iter().enumerate() {
        if !HTTP_METHODS.contains(&method.as_str()) {
            r.error(
                &path.field("allowMethods").index(i),
                format!("{method:?} is not a supported HTTP method"),
            )
            .with_hint(format!(
                "use one of {} (upper case)",
                HTTP_METHODS.join(", ")
            ));
        }
    }
    for (field, names) in [
        ("allowHeaders", &cors.allow_headers),
        ("exposeHeaders", &cors.expose_headers),
    ] {
        for (i, name) in names.iter().enumerate() {
            let at = path.field(field).index(i);
            if name.is_empty() {
                r.error(&at, "header name cannot be empty");
            } else if name != "*" && !is_header_token(name) {
                r.error(&at, invalid(name, "not a valid header name"));
            }
        }
    }
    if let Some(max_age) = cors.max_age {
        duration(r, &path.field("maxAge"), max_age);
        if max_age.as_std().subsec_nanos() != 0 {
            r.error(
                &path.field("maxAge"),
                "max_age duration is accurate only to seconds precision",
            );
        }
    }
    if let Some(mode) = &cors.unmatched_preflights {
        one_of(
            r,
            &path.field("unmatchedPreflights"),
            mode,
            &["UNSPECIFIED", "FORWARD", "IGNORE"],
        );
    }
}

pub fn fault_injection(r: &mut Report, path: &Path, fault: &HttpFaultInjection) {
    if fault.abort.is_none() && fault.delay.is_none() {
        r.error(
            path,
            "HTTP fault injection must have an abort and/or a delay",
        );
    }
    if let Some(abort) = &fault.abort {
        fault_abort(r, &path.field("abort"), abort);
    }
    if let Some(delay) = &fault.delay {
        fault_delay(r, &path.field("delay"), delay);
    }
}

fn fault_abort(r: &mut Report, path: &Path, abort: &FaultAbort) {
    if let Some(p) = abort.percentage {
        percent(r, &path.field("percentage").field("value"), p.value);
    }
    let kinds = [
        ("httpStatus", abort.http_status.is_some()),
        ("grpcStatus", abort.grpc_status.is_some()),
        ("http2Error", abort.http2_error.is_some()),
    ];
    if at_most_one(r, path, &kinds) == 0 {
        r.warning(path, "abort configured, but error type not set")
            .with_hint("set httpStatus (e.g. 503) or grpcStatus (e.g. UNAVAILABLE)");
    }
    if let Some(status) = abort.http_status {
        http_status(r, &path.field("httpStatus"), i64::from(status));
    }
    if let Some(status) = &abort.grpc_status {
        if crate::types::grpc_status_code(status).is_none() {
            r.error(&path.field("grpcStatus"), format!("gRPC status {status:?} is not supported"))
                .with_hint("use a name from https://github.com/grpc/grpc/blob/master/doc/statuscodes.md, e.g. NOT_FOUND");
        }
    }
    if abort.http2_error.is_some() {
        r.error(
            &path.field("http2Error"),
            "HTTP/2 abort fault injection not supported yet",
        );
    }
}

fn fault_delay(r: &mut Report, path: &Path, delay: &FaultDelay) {
    if let Some(p) = delay.percentage {
        percent(r, &path.field("percentage").field("value"), p.value);
    }
    int_percent(r, &path.field("percent"), delay.percent.map(i64::from));
    let kinds = [
        ("fixedDelay", delay.fixed_delay.is_some()),
        ("exponentialDelay", delay.exponential_delay.is_some()),
    ];
    at_most_one(r, path, &kinds);
    match (delay.fixed_delay, delay.exponential_delay) {
        (Some(fixed), None) => duration(r, &path.field("fixedDelay"), fixed),
        (None, Some(exp)) => {
            min_duration(r, &path.field("exponentialDelay"), exp);
            r.error(
                &path.field("exponentialDelay"),
                "exponentialDelay not supported yet",
            )
            .with_hint("use fixedDelay");
        }
        (None, None) => {
            // Istio passes this on and Envoy refuses the whole route table.
            r.required(&path.field("fixedDelay"))
                .with_hint("a delay needs fixedDelay, e.g. fixedDelay: 5s");
        }
        // Both: already reported as a oneof violation.
        (Some(_), Some(_)) => {}
    }
}

/// Envoy accepts statuses from 200 to 599 for aborts and direct responses.
fn http_status(r: &mut Report, path: &Path, status: i64) {
    if !(200..=599).contains(&status) {
        r.error(
            path,
            format!("HTTP status {status} is not in range 200-599"),
        );
    }
}

pub fn mirrors(r: &mut Report, path: &Path, http: &HttpRoute) {
    if let Some(value) = http.mirror_percent {
        if value > 100 {
            r.error(
                &path.field("mirrorPercent"),
                format!("mirror_percent must have a max value of 100 (it has {value})"),
            );
        }
        r.warning(
            &path.field("mirrorPercent"),
            "using deprecated setting \"mirrorPercent\", use \"mirrorPercentage\" instead",
        );
    }
    if let Some(p) = http.mirror_percentage {
        percent(r, &path.field("mirrorPercentage").field("value"), p.value);
    }
    if let Some(mirror) = &http.mirror {
        destination(r, &path.field("mirror"), mirror);
    }
    for (i, mirror) in http.mirrors.iter().enumerate() {
        let at = path.field("mirrors").index(i);
        match &mirror.destination {
            Some(d) => destination(r, &at.field("destination"), d),
            None => {
                r.error(
                    &at.field("destination"),
                    format!("{REQUIRED}: destination is required for mirrors"),
                );
            }
        }
        if let Some(p) = mirror.percentage {
            percent(r, &at.field("percentage").field("value"), p.value);
        }
    }
}

pub fn redirect(
    r: &mut Report,
    path: &Path,
    redirect: &HttpRedirect,
    matches: &[HttpMatchRequest],
) {
    let empty = |s: &Option<String>| s.as_deref().is_none_or(str::is_empty);
    if !empty(&redirect.uri) && !empty(&redirect.prefix_rewrite) {
        r.error(
            path,
            "redirect may only specify one of uri or prefix_rewrite",
        );
    }
    // Envoy replaces the prefix the route matched on, so there must be one.
    let not_prefix = |m: &HttpMatchRequest| m.uri.as_ref().is_some_and(|u| u.prefix.is_none());
    if !empty(&redirect.prefix_rewrite) && matches.iter().any(not_prefix) {
        r.error(
            &path.field("prefixRewrite"),
            "redirect prefix_rewrite requires all URI matches to use prefix match type",
        )
        .with_hint("match uri with prefix, or redirect to a whole uri");
    }
    if empty(&redirect.uri)
        && empty(&redirect.prefix_rewrite)
        && empty(&redirect.authority)
        && empty(&redirect.scheme)
        && redirect.port.is_none()
        && redirect.derive_port.is_none()
    {
        r.error(
            path,
            "redirect must specify URI, authority, scheme, or port",
        );
    }
    let ports = [
        ("port", redirect.port.is_some()),
        ("derivePort", redirect.derive_port.is_some()),
    ];
    at_most_one(r, path, &ports);
    if let Some(code) = redirect.redirect_code.filter(|c| *c != 0) {
        if !(300..=399).contains(&code) {
            r.error(
                &path.field("redirectCode"),
                format!("{code} is not a valid redirect code, must be 3xx"),
            );
        }
    }
    if let Some(scheme) = redirect.scheme.as_deref().filter(|s| !s.is_empty()) {
        if scheme != "http" && scheme != "https" {
            r.error(
                &path.field("scheme"),
                invalid(
                    scheme,
                    "invalid redirect scheme, must be \"http\" or \"https\"",
                ),
            );
        }
    }
    if let Some(p) = redirect.port.filter(|p| *p > 0) {
        port(r, &path.field("port"), p);
    }
    if let Some(derive) = &redirect.derive_port {
        one_of(
            r,
            &path.field("derivePort"),
            derive,
            &["FROM_PROTOCOL_DEFAULT", "FROM_REQUEST_PORT"],
        );
    }
}

pub fn direct_response(r: &mut Report, path: &Path, direct: &HttpDirectResponse) {
    http_status(r, &path.field("status"), i64::from(direct.status));
    let Some(body) = &direct.body else { return };
    let at = path.field("body");
    let kinds = [
        ("string", body.string.is_some()),
        ("bytes", body.bytes.is_some()),
    ];
    if at_most_one(r, &at, &kinds) > 1 {
        return;
    }
    let size = match (&body.string, &body.bytes) {
        (Some(text), None) => text.len(),
        (None, Some(encoded)) => {
            if !is_base64(encoded) {
                r.error(
                    &at.field("bytes"),
                    "Invalid value: bytes must be base64-encoded",
                );
            }
            encoded.len() / 4 * 3
        }
        _ => 0,
    };
    if size > KB * KB {
        r.error(
            &at,
            "large direct_responses may impact control plane performance, must be less than 1MB",
        );
    } else if size > 100 * KB {
        r.warning(
            &at,
            "large direct_responses may impact control plane performance",
        );
    }
}

fn is_base64(s: &str) -> bool {
    let s: String = s.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let body = s.trim_end_matches('=');
    s.len().is_multiple_of(4)
        && s.len() - body.len() <= 2
        && body
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '/')
}

pub fn retries(r: &mut Report, path: &Path, retries: &HttpRetry) {
    if retries.attempts < 0 {
        r.error(
            &path.field("attempts"),
            invalid(retries.attempts, "attempts cannot be negative"),
        );
    }
    let configured = retries.per_try_timeout.is_some()
        || retries.retry_on.as_deref().is_some_and(|s| !s.is_empty())
        || retries.retry_remote_localities.is_some();
    if retries.attempts == 0 && configured {
        r.error(
            &path.field("attempts"),
            "http retry policy configured when attempts are set to 0 (disabled)",
        )
        .with_hint("set attempts to the number of retries, or remove the other retry settings");
    }
    if let Some(t) = retries.per_try_timeout {
        duration(r, &path.field("perTryTimeout"), t);
    }
    if let Some(backoff) = retries.backoff {
        min_duration(r, &path.field("backoff"), backoff);
    }
    for policy in retries
        .retry_on
        .as_deref()
        .unwrap_or_default()
        .split(',')
        .filter(|p| !p.is_empty())
    {
        let is_status = policy.parse::<u16>().is_ok_and(is_known_status);
        if !is_status && !RETRY_ON.contains(&policy) {
            let issue = r.error(
                &path.field("retryOn"),
                format!("{policy:?} is not a valid retryOn policy"),
            );
            if policy.trim() != policy {
                issue.with_hint("retryOn is a comma-separated list without spaces");
            } else {
                issue.with_hint(format!("use HTTP status codes or {}", RETRY_ON.join(", ")));
            }
        }
    }
}

/// The status codes Go's `net/http` names, which is what Istio accepts in retryOn.
fn is_known_status(code: u16) -> bool {
    matches!(code,
        100..=103 | 200..=208 | 226 | 300..=305 | 307 | 308 | 400..=418 | 421..=426 | 428 | 429
        | 431 | 451 | 500..=508 | 510 | 511)
}

pub fn rewrite(r: &mut Report, path: &Path, rewrite: &HttpRewrite) {
    let uri = rewrite.uri.as_deref().is_some_and(|u| !u.is_empty());
    let authority = rewrite.authority.as_deref().is_some_and(|a| !a.is_empty());
    if uri && rewrite.uri_regex_rewrite.is_some() {
        r.error(
            path,
            "rewrite may only contain one of URI or UriRegexRewrite",
        );
    }
    if !uri && !authority && rewrite.uri_regex_rewrite.is_none() {
        r.error(path, "rewrite must specify at least one of URI, UriRegexRewrite, or authority. Only one of URI or UriRegexRewrite may be specified");
    }
    if let Some(rx) = &rewrite.uri_regex_rewrite {
        let at = path.field("uriRegexRewrite");
        if rx.match_.is_empty() || rx.rewrite.is_empty() {
            r.error(
                &at,
                "UriRegexRewrite requires both Rewrite and Match fields to be specified",
            );
        }
        if !rx.match_.is_empty() {
            regex(r, &at.field("match"), &rx.match_);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_bodies() {
        assert!(is_base64("aGVsbG8="));
        assert!(is_base64(""));
        assert!(!is_base64("not base64!"));
        assert!(!is_base64("abc"));
    }

    #[test]
    fn retry_status_codes_are_the_named_ones() {
        assert!(is_known_status(503) && is_known_status(429));
        assert!(!is_known_status(599) && !is_known_status(0));
    }
}
