use super::*;
use crate::parse_query;

fn policy(text: &str) -> Policy {
    Policy::parse(text, "p.toml").unwrap()
}

fn decide<'p>(policy: &'p Policy, query: &str) -> Decision<'p> {
    policy.decide(&parse_query(query).unwrap())
}

fn rule_index(policy: &Policy, query: &str) -> Option<usize> {
    decide(policy, query).rule.map(|rule| rule.index)
}

const DNS_AND_WEB: &str = r#"
[default]
action = "deny"
errno = "ENETUNREACH"

[[rule]]
comment = "DNS"
op = "send"
proto = "udp"
port = 53
action = "allow"
log = true

[[rule]]
op = "connect"
proto = "tcp"
addr = ["private", "2001:db8::/32"]
port = "8000-8999"
action = "deny"
errno = "EPERM"

[[rule]]
op = "connect"
proto = "tcp"
action = "allow"
"#;

#[test]
fn first_matching_rule_decides() {
    let policy = policy(DNS_AND_WEB);
    assert_eq!(rule_index(&policy, "send udp 8.8.8.8:53"), Some(1));
    assert_eq!(rule_index(&policy, "connect tcp 10.1.1.1:8080"), Some(2));
    assert_eq!(
        rule_index(&policy, "connect tcp [2001:db8::1]:8999"),
        Some(2)
    );
    assert_eq!(rule_index(&policy, "connect tcp 10.1.1.1:9000"), Some(3));
    assert_eq!(rule_index(&policy, "connect tcp 8.8.8.8:8080"), Some(3));

    let decision = decide(&policy, "send udp 8.8.8.8:53");
    assert_eq!(decision.action, Action::Allow);
    assert!(decision.log);
    assert_eq!(decision.describe(), "rule 1 (p.toml:6:1, \"DNS\")");

    let decision = decide(&policy, "connect tcp 10.1.1.1:8080");
    assert_eq!(decision.action, Action::Deny { errno: libc::EPERM });
    assert_eq!(decision.describe(), "rule 2 (p.toml:14:1)");
}

#[test]
fn default_decides_when_nothing_matches() {
    let policy = policy(DNS_AND_WEB);
    for query in [
        "send udp 8.8.8.8:54",
        "send tcp 8.8.8.8:53",
        "bind udp 0.0.0.0:53",
    ] {
        let decision = decide(&policy, query);
        assert_eq!(decision.rule, None, "{query}");
        assert_eq!(
            decision.action,
            Action::Deny {
                errno: libc::ENETUNREACH
            }
        );
        assert!(!decision.log);
        assert_eq!(decision.describe(), "default");
    }
}

#[test]
fn mapped_address_matches_ipv4_rules() {
    let policy = policy(DNS_AND_WEB);
    assert_eq!(
        rule_index(&policy, "connect tcp [::ffff:10.0.0.1]:8080"),
        Some(2)
    );
    let policy = self::policy(
        "default = \"allow\"\n[[rule]]\nop = \"connect\"\nfamily = \"inet\"\n\
         addr = \"192.0.2.0/24\"\naction = \"deny\"\n",
    );
    assert_eq!(
        rule_index(&policy, "connect tcp [::ffff:192.0.2.9]:1"),
        Some(1)
    );
    assert_eq!(
        rule_index(&policy, "connect tcp [::ffff:192.0.3.9]:1"),
        None
    );
}

#[test]
fn unspecified_destination_is_loopback_for_connect_and_send_only() {
    let policy = policy(
        "default = \"deny\"\n[[rule]]\nop = [\"connect\", \"send\", \"bind\"]\n\
         addr = \"loopback\"\naction = \"allow\"\n",
    );
    for query in [
        "connect tcp 0.0.0.0:80",
        "connect tcp [::]:80",
        "connect tcp [::ffff:0.0.0.0]:80",
        "send udp 0.0.0.0:53",
    ] {
        assert_eq!(rule_index(&policy, query), Some(1), "{query}");
    }
    // Binding the wildcard address is binding every interface, not loopback.
    assert_eq!(rule_index(&policy, "bind tcp 0.0.0.0:80"), None);
    assert_eq!(rule_index(&policy, "bind tcp [::]:80"), None);
}

#[test]
fn other_protocols_match_only_rules_for_any_protocol() {
    let policy = policy(
        "default = \"allow\"\n[[rule]]\nop = \"send\"\nproto = \"udp\"\naction = \"deny\"\n\
         [[rule]]\nop = \"send\"\naction = \"deny\"\nerrno = \"EPERM\"\n",
    );
    assert_eq!(rule_index(&policy, "send udp 192.0.2.1:1"), Some(1));
    assert_eq!(rule_index(&policy, "send other 192.0.2.1:0"), Some(2));
}

#[test]
fn traps_what_rules_name_or_the_default_needs() {
    let policy = policy(DNS_AND_WEB);
    assert!(Operation::ALL.iter().all(|&op| policy.traps(op)));

    let allow = self::policy("default = \"allow\"\n[[rule]]\nop = \"send\"\naction = \"deny\"\n");
    let trapped: Vec<_> = Operation::ALL
        .into_iter()
        .filter(|&op| allow.traps(op))
        .collect();
    assert_eq!(trapped, [Operation::Send]);

    assert!(Operation::ALL
        .iter()
        .all(|&op| !Policy::allow_all().traps(op)));

    let audit = self::policy("[default]\naction = \"allow\"\nlog = true\n");
    assert!(Operation::ALL.iter().all(|&op| audit.traps(op)));
}

#[test]
fn allow_all_allows_everything_silently() {
    let policy = Policy::allow_all();
    let decision = decide(&policy, "connect tcp 192.0.2.1:22");
    assert_eq!(decision.action, Action::Allow);
    assert!(!decision.log);
    assert_eq!(decision.rule, None);
    assert!(policy.rules().is_empty());
    assert_eq!(policy.hijack(), None);
}

#[test]
fn load_names_the_path() {
    let err = Policy::load(Path::new("/nonexistent/policy.toml")).unwrap_err();
    assert!(err.is_unreadable());
    assert_eq!(err.line, 0);
    assert!(
        err.to_string()
            .starts_with("/nonexistent/policy.toml: cannot read the policy: "),
        "{err}"
    );
}
