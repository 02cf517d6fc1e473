//! Envoy's access-log format strings (`%REQ(:PATH)%`, `%RESPONSE_CODE%`…), as MeshConfig's
//! `accessLogFormat`, envoyFileAccessLog providers' `logFormat` and Tracing's `formatter`
//! tags write them, parsed where config is read so that a bad one is refused with its field.

use crate::types::mesh_config::{AccessLogEncoding, FileAccessLogFormat, MeshConfig};
use std::fmt;

/// Istio's default TEXT format (`meshConfig.accessLogFormat` unset).
pub const ISTIO_TEXT: &str = "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% \"%UPSTREAM_TRANSPORT_FAILURE_REASON%\" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" \"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\" %UPSTREAM_CLUSTER% %UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% %REQUESTED_SERVER_NAME% %ROUTE_NAME%\n";

/// Istio's default JSON format (`accessLogEncoding: JSON`), field by field.
pub const ISTIO_JSON: &[(&str, &str)] = &[
    ("start_time", "%START_TIME%"),
    ("route_name", "%ROUTE_NAME%"),
    ("method", "%REQ(:METHOD)%"),
    ("path", "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%"),
    ("protocol", "%PROTOCOL%"),
    ("response_code", "%RESPONSE_CODE%"),
    ("response_flags", "%RESPONSE_FLAGS%"),
    ("response_code_details", "%RESPONSE_CODE_DETAILS%"),
    (
        "connection_termination_details",
        "%CONNECTION_TERMINATION_DETAILS%",
    ),
    (
        "upstream_transport_failure_reason",
        "%UPSTREAM_TRANSPORT_FAILURE_REASON%",
    ),
    ("bytes_received", "%BYTES_RECEIVED%"),
    ("bytes_sent", "%BYTES_SENT%"),
    ("duration", "%DURATION%"),
    (
        "upstream_service_time",
        "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%",
    ),
    ("x_forwarded_for", "%REQ(X-FORWARDED-FOR)%"),
    ("user_agent", "%REQ(USER-AGENT)%"),
    ("request_id", "%REQ(X-REQUEST-ID)%"),
    ("authority", "%REQ(:AUTHORITY)%"),
    ("upstream_host", "%UPSTREAM_HOST%"),
    ("upstream_cluster", "%UPSTREAM_CLUSTER%"),
    ("upstream_local_address", "%UPSTREAM_LOCAL_ADDRESS%"),
    ("downstream_local_address", "%DOWNSTREAM_LOCAL_ADDRESS%"),
    ("downstream_remote_address", "%DOWNSTREAM_REMOTE_ADDRESS%"),
    ("requested_server_name", "%REQUESTED_SERVER_NAME%"),
];

/// Longer formats are refused: they are config, rendered for every request.
pub const MAX_LEN: usize = 8192;

/// A format string, split into text and command operators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFormat {
    pub pieces: Vec<Piece>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Text(String),
    /// An operator, its value cut to `max_len` characters when given (`%REQ(X):10%`).
    Field {
        op: Operator,
        max_len: Option<usize>,
    },
}

/// The command operators Weft renders; the names are Envoy's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operator {
    StartTime,
    /// `REQ(NAME?FALLBACK)`: a request header, or the fallback when it is absent.
    Request(Header),
    Response(Header),
    Protocol,
    ResponseCode,
    ResponseFlags,
    ResponseCodeDetails,
    ConnectionTerminationDetails,
    UpstreamTransportFailureReason,
    BytesReceived,
    BytesSent,
    Duration,
    UpstreamHost,
    UpstreamCluster,
    UpstreamLocalAddress,
    DownstreamLocalAddress,
    DownstreamLocalAddressWithoutPort,
    DownstreamLocalPort,
    DownstreamRemoteAddress,
    DownstreamRemoteAddressWithoutPort,
    DownstreamRemotePort,
    RequestedServerName,
    /// The caller's SPIFFE ID from its mTLS certificate.
    DownstreamPeerUriSan,
    /// The answering server's SPIFFE ID over mTLS.
    UpstreamPeerUriSan,
    RouteName,
    Hostname,
    Environment(String),
    /// `DYNAMIC_METADATA(NAMESPACE:KEY)`: what a filter noted about the request. Weft notes
    /// one thing, as Envoy's RBAC filter for Istio's AUDIT policies does:
    /// `envoy.common:access_log_hint`.
    DynamicMetadata {
        namespace: String,
        key: String,
    },
}

/// Lower-cased header names, pseudo-headers (`:path`) included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub name: String,
    pub fallback: Option<String>,
}

/// Operators without an argument, by Envoy's name.
const PLAIN: &[(&str, Operator)] = &[
    ("START_TIME", Operator::StartTime),
    ("PROTOCOL", Operator::Protocol),
    ("RESPONSE_CODE", Operator::ResponseCode),
    ("RESPONSE_FLAGS", Operator::ResponseFlags),
    ("RESPONSE_CODE_DETAILS", Operator::ResponseCodeDetails),
    (
        "CONNECTION_TERMINATION_DETAILS",
        Operator::ConnectionTerminationDetails,
    ),
    (
        "UPSTREAM_TRANSPORT_FAILURE_REASON",
        Operator::UpstreamTransportFailureReason,
    ),
    ("BYTES_RECEIVED", Operator::BytesReceived),
    ("BYTES_SENT", Operator::BytesSent),
    ("DURATION", Operator::Duration),
    ("UPSTREAM_HOST", Operator::UpstreamHost),
    ("UPSTREAM_CLUSTER", Operator::UpstreamCluster),
    ("UPSTREAM_LOCAL_ADDRESS", Operator::UpstreamLocalAddress),
    ("DOWNSTREAM_LOCAL_ADDRESS", Operator::DownstreamLocalAddress),
    (
        "DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT",
        Operator::DownstreamLocalAddressWithoutPort,
    ),
    ("DOWNSTREAM_LOCAL_PORT", Operator::DownstreamLocalPort),
    (
        "DOWNSTREAM_REMOTE_ADDRESS",
        Operator::DownstreamRemoteAddress,
    ),
    (
        "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT",
        Operator::DownstreamRemoteAddressWithoutPort,
    ),
    ("DOWNSTREAM_REMOTE_PORT", Operator::DownstreamRemotePort),
    // Without a proxy protocol in front, the direct peer is the remote address.
    (
        "DOWNSTREAM_DIRECT_REMOTE_ADDRESS",
        Operator::DownstreamRemoteAddress,
    ),
    (
        "DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT",
        Operator::DownstreamRemoteAddressWithoutPort,
    ),
    ("REQUESTED_SERVER_NAME", Operator::RequestedServerName),
    ("DOWNSTREAM_PEER_URI_SAN", Operator::DownstreamPeerUriSan),
    ("UPSTREAM_PEER_URI_SAN", Operator::UpstreamPeerUriSan),
    ("ROUTE_NAME", Operator::RouteName),
    ("HOSTNAME", Operator::Hostname),
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("the format is {0} bytes; at most {MAX_LEN} are allowed")]
    TooLong(usize),
    #[error("%{0} has no closing %")]
    Unterminated(String),
    #[error("%{0}% is not a command operator Weft supports")]
    Unknown(String),
    #[error("%{0}%: {1}")]
    Argument(String, &'static str),
}

impl FormatError {
    pub fn hint(&self) -> String {
        let names: Vec<&str> = PLAIN.iter().map(|(n, _)| *n).collect();
        format!(
            "use REQ(HEADER?ALTERNATIVE), RESP(HEADER), ENVIRONMENT(NAME), DYNAMIC_METADATA(envoy.common:access_log_hint) or one of {}; write %% for a literal %",
            names.join(", ")
        )
    }
}

impl LogFormat {
    pub fn parse(source: &str) -> Result<LogFormat, FormatError> {
        if source.len() > MAX_LEN {
            return Err(FormatError::TooLong(source.len()));
        }
        let mut pieces = Vec::new();
        let mut text = String::new();
        let mut rest = source;
        while let Some(at) = rest.find('%') {
            text.push_str(&rest[..at]);
            let after = &rest[at + 1..];
            if let Some(r) = after.strip_prefix('%') {
                text.push('%');
                rest = r;
                continue;
            }
            let (command, r) = command(after)?;
            let (op, max_len) = operator(command)?;
            if !text.is_empty() {
                pieces.push(Piece::Text(std::mem::take(&mut text)));
            }
            pieces.push(Piece::Field { op, max_len });
            rest = r;
        }
        text.push_str(rest);
        if !text.is_empty() {
            pieces.push(Piece::Text(text));
        }
        Ok(LogFormat { pieces })
    }

    /// Envoy reads `ENVIRONMENT(...)` and `HOSTNAME` once, when the format is built; so does
    /// this, turning them into text.
    pub fn resolve_environment(mut self, env: impl Fn(&str) -> Option<String>) -> LogFormat {
        for piece in &mut self.pieces {
            let value = match piece {
                Piece::Field {
                    op: Operator::Environment(name),
                    max_len,
                } => cut(env(name).unwrap_or_else(|| "-".into()), *max_len),
                Piece::Field {
                    op: Operator::Hostname,
                    max_len,
                } => cut(
                    env("HOSTNAME")
                        .or_else(|| {
                            std::fs::read_to_string("/etc/hostname")
                                .ok()
                                .map(|h| h.trim().to_string())
                        })
                        .unwrap_or_else(|| "-".into()),
                    *max_len,
                ),
                _ => continue,
            };
            *piece = Piece::Text(value);
        }
        self
    }

    pub fn operators(&self) -> impl Iterator<Item = &Operator> {
        self.pieces.iter().filter_map(|p| match p {
            Piece::Field { op, .. } => Some(op),
            Piece::Text(_) => None,
        })
    }
}

fn cut(mut value: String, max_len: Option<usize>) -> String {
    if let Some((at, _)) = max_len.and_then(|n| value.char_indices().nth(n)) {
        value.truncate(at);
    }
    value
}

/// Splits `COMMAND%rest` (or `COMMAND(ARG)%rest`, whose argument may hold a `%`).
fn command(after: &str) -> Result<(&str, &str), FormatError> {
    let name_end = after
        .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
        .unwrap_or(after.len());
    let search_from = if after[name_end..].starts_with('(') {
        after[name_end..]
            .find(')')
            .map(|i| name_end + i)
            .ok_or_else(|| FormatError::Unterminated(after.to_string()))?
    } else {
        name_end
    };
    let end = after[search_from..]
        .find('%')
        .map(|i| search_from + i)
        .ok_or_else(|| FormatError::Unterminated(after.to_string()))?;
    Ok((&after[..end], &after[end + 1..]))
}

fn operator(command: &str) -> Result<(Operator, Option<usize>), FormatError> {
    let bad = |why| FormatError::Argument(command.to_string(), why);
    let (body, max_len) = match command.rsplit_once("):") {
        Some((body, n)) => (
            &command[..body.len() + 1],
            Some(
                n.parse()
                    .map_err(|_| bad("the length after : is not a number"))?,
            ),
        ),
        None => match command.rsplit_once(':') {
            Some((body, n)) if !body.contains('(') => (
                body,
                Some(
                    n.parse()
                        .map_err(|_| bad("the length after : is not a number"))?,
                ),
            ),
            _ => (command, None),
        },
    };
    let Some((name, arg)) = body.split_once('(') else {
        return PLAIN
            .iter()
            .find(|(n, _)| *n == body)
            .map(|(_, op)| (op.clone(), max_len))
            .ok_or_else(|| FormatError::Unknown(command.to_string()));
    };
    let arg = arg
        .strip_suffix(')')
        .ok_or_else(|| bad("the argument has no closing )"))?;
    let header = || -> Result<Header, FormatError> {
        let (name, fallback) = match arg.split_once('?') {
            Some((n, f)) => (n, Some(f)),
            None => (arg, None),
        };
        let valid = |h: &str| {
            let h = h.strip_prefix(':').unwrap_or(h);
            !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$&'*+-.^_`|~".contains(&b))
        };
        if !valid(name) || fallback.is_some_and(|f| !valid(f)) {
            return Err(bad("not a header name"));
        }
        Ok(Header {
            name: name.to_ascii_lowercase(),
            fallback: fallback.map(str::to_ascii_lowercase),
        })
    };
    let op = match name {
        "REQ" => Operator::Request(header()?),
        "RESP" => Operator::Response(header()?),
        "ENVIRONMENT" if !arg.is_empty() => Operator::Environment(arg.to_string()),
        "ENVIRONMENT" => return Err(bad("name a variable")),
        "DYNAMIC_METADATA" => match arg.split_once(':') {
            Some((namespace, key)) if !namespace.is_empty() && !key.is_empty() => {
                Operator::DynamicMetadata {
                    namespace: namespace.to_string(),
                    key: key.to_string(),
                }
            }
            _ => return Err(bad("write NAMESPACE:KEY, as envoy.common:access_log_hint")),
        },
        "START_TIME" => {
            return Err(bad(
                "Weft writes START_TIME as RFC 3339 only; drop the (...)",
            ))
        }
        _ => return Err(FormatError::Unknown(command.to_string())),
    };
    Ok((op, max_len))
}

/// A JSON format: object keys, each a format or a JSON literal (Envoy's `json_format`).
#[derive(Debug, Clone, PartialEq)]
pub struct JsonFormat {
    pub fields: Vec<(String, JsonValue)>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum JsonValue {
    Format(LogFormat),
    Literal(serde_json::Value),
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LineFormatError {
    #[error("not a JSON object of log fields: {0}")]
    NotAnObject(String),
    #[error("{0}: Weft writes flat JSON log lines; nested objects and lists are not supported")]
    Nested(String),
    #[error("{0}: {1}")]
    Field(String, FormatError),
    #[error(transparent)]
    Text(FormatError),
}

impl LineFormatError {
    pub fn hint(&self) -> String {
        match self {
            LineFormatError::Field(_, e) | LineFormatError::Text(e) => e.hint(),
            _ => r#"write an object of strings, such as {"code": "%RESPONSE_CODE%", "path": "%REQ(:PATH)%"}"#.into(),
        }
    }
}

/// How a log line is written: a text format or a JSON object.
#[derive(Debug, Clone, PartialEq)]
pub enum LineFormat {
    Text(LogFormat),
    Json(JsonFormat),
}

impl LineFormat {
    pub fn istio_text() -> LineFormat {
        LineFormat::Text(LogFormat::parse(ISTIO_TEXT).expect("Istio's default format parses"))
    }

    pub fn istio_json() -> LineFormat {
        LineFormat::Json(JsonFormat::istio())
    }

    /// A text format; Istio ends a line that lacks a newline with one.
    pub fn text(source: &str) -> Result<LineFormat, LineFormatError> {
        let mut format = LogFormat::parse(source).map_err(LineFormatError::Text)?;
        if !source.ends_with('\n') {
            format.pieces.push(Piece::Text("\n".into()));
        }
        Ok(LineFormat::Text(format))
    }

    /// MeshConfig's `accessLogFormat` in its `accessLogEncoding`: with JSON, the format is a
    /// JSON object in a string, as Istio reads it.
    pub fn mesh(mesh: &MeshConfig) -> Result<LineFormat, LineFormatError> {
        let json = mesh.access_log_encoding == Some(AccessLogEncoding::Json);
        match (
            mesh.access_log_format.as_deref().filter(|f| !f.is_empty()),
            json,
        ) {
            (None, false) => Ok(LineFormat::istio_text()),
            (None, true) => Ok(LineFormat::istio_json()),
            (Some(f), false) => LineFormat::text(f),
            (Some(f), true) => JsonFormat::parse(f).map(LineFormat::Json),
        }
    }

    /// An envoyFileAccessLog provider's `logFormat`: `text`, `labels` (JSON), or Istio's
    /// default text format.
    pub fn provider(format: Option<&FileAccessLogFormat>) -> Result<LineFormat, LineFormatError> {
        match format {
            Some(FileAccessLogFormat { text: Some(t), .. }) => LineFormat::text(t),
            Some(FileAccessLogFormat {
                labels: Some(l), ..
            }) => JsonFormat::from_value(l).map(LineFormat::Json),
            _ => Ok(LineFormat::istio_text()),
        }
    }

    pub fn formats(&self) -> Vec<&LogFormat> {
        match self {
            LineFormat::Text(f) => vec![f],
            LineFormat::Json(j) => j.formats().collect(),
        }
    }

    pub fn resolve_environment(self, env: impl Fn(&str) -> Option<String>) -> LineFormat {
        match self {
            LineFormat::Text(f) => LineFormat::Text(f.resolve_environment(env)),
            LineFormat::Json(j) => LineFormat::Json(j.resolve_environment(env)),
        }
    }
}

impl JsonFormat {
    /// `labels` of an envoyFileAccessLog provider, or `accessLogFormat` with JSON encoding
    /// (a JSON object in a string, as Istio reads it).
    pub fn from_value(value: &serde_json::Value) -> Result<JsonFormat, LineFormatError> {
        let object = value
            .as_object()
            .ok_or_else(|| LineFormatError::NotAnObject(value.to_string()))?;
        let mut fields = Vec::with_capacity(object.len());
        for (key, v) in object {
            let value = match v {
                serde_json::Value::String(s) => JsonValue::Format(
                    LogFormat::parse(s).map_err(|e| LineFormatError::Field(key.clone(), e))?,
                ),
                serde_json::Value::Object(_) | serde_json::Value::Array(_) => {
                    return Err(LineFormatError::Nested(key.clone()))
                }
                literal => JsonValue::Literal(literal.clone()),
            };
            fields.push((key.clone(), value));
        }
        Ok(JsonFormat { fields })
    }

    pub fn parse(source: &str) -> Result<JsonFormat, LineFormatError> {
        let value: serde_json::Value = serde_json::from_str(source)
            .map_err(|e| LineFormatError::NotAnObject(e.to_string()))?;
        JsonFormat::from_value(&value)
    }

    pub fn istio() -> JsonFormat {
        JsonFormat {
            fields: ISTIO_JSON
                .iter()
                .map(|(k, v)| {
                    let format = LogFormat::parse(v).expect("Istio's default format parses");
                    (k.to_string(), JsonValue::Format(format))
                })
                .collect(),
        }
    }

    pub fn formats(&self) -> impl Iterator<Item = &LogFormat> {
        self.fields.iter().filter_map(|(_, v)| match v {
            JsonValue::Format(f) => Some(f),
            JsonValue::Literal(_) => None,
        })
    }

    pub fn resolve_environment(self, env: impl Fn(&str) -> Option<String>) -> JsonFormat {
        JsonFormat {
            fields: self
                .fields
                .into_iter()
                .map(|(k, v)| match v {
                    JsonValue::Format(f) => (k, JsonValue::Format(f.resolve_environment(&env))),
                    literal => (k, literal),
                })
                .collect(),
        }
    }
}

impl fmt::Display for Operator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some((name, _)) = PLAIN.iter().find(|(_, op)| op == self) {
            return f.write_str(name);
        }
        let header = |f: &mut fmt::Formatter<'_>, kind, h: &Header| {
            write!(f, "{kind}({}", h.name.to_ascii_uppercase())?;
            if let Some(fb) = &h.fallback {
                write!(f, "?{}", fb.to_ascii_uppercase())?;
            }
            f.write_str(")")
        };
        match self {
            Operator::Request(h) => header(f, "REQ", h),
            Operator::Response(h) => header(f, "RESP", h),
            Operator::Environment(n) => write!(f, "ENVIRONMENT({n})"),
            _ => unreachable!("every plain operator is in PLAIN"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn istios_defaults_parse_and_name_their_operators_as_envoy_does() {
        let text = LogFormat::parse(ISTIO_TEXT).unwrap();
        assert_eq!(text.operators().count(), 24);
        let shown: Vec<String> = text.operators().map(|o| o.to_string()).collect();
        assert_eq!(shown[2], "REQ(X-ENVOY-ORIGINAL-PATH?:PATH)");
        assert_eq!(text.pieces.last(), Some(&Piece::Text("\n".into())));
        assert_eq!(JsonFormat::istio().fields.len(), ISTIO_JSON.len());
    }

    #[test]
    fn lengths_literal_percents_and_arguments_with_percent_parse() {
        let f = LogFormat::parse("100%% %REQ(USER-AGENT):10% %ENVIRONMENT(POD_NAME)%").unwrap();
        assert_eq!(
            f.pieces,
            vec![
                Piece::Text("100% ".into()),
                Piece::Field {
                    op: Operator::Request(Header {
                        name: "user-agent".into(),
                        fallback: None
                    }),
                    max_len: Some(10)
                },
                Piece::Text(" ".into()),
                Piece::Field {
                    op: Operator::Environment("POD_NAME".into()),
                    max_len: None
                },
            ]
        );
        assert_eq!(
            LogFormat::parse("%UPSTREAM_CLUSTER:15%").unwrap().pieces,
            vec![Piece::Field {
                op: Operator::UpstreamCluster,
                max_len: Some(15)
            }]
        );
        let resolved = f.resolve_environment(|n| (n == "POD_NAME").then(|| "reviews-v2-0".into()));
        assert_eq!(resolved.pieces[3], Piece::Text("reviews-v2-0".into()));
    }

    #[test]
    fn bad_formats_say_what_is_wrong() {
        for (source, want) in [
            ("%RESPONSE_CODE", "no closing %"),
            ("%NOPE%", "%NOPE% is not a command operator Weft supports"),
            ("%REQ(a b)%", "not a header name"),
            ("%START_TIME(%s)%", "RFC 3339"),
            ("%REQ(X):ten%", "not a number"),
            ("%ENVIRONMENT()%", "name a variable"),
        ] {
            let e = LogFormat::parse(source).unwrap_err().to_string();
            assert!(e.contains(want), "{source}: {e}");
        }
        assert!(matches!(
            JsonFormat::parse(r#"{"a": {"b": "%PROTOCOL%"}}"#),
            Err(LineFormatError::Nested(_))
        ));
        assert!(JsonFormat::parse("not json").is_err());
        let LineFormat::Text(t) = LineFormat::text("%PROTOCOL%").unwrap() else {
            panic!()
        };
        assert_eq!(t.pieces.last(), Some(&Piece::Text("\n".into())));
    }
}
