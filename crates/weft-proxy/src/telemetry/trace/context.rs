//! Trace context on the wire: W3C `traceparent`/`tracestate`, B3 multi-header
//! (`x-b3-traceid`, `x-b3-spanid`, `x-b3-parentspanid`, `x-b3-sampled`, `x-b3-flags`) and
//! single-header `b3`, read from a request and written for the next hop.

use crate::http::headers::push_hex;
use http::header::{HeaderMap, HeaderName, HeaderValue};

const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
const B3: HeaderName = HeaderName::from_static("b3");
const B3_TRACE_ID: HeaderName = HeaderName::from_static("x-b3-traceid");
const B3_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-spanid");
const B3_PARENT: HeaderName = HeaderName::from_static("x-b3-parentspanid");
const B3_SAMPLED: HeaderName = HeaderName::from_static("x-b3-sampled");
const B3_FLAGS: HeaderName = HeaderName::from_static("x-b3-flags");

/// Which encodings a request carried its context in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Formats {
    pub w3c: bool,
    pub b3_multi: bool,
    pub b3_single: bool,
}

impl Formats {
    /// What a trace this proxy starts is written in: both families, as Istio's proxies
    /// accept either.
    pub const STARTED: Formats = Formats {
        w3c: true,
        b3_multi: true,
        b3_single: false,
    };

    fn any(self) -> bool {
        self.w3c || self.b3_multi || self.b3_single
    }
}

/// One span's identity in a trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanContext {
    /// 128 bits; a 64-bit B3 id has its high half zero.
    pub trace_id: u128,
    pub span_id: u64,
    /// The caller's decision; `None` leaves it to this proxy.
    pub sampled: Option<bool>,
    /// B3's debug flag (`x-b3-flags: 1`, `b3: …-d`): sampled whatever the rate.
    pub debug: bool,
}

/// What a request brings: the caller's span, if any, and the formats it used.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Incoming {
    pub parent: Option<SpanContext>,
    /// A sampling decision sent without a trace (`x-b3-sampled: 0` or `b3: 0` alone).
    pub sampled: Option<bool>,
    pub formats: Formats,
    pub tracestate: Option<HeaderValue>,
}

/// Reads the trace context of a request. B3 first, as Envoy's Zipkin tracer reads it, then
/// W3C; malformed headers count as absent (a new trace starts).
pub fn extract(headers: &HeaderMap) -> Incoming {
    let text = |name: &HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let mut incoming = Incoming {
        formats: Formats {
            w3c: headers.contains_key(TRACEPARENT),
            b3_multi: headers.contains_key(B3_TRACE_ID) || headers.contains_key(B3_SAMPLED),
            b3_single: headers.contains_key(B3),
        },
        tracestate: headers.get(TRACESTATE).cloned(),
        ..Default::default()
    };
    let b3_sampled = text(&B3_SAMPLED).and_then(sampled_flag);
    let b3_debug = text(&B3_FLAGS) == Some("1");
    if let (Some(trace), Some(span)) = (text(&B3_TRACE_ID), text(&B3_SPAN_ID)) {
        if let (Some(trace_id), Some(span_id)) = (trace_id(trace), span_id(span)) {
            incoming.parent = Some(SpanContext {
                trace_id,
                span_id,
                sampled: if b3_debug { Some(true) } else { b3_sampled },
                debug: b3_debug,
            });
        }
    }
    if incoming.parent.is_none() {
        incoming.parent = text(&B3).and_then(|v| parse_b3_single(v, &mut incoming.sampled));
    }
    if incoming.parent.is_none() {
        incoming.parent = text(&TRACEPARENT).and_then(parse_traceparent);
    }
    if incoming.parent.is_none() && incoming.sampled.is_none() {
        incoming.sampled = if b3_debug { Some(true) } else { b3_sampled };
    }
    incoming
}

/// Writes `span` (child of `parent`) into `headers` in `formats`, replacing whatever trace
/// headers were there; when `formats` is empty, in [`Formats::STARTED`].
pub fn inject(
    headers: &mut HeaderMap,
    span: &SpanContext,
    parent: Option<u64>,
    formats: Formats,
    tracestate: Option<&HeaderValue>,
) {
    let formats = if formats.any() {
        formats
    } else {
        Formats::STARTED
    };
    for name in [
        &TRACEPARENT,
        &TRACESTATE,
        &B3,
        &B3_TRACE_ID,
        &B3_SPAN_ID,
        &B3_PARENT,
        &B3_SAMPLED,
        &B3_FLAGS,
    ] {
        headers.remove(name);
    }
    let sampled = span.sampled.unwrap_or(false);
    let mut buf = String::with_capacity(64);
    let mut put = |headers: &mut HeaderMap, name: HeaderName, build: &dyn Fn(&mut String)| {
        buf.clear();
        build(&mut buf);
        if let Ok(v) = HeaderValue::from_str(&buf) {
            headers.insert(name, v);
        }
    };
    if formats.b3_multi {
        put(headers, B3_TRACE_ID, &|b| push_trace_hex(b, span.trace_id));
        put(headers, B3_SPAN_ID, &|b| push_hex64(b, span.span_id));
        if let Some(p) = parent {
            put(headers, B3_PARENT, &|b| push_hex64(b, p));
        }
        if span.debug {
            headers.insert(B3_FLAGS, HeaderValue::from_static("1"));
        } else {
            headers.insert(
                B3_SAMPLED,
                HeaderValue::from_static(if sampled { "1" } else { "0" }),
            );
        }
    }
    if formats.b3_single {
        put(headers, B3, &|b| {
            push_trace_hex(b, span.trace_id);
            b.push('-');
            push_hex64(b, span.span_id);
            b.push_str(match (span.debug, sampled) {
                (true, _) => "-d",
                (false, true) => "-1",
                (false, false) => "-0",
            });
            if let Some(p) = parent {
                b.push('-');
                push_hex64(b, p);
            }
        });
    }
    if formats.w3c {
        put(headers, TRACEPARENT, &|b| {
            b.push_str("00-");
            push_hex(b, span.trace_id, 32);
            b.push('-');
            push_hex64(b, span.span_id);
            b.push_str(if sampled { "-01" } else { "-00" });
        });
        if let Some(state) = tracestate {
            headers.insert(TRACESTATE, state.clone());
        }
    }
}

/// A trace id as B3 writes it: 16 hex digits when it fits in 64 bits, else 32.
pub fn trace_hex(id: u128) -> String {
    let mut s = String::with_capacity(32);
    push_trace_hex(&mut s, id);
    s
}

fn push_trace_hex(b: &mut String, id: u128) {
    push_hex(b, id, if id >> 64 == 0 { 16 } else { 32 });
}

fn push_hex64(b: &mut String, id: u64) {
    push_hex(b, u128::from(id), 16);
}

fn sampled_flag(v: &str) -> Option<bool> {
    match v {
        "1" | "true" | "d" => Some(true),
        "0" | "false" => Some(false),
        _ => None,
    }
}

fn hex(v: &str, digits: &[usize]) -> Option<u128> {
    if !digits.contains(&v.len()) || !v.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u128::from_str_radix(v, 16).ok().filter(|id| *id != 0)
}

fn trace_id(v: &str) -> Option<u128> {
    hex(v, &[16, 32])
}

fn span_id(v: &str) -> Option<u64> {
    hex(v, &[16]).map(|id| id as u64)
}

/// `{traceid}-{spanid}[-{sampled}[-{parent}]]`, or a lone sampling state (`0`, `1`, `d`).
fn parse_b3_single(v: &str, lone_sampled: &mut Option<bool>) -> Option<SpanContext> {
    let mut parts = v.split('-');
    let first = parts.next()?;
    let Some(second) = parts.next() else {
        *lone_sampled = sampled_flag(first);
        return None;
    };
    let flag = parts.next();
    Some(SpanContext {
        trace_id: trace_id(first)?,
        span_id: span_id(second)?,
        sampled: flag.and_then(sampled_flag),
        debug: flag == Some("d"),
    })
}

/// `00-{32 hex trace}-{16 hex parent}-{2 hex flags}`; later versions may append fields.
fn parse_traceparent(v: &str) -> Option<SpanContext> {
    let mut parts = v.trim().split('-');
    let version = parts.next()?;
    let (trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?);
    if version.len() != 2 || version == "ff" || flags.len() != 2 {
        return None;
    }
    if version == "00" && parts.next().is_some() {
        return None;
    }
    let flags = u8::from_str_radix(flags, 16).ok()?;
    Some(SpanContext {
        trace_id: hex(trace, &[32])?,
        span_id: span_id(span)?,
        sampled: Some(flags & 1 == 1),
        debug: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    HeaderName::from_static(k),
                    HeaderValue::from_str(v).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn reads_each_format() {
        let b3 = extract(&headers(&[
            ("x-b3-traceid", "463ac35c9f6413ad48485a3953bb6124"),
            ("x-b3-spanid", "a2fb4a1d1a96d312"),
            ("x-b3-parentspanid", "0020000000000001"),
            ("x-b3-sampled", "1"),
        ]));
        let p = b3.parent.unwrap();
        assert_eq!(p.trace_id, 0x463ac35c9f6413ad48485a3953bb6124);
        assert_eq!((p.span_id, p.sampled), (0xa2fb4a1d1a96d312, Some(true)));
        assert!(b3.formats.b3_multi && !b3.formats.w3c);

        let single = extract(&headers(&[("b3", "80f198ee56343ba8-e457b5a2e4d86bd1-d")]));
        let p = single.parent.unwrap();
        assert_eq!(
            (p.trace_id, p.span_id),
            (0x80f198ee56343ba8, 0xe457b5a2e4d86bd1)
        );
        assert!(p.debug && p.sampled == Some(true) && single.formats.b3_single);

        let w3c = extract(&headers(&[
            (
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00",
            ),
            ("tracestate", "congo=t61rcWkgMzE"),
        ]));
        let p = w3c.parent.unwrap();
        assert_eq!(p.trace_id, 0x0af7651916cd43dd8448eb211c80319c);
        assert_eq!(p.sampled, Some(false));
        assert_eq!(w3c.tracestate.unwrap(), "congo=t61rcWkgMzE");

        assert_eq!(extract(&headers(&[("b3", "0")])).sampled, Some(false));
        assert_eq!(
            extract(&headers(&[("x-b3-sampled", "1")])).sampled,
            Some(true)
        );
    }

    #[test]
    fn malformed_context_is_no_context() {
        for bad in [
            &[("x-b3-traceid", "xyz"), ("x-b3-spanid", "a2fb4a1d1a96d312")][..],
            &[
                ("x-b3-traceid", "00000000000000000000000000000000"),
                ("x-b3-spanid", "a2fb4a1d1a96d312"),
            ],
            &[(
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
            )],
            &[(
                "traceparent",
                "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            )],
            &[("b3", "80f198ee56343ba8-")],
            &[(
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b716920333-01",
            )],
        ] {
            assert_eq!(extract(&headers(bad)).parent, None, "{bad:?}");
        }
    }

    #[test]
    fn writes_the_formats_received_or_both_families() {
        let span = SpanContext {
            trace_id: 0x0af7651916cd43dd8448eb211c80319c,
            span_id: 0x00f067aa0ba902b7,
            sampled: Some(true),
            debug: false,
        };
        let mut h = headers(&[("traceparent", "stale"), ("x-b3-spanid", "stale")]);
        inject(&mut h, &span, Some(7), Formats::default(), None);
        assert_eq!(
            h["traceparent"],
            "00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01"
        );
        assert_eq!(h["x-b3-traceid"], "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(h["x-b3-spanid"], "00f067aa0ba902b7");
        assert_eq!(h["x-b3-parentspanid"], "0000000000000007");
        assert_eq!(h["x-b3-sampled"], "1");

        let mut h = HeaderMap::new();
        let only_single = Formats {
            b3_single: true,
            ..Default::default()
        };
        inject(
            &mut h,
            &SpanContext {
                trace_id: 5,
                sampled: Some(false),
                ..span
            },
            None,
            only_single,
            None,
        );
        assert_eq!(h["b3"], "0000000000000005-00f067aa0ba902b7-0");
        assert_eq!(h.len(), 1);
        // What is written reads back as the same span.
        assert_eq!(extract(&h).parent.unwrap().span_id, span.span_id);
    }
}
