//! The line of a field in the block-style YAML the config view shows, found from the field's
//! path as validation names it (`spec.http[0].route[1].destination.host`), so a message can
//! point at the line it is about.

/// One line: where its content starts once every leading `- ` is passed, where those
/// dashes were, and the map key it opens, if any.
struct Line<'a> {
    dashes: Vec<usize>,
    column: usize,
    key: Option<&'a str>,
}

fn line(text: &str) -> Line<'_> {
    let mut column = text.len() - text.trim_start_matches(' ').len();
    let mut rest = &text[column..];
    let mut dashes = Vec::new();
    while let Some(after) = rest.strip_prefix("- ").or((rest == "-").then_some("")) {
        dashes.push(column);
        column += 2;
        rest = after;
    }
    let key = rest
        .split_once(": ")
        .map(|(k, _)| k)
        .or_else(|| rest.strip_suffix(':'))
        .map(|k| k.trim_matches(|c| c == '"' || c == '\''))
        .filter(|k| !k.is_empty() && !k.starts_with(['#', '{', '[']));
    Line {
        dashes,
        column,
        key,
    }
}

enum Step<'p> {
    Key(&'p str),
    Index(usize),
}

fn steps(path: &str) -> Vec<Step<'_>> {
    let mut out = Vec::new();
    for part in path.split('.') {
        let (name, mut rest) = part.split_once('[').map_or((part, ""), |(n, r)| (n, r));
        if !name.is_empty() {
            out.push(Step::Key(name));
        }
        while let Some((inside, after)) = rest.split_once(']') {
            out.push(match inside.parse() {
                Ok(i) => Step::Index(i),
                Err(_) => Step::Key(inside),
            });
            rest = after.strip_prefix('[').unwrap_or(after);
        }
    }
    out
}

/// The 1-based line of `path` in `yaml`; `None` when it is not there.
pub fn line_of(yaml: &str, path: &str) -> Option<usize> {
    let lines: Vec<Line<'_>> = yaml.lines().map(line).collect();
    // The block being searched: lines `start..end`, its entries at `column`.
    let (mut start, mut end, mut column) = (0, lines.len(), 0);
    let mut found = None;
    for step in steps(path) {
        match step {
            Step::Key(key) => {
                let at = (start..end).find(|&i| {
                    let l = &lines[i];
                    l.column == column && l.key == Some(key)
                })?;
                found = Some(at);
                // Its value: the lines below that are deeper, or a sequence at its column.
                let value_end = (at + 1..end)
                    .find(|&i| {
                        let l = &lines[i];
                        let first = l.dashes.first().copied().unwrap_or(l.column);
                        first < column || (first == column && l.dashes.is_empty())
                    })
                    .unwrap_or(end);
                start = at + 1;
                end = value_end;
                column = match lines.get(start) {
                    Some(l) if start < end && l.dashes.first() == Some(&column) => column,
                    _ => column + 2,
                };
            }
            Step::Index(index) => {
                // Items begin with a dash at `column`: on their own line, or after an
                // enclosing item's dash on the same line.
                let items: Vec<usize> = (start..end)
                    .filter(|&i| lines[i].dashes.contains(&column))
                    .collect();
                let at = *items.get(index)?;
                found = Some(at);
                end = items.get(index + 1).copied().unwrap_or(end);
                start = at;
                column += 2;
            }
        }
    }
    found.map(|i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const VS: &str = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: ratings-canary\n  namespace: default\nspec:\n  hosts:\n  - ratings-canary\n  http:\n  - match:\n    - uri:\n        prefix: /api\n    route:\n    - destination:\n        host: ratings\n      weight: 90\n    - destination:\n        host: ratingz\n        subset: v3\n      weight: 10\n  - route:\n    - destination:\n        host: reviews\n  gateways:\n  - mesh\n  - bookinfo-gateway\n";

    #[test]
    fn paths_find_their_lines() {
        let line = |p: &str| line_of(VS, p).map(|n| VS.lines().nth(n - 1).unwrap().trim());
        assert_eq!(
            line("spec.http[0].route[1].destination.host"),
            Some("host: ratingz")
        );
        assert_eq!(
            line("spec.http[0].route[1].destination.subset"),
            Some("subset: v3")
        );
        assert_eq!(line("spec.http[0].route[0].weight"), Some("weight: 90"));
        assert_eq!(
            line("spec.http[1].route[0].destination.host"),
            Some("host: reviews")
        );
        assert_eq!(
            line("spec.http[0].match[0].uri.prefix"),
            Some("prefix: /api")
        );
        assert_eq!(line("spec.http[0]"), Some("- match:"));
        assert_eq!(line("spec.hosts[0]"), Some("- ratings-canary"));
        assert_eq!(line("spec.gateways[1]"), Some("- bookinfo-gateway"));
        assert_eq!(line("metadata.name"), Some("name: ratings-canary"));
        assert_eq!(line("spec.http[2]"), None);
        assert_eq!(line("spec.tcp[0]"), None);
        // `name` exists only under metadata, not at the top.
        assert_eq!(line("name"), None);
    }

    #[test]
    fn serialized_resources_are_searchable() {
        let yaml = "kind: Gateway\nspec:\n  servers:\n  - port:\n      number: 8080\n      name: http\n    hosts:\n    - '*'\n  - hosts:\n    - a.example.com\n    - b.example.com\n";
        let line = |p: &str| line_of(yaml, p).map(|n| yaml.lines().nth(n - 1).unwrap().trim());
        assert_eq!(line("spec.servers[0].port.number"), Some("number: 8080"));
        assert_eq!(line("spec.servers[0].hosts[0]"), Some("- '*'"));
        assert_eq!(line("spec.servers[1].hosts[1]"), Some("- b.example.com"));
        // Map keys in brackets, as validation writes them.
        let headers = "spec:\n  headers:\n    x-user: a\n";
        assert_eq!(line_of(headers, "spec.headers[x-user]"), Some(3));
    }
}
