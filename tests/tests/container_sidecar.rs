//! The sidecar pattern, end to end. `rump_server` runs in a namespace that has the network
//! (here a namespace "net" with a veth to a test host, itself a namespace "host") and puts its
//! socket in a shared directory. The program runs in a third namespace with nothing but
//! loopback, under `rumphijack run --server unix://<shared>/stack.sock`, and reaches the test
//! host only through the server. No packet leaves the namespaces this test creates.

use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use rumphijack_tests::{
    hijack, python3, require_program, require_root, run, Finished, NetNs, Server, Spawned, TempDir,
    TIMEOUT,
};

/// The test host's address, on the veth end in the "host" namespace.
const HOST_V4: &str = "10.231.0.2";
/// The stack server's address, on the veth end in the "net" namespace.
const NET_V4: &str = "10.231.0.1";
/// The web server's port on the test host. Only the test's own namespaces use it.
const PORT: u16 = 8080;

/// Three namespaces made by the test, deleted on drop: `host` (the test host, [`HOST_V4`]),
/// `net` (the namespace with the network, [`NET_V4`], joined to `host` by a veth pair) and
/// `empty` (only `lo`, where the program runs).
struct Sidecar {
    host: NetNs,
    net: NetNs,
    empty: NetNs,
}

impl Sidecar {
    fn create() -> Sidecar {
        let sidecar = Sidecar {
            host: NetNs::create(),
            net: NetNs::create(),
            empty: NetNs::create(),
        };
        let (host, net) = (&sidecar.host, &sidecar.net);
        ip_in(
            host,
            &[
                "link",
                "add",
                "vh",
                "type",
                "veth",
                "peer",
                "name",
                "vn",
                "netns",
                net.name(),
            ],
        );
        ip_in(
            host,
            &["addr", "add", &format!("{HOST_V4}/24"), "dev", "vh"],
        );
        ip_in(host, &["link", "set", "vh", "up"]);
        ip_in(net, &["addr", "add", &format!("{NET_V4}/24"), "dev", "vn"]);
        ip_in(net, &["link", "set", "vn", "up"]);
        sidecar
    }

    /// `ip netns exec <empty> PROGRAM` — a command to complete with arguments.
    fn in_empty(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        self.empty.command(program)
    }
}

fn ip_in(ns: &NetNs, args: &[&str]) {
    let out = ns.command("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?} in {}: {out:?}",
        ns.name()
    );
}

fn prerequisites(test: &str) -> bool {
    require_root(test)
        && require_program(test, "ip")
        && require_program(test, "curl")
        && require_program(test, "python3")
}

/// `python3 -m http.server` on [`HOST_V4`]:[`PORT`] in the host namespace, serving `dir`
/// (which holds `index.html`). Its access log (the peer address of each request) goes to
/// `<dir>/web.stderr`. Returns once it listens.
fn web_server(sidecar: &Sidecar, dir: &TempDir) -> Spawned {
    let mut cmd = sidecar.host.command(python3());
    cmd.args([
        "-u",
        "-m",
        "http.server",
        &PORT.to_string(),
        "--bind",
        HOST_V4,
    ])
    .arg("--directory")
    .arg(dir.path());
    let mut web = Spawned::start(cmd, dir.path(), "web");
    web.wait_for_line(TIMEOUT, |l| l.starts_with("Serving HTTP on"));
    web
}

/// `rump_server --netns /run/netns/<net> --ready-fd N unix://<shared>/stack.sock`.
fn sidecar_server(sidecar: &Sidecar, shared: &TempDir) -> Server {
    let netns = sidecar.net.path();
    Server::start(
        &shared.join("stack.sock"),
        &["--netns", netns.to_str().expect("utf-8 netns path")],
    )
}

/// `ip netns exec <empty> rumphijack run --server URL -- ARGV...`.
fn hijack_in_empty(sidecar: &Sidecar, url: &str, argv: &[&str]) -> Command {
    let inner = hijack(url, argv);
    let mut cmd = sidecar.in_empty(inner.get_program());
    cmd.args(inner.get_args());
    for (key, value) in inner.get_envs() {
        match value {
            Some(value) => cmd.env(key, value),
            None => cmd.env_remove(key),
        };
    }
    cmd
}

fn curl_args(url: &str) -> Vec<&str> {
    vec!["curl", "-sS", "-v", "--max-time", "10", url]
}

#[test]
fn program_in_an_empty_namespace_reaches_the_test_host_through_the_sidecar() {
    let test = "program_in_an_empty_namespace_reaches_the_test_host_through_the_sidecar";
    if !prerequisites(test) {
        return;
    }
    let web_dir = TempDir::new(&format!("{test}-web"));
    let page = format!("sidecar page {}\n", std::process::id());
    web_dir.write("index.html", &page);
    let shared = TempDir::new(&format!("{test}-shared"));
    // Drop order is the reverse: server and web server stop before the namespaces go.
    let sidecar = Sidecar::create();
    let web = web_server(&sidecar, &web_dir);
    let server = sidecar_server(&sidecar, &shared);
    let url = format!("http://{HOST_V4}:{PORT}/");

    // Control: the program's own namespace has no route to the test host.
    let mut native = sidecar.in_empty("curl");
    native.args(&curl_args(&url)[1..]);
    let out = run(native, TIMEOUT);
    assert_eq!(
        out.code(),
        7,
        "curl in the empty namespace must fail to connect\n{out}"
    );
    assert!(
        out.stderr.contains("Network is unreachable"),
        "the empty namespace has no route to {HOST_V4}\n{out}"
    );

    let out = run(
        hijack_in_empty(&sidecar, &server.url(), &curl_args(&url)),
        TIMEOUT,
    );
    out.assert_success("curl under rumphijack must reach the test host through the sidecar");
    assert_eq!(out.stdout, page, "the page served on the test host\n{out}");

    // The test host saw the request come from the server's namespace, not from the program's.
    // http.server logs a request before it sends the body, so the line is there already;
    // polling only covers a slow flush.
    let from_net = |l: &str| l.starts_with(&format!("{NET_V4} ")) && l.contains("\"GET / ");
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let log = std::fs::read_to_string(web_dir.join("web.stderr")).unwrap_or_default();
        if log.lines().any(from_net) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the test host must log a GET / from {NET_V4}\n{}\n{}",
            web.diagnostics(),
            server.log()
        );
        thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn ip_addr_under_the_sidecar_shows_the_network_namespace() {
    let test = "ip_addr_under_the_sidecar_shows_the_network_namespace";
    if !prerequisites(test) {
        return;
    }
    let shared = TempDir::new(test);
    let sidecar = Sidecar::create();
    let server = sidecar_server(&sidecar, &shared);

    let mut native = sidecar.in_empty("ip");
    native.args(["-o", "addr"]);
    let out = run(native, TIMEOUT);
    out.assert_success("ip -o addr in the empty namespace");
    assert_only_loopback(&out);

    let out = run(
        hijack_in_empty(&sidecar, &server.url(), &["ip", "-o", "addr"]),
        TIMEOUT,
    );
    out.assert_success("ip -o addr under rumphijack in the empty namespace");
    assert!(
        out.stdout
            .lines()
            .any(|l| l.contains(" vn ") && l.contains(&format!("inet {NET_V4}/24"))),
        "ip under rumphijack must list the server's vn with {NET_V4}/24\n{out}"
    );
}

fn assert_only_loopback(out: &Finished) {
    for line in out.stdout.lines() {
        let name = line.split_whitespace().nth(1);
        assert_eq!(name, Some("lo"), "the empty namespace has only lo\n{out}");
    }
}
