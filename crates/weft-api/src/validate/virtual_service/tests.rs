//! VirtualService rules, on small fixtures.

use crate::validate::test_support::*;

fn vs(body: &str) -> String {
    format!("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: reviews\nspec:\n{body}")
}

/// A VirtualService for `reviews` with one HTTP route whose YAML is `route` (indented as an
/// item of `http`).
fn http(route: &str) -> String {
    vs(&format!("  hosts: [reviews]\n  http:\n{route}"))
}

#[test]
fn a_typical_route_is_clean() {
    assert_clean(&http(
        "  - match:\n    - headers: {end-user: {exact: jason}}\n      uri: {prefix: /api}\n    route:\n    - destination: {host: reviews, subset: v2}\n  - route:\n    - destination: {host: reviews, subset: v1, port: {number: 9080}}\n      weight: 90\n    - destination: {host: reviews, subset: v3}\n      weight: 10\n    timeout: 2s\n    retries: {attempts: 3, perTryTimeout: 500ms, retryOn: 'gateway-error,connect-failure,503'}\n",
    ));
}

#[test]
fn hosts_wildcards_and_delegates() {
    assert_error(
        &vs("  hosts: ['*']\n  http: [{route: [{destination: {host: a}}]}]\n"),
        "spec.hosts[0]",
        "not allowed for virtual services bound to the mesh gateway",
    );
    assert_error(&vs("  hosts: ['*']\n  gateways: [gw, mesh]\n  http: [{route: [{destination: {host: a}}]}]\n"), "spec.hosts[0]", "mesh gateway");
    assert_clean(&vs("  hosts: ['*']\n  gateways: [istio-system/gw]\n  http: [{route: [{destination: {host: a}}]}]\n"));
    assert_error(
        &vs("  hosts: [a_b.com]\n  http: [{route: [{destination: {host: a}}]}]\n"),
        "spec.hosts[0]",
        "invalid",
    );
    assert_clean(&vs(
        "  hosts: [10.1.2.3]\n  http: [{route: [{destination: {host: a}}]}]\n",
    ));
    assert_error(
        &vs("  hosts: ['*.foo.com', a.foo.com]\n  http: [{route: [{destination: {host: a}}]}]\n"),
        "spec.hosts[1]",
        "duplicate hosts in virtual service",
    );
    // No hosts: a delegate, reachable only through another VirtualService.
    assert_clean(&vs("  http: [{route: [{destination: {host: a}}]}]\n"));
    assert_error(
        &vs("  tcp: [{route: [{destination: {host: a}}]}]\n"),
        "spec.tcp",
        "delegate virtual service must have no tcp route",
    );
    assert_error(
        &http("  - delegate: {name: child}\n    route: [{destination: {host: a}}]\n"),
        "spec.http[0].route",
        "must not specify route",
    );
    assert_clean(&http("  - delegate: {name: child, namespace: other}\n"));
}

#[test]
fn gateway_names() {
    let with = |gw: &str| {
        vs(&format!("  hosts: [a.example.com]\n  gateways: [{gw}]\n  http: [{{route: [{{destination: {{host: a}}}}]}}]\n"))
    };
    assert_clean(&with("mesh"));
    assert_clean(&with("prod/public-gw"));
    assert_error(&with("bad_gw"), "spec.gateways[0]", "invalid");
    assert_error(&with("prod/"), "spec.gateways[0]", "cannot be empty");
    assert_warning(
        &with("public-gw.prod"),
        "spec.gateways[0]",
        "prefer the <namespace>/<name> format: \"prod/public-gw\"",
    );
}

#[test]
fn a_route_needs_an_action() {
    assert_error(
        &http("  - match: [{uri: {prefix: /}}]\n"),
        "spec.http[0].route",
        "HTTP route, redirect or direct_response is required",
    );
    assert_error(
        &http("  - redirect: {uri: /new}\n    route: [{destination: {host: a}}]\n"),
        "spec.http[0].route",
        "cannot contain both route and redirect",
    );
    assert_error(
        &http("  - directResponse: {status: 503}\n    fault: {abort: {httpStatus: 500}}\n"),
        "spec.http[0].fault",
        "both fault and direct_response",
    );
    assert_error(
        &http("  - redirect: {uri: /a}\n    directResponse: {status: 200}\n"),
        "spec.http[0].directResponse",
        "both direct_response and redirect",
    );
    assert_error(&http("  - route: [{destination: {host: a}}]\n    mirror: {host: b}\n    mirrors: [{destination: {host: c}}]\n"), "spec.http[0].mirror", "both mirror and mirrors");
}

#[test]
fn weights_are_relative() {
    let two = |a: i32, b: i32| {
        http(&format!("  - route:\n    - destination: {{host: a}}\n      weight: {a}\n    - destination: {{host: b}}\n      weight: {b}\n"))
    };
    assert_clean(&two(30, 30));
    assert_clean(&two(0, 5));
    let diags = diagnostics(&two(0, 0));
    let zero = diags
        .iter()
        .find(|d| d.path == "spec.http[0].route")
        .expect("total weight error");
    assert!(zero.message.contains("total destination weight = 0"));
    assert!(zero
        .hint
        .as_deref()
        .unwrap()
        .contains("weights are relative"));
    assert_error(
        &two(-10, 20),
        "spec.http[0].route[0].weight",
        "must not be negative",
    );
    assert_error(
        &http("  - route:\n    - destination: {host: a}\n    - destination: {host: b}\n"),
        "spec.http[0].route",
        "total destination weight = 0",
    );
}

#[test]
fn destinations() {
    assert_error(
        &http("  - route: [{destination: {subset: v1}}]\n"),
        "spec.http[0].route[0].destination.host",
        "Required value",
    );
    assert_error(
        &http("  - route: [{weight: 100}]\n"),
        "spec.http[0].route[0].destination",
        "Required value",
    );
    assert_error(
        &http("  - route: [{destination: {host: '*'}}]\n"),
        "spec.http[0].route[0].destination.host",
        "invalid destination host",
    );
    assert_error(
        &http("  - route: [{destination: {host: a, subset: v1.0}}]\n"),
        "spec.http[0].route[0].destination.subset",
        "subset name is invalid",
    );
    assert_error(
        &http("  - route: [{destination: {host: a, port: {number: 0}}}]\n"),
        "spec.http[0].route[0].destination.port.number",
        "port must be between 1-65535",
    );
}

#[test]
fn string_matches_and_headers() {
    let m = |cond: &str| {
        http(&format!(
            "  - match: [{cond}]\n    route: [{{destination: {{host: a}}}}]\n"
        ))
    };
    assert_error(
        &m("{uri: {exact: /a, prefix: /b}}"),
        "spec.http[0].match[0].uri",
        "only one of exact, prefix or regex",
    );
    assert_error(
        &m("{uri: {regex: '/a(['}}"),
        "spec.http[0].match[0].uri.regex",
        "Invalid value",
    );
    assert_clean(&m("{uri: {regex: '/v[0-9]+/.*'}}"));
    assert_clean(&m("{headers: {x-canary: {}}}"));
    assert_clean(&m("{withoutHeaders: {x-canary: {regex: '*'}}}"));
    assert_warning(
        &m("{uri: {}}"),
        "spec.http[0].match[0].uri",
        "matches every request",
    );
    assert_error(
        &m("{method: {prefix: ''}}"),
        "spec.http[0].match[0].method.prefix",
        "should not be empty",
    );
    assert_error(
        &m("{headers: {'x user': {exact: a}}}"),
        "spec.http[0].match[0].headers[x user]",
        "not a valid header name",
    );
    assert_warning(
        &m("{headers: {X-User: {exact: a}}}"),
        "spec.http[0].match[0].headers[X-User]",
        "lowercase",
    );
    assert_error(
        &m("{headers: {'@request.auth.claims.group': {exact: admin}}}"),
        "spec.http[0].match[0].headers[@request.auth.claims.group]",
        "only supported for gateway",
    );
    assert_error(
        &m("{queryParams: {v: {regex: ''}}}"),
        "spec.http[0].match[0].queryParams[v].regex",
        "should not be empty",
    );
    assert_error(
        &m("{port: 70000}"),
        "spec.http[0].match[0].port",
        "port must be between 1-65535",
    );
    assert_error(
        &m("{sourceLabels: {'app/x/y': a}}"),
        "spec.http[0].match[0].sourceLabels[app/x/y]",
        "invalid label key",
    );
    assert_error(
        &m("{sourceNamespace: Not_Valid}"),
        "spec.http[0].match[0].sourceNamespace",
        "invalid",
    );
}

#[test]
fn timeouts_and_retries() {
    let r = |extra: &str| {
        http(&format!(
            "  - route: [{{destination: {{host: a}}}}]\n{extra}"
        ))
    };
    assert_error(
        &r("    timeout: 0s\n"),
        "spec.http[0].timeout",
        "greater than 1ms",
    );
    assert_error(
        &r("    timeout: 1500us\n"),
        "spec.http[0].timeout",
        "ms precision",
    );
    assert_error(
        &r("    retries: {attempts: -1}\n"),
        "spec.http[0].retries.attempts",
        "cannot be negative",
    );
    assert_error(
        &r("    retries: {attempts: 2, retryOn: '5xx,bogus'}\n"),
        "spec.http[0].retries.retryOn",
        "\"bogus\" is not a valid retryOn policy",
    );
    assert_error(
        &r("    retries: {attempts: 2, retryOn: '5xx, reset'}\n"),
        "spec.http[0].retries.retryOn",
        "not a valid retryOn policy",
    );
    assert_clean(&r(
        "    retries: {attempts: 2, retryOn: 'retriable-status-codes,503,unavailable'}\n",
    ));
    assert_error(
        &r("    retries: {retryOn: 5xx}\n"),
        "spec.http[0].retries.attempts",
        "attempts are set to 0",
    );
    assert_error(
        &r("    retries: {attempts: 1, perTryTimeout: 0s}\n"),
        "spec.http[0].retries.perTryTimeout",
        "greater than 1ms",
    );
}

#[test]
fn fault_injection() {
    let f = |fault: &str| {
        http(&format!(
            "  - route: [{{destination: {{host: a}}}}]\n    fault: {fault}\n"
        ))
    };
    assert_clean(&f(
        "{delay: {fixedDelay: 7s, percentage: {value: 0.5}}, abort: {httpStatus: 555}}",
    ));
    assert_error(
        &f("{}"),
        "spec.http[0].fault",
        "must have an abort and/or a delay",
    );
    assert_error(
        &f("{delay: {exponentialDelay: 1s}}"),
        "spec.http[0].fault.delay.exponentialDelay",
        "not supported",
    );
    assert_error(
        &f("{delay: {percentage: {value: 10}}}"),
        "spec.http[0].fault.delay.fixedDelay",
        "Required value",
    );
    assert_error(
        &f("{delay: {fixedDelay: 1s, percent: 120}}"),
        "spec.http[0].fault.delay.percent",
        "0..100",
    );
    assert_error(
        &f("{abort: {httpStatus: 600}}"),
        "spec.http[0].fault.abort.httpStatus",
        "not in range 200-599",
    );
    assert_error(
        &f("{abort: {grpcStatus: NOPE}}"),
        "spec.http[0].fault.abort.grpcStatus",
        "not supported",
    );
    assert_clean(&f("{abort: {grpcStatus: UNAVAILABLE}}"));
    assert_error(
        &f("{abort: {httpStatus: 503, grpcStatus: UNAVAILABLE}}"),
        "spec.http[0].fault.abort",
        "only one of",
    );
    assert_error(
        &f("{abort: {http2Error: x}}"),
        "spec.http[0].fault.abort.http2Error",
        "not supported yet",
    );
    assert_error(
        &f("{abort: {httpStatus: 503, percentage: {value: 150}}}"),
        "spec.http[0].fault.abort.percentage.value",
        "0..100",
    );
    assert_warning(
        &f("{abort: {percentage: {value: 10}}}"),
        "spec.http[0].fault.abort",
        "error type not set",
    );
}

#[test]
fn redirects_direct_responses_and_rewrites() {
    assert_clean(&http(
        "  - redirect: {uri: /v2, redirectCode: 308, scheme: https, port: 8443}\n",
    ));
    assert_clean(&http("  - redirect: {derivePort: FROM_REQUEST_PORT}\n"));
    assert_clean(&http(
        "  - match: [{uri: {prefix: /foo/}}, {headers: {a: {exact: b}}}]\n    redirect: {prefixRewrite: /new/}\n",
    ));
    assert_error(
        &http("  - match: [{uri: {exact: /foo}}]\n    redirect: {prefixRewrite: /new/}\n"),
        "spec.http[0].redirect.prefixRewrite",
        "requires all URI matches to use prefix match type",
    );
    assert_error(
        &http("  - redirect: {uri: /a, prefixRewrite: /b}\n"),
        "spec.http[0].redirect",
        "only specify one of uri or prefix_rewrite",
    );
    assert_error(
        &http("  - redirect: {redirectCode: 301}\n"),
        "spec.http[0].redirect",
        "must specify URI, authority, scheme, or port",
    );
    assert_error(
        &http("  - redirect: {uri: /a, redirectCode: 200}\n"),
        "spec.http[0].redirect.redirectCode",
        "must be 3xx",
    );
    assert_error(
        &http("  - redirect: {scheme: ftp}\n"),
        "spec.http[0].redirect.scheme",
        "invalid redirect scheme",
    );
    assert_clean(&http(
        "  - directResponse: {status: 404, body: {string: nope}}\n",
    ));
    assert_error(
        &http("  - directResponse: {status: 99}\n"),
        "spec.http[0].directResponse.status",
        "not in range 200-599",
    );
    assert_error(
        &http("  - directResponse: {status: 200, body: {string: a, bytes: YQ==}}\n"),
        "spec.http[0].directResponse.body",
        "only one of string or bytes",
    );
    let r = |rw: &str| {
        http(&format!(
            "  - route: [{{destination: {{host: a}}}}]\n    rewrite: {rw}\n"
        ))
    };
    assert_clean(&r("{uri: /v2, authority: b.example.com}"));
    assert_clean(&r(
        "{uriRegexRewrite: {match: '^/old(/.*)$', rewrite: '/new\\1'}}",
    ));
    assert_error(
        &r("{}"),
        "spec.http[0].rewrite",
        "must specify at least one of URI, UriRegexRewrite, or authority",
    );
    assert_error(
        &r("{uri: /a, uriRegexRewrite: {match: a, rewrite: b}}"),
        "spec.http[0].rewrite",
        "only contain one of URI or UriRegexRewrite",
    );
    assert_error(
        &r("{uriRegexRewrite: {match: '(', rewrite: b}}"),
        "spec.http[0].rewrite.uriRegexRewrite.match",
        "Invalid value",
    );
    assert_error(
        &r("{uriRegexRewrite: {match: a}}"),
        "spec.http[0].rewrite.uriRegexRewrite",
        "requires both Rewrite and Match",
    );
}

#[test]
fn mirrors_cors_and_header_operations() {
    let r = |extra: &str| {
        http(&format!(
            "  - route: [{{destination: {{host: a}}}}]\n{extra}"
        ))
    };
    assert_error(
        &r("    mirror: {subset: v2}\n"),
        "spec.http[0].mirror.host",
        "Required value",
    );
    assert_error(
        &r("    mirror: {host: b}\n    mirrorPercentage: {value: 100.5}\n"),
        "spec.http[0].mirrorPercentage.value",
        "0..100",
    );
    assert_error(
        &r("    mirrors: [{percentage: {value: 5}}]\n"),
        "spec.http[0].mirrors[0].destination",
        "Required value",
    );
    assert_warning(
        &r("    mirror: {host: b}\n    mirrorPercent: 50\n"),
        "spec.http[0].mirrorPercent",
        "deprecated",
    );
    assert_clean(&r("    corsPolicy: {allowOrigins: [{exact: 'https://a.com'}, {regex: 'https://.*\\.b\\.com'}], allowMethods: [GET, POST], allowHeaders: ['*', Content-Type], maxAge: 24h}\n"));
    assert_error(
        &r("    corsPolicy: {allowMethods: [get]}\n"),
        "spec.http[0].corsPolicy.allowMethods[0]",
        "not a supported HTTP method",
    );
    assert_error(
        &r("    corsPolicy: {allowOrigins: [{}]}\n"),
        "spec.http[0].corsPolicy.allowOrigins[0]",
        "not a valid match type for CORS",
    );
    assert_error(
        &r("    corsPolicy: {maxAge: 1500ms}\n"),
        "spec.http[0].corsPolicy.maxAge",
        "seconds precision",
    );
    assert_clean(&r("    headers: {request: {set: {x-a: '%DOWNSTREAM_REMOTE_ADDRESS%'}, remove: [x-b]}, response: {add: {x-c: '100%%'}}}\n"));
    assert_error(
        &r("    headers: {request: {remove: [Host]}}\n"),
        "spec.http[0].headers.request.remove[0]",
        "cannot set Host header",
    );
    assert_error(
        &r("    headers: {response: {set: {':status': '200'}}}\n"),
        "spec.http[0].headers.response.set[:status]",
        "cannot have \":\" prefix",
    );
    assert_error(
        &r("    headers: {request: {set: {x-a: '50%'}}}\n"),
        "spec.http[0].headers.request.set[x-a]",
        "invalid header configuration",
    );
    assert_error(
        &r("    rewrite: {authority: a.com}\n    headers: {request: {set: {host: b.com}}}\n"),
        "spec.http[0].headers.request.set[host]",
        "authority header cannot be set multiple times",
    );
    assert_error(&http("  - route:\n    - destination: {host: a}\n      headers: {request: {remove: [':path']}}\n"), "spec.http[0].route[0].headers.request.remove[0]", "cannot have \":\" prefix");
}

#[test]
fn tcp_and_tls_routes() {
    let tcp = |route: &str| vs(&format!("  hosts: [db.example.com]\n  tcp:\n{route}"));
    assert_clean(&tcp("  - match: [{port: 5432, destinationSubnets: [10.0.0.0/8, 10.1.2.3]}]\n    route: [{destination: {host: db, port: {number: 5432}}}]\n"));
    assert_error(
        &tcp("  - match: [{port: 5432}]\n"),
        "spec.tcp[0].route",
        "TCP route is required",
    );
    assert_error(&tcp("  - match: [{destinationSubnets: [10.0.0.0/40]}]\n    route: [{destination: {host: db}}]\n"), "spec.tcp[0].match[0].destinationSubnets[0]", "not a valid CIDR block");
    assert_error(
        &tcp("  - route: [{destination: {host: a}, weight: 0}, {destination: {host: b}}]\n"),
        "spec.tcp[0].route",
        "total destination weight = 0",
    );

    let tls = |route: &str| {
        vs(&format!(
            "  hosts: ['*.example.com']\n  gateways: [egress]\n  tls:\n{route}"
        ))
    };
    assert_clean(&tls("  - match: [{sniHosts: [api.example.com], port: 443}]\n    route: [{destination: {host: api.example.com}}]\n"));
    assert_error(
        &tls("  - match: [{sniHosts: [api.other.com]}]\n    route: [{destination: {host: a}}]\n"),
        "spec.tls[0].match[0].sniHosts[0]",
        "is not a compatible subset of any of the virtual service hosts",
    );
    assert_error(
        &tls("  - route: [{destination: {host: a}}]\n"),
        "spec.tls[0].match",
        "at least one match condition",
    );
    assert_error(
        &tls("  - match: [{port: 443}]\n    route: [{destination: {host: a}}]\n"),
        "spec.tls[0].match[0].sniHosts",
        "at least one SNI host",
    );
    assert_error(
        &tls("  - match: [{sniHosts: [a.example.com]}]\n"),
        "spec.tls[0].route",
        "TLS route is required",
    );
    assert_warning(
        &tls("  - match: [{sniHosts: [10.0.0.1]}]\n    route: [{destination: {host: a}}]\n"),
        "spec.tls[0].match[0].sniHosts[0]",
        "goes against SNI spec",
    );
}

#[test]
fn export_to() {
    let with = |list: &str| {
        vs(&format!("  hosts: [a]\n  exportTo: {list}\n  http: [{{route: [{{destination: {{host: a}}}}]}}]\n"))
    };
    assert_clean(&with("['.', istio-system]"));
    assert_error(
        &with("['*', foo]"),
        "spec.exportTo",
        "cannot have both public (*) and non-public",
    );
    assert_error(&with("[foo, foo]"), "spec.exportTo[1]", "Duplicate value");
    assert_error(
        &with("['.', default]"),
        "spec.exportTo[1]",
        ". and current namespace default",
    );
    assert_error(&with("['~']"), "spec.exportTo[0]", "not allowed");
}

#[test]
fn unreachable_rules_and_empty_services_are_warnings() {
    assert_warning(
        &http("  - route: [{destination: {host: a}}]\n  - route: [{destination: {host: b}}]\n"),
        "spec.http[1]",
        "only the last rule can have no matches",
    );
    assert_warning(
        &http("  - match: [{uri: {prefix: /a}}]\n    route: [{destination: {host: a}}]\n  - name: again\n    match: [{name: m, uri: {prefix: /a}}]\n    route: [{destination: {host: b}}]\n"),
        "spec.http[1]",
        "rule \"again\" not used (all matches used by prior rules)",
    );
    assert_error(
        &vs("  hosts: [a]\n"),
        "spec",
        "http, tcp or tls must be provided",
    );
}
