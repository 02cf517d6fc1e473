//! Envoy's response flags and one access-log line per request in Istio's default format,
//! TEXT or JSON (MeshConfig `accessLogEncoding`).

use super::policy::LogChoice;
use std::fmt::{self, Write as _};
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;
use weft_api::types::timestamp::{rfc3339, Fraction};

/// Envoy's response flags, rendered in Envoy's order, comma-separated, `-` when none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Flags(u16);

impl Flags {
    pub const UH: Flags = Flags(1);
    pub const UF: Flags = Flags(1 << 1);
    pub const UO: Flags = Flags(1 << 2);
    pub const NR: Flags = Flags(1 << 3);
    pub const URX: Flags = Flags(1 << 4);
    pub const UT: Flags = Flags(1 << 5);
    pub const DC: Flags = Flags(1 << 6);
    pub const FI: Flags = Flags(1 << 7);
    pub const DI: Flags = Flags(1 << 8);
    pub const UC: Flags = Flags(1 << 9);
    pub const NC: Flags = Flags(1 << 10);

    const NAMES: [(Flags, &'static str); 11] = [
        (Flags::UH, "UH"),
        (Flags::UF, "UF"),
        (Flags::UO, "UO"),
        (Flags::NR, "NR"),
        (Flags::URX, "URX"),
        (Flags::UT, "UT"),
        (Flags::DC, "DC"),
        (Flags::FI, "FI"),
        (Flags::DI, "DI"),
        (Flags::UC, "UC"),
        (Flags::NC, "NC"),
    ];

    pub fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0 && other.0 != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The flags as Envoy's `response.flags` attribute numbers them (its `ResponseFlag`
    /// bits), for CEL expressions written against Envoy.
    pub fn envoy_bits(self) -> u64 {
        const ENVOY: [(Flags, u64); 11] = [
            (Flags::UH, 0x2),
            (Flags::UT, 0x4),
            (Flags::UF, 0x20),
            (Flags::UC, 0x40),
            (Flags::UO, 0x80),
            (Flags::NR, 0x100),
            (Flags::DI, 0x200),
            (Flags::FI, 0x400),
            (Flags::DC, 0x4000),
            (Flags::URX, 0x8000),
            (Flags::NC, 0x100_0000),
        ];
        ENVOY
            .iter()
            .filter(|(f, _)| self.contains(*f))
            .fold(0, |bits, (_, bit)| bits | bit)
    }
}

impl std::ops::BitOr for Flags {
    type Output = Flags;
    fn bitor(self, o: Flags) -> Flags {
        Flags(self.0 | o.0)
    }
}

impl std::ops::BitOrAssign for Flags {
    fn bitor_assign(&mut self, o: Flags) {
        self.0 |= o.0;
    }
}

impl fmt::Display for Flags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0 {
            return f.write_str("-");
        }
        let mut first = true;
        for (flag, name) in Flags::NAMES {
            if self.contains(flag) {
                if !first {
                    f.write_char(',')?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        Ok(())
    }
}

/// Everything one line reports.
#[derive(Debug, Clone, Default)]
pub struct Entry {
    pub start: Option<SystemTime>,
    pub method: String,
    pub path: String,
    pub protocol: &'static str,
    pub status: u16,
    pub flags: Flags,
    pub details: &'static str,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub duration_ms: u64,
    pub upstream_service_time_ms: Option<u64>,
    pub forwarded_for: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
    pub authority: Option<String>,
    pub upstream_host: Option<String>,
    pub upstream_cluster: Option<String>,
    pub downstream_local: Option<SocketAddr>,
    pub downstream_remote: Option<SocketAddr>,
    pub route_name: Option<String>,
    /// The request's headers, kept only when a Telemetry expression reads `request`.
    pub request_headers: Option<Arc<http::HeaderMap>>,
}

impl fmt::Display for Entry {
    /// Istio's default TEXT format (`meshConfig.accessLogFormat` unset).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn opt<T: fmt::Display>(v: &Option<T>) -> String {
            v.as_ref()
                .map_or_else(|| "-".to_string(), |v| v.to_string())
        }
        let start = self
            .start
            .map(|t| rfc3339(t, Fraction::Millis))
            .unwrap_or_else(|| "-".into());
        write!(
            f,
            "[{start}] \"{} {} {}\" {} {} {} - \"-\" {} {} {} {} \"{}\" \"{}\" \"{}\" \"{}\" \"{}\" {} - {} {} - {}",
            self.method,
            self.path,
            self.protocol,
            self.status,
            self.flags,
            if self.details.is_empty() { "-" } else { self.details },
            self.bytes_received,
            self.bytes_sent,
            self.duration_ms,
            opt(&self.upstream_service_time_ms),
            opt(&self.forwarded_for),
            opt(&self.user_agent),
            opt(&self.request_id),
            opt(&self.authority),
            opt(&self.upstream_host),
            opt(&self.upstream_cluster),
            opt(&self.downstream_local),
            opt(&self.downstream_remote),
            opt(&self.route_name),
        )
    }
}

impl Entry {
    /// Istio's default JSON format (`accessLogEncoding: JSON`): the TEXT format's fields
    /// under Istio's names, numbers as numbers, a missing value as null.
    pub fn to_json(&self) -> serde_json::Value {
        fn opt<T: fmt::Display>(v: &Option<T>) -> serde_json::Value {
            v.as_ref()
                .map_or(serde_json::Value::Null, |v| v.to_string().into())
        }
        serde_json::json!({
            "start_time": self.start.map(|t| rfc3339(t, Fraction::Millis)),
            "route_name": opt(&self.route_name),
            "method": self.method,
            "path": self.path,
            "protocol": self.protocol,
            "response_code": self.status,
            "response_flags": self.flags.to_string(),
            "response_code_details": (!self.details.is_empty()).then_some(self.details),
            "connection_termination_details": null,
            "upstream_transport_failure_reason": null,
            "bytes_received": self.bytes_received,
            "bytes_sent": self.bytes_sent,
            "duration": self.duration_ms,
            "upstream_service_time": self.upstream_service_time_ms.map(|t| t.to_string()),
            "x_forwarded_for": self.forwarded_for,
            "user_agent": self.user_agent,
            "request_id": self.request_id,
            "authority": self.authority,
            "upstream_host": self.upstream_host,
            "upstream_cluster": self.upstream_cluster,
            "upstream_local_address": null,
            "downstream_local_address": opt(&self.downstream_local),
            "downstream_remote_address": opt(&self.downstream_remote),
            "requested_server_name": null,
        })
    }
}

/// Istio's `accessLogEncoding`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Encoding {
    #[default]
    Text,
    Json,
}

/// Where access-log lines go.
#[derive(Clone, Default)]
pub enum AccessLog {
    #[default]
    Off,
    Stdout(Encoding),
    /// Tests read entries from a channel instead of parsing stdout.
    Channel(tokio::sync::mpsc::UnboundedSender<Entry>),
    Custom(Arc<dyn Fn(Entry) + Send + Sync>),
}

impl AccessLog {
    /// Writes `entry` as `choice` (MeshConfig, Telemetry) says, or as the proxy was started
    /// when config says nothing. A test's channel gets every entry config does not turn off.
    pub fn emit_as(&self, choice: Option<LogChoice>, entry: Entry) {
        match (choice, self) {
            (Some(LogChoice::Off), _) => {}
            (Some(LogChoice::Stdout(encoding)), AccessLog::Off | AccessLog::Stdout(_)) => {
                AccessLog::Stdout(encoding).emit(entry)
            }
            _ => self.emit(entry),
        }
    }

    pub fn emit(&self, entry: Entry) {
        match self {
            AccessLog::Off => {}
            AccessLog::Stdout(encoding) => {
                let line = match encoding {
                    Encoding::Text => format!("{entry}\n"),
                    Encoding::Json => format!("{}\n", entry.to_json()),
                };
                let _ = std::io::stdout().lock().write_all(line.as_bytes());
            }
            AccessLog::Channel(tx) => {
                let _ = tx.send(entry);
            }
            AccessLog::Custom(f) => f(entry),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_render_as_envoy_does() {
        assert_eq!(Flags::default().to_string(), "-");
        assert_eq!((Flags::UF | Flags::URX).to_string(), "UF,URX");
        assert_eq!(Flags::UO.to_string(), "UO");
    }

    /// A request to reviews v2 that failed to connect and ran out of retries.
    fn failed_to_reviews_v2() -> Entry {
        Entry {
            method: "GET".into(),
            path: "/reviews/0".into(),
            protocol: "HTTP/1.1",
            status: 503,
            flags: Flags::UF | Flags::URX,
            details: "upstream_reset_before_response_started{connection_failure}",
            upstream_cluster: Some("outbound|9080|v2|reviews.default.svc.cluster.local".into()),
            ..Default::default()
        }
    }

    #[test]
    fn line_follows_istio_default_format() {
        let line = failed_to_reviews_v2().to_string();
        assert!(line.starts_with("[-] \"GET /reviews/0 HTTP/1.1\" 503 UF,URX upstream_reset_before_response_started{connection_failure} - \"-\" 0 0 0 -"), "{line}");
        assert!(line.contains("outbound|9080|v2|reviews.default.svc.cluster.local"));
    }

    #[test]
    fn json_has_istios_field_names_numbers_and_nulls() {
        let e = Entry {
            bytes_sent: 91,
            downstream_remote: Some("10.44.0.2:5000".parse().unwrap()),
            ..failed_to_reviews_v2()
        };
        let j = e.to_json();
        assert_eq!(j["response_code"], 503);
        assert_eq!(j["response_flags"], "UF,URX");
        assert_eq!(j["bytes_sent"], 91);
        assert_eq!(j["downstream_remote_address"], "10.44.0.2:5000");
        assert_eq!(
            j["upstream_cluster"],
            "outbound|9080|v2|reviews.default.svc.cluster.local"
        );
        assert!(j["user_agent"].is_null() && j["start_time"].is_null());
    }
}
