//! Prometheus's text exposition format (and OpenMetrics text, its superset for what proxies
//! write), read line by line. The bytes come from the network: a line that does not parse is
//! skipped and counted, never a panic.

use std::borrow::Cow;

/// A label name and its value, borrowed from the text unless the value had escapes.
pub type Label<'a> = (&'a str, Cow<'a, str>);

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Line<'a> {
    pub name: &'a str,
    pub labels: Vec<Label<'a>>,
    pub value: f64,
}

#[derive(Debug, Default, PartialEq)]
pub struct Parsed<'a> {
    pub lines: Vec<Line<'a>>,
    pub malformed: usize,
}

/// The sample lines whose metric name `keep` accepts.
pub fn parse<'a>(text: &'a str, keep: impl Fn(&str) -> bool) -> Parsed<'a> {
    let mut parsed = Parsed::default();
    for raw in text.lines() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let name_end = line
            .find(|c: char| c == '{' || c.is_ascii_whitespace())
            .unwrap_or(line.len());
        let name = &line[..name_end];
        if !keep(name) {
            continue;
        }
        match parse_rest(&line[name_end..]) {
            Some((labels, value)) if valid_name(name) => {
                parsed.lines.push(Line {
                    name,
                    labels,
                    value,
                });
            }
            _ => parsed.malformed += 1,
        }
    }
    parsed
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// `{a="b",c="d"} 1.5 [timestamp]` (the labels optional).
fn parse_rest(rest: &str) -> Option<(Vec<Label<'_>>, f64)> {
    let mut labels = Vec::new();
    let mut rest = rest;
    if let Some(inner) = rest.strip_prefix('{') {
        rest = inner;
        loop {
            rest = rest.trim_start();
            if let Some(after) = rest.strip_prefix('}') {
                rest = after;
                break;
            }
            let eq = rest.find('=')?;
            let name = rest[..eq].trim();
            if !valid_name(name) {
                return None;
            }
            let (value, after) = quoted(rest[eq + 1..].trim_start())?;
            labels.push((name, value));
            rest = after.trim_start();
            rest = rest.strip_prefix(',').unwrap_or(rest);
        }
    }
    let mut fields = rest.split_ascii_whitespace();
    let value = parse_value(fields.next()?)?;
    Some((labels, value))
}

/// A double-quoted label value with Prometheus's escapes (`\\`, `\"`, `\n`), borrowed when
/// it has none.
fn quoted(s: &str) -> Option<(Cow<'_, str>, &str)> {
    let body = s.strip_prefix('"')?;
    let end = body.find(['"', '\\'])?;
    if body.as_bytes()[end] == b'"' {
        return Some((Cow::Borrowed(&body[..end]), &body[end + 1..]));
    }
    let mut value = String::from(&body[..end]);
    let mut chars = body[end..].char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((Cow::Owned(value), &body[end + i + 1..])),
            '\\' => match chars.next()?.1 {
                'n' => value.push('\n'),
                other => value.push(other),
            },
            c => value.push(c),
        }
    }
    None
}

fn parse_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => s.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_proxies_write() {
        let text = "# HELP istio_requests_total Requests.\n\
            # TYPE istio_requests_total counter\n\
            istio_requests_total{reporter=\"destination\",source_workload=\"productpage-v1\",response_code=\"200\"} 42\n\
            istio_request_duration_milliseconds_bucket{le=\"+Inf\",a=\"x\\\"y\\\\z\\n\"} 7 1764684000000\n\
            process_cpu_seconds_total 1.5\n\
            # EOF\n";
        let parsed = parse(text, |n| n.starts_with("istio_"));
        assert_eq!(parsed.malformed, 0);
        assert_eq!(parsed.lines.len(), 2);
        assert_eq!(parsed.lines[0].name, "istio_requests_total");
        assert_eq!(parsed.lines[0].value, 42.0);
        assert_eq!(
            parsed.lines[0].labels[1],
            ("source_workload", Cow::Borrowed("productpage-v1"))
        );
        assert_eq!(
            parsed.lines[1].labels,
            vec![
                ("le", Cow::Borrowed("+Inf")),
                ("a", Cow::Owned("x\"y\\z\n".to_string()))
            ]
        );
    }

    #[test]
    fn malformed_lines_are_counted_not_fatal() {
        let text = "istio_a{x=\"unterminated} 1\nistio_b{x=1} 2\nistio_c{} notanumber\nistio_d{,} 1\nistio_ok 3\nistio_€ 1\n";
        let parsed = parse(text, |_| true);
        assert_eq!(parsed.lines.len(), 1, "{parsed:?}");
        assert_eq!(parsed.malformed, 5);
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut rng = fastrand::Rng::with_seed(11);
        let alphabet = b"istio_{}=\",\\ \n0123456789.+-InfNaN#le";
        for _ in 0..20_000 {
            let len = rng.usize(0..64);
            let bytes: Vec<u8> = (0..len)
                .map(|_| alphabet[rng.usize(..alphabet.len())])
                .collect();
            let text = String::from_utf8_lossy(&bytes);
            let _ = parse(&text, |_| true);
        }
    }
}
