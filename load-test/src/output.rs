//! Writing a report: the human summary, and JSON and CSV on request.
//!
//! When JSON or CSV goes to stdout, the summary goes to stderr so stdout stays parseable.

use std::fs;
use std::io::Write;
use std::path::Path;

use serde::Serialize;

use crate::cli::OutputArgs;
use crate::error::LoadError;

/// A report that can be written.
pub trait Emit: Serialize {
    fn summary(&self) -> String;
    /// CSV header and rows.
    fn table(&self) -> (Vec<&'static str>, Vec<Vec<String>>);
}

impl Emit for crate::scenario::ScenarioReport {
    fn summary(&self) -> String {
        crate::scenario::ScenarioReport::summary(self)
    }
    fn table(&self) -> (Vec<&'static str>, Vec<Vec<String>>) {
        self.rows()
    }
}

impl Emit for crate::scenario::compare::CompareReport {
    fn summary(&self) -> String {
        crate::scenario::compare::CompareReport::summary(self)
    }
    fn table(&self) -> (Vec<&'static str>, Vec<Vec<String>>) {
        crate::scenario::compare::CompareReport::table(self)
    }
}

pub fn emit(report: &impl Emit, output: &OutputArgs) -> Result<(), LoadError> {
    let to_stdout = |p: &Option<std::path::PathBuf>| p.as_deref() == Some(Path::new("-"));
    let summary = report.summary();
    if to_stdout(&output.json) || to_stdout(&output.csv) {
        eprint!("{summary}");
    } else {
        write_to(None, &summary, "the summary")?;
    }
    if let Some(path) = &output.json {
        let mut json = serde_json::to_string_pretty(report).map_err(|e| LoadError::Output {
            what: "JSON".into(),
            source: e.into(),
        })?;
        json.push('\n');
        write_to(Some(path), &json, "JSON")?;
    }
    if let Some(path) = &output.csv {
        let (header, rows) = report.table();
        write_to(Some(path), &to_csv(&header, &rows), "CSV")?;
    }
    Ok(())
}

fn write_to(path: Option<&Path>, text: &str, what: &str) -> Result<(), LoadError> {
    let result = match path {
        Some(p) if p != Path::new("-") => fs::write(p, text),
        _ => {
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes()).and_then(|_| out.flush())
        }
    };
    result.map_err(|source| LoadError::Output {
        what: match path {
            Some(p) if p != Path::new("-") => format!("{what} to {}", p.display()),
            _ => format!("{what} to stdout"),
        },
        source,
    })
}

/// RFC 4180: fields with commas, quotes or line breaks are quoted, quotes doubled.
pub fn to_csv(header: &[&str], rows: &[Vec<String>]) -> String {
    let field = |f: &str| {
        if f.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", f.replace('"', "\"\""))
        } else {
            f.to_string()
        }
    };
    let mut out = header
        .iter()
        .map(|h| field(h))
        .collect::<Vec<_>>()
        .join(",");
    out.push('\n');
    for row in rows {
        out.push_str(&row.iter().map(|f| field(f)).collect::<Vec<_>>().join(","));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_only_when_needed() {
        let csv = to_csv(&["a", "b"], &[vec!["1".into(), "x, \"y\"".into()]]);
        assert_eq!(csv, "a,b\n1,\"x, \"\"y\"\"\"\n");
    }
}
