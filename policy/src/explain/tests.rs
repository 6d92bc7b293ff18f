use super::*;

#[test]
fn parses_queries() {
    let q = parse_query("connect tcp 10.1.2.3:443").unwrap();
    assert_eq!(q.op, Operation::Connect);
    assert_eq!(q.protocol, Protocol::Tcp);
    assert_eq!(q.addr, "10.1.2.3:443".parse().unwrap());

    let q = parse_query("send udp [::1]:53").unwrap();
    assert_eq!((q.op, q.protocol), (Operation::Send, Protocol::Udp));
    assert_eq!(q.addr, "[::1]:53".parse().unwrap());

    let q = parse_query("  accept   any 1.2.3.4  ").unwrap();
    assert_eq!((q.op, q.protocol), (Operation::Accept, Protocol::Other));
    assert_eq!(q.addr, "1.2.3.4:0".parse().unwrap());

    assert_eq!(parse_query("bind tcp fe80::1").unwrap().addr.port(), 0);
    assert_eq!(
        parse_query(&q.to_string()).unwrap(),
        q,
        "Display reads back"
    );
}

#[test]
fn rejects_bad_queries() {
    for (text, needle) in [
        ("", "not a query"),
        ("connect tcp", "not a query"),
        ("connect tcp 1.2.3.4:5 extra", "not a query"),
        ("recv tcp 1.2.3.4:5", "unknown operation"),
        ("connect sctp 1.2.3.4:5", "unknown protocol"),
        ("connect tcp 1.2.3:5", "not an address"),
        ("connect tcp 1.2.3.4:70000", "not an address"),
    ] {
        let err = parse_query(text).unwrap_err();
        assert!(err.contains(needle), "{text:?}: {err}");
    }
}

#[test]
fn explains_each_rule_tried_and_the_decision() {
    let policy = Policy::parse(
        "[default]\naction = \"deny\"\nerrno = \"ECONNREFUSED\"\n\n\
         [[rule]]\ncomment = \"DNS\"\nop = \"send\"\nport = 53\naction = \"allow\"\n\n\
         [[rule]]\nop = \"connect\"\naddr = \"loopback\"\nport = 80\naction = \"allow\"\n",
        "p.toml",
    )
    .unwrap();

    let text = explain(&policy, &parse_query("connect tcp 0.0.0.0:80").unwrap());
    assert_eq!(
        text,
        "query: connect tcp 0.0.0.0:80\n  \
         matched as: connect tcp 127.0.0.1:80 (the kernel sends to an unspecified \
         destination on loopback)\n  \
         rule 1 (p.toml:5:1, \"DNS\"): allow send any any port 53: no, the operation is \
         connect\n  \
         rule 2 (p.toml:11:1): allow connect any loopback port 80: MATCHES\n\
         decision: allow, not logged, by rule 2 (p.toml:11:1)\n"
    );

    let text = explain(
        &policy,
        &parse_query("connect tcp [::ffff:10.0.0.1]:81").unwrap(),
    );
    assert!(
        text.contains("matched as: connect tcp 10.0.0.1:81 (an IPv4-mapped"),
        "{text}"
    );
    assert!(text.contains("no, 10.0.0.1 is not in loopback"), "{text}");
    assert!(
        text.ends_with(
            "decision: deny with ECONNREFUSED (errno 111), not logged, \
             by the default at p.toml:1:1 (no rule matches)\n"
        ),
        "{text}"
    );
}
