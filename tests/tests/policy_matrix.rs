//! Real programs under policies equivalent to each example in `policy/examples/`: allowed
//! destinations work, denied ones fail with the configured errno as the program reports it,
//! and a recorder in the same stack, running without a policy, confirms that no denied
//! connection or datagram arrived.
//!
//! The stack hosts a namespace with a non-loopback address (`SubnetStack`), so loopback and
//! non-loopback destinations can both be tried without any packet leaving the machine.
//!
//! Also: every file in `policy/examples/` passes `policy check`, and `policy explain` names
//! the deciding rule for equivalent spellings of an address.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use rumphijack_tests::clients::{
    Client, Denial, Expect, EACCES, ECONNREFUSED, ENETUNREACH, EPERM, PROXY_ENV,
};
use rumphijack_tests::policy::{
    audit_records, hijack_with_policy, policy_cmd, positions, SubnetStack, LOCAL_V4, LOCAL_V6,
};
use rumphijack_tests::{
    argv, field, hijack, python3, require_program, require_root, run, write_helper, Finished,
    Spawned, TempDir, TIMEOUT,
};

use Client::{Curl, Nc, Python, SocatConnect, SocatSendto, Wget};

/// Like `deny-all-but-loopback.toml`: loopback only; outbound connects look refused.
const DENY_ALL_BUT_LOOPBACK: &str = r#"
[default]
action = "deny"
log = true

[[rule]]
op = ["connect", "bind", "listen", "accept", "send"]
addr = "loopback"
action = "allow"

[[rule]]
op = "connect"
action = "deny"
errno = "ECONNREFUSED"
log = true
"#;

/// Like `web-client.toml`: DNS, HTTP(S) and loopback; the rest is unreachable.
const WEB_CLIENT: &str = r#"
[default]
action = "deny"
errno = "ENETUNREACH"
log = true

[[rule]]
comment = "DNS"
op = ["send", "connect"]
port = 53
action = "allow"

[[rule]]
comment = "HTTP(S)"
op = "connect"
proto = "tcp"
port = [80, 443]
action = "allow"

[[rule]]
op = ["connect", "send"]
addr = "loopback"
action = "allow"
"#;

/// Like `server-only.toml`: a service on TCP 8080, clients from anywhere, nothing out.
const SERVER_ONLY: &str = r#"
default = "deny"

[[rule]]
op = ["bind", "listen"]
proto = "tcp"
port = 8080
action = "allow"

[[rule]]
op = "accept"
proto = "tcp"
action = "allow"

[[rule]]
op = ["connect", "send"]
action = "deny"
errno = "EPERM"
"#;

/// Like `audit-only.toml`: everything allowed and logged.
const AUDIT_ONLY: &str = r#"
[default]
action = "allow"
log = true
"#;

/// One client run and what it must show.
struct Attempt {
    client: Client,
    host: &'static str,
    port: u16,
    expect: Expect,
}

const fn allowed(client: Client, host: &'static str, port: u16) -> Attempt {
    Attempt {
        client,
        host,
        port,
        expect: Expect::Allowed,
    }
}

const fn denied(client: Client, host: &'static str, port: u16, errno: &'static Denial) -> Attempt {
    Attempt {
        client,
        host,
        port,
        expect: Expect::Denied(errno),
    }
}

/// A stack with a recorder and the helper script.
struct Matrix {
    dir: TempDir,
    stack: SubnetStack,
    script: PathBuf,
    recorders: Vec<Spawned>,
}

impl Matrix {
    /// None when a prerequisite is missing (skipped loudly, or failed under CI).
    fn start(test: &str) -> Option<Matrix> {
        let programs = ["python3", "curl", "busybox", "socat"];
        if !require_root(test) || !programs.iter().all(|p| require_program(test, p)) {
            return None;
        }
        let dir = TempDir::new(test);
        let stack = SubnetStack::start(&dir, "stack");
        let script = write_helper(&dir);
        Some(Matrix {
            dir,
            stack,
            script,
            recorders: Vec::new(),
        })
    }

    /// Starts `rh.py recorder` on `endpoints` (`tcp:HOST:PORT`, `udp:HOST:PORT`), under
    /// `policy` if given, and returns its log and its setup report.
    fn recorder(&mut self, name: &str, policy: Option<&Path>, endpoints: &[&str]) -> Recorder {
        let log = self.dir.join(&format!("{name}.log"));
        let mut args = argv![python3(), "-u", &self.script, "recorder", &log];
        args.extend(endpoints.iter().map(Into::into));
        let cmd = match policy {
            Some(policy) => hijack_with_policy(&self.stack.url(), policy, None, args),
            None => hijack(&self.stack.url(), args),
        };
        let mut recorder = Spawned::start(cmd, self.dir.path(), name);
        let mut setup = Vec::new();
        while setup.last().map(String::as_str) != Some("listening") {
            setup.push(recorder.next_line(TIMEOUT));
        }
        let report = format!("{}\n{}", setup.join("\n"), recorder.diagnostics());
        self.recorders.push(recorder);
        Recorder { log, setup, report }
    }

    fn policy(&self, name: &str, text: &str) -> PathBuf {
        self.dir.write(name, text)
    }

    /// Runs every attempt under `policy`, and fails listing every attempt that did not show
    /// what it should.
    fn run_all(&self, policy: &Path, audit: Option<&Path>, attempts: &[Attempt]) {
        let mut failures = Vec::new();
        for attempt in attempts {
            let args = attempt
                .client
                .argv(&self.script, attempt.host, attempt.port);
            let mut cmd = hijack_with_policy(&self.stack.url(), policy, audit, args);
            for var in PROXY_ENV {
                cmd.env_remove(var);
            }
            let out = run(cmd, TIMEOUT);
            if let Err(why) = attempt.client.check(&out, &attempt.expect) {
                failures.push(format!(
                    "{:?} to {}:{}: {why}\n{out}",
                    attempt.client, attempt.host, attempt.port
                ));
            }
        }
        assert!(
            failures.is_empty(),
            "{} of {} client runs under {} went wrong:\n\n{}",
            failures.len(),
            attempts.len(),
            policy.display(),
            failures.join("\n\n")
        );
    }
}

#[derive(Debug)]
struct Recorder {
    log: PathBuf,
    setup: Vec<String>,
    report: String,
}

impl Recorder {
    fn assert_bound(&self) {
        assert!(
            self.setup
                .iter()
                .all(|l| l.ends_with(" ok") || l == "listening"),
            "the recorder must bind every endpoint\n{}",
            self.report
        );
    }

    /// The local endpoints that received something: `tcp HOST:PORT` and `udp HOST:PORT`.
    fn arrivals(&self) -> BTreeSet<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with("tcp ") || l.starts_with("udp "))
            .map(|l| l.splitn(3, ' ').take(2).collect::<Vec<_>>().join(" "))
            .collect()
    }

    fn assert_arrivals(&self, expected: &[String]) {
        let expected: BTreeSet<String> = expected.iter().cloned().collect();
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        assert_eq!(
            self.arrivals(),
            expected,
            "the server side must have received exactly the allowed connections and \
             datagrams\n--- recorder log ---\n{log}"
        );
    }
}

const LOOP_TCP: u16 = 8080;
const LOOP_UDP: u16 = 5300;
const FAR_TCP: u16 = 8081;
const FAR_UDP: u16 = 5301;

#[test]
fn deny_all_but_loopback_policy() {
    let Some(mut m) = Matrix::start("deny_all_but_loopback_policy") else {
        return;
    };
    let loop_tcp = format!("tcp:127.0.0.1:{LOOP_TCP}");
    let loop6_tcp = format!("tcp:[::1]:{LOOP_TCP}");
    let loop_udp = format!("udp:127.0.0.1:{LOOP_UDP}");
    let far_tcp = format!("tcp:{LOCAL_V4}:{FAR_TCP}");
    let far6_tcp = format!("tcp:[{LOCAL_V6}]:{FAR_TCP}");
    let far_udp = format!("udp:{LOCAL_V4}:{FAR_UDP}");
    let recorder = m.recorder(
        "recorder",
        None,
        &[
            &loop_tcp, &loop6_tcp, &loop_udp, &far_tcp, &far6_tcp, &far_udp,
        ],
    );
    recorder.assert_bound();

    let policy = m.policy("deny-all-but-loopback.toml", DENY_ALL_BUT_LOOPBACK);
    let audit = m.dir.join("audit.jsonl");
    m.run_all(
        &policy,
        Some(&audit),
        &[
            allowed(Curl, "127.0.0.1", LOOP_TCP),
            allowed(Wget, "127.0.0.1", LOOP_TCP),
            allowed(Nc, "127.0.0.1", LOOP_TCP),
            allowed(Python, "::1", LOOP_TCP),
            // Other spellings of loopback are loopback too.
            allowed(Python, "::ffff:127.0.0.1", LOOP_TCP),
            allowed(Python, "0.0.0.0", LOOP_TCP),
            allowed(SocatSendto, "127.0.0.1", LOOP_UDP),
            allowed(SocatConnect, "127.0.0.1", LOOP_UDP),
            denied(Curl, LOCAL_V4, FAR_TCP, &ECONNREFUSED),
            denied(Wget, LOCAL_V4, FAR_TCP, &ECONNREFUSED),
            denied(Nc, LOCAL_V4, FAR_TCP, &ECONNREFUSED),
            denied(Python, LOCAL_V4, FAR_TCP, &ECONNREFUSED),
            denied(Python, LOCAL_V6, FAR_TCP, &ECONNREFUSED),
            // An IPv4-mapped spelling must not dodge the IPv4 decision.
            denied(Python, "::ffff:10.99.0.1", FAR_TCP, &ECONNREFUSED),
            // Datagrams fall through to the default errno (EACCES), as does a UDP connect.
            denied(SocatSendto, LOCAL_V4, FAR_UDP, &EACCES),
            denied(SocatConnect, LOCAL_V4, FAR_UDP, &ECONNREFUSED),
        ],
    );
    recorder.assert_arrivals(&[
        format!("tcp 127.0.0.1:{LOOP_TCP}"),
        format!("tcp [::1]:{LOOP_TCP}"),
        format!("udp 127.0.0.1:{LOOP_UDP}"),
    ]);

    // The audit trail has the denials with their errno.
    let records = audit_records(&m.dir, &audit);
    let denial = records.iter().find(|r| {
        field(r, "op") == Some("\"connect\"")
            && field(r, "addr") == Some("\"10.99.0.1\"")
            && field(r, "action") == Some("\"deny\"")
    });
    let denial = denial.unwrap_or_else(|| panic!("no denied connect in the audit\n{records:#?}"));
    assert_eq!(field(denial, "errno"), Some("\"ECONNREFUSED\""), "{denial}");
    assert_eq!(
        field(denial, "port"),
        Some(FAR_TCP.to_string().as_str()),
        "{denial}"
    );
}

#[test]
fn web_client_policy() {
    let Some(mut m) = Matrix::start("web_client_policy") else {
        return;
    };
    let endpoints = [
        format!("tcp:{LOCAL_V4}:80"),
        format!("tcp:{LOCAL_V4}:443"),
        format!("tcp:{LOCAL_V4}:{FAR_TCP}"),
        format!("udp:{LOCAL_V4}:53"),
        format!("udp:{LOCAL_V4}:{FAR_UDP}"),
        format!("tcp:127.0.0.1:{LOOP_TCP}"),
    ];
    let recorder = m.recorder(
        "recorder",
        None,
        &endpoints.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    recorder.assert_bound();

    let policy = m.policy("web-client.toml", WEB_CLIENT);
    m.run_all(
        &policy,
        None,
        &[
            allowed(Curl, LOCAL_V4, 80),
            allowed(Wget, LOCAL_V4, 80),
            allowed(Nc, LOCAL_V4, 443),
            allowed(Python, LOCAL_V4, 443),
            allowed(SocatSendto, LOCAL_V4, 53),
            allowed(SocatConnect, LOCAL_V4, 53),
            allowed(Python, "127.0.0.1", LOOP_TCP),
            denied(Curl, LOCAL_V4, FAR_TCP, &ENETUNREACH),
            denied(Wget, LOCAL_V4, FAR_TCP, &ENETUNREACH),
            denied(Nc, LOCAL_V4, FAR_TCP, &ENETUNREACH),
            denied(Python, LOCAL_V4, FAR_TCP, &ENETUNREACH),
            denied(SocatSendto, LOCAL_V4, FAR_UDP, &ENETUNREACH),
            denied(SocatConnect, LOCAL_V4, FAR_UDP, &ENETUNREACH),
        ],
    );
    recorder.assert_arrivals(&[
        format!("tcp {LOCAL_V4}:80"),
        format!("tcp {LOCAL_V4}:443"),
        format!("udp {LOCAL_V4}:53"),
        format!("tcp 127.0.0.1:{LOOP_TCP}"),
    ]);
}

#[test]
fn server_only_policy() {
    let Some(mut m) = Matrix::start("server_only_policy") else {
        return;
    };
    let policy = m.policy("server-only.toml", SERVER_ONLY);

    // The service runs under the policy: 8080 is allowed, 8081 is not.
    let service = m.recorder(
        "service",
        Some(&policy),
        &[
            &format!("tcp:{LOCAL_V4}:8080"),
            &format!("tcp:{LOCAL_V4}:8081"),
        ],
    );
    let refused = format!("bind tcp:{LOCAL_V4}:8081 err EACCES PermissionError");
    assert!(
        service
            .setup
            .contains(&format!("listen tcp:{LOCAL_V4}:8080 ok"))
            && service.setup.iter().any(|l| l.starts_with(&refused)),
        "the service may listen on 8080 only\n{}",
        service.report
    );
    // Somewhere it must not reach, outside the policy.
    let outside = m.recorder(
        "outside",
        None,
        &[&format!("tcp:{LOCAL_V4}:80"), &format!("udp:{LOCAL_V4}:53")],
    );
    outside.assert_bound();

    // Clients without a policy reach the service.
    for client in [Curl, Wget] {
        let args = client.argv(&m.script, LOCAL_V4, 8080);
        let mut cmd = hijack(&m.stack.url(), args);
        for var in PROXY_ENV {
            cmd.env_remove(var);
        }
        let out = run(cmd, TIMEOUT);
        if let Err(why) = client.check(&out, &Expect::Allowed) {
            panic!(
                "{client:?} to the service: {why}\n{out}\n{}",
                service.report
            );
        }
    }
    service.assert_arrivals(&[format!("tcp {LOCAL_V4}:8080")]);

    // Programs under the policy reach nothing.
    m.run_all(
        &policy,
        None,
        &[
            denied(Curl, LOCAL_V4, 80, &EPERM),
            denied(Wget, LOCAL_V4, 80, &EPERM),
            denied(Nc, LOCAL_V4, 80, &EPERM),
            denied(Python, LOCAL_V4, 80, &EPERM),
            denied(Python, "127.0.0.1", 8080, &EPERM),
            denied(SocatSendto, LOCAL_V4, 53, &EPERM),
        ],
    );
    outside.assert_arrivals(&[]);
}

#[test]
fn audit_only_policy_records_every_decision_as_json() {
    let Some(mut m) = Matrix::start("audit_only_policy") else {
        return;
    };
    let recorder = m.recorder(
        "recorder",
        None,
        &[&format!("tcp:{LOCAL_V4}:80"), &format!("udp:{LOCAL_V4}:53")],
    );
    recorder.assert_bound();
    let policy = m.policy("audit-only.toml", AUDIT_ONLY);
    let audit = m.dir.join("audit.jsonl");
    m.run_all(
        &policy,
        Some(&audit),
        &[
            allowed(Curl, LOCAL_V4, 80),
            allowed(SocatSendto, LOCAL_V4, 53),
        ],
    );
    recorder.assert_arrivals(&[format!("tcp {LOCAL_V4}:80"), format!("udp {LOCAL_V4}:53")]);

    let records = audit_records(&m.dir, &audit);
    let find = |op: &str, proto: &str, port: &str| {
        records
            .iter()
            .find(|r| {
                field(r, "op") == Some(op)
                    && field(r, "proto") == Some(proto)
                    && field(r, "port") == Some(port)
            })
            .unwrap_or_else(|| panic!("no {op} {proto} port {port} record\n{records:#?}"))
    };
    let connect = find("\"connect\"", "\"tcp\"", "80");
    let send = find("\"send\"", "\"udp\"", "53");
    for record in [connect, send] {
        assert_eq!(field(record, "addr"), Some("\"10.99.0.1\""), "{record}");
        assert_eq!(field(record, "action"), Some("\"allow\""), "{record}");
        assert_eq!(field(record, "errno"), Some("null"), "{record}");
        assert!(
            field(record, "pid").is_some_and(|p| p.parse::<u32>().is_ok()),
            "pid must be a number: {record}"
        );
        assert!(
            field(record, "rule").is_some_and(|r| r.contains("default")),
            "the default decided: {record}"
        );
    }
    assert!(
        field(connect, "program").is_some_and(|p| p.contains("curl")),
        "program names curl: {connect}"
    );
    assert!(
        field(send, "program").is_some_and(|p| p.contains("socat")),
        "program names socat: {send}"
    );
}

#[test]
fn every_example_policy_passes_policy_check() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policy/examples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&examples)
        .unwrap_or_else(|e| panic!("read {}: {e}", examples.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    for name in [
        "deny-all-but-loopback.toml",
        "web-client.toml",
        "server-only.toml",
        "audit-only.toml",
    ] {
        assert!(
            files.iter().any(|f| f.ends_with(name)),
            "policy/examples/{name} must exist; found {files:?}"
        );
    }
    for file in &files {
        let mut cmd = policy_cmd(["check"]);
        cmd.arg(file);
        let out = run(cmd, TIMEOUT);
        out.assert_success(&format!("policy check {}", file.display()));
        assert!(
            out.stdout.contains(&format!("{}: ok (", file.display())),
            "`policy check` prints FILE: ok (N rules)\n{out}"
        );
    }
}

/// The verdict of `policy explain FILE QUERY...`: the last line naming the action.
fn explain(file: &Path, query: &str) -> (String, Finished) {
    let mut cmd = policy_cmd(["explain"]);
    cmd.arg(file).args(query.split_whitespace());
    let out = run(cmd, TIMEOUT);
    out.assert_success(&format!("policy explain {query}"));
    let verdict = out
        .stdout
        .lines()
        .rev()
        .find(|l| l.contains("allow") || l.contains("deny"))
        .unwrap_or_else(|| panic!("no allow/deny in the explanation of {query}\n{out}"))
        .to_string();
    (verdict, out)
}

/// Lines `first..next` of the `index`-th (0-based) `[[rule]]` of `text` written at `file`.
fn rule_lines(text: &str, index: usize) -> std::ops::Range<u32> {
    let headers: Vec<u32> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| l.trim() == "[[rule]]")
        .map(|(i, _)| i as u32 + 1)
        .collect();
    let end = headers
        .get(index + 1)
        .copied()
        .unwrap_or(text.lines().count() as u32 + 1);
    headers[index]..end
}

/// A query, the rule that must decide it, and the action (or errno) it must get.
type Expectation = (&'static str, Decider, &'static str);

/// Which rule `policy explain` must name: the index of a `[[rule]]`, or the default.
enum Decider {
    Rule(usize),
    Default,
}

#[test]
fn policy_explain_names_the_deciding_rule_for_every_spelling() {
    let dir = TempDir::new("policy_explain_names_the_deciding_rule");
    use Decider::{Default, Rule};
    let cases: [(&str, &str, &[Expectation]); 3] = [
        (
            "deny-all-but-loopback.toml",
            DENY_ALL_BUT_LOOPBACK,
            &[
                ("connect tcp 127.0.0.1:80", Rule(0), "allow"),
                ("connect tcp [::ffff:127.0.0.1]:80", Rule(0), "allow"),
                ("connect tcp 0.0.0.0:80", Rule(0), "allow"),
                ("connect tcp [::]:80", Rule(0), "allow"),
                ("connect tcp 10.1.2.3:443", Rule(1), "ECONNREFUSED"),
                ("connect tcp [::ffff:10.1.2.3]:443", Rule(1), "ECONNREFUSED"),
                ("send udp 10.1.2.3:53", Default, "EACCES"),
            ],
        ),
        (
            "web-client.toml",
            WEB_CLIENT,
            &[
                ("send udp [::1]:53", Rule(0), "allow"),
                ("connect tcp 10.1.2.3:443", Rule(1), "allow"),
                ("connect tcp 10.1.2.3:8443", Default, "ENETUNREACH"),
            ],
        ),
        (
            "server-only.toml",
            SERVER_ONLY,
            &[
                ("bind tcp 0.0.0.0:8080", Rule(0), "allow"),
                ("bind tcp 0.0.0.0:8081", Default, "EACCES"),
                ("accept tcp 127.0.0.1:0", Rule(1), "allow"),
            ],
        ),
    ];
    let mut failures = Vec::new();
    for (name, text, queries) in cases {
        let file = dir.write(name, text);
        for (query, decider, action) in queries {
            if let Err(why) = check_explanation(&file, text, query, decider, action) {
                failures.push(format!("{name}: `{query}`: {why}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "wrong explanations:\n\n{}",
        failures.join("\n\n")
    );
}

/// Runs `policy explain` and checks the verdict names `action` (an errno implies a denial)
/// and the deciding rule's position, or the default.
fn check_explanation(
    file: &Path,
    text: &str,
    query: &str,
    decider: &Decider,
    action: &str,
) -> Result<(), String> {
    let (verdict, out) = explain(file, query);
    let deny = action != "allow";
    // The file name may itself contain "deny".
    let words = verdict.replace(&file.display().to_string(), "FILE");
    let action_ok = words.contains(action) && words.contains("deny") == deny;
    let decider_ok = match decider {
        Decider::Default => verdict.contains("default"),
        Decider::Rule(index) => {
            let lines = rule_lines(text, *index);
            positions(&verdict, file)
                .first()
                .is_some_and(|(line, _)| lines.contains(line))
        }
    };
    if action_ok && decider_ok {
        Ok(())
    } else {
        Err(format!("verdict {verdict:?}\n{out}"))
    }
}
