//! `bench`: runs each scenario natively, under every rumphijack mode and under peers, in one
//! invocation with the modes alternating run by run (A B C A B C …) so that drift of the
//! machine affects all of them alike; prints a table and optionally writes BENCHMARKS.md and
//! an SVG chart of the ratios.

mod launch;
mod measure;
mod modes;
mod relay;
mod report;
mod results;
mod scenarios;
mod setup;
mod stats;
mod sys;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;

use crate::measure::Plan;
use crate::results::{Cell, Row};
use crate::scenarios::{Scenario, Workload};
use crate::setup::{Bench, Tools};

#[derive(Debug, Parser)]
#[command(
    name = "bench",
    about = "Benchmark rumphijack against native runs and peers"
)]
struct Args {
    /// Smoke run: 2 runs of 50 ms each (unless --runs says otherwise), 5 launches for
    /// start-up.
    #[arg(long)]
    quick: bool,
    /// Runs per mode and scenario (default 7, or 2 with --quick).
    #[arg(long)]
    runs: Option<usize>,
    /// Timed milliseconds per run (default 400, or 50 with --quick; bulk TCP runs twice as
    /// long).
    #[arg(long)]
    ms: Option<u64>,
    /// Scenario to run, by name or number (repeatable; default: all): socket-close, getppid,
    /// connect, connect-rule, tcp-bulk, http, udp, udp-rule, startup, relay-bulk, relay-http.
    #[arg(long = "scenario", value_name = "NAME")]
    scenarios: Vec<String>,
    /// Where rumphijack, rump_server, bench-load and librumphijack.so are (default: the
    /// directory of this executable, e.g. target/release).
    #[arg(long, value_name = "DIR")]
    bin_dir: Option<PathBuf>,
    /// Skip the extra run per supervised mode that counts served calls with --stats.
    #[arg(long)]
    no_counters: bool,
    /// Write the report as Markdown to FILE (BENCHMARKS.md).
    #[arg(long, value_name = "FILE")]
    markdown: Option<PathBuf>,
    /// Write a bar chart of the ratios to FILE (SVG).
    #[arg(long, value_name = "FILE")]
    svg: Option<PathBuf>,
}

/// Everything the report needs to describe how the figures were made.
#[derive(Debug)]
pub struct RunInfo {
    pub runs: usize,
    pub plan: Plan,
    pub quick: bool,
    pub elapsed: Duration,
    pub bin_dir: PathBuf,
    pub svg: Option<PathBuf>,
}

fn main() {
    if let Err(e) = run(Args::parse()) {
        eprintln!("bench: {e:#}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<()> {
    let selected = scenarios::select(&args.scenarios).map_err(anyhow::Error::msg)?;
    let runs = args.runs.unwrap_or(if args.quick { 2 } else { 7 }).max(1);
    let ms = args.ms.unwrap_or(if args.quick { 50 } else { 400 });
    let plan = Plan {
        duration: Duration::from_millis(ms),
        launches: if args.quick { 5 } else { 40 },
    };

    let bench = Bench::new(Tools::find(args.bin_dir.as_deref())?)?;
    if let Some(e) = &bench.server_error {
        eprintln!("bench: external server unavailable ({e}); its modes are skipped");
    }

    let started = Instant::now();
    let mut rows = Vec::new();
    for scenario in selected {
        let row = measure_scenario(&bench, scenario, &plan, runs, !args.no_counters);
        eprintln!("{}", report::table::render(std::slice::from_ref(&row)));
        rows.push(row);
    }
    let info = RunInfo {
        runs,
        plan,
        quick: args.quick,
        elapsed: started.elapsed(),
        bin_dir: bench.tools.bin_dir.clone(),
        svg: args.svg.clone(),
    };

    println!("{}", report::table::render(&rows));
    println!("{}", report::table::render_bars(&rows));
    if let Some(path) = &args.svg {
        std::fs::write(path, report::svg::render(&rows))
            .with_context(|| format!("write {}", path.display()))?;
    }
    if let Some(path) = &args.markdown {
        std::fs::write(path, report::markdown::render(&rows, &info, &bench))
            .with_context(|| format!("write {}", path.display()))?;
    }
    Ok(())
}

/// All runs of one scenario, modes alternating within each round.
fn measure_scenario(
    bench: &Bench,
    scenario: &'static Scenario,
    plan: &Plan,
    runs: usize,
    counters: bool,
) -> Row {
    let mut cells: Vec<Cell> = scenario
        .modes
        .iter()
        .map(|&mode| Cell {
            mode,
            samples: Vec::new(),
            status: mode.unavailable(bench),
            served: None,
        })
        .collect();

    for round in 0..runs {
        eprint!("bench: {} run {}/{runs}:", scenario.name, round + 1);
        for cell in cells.iter_mut().filter(|c| c.status.is_none()) {
            eprint!(" {}", cell.mode.label());
            match measure::once(bench, scenario, cell.mode, plan, None) {
                Ok(sample) => cell.samples.push(sample.value),
                Err(e) => {
                    eprint!(" (failed: {e:#})");
                    cell.status = Some(format!("error: {e:#}"));
                }
            }
        }
        eprintln!();
    }

    // One more run per supervised mode, counting what the supervisor served.
    let counted = counters && !matches!(scenario.workload, Workload::Startup);
    for cell in cells.iter_mut().filter(|c| counted && c.status.is_none()) {
        if cell.mode.has_supervisor() {
            cell.served = count_served(bench, scenario, cell.mode, plan);
        }
    }
    Row { scenario, cells }
}

/// Runs once with `--stats` and returns served calls per operation and the non-zero
/// counters.
fn count_served(
    bench: &Bench,
    scenario: &Scenario,
    mode: modes::Mode,
    plan: &Plan,
) -> Option<(f64, String)> {
    let path = bench
        .workdir
        .join(format!("stats-{}-{}.json", scenario.name, mode.label()));
    let sample = measure::once(bench, scenario, mode, plan, Some(&path)).ok()?;
    let text = std::fs::read_to_string(&path).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    let map = json.as_object()?;
    let total = map.get("total")?.as_u64()?;
    let detail: Vec<String> = map
        .iter()
        .filter(|(k, v)| *k != "total" && v.as_u64().is_some_and(|n| n > 0))
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    let per_op = total as f64 / sample.ops as f64;
    Some((per_op, format!("{} ops: {}", sample.ops, detail.join(", "))))
}
