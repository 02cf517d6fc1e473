//! Envoy's response flags and one access-log line per request, in Istio's default format
//! (TEXT or JSON) or the format config gives (`accessLogFormat`, a provider's `logFormat`).

use super::policy::LogChoice;
use std::borrow::Cow;
use std::fmt::{self, Write as _};
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};
use std::time::SystemTime;
use weft_api::log_format::{Header, JsonFormat, JsonValue, LineFormat, LogFormat, Operator, Piece};
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
    /// Denied by the external authorizer (CUSTOM AuthorizationPolicy).
    pub const UAEX: Flags = Flags(1 << 11);

    const NAMES: [(Flags, &'static str); 12] = [
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
        (Flags::UAEX, "UAEX"),
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
        const ENVOY: [(Flags, u64); 12] = [
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
            (Flags::UAEX, 0x1000),
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
    pub details: std::borrow::Cow<'static, str>,
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
    /// The downstream connection is Istio's mTLS.
    pub downstream_mtls: bool,
    /// The caller's SPIFFE ID from its certificate (Envoy's `DOWNSTREAM_PEER_URI_SAN`).
    pub downstream_peer_principal: Option<Arc<str>>,
    /// The answering server's SPIFFE ID over mTLS (`UPSTREAM_PEER_URI_SAN`).
    pub upstream_peer_principal: Option<Arc<str>>,
    /// The downstream TLS's SNI.
    pub requested_server_name: Option<Arc<str>>,
    /// Why the TLS handshake with the upstream failed.
    pub upstream_transport_failure_reason: Option<String>,
    pub route_name: Option<String>,
    /// Whether an AUDIT AuthorizationPolicy matched (Envoy's `envoy.common:access_log_hint`);
    /// `None` where no AUDIT policy applies.
    pub access_log_hint: Option<bool>,
    /// The request's headers, kept only when a Telemetry expression or a log format reads
    /// them.
    pub request_headers: Option<Arc<http::HeaderMap>>,
    /// The response's headers, kept only when a log format reads them.
    pub response_headers: Option<Arc<http::HeaderMap>>,
}

/// A value an operator reads from an entry.
enum Value<'a> {
    Missing,
    Text(Cow<'a, str>),
    Number(u64),
    Bool(bool),
}

/// Request headers the entry holds in its own fields, read without the header map.
fn native_request_header(name: &str) -> bool {
    Entry::default().own_request_header(name).is_some()
}

fn native_response_header(name: &str) -> bool {
    Entry::default().own_response_header(name).is_some()
}

/// Whether rendering `format` reads request (`.0`) or response (`.1`) headers beyond the
/// entry's own fields, so that requests keep their header maps.
pub fn reads_headers(format: &LogFormat) -> (bool, bool) {
    let beyond = |h: &Header, native: fn(&str) -> bool| {
        !native(&h.name) || h.fallback.as_deref().is_some_and(|f| !native(f))
    };
    format
        .operators()
        .fold((false, false), |(req, resp), op| match op {
            Operator::Request(h) => (req || beyond(h, native_request_header), resp),
            Operator::Response(h) => (req, resp || beyond(h, native_response_header)),
            _ => (req, resp),
        })
}

fn header<'a>(map: Option<&'a http::HeaderMap>, name: &str) -> Option<Cow<'a, str>> {
    map?.get(name)?.to_str().ok().map(Cow::Borrowed)
}

fn text(v: &Option<String>) -> Option<Cow<'_, str>> {
    v.as_deref().map(Cow::Borrowed)
}

fn non_empty(v: &str) -> Option<Cow<'_, str>> {
    (!v.is_empty()).then_some(Cow::Borrowed(v))
}

impl Entry {
    /// A request header the entry holds in a field of its own (the outer `None`: not one
    /// of those).
    fn own_request_header(&self, name: &str) -> Option<Option<Cow<'_, str>>> {
        Some(match name {
            ":method" => non_empty(&self.method),
            ":path" => non_empty(&self.path),
            ":authority" | "host" => text(&self.authority),
            "user-agent" => text(&self.user_agent),
            "x-request-id" => text(&self.request_id),
            "x-forwarded-for" => text(&self.forwarded_for),
            // Weft does not rewrite the path before it logs, so there is no original.
            "x-envoy-original-path" => None,
            _ => return None,
        })
    }

    fn own_response_header(&self, name: &str) -> Option<Option<Cow<'_, str>>> {
        Some(match name {
            "x-envoy-upstream-service-time" => {
                self.upstream_service_time_ms.map(|t| t.to_string().into())
            }
            _ => return None,
        })
    }

    fn request_header(&self, name: &str) -> Option<Cow<'_, str>> {
        self.own_request_header(name)
            .unwrap_or_else(|| header(self.request_headers.as_deref(), name))
    }

    fn response_header(&self, name: &str) -> Option<Cow<'_, str>> {
        self.own_response_header(name)
            .unwrap_or_else(|| header(self.response_headers.as_deref(), name))
    }

    fn value(&self, op: &Operator) -> Value<'_> {
        fn or_missing(v: Option<Cow<'_, str>>) -> Value<'_> {
            v.map_or(Value::Missing, Value::Text)
        }
        let address = |a: Option<SocketAddr>| or_missing(a.map(|a| a.to_string().into()));
        let ip = |a: Option<SocketAddr>| or_missing(a.map(|a| a.ip().to_string().into()));
        let port =
            |a: Option<SocketAddr>| a.map_or(Value::Missing, |a| Value::Number(a.port().into()));
        match op {
            Operator::StartTime => {
                or_missing(self.start.map(|t| rfc3339(t, Fraction::Millis).into()))
            }
            Operator::Request(h) => or_missing(
                self.request_header(&h.name)
                    .or_else(|| self.request_header(h.fallback.as_deref()?)),
            ),
            Operator::Response(h) => or_missing(
                self.response_header(&h.name)
                    .or_else(|| self.response_header(h.fallback.as_deref()?)),
            ),
            Operator::Protocol => or_missing(non_empty(self.protocol)),
            Operator::ResponseCode => Value::Number(self.status.into()),
            Operator::ResponseFlags => Value::Text(self.flags.to_string().into()),
            Operator::ResponseCodeDetails => or_missing(non_empty(&self.details)),
            Operator::BytesReceived => Value::Number(self.bytes_received),
            Operator::BytesSent => Value::Number(self.bytes_sent),
            Operator::Duration => Value::Number(self.duration_ms),
            Operator::UpstreamHost => or_missing(text(&self.upstream_host)),
            Operator::UpstreamCluster => or_missing(text(&self.upstream_cluster)),
            Operator::DownstreamLocalAddress => address(self.downstream_local),
            Operator::DownstreamLocalAddressWithoutPort => ip(self.downstream_local),
            Operator::DownstreamLocalPort => port(self.downstream_local),
            Operator::DownstreamRemoteAddress => address(self.downstream_remote),
            Operator::DownstreamRemoteAddressWithoutPort => ip(self.downstream_remote),
            Operator::DownstreamRemotePort => port(self.downstream_remote),
            Operator::RouteName => or_missing(text(&self.route_name)),
            Operator::UpstreamTransportFailureReason => {
                or_missing(text(&self.upstream_transport_failure_reason))
            }
            Operator::DownstreamPeerUriSan => {
                or_missing(self.downstream_peer_principal.as_deref().map(Cow::Borrowed))
            }
            Operator::UpstreamPeerUriSan => {
                or_missing(self.upstream_peer_principal.as_deref().map(Cow::Borrowed))
            }
            Operator::RequestedServerName => {
                or_missing(self.requested_server_name.as_deref().map(Cow::Borrowed))
            }
            Operator::DynamicMetadata { namespace, key }
                if namespace == "envoy.common" && key == "access_log_hint" =>
            {
                self.access_log_hint.map_or(Value::Missing, Value::Bool)
            }
            Operator::DynamicMetadata { .. } => Value::Missing,
            // Not known to the proxy yet (no termination reasons, the upstream's ephemeral
            // port not kept): `-`, as Envoy writes an unset value.
            Operator::ConnectionTerminationDetails
            | Operator::UpstreamLocalAddress
            // Resolved to text when the format was built.
            | Operator::Hostname
            | Operator::Environment(_) => Value::Missing,
        }
    }

    /// Appends `format` as text: a missing value is `-`, as Envoy writes it.
    pub fn write_text(&self, format: &LogFormat, out: &mut String) {
        for piece in &format.pieces {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Field { op, max_len } => {
                    let from = out.len();
                    match self.value(op) {
                        Value::Missing => out.push('-'),
                        Value::Text(t) => out.push_str(&t),
                        Value::Number(n) => {
                            let _ = write!(out, "{n}");
                        }
                        Value::Bool(b) => {
                            let _ = write!(out, "{b}");
                        }
                    }
                    if let Some((at, _)) = max_len.and_then(|n| out[from..].char_indices().nth(n)) {
                        out.truncate(from + at);
                    }
                }
            }
        }
    }

    pub fn text(&self, format: &LogFormat) -> String {
        let mut out = String::with_capacity(256);
        self.write_text(format, &mut out);
        out
    }

    /// The entry as a JSON object: a field that is one operator keeps its type (numbers as
    /// numbers, a missing value as null), as Envoy's JSON format does.
    pub fn json(&self, format: &JsonFormat) -> serde_json::Value {
        let mut object = serde_json::Map::with_capacity(format.fields.len());
        for (key, value) in &format.fields {
            let v = match value {
                JsonValue::Literal(l) => l.clone(),
                JsonValue::Format(f) => match f.pieces.as_slice() {
                    [Piece::Field { op, max_len: None }] => match self.value(op) {
                        Value::Missing => serde_json::Value::Null,
                        Value::Text(t) => t.into_owned().into(),
                        Value::Number(n) => n.into(),
                        Value::Bool(b) => b.into(),
                    },
                    _ => self.text(f).into(),
                },
            };
            object.insert(key.clone(), v);
        }
        object.into()
    }

    /// One line in `format`, ending in a newline.
    pub fn line(&self, format: &LineFormat) -> String {
        match format {
            LineFormat::Text(f) => self.text(f),
            LineFormat::Json(j) => format!("{}\n", self.json(j)),
        }
    }
}

/// Istio's default formats, built once.
pub static ISTIO_TEXT: LazyLock<Arc<LineFormat>> =
    LazyLock::new(|| Arc::new(LineFormat::istio_text()));
pub static ISTIO_JSON: LazyLock<Arc<LineFormat>> =
    LazyLock::new(|| Arc::new(LineFormat::istio_json()));

/// Where access-log lines go.
#[derive(Clone, Default)]
pub enum AccessLog {
    #[default]
    Off,
    Stdout(Arc<LineFormat>),
    /// Tests read entries from a channel instead of parsing stdout.
    Channel(tokio::sync::mpsc::UnboundedSender<Entry>),
    Custom(Arc<dyn Fn(Entry) + Send + Sync>),
}

impl AccessLog {
    /// Writes `entry` as `choice` (MeshConfig, Telemetry) says, or as the proxy was started
    /// when config says nothing. A test's channel gets every entry config does not turn off.
    pub fn emit_as(&self, choice: Option<&LogChoice>, entry: Entry) {
        match (choice, self) {
            (Some(LogChoice::Off), _) => {}
            (Some(LogChoice::Stdout(format)), AccessLog::Off | AccessLog::Stdout(_)) => {
                to_stdout(format, &entry)
            }
            _ => self.emit(entry),
        }
    }

    pub fn emit(&self, entry: Entry) {
        match self {
            AccessLog::Off => {}
            AccessLog::Stdout(format) => to_stdout(format, &entry),
            AccessLog::Channel(tx) => {
                let _ = tx.send(entry);
            }
            AccessLog::Custom(f) => f(entry),
        }
    }
}

fn to_stdout(format: &LineFormat, entry: &Entry) {
    let line = entry.line(format);
    let _ = std::io::stdout().lock().write_all(line.as_bytes());
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
            details: "upstream_reset_before_response_started{connection_failure}".into(),
            upstream_cluster: Some("outbound|9080|v2|reviews.default.svc.cluster.local".into()),
            ..Default::default()
        }
    }

    #[test]
    fn line_follows_istio_default_format() {
        let line = failed_to_reviews_v2().line(&ISTIO_TEXT);
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
        let LineFormat::Json(format) = &**ISTIO_JSON else {
            unreachable!()
        };
        let j = e.json(format);
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

    #[test]
    fn the_audit_hint_is_envoys_dynamic_metadata() {
        let format = LogFormat::parse(
            "%DYNAMIC_METADATA(envoy.common:access_log_hint)% %DYNAMIC_METADATA(istio.mixer:x)%",
        )
        .unwrap();
        let text = |hint| {
            Entry {
                access_log_hint: hint,
                ..failed_to_reviews_v2()
            }
            .text(&format)
        };
        assert_eq!(text(Some(true)), "true -");
        assert_eq!(text(Some(false)), "false -");
        assert_eq!(text(None), "- -");
        let json =
            JsonFormat::parse(r#"{"audit": "%DYNAMIC_METADATA(envoy.common:access_log_hint)%"}"#)
                .unwrap();
        let e = Entry {
            access_log_hint: Some(true),
            ..Default::default()
        };
        assert_eq!(e.json(&json)["audit"], true);
        assert!(LogFormat::parse("%DYNAMIC_METADATA(envoy.common)%").is_err());
    }

    #[test]
    fn a_custom_format_reads_headers_cuts_lengths_and_types_json_fields() {
        let mut request = http::HeaderMap::new();
        request.insert("end-user", "jason".parse().unwrap());
        let mut response = http::HeaderMap::new();
        response.insert("content-type", "text/html".parse().unwrap());
        let e = Entry {
            user_agent: Some("curl/8.5.0".into()),
            upstream_service_time_ms: Some(4),
            downstream_local: Some("10.44.0.3:9080".parse().unwrap()),
            request_headers: Some(Arc::new(request)),
            response_headers: Some(Arc::new(response)),
            ..failed_to_reviews_v2()
        };
        let LineFormat::Text(text) = LineFormat::text(
            "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% user=%REQ(END-USER)% ua=%REQ(USER-AGENT):4% type=%RESP(CONTENT-TYPE)% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%ms missing=%REQ(X-NOPE)% %RESPONSE_CODE% %RESPONSE_FLAGS% port=%DOWNSTREAM_LOCAL_PORT% 100%%",
        )
        .unwrap() else {
            unreachable!()
        };
        assert_eq!(
            e.text(&text),
            "GET /reviews/0 user=jason ua=curl type=text/html 4ms missing=- 503 UF,URX port=9080 100%\n"
        );
        let (req, resp) = reads_headers(&text);
        assert!(req && resp);
        let json = JsonFormat::parse(
            r#"{"code": "%RESPONSE_CODE%", "who": "%REQ(END-USER)%", "nothing": "%REQ(X-NOPE)%", "line": "%REQ(:METHOD)% %REQ(X-NOPE)%", "mesh": "weft", "v": 2}"#,
        )
        .unwrap();
        let j = e.json(&json);
        assert_eq!(j["code"], 503);
        assert_eq!(j["who"], "jason");
        assert!(j["nothing"].is_null());
        assert_eq!(j["line"], "GET -");
        assert_eq!(
            (j["mesh"].as_str(), j["v"].as_u64()),
            (Some("weft"), Some(2))
        );
    }

    #[test]
    fn istios_default_format_reads_no_header_map() {
        let LineFormat::Text(text) = &**ISTIO_TEXT else {
            unreachable!()
        };
        assert_eq!(reads_headers(text), (false, false));
    }
}
