//! `rumphijack doctor` on this machine: every feature line says ok or missing as the running
//! kernel's version predicts, and under a supervisor (whose filter refuses a second
//! notification listener and new network namespaces) the doctor says what is missing.

use rumphijack_tests::{require_root, rumphijack, rumphijack_cmd, run, Finished, TIMEOUT};

/// The running kernel's major and minor version, from `/proc/sys/kernel/osrelease`.
fn kernel_version() -> (u32, u32) {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("osrelease");
    let mut parts = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse().expect("a number"));
    (parts.next().expect("major"), parts.next().expect("minor"))
}

/// The report line of `feature`, which must be there exactly once.
fn line_of<'a>(out: &'a Finished, feature: &str) -> &'a str {
    let lines: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.get(9..).is_some_and(|rest| rest.starts_with(feature)))
        .collect();
    assert_eq!(lines.len(), 1, "one line for {feature:?}\n{out}");
    lines[0]
}

/// Features named with the kernel that introduced them; on this kernel each is there.
const VERSIONED: [(&str, (u32, u32)); 7] = [
    ("seccomp user notification (Linux 5.0)", (5, 0)),
    (
        "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV (Linux 5.19)",
        (5, 19),
    ),
    (
        "SECCOMP_IOCTL_NOTIF_ADDFD with SECCOMP_ADDFD_FLAG_SEND (Linux 5.14)",
        (5, 14),
    ),
    ("SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP (Linux 6.6)", (6, 6)),
    ("pidfd_open and pidfd_getfd (Linux 5.6)", (5, 6)),
    ("PIDFD_THREAD (Linux 6.9)", (6, 9)),
    ("close_range with CLOSE_RANGE_CLOEXEC (Linux 5.11)", (5, 11)),
];

#[test]
fn doctor_reports_each_feature_as_this_kernel_has_it() {
    let test = "doctor_reports_each_feature_as_this_kernel_has_it";
    if !require_root(test) {
        return;
    }
    let mut cmd = rumphijack_cmd();
    cmd.arg("doctor");
    let out = run(cmd, TIMEOUT);
    out.assert_success("rumphijack doctor on a kernel with everything rumphijack run needs");

    let kernel = kernel_version();
    let header = out.stdout.lines().next().unwrap_or_default();
    assert!(
        header.starts_with(&format!(
            "rumphijack doctor: Linux {}.{}",
            kernel.0, kernel.1
        )),
        "the first line names the kernel\n{out}"
    );
    for (feature, since) in VERSIONED {
        let line = line_of(&out, feature);
        let status = if kernel >= since { "ok  " } else { "missing  " };
        assert!(line.starts_with(status), "{feature} on {kernel:?}\n{out}");
    }
    for feature in [
        "libseccomp",
        "process_vm_readv into the program",
        "network namespaces",
    ] {
        assert!(
            line_of(&out, feature).starts_with("ok  "),
            "{feature}\n{out}"
        );
    }
    // Unprivileged user namespaces depend on the machine's settings, not on the kernel alone;
    // when missing, the line says so as an optional feature.
    let userns = line_of(&out, "unprivileged user namespaces");
    assert!(
        userns.starts_with("ok  ") || userns.contains("(optional)"),
        "{out}"
    );
    assert_eq!(
        out.stdout.lines().last(),
        Some("rumphijack run can work here."),
        "{out}"
    );
}

#[test]
fn doctor_under_a_supervisor_says_what_is_missing_and_fails() {
    let test = "doctor_under_a_supervisor_says_what_is_missing_and_fails";
    if !require_root(test) {
        return;
    }
    let mut cmd = rumphijack_cmd();
    cmd.args(["run", "--"]).arg(rumphijack()).arg("doctor");
    let out = run(cmd, TIMEOUT);
    assert_eq!(
        out.code(),
        1,
        "doctor must fail when user notification is refused\n{out}"
    );

    let notification = line_of(&out, "seccomp user notification");
    assert!(
        notification.starts_with("missing  ")
            && notification.contains("seccomp(SECCOMP_FILTER_FLAG_NEW_LISTENER): EPERM")
            && notification.ends_with("rumphijack run cannot start a program"),
        "{out}"
    );
    let addfd = line_of(&out, "SECCOMP_IOCTL_NOTIF_ADDFD");
    assert!(
        addfd.contains("not tried, since seccomp user notification is missing"),
        "{out}"
    );
    // The supervisor keeps its program in its network namespace.
    let netns = line_of(&out, "network namespaces");
    assert!(
        netns.starts_with("missing  network namespaces (optional): unshare(CLONE_NEWNET): EPERM"),
        "{out}"
    );
    let last = out.stdout.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("rumphijack run cannot work here: missing seccomp user notification"),
        "{out}"
    );
}
