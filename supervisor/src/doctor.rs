//! `rumphijack doctor`: which of the kernel features rumphijack relies on this machine has,
//! found by using each one for real, and what will not work without it.
//!
//! Every feature is tried the way `rumphijack run` uses it, in short-lived child processes
//! ([`notification`], [`probes`]): a real filter with a notification listener, a real trapped `socket()`
//! answered with `SECCOMP_IOCTL_NOTIF_ADDFD`, a real namespace like `--isolated` makes.
//! Reading version numbers would say what the kernel should have, not what this kernel,
//! with its configuration and security modules, lets rumphijack do.

mod notification;
mod probes;

use std::process::ExitCode;

use notification::NotificationProbe;
use probes::Probe;

/// Exit status when something `rumphijack run` needs is missing.
const EXIT_MISSING: u8 = 1;

/// How much rumphijack depends on a feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    /// `rumphijack run`, or its policy enforcement, does not work without it.
    Essential,
    /// Something works less well or one option is unavailable.
    Optional,
}

/// One line of the report.
#[derive(Debug)]
struct Finding {
    /// The feature and the kernel that introduced it.
    feature: &'static str,
    need: Need,
    /// What it gives rumphijack.
    gives: &'static str,
    /// What does not work without it.
    without: &'static str,
    outcome: Probe,
}

impl Finding {
    fn line(&self) -> String {
        match &self.outcome {
            Ok(()) => format!("ok       {}: {}", self.feature, self.gives),
            Err(why) => {
                let optional = match self.need {
                    Need::Essential => "",
                    Need::Optional => " (optional)",
                };
                format!(
                    "missing  {}{optional}: {why}; {}",
                    self.feature, self.without
                )
            }
        }
    }
}

/// Runs every probe, prints the report and returns the exit status.
///
/// Must be called while the process is single-threaded: the probes fork.
pub fn run() -> ExitCode {
    println!("rumphijack doctor: {}", probes::describe_system());

    let findings = findings();
    for finding in &findings {
        println!("{}", finding.line());
    }

    let missing: Vec<&str> = findings
        .iter()
        .filter(|f| f.need == Need::Essential && f.outcome.is_err())
        .map(|f| f.feature)
        .collect();
    if missing.is_empty() {
        println!("rumphijack run can work here.");
        ExitCode::SUCCESS
    } else {
        println!(
            "rumphijack run cannot work here: missing {}.",
            missing.join(", ")
        );
        ExitCode::from(EXIT_MISSING)
    }
}

fn findings() -> Vec<Finding> {
    let n = NotificationProbe::run();
    let mut findings = vec![
        Finding {
            feature: "libseccomp",
            need: Need::Essential,
            gives: "compiles the seccomp filter",
            without: "no filter can be built, so rumphijack run cannot start a program",
            outcome: n.filter,
        },
        Finding {
            feature: "seccomp user notification (Linux 5.0)",
            need: Need::Essential,
            gives: "the program's socket calls are handed to the supervisor",
            without: "rumphijack run cannot start a program",
            outcome: n.notification,
        },
        Finding {
            feature: "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV (Linux 5.19)",
            need: Need::Optional,
            gives: "a signal cannot make the program repeat a call the supervisor served",
            without: "a signal to the program during a trapped call may repeat that call",
            outcome: n.wait_killable,
        },
        Finding {
            feature: "SECCOMP_IOCTL_NOTIF_ADDFD with SECCOMP_ADDFD_FLAG_SEND (Linux 5.14)",
            need: Need::Essential,
            gives: "sockets of the stack are installed in the program",
            without: "no socket can be redirected",
            outcome: n.addfd_send,
        },
        Finding {
            feature: "SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP (Linux 6.6)",
            need: Need::Optional,
            gives: "trapped calls are answered without a cross-CPU wake-up",
            without: "each trapped call costs more when the program and the supervisor run \
                      on different CPUs",
            outcome: n.sync_wakeup,
        },
        Finding {
            feature: "pidfd_open and pidfd_getfd (Linux 5.6)",
            need: Need::Essential,
            gives: "the supervisor takes the filter's listener and the program's sockets",
            without: "rumphijack run cannot take over the filter or enforce a policy",
            outcome: n.pidfd_getfd,
        },
        Finding {
            feature: "PIDFD_THREAD (Linux 6.9)",
            need: Need::Optional,
            gives: "a handle per thread is kept for checked calls",
            without: "a checked call from a thread other than the main one opens a new \
                      process handle each time",
            outcome: n.pidfd_thread,
        },
        Finding {
            feature: "process_vm_readv into the program",
            need: Need::Essential,
            gives: "addresses of checked calls are copied out of the program",
            without: "policies with connect, bind, accept or send rules cannot be enforced",
            outcome: n.read_memory,
        },
        Finding {
            feature: "close_range with CLOSE_RANGE_CLOEXEC (Linux 5.11)",
            need: Need::Optional,
            gives: "--close-fds drops inherited descriptors",
            without: "rumphijack run --close-fds fails",
            outcome: probes::close_range(),
        },
    ];
    findings.extend(namespace_findings());
    findings
}

/// `--isolated` needs a network namespace: as root a plain one, otherwise inside a user
/// namespace. As root both are tried, the second as the unprivileged user `nobody`.
fn namespace_findings() -> Vec<Finding> {
    let isolated_here = Finding {
        feature: "network namespaces",
        need: Need::Optional,
        gives: "--isolated creates a fresh stack",
        without: "rump_server --isolated and rumphijack run --isolated fail",
        outcome: probes::isolated_stack(false),
    };
    if !nix::unistd::geteuid().is_root() {
        return vec![Finding {
            feature: "unprivileged user namespaces",
            ..isolated_here
        }];
    }
    vec![
        isolated_here,
        Finding {
            feature: "unprivileged user namespaces",
            need: Need::Optional,
            gives: "users other than root can use --isolated",
            without: "only root can use --isolated",
            outcome: probes::isolated_stack(true),
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(need: Need, outcome: Probe) -> Finding {
        Finding {
            feature: "a feature (Linux 9.9)",
            need,
            gives: "something good",
            without: "something fails",
            outcome,
        }
    }

    #[test]
    fn a_line_says_ok_or_missing_with_the_reason_and_the_consequence() {
        let ok = finding(Need::Essential, Ok(())).line();
        assert_eq!(ok, "ok       a feature (Linux 9.9): something good");
        let missing = finding(Need::Essential, Err("EPERM".into())).line();
        assert_eq!(
            missing,
            "missing  a feature (Linux 9.9): EPERM; something fails"
        );
        let optional = finding(Need::Optional, Err("EINVAL".into())).line();
        assert!(
            optional.contains("(Linux 9.9) (optional): EINVAL;"),
            "{optional}"
        );
    }
}
