//! The scripts in `examples/`, run as written, with the binaries under test
//! (`RUMPHIJACK_BIN_DIR`), and what each shows checked line by line.

use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::Command;

use rumphijack_tests::bins::bin_dir;
use rumphijack_tests::{
    python3, require_program, require_root, run, Finished, NetNs, Spawned, TempDir, TIMEOUT,
};

fn example(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(name)
}

/// `examples/NAME ARGS...` with the binaries under test and a clean client environment.
fn example_cmd(name: &str) -> Command {
    let mut cmd = Command::new(example(name));
    cmd.env("RUMPHIJACK_BIN_DIR", bin_dir());
    for var in [
        "RUMP_SERVER",
        "RUMPHIJACK",
        "RUMPHIJACK_POLICY",
        "RUST_LOG",
        "LD_PRELOAD",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// The one stdout line starting with `prefix`, without it.
fn line<'a>(out: &'a Finished, prefix: &str) -> &'a str {
    let found: Vec<&str> = out
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix(prefix))
        .collect();
    assert_eq!(found.len(), 1, "one line starting with {prefix:?}\n{out}");
    found[0]
}

#[test]
fn sandboxed_launch_fetches_the_allowed_page_and_is_denied_the_rest() {
    let test = "sandboxed_launch_fetches_the_allowed_page_and_is_denied_the_rest";
    if !(require_root(test) && require_program(test, "python3") && require_program(test, "curl")) {
        return;
    }
    let out = run(example_cmd("sandboxed-launch.sh"), TIMEOUT * 2);
    out.assert_success("examples/sandboxed-launch.sh");

    assert!(line(&out, "stack: ").starts_with("rump_server --isolated serves unix://"));
    assert_eq!(line(&out, "allowed: "), "hello from the sandbox", "{out}");
    assert!(
        line(&out, "denied: ").starts_with("curl: (7) Failed to connect to 192.0.2.1 port 80"),
        "{out}"
    );
    let audit = line(&out, "audit: ");
    for field in [
        r#""action":"deny""#,
        r#""addr":"192.0.2.1""#,
        r#""errno":"EACCES""#,
        r#""program":"curl""#,
    ] {
        assert!(audit.contains(field), "{field} in the audit record\n{out}");
    }
}

#[test]
fn container_entrypoint_runs_the_app_as_process_1_through_the_sidecar() {
    let test = "container_entrypoint_runs_the_app_as_process_1_through_the_sidecar";
    if !(require_root(test)
        && require_program(test, "ip")
        && require_program(test, "unshare")
        && require_program(test, "python3")
        && require_program(test, "curl"))
    {
        return;
    }
    // The network the sidecar owns: a namespace with a web server on its loopback. The app
    // runs in a second namespace with nothing but an empty loopback.
    let web_dir = TempDir::new(&format!("{test}-web"));
    let page = format!("page of the sidecar's network {}\n", std::process::id());
    web_dir.write("index.html", &page);
    let shared = TempDir::new(test);
    let net = NetNs::create();
    let empty = NetNs::create();
    let mut web_cmd = net.command(python3());
    web_cmd
        .args([
            "-u",
            "-m",
            "http.server",
            "8080",
            "--bind",
            "127.0.0.1",
            "--directory",
        ])
        .arg(web_dir.path());
    let mut web = Spawned::start(web_cmd, web_dir.path(), "web");
    web.wait_for_line(TIMEOUT, |l| l.starts_with("Serving HTTP"));

    let app = r#"echo "parent $PPID"; curl -sS --max-time 10 http://127.0.0.1:8080/; exit 3"#;
    let mut native = empty.command("sh");
    native.args(["-c", app]);
    let out = run(native, TIMEOUT);
    assert!(
        out.stderr.contains("Couldn't connect"),
        "the app's own namespace has no web server\n{out}"
    );

    let socket = shared.join("stack.sock");
    let entrypoint = example_cmd("container-entrypoint.sh");
    let mut cmd = empty.command("env");
    cmd.arg(format!("STACK_NETNS={}", net.path().display()))
        .arg(format!("RUMP_SOCKET={}", socket.display()))
        .arg(format!("RUMPHIJACK_BIN_DIR={}", bin_dir().display()))
        .arg(entrypoint.get_program())
        .args(["sh", "-c", app]);
    let out = run(cmd, TIMEOUT);
    assert_eq!(
        out.code(),
        3,
        "the entrypoint exits with the app's status\n{out}"
    );
    assert_eq!(
        out.stdout,
        format!("parent 1\n{page}"),
        "rumphijack is process 1 and the page comes through the sidecar\n{out}"
    );
    assert!(
        out.stderr.contains(&format!(
            "entrypoint: sidecar rump_server serves unix://{}",
            socket.display()
        )),
        "{out}"
    );

    // The sidecar ended with the container: its socket file is left, nobody answers.
    let err = UnixStream::connect(&socket).expect_err("the sidecar must be gone");
    assert_eq!(err.raw_os_error(), Some(libc::ECONNREFUSED), "{err}");
}

#[test]
fn hybrid_example_shows_the_library_taking_the_supervisors_work() {
    let test = "hybrid_example_shows_the_library_taking_the_supervisors_work";
    if !(require_root(test) && require_program(test, "python3")) {
        return;
    }
    let out = run(example_cmd("hybrid.sh"), TIMEOUT * 2);
    out.assert_success("examples/hybrid.sh");

    let program = |mode: &str| line(&out, &format!("{mode}: 20 connections over lo; ")).to_owned();
    assert_eq!(
        program("supervisor"),
        "librumphijack.so loaded: no",
        "{out}"
    );
    assert_eq!(program("hybrid"), "librumphijack.so loaded: yes", "{out}");

    let served = |mode: &str| -> u64 {
        let text = line(&out, &format!("{mode}: served "));
        let count = text
            .strip_suffix(" socket() calls")
            .expect("a count of calls");
        count
            .parse()
            .unwrap_or_else(|e| panic!("{count:?}: {e}\n{out}"))
    };
    let (supervisor, hybrid) = (served("supervisor"), served("hybrid"));
    assert!(
        supervisor >= 21,
        "alone, the supervisor makes every socket: 20 clients and the listener\n{out}"
    );
    assert!(
        hybrid < supervisor / 10,
        "with the library only calls that bypass libc reach the supervisor\n{out}"
    );
}
