//! Names and addresses: DNS labels, (wildcard) host names, IPs and CIDRs, Unix sockets,
//! `namespace/host` references, and how Istio compares wildcard hosts.

use super::common::{invalid, Path, Report};
use crate::resource::Kind;
use crate::types::ObjectMeta;
use std::net::IpAddr;

const DNS1123_LABEL: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character, at most 63 characters (e.g. 'my-name', or '123-abc')";
const DNS1123_SUBDOMAIN: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character, at most 253 characters (e.g. 'example.com')";
const DNS1035_LABEL: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character, at most 63 characters (e.g. 'my-name', or 'abc-123')";

/// `metadata.name` and `metadata.namespace` as the Kubernetes API server checks them: a
/// namespace is a DNS-1123 label, a Service's name a DNS-1035 label, an Istio object's name
/// a DNS-1123 subdomain. Names become file names in the control plane's store, so nothing
/// else (`..`, `/`, `%2f`, upper case, non-ASCII) gets that far.
pub fn validate_metadata(r: &mut Report, kind: Kind, meta: &ObjectMeta) {
    let namespace = meta.namespace();
    if !is_dns1123_label(namespace) {
        r.error(
            &Path::metadata().field("namespace"),
            invalid(namespace, DNS1123_LABEL),
        );
    }
    let name = meta.name.as_str();
    if name.is_empty() {
        return;
    }
    let (ok, rule) = match kind {
        Kind::Service => (is_dns1035_label(name), DNS1035_LABEL),
        _ => (is_dns1123_subdomain(name), DNS1123_SUBDOMAIN),
    };
    if !ok {
        r.error(&Path::metadata().field("name"), invalid(name, rule));
    }
}

/// A DNS-1123 subdomain: dot-separated DNS-1123 labels, at most 253 characters in all.
pub fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

/// A DNS-1035 label: a DNS-1123 label that starts with a letter.
pub fn is_dns1035_label(s: &str) -> bool {
    is_dns1123_label(s) && s.starts_with(|c: char| c.is_ascii_lowercase())
}

/// `s` is 1..=`max` characters of `allowed`, starting and ending with an ASCII alphanumeric.
pub fn is_label_with(s: &str, allowed: impl Fn(char) -> bool, max: usize) -> bool {
    let ends_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    s.len() <= max
        && ends_ok(s.chars().next())
        && ends_ok(s.chars().last())
        && s.chars().all(allowed)
}

/// A DNS-1123 label as Kubernetes checks it (lower case, at most 63 characters): Service port
/// names, namespaces.
pub fn is_dns1123_label(s: &str) -> bool {
    is_label_with(
        s,
        |c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-',
        63,
    )
}

/// A DNS-1123 label as Istio checks it, which also allows upper case: subset names, exportTo,
/// host labels.
pub fn is_istio_label(s: &str) -> bool {
    is_label_with(s, |c| c.is_ascii_alphanumeric() || c == '-', 63)
}

/// `*`, a label, or a label with a leading `*` / `*-` (`*foo`, `*-foo`).
fn is_wildcard_label(s: &str) -> bool {
    s.len() <= 63
        && (s == "*"
            || is_istio_label(s)
            || s.strip_prefix("*-").is_some_and(is_istio_label)
            || s.strip_prefix('*').is_some_and(is_istio_label))
}

fn preconditions(domain: &str) -> Result<(), String> {
    if domain.is_empty() {
        return Err("empty domain name not allowed".into());
    }
    if domain.len() > 255 {
        return Err(format!("domain name {domain:?} too long (max 255)"));
    }
    Ok(())
}

/// Every dot-separated label valid, a trailing dot allowed, the top-level label not numeric
/// (which is what keeps IP addresses out of host names).
fn dns1123_labels(domain: &str) -> Result<(), String> {
    let parts: Vec<&str> = domain.split('.').collect();
    let tld = parts[parts.len() - 1];
    if !tld.is_empty() && tld.parse::<i64>().is_ok() {
        return Err(format!(
            "domain name {domain:?} invalid (top level domain {tld:?} cannot be all-numeric)"
        ));
    }
    for (i, label) in parts.iter().enumerate() {
        if i == parts.len() - 1 && label.is_empty() && i > 0 {
            return Ok(());
        }
        if !is_istio_label(label) {
            return Err(format!(
                "domain name {domain:?} invalid (label {label:?} invalid)"
            ));
        }
    }
    Ok(())
}

/// A fully-qualified name with no wildcard.
pub fn fqdn(domain: &str) -> Result<(), String> {
    preconditions(domain)?;
    dns1123_labels(domain)
}

/// A host name whose first label may be a wildcard: `*`, `*.example.com`, `reviews`.
pub fn wildcard_domain(domain: &str) -> Result<(), String> {
    preconditions(domain)?;
    let (first, rest) = match domain.split_once('.') {
        Some((first, rest)) => (first, Some(rest)),
        None => (domain, None),
    };
    if !is_wildcard_label(first) {
        return Err(format!(
            "domain name {domain:?} invalid (label {first:?} invalid)"
        ));
    }
    rest.map_or(Ok(()), dns1123_labels)
}

/// Hosts of a VirtualService bound to gateways, which may also be the SNI names Istio
/// generates for multi-network passthrough (`outbound_.80_._.reviews.default.svc.cluster.local`).
pub fn gateway_bound_domain(domain: &str, sni: bool) -> Result<(), String> {
    if sni && domain.starts_with("outbound_.") {
        let port_digit = domain.as_bytes().get("outbound_.".len());
        if port_digit.is_some_and(|b| (b'0'..=b'8').contains(b)) {
            return Ok(());
        }
        return Err(format!(
            "domain name {domain:?} invalid (label \"outbound_\" invalid)"
        ));
    }
    wildcard_domain(domain)
}

/// A `*` anywhere but as the whole first label (`*x`, `a.*.com`): Istio accepts some of these
/// in ServiceEntries but they never match as users expect.
pub fn is_partial_wildcard(host: &str) -> bool {
    host.contains('*') && host != "*" && !host.starts_with("*.")
}

pub fn is_ip(s: &str) -> bool {
    s.parse::<IpAddr>().is_ok()
}

/// An IP address or a CIDR block (`10.0.0.0/8`, `2001:db8::/32`).
pub fn ip_or_cidr(s: &str) -> Result<(), String> {
    if s.matches('/').count() == 1 {
        return s
            .parse::<ipnet::IpNet>()
            .map(|_| ())
            .map_err(|_| format!("{s} is not a valid CIDR block"));
    }
    if is_ip(s) {
        Ok(())
    } else {
        Err(format!("{s} is not a valid IP"))
    }
}

pub const UNIX_PREFIX: &str = "unix://";

/// What is wrong with the path of a `unix://` address, in the CRDs' words.
pub fn unix_socket_problem(address: &str) -> Option<&'static str> {
    let path = address.strip_prefix(UNIX_PREFIX)?;
    if !(path.starts_with('/') || path.starts_with('@')) {
        return Some("UDS must be an absolute path or abstract socket");
    }
    if path.ends_with('/') {
        return Some("UDS may not be a dir");
    }
    None
}

fn wildcard_suffix(host: &str) -> Option<&str> {
    host.strip_prefix('*')
}

/// Istio's `host.Name.Matches`: the two names have a host in common.
pub fn hosts_overlap(a: &str, b: &str) -> bool {
    match (wildcard_suffix(a), wildcard_suffix(b)) {
        (Some(sa), Some(sb)) => sa.ends_with(sb) || sb.ends_with(sa),
        (Some(sa), None) => b.ends_with(sa),
        (None, Some(sb)) => a.ends_with(sb),
        (None, None) => a == b,
    }
}

/// Istio's `host.Name.SubsetOf`: every host `a` names is also named by `b`.
pub fn host_subset_of(a: &str, b: &str) -> bool {
    match (wildcard_suffix(a), wildcard_suffix(b)) {
        (Some(sa), Some(sb)) => sa.ends_with(sb),
        (Some(_), None) => false,
        (None, Some(sb)) => a.ends_with(sb),
        (None, None) => a == b,
    }
}

/// Gateway `servers[].hosts` and Sidecar `egress[].hosts`: `namespace/dnsName`, where the
/// namespace may be `*` or `.` (and `~` in sidecars), and the name must be fully qualified or
/// `*`. Gateways also take a bare `dnsName` (any namespace) or an IP.
pub fn namespace_slash_host(r: &mut Report, path: &Path, entry: &str, gateway: bool) {
    let Some((namespace, host)) = entry.split_once('/') else {
        if gateway {
            host_part(r, path, entry, gateway);
        } else {
            r.error(
                path,
                invalid(entry, "host must be of form namespace/dnsName"),
            )
            .with_hint("write \"*/host\" for any namespace or \"./host\" for this one");
        }
        return;
    };
    if namespace.is_empty() || host.is_empty() {
        r.error(
            path,
            invalid(
                entry,
                "config namespace and dnsName in host entry cannot be empty",
            ),
        );
        return;
    }
    let special = matches!(namespace, "*" | ".") || (!gateway && namespace == "~");
    if !special && !is_istio_label(namespace) {
        let kind = if gateway { "gateway" } else { "sidecar" };
        r.error(
            path,
            invalid(
                entry,
                format!("invalid namespace value {namespace:?} in {kind}"),
            ),
        );
    }
    host_part(r, path, host, gateway);
}

fn host_part(r: &mut Report, path: &Path, host: &str, gateway: bool) {
    if host != "*" && !host.contains('.') && !(gateway && is_ip(host)) {
        r.error(
            path,
            invalid(host, "short names (non FQDN) are not allowed"),
        )
        .with_hint("use the full name, e.g. \"reviews.default.svc.cluster.local\"");
        return;
    }
    if let Err(e) = wildcard_domain(host) {
        if !(gateway && is_ip(host)) {
            r.error(path, invalid(host, e));
            return;
        }
    }
    if is_partial_wildcard(host) {
        r.error(
            path,
            invalid(host, format!("partial wildcard {host:?} not allowed")),
        )
        .with_hint("a wildcard must be the whole first label, as in \"*.example.com\"");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert!(is_dns1123_label("http-web"));
        assert!(!is_dns1123_label("Http"));
        assert!(is_istio_label("V1"));
        assert!(!is_istio_label("-v1") && !is_istio_label("v1-") && !is_istio_label(""));
        assert!(!is_istio_label(&"a".repeat(64)));
        assert!(is_wildcard_label("*") && is_wildcard_label("*x") && is_wildcard_label("*-x"));
        assert!(!is_wildcard_label("x*") && !is_wildcard_label("**"));
    }

    #[test]
    fn domains() {
        for ok in [
            "reviews",
            "reviews.default.svc.cluster.local",
            "*.example.com",
            "*",
            "istio.io.",
            "*x",
        ] {
            assert!(wildcard_domain(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "a..b",
            "10.0.0.1",
            "foo.*.com",
            "a_b.com",
            "-a.com",
            "example.123",
        ] {
            assert!(wildcard_domain(bad).is_err(), "{bad}");
        }
        assert!(fqdn("example.com").is_ok());
        assert!(fqdn("*.example.com").is_err());
        assert!(wildcard_domain(&format!("{}.com", "a.".repeat(130)))
            .unwrap_err()
            .contains("too long"));
    }

    #[test]
    fn sni_outbound_names_are_allowed_on_gateways() {
        assert!(
            gateway_bound_domain("outbound_.80_._.reviews.default.svc.cluster.local", true).is_ok()
        );
        assert!(gateway_bound_domain("outbound_.9_._.x", false).is_err());
        assert!(gateway_bound_domain("outbound_.x", true).is_err());
    }

    #[test]
    fn addresses() {
        assert!(ip_or_cidr("1.2.3.4").is_ok());
        assert!(ip_or_cidr("001:db8::").is_ok());
        assert!(ip_or_cidr("10.0.0.0/8").is_ok());
        assert!(ip_or_cidr("1.2.3.4/99").unwrap_err().contains("CIDR"));
        assert!(ip_or_cidr("example.com")
            .unwrap_err()
            .contains("not a valid IP"));
        assert_eq!(unix_socket_problem("unix://@abstract"), None);
        assert_eq!(unix_socket_problem("unix:///var/run/sock"), None);
        assert!(unix_socket_problem("unix://rel")
            .unwrap()
            .contains("absolute"));
        assert!(unix_socket_problem("unix:///dir/").unwrap().contains("dir"));
        assert_eq!(unix_socket_problem("1.2.3.4"), None);
    }

    #[test]
    fn wildcard_host_relations() {
        assert!(hosts_overlap("*.foo.com", "*.com"));
        assert!(hosts_overlap("a.foo.com", "*.foo.com"));
        assert!(!hosts_overlap("foo.com", "*.foo.com"));
        assert!(hosts_overlap("*", "anything"));
        assert!(host_subset_of("a.foo.com", "*.foo.com"));
        assert!(host_subset_of("*.a.foo.com", "*.foo.com"));
        assert!(!host_subset_of("*.foo.com", "a.foo.com"));
        assert!(!host_subset_of("b.com", "a.com"));
    }

    #[test]
    fn namespaced_hosts() {
        let run = |entry: &str, gateway: bool| {
            let mut r = Report::default();
            namespace_slash_host(&mut r, &Path::spec(), entry, gateway);
            r.into_issues()
        };
        for ok in [
            "*/*",
            "./reviews.default.svc.cluster.local",
            "istio-system/*.example.com",
            "~/*",
        ] {
            assert!(run(ok, false).is_empty(), "{ok}");
        }
        assert!(run("*", true).is_empty());
        assert!(run("uk.bookinfo.com", true).is_empty());
        assert!(run("10.1.2.3", true).is_empty());
        assert!(run("reviews.default.svc.cluster.local", false)[0]
            .message
            .contains("namespace/dnsName"));
        assert!(run("~/*", true)[0].message.contains("invalid namespace"));
        assert!(run("*/reviews", false)[0].message.contains("short names"));
        assert!(run("*/*x.com", false)[0]
            .message
            .contains("partial wildcard"));
        assert!(run("/a.com", true)[0].message.contains("cannot be empty"));
    }
}
