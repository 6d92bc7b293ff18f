//! `LD_PRELOAD=librumphijack.so` alone: curl, python3 (client and `http.server`) and socat use
//! the server's stack and nothing else.

use std::process::Command;
use std::time::Duration;

use rumphijack_tests::preload::{preload, preload_echo_server};
use rumphijack_tests::{
    argv, free_host_port, python3, require_program, run, write_helper, Finished, Server, Spawned,
    TempDir, TIMEOUT,
};

/// curl's exit status for "failed to connect to host".
const CURL_COULDNT_CONNECT: i32 = 7;

/// `python3 -m http.server` preloaded against `server`, serving a page holding `token`.
fn http_server(dir: &TempDir, server: &Server, port: u16, token: &str) -> Spawned {
    let site = dir.join("site");
    std::fs::create_dir(&site).expect("create site dir");
    std::fs::write(site.join("index.html"), token).expect("write index.html");
    let args = argv![
        python3(),
        "-u",
        "-m",
        "http.server",
        port.to_string(),
        "--bind",
        "127.0.0.1",
        "--directory",
        site
    ];
    let mut http = Spawned::start(preload(Some(&server.url()), args), dir.path(), "http");
    http.wait_for_line(TIMEOUT, |l| l.starts_with("Serving HTTP"));
    http
}

fn curl(server: Option<&Server>, url: &str) -> Finished {
    let args = ["curl", "-sS", "--max-time", "5", url];
    match server {
        Some(server) => run(preload(Some(&server.url()), args), TIMEOUT),
        None => {
            let mut cmd = Command::new(args[0]);
            cmd.args(&args[1..]);
            run(cmd, TIMEOUT)
        }
    }
}

#[test]
fn preloaded_curl_and_http_server_share_only_their_stack() {
    let test = "preloaded_curl_and_http_server_share_only_their_stack";
    if !require_program(test, "curl") || !require_program(test, "python3") {
        return;
    }
    let dir = TempDir::new(test);
    let a = Server::isolated(dir.path(), "a");
    let b = Server::isolated(dir.path(), "b");
    let port = free_host_port();
    let token = format!("preload-page-{port}");
    let _http = http_server(&dir, &a, port, &token);
    let url = format!("http://127.0.0.1:{port}/index.html");

    // The banner comes after bind, but allow a few tries for a slow start.
    let mut out = curl(Some(&a), &url);
    for _ in 0..4 {
        if out.code() == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
        out = curl(Some(&a), &url);
    }
    out.assert_success("preloaded curl against A must fetch the page served in A");
    assert!(out.stdout.contains(&token), "page content from A\n{out}");
    assert!(
        out.stderr.is_empty(),
        "nothing from the library on stderr\n{out}"
    );

    curl(None, &url).assert_code(
        CURL_COULDNT_CONNECT,
        "native curl must not reach a listener that exists only in stack A",
    );
    curl(Some(&b), &url).assert_code(
        CURL_COULDNT_CONNECT,
        "curl preloaded against B must not reach a listener in stack A",
    );
}

#[test]
fn preloaded_python_and_socat_clients_reach_only_their_stack() {
    let test = "preloaded_python_and_socat_clients_reach_only_their_stack";
    if !require_program(test, "python3") || !require_program(test, "socat") {
        return;
    }
    let dir = TempDir::new(test);
    let a = Server::isolated(dir.path(), "a");
    let b = Server::isolated(dir.path(), "b");
    let port = free_host_port();
    let _echo = preload_echo_server(&dir, &a.url(), port, &["127.0.0.1"]);
    let script = write_helper(&dir);
    let port_s = port.to_string();

    // python3 over TCP and UDP.
    for proto in ["tcp", "udp"] {
        let word = format!("python-{proto}");
        let args = argv![python3(), &script, proto, "127.0.0.1", &port_s, &word];
        let out = run(preload(Some(&a.url()), args.clone()), TIMEOUT);
        out.assert_success(&format!("preloaded python3 {proto} client must reach A"));
        assert!(out.stdout.contains(&word), "{out}");

        let out = run(preload(Some(&b.url()), args), TIMEOUT);
        assert_ne!(out.code(), 0, "python3 {proto} preloaded against B\n{out}");
    }

    // socat over TCP: preloaded against A it is echoed; natively and against B it is not.
    let socat = |server: Option<&Server>| {
        let target = format!("TCP:127.0.0.1:{port},connect-timeout=5");
        let args = ["socat", "-t", "5", "-", &target];
        let cmd = match server {
            Some(server) => preload(Some(&server.url()), args),
            None => {
                let mut cmd = Command::new(args[0]);
                cmd.args(&args[1..]);
                cmd
            }
        };
        // `run` gives no stdin, and socat would stop at its end; send a word through a shell.
        let script = "printf socat-word | \"$@\"";
        let mut shell = Command::new("sh");
        shell
            .arg("-c")
            .arg(script)
            .arg("sh")
            .arg(cmd.get_program())
            .args(cmd.get_args());
        for (key, value) in cmd.get_envs() {
            match value {
                Some(value) => shell.env(key, value),
                None => shell.env_remove(key),
            };
        }
        run(shell, TIMEOUT)
    };
    let out = socat(Some(&a));
    out.assert_success("preloaded socat against A must reach the echo server");
    assert!(out.stdout.contains("socat-word"), "{out}");
    assert_ne!(socat(None).code(), 0, "native socat must not reach stack A");
    assert_ne!(
        socat(Some(&b)).code(),
        0,
        "socat preloaded against B must not reach A"
    );
}
