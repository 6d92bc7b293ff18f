//! `make install` into a staging directory, then the installed files used as a user would:
//! the binaries run (and `rumphijack run --preload` finds the installed library by itself),
//! `man` renders every page without a warning, bash-completion, zsh's compinit and fish load
//! the completions from their standard directories and complete real command lines with
//! them, and `make uninstall` removes everything again.
//!
//! The test installs the build under test (`BUILD_DIR`) and never runs cargo (`CARGO=false`):
//! `make install` builds only what is missing, and the test suite has built everything.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use rumphijack_tests::bins::bin_dir;
use rumphijack_tests::{python3, require_path, require_program, run, Finished, TempDir, TIMEOUT};

/// The installation prefix inside the staging directory (`DESTDIR`).
const PREFIX: &str = "/usr";

/// Every installed file, relative to the prefix, and its mode.
const INSTALLED: [(&str, u32); 12] = [
    ("bin/rumphijack", 0o755),
    ("bin/rump_server", 0o755),
    ("lib/librumphijack.so", 0o644),
    ("share/man/man1/rumphijack.1", 0o644),
    ("share/man/man3/librumphijack.3", 0o644),
    ("share/man/man8/rump_server.8", 0o644),
    ("share/bash-completion/completions/rumphijack", 0o644),
    ("share/bash-completion/completions/rump_server", 0o644),
    ("share/zsh/site-functions/_rumphijack", 0o644),
    ("share/zsh/site-functions/_rump_server", 0o644),
    ("share/fish/vendor_completions.d/rumphijack.fish", 0o644),
    ("share/fish/vendor_completions.d/rump_server.fish", 0o644),
];

/// A `make install` into a temporary `DESTDIR`.
struct Installation {
    dir: TempDir,
}

impl Installation {
    fn new(test: &str) -> Installation {
        let installation = Installation {
            dir: TempDir::new(test),
        };
        let out = run(installation.make("install"), TIMEOUT);
        out.assert_success("make install");
        installation
    }

    /// `make TARGET` with the staging variables and the build under test.
    fn make(&self, target: &str) -> Command {
        let build = bin_dir();
        let profile = match build.file_name().and_then(|n| n.to_str()) {
            Some("release") => "release",
            _ => "debug",
        };
        let mut make = Command::new("make");
        make.arg("-C")
            .arg(repo())
            .arg(target)
            .arg(format!("DESTDIR={}", self.dir.join("root").display()))
            .arg(format!("PREFIX={PREFIX}"))
            .arg(format!("PROFILE={profile}"))
            .arg(format!("BUILD_DIR={}", build.display()))
            .arg(format!("GEN_DIR={}", self.dir.join("generated").display()))
            .arg("CARGO=false");
        make
    }

    /// `PREFIX/<relative>` in the staging directory.
    fn path(&self, relative: &str) -> PathBuf {
        self.dir
            .join("root")
            .join(PREFIX.trim_start_matches('/'))
            .join(relative)
    }

    /// An installed program, with no rumphijack variables from the test's environment.
    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.path(&format!("bin/{program}")));
        for var in [
            "RUMP_SERVER",
            "RUMPHIJACK",
            "RUMPHIJACK_POLICY",
            "RUST_LOG",
            "LD_PRELOAD",
        ] {
            cmd.env_remove(var);
        }
        cmd
    }
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn prerequisites(test: &str) -> bool {
    require_program(test, "make") && require_program(test, "man") && require_program(test, "bash")
}

#[test]
fn make_install_puts_every_file_in_its_place_and_uninstall_removes_them() {
    let test = "make_install_puts_every_file_in_its_place_and_uninstall_removes_them";
    if !prerequisites(test) {
        return;
    }
    let installation = Installation::new(test);
    for (file, mode) in INSTALLED {
        let path = installation.path(file);
        let meta = fs::metadata(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(
            meta.permissions().mode() & 0o777,
            mode,
            "{}",
            path.display()
        );
    }
    // zsh and fish load completions by file name and first line.
    let zsh = fs::read_to_string(installation.path("share/zsh/site-functions/_rumphijack"))
        .expect("zsh completion");
    assert!(zsh.starts_with("#compdef rumphijack"), "{zsh:.200}");
    let fish =
        fs::read_to_string(installation.path("share/fish/vendor_completions.d/rump_server.fish"))
            .expect("fish completion");
    assert!(fish.contains("complete -c rump_server"), "{fish:.200}");

    let out = run(installation.make("uninstall"), TIMEOUT);
    out.assert_success("make uninstall");
    for (file, _) in INSTALLED {
        assert!(!installation.path(file).exists(), "{file} left behind");
    }
}

#[test]
fn installed_binaries_report_their_versions_and_serve_a_program() {
    let test = "installed_binaries_report_their_versions_and_serve_a_program";
    if !(prerequisites(test) && require_program(test, "python3")) {
        return;
    }
    let installation = Installation::new(test);
    let version = env!("CARGO_PKG_VERSION");
    for program in ["rumphijack", "rump_server"] {
        let mut cmd = installation.command(program);
        cmd.arg("--version");
        let out = run(cmd, TIMEOUT);
        out.assert_success("--version");
        let expected = format!("{program} {version} (protocol ");
        assert!(out.stdout.starts_with(&expected), "{out}");
    }

    // The installed server, and the installed supervisor as its client.
    let socket = installation.dir.join("stack.sock");
    let pidfile = installation.dir.join("server.pid");
    let mut server = installation.command("rump_server");
    server
        .arg("--detach")
        .arg("--pidfile")
        .arg(&pidfile)
        .arg(format!("unix://{}", socket.display()));
    run(server, TIMEOUT).assert_success("installed rump_server --detach");
    let mut client = installation.command("rumphijack");
    client
        .args(["run", "--server"])
        .arg(format!("unix://{}", socket.display()))
        .arg("--")
        .arg(python3())
        .args([
            "-c",
            "import socket; socket.socket().close(); print('socket made')",
        ]);
    let out = run(client, TIMEOUT);
    let pid = fs::read_to_string(&pidfile).expect("the server's pid file");
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid.trim().parse().expect("a pid")),
        nix::sys::signal::Signal::SIGTERM,
    );
    out.assert_success("installed rumphijack run through the installed server");
    assert_eq!(out.stdout, "socket made\n", "{out}");
}

#[test]
fn installed_supervisor_finds_the_installed_library_without_being_told() {
    let test = "installed_supervisor_finds_the_installed_library_without_being_told";
    if !(prerequisites(test) && require_program(test, "python3")) {
        return;
    }
    let installation = Installation::new(test);
    // PREFIX/bin has no library next to rumphijack: it must take PREFIX/lib's.
    assert!(!installation.path("bin/librumphijack.so").exists());
    let maps = "import socket; socket.socket().close(); \
                print(*[l.split()[-1] for l in open('/proc/self/maps') if 'rumphijack' in l][:1])";
    let mut cmd = installation.command("rumphijack");
    cmd.args(["run", "--preload", "--"])
        .arg(python3())
        .args(["-c", maps]);
    let out = run(cmd, TIMEOUT);
    out.assert_success("installed rumphijack run --preload");
    let library = installation.path("lib/librumphijack.so");
    let library = fs::canonicalize(&library).expect("canonical library path");
    assert_eq!(out.stdout.trim(), library.display().to_string(), "{out}");
}

/// `man ARGS...` rendering to plain text at a fixed width, with groff's warnings on.
fn man(args: &[&std::ffi::OsStr]) -> Finished {
    let mut cmd = Command::new("man");
    cmd.args(["--warnings", "-P", "cat"])
        .args(args)
        .env("MANWIDTH", "100")
        .env("LC_ALL", "C.UTF-8")
        .env_remove("MANPAGER")
        .env_remove("PAGER");
    run(cmd, TIMEOUT)
}

#[test]
fn installed_man_pages_render_without_warnings_and_match_the_help() {
    let test = "installed_man_pages_render_without_warnings_and_match_the_help";
    if !prerequisites(test) {
        return;
    }
    let installation = Installation::new(test);
    let pages = [
        (
            "share/man/man1/rumphijack.1",
            "RUMPHIJACK(1)",
            "EXIT STATUS",
        ),
        (
            "share/man/man8/rump_server.8",
            "RUMP_SERVER(8)",
            "LISTEN_FDS",
        ),
        (
            "share/man/man3/librumphijack.3",
            "LIBRUMPHIJACK(3)",
            "DIFFERENCES FROM NETBSD",
        ),
    ];
    for (page, title, section) in pages {
        let path = installation.path(page);
        let out = man(&["-l".as_ref(), path.as_os_str()]);
        out.assert_success("man -l");
        assert_eq!(out.stderr, "", "{page} renders without warnings\n{out}");
        assert!(out.stdout.starts_with(title), "{page}\n{out}");
        for part in ["NAME", "SYNOPSIS", "DESCRIPTION", "ENVIRONMENT", section] {
            assert!(out.stdout.contains(part), "{page} has {part}\n{out}");
        }
    }

    // Found by section and name under the standard directory, as `man rump_server` would.
    let mut cmd = Command::new("man");
    cmd.args(["-P", "cat", "-M"])
        .arg(installation.path("share/man"))
        .args(["8", "rump_server"])
        .env("MANWIDTH", "100");
    let by_name = run(cmd, TIMEOUT);
    by_name.assert_success("man -M PREFIX/share/man 8 rump_server");
    assert!(by_name.stdout.contains("NOTIFY_SOCKET"), "{by_name}");

    // The pages come from the same definitions as --help: every option it lists is there.
    for (program, args, page) in [
        (
            "rumphijack",
            &["run", "--help"][..],
            "share/man/man1/rumphijack.1",
        ),
        (
            "rumphijack",
            &["doctor", "--help"][..],
            "share/man/man1/rumphijack.1",
        ),
        (
            "rump_server",
            &["--help"][..],
            "share/man/man8/rump_server.8",
        ),
    ] {
        let mut cmd = installation.command(program);
        cmd.args(args);
        let help = run(cmd, TIMEOUT);
        help.assert_success("--help");
        let rendered = man(&["-l".as_ref(), installation.path(page).as_os_str()]).stdout;
        let options = help
            .stdout
            .split_whitespace()
            .filter(|w| w.starts_with("--") && w.len() > 2)
            .map(|w| w.trim_end_matches([',', '.', ')']));
        for option in options {
            assert!(rendered.contains(option), "{page} documents {option}");
        }
    }
}

/// The candidates a shell offered for `line`, from the lines `[LINE] CANDIDATE...` of
/// `listing`; panics when it has none for `line`.
fn offered<'a>(listing: &'a str, line: &str) -> Vec<&'a str> {
    let tag = format!("[{line}]");
    let found = listing
        .lines()
        .find_map(|l| l.strip_prefix(tag.as_str()))
        .unwrap_or_else(|| panic!("no completion of {line:?}\n{listing}"));
    found.split_whitespace().collect()
}

/// Asserts that completing `line` offered every one of `expected`.
fn assert_offers(listing: &str, line: &str, expected: &[&str]) {
    let candidates = offered(listing, line);
    for word in expected {
        assert!(
            candidates.contains(word),
            "completing {line:?} offers {word}: {candidates:?}\n{listing}"
        );
    }
}

#[test]
fn installed_bash_completion_loads_from_its_standard_directory() {
    let test = "installed_bash_completion_loads_from_its_standard_directory";
    let loader = "/usr/share/bash-completion/bash_completion";
    if !(prerequisites(test) && require_path(test, Path::new(loader))) {
        return;
    }
    let installation = Installation::new(test);

    // bash-completion finds completions on demand in DIR/bash-completion/completions for
    // each DIR of XDG_DATA_DIRS: here, only the staged PREFIX/share. Its default completion
    // (`complete -D`) loads a command's file the first time the command is completed; the
    // script does what bash would then do: call the function `complete -p` names, with
    // COMP_WORDS and COMP_CWORD set for the line as typed.
    let script = format!(
        r#"source {loader}
complete -p -D
complete -p rumphijack 2>/dev/null && exit 10
_completion_loader rumphijack
_completion_loader rump_server
complete -p rumphijack rump_server
shopt -s extdebug
declare -F _rumphijack
shopt -u extdebug
complete_line() {{
    local spec function line=$1
    COMP_LINE=$1; COMP_POINT=${{#COMP_LINE}}; shift
    COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1))
    spec=$(complete -p "$1") || return
    function=${{spec#*-F }}; function=${{function%% *}}
    COMPREPLY=()
    "$function" "$1" "${{COMP_WORDS[COMP_CWORD]}}" "${{COMP_WORDS[COMP_CWORD-1]}}"
    echo "[$line] ${{COMPREPLY[*]}}"
}}
complete_line 'rumphijack ' rumphijack ''
complete_line 'rumphijack d' rumphijack d
complete_line 'rumphijack run --pre' rumphijack run --pre
complete_line 'rumphijack policy ' rumphijack policy ''
complete_line 'rump_server --iso' rump_server --iso
complete_line 'rumphijack run --isolated rump_se' rumphijack run --isolated rump_se
complete_line 'rumphijack run --server unix:///s rumphijack d' \
    rumphijack run --server unix : ///s rumphijack d
complete_line 'rumphijack run --policy=p.toml -- rump_server --iso' \
    rumphijack run --policy = p.toml -- rump_server --iso
complete_line 'rumphijack run rump_server --pre' rumphijack run rump_server --pre"#
    );
    let mut bash = Command::new("bash");
    bash.args(["--norc", "--noprofile", "-c", &script])
        .env("PATH", path_with(&installation.path("bin")))
        .env("XDG_DATA_DIRS", installation.path("share"))
        .env(
            "BASH_COMPLETION_USER_DIR",
            installation.dir.join("no-user-completions"),
        );
    let out = run(bash, TIMEOUT);
    out.assert_success("loading the installed completions with bash-completion");
    assert!(
        out.stdout.contains("-F _completion_loader -D"),
        "bash-completion's loader is the default completion\n{out}"
    );
    for (program, function) in [
        ("rumphijack", "_rumphijack_with_program"),
        ("rump_server", "_rump_server"),
    ] {
        let spec = format!("-F {function} ");
        let registered = out
            .stdout
            .lines()
            .any(|l| l.contains(&spec) && l.ends_with(&format!(" {program}")));
        assert!(registered, "complete -p: {spec}{program}\n{out}");
    }
    let source = installation.path("share/bash-completion/completions/rumphijack");
    assert!(
        out.stdout.contains(&format!(" {}\n", source.display())),
        "_rumphijack comes from the staged file\n{out}"
    );

    assert_offers(
        &out.stdout,
        "rumphijack ",
        &["run", "policy", "doctor", "--help"],
    );
    assert_eq!(offered(&out.stdout, "rumphijack d"), ["doctor"], "{out}");
    assert_eq!(
        offered(&out.stdout, "rumphijack run --pre"),
        ["--preload"],
        "{out}"
    );
    assert_offers(&out.stdout, "rumphijack policy ", &["check", "explain"]);
    assert_eq!(
        offered(&out.stdout, "rump_server --iso"),
        ["--isolated"],
        "{out}"
    );
    assert_program_line_completes(&out.stdout, "=");
}

/// Asserts that the program of `rumphijack run` and its arguments were completed as a command
/// line of their own, from the lines `[LINE] CANDIDATE...` of `listing`. `policy_sep` is what
/// stands between `--policy` and its value in the line completed after `--`.
fn assert_program_line_completes(listing: &str, policy_sep: &str) {
    // The program's word completes as a command name.
    assert_offers(
        listing,
        "rumphijack run --isolated rump_se",
        &["rump_server"],
    );

    // An option's value, even one split at ':' (bash), is not the program.
    assert_eq!(
        offered(listing, "rumphijack run --server unix:///s rumphijack d"),
        ["doctor"],
        "{listing}"
    );

    // After `--`, the program's own completion.
    let line = format!("rumphijack run --policy{policy_sep}p.toml -- rump_server --iso");
    assert_eq!(offered(listing, &line), ["--isolated"], "{listing}");

    // run's own options stop at the program.
    assert!(
        offered(listing, "rumphijack run rump_server --pre").is_empty(),
        "{listing}"
    );
}

/// Sourced by an interactive `zsh -f` on a pseudo-terminal: compinit with the staged
/// site-functions first in `fpath`, and Ctrl-T bound to a widget that completes the line as
/// Tab would, appends `[LINE] CANDIDATE...` to $OFFERED, and shows `completion N done`.
/// `compadd -O` only computes the matches, so the wrapper sees exactly what zsh offers.
const ZSH_COMPLETION_SETUP: &str = r#"bindkey -e
PS1='%% '
unsetopt auto_list
fpath=($SITE_FUNCTIONS $fpath)
autoload -Uz compinit && compinit -u -D
typeset -ga _offered
compadd() {
    if (( ${@[(I)-[OAD]*]} )); then builtin compadd "$@"; return; fi
    local -a matches
    builtin compadd -O matches "$@"
    _offered+=($matches)
    builtin compadd "$@"
}
_complete_and_record() {
    local line=$BUFFER
    _offered=()
    zle complete-word
    print -r -- "[$line] $_offered" >> $OFFERED
    zle -M "completion $((++_completions)) done"
}
zle -N _complete_and_record
bindkey '^T' _complete_and_record
print "setup $((6 * 7)) done"
"#;

/// `zsh -f -c DRIVER zsh SETUP LINE...`: types each LINE into an interactive zsh under zpty
/// and has it completed, waiting for the widget's message before the next one. The markers
/// are computed by the inner shell so that the echo of what was typed never matches them.
const ZSH_COMPLETION_DRIVER: &str = r#"zmodload zsh/zpty || exit 20
zpty shell zsh -f -i || exit 21
zpty -w shell "source ${(q)1}"
zpty -r -m shell _ '*setup 42 done*' || exit 22
shift
n=0
for line; do
    zpty -w -n shell "$line"$'\C-t'
    zpty -r -m shell _ "*completion $((++n)) done*" || exit 23
    zpty -w -n shell $'\C-u'
done
zpty -d shell
"#;

#[test]
fn installed_zsh_completion_is_registered_by_compinit_and_completes() {
    let test = "installed_zsh_completion_is_registered_by_compinit_and_completes";
    if !(prerequisites(test) && require_program(test, "zsh")) {
        return;
    }
    let installation = Installation::new(test);
    let site_functions = installation.path("share/zsh/site-functions");

    for program in ["rumphijack", "rump_server"] {
        assert_parses(&["zsh", "-n"], &site_functions.join(format!("_{program}")));
    }

    // compinit reads the `#compdef` line of every file in fpath and maps each command to
    // its function in $_comps; the function itself is autoloaded from the staged file.
    let script = r#"fpath=($1 $fpath)
autoload -Uz compinit && compinit -u -D
for program in rumphijack rump_server; do
    autoload +X _$program
    print -r -- "$program: $_comps[$program] from $functions_source[_$program]"
done"#;
    let mut zsh = Command::new("zsh");
    zsh.args(["-f", "-c", script, "zsh"]).arg(&site_functions);
    let out = run(zsh, TIMEOUT);
    out.assert_success("compinit with the staged site-functions");
    let dir = site_functions.display();
    assert_eq!(
        out.stdout,
        format!(
            "rumphijack: _rumphijack from {dir}/_rumphijack\n\
             rump_server: _rump_server from {dir}/_rump_server\n"
        ),
        "{out}"
    );

    // Completion itself, in the line editor. PATH has the installed programs, so the
    // program rumphijack runs completes as a command name.
    let setup = installation
        .dir
        .write("completion-setup.zsh", ZSH_COMPLETION_SETUP);
    let record = installation.dir.join("offered");
    let lines = [
        "rumphijack ",
        "rumphijack run --pre",
        "rumphijack policy ",
        "rump_server --",
        "rumphijack run --isolated rump_se",
        "rumphijack run --server unix:///s rumphijack d",
        "rumphijack run --policy p.toml -- rump_server --iso",
        "rumphijack run rump_server --pre",
    ];
    let mut zsh = Command::new("zsh");
    zsh.args(["-f", "-c", ZSH_COMPLETION_DRIVER, "zsh"])
        .arg(&setup)
        .args(lines)
        .env("SITE_FUNCTIONS", &site_functions)
        .env("OFFERED", &record)
        .env("PATH", path_with(&installation.path("bin")));
    let out = run(zsh, TIMEOUT);
    out.assert_success("completing in an interactive zsh");
    let listing = fs::read_to_string(&record).expect("the completions zsh offered");

    assert_offers(&listing, "rumphijack ", &["run", "policy", "doctor"]);
    assert_eq!(offered(&listing, "rumphijack run --pre"), ["--preload"]);
    assert_offers(&listing, "rumphijack policy ", &["check", "explain"]);
    assert_offers(
        &listing,
        "rump_server --",
        &["--isolated", "--netns", "--detach", "--pidfile"],
    );
    assert_program_line_completes(&listing, " ");
}

/// Asserts that the shell command `check` (a shell and its parse-only flag) reads `file`
/// without a complaint.
fn assert_parses(check: &[&str], file: &Path) {
    let mut parse = Command::new(check[0]);
    parse.args(&check[1..]).arg(file);
    let out = run(parse, TIMEOUT);
    out.assert_success(&check.join(" "));
    assert_eq!(out.stderr, "", "{}\n{out}", file.display());
}

/// `dir` followed by the test's own PATH.
fn path_with(dir: &Path) -> std::ffi::OsString {
    let inherited = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::iter::once(dir.to_path_buf()).chain(std::env::split_paths(&inherited));
    std::env::join_paths(dirs).expect("PATH")
}

#[test]
fn installed_fish_completion_loads_from_its_vendor_directory() {
    let test = "installed_fish_completion_loads_from_its_vendor_directory";
    if !(prerequisites(test) && require_program(test, "fish")) {
        return;
    }
    let installation = Installation::new(test);
    let vendor = installation.path("share/fish/vendor_completions.d");

    for program in ["rumphijack", "rump_server"] {
        assert_parses(
            &["fish", "--no-execute"],
            &vendor.join(format!("{program}.fish")),
        );
    }

    // fish searches DIR/fish/vendor_completions.d for each DIR of XDG_DATA_DIRS and loads
    // COMMAND.fish the first time a command found in PATH is completed. The user's own
    // configuration and data directories are empty ones of the test.
    let script = r#"for line in $argv
    echo "[$line]" (complete -C $line | string replace -r '\t.*' '')
end
echo "source:" (functions --details __fish_rumphijack_needs_command)"#;
    let home = installation.dir.join("home");
    let mut fish = Command::new("fish");
    fish.args(["-c", script])
        .args([
            "rumphijack ",
            "rumphijack run --pre",
            "rumphijack policy ",
            "rump_server --",
            "rumphijack run --isolated rump_se",
            "rumphijack run --server unix:///s rumphijack d",
            "rumphijack run --policy p.toml -- rump_server --iso",
            "rumphijack run rump_server --pre",
        ])
        .env("HOME", &home)
        .env("XDG_CONFIG_HOME", home.join("config"))
        .env("XDG_DATA_HOME", home.join("data"))
        .env("XDG_CACHE_HOME", home.join("cache"))
        .env("XDG_DATA_DIRS", installation.path("share"))
        .env("PATH", path_with(&installation.path("bin")));
    let out = run(fish, TIMEOUT);
    out.assert_success("completing with fish");
    let source = vendor.join("rumphijack.fish");
    assert!(
        out.stdout
            .contains(&format!("source: {}\n", source.display())),
        "the completion comes from the staged file\n{out}"
    );

    assert_offers(&out.stdout, "rumphijack ", &["run", "policy", "doctor"]);
    assert_eq!(
        offered(&out.stdout, "rumphijack run --pre"),
        ["--preload"],
        "{out}"
    );
    assert_offers(&out.stdout, "rumphijack policy ", &["check", "explain"]);
    assert_offers(
        &out.stdout,
        "rump_server --",
        &["--isolated", "--netns", "--detach", "--pidfile"],
    );
    assert_program_line_completes(&out.stdout, " ");
}
