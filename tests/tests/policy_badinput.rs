//! Bad input: every kind of malformed policy is rejected with the position of the mistake,
//! by `policy check` (exit 2) and by `run` (exit 78); mutated policies never crash the
//! parser; bad pointers and lengths from a program get the kernel's own errors and the
//! supervisor keeps serving.

use std::path::Path;

use rumphijack_tests::policy::{
    hijack_with_policy, policy_cmd, positions, EXIT_CHECK_INVALID, EXIT_POLICY_INVALID,
};
use rumphijack_tests::{exit_code, probe, rumphijack_cmd, run, Finished, Server, TempDir, TIMEOUT};

/// One malformed policy. The error must point at the first occurrence in `text` of one of
/// `at` (a value error may be reported at its key or at the value itself) and mention
/// `names`, the offending word.
struct BadPolicy {
    name: &'static str,
    text: &'static str,
    at: &'static [&'static str],
    names: &'static str,
}

/// A policy with `default = "deny"` and one rule made of the given lines.
macro_rules! rule {
    ($($line:literal),* $(,)?) => {
        concat!("default = \"deny\"\n\n[[rule]]\n", $($line, "\n"),*)
    };
}

const RULE_HEAD: &str = rule!("comment = \"case\"");

const BAD_POLICIES: &[BadPolicy] = &[
    BadPolicy {
        name: "toml-syntax",
        text: rule!("op = = \"connect\"", "action = \"allow\""),
        at: &["= \"connect\""],
        names: "",
    },
    BadPolicy {
        name: "unknown-rule-key",
        text: rule!("op = \"connect\"", "prot = \"tcp\"", "action = \"allow\""),
        at: &["prot ="],
        names: "prot",
    },
    BadPolicy {
        name: "unknown-default-key",
        text: "[default]\naction = \"deny\"\nerrnum = \"EPERM\"\n",
        at: &["errnum"],
        names: "errnum",
    },
    BadPolicy {
        name: "bad-cidr",
        text: rule!(
            "op = \"connect\"",
            "addr = \"10.0.0.0/33\"",
            "action = \"allow\""
        ),
        at: &["\"10.0.0.0/33\"", "addr ="],
        names: "33",
    },
    BadPolicy {
        name: "bad-address",
        text: rule!(
            "op = \"connect\"",
            "addr = \"10.0.0.256\"",
            "action = \"allow\""
        ),
        at: &["\"10.0.0.256\"", "addr ="],
        names: "10.0.0.256",
    },
    BadPolicy {
        name: "unknown-named-set",
        text: rule!(
            "op = \"connect\"",
            "addr = \"loopbak\"",
            "action = \"allow\""
        ),
        at: &["\"loopbak\"", "addr ="],
        names: "loopbak",
    },
    BadPolicy {
        name: "port-out-of-range",
        text: rule!("op = \"connect\"", "port = 70000", "action = \"allow\""),
        at: &["70000", "port ="],
        names: "70000",
    },
    BadPolicy {
        name: "port-range-reversed",
        text: rule!(
            "op = \"connect\"",
            "port = \"9000-8000\"",
            "action = \"allow\""
        ),
        at: &["\"9000-8000\"", "port ="],
        names: "9000-8000",
    },
    BadPolicy {
        name: "unknown-errno",
        text: rule!("op = \"connect\"", "action = \"deny\"", "errno = \"ENOPE\""),
        at: &["\"ENOPE\"", "errno ="],
        names: "ENOPE",
    },
    BadPolicy {
        name: "errno-with-allow",
        text: rule!(
            "op = \"connect\"",
            "action = \"allow\"",
            "errno = \"EPERM\""
        ),
        at: &["\"EPERM\"", "errno ="],
        names: "errno",
    },
    BadPolicy {
        name: "unknown-op",
        text: rule!("op = \"conect\"", "action = \"allow\""),
        at: &["\"conect\"", "op ="],
        names: "conect",
    },
    BadPolicy {
        name: "unknown-op-in-list",
        text: rule!("op = [\"connect\", \"acept\"]", "action = \"allow\""),
        at: &["\"acept\"", "op ="],
        names: "acept",
    },
    BadPolicy {
        name: "unknown-proto",
        text: rule!("op = \"connect\"", "proto = \"sctp\"", "action = \"allow\""),
        at: &["\"sctp\"", "proto ="],
        names: "sctp",
    },
    BadPolicy {
        name: "unknown-action",
        text: rule!("op = \"connect\"", "action = \"drop\""),
        at: &["\"drop\"", "action ="],
        names: "drop",
    },
    BadPolicy {
        name: "missing-default",
        text: "[[rule]]\nop = \"connect\"\naction = \"allow\"\n",
        at: &[""],
        names: "default",
    },
];

/// 1-based line and column of byte `offset` in `text`.
fn line_col(text: &str, offset: usize) -> (u32, u32) {
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map_or(0, |nl| nl + 1) + 1;
    (line as u32, col as u32)
}

fn expected_positions(case: &BadPolicy) -> Vec<(u32, u32)> {
    case.at
        .iter()
        .map(|needle| {
            let offset = case.text.find(needle).unwrap_or_else(|| {
                panic!("test bug: {:?} not in case {}", needle, case.name);
            });
            line_col(case.text, offset)
        })
        .collect()
}

fn check(file: &Path) -> Finished {
    let mut cmd = policy_cmd(["check"]);
    cmd.arg(file);
    run(cmd, TIMEOUT)
}

/// The first `FILE:LINE:COL` in stderr must be one of the expected positions, and the
/// message must name the offending word.
fn assert_points_at(out: &Finished, file: &Path, case: &BadPolicy, what: &str) {
    let expected = expected_positions(case);
    let found = positions(&out.stderr, file);
    assert!(
        found.first().is_some_and(|pos| expected.contains(pos)),
        "{what} {}: expected {}:LINE:COL with (LINE, COL) in {expected:?}, found {found:?}\n\
         --- policy ---\n{}\n{out}",
        case.name,
        file.display(),
        case.text
    );
    assert!(
        out.stderr.contains(case.names),
        "{what} {}: message must name {:?}\n{out}",
        case.name,
        case.names
    );
}

#[test]
fn policy_check_accepts_a_valid_policy_and_counts_its_rules() {
    let dir = TempDir::new("policy_check_accepts_a_valid_policy");
    let text = format!(
        "{RULE_HEAD}op = [\"connect\", \"send\"]\nproto = \"udp\"\naddr = [\"loopback\", \
         \"10.0.0.0/8\", \"::ffff:192.0.2.0/120\"]\nport = \"53-54\"\naction = \"allow\"\n\
         log = true\n\n[[rule]]\nop = \"bind\"\nfamily = \"inet6\"\naddr = \"any\"\nport = \
         [80, 443]\naction = \"deny\"\nerrno = \"EPERM\"\n"
    );
    let file = dir.write("good.toml", &text);
    let out = check(&file);
    out.assert_success("a valid policy must pass `policy check`");
    assert!(
        out.stdout
            .contains(&format!("{}: ok (2 rules)", file.display())),
        "`policy check` must print FILE: ok (N rules)\n{out}"
    );
}

#[test]
fn each_kind_of_malformed_policy_is_reported_at_its_position() {
    let dir = TempDir::new("each_kind_of_malformed_policy");
    let mut failures = Vec::new();
    for case in BAD_POLICIES {
        let file = dir.write(&format!("{}.toml", case.name), case.text);
        let out = check(&file);
        let result = std::panic::catch_unwind(|| {
            out.assert_code(EXIT_CHECK_INVALID, &format!("policy check {}", case.name));
            assert_points_at(&out, &file, case, "policy check");
        });
        if let Err(panic) = result {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .unwrap_or_else(|| "non-string panic".into());
            failures.push(msg);
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} malformed policies were not reported precisely:\n\n{}",
        failures.len(),
        BAD_POLICIES.len(),
        failures.join("\n\n")
    );
}

#[test]
fn run_refuses_a_malformed_policy_with_exit_78() {
    let dir = TempDir::new("run_refuses_a_malformed_policy");
    let server = Server::isolated(dir.path(), "stack");
    for case in BAD_POLICIES.iter().filter(|c| {
        [
            "toml-syntax",
            "bad-cidr",
            "errno-with-allow",
            "missing-default",
        ]
        .contains(&c.name)
    }) {
        let file = dir.write(&format!("{}.toml", case.name), case.text);
        let marker = dir.join(&format!("{}.ran", case.name));
        let touch = ["touch".as_ref(), marker.as_os_str()];

        let out = run(
            hijack_with_policy(&server.url(), &file, None, touch),
            TIMEOUT,
        );
        out.assert_code(EXIT_POLICY_INVALID, &format!("run --policy {}", case.name));
        assert_points_at(&out, &file, case, "run --policy");

        // The environment variable is the same as the option.
        let mut cmd = rumphijack_cmd();
        cmd.env("RUMPHIJACK_POLICY", &file)
            .args(["run", "--server", &server.url(), "--"])
            .args(touch);
        let out = run(cmd, TIMEOUT);
        out.assert_code(
            EXIT_POLICY_INVALID,
            &format!("RUMPHIJACK_POLICY={}", case.name),
        );
        assert_points_at(&out, &file, case, "RUMPHIJACK_POLICY");
        assert!(
            !marker.exists(),
            "the program must not run under a bad policy"
        );
    }
}

/// A small deterministic generator (xorshift64*), so a failing mutation can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Characters that matter to TOML and to the policy grammar.
const MUTATION_CHARS: &[u8] = b"\"'[]{}=,.-:/#\n 0123456789abcxyzE\\";

fn mutate(rng: &mut Rng, text: &str) -> String {
    let mut bytes = text.as_bytes().to_vec();
    for _ in 0..1 + rng.below(3) {
        let at = rng.below(bytes.len());
        match rng.below(4) {
            0 => {
                bytes.remove(at);
            }
            1 => bytes.insert(at, MUTATION_CHARS[rng.below(MUTATION_CHARS.len())]),
            2 => bytes[at] = MUTATION_CHARS[rng.below(MUTATION_CHARS.len())],
            _ => bytes.truncate(at.max(1)),
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

#[test]
fn mutated_policies_are_accepted_or_rejected_with_a_position_never_crash() {
    const MUTATIONS: usize = 300;
    let dir = TempDir::new("mutated_policies");
    let seed_text = format!(
        "hijack = \"socket=all:nolocal\"\n[default]\naction = \"deny\"\nerrno = \"ECONNREFUSED\"\n\
         log = true\n\n{}op = [\"connect\", \"send\"]\nproto = \"tcp\"\n\
         addr = [\"127.0.0.0/8\", \"::1\", \"private\"]\nport = \"8000-8100\"\naction = \"deny\"\n\
         errno = \"ENETUNREACH\"\nlog = true\n",
        &RULE_HEAD[RULE_HEAD.find("[[rule]]").expect("rule head")..]
    );
    check(&dir.write("seed.toml", &seed_text)).assert_success("the seed policy is valid");

    let mut rng = Rng(0x5eed_0f90_11c7);
    for i in 0..MUTATIONS {
        let text = mutate(&mut rng, &seed_text);
        let file = dir.write("mutant.toml", &text);
        let out = check(&file);
        let lines = text.lines().count() as u32 + 1;
        let sane = match exit_code(out.status) {
            0 => true,
            EXIT_CHECK_INVALID => positions(&out.stderr, &file)
                .first()
                .is_some_and(|&(line, col)| (1..=lines).contains(&line) && col >= 1),
            _ => false,
        };
        assert!(
            sane,
            "mutation {i}: `policy check` must exit 0, or 2 with FILE:LINE:COL inside the \
             file\n--- policy ---\n{text}\n{out}"
        );
    }
}

/// The results the probe prints, minus the accepted peer's port (which differs per run).
fn bad_pointer_results(out: &Finished) -> Vec<String> {
    out.stdout
        .lines()
        .map(|l| match l.split_once(':') {
            Some((head, _)) if l.starts_with("accepted") => head.to_string(),
            _ => l.to_string(),
        })
        .collect()
}

#[test]
fn bad_pointers_and_lengths_get_the_kernels_errors_and_the_supervisor_keeps_serving() {
    let dir = TempDir::new("bad_pointers_and_lengths");
    let server = Server::isolated(dir.path(), "stack");
    // Default deny traps every checked call; the rule lets loopback traffic through, so the
    // probe's own listener (bind, listen, accept) and connects work.
    let policy = dir.write(
        "policy.toml",
        "default = \"deny\"\n\n[[rule]]\nop = [\"connect\", \"send\", \"bind\", \"listen\", \
         \"accept\"]\naddr = \"loopback\"\naction = \"allow\"\n",
    );

    let mut native = std::process::Command::new(probe!());
    native.arg("bad-pointers");
    let native = run(native, TIMEOUT);
    native.assert_success("bad-pointers natively");
    for expected in [
        "connect-bad-pointer errno=EFAULT",
        "connect-huge-len errno=EINVAL",
        "connect-negative-len errno=EINVAL",
        "sendto-bad-pointer errno=EFAULT",
        "sendmsg-unmapped-name errno=EFAULT",
        "sendmmsg-second-bad ret=1",
        "connect-after ret=0",
    ] {
        assert!(
            native.stdout.lines().any(|l| l == expected),
            "test bug: the kernel itself must answer {expected}\n{native}"
        );
    }

    let supervised = run(
        hijack_with_policy(&server.url(), &policy, None, [probe!(), "bad-pointers"]),
        TIMEOUT,
    );
    supervised.assert_success("bad-pointers under a policy trapping connect and send");
    assert_eq!(
        bad_pointer_results(&supervised),
        bad_pointer_results(&native),
        "under the supervisor every bad call must fail as natively, and the final connect \
         must still be served\n--- native ---\n{}\n--- supervised ---\n{supervised}",
        native.stdout
    );
}
