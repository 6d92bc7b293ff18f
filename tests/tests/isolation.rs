//! Programs under `rumphijack run` use the server's stack and nothing else: a listener that
//! exists only in stack A is reachable through A, and not from the host or from stack B.

use std::process::Command;

use rumphijack_tests::{
    argv, echo_server, field, free_host_port, hijack, probe, python3, require_program,
    require_root, run, write_helper, Server, Spawned, TempDir, TIMEOUT,
};

/// curl's exit status for "failed to connect to host".
const CURL_COULDNT_CONNECT: i32 = 7;

/// `python3 -m http.server` under `rumphijack run --server A`, serving a page with `token`.
fn http_server(dir: &TempDir, a: &Server, port: u16, token: &str) -> Spawned {
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
    let mut http = Spawned::start(hijack(&a.url(), args), dir.path(), "http-server");
    http.wait_for_line(TIMEOUT, |l| l.starts_with("Serving HTTP"));
    http
}

fn curl_args(url: &str) -> Vec<String> {
    ["curl", "-sS", "--max-time", "5", url]
        .map(String::from)
        .to_vec()
}

#[test]
fn curl_reaches_http_server_only_through_its_own_stack() {
    let test = "curl_reaches_http_server_only_through_its_own_stack";
    if !require_program(test, "curl") || !require_program(test, "python3") {
        return;
    }
    let dir = TempDir::new(test);
    let a = Server::isolated(dir.path(), "a");
    let b = Server::isolated(dir.path(), "b");
    let port = free_host_port();
    let token = format!("rumphijack-page-{port}");
    let _http = http_server(&dir, &a, port, &token);
    let url = format!("http://127.0.0.1:{port}/index.html");

    // The server printed its banner after binding, but allow a few tries for slow starts.
    let mut last = None;
    for _ in 0..5 {
        let out = run(hijack(&a.url(), curl_args(&url)), TIMEOUT);
        if out.code() == 0 {
            last = Some(out);
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
        last = Some(out);
    }
    let through_a = last.expect("at least one curl run");
    through_a.assert_success("curl under rumphijack --server A must fetch the page from A");
    assert!(
        through_a.stdout.contains(&token),
        "page content from A\n{through_a}"
    );

    let mut native = Command::new("curl");
    native.args(&curl_args(&url)[1..]);
    run(native, TIMEOUT).assert_code(
        CURL_COULDNT_CONNECT,
        "native curl must not reach a listener that exists only in stack A",
    );
    run(hijack(&b.url(), curl_args(&url)), TIMEOUT).assert_code(
        CURL_COULDNT_CONNECT,
        "curl under rumphijack --server B must not reach a listener in stack A",
    );
}

/// True when the ELF file has no `PT_INTERP` program header, i.e. no dynamic loader and no
/// chance for a preload library: only the seccomp path can redirect it.
fn is_static_elf(path: &str) -> bool {
    let elf = std::fs::read(path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    assert_eq!(&elf[..4], b"\x7fELF", "{path} is not an ELF file");
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    const PT_INTERP: u32 = 3;
    (0..phnum).all(|i| {
        let at = phoff + i * phentsize;
        u32::from_le_bytes(elf[at..at + 4].try_into().unwrap()) != PT_INTERP
    })
}

#[test]
fn static_busybox_wget_is_redirected() {
    let test = "static_busybox_wget_is_redirected";
    if !require_program(test, "busybox") || !require_program(test, "python3") {
        return;
    }
    let busybox = rumphijack_tests::prereq::find_in_path("busybox").expect("busybox in PATH");
    let busybox = busybox.to_str().expect("utf-8 path").to_string();
    assert!(
        is_static_elf(&busybox),
        "{busybox} must be statically linked (busybox-static)"
    );

    let dir = TempDir::new(test);
    let a = Server::isolated(dir.path(), "a");
    let port = free_host_port();
    let token = format!("static-page-{port}");
    let _http = http_server(&dir, &a, port, &token);
    let url = format!("http://127.0.0.1:{port}/index.html");

    let wget = |server: Option<&Server>| {
        // No `-T`: Debian's busybox-static wget crashes with it; run()'s deadline bounds it.
        let args = [busybox.as_str(), "wget", "-q", "-O", "-", &url];
        match server {
            Some(s) => run(hijack(&s.url(), args), TIMEOUT),
            None => {
                let mut cmd = Command::new(args[0]);
                cmd.args(&args[1..]);
                run(cmd, TIMEOUT)
            }
        }
    };
    let out = wget(Some(&a));
    out.assert_success("static busybox wget under rumphijack --server A must fetch the page");
    assert!(out.stdout.contains(&token), "page content from A\n{out}");

    let native = wget(None);
    assert_ne!(
        native.code(),
        0,
        "native busybox wget must not reach stack A\n{native}"
    );
}

#[test]
fn threads_and_forked_children_are_all_redirected() {
    let test = "threads_and_forked_children_are_all_redirected";
    if !require_program(test, "python3") {
        return;
    }
    let dir = TempDir::new(test);
    let a = Server::isolated(dir.path(), "a");
    let port = free_host_port();
    let _echo = echo_server(&dir, &a.url(), port, &["127.0.0.1"]);
    let script = write_helper(&dir);

    // Eight threads pass a barrier and connect at the same moment.
    let threads = argv![python3(), script, "threads", "8", port.to_string()];
    let out = run(hijack(&a.url(), threads), TIMEOUT);
    out.assert_success("every thread's connection must reach the echo server in stack A");
    assert!(out.stdout.contains("threads ok 8"), "{out}");

    // os.fork() children inherit the filter and are redirected through the same listener.
    let forks = argv![python3(), script, "forks", "4", port.to_string()];
    let out = run(hijack(&a.url(), forks), TIMEOUT);
    out.assert_success("every forked child's connection must reach stack A");
    assert!(out.stdout.contains("forks ok 4"), "{out}");

    // A shell with background jobs, a subshell and a final exec of another program.
    let shell = r#"set -e
"$PY" "$RH" tcp 127.0.0.1 "$PORT" from-job-1 & j1=$!
"$PY" "$RH" tcp 127.0.0.1 "$PORT" from-job-2 & j2=$!
wait $j1
wait $j2
if [ "$ROOT" = 1 ]; then ( "$PROBE" netns-ino ); fi
exec "$PY" "$RH" tcp 127.0.0.1 "$PORT" from-exec"#;
    let root = nix::unistd::geteuid().is_root();
    let mut cmd = hijack(&a.url(), ["sh", "-c", shell]);
    cmd.env("PY", python3())
        .env("RH", &script)
        .env("PORT", port.to_string())
        .env("PROBE", probe!())
        .env("ROOT", if root { "1" } else { "0" });
    let out = run(cmd, TIMEOUT);
    out.assert_success("jobs, subshells and exec'd programs must all be redirected");
    for word in ["from-job-1", "from-job-2", "from-exec"] {
        assert!(out.stdout.contains(word), "echo of {word} missing\n{out}");
    }
    if root {
        let line = out
            .stdout
            .lines()
            .find(|l| l.starts_with("socket="))
            .expect("probe line");
        assert_ne!(
            field(line, "socket"),
            field(line, "self"),
            "a socket made in a subshell must belong to the server's namespace\n{out}"
        );
    } else {
        require_root(&format!("{test} (namespace check)"));
    }
}
