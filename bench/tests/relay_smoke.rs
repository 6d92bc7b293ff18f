//! A smoke run of the remote-stack scenarios, so that they cannot rot: the harness makes its
//! two namespaces, starts `rump_server tcp://` in one, and both modes must carry a figure.
//! Needs root (`ip netns`); skips loudly without it, and fails instead under CI.

use std::path::Path;
use std::process::{Command, Stdio};

fn skip(reason: &str) {
    let test = "relay_scenarios_run_direct_and_relayed";
    assert!(
        std::env::var_os("CI").is_none(),
        "{test}: missing prerequisite under CI (tests may not skip there): {reason}"
    );
    eprintln!("SKIPPED: {test}: {reason}");
}

#[test]
fn relay_scenarios_run_direct_and_relayed() {
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_bench-load"))
        .parent()
        .unwrap();
    if !bin_dir.join("rumphijack").is_file() || !bin_dir.join("rump_server").is_file() {
        return skip(&format!(
            "rumphijack and rump_server not built in {}",
            bin_dir.display()
        ));
    }
    // SAFETY: geteuid(2) cannot fail and touches no memory.
    if unsafe { libc::geteuid() } != 0 {
        return skip("needs root for ip netns");
    }

    let harness = Command::new(env!("CARGO_BIN_EXE_bench"))
        .args(["--quick", "--runs", "1", "--ms", "20"])
        .args(["--scenario", "relay-bulk", "--scenario", "relay-http"])
        .arg("--bin-dir")
        .arg(bin_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the harness");
    let pid = harness.id();
    let out = harness.wait_with_output().expect("wait for the harness");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");

    for title in [
        "8. remote stack: bulk TCP",
        "8. remote stack: HTTP request rate",
    ] {
        assert!(stdout.contains(title), "no row for {title}:\n{stdout}");
    }
    for mode in ["direct", "relay"] {
        let rows: Vec<&str> = stdout
            .lines()
            .filter(|l| l.split_whitespace().any(|w| w == mode))
            .collect();
        assert_eq!(
            rows.len(),
            2,
            "mode {mode} missing from a scenario:\n{stdout}"
        );
        for row in rows {
            assert!(
                !row.contains("error:") && !row.contains("n/a"),
                "{row}\n{stderr}"
            );
        }
    }

    // The harness deleted its namespaces (named after its pid) before exiting.
    let own = format!("rhbench-{pid}-");
    let left: Vec<String> = std::fs::read_dir("/run/netns")
        .map(|dir| {
            dir.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|name| name.starts_with(&own))
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
}
