//! Gateway and Sidecar rules, on small fixtures.

use crate::validate::test_support::*;

fn gw(servers: &str) -> String {
    format!("apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n  name: public\nspec:\n  selector: {{istio: ingressgateway}}\n  servers:\n{servers}")
}

fn sidecar(body: &str) -> String {
    format!("apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata:\n  name: default\n  namespace: prod\nspec:\n{body}")
}

#[test]
fn typical_gateways_are_clean() {
    assert_clean(&gw("  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: ['*']\n    tls: {httpsRedirect: true}\n  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [prod/bookinfo.example.com, '*.example.com']\n    tls: {mode: SIMPLE, credentialName: bookinfo-cert}\n  - port: {number: 15443, name: tls, protocol: TLS}\n    hosts: ['*.local']\n    tls: {mode: AUTO_PASSTHROUGH}\n"));
}

#[test]
fn servers_need_ports_and_hosts() {
    assert_error(
        &gw("  - port: {number: 80, name: http, protocol: HTTP}\n"),
        "spec.servers[0].hosts",
        "server config must contain at least one host",
    );
    assert_error(
        &gw("  - hosts: ['*']\n"),
        "spec.servers[0].port",
        "port is required",
    );
    assert_error(
        &gw("  - port: {number: 0, name: http, protocol: HTTP}\n    hosts: ['*']\n"),
        "spec.servers[0].port.number",
        "port must be between 1-65535",
    );
    assert_error(
        &gw("  - port: {number: 80, protocol: HTTP}\n    hosts: ['*']\n"),
        "spec.servers[0].port.name",
        "port name must be set",
    );
    assert_error(
        &gw("  - port: {number: 80, name: http, protocol: HTTP3}\n    hosts: ['*']\n"),
        "spec.servers[0].port.protocol",
        "invalid protocol \"HTTP3\"",
    );
    assert_error(&gw("  - port: {number: 80, name: http, protocol: HTTP, targetPort: 8080}\n    hosts: ['*']\n"), "spec.servers[0].port.targetPort", "no impact on Gateways");
    assert_error(
        &gw("  - port: {number: 80, name: web, protocol: HTTP}\n    hosts: ['*']\n  - port: {number: 81, name: web, protocol: HTTP}\n    hosts: ['*']\n"),
        "spec.servers[1].port.name",
        "port names in servers must be unique",
    );
    assert_error(
        &gw("  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [reviews]\n"),
        "spec.servers[0].hosts[0]",
        "short names",
    );
    assert_error(
        &gw("  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: ['bad_ns/a.com']\n"),
        "spec.servers[0].hosts[0]",
        "invalid namespace value",
    );
    assert_error(&gw("  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: ['*']\n    bind: localhost\n"), "spec.servers[0].bind", "not a valid IP");
}

#[test]
fn tls_settings_follow_the_protocol() {
    let one = |port: &str, tls: &str| gw(&format!("  - port: {port}\n    hosts: ['*']\n{tls}"));
    assert_error(
        &one("{number: 443, name: https, protocol: HTTPS}", ""),
        "spec.servers[0].tls",
        "server must have TLS settings for HTTPS/TLS protocols",
    );
    assert_error(
        &one(
            "{number: 80, name: http, protocol: HTTP}",
            "    tls: {mode: SIMPLE, credentialName: c}\n",
        ),
        "spec.servers[0].tls",
        "plain text HTTP ports",
    );
    assert_error(
        &one(
            "{number: 3306, name: db, protocol: TCP}",
            "    tls: {mode: SIMPLE, credentialName: c}\n",
        ),
        "spec.servers[0].tls",
        "non HTTPS/TLS ports",
    );
    assert_error(
        &one(
            "{number: 443, name: https, protocol: HTTPS}",
            "    tls: {mode: SIMPLE}\n",
        ),
        "spec.servers[0].tls.serverCertificate",
        "SIMPLE TLS requires a server certificate",
    );
    assert_error(
        &one(
            "{number: 443, name: https, protocol: HTTPS}",
            "    tls: {mode: MUTUAL, serverCertificate: /c, privateKey: /k}\n",
        ),
        "spec.servers[0].tls.caCertificates",
        "client CA bundle",
    );
    assert_error(
        &one(
            "{number: 443, name: https, protocol: HTTPS}",
            "    tls: {mode: ISTIO_MUTUAL, credentialName: c}\n",
        ),
        "spec.servers[0].tls.credentialName",
        "ISTIO_MUTUAL TLS cannot have associated credentialName",
    );
    assert_error(
        &one(
            "{number: 443, name: https, protocol: HTTPS}",
            "    tls: {mode: STRICT}\n",
        ),
        "spec.servers[0].tls.mode",
        "Unsupported value",
    );
    assert_warning(
        &one(
            "{number: 443, name: tls, protocol: TLS}",
            "    tls: {mode: PASSTHROUGH, credentialName: c}\n",
        ),
        "spec.servers[0].tls",
        "does not use certificates",
    );
    assert_warning(
        &one(
            "{number: 443, name: https, protocol: HTTPS}",
            "    tls: {mode: SIMPLE, credentialName: c, minProtocolVersion: TLSV1_0}\n",
        ),
        "spec.servers[0].tls.cipherSuites",
        "below TLSV1_2",
    );
}

#[test]
fn names_selectors_and_empty_gateways() {
    let named = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n  name: public.gw\nspec:\n  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ['*']}]\n";
    assert_error(named, "metadata.name", "invalid gateway name");
    assert_error(&gw("    []\n"), "spec.servers", "at least one server");
    let selector = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n  name: g\nspec:\n  selector: {'istio/x/y': a}\n  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ['*']}]\n";
    assert_warning(selector, "spec.selector[istio/x/y]", "invalid label key");
}

#[test]
fn sidecar_egress() {
    assert_clean(&sidecar("  egress:\n  - port: {number: 9080, protocol: HTTP, name: http}\n    hosts: [./ratings.prod.svc.cluster.local]\n  - hosts: ['./*', 'istio-system/*', '~/*']\n"));
    assert_error(
        &sidecar("  egress: [{hosts: ['*/*']}, {port: {number: 80}, hosts: ['./*']}]\n"),
        "spec.egress[0].port",
        "should be the last listener",
    );
    assert_error(
        &sidecar("  egress: [{hosts: ['*/*']}, {hosts: ['./*']}]\n"),
        "spec.egress[1].port",
        "only one listener with empty port",
    );
    assert_error(
        &sidecar("  egress: [{hosts: [reviews.prod.svc.cluster.local]}]\n"),
        "spec.egress[0].hosts[0]",
        "host must be of form namespace/dnsName",
    );
    assert_error(
        &sidecar("  egress: [{port: {number: 80}}]\n"),
        "spec.egress[0].hosts",
        "at least one host",
    );
    assert_error(&sidecar("  egress: [{port: {number: 80}, hosts: ['./*']}, {port: {number: 80}, hosts: ['./*']}]\n"), "spec.egress[1].port.number", "must be unique");
    assert_error(
        &sidecar("  egress: [{port: {number: 0}, hosts: ['./*']}]\n"),
        "spec.egress[0].bind",
        "unix domain socket bind address",
    );
    assert_clean(&sidecar(
        "  egress: [{port: {number: 0}, bind: 'unix:///var/run/app.sock', hosts: ['./*']}]\n",
    ));
    assert_warning(
        &sidecar("  egress: [{hosts: ['./*', 'prod/a.example.com']}]\n"),
        "spec.egress[0].hosts[1]",
        "duplicated egress host",
    );
    assert_warning(
        &sidecar("  egress: [{hosts: ['*/*', 'prod/*']}]\n"),
        "spec.egress[0].hosts",
        "`*/*` host select all resources",
    );
}

#[test]
fn sidecar_ingress_and_selector() {
    assert_clean(&sidecar("  workloadSelector: {labels: {app: ratings}}\n  ingress:\n  - port: {number: 9080, protocol: HTTP, name: http}\n    defaultEndpoint: 127.0.0.1:8080\n  - port: {number: 9090, protocol: GRPC, name: grpc}\n    defaultEndpoint: unix:///var/run/app.sock\n  - port: {number: 9091, protocol: TCP, name: tcp}\n"));
    assert_error(
        &sidecar("  ingress: [{defaultEndpoint: 127.0.0.1:8080}]\n"),
        "spec.ingress[0].port",
        "port is required for ingress listeners",
    );
    assert_error(
        &sidecar(
            "  ingress: [{port: {number: 80, protocol: HTTP}, defaultEndpoint: 10.0.0.1:8080}]\n",
        ),
        "spec.ingress[0].defaultEndpoint",
        "defaultEndpoint must be of form",
    );
    assert_error(
        &sidecar("  ingress: [{port: {number: 80, protocol: HTTP}, defaultEndpoint: '[::1]:0'}]\n"),
        "spec.ingress[0].defaultEndpoint",
        "port must be between 1-65535",
    );
    assert_error(
        &sidecar("  ingress: [{port: {number: 80, protocol: HTTP, targetPort: 8080}}]\n"),
        "spec.ingress[0].port.targetPort",
        "no impact on Sidecars",
    );
    assert_error(
        &sidecar("  workloadSelector: {labels: {app: '*'}}\n  egress: [{hosts: ['./*']}]\n"),
        "spec.workloadSelector.labels[app]",
        "wildcard is not supported in selector",
    );
    assert_error(
        &sidecar("  workloadSelector: {labels: {app: a}}\n"),
        "spec",
        "empty configuration",
    );
    assert_clean(&sidecar("  outboundTrafficPolicy: {mode: REGISTRY_ONLY}\n"));
}
