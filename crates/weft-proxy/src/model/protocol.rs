//! Istio's protocol selection: `appProtocol`, then the port name's prefix
//! (`http-web`, `grpc`), then TCP on the well-known server-first ports, else unknown and
//! sniffed.

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

    /// A Kubernetes Service port: `appProtocol` wins over the port name; neither saying
    /// anything leaves the port number.
    pub fn for_port(number: u16, name: Option<&str>, app_protocol: Option<&str>) -> Protocol {
        let declared = app_protocol
            .map(|p| match p.to_ascii_lowercase().as_str() {
                "kubernetes.io/h2c" => Protocol::Http2,
                "kubernetes.io/ws" | "kubernetes.io/wss" => Protocol::Http,
                other => Protocol::from_name(other),
            })
            .filter(|p| *p != Protocol::Unknown)
            .unwrap_or_else(|| name.map(Protocol::from_name).unwrap_or(Protocol::Unknown));
        match declared {
            Protocol::Unknown => Protocol::undeclared(number),
            p => p,
        }
    }

    /// A port nothing declares: TCP where the server speaks first, since sniffing would wait
    /// for a client that waits for the server. Istio's `wellKnownPorts` (pkg/config/kube):
    /// SMTP 25, DNS 53, MySQL 3306, MongoDB 27017.
    pub fn undeclared(number: u16) -> Protocol {
        match number {
            25 | 53 | 3306 | 27017 => Protocol::Tcp,
            _ => Protocol::Unknown,
        }
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
        let port = |name, app| Protocol::for_port(8080, name, app);
        assert_eq!(port(Some("http"), None), Protocol::Http);
        assert_eq!(port(Some("http-web"), None), Protocol::Http);
        assert_eq!(port(Some("grpc"), None), Protocol::Grpc);
        assert_eq!(port(Some("web"), Some("http2")), Protocol::Http2);
        assert_eq!(port(Some("tcp-db"), None), Protocol::Tcp);
        assert_eq!(port(Some("web"), None), Protocol::Unknown);
        assert_eq!(port(None, Some("kubernetes.io/h2c")), Protocol::Http2);
    }

    #[test]
    fn server_first_ports_are_tcp_unless_declared() {
        assert_eq!(Protocol::for_port(3306, Some("db"), None), Protocol::Tcp);
        assert_eq!(Protocol::for_port(27017, None, None), Protocol::Tcp);
        assert_eq!(Protocol::for_port(25, Some("http"), None), Protocol::Http);
        assert_eq!(Protocol::undeclared(9080), Protocol::Unknown);
    }
}
