//! The example policies in `policy/examples/` parse and mean what their comments say.

use std::path::{Path, PathBuf};

use policy::{parse_query, Action, Operation, Policy};

fn example(name: &str) -> Policy {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name);
    Policy::load(&path).unwrap_or_else(|err| panic!("{err}"))
}

/// The action and deciding rule's index for a query written as `parse_query` reads it.
fn decide(policy: &Policy, query: &str) -> (Action, Option<usize>) {
    let decision = policy.decide(&parse_query(query).unwrap());
    (decision.action, decision.rule.map(|rule| rule.index))
}

const ALLOW: Action = Action::Allow;

fn deny(errno: i32) -> Action {
    Action::Deny { errno }
}

#[test]
fn every_example_parses() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
        .collect();
    paths.sort();
    assert!(paths.len() >= 4, "{paths:?}");
    for path in paths {
        Policy::load(&path).unwrap_or_else(|err| panic!("{err}"));
    }
}

#[test]
fn deny_all_but_loopback() {
    let policy = example("deny-all-but-loopback.toml");
    for query in [
        "connect tcp 127.0.0.1:80",
        "connect tcp [::1]:80",
        "connect tcp 0.0.0.0:80",
        "send udp 127.0.0.53:53",
        "bind tcp 127.0.0.1:8080",
        "listen tcp [::1]:8080",
        "accept tcp 127.0.0.1:40000",
    ] {
        assert_eq!(decide(&policy, query), (ALLOW, Some(1)), "{query}");
    }
    assert_eq!(
        decide(&policy, "connect tcp 192.0.2.1:80"),
        (deny(libc::ECONNREFUSED), Some(2))
    );
    assert_eq!(
        decide(&policy, "send udp 8.8.8.8:53"),
        (deny(libc::EACCES), None)
    );
    assert_eq!(
        decide(&policy, "bind tcp 0.0.0.0:8080"),
        (deny(libc::EACCES), None)
    );
    assert!(Operation::ALL.iter().all(|&op| policy.traps(op)));
}

#[test]
fn web_client() {
    let policy = example("web-client.toml");
    assert_eq!(decide(&policy, "send udp 8.8.8.8:53"), (ALLOW, Some(1)));
    assert_eq!(
        decide(&policy, "connect udp [2001:db8::53]:53"),
        (ALLOW, Some(1))
    );
    assert_eq!(decide(&policy, "connect tcp 9.9.9.9:53"), (ALLOW, Some(1)));
    assert_eq!(
        decide(&policy, "connect tcp 93.184.216.34:443"),
        (ALLOW, Some(2))
    );
    assert_eq!(
        decide(&policy, "connect tcp [2001:db8::1]:80"),
        (ALLOW, Some(2))
    );
    assert_eq!(
        decide(&policy, "connect tcp 127.0.0.1:8080"),
        (ALLOW, Some(3))
    );
    assert_eq!(
        decide(&policy, "connect tcp 93.184.216.34:22"),
        (deny(libc::ENETUNREACH), None)
    );
    assert_eq!(
        decide(&policy, "connect udp 93.184.216.34:443"),
        (deny(libc::ENETUNREACH), None)
    );
    for query in [
        "bind tcp 0.0.0.0:80",
        "listen tcp [::]:80",
        "accept tcp 192.0.2.1:5",
    ] {
        assert_eq!(
            decide(&policy, query),
            (deny(libc::EPERM), Some(4)),
            "{query}"
        );
    }
}

#[test]
fn server_only() {
    let policy = example("server-only.toml");
    assert_eq!(decide(&policy, "bind tcp 0.0.0.0:8080"), (ALLOW, Some(1)));
    assert_eq!(decide(&policy, "listen tcp [::]:8080"), (ALLOW, Some(1)));
    assert_eq!(
        decide(&policy, "bind tcp 0.0.0.0:8081"),
        (deny(libc::EACCES), None)
    );
    assert_eq!(
        decide(&policy, "bind udp 0.0.0.0:8080"),
        (deny(libc::EACCES), None)
    );
    assert_eq!(
        decide(&policy, "accept tcp 203.0.113.9:51000"),
        (ALLOW, Some(2))
    );
    assert_eq!(
        decide(&policy, "connect tcp 127.0.0.1:8080"),
        (deny(libc::EPERM), Some(3))
    );
    assert_eq!(
        decide(&policy, "send udp 8.8.8.8:53"),
        (deny(libc::EPERM), Some(3))
    );
}

#[test]
fn audit_only() {
    let policy = example("audit-only.toml");
    assert!(policy.rules().is_empty());
    for query in [
        "connect tcp 192.0.2.1:22",
        "bind udp [::]:0",
        "accept tcp 10.0.0.1:1",
    ] {
        let decision = policy.decide(&parse_query(query).unwrap());
        assert_eq!(decision.action, ALLOW);
        assert!(decision.log, "{query}");
    }
    assert!(Operation::ALL.iter().all(|&op| policy.traps(op)));
}
