//! Field locations: indexes a block-style YAML text into field path -> line and column.
//!
//! Paths use the error syntax, `services[0].routes[1].name`. A key maps to the position of the key; a sequence item
//! to the position of its `-`. Flow collections (`{...}`, `[...]`), block scalars (`|`, `>`) and multi-line scalars
//! are not looked into: their inner paths resolve to the nearest located ancestor through [`Locations::find`].

use std::collections::HashMap;

use crate::error::Location;

/// Field path -> location of its key (or `-`).
#[derive(Debug, Default)]
pub(crate) struct Locations {
    map: HashMap<String, Location>,
}

/// An open block collection.
struct Frame {
    /// Column (0-based, in bytes) of its keys or dashes.
    indent: usize,
    path: String,
    /// `Some(next index)` for a sequence, `None` for a mapping.
    next: Option<usize>,
}

/// A key or dash whose value starts on a later line.
struct Pending {
    indent: usize,
    path: String,
    /// A mapping key may have its sequence value at its own indentation.
    from_key: bool,
}

#[derive(Default)]
struct Indexer<'a> {
    line: usize,
    text: &'a str,
    stack: Vec<Frame>,
    pending: Option<Pending>,
    /// Lines indented deeper than this belong to a scalar or flow value and are skipped.
    skip_deeper: Option<usize>,
    map: HashMap<String, Location>,
}

impl Locations {
    pub(crate) fn index(text: &str) -> Self {
        let mut ix =
            Indexer { stack: vec![Frame { indent: 0, path: String::new(), next: None }], ..Indexer::default() };
        for (n, line) in text.lines().enumerate() {
            ix.line = n + 1;
            ix.text = line;
            ix.line_content();
        }
        Self { map: ix.map }
    }

    /// The location of `path`, or of its nearest located ancestor.
    pub(crate) fn find(&self, path: &str) -> Option<Location> {
        let mut path = path;
        loop {
            if let Some(loc) = self.map.get(path) {
                return Some(*loc);
            }
            path = &path[..path.rfind(['.', '['])?];
        }
    }
}

impl Indexer<'_> {
    fn line_content(&mut self) {
        let content = strip_comment(self.text).trim_end();
        let trimmed = content.trim_start();
        if trimmed.is_empty() {
            return;
        }
        let indent = content.len() - trimmed.len();
        if let Some(deeper) = self.skip_deeper {
            if indent > deeper {
                return;
            }
            self.skip_deeper = None;
        }
        if indent == 0 && (trimmed.starts_with("---") || trimmed.starts_with("...")) {
            return;
        }
        let pending = self.pending.take();
        self.node(indent, trimmed, pending);
    }

    /// One node starting at `col`; `pending` is the key or dash it may be the value of.
    fn node(&mut self, col: usize, text: &str, pending: Option<Pending>) {
        let is_item = text == "-" || text.starts_with("- ");
        while self.stack.last().is_some_and(|f| f.indent > col || (f.indent == col && f.next.is_some() && !is_item)) {
            self.stack.pop();
        }
        let same_level = self.stack.last().is_some_and(|f| f.indent == col && f.next.is_some() == is_item);
        if !same_level {
            match pending {
                Some(p) if col > p.indent || (col == p.indent && p.from_key && is_item) => {
                    self.stack.push(Frame { indent: col, path: p.path, next: is_item.then_some(0) });
                }
                _ => return,
            }
        }
        if is_item {
            self.item(col, text);
        } else {
            self.entry(col, text);
        }
    }

    fn item(&mut self, col: usize, text: &str) {
        let Some(frame) = self.stack.last_mut() else { return };
        let index = frame.next.unwrap_or(0);
        frame.next = Some(index + 1);
        let path = format!("{}[{index}]", frame.path);
        self.record(&path, col);
        let rest = text[1..].trim_start();
        if rest.is_empty() {
            self.pending = Some(Pending { indent: col, path, from_key: false });
            return;
        }
        let rest_col = col + (text.len() - rest.len());
        if rest == "-" || rest.starts_with("- ") || split_key(rest).is_some() {
            self.node(rest_col, rest, Some(Pending { indent: col, path, from_key: false }));
        } else {
            self.skip_deeper = Some(col);
        }
    }

    fn entry(&mut self, col: usize, text: &str) {
        let Some((key, value)) = split_key(text) else {
            self.skip_deeper = Some(col);
            return;
        };
        let Some(frame) = self.stack.last() else { return };
        let path = if frame.path.is_empty() { key } else { format!("{}.{key}", frame.path) };
        self.record(&path, col);
        if is_empty_value(value) {
            self.pending = Some(Pending { indent: col, path, from_key: true });
        } else {
            self.skip_deeper = Some(col);
        }
    }

    fn record(&mut self, path: &str, col: usize) {
        let column = self.text.get(..col).map_or(col, |s| s.chars().count()) + 1;
        self.map.entry(path.to_owned()).or_insert(Location { line: self.line, column });
    }
}

/// `key: value` or `key:` -> (key, value). Quoted keys are unquoted.
fn split_key(text: &str) -> Option<(String, &str)> {
    let (key, after) = match text.as_bytes().first()? {
        b'"' => {
            let end = closing_quote(text, b'"')?;
            (unescape_double(&text[1..end]), &text[end + 1..])
        }
        b'\'' => {
            let end = closing_quote(text, b'\'')?;
            (text[1..end].replace("''", "'"), &text[end + 1..])
        }
        b'[' | b'{' | b'&' | b'*' | b'!' | b'|' | b'>' | b'%' | b'@' | b'`' | b'?' => return None,
        _ => {
            let colon = text.match_indices(':').map(|(i, _)| i).find(|&i| is_value_start(&text[i + 1..]))?;
            (text[..colon].trim_end().to_owned(), &text[colon..])
        }
    };
    let value = after.trim_start().strip_prefix(':')?;
    is_value_start(value).then(|| (key, value.trim()))
}

fn is_value_start(rest: &str) -> bool {
    rest.is_empty() || rest.starts_with([' ', '\t'])
}

/// A value that leaves the node's content to the following lines: nothing, or only an anchor or a tag.
fn is_empty_value(value: &str) -> bool {
    value.split_whitespace().all(|token| token.starts_with(['&', '!']))
}

/// Index of the quote closing the one at index 0.
fn closing_quote(text: &str, quote: u8) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut i = 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if quote == b'"' => i += 2,
            b'\'' if quote == b'\'' && bytes.get(i + 1) == Some(&b'\'') => i += 2,
            b if b == quote => return Some(i),
            _ => i += 1,
        }
    }
    None
}

fn unescape_double(s: &str) -> String {
    s.replace("\\\"", "\"").replace("\\\\", "\\")
}

/// Cuts a `#` comment that starts the line or follows whitespace, outside of quotes.
fn strip_comment(line: &str) -> &str {
    let bytes = line.as_bytes();
    let mut quote: Option<u8> = None;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let after_space = i == 0 || bytes[i - 1].is_ascii_whitespace();
        match quote {
            Some(b'"') if b == b'\\' => i += 1,
            Some(b'\'') if b == b'\'' && bytes.get(i + 1) == Some(&b'\'') => i += 1,
            Some(q) if b == q => quote = None,
            Some(_) => {}
            None if b == b'#' && after_space => return &line[..i],
            None if (b == b'"' || b == b'\'') && (i == 0 || b" \t[{,:-".contains(&bytes[i - 1])) => quote = Some(b),
            None => {}
        }
        i += 1;
    }
    line
}

#[cfg(test)]
mod tests;
