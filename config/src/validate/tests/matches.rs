use super::*;
use crate::model::{PathMatch, RouteMatch, ValueMatch};

/// One route whose `match` list (items indented 10) is `matches`.
fn with_matches(matches: &str) -> String {
    format!(
        "\
services:
  - name: web
    hosts: [web]
    routes:
      - name: r
        match:
{matches}        backends: [{{name: web}}]
{BACKEND}"
    )
}

fn first_match(yaml: &str) -> RouteMatch {
    load(yaml).services[0].routes[0].matches[0].clone()
}

const M: &str = "services[0].routes[0].match[0]";

#[test]
fn path_needs_exactly_one_of_exact_or_prefix() {
    let yaml = with_matches("          - path: {exact: /a, prefix: /b}\n");
    expect_error(&yaml, &format!("{M}.path"), (7, 13), "exactly one of `exact` or `prefix`");
    let yaml = with_matches("          - path: {}\n");
    expect_error(&yaml, &format!("{M}.path"), (7, 13), "exactly one");
}

#[test]
fn paths_start_with_a_slash() {
    let yaml = with_matches("          - path:\n              prefix: api\n");
    expect_error(&yaml, &format!("{M}.path.prefix"), (8, 15), "must start with `/`");
    let yaml = with_matches("          - path:\n              exact: /a?b=c\n");
    expect_error(&yaml, &format!("{M}.path.exact"), (8, 15), "no query");
}

#[test]
fn prefixes_are_stored_without_the_trailing_slash() {
    let cases = [("/api/", "/api"), ("/api", "/api"), ("/", "")];
    for (written, stored) in cases {
        let yaml = with_matches(&format!("          - path: {{prefix: '{written}'}}\n"));
        assert_eq!(first_match(&yaml).path, Some(PathMatch::Prefix(stored.into())), "{written}");
    }
}

#[test]
fn methods_are_upper_case_tokens() {
    let yaml = with_matches("          - method: get\n");
    expect_error(&yaml, &format!("{M}.method"), (7, 13), "must be upper case: `GET`");
    let yaml = with_matches("          - method: 'GE T'\n");
    expect_error(&yaml, &format!("{M}.method"), (7, 13), "invalid method");
    let yaml = with_matches("          - method: PURGE\n");
    assert_eq!(first_match(&yaml).method.map(|m| m.to_string()).as_deref(), Some("PURGE"));
}

#[test]
fn header_matches_need_valid_names_and_at_most_one_condition() {
    let items = "          - headers:
              - name: 'x bad'
              - name: x-both
                exact: a
                regex: b
              - name: x-value
                exact: \"a\\u0001\"
";
    let yaml = with_matches(items);
    expect_error(&yaml, &format!("{M}.headers[0].name"), (8, 17), "invalid header name");
    expect_error(&yaml, &format!("{M}.headers[1]"), (9, 15), "at most one of `exact` and `regex`");
    expect_error(&yaml, &format!("{M}.headers[2].exact"), (13, 17), "invalid header value");
}

#[test]
fn value_matches_are_present_exact_or_anchored_regex() {
    let items = "          - headers:
              - {name: X-Canary}
              - {name: x-user, exact: alice}
            query:
              - {name: v, regex: '[0-9]+'}
";
    let m = first_match(&with_matches(items));
    assert_eq!(m.headers[0].name.as_str(), "x-canary");
    assert_eq!(m.headers[0].value, ValueMatch::Present);
    assert_eq!(m.headers[1].value, ValueMatch::Exact("alice".into()));
    let ValueMatch::Regex(pattern) = &m.query[0].value else { panic!("{m:?}") };
    assert_eq!(pattern.source, "[0-9]+");
    assert!(pattern.regex.is_match("42"));
    assert!(!pattern.regex.is_match("v42"), "anchored at the start");
    assert!(!pattern.regex.is_match("42v"), "anchored at the end");
}

#[test]
fn regexes_must_compile_and_cannot_escape_the_anchors() {
    let yaml = with_matches("          - query:\n              - name: v\n                regex: 'a)|(b'\n");
    expect_error(&yaml, &format!("{M}.query[0].regex"), (9, 17), "invalid regular expression: unopened group");
    let yaml = with_matches("          - query:\n              - name: v\n                regex: '(a{1000}){1000}'\n");
    expect_error(&yaml, &format!("{M}.query[0].regex"), (9, 17), "too large");
}

#[test]
fn query_names_are_not_empty() {
    let yaml = with_matches("          - query:\n              - name: ''\n");
    expect_error(&yaml, &format!("{M}.query[0].name"), (8, 17), "must not be empty");
}
