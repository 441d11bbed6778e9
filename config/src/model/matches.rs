//! Request matching: which requests a route takes (path, method, headers, query).

use std::fmt;

use http::{HeaderName, Method};

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct RouteMatch {
    pub path: Option<PathMatch>,
    pub method: Option<Method>,
    pub headers: Vec<HeaderMatch>,
    pub query: Vec<QueryMatch>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PathMatch {
    Exact(String),
    /// Segment-wise; stored without a trailing `/` (`/` itself is stored as the empty string).
    Prefix(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HeaderMatch {
    pub name: HeaderName,
    pub value: ValueMatch,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct QueryMatch {
    pub name: String,
    pub value: ValueMatch,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ValueMatch {
    Present,
    Exact(String),
    Regex(Pattern),
}

/// A compiled regular expression, anchored to the whole value; compared by its source text.
#[derive(Clone)]
pub struct Pattern {
    pub source: String,
    pub regex: regex::Regex,
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "/{}/", self.source)
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for Pattern {}

impl std::hash::Hash for Pattern {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.source.hash(state);
    }
}

impl RouteMatch {
    pub fn matches(&self, req: &http::request::Parts) -> bool {
        if let Some(method) = &self.method {
            if req.method != method {
                return false;
            }
        }
        if let Some(path) = &self.path {
            if !path.matches(req.uri.path()) {
                return false;
            }
        }
        let headers_ok = self.headers.iter().all(|h| {
            let mut values = req.headers.get_all(&h.name).iter().filter_map(|v| v.to_str().ok());
            match &h.value {
                ValueMatch::Present => req.headers.contains_key(&h.name),
                value => values.any(|v| value.matches(v)),
            }
        });
        headers_ok && self.query.iter().all(|q| query_matches(req.uri.query(), q))
    }
}

impl PathMatch {
    pub fn matches(&self, path: &str) -> bool {
        match self {
            Self::Exact(want) => path == want,
            Self::Prefix(prefix) => {
                path.starts_with(prefix.as_str()) && matches!(path.as_bytes().get(prefix.len()), None | Some(b'/'))
            }
        }
    }
}

impl ValueMatch {
    pub fn matches(&self, value: &str) -> bool {
        match self {
            Self::Present => true,
            Self::Exact(want) => value == want,
            Self::Regex(p) => p.regex.is_match(value),
        }
    }
}

fn query_matches(query: Option<&str>, want: &QueryMatch) -> bool {
    let Some(query) = query else { return false };
    query.split('&').any(|pair| {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        name == want.name && want.value.matches(value)
    })
}
