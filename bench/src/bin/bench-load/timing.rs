//! The timed loop every client shares, and the result line it prints.

use std::io;
use std::time::{Duration, Instant};

use crate::Options;

/// How long the untimed warm-up runs at most (first connections, page faults, lazy binding).
const WARM_UP: Duration = Duration::from_millis(30);
/// Warm-up operations at most.
const WARM_UP_OPS: u64 = 200;

/// Runs `op` for the configured time, reading the clock once every `batch` operations so
/// that a very cheap operation is not dominated by `clock_gettime`, and prints the result.
/// `op` returns the payload bytes it moved (0 when bytes mean nothing for it).
pub fn run<F>(opts: &Options, batch: u64, mut op: F) -> io::Result<()>
where
    F: FnMut() -> io::Result<u64>,
{
    // Warm-up: same calls, not counted.
    let start = Instant::now();
    let mut n = 0;
    while n < WARM_UP_OPS.min(opts.max_ops) && start.elapsed() < WARM_UP {
        op()?;
        n += 1;
    }

    let start = Instant::now();
    let (mut ops, mut bytes) = (0u64, 0u64);
    loop {
        for _ in 0..batch {
            bytes += op()?;
        }
        ops += batch;
        if ops >= opts.max_ops || start.elapsed() >= opts.duration {
            break;
        }
    }
    report(ops, start.elapsed(), bytes, n);
    Ok(())
}

/// Prints the one machine-readable line the harness looks for: the timed operations, their
/// time, the payload bytes they moved, and the untimed warm-up operations before them.
pub fn report(ops: u64, elapsed: Duration, bytes: u64, warmup: u64) {
    let ns = elapsed.as_nanos();
    println!("RESULT ops={ops} elapsed_ns={ns} bytes={bytes} warmup={warmup}");
}
