//! Host names as Istio reads them: short names expand against a namespace, `*` wildcards
//! match by suffix.

/// The cluster domain suffix Kubernetes and Istio use by default.
pub const DOMAIN_SUFFIX: &str = "svc.cluster.local";

/// Expands a short name (`reviews`) to `reviews.<namespace>.svc.cluster.local`. Names with a
/// dot, wildcards and IP addresses are returned as written, lower-cased, as Istio does.
pub fn fqdn(host: &str, namespace: &str) -> String {
    let host = host.trim().to_ascii_lowercase();
    if host.contains('.') || host.contains('*') || host.contains(':') {
        host
    } else {
        format!("{host}.{namespace}.{DOMAIN_SUFFIX}")
    }
}

/// `*.example.com` matches `a.example.com` (and `a.b.example.com`); `*` matches everything.
pub fn wildcard_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix('*') {
        Some(suffix) => host.len() > suffix.len() && host.ends_with(suffix) || suffix.is_empty(),
        None => pattern.eq_ignore_ascii_case(host),
    }
}

/// The names a caller may use for a service: `reviews`, `reviews.default`,
/// `reviews.default.svc`, `reviews.default.svc.cluster.local`. Only cluster-local names have
/// short forms, and short forms only reach services in the caller's namespace (`reviews`) or
/// name the namespace (`reviews.default`), as Kubernetes DNS search paths allow.
pub fn aliases(fqdn: &str, caller_namespace: &str) -> Vec<String> {
    let mut names = vec![fqdn.to_string()];
    if let Some(prefix) = fqdn.strip_suffix(&format!(".{DOMAIN_SUFFIX}")) {
        if let Some((name, ns)) = prefix.rsplit_once('.') {
            names.push(format!("{name}.{ns}.svc"));
            names.push(prefix.to_string());
            if ns == caller_namespace {
                names.push(name.to_string());
            }
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_expand_against_the_namespace() {
        assert_eq!(
            fqdn("reviews", "default"),
            "reviews.default.svc.cluster.local"
        );
        assert_eq!(fqdn("Reviews", "prod"), "reviews.prod.svc.cluster.local");
        assert_eq!(
            fqdn("reviews.prod.svc.cluster.local", "default"),
            "reviews.prod.svc.cluster.local"
        );
        assert_eq!(fqdn("httpbin.org", "default"), "httpbin.org");
        assert_eq!(fqdn("*.example.com", "default"), "*.example.com");
    }

    #[test]
    fn wildcards_match_by_suffix() {
        assert!(wildcard_matches("*.example.com", "a.example.com"));
        assert!(!wildcard_matches("*.example.com", "example.com"));
        assert!(wildcard_matches("*", "anything"));
        assert!(wildcard_matches("Example.com", "example.com"));
    }

    #[test]
    fn aliases_follow_dns_search_paths() {
        let a = aliases("reviews.default.svc.cluster.local", "default");
        assert!(a.contains(&"reviews".to_string()) && a.contains(&"reviews.default".to_string()));
        let b = aliases("reviews.default.svc.cluster.local", "other");
        assert!(!b.contains(&"reviews".to_string()));
    }
}
