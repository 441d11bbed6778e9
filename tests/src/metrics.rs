//! A small parser for the Prometheus / OpenMetrics text exposition format, for asserting on `/metrics`.
//!
//! Only samples are kept: `# HELP`/`# TYPE`/`# UNIT`/`# EOF` and other comments are skipped, timestamps and
//! exemplars ignored. Names are matched exactly as exposed (so `foo_total`, `foo_bucket`, `foo_count`).

use anyhow::{bail, ensure, Context as _, Result};
use std::{collections::BTreeMap, fmt, net::SocketAddr};

/// Parsed samples of one scrape.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    samples: Vec<Sample>,
}

/// One sample line: `name{labels} value`.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// `GET http://addr/metrics` over HTTP/1 and parses the body; errors unless the status is 200.
pub async fn scrape(addr: SocketAddr) -> Result<Metrics> {
    let rsp = crate::client::http1(addr).get("localhost", "/metrics").await?;
    ensure!(rsp.status == 200, "GET /metrics: {} {}", rsp.status, rsp.text());
    Metrics::parse(&rsp.text())
}

impl Metrics {
    /// Parses an exposition; errors name the offending line.
    pub fn parse(text: &str) -> Result<Self> {
        let samples = text
            .lines()
            .enumerate()
            .map(|(i, l)| (i, l.trim()))
            .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
            .map(|(i, l)| parse_sample(l).with_context(|| format!("metrics line {}: {l:?}", i + 1)))
            .collect::<Result<_>>()?;
        Ok(Self { samples })
    }

    /// All samples, in exposition order.
    pub fn samples(&self) -> &[Sample] {
        &self.samples
    }

    /// Samples named `name` whose labels include every pair of `labels` (other labels may be present).
    pub fn matching<'a>(&'a self, name: &'a str, labels: &'a [(&str, &str)]) -> impl Iterator<Item = &'a Sample> {
        self.samples.iter().filter(move |s| s.name == name && s.has_labels(labels))
    }

    /// The value of the one sample named `name` whose labels include all of `labels`. `None` if there is no such
    /// sample, or if several match (then add labels, or use [`Metrics::sum`]).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut it = self.matching(name, labels);
        let first = it.next()?;
        it.next().is_none().then_some(first.value)
    }

    /// The sum over all samples named `name` whose labels include all of `labels` (`0.0` if none).
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(name, labels).map(|s| s.value).sum()
    }
}

impl fmt::Display for Metrics {
    /// Re-renders the samples (handy in assertion messages).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for s in &self.samples {
            let labels: Vec<_> = s.labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
            writeln!(f, "{}{{{}}} {}", s.name, labels.join(","), s.value)?;
        }
        Ok(())
    }
}

impl Sample {
    fn has_labels(&self, labels: &[(&str, &str)]) -> bool {
        labels.iter().all(|(k, v)| self.labels.get(*k).is_some_and(|have| have == v))
    }
}

fn parse_sample(line: &str) -> Result<Sample> {
    let name_end = line.find(|c: char| c == '{' || c.is_whitespace()).context("no value")?;
    let name = line[..name_end].to_owned();
    ensure!(!name.is_empty(), "empty metric name");
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(after) = rest.strip_prefix('{') {
        rest = parse_labels(after, &mut labels)?;
    }
    let value = rest.split_whitespace().next().context("no value")?;
    let value = value.parse::<f64>().with_context(|| format!("bad value {value:?}"))?;
    Ok(Sample { name, labels, value })
}

/// Parses `k="v",k2="v2"}` into `labels`, returning what follows the `}`.
fn parse_labels<'a>(mut s: &'a str, labels: &mut BTreeMap<String, String>) -> Result<&'a str> {
    loop {
        s = s.trim_start_matches(|c: char| c == ',' || c.is_whitespace());
        if let Some(rest) = s.strip_prefix('}') {
            return Ok(rest);
        }
        let (key, after) = s.split_once('=').context("label without `=`")?;
        let after = after.trim_start().strip_prefix('"').context("label value not quoted")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c)) => value.push(c),
                    None => bail!("dangling escape in label value"),
                },
                Some((_, c)) => value.push(c),
                None => bail!("unterminated label value"),
            }
        };
        labels.insert(key.trim().to_owned(), value);
        s = &after[end + 1..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_labels_escapes_and_special_values() {
        let m = Metrics::parse(
            "# TYPE x counter\nx_total{a=\"1\",b=\"q\\\"\\\\\\n\"} 3 1700000000\ny +Inf\nz{} NaN\n# EOF\n",
        )
        .unwrap();
        assert_eq!(m.value("x_total", &[("b", "q\"\\\n")]), Some(3.0));
        assert_eq!(m.value("y", &[]), Some(f64::INFINITY));
        assert!(m.value("z", &[]).unwrap().is_nan());
        assert!(Metrics::parse("bad{a=1} 2").is_err());
    }
}
