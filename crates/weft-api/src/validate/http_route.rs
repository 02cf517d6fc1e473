//! One `VirtualService.http[]` route: what it does (route, redirect, directResponse,
//! delegate) and its match conditions. Its policies are checked in `http_policy`.

use super::common::{duration, invalid, labels, port, Path, Report, REQUIRED};
use super::http::{header_name, header_operations, is_jwt_claim_route, string_match, EmptyMatch};
use super::http_policy as policy;
use super::names::is_istio_label;
use super::virtual_service::{gateway_names, route_destinations, Weighted};
use crate::types::{HttpMatchRequest, HttpRoute};
use crate::validate::Severity;

/// What the enclosing VirtualService decides for its routes.
#[derive(Debug, Clone, Copy)]
pub struct RouteContext {
    /// The VirtualService has no hosts: it is a delegate.
    pub delegate: bool,
    /// Bound only to gateways (not `mesh`): JWT claim routing is possible there.
    pub gateway_bound: bool,
}

pub fn validate(r: &mut Report, path: &Path, http: &HttpRoute, ctx: RouteContext) {
    actions(r, path, http, ctx);
    for (i, m) in http.matches.iter().enumerate() {
        match_request(r, &path.field("match").index(i), m, ctx);
    }
    let rewrite_authority = http.rewrite.as_ref().and_then(|rw| rw.authority.as_deref());
    if let Some(headers) = &http.headers {
        header_operations(r, &path.field("headers"), headers, rewrite_authority);
    }
    if let Some(cors) = &http.cors_policy {
        policy::cors_policy(r, &path.field("corsPolicy"), cors);
    }
    if let Some(fault) = &http.fault {
        policy::fault_injection(r, &path.field("fault"), fault);
    }
    policy::mirrors(r, path, http);
    if let Some(redirect) = &http.redirect {
        policy::redirect(r, &path.field("redirect"), redirect, &http.matches);
    }
    if let Some(direct) = &http.direct_response {
        policy::direct_response(r, &path.field("directResponse"), direct);
    }
    if let Some(retries) = &http.retries {
        policy::retries(r, &path.field("retries"), retries);
    }
    if let Some(rewrite) = &http.rewrite {
        policy::rewrite(r, &path.field("rewrite"), rewrite);
    }
    let routes: Vec<Weighted<'_>> = http
        .route
        .iter()
        .map(|d| Weighted {
            destination: d.destination.as_ref(),
            weight: d.weight,
            headers: d.headers.as_ref(),
        })
        .collect();
    route_destinations(r, &path.field("route"), &routes);
    if let Some(timeout) = http.timeout {
        duration(r, &path.field("timeout"), timeout);
    }
}

/// Exactly one way to answer: a route, a redirect, a direct response, or (in a root
/// VirtualService) a delegate.
fn actions(r: &mut Report, path: &Path, http: &HttpRoute, ctx: RouteContext) {
    let name = http.name.as_deref().unwrap_or_default();
    if let Some(delegate) = &http.delegate {
        if ctx.delegate {
            r.error(
                &path.field("delegate"),
                "delegate HTTP route cannot contain delegate",
            )
            .with_hint("delegation is one level deep");
        } else {
            if http.redirect.is_some() {
                r.error(
                    &path.field("redirect"),
                    format!("root HTTP route {name} must not specify redirect"),
                );
            }
            if !http.route.is_empty() {
                r.error(
                    &path.field("route"),
                    format!("root HTTP route {name} must not specify route"),
                );
            }
            if delegate.name.is_empty() {
                r.warning(
                    &path.field("delegate").field("name"),
                    "delegate without a name delegates to nothing",
                )
                .with_hint(
                    "name the delegate VirtualService (and its namespace if it is elsewhere)",
                );
            }
            return;
        }
    }
    let conflict = |r: &mut Report, field: &str, other: &str, word: &str| {
        r.error(
            &path.field(field),
            format!(
                "HTTP route {word}cannot contain both {field_name} and {other}",
                field_name = snake(field)
            ),
        );
    };
    if http.redirect.is_some() {
        if !http.route.is_empty() {
            conflict(r, "route", "redirect", "");
        }
        if http.fault.is_some() {
            conflict(r, "fault", "redirect", "");
        }
        if http.rewrite.is_some() {
            conflict(r, "rewrite", "redirect", "rule ");
        }
        if http.direct_response.is_some() {
            conflict(r, "directResponse", "redirect", "rule ");
        }
    } else if http.direct_response.is_some() {
        if !http.route.is_empty() {
            conflict(r, "route", "direct_response", "");
        }
        if http.fault.is_some() {
            conflict(r, "fault", "direct_response", "");
        }
        if http.rewrite.is_some() {
            conflict(r, "rewrite", "direct_response", "rule ");
        }
    } else if http.route.is_empty() {
        r.error(
            &path.field("route"),
            format!("{REQUIRED}: HTTP route, redirect or direct_response is required"),
        )
        .with_hint("add route (destinations), redirect, directResponse or delegate");
    }
    if http.mirror.is_some() && !http.mirrors.is_empty() {
        r.error(
            &path.field("mirror"),
            "HTTP route cannot contain both mirror and mirrors",
        )
        .with_hint("move mirror into the mirrors list");
    }
}

fn snake(field: &str) -> &str {
    if field == "directResponse" {
        "direct_response"
    } else {
        field
    }
}

fn match_request(r: &mut Report, path: &Path, m: &HttpMatchRequest, ctx: RouteContext) {
    for (field, map) in [
        ("headers", &m.headers),
        ("withoutHeaders", &m.without_headers),
    ] {
        for (name, value) in map {
            let at = path.field(field).key(name);
            header_name(r, &at, name, true);
            if is_jwt_claim_route(name) && !ctx.gateway_bound {
                r.error(&at, format!("JWT claim based routing (key: {name}) is only supported for gateway, found no gateways"))
                    .with_hint("bind the VirtualService to an ingress gateway, where the JWT is verified");
            }
            // In withoutHeaders, `regex: "*"` is Istio's spelling of "present", not a regex.
            if !(field == "withoutHeaders" && value.regex.as_deref() == Some("*")) {
                string_match(r, &at, value, EmptyMatch::Presence, false);
            }
        }
    }
    if let Some(uri) = &m.uri {
        string_match(r, &path.field("uri"), uri, EmptyMatch::MatchesAll, true);
    }
    for (field, value) in [
        ("scheme", &m.scheme),
        ("method", &m.method),
        ("authority", &m.authority),
    ] {
        if let Some(value) = value {
            string_match(r, &path.field(field), value, EmptyMatch::MatchesAll, false);
        }
    }
    for (name, value) in &m.query_params {
        string_match(
            r,
            &path.field("queryParams").key(name),
            value,
            EmptyMatch::Presence,
            false,
        );
    }
    if let Some(p) = m.port.filter(|p| *p != 0) {
        port(r, &path.field("port"), p);
    }
    labels(
        r,
        &path.field("sourceLabels"),
        &m.source_labels,
        Severity::Error,
    );
    gateway_names(r, &path.field("gateways"), &m.gateways);
    if let Some(ns) = m.source_namespace.as_deref().filter(|ns| !ns.is_empty()) {
        if !is_istio_label(ns) {
            r.error(
                &path.field("sourceNamespace"),
                invalid(
                    ns,
                    "sourceNamespace match is invalid (must be a namespace name)",
                ),
            );
        }
    }
}
