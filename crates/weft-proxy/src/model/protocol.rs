//! Istio's protocol selection: `appProtocol`, then the port name's prefix
//! (`http-web`, `grpc`), else unknown and sniffed.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Protocol {
    Http,
    Http2,
    Grpc,
    Tcp,
    Tls,
    /// Nothing declared: sniff the first bytes.
    Unknown,
}

impl Protocol {
    pub fn from_name(name: &str) -> Protocol {
        let prefix = name.split('-').next().unwrap_or("").to_ascii_lowercase();
        match prefix.as_str() {
            "http" => Protocol::Http,
            "http2" | "h2c" => Protocol::Http2,
            "grpc" | "grpc-web" => Protocol::Grpc,
            "tcp" | "mongo" | "mysql" | "redis" => Protocol::Tcp,
            "https" | "tls" => Protocol::Tls,
            _ => Protocol::Unknown,
        }
    }

    /// Kubernetes: `appProtocol` wins over the port name.
    pub fn for_port(name: Option<&str>, app_protocol: Option<&str>) -> Protocol {
        app_protocol
            .map(|p| match p.to_ascii_lowercase().as_str() {
                "kubernetes.io/h2c" => Protocol::Http2,
                "kubernetes.io/ws" | "kubernetes.io/wss" => Protocol::Http,
                other => Protocol::from_name(other),
            })
            .filter(|p| *p != Protocol::Unknown)
            .unwrap_or_else(|| name.map(Protocol::from_name).unwrap_or(Protocol::Unknown))
    }

    pub fn is_http(self) -> bool {
        matches!(self, Protocol::Http | Protocol::Http2 | Protocol::Grpc)
    }

    /// Upstream connections for this port speak HTTP/2 with prior knowledge.
    pub fn is_h2(self) -> bool {
        matches!(self, Protocol::Http2 | Protocol::Grpc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_istio_port_naming() {
        assert_eq!(Protocol::for_port(Some("http"), None), Protocol::Http);
        assert_eq!(Protocol::for_port(Some("http-web"), None), Protocol::Http);
        assert_eq!(Protocol::for_port(Some("grpc"), None), Protocol::Grpc);
        assert_eq!(
            Protocol::for_port(Some("web"), Some("http2")),
            Protocol::Http2
        );
        assert_eq!(Protocol::for_port(Some("tcp-db"), None), Protocol::Tcp);
        assert_eq!(Protocol::for_port(Some("web"), None), Protocol::Unknown);
        assert_eq!(
            Protocol::for_port(None, Some("kubernetes.io/h2c")),
            Protocol::Http2
        );
    }
}
