//! A horizontal bar chart of the cost ratios (log scale), with the quality bars drawn as
//! dashed lines across the modes they apply to. Written by hand: it is a few rectangles.

use std::fmt::Write;

use crate::modes::Mode;
use crate::results::{Row, BARS};

const LABEL_W: f64 = 300.0;
const PLOT_W: f64 = 520.0;
const BAR_H: f64 = 14.0;
const GROUP_GAP: f64 = 26.0;
const TOP: f64 = 50.0;
const LO: f64 = 0.5;

fn colour(mode: Mode) -> &'static str {
    match mode {
        Mode::Native => "#9e9e9e",
        Mode::NativeInStack => "#c7c7c7",
        Mode::Supervisor => "#1f77b4",
        Mode::SupervisorExt => "#17becf",
        Mode::Preload => "#2ca02c",
        Mode::Hybrid => "#9467bd",
        Mode::Strace => "#d62728",
        Mode::SeccompFloor => "#7f7f7f",
        Mode::Slirp4netns => "#ff7f0e",
        Mode::Pasta => "#8c564b",
        Mode::Direct => "#9e9e9e",
        Mode::Relay => "#e377c2",
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

pub fn render(rows: &[Row]) -> String {
    // The axis runs from 0.5× to the next power of ten above the worst ratio.
    let worst = rows
        .iter()
        .flat_map(|r| r.cells.iter().filter_map(|c| r.cost_ratio(c.mode)))
        .fold(2.0f64, f64::max);
    let hi = 10f64.powf(worst.log10().ceil()).max(10.0);
    let x = |v: f64| LABEL_W + PLOT_W * (v.max(LO).ln() - LO.ln()) / (hi.ln() - LO.ln());

    let height: f64 = TOP
        + rows
            .iter()
            .map(|r| r.cells.len() as f64 * BAR_H + GROUP_GAP)
            .sum::<f64>()
        + 20.0;
    let width = LABEL_W + PLOT_W + 90.0;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
         font-family=\"sans-serif\" font-size=\"11\">\n<rect width=\"100%\" height=\"100%\" \
         fill=\"white\"/>\n<text x=\"10\" y=\"18\" font-size=\"14\">rumphijack: cost relative \
         to native (log scale, higher is worse; for rates native/mode)</text>\n<text x=\"10\" \
         y=\"34\" fill=\"#c00\">dashed red: the quality bar for the modes it spans</text>"
    );

    // Grid lines and their labels.
    let mut tick = LO;
    while tick <= hi * 1.001 {
        let tx = x(tick);
        let _ = writeln!(
            svg,
            "<line x1=\"{tx:.1}\" y1=\"{TOP}\" x2=\"{tx:.1}\" y2=\"{:.1}\" stroke=\"{}\"/>\
             <text x=\"{tx:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{tick}×</text>",
            height - 20.0,
            if tick == 1.0 { "#444" } else { "#ddd" },
            height - 6.0
        );
        let mantissa = tick / 10f64.powf(tick.log10().floor());
        tick *= if (mantissa - 2.0).abs() < 1e-9 {
            2.5
        } else {
            2.0
        };
    }

    let mut y = TOP;
    for row in rows {
        let s = row.scenario;
        let top = y;
        for cell in &row.cells {
            let label = format!("{}. {} — {}", s.number, s.title, cell.mode.label());
            let _ = writeln!(
                svg,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
                LABEL_W - 6.0,
                y + BAR_H - 3.0,
                escape(&label)
            );
            match row.cost_ratio(cell.mode) {
                Some(r) => {
                    let (x0, x1) = (x(LO), x(r));
                    let _ = writeln!(
                        svg,
                        "<rect x=\"{x0:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" \
                         fill=\"{}\"/><text x=\"{:.1}\" y=\"{:.1}\">{r:.2}×</text>",
                        y + 1.0,
                        (x1 - x0).max(1.0),
                        BAR_H - 2.0,
                        colour(cell.mode),
                        x1 + 4.0,
                        y + BAR_H - 3.0
                    );
                }
                None => {
                    let status = cell.status.as_deref().unwrap_or("no figure");
                    let short: String = status.chars().take(60).collect();
                    let _ = writeln!(
                        svg,
                        "<text x=\"{:.1}\" y=\"{:.1}\" fill=\"#888\">{}</text>",
                        x(LO) + 4.0,
                        y + BAR_H - 3.0,
                        escape(&short)
                    );
                }
            }
            y += BAR_H;
        }

        // The bars that apply here, as a dashed line spanning their modes' rows.
        for bar in BARS.iter().filter(|b| b.scenario == s.name) {
            let spans: Vec<usize> = row
                .cells
                .iter()
                .enumerate()
                .filter(|(_, c)| bar.modes.contains(&c.mode))
                .map(|(i, _)| i)
                .collect();
            let (Some(first), Some(last)) = (spans.first(), spans.last()) else {
                continue;
            };
            let lx = x(bar.cost_limit());
            let _ = writeln!(
                svg,
                "<line x1=\"{lx:.1}\" y1=\"{:.1}\" x2=\"{lx:.1}\" y2=\"{:.1}\" stroke=\"#c00\" \
                 stroke-width=\"2\" stroke-dasharray=\"4,3\"/><text x=\"{:.1}\" y=\"{:.1}\" \
                 fill=\"#c00\">bar {}</text>",
                top + *first as f64 * BAR_H,
                top + (*last + 1) as f64 * BAR_H,
                lx + 3.0,
                top + *first as f64 * BAR_H - 2.0,
                escape(&bar.limit_text())
            );
        }
        y += GROUP_GAP;
    }
    svg.push_str("</svg>\n");
    svg
}
