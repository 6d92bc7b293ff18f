//! Everything as an ordinary user (uid 65534, no capabilities, no groups): a
//! `rump_server --isolated` of that user with its socket in a directory it owns, the preload
//! library against that server, `rumphijack run --server` against it, and hybrid mode with
//! the embedded server (`rumphijack run --preload --isolated`).
//!
//! Each program is a python script that reports, for a socket it makes itself, which network
//! namespace the socket belongs to (`SIOCGSKNS`), whether it reaches a listener in the host's
//! stack, and whether a loopback connection inside its own stack works.

use std::ffi::OsString;
use std::path::Path;

use rumphijack_tests::bins::rumphijack;
use rumphijack_tests::hostile::{as_nobody, hijack_as_nobody, report_line, HostListener};
use rumphijack_tests::preload::library;
use rumphijack_tests::unprivileged::{
    assert_setpriv_works, netns_inode, python_for_nobody, NobodyServer,
};
use rumphijack_tests::{field, require_program, require_root, run, Finished, TempDir, TIMEOUT};

/// `python3 -c SCRIPT PORT`: one report line
/// `report uid=U netns=INODE|ERRNO host=connected|ERRNO loop=ping|ERRNO preloaded=yes|no`.
const SCRIPT: &str = r#"
import errno, fcntl, os, socket, sys

SIOCGSKNS = 0x894C

def name(e):
    return errno.errorcode.get(e.errno, str(e.errno))

def netns(sock):
    try:
        fd = fcntl.ioctl(sock.fileno(), SIOCGSKNS)
    except OSError as e:
        return name(e)
    try:
        return str(os.fstat(fd).st_ino)
    finally:
        os.close(fd)

port = int(sys.argv[1])
with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    ns = netns(s)
    s.settimeout(5)
    try:
        s.connect(("127.0.0.1", port))
        host = "connected"
    except OSError as e:
        host = name(e)
try:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as l:
        l.bind(("127.0.0.1", 0))
        l.listen(1)
        with socket.create_connection(l.getsockname(), timeout=5) as c:
            a, _ = l.accept()
            c.sendall(b"ping")
            loop = a.recv(4).decode()
            a.close()
except OSError as e:
    loop = name(e)
with open("/proc/self/maps") as maps:
    preloaded = "yes" if "librumphijack" in maps.read() else "no"
print("report uid=%d netns=%s host=%s loop=%s preloaded=%s"
      % (os.getuid(), ns, host, loop, preloaded), flush=True)
"#;

fn prerequisites(test: &str) -> bool {
    require_root(test) && require_program(test, "setpriv")
}

/// `python -c SCRIPT PORT` as words.
fn script_argv(python: &Path, host: &HostListener) -> Vec<OsString> {
    vec![python.into(), "-c".into(), SCRIPT.into(), host.arg().into()]
}

/// The report line's `key`, failing with the program's output when it is missing.
fn report<'a>(out: &'a Finished, key: &str) -> &'a str {
    field(report_line(&out.stdout, "report"), key)
        .unwrap_or_else(|| panic!("no {key}= in the report\n{out}"))
}

/// The program ran as uid 65534 with its socket outside the host's stack: the host listener
/// is out of reach and loopback inside the stack works.
fn assert_redirected(out: &Finished, why: &str) {
    out.assert_success(why);
    assert_eq!(report(out, "uid"), "65534", "{why}\n{out}");
    assert_eq!(
        report(out, "host"),
        "ECONNREFUSED",
        "{why}: the socket must not reach the host's stack\n{out}"
    );
    assert_eq!(
        report(out, "loop"),
        "ping",
        "{why}: loopback inside the stack\n{out}"
    );
}

/// Control: the script as uid 65534 with no rumphijack at all reaches the host listener.
fn native_control(python: &Path, host: &HostListener) {
    let mut cmd = as_nobody(python, &script_argv(python, host)[1..]);
    cmd.env_remove("LD_PRELOAD");
    let out = run(cmd, TIMEOUT);
    out.assert_success("the script natively as uid 65534");
    assert_eq!(
        report(&out, "host"),
        "connected",
        "natively the host listener is reachable\n{out}"
    );
    assert_eq!(report(&out, "preloaded"), "no", "{out}");
}

#[test]
fn preload_library_as_nobody_redirects_python_to_an_unprivileged_server() {
    let test = "preload_library_as_nobody_redirects_python_to_an_unprivileged_server";
    if !prerequisites(test) {
        return;
    }
    let Some(python) = python_for_nobody(test) else {
        return;
    };
    assert_setpriv_works();
    let dir = TempDir::new(test);
    let server = NobodyServer::isolated(&dir, "nobody");
    let host = HostListener::bind();
    native_control(&python, &host);

    let mut args: Vec<OsString> = vec![
        format!("LD_PRELOAD={}", library().display()).into(),
        format!("RUMP_SERVER={}", server.url()).into(),
    ];
    args.extend(script_argv(&python, &host));
    let out = run(as_nobody("env", args), TIMEOUT);
    assert_redirected(&out, "python with librumphijack.so as uid 65534");
    assert_eq!(report(&out, "preloaded"), "yes", "{out}");
    assert_eq!(
        report(&out, "netns"),
        netns_inode(server.pid()).to_string(),
        "the socket belongs to the unprivileged server's namespace\n{out}\n{}",
        server.log()
    );
}

#[test]
fn supervisor_as_nobody_uses_an_unprivileged_server() {
    let test = "supervisor_as_nobody_uses_an_unprivileged_server";
    if !prerequisites(test) {
        return;
    }
    let Some(python) = python_for_nobody(test) else {
        return;
    };
    assert_setpriv_works();
    let dir = TempDir::new(test);
    let server = NobodyServer::isolated(&dir, "nobody");
    let host = HostListener::bind();
    native_control(&python, &host);

    let out = run(
        hijack_as_nobody(&server.url(), script_argv(&python, &host)),
        TIMEOUT,
    );
    assert_redirected(&out, "rumphijack run --server as uid 65534");
    assert_eq!(report(&out, "preloaded"), "no", "{out}");
    assert_eq!(
        report(&out, "netns"),
        netns_inode(server.pid()).to_string(),
        "the socket belongs to the unprivileged server's namespace\n{out}\n{}",
        server.log()
    );
}

#[test]
fn hybrid_isolated_as_nobody_works() {
    let test = "hybrid_isolated_as_nobody_works";
    if !prerequisites(test) {
        return;
    }
    let Some(python) = python_for_nobody(test) else {
        return;
    };
    assert_setpriv_works();
    let host = HostListener::bind();
    native_control(&python, &host);

    let mut args: Vec<OsString> = vec![
        "run".into(),
        "--preload".into(),
        "--isolated".into(),
        "--".into(),
    ];
    args.extend(script_argv(&python, &host));
    let mut cmd = as_nobody(rumphijack(), args);
    cmd.env_remove("LD_PRELOAD");
    let out = run(cmd, TIMEOUT);
    assert_redirected(&out, "rumphijack run --preload --isolated as uid 65534");
    assert_eq!(
        report(&out, "preloaded"),
        "yes",
        "hybrid mode loads the library into the program\n{out}"
    );
    let ns = report(&out, "netns");
    assert!(
        ns.parse::<u64>().is_ok(),
        "uid 65534 owns the new namespace's user namespace, so SIOCGSKNS works\n{out}"
    );
    assert_ne!(
        ns,
        netns_inode(std::process::id()).to_string(),
        "the socket is not in the host's namespace\n{out}"
    );
}
