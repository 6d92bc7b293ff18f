//! Bad input gives one clear `rumphijack: ...` line and the documented exit status.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use rumphijack_tests::{
    hijack, require_program, require_root, rumphijack, rumphijack_cmd, run, Finished, Server,
    TempDir, TIMEOUT,
};

const EX_USAGE: i32 = 64;
const EX_UNAVAILABLE: i32 = 69;
const EX_CONFIG: i32 = 78;
const NOT_EXECUTABLE: i32 = 126;
const NOT_FOUND: i32 = 127;

/// The unprivileged uid used to play "another user".
const NOBODY: &str = "65534";

/// Asserts the status and that stderr is a `rumphijack: ` error mentioning `fragment`.
fn assert_error(out: &Finished, code: i32, fragment: &str, why: &str) {
    out.assert_code(code, why);
    assert!(
        out.stderr.lines().any(|l| l.starts_with("rumphijack: ")),
        "{why}: stderr must carry a `rumphijack: <error>` line\n{out}"
    );
    assert!(
        out.stderr.to_lowercase().contains(&fragment.to_lowercase()),
        "{why}: message must mention {fragment:?}\n{out}"
    );
}

#[test]
fn bad_rump_server_urls_are_configuration_errors() {
    let dir = TempDir::new("bad_rump_server_urls_are_configuration_errors");
    // A tcp:// URL without a secret, or with a host name, is refused before any connection
    // attempt; loopback keeps this test harmless even if it were not.
    for (url, fragment) in [
        ("tcp://127.0.0.1:9", "RUMPHIJACK_SECRET_FILE"),
        ("tcp://localhost:9", "tcp://IPV4:PORT"),
        ("http://x", "http"),
        ("unix://", "unix://"),
    ] {
        let out = run(hijack(url, ["true"]), TIMEOUT);
        assert_error(&out, EX_CONFIG, fragment, &format!("--server {url}"));

        let mut cmd = rumphijack_cmd();
        cmd.env("RUMP_SERVER", url)
            .args(["run", "--", "true"])
            .current_dir(dir.path());
        let out = run(cmd, TIMEOUT);
        assert_error(&out, EX_CONFIG, fragment, &format!("RUMP_SERVER={url}"));
    }
}

#[test]
fn bad_rumphijack_and_retryconnect_values_are_configuration_errors() {
    let dir = TempDir::new("bad_rumphijack_and_retryconnect_values");
    let a = Server::isolated(dir.path(), "a");
    let with_env = |var: &str, value: &str| {
        let mut cmd = hijack(&a.url(), ["true"]);
        cmd.env(var, value);
        run(cmd, TIMEOUT)
    };

    // Control: valid values of both variables start the program.
    with_env("RUMPHIJACK", "socket=inet:inet6").assert_success("RUMPHIJACK=socket=inet:inet6");
    for good in ["once", "inftime", "die", "5"] {
        with_env("RUMPHIJACK_RETRYCONNECT", good).assert_success(&format!("RETRYCONNECT={good}"));
    }

    for (value, fragment) in [("socket=bogus", "bogus"), ("path=/x", "path")] {
        let out = with_env("RUMPHIJACK", value);
        assert_error(&out, EX_CONFIG, fragment, &format!("RUMPHIJACK={value}"));
    }
    for value in ["0", "soon"] {
        let out = with_env("RUMPHIJACK_RETRYCONNECT", value);
        let why = format!("RUMPHIJACK_RETRYCONNECT={value}");
        assert_error(&out, EX_CONFIG, "RUMPHIJACK_RETRYCONNECT", &why);
    }
}

#[test]
fn unknown_option_is_a_usage_error() {
    let mut bad_option = rumphijack_cmd();
    bad_option.args(["run", "--no-such-option", "--", "true"]);
    let out = run(bad_option, TIMEOUT);
    assert_error(&out, EX_USAGE, "--no-such-option", "unknown option");
}

#[test]
fn programs_that_cannot_run_are_127_and_126() {
    let dir = TempDir::new("programs_that_cannot_run_are_127_and_126");
    let a = Server::isolated(dir.path(), "a");

    for missing in ["rh-no-such-program", "/nonexistent/rh-program"] {
        let out = run(hijack(&a.url(), [missing]), TIMEOUT);
        assert_error(&out, NOT_FOUND, missing, "missing program");
    }

    let script = dir.write("not-executable.sh", "#!/bin/sh\nexit 0\n");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = run(hijack(&a.url(), [&script]), TIMEOUT);
    assert_error(
        &out,
        NOT_EXECUTABLE,
        "not-executable.sh",
        "file without execute permission",
    );
}

#[test]
fn no_server_at_the_path_is_unavailable() {
    let dir = TempDir::new("no_server_at_the_path_is_unavailable");
    let url = format!("unix://{}", dir.join("nobody-here.sock").display());
    let out = run(hijack(&url, ["true"]), TIMEOUT);
    assert_error(
        &out,
        EX_UNAVAILABLE,
        "nobody-here.sock",
        "no socket at the path",
    );
}

/// `setpriv --reuid 65534 --regid 65534 --clear-groups rumphijack run --server URL -- true`.
fn as_nobody(url: &str) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid", NOBODY, "--regid", NOBODY, "--clear-groups"])
        .arg(rumphijack())
        .args(["run", "--server", url, "--", "true"]);
    for var in [
        "RUMP_SERVER",
        "RUMPHIJACK",
        "RUMPHIJACK_RETRYCONNECT",
        "RUST_LOG",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

fn chmod(path: &std::path::Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", path.display()));
}

#[test]
fn server_socket_of_another_uid_is_refused() {
    let test = "server_socket_of_another_uid_is_refused";
    if !require_root(test) || !require_program(test, "setpriv") {
        return;
    }
    let dir = TempDir::new(test);
    let a = Server::isolated(dir.path(), "a");
    let mode = std::fs::metadata(a.socket_path())
        .expect("socket file")
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o777,
        0o600,
        "rump_server must create its socket owner-only"
    );

    // Control: root (the owner) gets in.
    run(hijack(&a.url(), ["true"]), TIMEOUT).assert_success("owner connects");

    // The file mode keeps another user out before the server even sees it.
    let out = run(as_nobody(&a.url()), TIMEOUT);
    assert_error(
        &out,
        EX_UNAVAILABLE,
        "permission denied",
        "uid 65534 vs a 0600 socket",
    );

    // With the file opened up, SO_PEERCRED still refuses an uid that is not allowed.
    chmod(a.socket_path(), 0o666);
    let out = run(as_nobody(&a.url()), TIMEOUT);
    assert_error(
        &out,
        EX_UNAVAILABLE,
        "not allowed",
        "uid 65534 refused by SO_PEERCRED",
    );
}

#[test]
fn allow_uid_admits_another_user() {
    let test = "allow_uid_admits_another_user";
    if !require_root(test) || !require_program(test, "setpriv") {
        return;
    }
    let dir = TempDir::new(test);
    let a = Server::start(&dir.join("a.sock"), &["--isolated", "--allow-uid", NOBODY]);
    chmod(a.socket_path(), 0o666);
    run(as_nobody(&a.url()), TIMEOUT).assert_success("--allow-uid 65534 admits uid 65534");
}
