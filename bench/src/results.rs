//! What a benchmark run found, per scenario and mode, and the quality bars judged on it.

use crate::modes::Mode;
use crate::scenarios::{Metric, Scenario};
use crate::stats::Summary;

/// One mode's runs of one scenario.
#[derive(Debug)]
pub struct Cell {
    pub mode: Mode,
    pub samples: Vec<f64>,
    /// Why there are no figures: `n/a: …` or `error: …`.
    pub status: Option<String>,
    /// Calls the supervisor served per operation of the workload, and the non-zero counters
    /// (from one extra run with `--stats`).
    pub served: Option<(f64, String)>,
}

/// One scenario's cells, native first.
#[derive(Debug)]
pub struct Row {
    pub scenario: &'static Scenario,
    pub cells: Vec<Cell>,
}

impl Row {
    pub fn cell(&self, mode: Mode) -> Option<&Cell> {
        self.cells.iter().find(|c| c.mode == mode)
    }

    pub fn summary(&self, mode: Mode) -> Option<Summary> {
        Summary::of(&self.cell(mode)?.samples)
    }

    /// Cost relative to the scenario's reference (native, or direct for the relay
    /// scenarios), higher is worse (see `Metric::cost_ratio`).
    pub fn cost_ratio(&self, mode: Mode) -> Option<f64> {
        let native = self.summary(self.scenario.reference())?.median;
        let value = self.summary(mode)?.median;
        Some(self.scenario.metric.cost_ratio(value, native))
    }
}

/// Which way a bar is stated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    /// Time ratio mode/native at most the limit.
    TimeAtMost,
    /// Rate ratio mode/native at least the limit.
    RateAtLeast,
}

/// A quality bar from the product brief, section 7.
#[derive(Debug)]
pub struct Bar {
    pub text: &'static str,
    pub scenario: &'static str,
    pub modes: &'static [Mode],
    pub bound: Bound,
    pub limit: f64,
}

impl Bar {
    /// The limit as a cost ratio (higher is worse), for drawing next to cost ratios.
    pub fn cost_limit(&self) -> f64 {
        match self.bound {
            Bound::TimeAtMost => self.limit,
            Bound::RateAtLeast => 1.0 / self.limit,
        }
    }

    /// The measured figure in the bar's own terms, from a cost ratio.
    pub fn figure(&self, cost_ratio: f64) -> f64 {
        match self.bound {
            Bound::TimeAtMost => cost_ratio,
            Bound::RateAtLeast => 1.0 / cost_ratio,
        }
    }

    pub fn passes(&self, cost_ratio: f64) -> bool {
        cost_ratio <= self.cost_limit()
    }

    pub fn limit_text(&self) -> String {
        match self.bound {
            Bound::TimeAtMost => format!("≤ {}×", self.limit),
            Bound::RateAtLeast => format!("≥ {}×", self.limit),
        }
    }
}

use Mode::*;

/// The bars, in the brief's order.
pub const BARS: &[Bar] = &[
    Bar {
        text: "bulk TCP throughput through a redirected socket",
        scenario: "tcp-bulk",
        modes: &[Supervisor, SupervisorExt, Preload, Hybrid],
        bound: Bound::RateAtLeast,
        limit: 0.97,
    },
    Bar {
        text: "a system call the filter does not trap",
        scenario: "getppid",
        modes: &[Supervisor, SupervisorExt, Hybrid],
        bound: Bound::TimeAtMost,
        limit: 1.10,
    },
    Bar {
        text: "socket()+close() under the supervisor",
        scenario: "socket-close",
        modes: &[Supervisor, SupervisorExt],
        bound: Bound::TimeAtMost,
        limit: 2.0,
    },
    Bar {
        text: "socket()+close() in hybrid mode",
        scenario: "socket-close",
        modes: &[Hybrid],
        bound: Bound::TimeAtMost,
        limit: 1.2,
    },
    Bar {
        text: "connect() to a local listener with a connect rule",
        scenario: "connect-rule",
        modes: &[Supervisor, SupervisorExt, Preload, Hybrid],
        bound: Bound::TimeAtMost,
        limit: 3.0,
    },
    Bar {
        text: "new-connection HTTP request rate",
        scenario: "http",
        modes: &[Supervisor, SupervisorExt, Preload, Hybrid],
        bound: Bound::RateAtLeast,
        limit: 0.7,
    },
];

/// A bar's verdict for one mode.
#[derive(Debug)]
pub struct Verdict {
    pub bar: &'static Bar,
    pub mode: Mode,
    /// The figure in the bar's terms and whether it passes; `None` when not measured.
    pub outcome: Option<(f64, bool)>,
    pub note: String,
}

/// Judges every bar whose scenario was run.
pub fn verdicts(rows: &[Row]) -> Vec<Verdict> {
    let mut out = Vec::new();
    for bar in BARS {
        let Some(row) = rows.iter().find(|r| r.scenario.name == bar.scenario) else {
            continue;
        };
        for &mode in bar.modes {
            let ratio = row.cost_ratio(mode);
            let note = match (ratio, row.cell(mode).and_then(|c| c.status.clone())) {
                (Some(_), _) => String::new(),
                (None, Some(status)) => status,
                (None, None) => "not measured".into(),
            };
            out.push(Verdict {
                bar,
                mode,
                outcome: ratio.map(|r| (bar.figure(r), bar.passes(r))),
                note,
            });
        }
    }
    out
}

/// A value in the scenario's unit, for people.
pub fn format_value(metric: Metric, value: f64) -> String {
    match metric {
        Metric::NsPerOp if value < 1e3 => format!("{value:.0} ns"),
        Metric::NsPerOp if value < 1e6 => format!("{:.2} µs", value / 1e3),
        Metric::NsPerOp => format!("{:.2} ms", value / 1e6),
        Metric::OpsPerSec if value < 1e3 => format!("{value:.0} /s"),
        Metric::OpsPerSec if value < 1e6 => format!("{:.1} k/s", value / 1e3),
        Metric::OpsPerSec => format!("{:.2} M/s", value / 1e6),
        Metric::BytesPerSec => format!("{:.2} Gbit/s", value * 8.0 / 1e9),
    }
}

/// What a scenario's unit is called in a table header.
pub fn unit_note(metric: Metric) -> &'static str {
    match metric {
        Metric::NsPerOp => "time per operation",
        Metric::OpsPerSec => "operations per second",
        Metric::BytesPerSec => "payload throughput",
    }
}
