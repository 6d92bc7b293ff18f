//! Where the programs under test are.

use std::env;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Variables a test never inherits from the environment it runs in: each test sets the ones it
/// is about.
const CLIENT_ENV: [&str; 4] = [
    "RUMP_SERVER",
    "RUMPHIJACK",
    "RUMPHIJACK_RETRYCONNECT",
    "RUST_LOG",
];

/// The directory holding the workspace's binaries: `RUMPHIJACK_BIN_DIR`, or the profile
/// directory of this test executable, which is `target/<profile>/deps/<test>-<hash>`.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = env::var_os("RUMPHIJACK_BIN_DIR") {
        return dir.into();
    }
    let exe = env::current_exe().expect("current_exe of the test");
    exe.parent()
        .and_then(Path::parent)
        .unwrap_or_else(|| panic!("cannot derive the target directory from {}", exe.display()))
        .to_path_buf()
}

fn product_bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.is_file(),
        "{name} not found at {}: run `cargo build --workspace` first or set RUMPHIJACK_BIN_DIR",
        path.display()
    );
    path
}

/// The `rumphijack` binary.
pub fn rumphijack() -> PathBuf {
    product_bin("rumphijack")
}

/// The `rump_server` binary.
pub fn rump_server() -> PathBuf {
    product_bin("rump_server")
}

/// `rumphijack` with a clean client environment and no arguments yet.
pub fn rumphijack_cmd() -> Command {
    let mut cmd = Command::new(rumphijack());
    for var in CLIENT_ENV {
        cmd.env_remove(var);
    }
    cmd
}

/// `rumphijack run --server URL -- ARGV...`.
pub fn hijack<I, S>(server_url: &str, argv: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = rumphijack_cmd();
    cmd.args(["run", "--server", server_url, "--"]).args(argv);
    cmd
}

/// The real python3 interpreter (not a version-manager shim that would run extra processes
/// under the supervisor), resolved once.
pub fn python3() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let out = Command::new("python3")
            .args(["-c", "import sys; print(sys.executable)"])
            .output()
            .expect("run python3 to find its executable");
        assert!(out.status.success(), "python3 -c failed: {out:?}");
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    })
}
