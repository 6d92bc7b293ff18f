//! A checked `connect` that blocks — to a host that never answers — is performed by the
//! supervisor without holding up other threads' calls, stays interruptible by the program's
//! own `SIGALRM`, and a non-blocking socket still gets `EINPROGRESS` at once.
//!
//! The silent host is inside a namespace the test makes (see `SubnetStack`); no packet
//! leaves the machine.

use std::process::Command;
use std::time::Duration;

use rumphijack_tests::policy::{hijack_with_policy, SubnetStack, SILENT_V4};
use rumphijack_tests::{probe, require_root, run, Finished, TempDir};

/// Connects thread B makes while thread A is blocked.
const QUICK_CONNECTS: &str = "200";

/// A stalled supervisor would keep A blocked for the kernel's SYN retry period (about two
/// minutes); fail well before that.
const DEADLINE: Duration = Duration::from_secs(60);

fn probe_args() -> [&'static str; 5] {
    [
        probe!(),
        "blocking-connect",
        SILENT_V4,
        "80",
        QUICK_CONNECTS,
    ]
}

/// Checks the probe's report (see `rh-probe blocking-connect`): B's quick connects all
/// completed while A was still blocked, then SIGALRM interrupted A with EINTR.
fn assert_no_stall_and_interruptible(out: &Finished, what: &str) {
    out.assert_success(what);
    let lines: Vec<&str> = out.stdout.lines().collect();
    let index = |prefix: &str| {
        lines
            .iter()
            .position(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("{what}: no `{prefix}` line\n{out}"))
    };

    assert!(
        lines[index("nonblocking")].starts_with("nonblocking errno=EINPROGRESS"),
        "{what}: a non-blocking connect to a silent host must report EINPROGRESS\n{out}"
    );
    let (b_done, a_returned) = (index("B done"), index("A returned"));
    assert!(
        b_done < a_returned,
        "{what}: thread B's connects must complete while A's connect is blocked\n{out}"
    );
    assert_eq!(
        lines[b_done],
        format!("B done connects={QUICK_CONNECTS} ok={QUICK_CONNECTS} a_returned=0"),
        "{what}: every quick connect must succeed before A's connect returns\n{out}"
    );
    assert_eq!(
        lines[a_returned], "A returned errno=EINTR b_done=1 alarms=1",
        "{what}: SIGALRM (handler without SA_RESTART) must interrupt the blocked connect\n{out}"
    );
}

#[test]
fn blocking_connect_to_a_silent_host_neither_stalls_other_threads_nor_ignores_sigalrm() {
    let test = "blocking_connect_to_a_silent_host";
    if !require_root(test) {
        return;
    }
    let dir = TempDir::new(test);
    let stack = SubnetStack::start(&dir, "stack");

    // Control: natively in the same namespace, the kernel behaves as the assertions say.
    let mut native = Command::new("ip");
    native
        .args(["netns", "exec", stack.netns.name()])
        .args(probe_args());
    assert_no_stall_and_interruptible(&run(native, DEADLINE), "control (native, in the netns)");

    // A rule for connect, so every connect is trapped and performed by the supervisor.
    let policy = dir.write(
        "policy.toml",
        "default = \"allow\"\n\n[[rule]]\ncomment = \"trap connect, allow it\"\n\
         op = \"connect\"\naddr = \"any\"\naction = \"allow\"\n",
    );
    let out = run(
        hijack_with_policy(&stack.url(), &policy, None, probe_args()),
        DEADLINE,
    );
    assert_no_stall_and_interruptible(&out, "under a policy trapping connect");
}
