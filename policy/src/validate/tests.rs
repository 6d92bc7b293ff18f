use super::*;

const RULE_START: &str = "default = \"deny\"\n[[rule]]\n";

/// Parses `text` and returns the error as `line:column: message`.
fn error(text: &str) -> String {
    let err = Policy::parse(text, "p.toml").unwrap_err();
    assert_eq!(err.origin, "p.toml");
    assert!(err.to_string().starts_with("p.toml:"), "{err}");
    format!("{}:{}: {}", err.line, err.column, err.message)
}

/// Asserts that `text` fails at `position` (`line:column`) with a message containing `needle`.
#[track_caller]
fn assert_error(text: &str, position: &str, needle: &str) {
    let err = error(text);
    assert!(
        err.starts_with(&format!("{position}: ")) && err.contains(needle),
        "expected {position}: …{needle}…, got {err}"
    );
}

/// A rule with `line` added to an otherwise valid body; the body starts on line 3.
fn rule(line: &str) -> String {
    format!("{RULE_START}{line}\nop = \"connect\"\naction = \"deny\"\n")
}

#[test]
fn toml_syntax_error() {
    assert_error("default = \"deny\n", "1:16", "");
    assert_error(
        "default = \"deny\"\n[[rule]\n",
        "2:7",
        "invalid table header; expected",
    );
}

#[test]
fn unknown_keys_are_errors() {
    assert_error(
        "default = \"deny\"\nfoo = 1\n",
        "2:1",
        "unknown field `foo`",
    );
    assert_error(&rule("prot = \"tcp\""), "3:1", "unknown field `prot`");
    assert_error(
        "[default]\naction = \"deny\"\nerrorno = \"EPERM\"\n",
        "3:1",
        "unknown field `errorno`",
    );
}

#[test]
fn wrong_types() {
    assert_error(&rule("log = \"yes\""), "3:7", "expected a boolean");
    assert_error(&rule("proto = 6"), "3:9", "expected a string");
    assert_error(&rule("port = true"), "3:8", "a port number");
    assert_error(&rule("addr = 10"), "3:8", "an address");
    assert_error(&rule("addr = [[\"10.0.0.0/8\"]]"), "3:9", "an address");
    assert_error("default = 1\n", "1:11", "\"allow\", \"deny\" or a table");
    assert_error(
        "default = \"deny\"\n[rule]\nop = \"send\"\n",
        "2:1",
        "[[rule]]",
    );
}

#[test]
fn bad_addresses() {
    assert_error(
        &rule("addr = \"10.0.0.0/33\""),
        "3:8",
        "prefix length from 0 to 32",
    );
    assert_error(
        &rule("addr = \"1.2.3\""),
        "3:8",
        "not an IPv4 or IPv6 address",
    );
    assert_error(
        &rule("addr = [\"loopback\", \"lan\"]"),
        "3:21",
        "named set (loopback, any, private, link-local)",
    );
    assert_error(&rule("addr = \"10.0.0.1/8\""), "3:8", "10.0.0.0/8");
    assert_error(&rule("addr = []"), "3:8", "`addr` is an empty array");
    assert_error(
        &rule("family = \"inet\"\naddr = \"fd00::/8\""),
        "4:8",
        "could never match",
    );
    assert_error(
        &rule("family = \"inet6\"\naddr = \"::ffff:10.0.0.0/104\""),
        "4:8",
        "IPv4-mapped addresses count as IPv4",
    );
}

#[test]
fn bad_ports() {
    assert_error(&rule("port = 70000"), "3:8", "port 70000 is out of range");
    assert_error(&rule("port = -1"), "3:8", "out of range");
    assert_error(&rule("port = \"90-80\""), "3:8", "ends before it starts");
    assert_error(
        &rule("port = [53, \"http\"]"),
        "3:13",
        "not a port or port range",
    );
    assert_error(&rule("port = \"1-70000\""), "3:8", "not a port");
    assert_error(&rule("port = []"), "3:8", "`port` is an empty array");
}

#[test]
fn bad_actions_and_errnos() {
    assert_error(
        "default = \"deny\"\n[[rule]]\nop = \"send\"\naction = \"permit\"\n",
        "4:10",
        "unknown action \"permit\"; expected \"allow\" or \"deny\"",
    );
    assert_error(
        "default = \"deny\"\n[[rule]]\nop = \"send\"\naction = \"allow\"\nerrno = \"EPERM\"\n",
        "5:9",
        "only for action = \"deny\"",
    );
    assert_error(
        "default = \"deny\"\n[[rule]]\nop = \"send\"\naction = \"deny\"\nerrno = \"ENOENT\"\n",
        "5:9",
        "expected one of EACCES, ECONNREFUSED, ENETUNREACH, EPERM",
    );
    assert_error(
        "[default]\naction = \"allow\"\nerrno = \"EPERM\"\n",
        "3:9",
        "only for action = \"deny\"",
    );
    assert_error("default = \"block\"\n", "1:11", "unknown default \"block\"");
}

#[test]
fn bad_operations_protocols_families() {
    assert_error(
        "default = \"deny\"\n[[rule]]\nop = \"conect\"\naction = \"deny\"\n",
        "3:6",
        "unknown operation \"conect\"",
    );
    assert_error(
        "default = \"deny\"\n[[rule]]\nop = [\"send\", \"recv\"]\naction = \"deny\"\n",
        "3:15",
        "unknown operation \"recv\"",
    );
    assert_error(
        "default = \"deny\"\n[[rule]]\nop = []\naction = \"deny\"\n",
        "3:6",
        "`op` is an empty array",
    );
    assert_error(
        &rule("proto = \"sctp\""),
        "3:9",
        "expected \"tcp\", \"udp\" or \"any\"",
    );
    assert_error(
        &rule("family = \"ipv4\""),
        "3:10",
        "expected \"inet\", \"inet6\" or \"any\"",
    );
}

#[test]
fn missing_required_keys() {
    assert_error("", "1:1", "no `default`");
    assert_error(
        "[[rule]]\nop = \"send\"\naction = \"deny\"\n",
        "1:1",
        "no `default`",
    );
    assert_error(
        "[default]\nlog = true\n",
        "1:1",
        "[default] has no `action`",
    );
    assert_error(
        "default = \"deny\"\n\n[[rule]]\naction = \"deny\"\n",
        "3:1",
        "rule 1 has no `op`",
    );
    assert_error(
        "default = \"deny\"\n[[rule]]\nop = \"send\"\naction = \"deny\"\n[[rule]]\nop = \"send\"\n",
        "5:1",
        "rule 2 has no `action`",
    );
}

#[test]
fn bad_hijack() {
    assert_error(
        "hijack = \"socket=inet:bogus\"\ndefault = \"allow\"\n",
        "1:10",
        "invalid `hijack`",
    );
}

#[test]
fn columns_count_characters_not_bytes() {
    assert_error(
        "default = \"deny\"\n[[rule]]\ncomment = \"é\"; op = 1\n",
        "3:14",
        "expected newline",
    );
    assert_eq!(position("aé\nb", 3), (1, 3));
    assert_eq!(position("aé\nb", 5), (2, 2));
    assert_eq!(position("ab", 99), (1, 3));
}

#[test]
fn valid_policy_parses_in_full() {
    let policy = Policy::parse(
        r#"
hijack = "socket=inet:inet6"

[default]
action = "deny"
errno = "ECONNREFUSED"
log = true

[[rule]]
comment = "DNS"
op = "send"
proto = "udp"
family = "inet"
addr = ["127.0.0.0/8", "::ffff:10.0.0.0/104"]
port = [53, "5353-5354"]
action = "allow"

[[rule]]
op = ["bind", "listen"]
addr = ["loopback", "any"]
action = "deny"
errno = "EPERM"
log = true
"#,
        "p.toml",
    )
    .unwrap();

    assert_eq!(
        policy.hijack(),
        Some(HijackSpec::parse("socket=inet:inet6").unwrap())
    );
    let default = policy.default_rule();
    assert_eq!(default.action, deny(libc::ECONNREFUSED));
    assert!(default.log);
    assert_eq!((default.line, default.column), (4, 1));

    let [dns, bind] = policy.rules() else {
        panic!("two rules expected");
    };
    assert_eq!((dns.index, dns.line, dns.column), (1, 9, 1));
    assert_eq!(dns.comment.as_deref(), Some("DNS"));
    assert_eq!(
        dns.to_string(),
        "allow send udp inet 127.0.0.0/8,10.0.0.0/8 port 53,5353-5354"
    );
    assert_eq!((bind.index, bind.line), (2, 18));
    assert_eq!(bind.to_string(), "deny EPERM bind,listen any any log");
}
