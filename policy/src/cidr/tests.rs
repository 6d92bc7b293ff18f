use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn host_address_is_a_full_length_prefix() {
    let cidr = Cidr::parse("192.0.2.7").unwrap();
    assert!(cidr.contains(ip("192.0.2.7")));
    assert!(!cidr.contains(ip("192.0.2.8")));
    assert_eq!(cidr.to_string(), "192.0.2.7");
    assert_eq!(Cidr::parse("::1").unwrap().to_string(), "::1");
}

#[test]
fn prefix_contains_its_range_only() {
    let cidr = Cidr::parse("172.16.0.0/12").unwrap();
    assert!(cidr.contains(ip("172.16.0.0")));
    assert!(cidr.contains(ip("172.31.255.255")));
    assert!(!cidr.contains(ip("172.32.0.0")));
    assert!(!cidr.contains(ip("172.15.255.255")));

    let cidr = Cidr::parse("fe80::/10").unwrap();
    assert!(cidr.contains(ip("febf::1")));
    assert!(!cidr.contains(ip("fec0::1")));
}

#[test]
fn zero_length_prefix_is_every_address_of_its_family() {
    assert!(Cidr::parse("0.0.0.0/0").unwrap().contains(ip("255.1.2.3")));
    assert!(!Cidr::parse("0.0.0.0/0").unwrap().contains(ip("::1")));
    assert!(Cidr::parse("::/0").unwrap().contains(ip("2001:db8::1")));
    assert!(!Cidr::parse("::/0").unwrap().contains(ip("10.0.0.1")));
}

#[test]
fn mapped_prefix_is_stored_as_ipv4() {
    assert_eq!(
        Cidr::parse("::ffff:10.0.0.0/104").unwrap(),
        Cidr::parse("10.0.0.0/8").unwrap()
    );
    assert_eq!(
        Cidr::parse("::ffff:0:0/96").unwrap(),
        Cidr::parse("0.0.0.0/0").unwrap()
    );
    assert_eq!(
        Cidr::parse("::ffff:192.0.2.1").unwrap(),
        Cidr::parse("192.0.2.1").unwrap()
    );
}

#[test]
fn bad_prefixes_say_what_was_expected() {
    let cases = [
        ("10.0.0.0/33", "expected a prefix length from 0 to 32"),
        ("::/129", "expected a prefix length from 0 to 128"),
        ("10.0.0.0/", "expected a prefix length"),
        ("10.0.0.0/+8", "not a number"),
        ("10.0.0.0/999", "too long"),
        ("1.2.3", "not an IPv4 or IPv6 address"),
        ("10.0.0.0/8/8", "not a number"),
        ("example.com", "named set"),
        (
            "10.1.0.0/8",
            "expected the prefix's first address, 10.0.0.0/8",
        ),
        ("fd00::1/8", "fd00::/8"),
    ];
    for (text, expected) in cases {
        let err = Cidr::parse(text).unwrap_err();
        assert!(err.contains(expected), "{text}: {err}");
    }
}

#[test]
fn named_sets() {
    assert!(NamedSet::Loopback.contains(ip("127.255.0.1")));
    assert!(NamedSet::Loopback.contains(ip("::1")));
    assert!(!NamedSet::Loopback.contains(ip("::2")));
    assert!(NamedSet::Private.contains(ip("192.168.1.1")));
    assert!(NamedSet::Private.contains(ip("fd12::1")));
    assert!(!NamedSet::Private.contains(ip("172.32.0.1")));
    assert!(NamedSet::LinkLocal.contains(ip("169.254.1.1")));
    assert!(NamedSet::LinkLocal.contains(ip("fe80::1")));
    assert!(NamedSet::Any.contains(ip("8.8.8.8")));
    assert!(NamedSet::Any.contains(ip("2001:db8::1")));
    for name in NamedSet::NAMES.split(", ") {
        assert_eq!(NamedSet::from_name(name).unwrap().name(), name);
    }
}
