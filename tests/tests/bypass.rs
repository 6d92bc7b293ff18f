//! The doors around the `socket()` trap are closed: io_uring and the non-native system call
//! entry points cannot create a socket in the program's own stack.

use rumphijack_tests::{field, hijack, probe, run, Server, TempDir, TIMEOUT};

const ENOSYS: i32 = libc::ENOSYS;

#[test]
fn io_uring_setup_fails_with_enosys() {
    let dir = TempDir::new("io_uring_setup_fails_with_enosys");
    let a = Server::isolated(dir.path(), "a");
    let out = run(hijack(&a.url(), [probe!(), "io-uring"]), TIMEOUT);
    out.assert_success("rh-probe io-uring under rumphijack");
    assert!(
        out.stdout
            .contains(&format!("io_uring_setup errno={ENOSYS}")),
        "io_uring could create sockets the filter never sees; it must fail with ENOSYS\n{out}"
    );
}

#[cfg(target_arch = "x86_64")]
#[test]
fn i386_and_x32_socket_calls_are_refused() {
    let dir = TempDir::new("i386_and_x32_socket_calls_are_refused");
    let a = Server::isolated(dir.path(), "a");
    let out = run(hijack(&a.url(), [probe!(), "foreign-abi"]), TIMEOUT);

    // Refusal may be an error return or death by SIGSYS; never a socket.
    if out.code() == 128 + libc::SIGSYS {
        return;
    }
    out.assert_success("rh-probe foreign-abi under rumphijack");
    for name in ["int80-socket", "x32-socket"] {
        let line = out.stdout.lines().find(|l| l.starts_with(name));
        let line = line.unwrap_or_else(|| panic!("no {name} report\n{out}"));
        let ret: i64 = field(line, name)
            .and_then(|v| v.parse().ok())
            .expect("a number");
        assert!(
            ret < 0,
            "{name} must not return a descriptor under rumphijack\n{out}"
        );
    }
}
