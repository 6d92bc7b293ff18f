use super::*;

fn families(s: &str) -> Vec<i32> {
    HijackSpec::parse(s).unwrap().families().collect()
}

fn every_family_but(excluded: &[i32]) -> Vec<i32> {
    (0..AF_MAX).filter(|f| !excluded.contains(f)).collect()
}

#[test]
fn default_is_everything_but_local() {
    let spec = HijackSpec::default();
    assert!(!spec.redirects(libc::AF_UNIX));
    assert!(spec.redirects(libc::AF_INET));
    assert!(spec.redirects(libc::AF_INET6));
    assert!(spec.redirects(libc::AF_NETLINK));
    assert_eq!(
        spec.families().collect::<Vec<_>>(),
        every_family_but(&[libc::AF_UNIX])
    );
    assert_eq!(HijackSpec::parse(DEFAULT).unwrap(), spec);
    assert_eq!(spec.to_string(), "socket=all:nolocal");
}

#[test]
fn unset_variable_means_default() {
    assert_eq!(HijackSpec::from_env_value(None), Ok(HijackSpec::default()));
    assert_eq!(
        HijackSpec::from_env_value(Some("socket=inet".into())),
        Ok(HijackSpec::parse("socket=inet").unwrap())
    );
}

#[test]
fn inet_and_inet6_only() {
    assert_eq!(
        families("socket=inet:inet6"),
        [libc::AF_INET, libc::AF_INET6]
    );
    let spec = HijackSpec::parse("socket=inet:inet6").unwrap();
    assert!(!spec.redirects(libc::AF_UNIX));
    assert!(!spec.redirects(libc::AF_NETLINK));
    assert_eq!(spec.to_string(), "socket=inet:inet6");
}

#[test]
fn none_then_a_family() {
    assert_eq!(families("socket=none:inet"), [libc::AF_INET]);
    assert_eq!(families("socket=inet6:no:inet"), [libc::AF_INET]);
    assert_eq!(families("socket=none"), Vec::<i32>::new());
    assert_eq!(
        HijackSpec::parse("socket=no").unwrap().to_string(),
        "socket=none"
    );
}

#[test]
fn all_covers_every_family_number_below_af_max() {
    let spec = HijackSpec::parse("socket=all").unwrap();
    assert_eq!(spec.families().collect::<Vec<_>>(), every_family_but(&[]));
    assert!(spec.redirects(0));
    assert!(spec.redirects(AF_MAX - 1));
    assert!(!spec.redirects(AF_MAX));
    assert!(!spec.redirects(-1));
    assert!(!spec.redirects(i32::MAX));
    assert_eq!(spec.to_string(), "socket=all");
}

#[test]
fn items_apply_left_to_right() {
    assert_eq!(families("socket=noinet:inet"), [libc::AF_INET]);
    assert_eq!(families("socket=inet:noinet"), Vec::<i32>::new());
    assert_eq!(families("socket=inet:all:noinet:noinet6").len(), 44);
    assert_eq!(families("socket=all:none:inet6"), [libc::AF_INET6]);
}

#[test]
fn aliases_name_the_same_family() {
    assert_eq!(families("socket=unix"), families("socket=local"));
    assert_eq!(families("socket=route"), [libc::AF_NETLINK]);
    assert_eq!(families("socket=link"), [libc::AF_PACKET]);
    assert_eq!(
        HijackSpec::parse("socket=all:nounix").unwrap(),
        HijackSpec::default()
    );
    assert_eq!(
        HijackSpec::parse("socket=route:link").unwrap().to_string(),
        "socket=netlink:packet"
    );
}

#[test]
fn every_family_name_parses_to_its_number() {
    for &(name, family) in FAMILIES {
        assert!((0..AF_MAX).contains(&family), "{name}");
        assert_eq!(families(&format!("socket={name}")), [family], "{name}");
    }
    assert_eq!(families("socket=mctp"), [45]);
    assert_eq!(families("socket=qipcrtr:smc"), [42, 43]);
}

#[test]
fn display_round_trips() {
    for s in [
        "socket=all:nolocal",
        "socket=inet:inet6",
        "socket=none",
        "socket=all",
        "socket=all:noinet:noinet6:nonetlink",
        "socket=local:netlink:vsock:mctp",
        "socket=link:route:inet:nonetlink",
    ] {
        let spec = HijackSpec::parse(s).unwrap();
        let canonical = spec.to_string();
        assert_eq!(
            HijackSpec::parse(&canonical).unwrap(),
            spec,
            "{s} -> {canonical}"
        );
    }
}

#[test]
fn from_str_parses() {
    let spec: HijackSpec = "socket=inet".parse().unwrap();
    assert_eq!(spec.families().collect::<Vec<_>>(), [libc::AF_INET]);
}

#[test]
fn empty_value_is_refused() {
    assert_eq!(HijackSpec::parse(""), Err(HijackError::Empty));
    assert_eq!(
        HijackSpec::from_env_value(Some("".into())),
        Err(HijackError::Empty)
    );
    assert_eq!(
        HijackSpec::parse("socket="),
        Err(HijackError::EmptyValue {
            key: "socket".into()
        })
    );
}

#[test]
fn malformed_entries_are_refused() {
    assert!(matches!(
        HijackSpec::parse("socket"),
        Err(HijackError::MissingEquals { .. })
    ));
    assert!(matches!(
        HijackSpec::parse("=inet"),
        Err(HijackError::EmptyKey { .. })
    ));
    assert!(matches!(
        HijackSpec::parse("socket=inet,"),
        Err(HijackError::EmptyEntry { .. })
    ));
    assert!(matches!(
        HijackSpec::parse(",socket=inet"),
        Err(HijackError::EmptyEntry { .. })
    ));
}

#[test]
fn duplicate_key_is_refused() {
    assert_eq!(
        HijackSpec::parse("socket=inet,socket=inet6"),
        Err(HijackError::DuplicateKey {
            key: "socket".into()
        })
    );
}

#[test]
fn empty_items_are_refused() {
    for s in ["socket=inet::inet6", "socket=:inet", "socket=inet:"] {
        assert!(
            matches!(HijackSpec::parse(s), Err(HijackError::EmptyItem { .. })),
            "{s}"
        );
    }
}

#[test]
fn unknown_family_is_named_with_the_valid_names() {
    for bad in ["ipx", "INET", "inet4", "noipx", "noall", " inet", "nono"] {
        let err = HijackSpec::parse(&format!("socket=inet:{bad}")).unwrap_err();
        assert_eq!(err, HijackError::UnknownFamily { item: bad.into() });
        let text = err.to_string();
        assert!(text.contains(&format!("{bad:?}")), "{text}");
        assert!(text.contains("inet6") && text.contains("netlink"), "{text}");
    }
}

#[test]
fn netbsd_only_keys_say_why() {
    for key in ["path", "blanket", "vfs", "sysctl", "modctl", "fdoff"] {
        let err = HijackSpec::parse(&format!("{key}=x,socket=inet")).unwrap_err();
        assert!(
            matches!(&err, HijackError::NetbsdOnlyKey { key: k, .. } if k == key),
            "{err:?}"
        );
        assert!(err.to_string().contains("no meaning here"), "{err}");
    }
    let err = HijackSpec::parse("socket=inet,path=/rump").unwrap_err();
    assert!(err.to_string().contains("file-system paths"), "{err}");
}

#[test]
fn unknown_key_is_refused() {
    assert_eq!(
        HijackSpec::parse("sockets=inet"),
        Err(HijackError::UnknownKey {
            key: "sockets".into()
        })
    );
    assert!(HijackSpec::parse("Socket=inet")
        .unwrap_err()
        .to_string()
        .contains("\"socket\""));
}

#[test]
fn non_utf8_value_is_refused() {
    use std::os::unix::ffi::OsStringExt;
    let raw = OsString::from_vec(b"socket=\xff".to_vec());
    assert!(matches!(
        HijackSpec::from_env_value(Some(raw)),
        Err(HijackError::NotUnicode { .. })
    ));
}
