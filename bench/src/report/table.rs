//! Plain-text tables for the terminal (also embedded in BENCHMARKS.md as Markdown tables).

use crate::modes::Mode;
use crate::results::{self, format_value, Row};

/// One line per scenario and mode: median, spread, cost relative to native, served calls.
pub fn render(rows: &[Row]) -> String {
    let mut lines = vec![format!(
        "{:<34} {:<15} {:>13} {:>27} {:>9} {:>9}",
        "scenario", "mode", "median", "min – max", "× native", "served/op"
    )];
    for row in rows {
        let s = row.scenario;
        let title = format!("{}. {}", s.number, s.title);
        for (i, cell) in row.cells.iter().enumerate() {
            let name = if i == 0 { title.as_str() } else { "" };
            let (median, spread, ratio) = match row.summary(cell.mode) {
                Some(sum) => (
                    format_value(s.metric, sum.median),
                    format!(
                        "{} – {}",
                        format_value(s.metric, sum.min),
                        format_value(s.metric, sum.max)
                    ),
                    row.cost_ratio(cell.mode)
                        .map_or("-".into(), |r| format!("{r:.2}")),
                ),
                None => (
                    cell.status.clone().unwrap_or_default(),
                    String::new(),
                    String::new(),
                ),
            };
            let served = cell
                .served
                .as_ref()
                .map_or(String::new(), |(n, _)| format!("{n:.2}"));
            lines.push(format!(
                "{name:<34} {:<15} {median:>13} {spread:>27} {ratio:>9} {served:>9}",
                cell.mode.label()
            ));
        }
    }
    lines.push(
        "× native: cost relative to native, higher is worse (time ratio; for rates native/mode)"
            .into(),
    );
    lines.join("\n")
}

/// The bars with PASS/FAIL.
pub fn render_bars(rows: &[Row]) -> String {
    let mut lines = vec!["quality bars (ratio to native in the bar's own terms):".to_string()];
    for v in results::verdicts(rows) {
        let outcome = match v.outcome {
            Some((figure, pass)) => {
                format!("{figure:.2}× {}", if pass { "PASS" } else { "FAIL" })
            }
            None => v.note.clone(),
        };
        lines.push(format!(
            "  {:<52} {:<8} {:<15} {outcome}",
            v.bar.text,
            v.bar.limit_text(),
            v.mode.label()
        ));
    }
    lines.join("\n")
}

/// Marks a mode name for Markdown.
pub fn mode_md(mode: Mode) -> String {
    format!("`{}`", mode.label())
}
