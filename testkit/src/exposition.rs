//! Reading lbd's `/metrics` as Prometheus does: samples by name and labels,
//! so a test names the sample it means (`name{label="value"}`, labels in
//! any order, a subset of the sample's) instead of matching text.

/// One sample line: `name{labels} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Every sample of `text` (comment lines skipped). Panics on a line it
/// cannot read: the exposition is broken.
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| parse_line(l).unwrap_or_else(|| panic!("unreadable sample line: {l:?}")))
        .collect()
}

/// `name{labels}` or `name`, then the value (a timestamp or exemplar after
/// it is ignored).
fn parse_line(line: &str) -> Option<Sample> {
    let (name, labels, rest) = parse_selector(line)?;
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name,
        labels,
        value,
    })
}

type Selector<'a> = (String, Vec<(String, String)>, &'a str);

/// A metric name and its labels, and what follows them.
fn parse_selector(s: &str) -> Option<Selector<'_>> {
    let end = s.find(['{', ' ']).unwrap_or(s.len());
    let name = s[..end].to_string();
    let mut rest = &s[end..];
    let mut labels = Vec::new();
    if let Some(inner) = rest.strip_prefix('{') {
        rest = inner;
        loop {
            rest = rest.trim_start_matches(',');
            if let Some(after) = rest.strip_prefix('}') {
                rest = after;
                break;
            }
            let eq = rest.find('=')?;
            let key = rest[..eq].to_string();
            let mut chars = rest[eq + 1..].strip_prefix('"')?.char_indices();
            let mut value = String::new();
            let close = loop {
                match chars.next()? {
                    (i, '"') => break i,
                    (_, '\\') => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        c => value.push(c),
                    },
                    (_, c) => value.push(c),
                }
            };
            labels.push((key, value));
            rest = &rest[eq + 1..][close + 2..];
        }
    }
    Some((name, labels, rest))
}

/// The samples `selector` names: its metric name, and every label it gives
/// with that value.
pub fn matching<'s>(samples: &'s [Sample], selector: &str) -> Vec<&'s Sample> {
    let (name, want, _) =
        parse_selector(selector).unwrap_or_else(|| panic!("bad selector {selector:?}"));
    samples
        .iter()
        .filter(|s| s.name == name && want.iter().all(|(k, v)| s.label(k) == Some(v)))
        .collect()
}

/// The value of the one sample `selector` names in `text`, if any; panics
/// when it names several (the selector is ambiguous).
pub fn value(text: &str, selector: &str) -> Option<f64> {
    let samples = parse(text);
    let found = matching(&samples, selector);
    assert!(
        found.len() <= 1,
        "{selector} names {} samples: {found:?}",
        found.len()
    );
    found.first().map(|s| s.value)
}

/// The `# TYPE` of each family: (family name, type).
pub fn types(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(n, t)| (n.to_string(), t.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_by_name_and_labels() {
        let text = "# TYPE a counter\n\
                    a_total{vip=\"1.2.3.4:80/tcp\",backend=\"10.0.0.1\"} 5\n\
                    a_total{vip=\"1.2.3.4:80/tcp\",backend=\"10.0.0.2\"} 7\n\
                    b{x=\"q\\\"uote\\\\,}\"} 1.5\n\
                    c 3\n\
                    h_bucket{le=\"+Inf\"} 9\n\
                    # EOF\n";
        assert_eq!(value(text, "a_total{backend=\"10.0.0.2\"}"), Some(7.0));
        assert_eq!(
            value(text, "a_total{backend=\"10.0.0.1\",vip=\"1.2.3.4:80/tcp\"}"),
            Some(5.0)
        );
        assert_eq!(value(text, "b{x=\"q\\\"uote\\\\,}\"}"), Some(1.5));
        assert_eq!(value(text, "c"), Some(3.0));
        assert_eq!(value(text, "h_bucket{le=\"+Inf\"}"), Some(9.0));
        assert_eq!(value(text, "a_total{backend=\"10.0.0.3\"}"), None);
        assert_eq!(matching(&parse(text), "a_total").len(), 2);
        assert_eq!(types(text), [("a".to_string(), "counter".to_string())]);
    }

    #[test]
    #[should_panic(expected = "names 2 samples")]
    fn an_ambiguous_selector_is_refused() {
        value("a 1\na{x=\"1\"} 2\n", "a");
    }
}
