//! *Where the time goes*: the written analysis of each bar a run misses, with that run's
//! figures filled in.
//!
//! The text lives in `where_time_goes.md`: an introduction, then one section per bar,
//! each starting with a line `@@ BAR TEXT` (the bar's text in [`results::BARS`]).
//! `{{v:SCENARIO:MODE}}` becomes the mode's median and `{{x:SCENARIO:MODE}}` its cost
//! relative to native, or `n/a` when the run did not measure it.

use std::fmt::Write;

use crate::modes::Mode;
use crate::results::{self, format_value, Row};

const TEMPLATE: &str = include_str!("where_time_goes.md");

/// The section for the bars `rows` miss; empty when every judged bar is met.
pub fn render(rows: &[Row]) -> String {
    let failing: Vec<&str> = {
        let mut bars: Vec<&str> = Vec::new();
        for v in results::verdicts(rows) {
            if matches!(v.outcome, Some((_, false))) && !bars.contains(&v.bar.text) {
                bars.push(v.bar.text);
            }
        }
        bars
    };
    if failing.is_empty() {
        return String::new();
    }

    let (intro, sections) = split(TEMPLATE);
    let mut md = fill(intro, rows);
    for bar in failing {
        let _ = writeln!(md, "### {bar}\n");
        match sections.iter().find(|(name, _)| *name == bar) {
            Some((_, body)) => md.push_str(&fill(body, rows)),
            None => md.push_str("No analysis is written for this bar.\n\n"),
        }
    }
    md
}

/// The introduction and the `(bar, body)` sections of a template.
fn split(template: &str) -> (&str, Vec<(&str, &str)>) {
    let mut parts = template.split("\n@@ ");
    let intro = parts.next().unwrap_or_default();
    let sections = parts
        .map(|part| part.split_once('\n').unwrap_or((part, "")))
        .map(|(name, body)| (name.trim(), body.trim_start_matches('\n')))
        .collect();
    (intro, sections)
}

/// Replaces every placeholder in `text` with the run's figure.
fn fill(text: &str, rows: &[Row]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let Some(len) = rest[start..].find("}}") else {
            break;
        };
        out.push_str(&figure(&rest[start + 2..start + len], rows));
        rest = &rest[start + len + 2..];
    }
    out.push_str(rest);
    if !out.ends_with("\n\n") {
        out.push('\n');
    }
    out
}

/// `v:SCENARIO:MODE` or `x:SCENARIO:MODE`, in backquotes; `n/a` when not measured.
fn figure(key: &str, rows: &[Row]) -> String {
    let mut parts = key.splitn(3, ':');
    let (Some(kind), Some(scenario), Some(mode)) = (parts.next(), parts.next(), parts.next())
    else {
        return format!("{{{{{key}}}}}");
    };
    let row = rows.iter().find(|r| r.scenario.name == scenario);
    let mode = Mode::ALL.iter().copied().find(|m| m.label() == mode);
    let (Some(row), Some(mode)) = (row, mode) else {
        return "n/a".into();
    };
    let value = match kind {
        "v" => row
            .summary(mode)
            .map(|s| format_value(row.scenario.metric, s.median)),
        "x" => row.cost_ratio(mode).map(|r| format!("{r:.2}×")),
        _ => None,
    };
    value.map_or("n/a".into(), |v| format!("`{v}`"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_section_names_a_bar_and_every_placeholder_a_mode() {
        let (intro, sections) = split(TEMPLATE);
        assert!(intro.starts_with("## Where the time goes"));
        assert!(!sections.is_empty());
        for (name, body) in &sections {
            assert!(
                results::BARS.iter().any(|b| b.text == *name),
                "section {name:?} is not a bar"
            );
            let mut rest = *body;
            while let Some(start) = rest.find("{{") {
                let len = rest[start..].find("}}").expect("closed placeholder");
                let key = &rest[start + 2..start + len];
                let parts: Vec<&str> = key.split(':').collect();
                assert_eq!(parts.len(), 3, "{key}");
                assert!(["v", "x"].contains(&parts[0]), "{key}");
                assert!(
                    crate::scenarios::ALL.iter().any(|s| s.name == parts[1]),
                    "{key}: no such scenario"
                );
                assert!(
                    Mode::ALL.iter().any(|m| m.label() == parts[2]),
                    "{key}: no such mode"
                );
                rest = &rest[start + len + 2..];
            }
        }
    }

    #[test]
    fn nothing_is_written_when_no_bar_is_judged() {
        assert_eq!(render(&[]), "");
    }
}
