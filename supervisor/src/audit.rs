//! The audit trail: one record per policy decision.
//!
//! Each decision is a `tracing` event (debug, or info for rules with `log = true`), a warning
//! on the terminal for denials — at most one per distinct denial every
//! [`REPEAT_WINDOW`], with a count of the ones held back — and, with `--audit FILE`, one JSON
//! object per line in that file, never rate-limited, so a run under an allow-all policy with
//! logging shows everything the program did.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Write};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use policy::{errno_name, Action, Decision, Query};
use tracing::{debug, info, warn};

/// Repeats of one denial within this window are counted, not printed.
pub const REPEAT_WINDOW: Duration = Duration::from_secs(10);

/// Most distinct denials remembered for rate limiting.
const MAX_REMEMBERED: usize = 4096;

/// Where decisions go.
#[derive(Debug)]
pub struct Audit {
    file: Option<Mutex<File>>,
    recent: Mutex<HashMap<String, (Instant, u64)>>,
}

impl Audit {
    /// Opens (appending to) the audit file, if one is given.
    pub fn open(path: Option<&Path>) -> io::Result<Audit> {
        let file = path
            .map(|p| File::options().create(true).append(true).open(p))
            .transpose()?;
        Ok(Audit {
            file: file.map(Mutex::new),
            recent: Mutex::new(HashMap::new()),
        })
    }

    /// Records that `decision` was made for `query` on behalf of thread `tid`.
    pub fn record(&self, tid: i32, query: &Query, decision: &Decision<'_>) {
        let (action, errno) = match decision.action {
            Action::Allow => ("allow", None),
            Action::Deny { errno } => ("deny", Some(errno_name(errno))),
        };
        // The common case, an allowed call that nobody asked to see, formats nothing.
        let wanted = self.file.is_some()
            || errno.is_some()
            || decision.log
            || tracing::enabled!(tracing::Level::DEBUG);
        if !wanted {
            return;
        }
        let rule = decision.describe();
        let what = format!("{} {} {}", query.op, protocol_name(query), query.addr);
        debug!(tid, op = %query.op, addr = %query.addr, action, %rule, "policy decision");

        if let Some(file) = &self.file {
            let line = serde_json::json!({
                "time": unix_time(),
                "pid": tid,
                "program": program_of(tid),
                "op": query.op.to_string(),
                "proto": protocol_name(query),
                "addr": query.addr.ip().to_string(),
                "port": query.addr.port(),
                "action": action,
                "errno": errno,
                "rule": rule,
            });
            let mut f = file.lock().unwrap_or_else(|e| e.into_inner());
            if let Err(e) = writeln!(f, "{line}") {
                warn!(error = %e, "writing the audit file failed");
            }
        }

        match errno {
            Some(errno) => self.warn_denial(tid, &what, errno, &rule),
            None if decision.log => info!(tid, "allowed {what} by {rule}"),
            None => {}
        }
    }

    fn warn_denial(&self, tid: i32, what: &str, errno: &str, rule: &str) {
        let key = format!("{what} {rule}");
        let now = Instant::now();
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        // Forget old entries so a long run with many destinations stays bounded; if all are
        // recent (a scan of many addresses), start afresh rather than prune on every denial.
        if recent.len() > MAX_REMEMBERED {
            recent.retain(|_, (at, _)| now.duration_since(*at) < REPEAT_WINDOW);
            if recent.len() > MAX_REMEMBERED / 2 {
                recent.clear();
            }
        }
        match recent.get_mut(&key) {
            Some((at, held)) if now.duration_since(*at) < REPEAT_WINDOW => *held += 1,
            Some((at, held)) => {
                let repeats = std::mem::take(held);
                *at = now;
                warn!(
                    tid,
                    "denied {what} ({errno}) by {rule}; {repeats} more held back"
                );
            }
            None => {
                recent.insert(key, (now, 0));
                warn!(tid, "denied {what} ({errno}) by {rule}");
            }
        }
    }
}

fn protocol_name(query: &Query) -> &'static str {
    query.protocol.name()
}

fn program_of(tid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{tid}/comm"))
        .map(|s| s.trim_end().to_owned())
        .unwrap_or_default()
}

fn unix_time() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}
