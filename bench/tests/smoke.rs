//! A smoke run of the harness, so that it cannot rot: tiny iteration counts, two scenarios,
//! the binaries of the current profile. The figures are not checked, only that every row is
//! there and the native and supervisor rows carry a figure rather than an error.

use std::path::Path;
use std::process::Command;

#[test]
fn quick_run_prints_a_row_per_mode_with_figures() {
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_bench-load"))
        .parent()
        .unwrap();
    if !bin_dir.join("rumphijack").is_file() || !bin_dir.join("rump_server").is_file() {
        let reason = format!(
            "rumphijack and rump_server not built in {}",
            bin_dir.display()
        );
        assert!(
            std::env::var_os("CI").is_none(),
            "smoke run under CI: {reason}"
        );
        eprintln!("SKIPPED: quick_run_prints_a_row_per_mode_with_figures: {reason}");
        return;
    }

    let out = Command::new(env!("CARGO_BIN_EXE_bench"))
        .args(["--quick", "--runs", "1", "--ms", "20", "--no-counters"])
        .args(["--scenario", "socket-close", "--scenario", "getppid"])
        .arg("--bin-dir")
        .arg(bin_dir)
        .output()
        .expect("run the harness");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    for title in ["1. socket()+close()", "2. untrapped syscall (getppid)"] {
        assert!(stdout.contains(title), "no row for {title}:\n{stdout}");
    }
    for mode in [
        "native",
        "supervisor",
        "supervisor-ext",
        "preload",
        "hybrid",
        "strace",
        "seccomp-floor",
    ] {
        let rows = stdout
            .lines()
            .filter(|l| l.split_whitespace().any(|w| w == mode));
        assert!(
            rows.count() >= 2,
            "mode {mode} missing from a scenario:\n{stdout}"
        );
    }
    for line in stdout.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if ["native", "supervisor-ext", "seccomp-floor"]
            .iter()
            .any(|m| words.contains(m))
        {
            assert!(!line.contains("error:"), "{line}");
        }
    }
    assert!(stdout.contains("quality bars"), "{stdout}");
}
