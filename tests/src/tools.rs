//! Running the real clients against a daemon under test: Debian xenstore-utils (`xenstore-*`,
//! pointed at the socket with `XENSTORED_PATH`) and pyxs (run by `/usr/bin/python3`, the
//! interpreter the Debian package is installed for).
//!
//! A missing client is a test failure with a hint (`scripts/setup.sh`), not a silent pass,
//! unless `XENSTORE_E2E_SKIP_MISSING_CLIENTS=1` is set.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Upper bound for one client command.
pub const TOOL_TIMEOUT: Duration = Duration::from_secs(30);

/// The interpreter pyxs is installed for.
pub const PYTHON: &str = "/usr/bin/python3";

/// Where `scripts/setup.sh` extracts the upstream tools Debian ships only in xen-utils-4.17:
/// `xenstore-control` and xen.git's conformance test `test-xenstore`.
pub const XEN_UTILS_BIN: &str = "/opt/xen-utils-4.17/usr/lib/xen-4.17/bin";

/// Full path of an upstream tool from [`XEN_UTILS_BIN`], if it is there.
pub fn xen_utils_tool(name: &str) -> Option<String> {
    let path = Path::new(XEN_UTILS_BIN).join(name);
    path.exists().then(|| path.to_string_lossy().into_owned())
}

/// Reports a missing client: a panic with a hint, or a skip when
/// `XENSTORE_E2E_SKIP_MISSING_CLIENTS` is set (returns false then).
pub fn missing(what: &str) -> bool {
    if std::env::var_os("XENSTORE_E2E_SKIP_MISSING_CLIENTS").is_some() {
        eprintln!("SKIPPED: {what} is not installed");
        return false;
    }
    panic!(
        "{what} is not installed: run scripts/setup.sh (or set XENSTORE_E2E_SKIP_MISSING_CLIENTS=1)"
    );
}

/// True when xenstore-utils is installed (panics with a hint otherwise, see module docs).
pub fn have_tools() -> bool {
    let present = [
        "xenstore-read",
        "xenstore-write",
        "xenstore-ls",
        "xenstore-chmod",
    ]
    .iter()
    .all(|tool| Path::new("/usr/bin").join(tool).exists());
    present || missing("xenstore-utils")
}

/// True when pyxs imports under `/usr/bin/python3` (panics with a hint otherwise).
pub fn have_pyxs() -> bool {
    let present = Command::new(PYTHON)
        .args(["-c", "import pyxs"])
        .stderr(Stdio::null())
        .status()
        .map(|status| status.success())
        .unwrap_or(false);
    present || missing("python3-pyxs")
}

/// Result of one client run.
#[derive(Debug)]
pub struct Run {
    /// The command line, for messages.
    pub command: String,
    /// Exit status success.
    pub success: bool,
    /// Stdout.
    pub stdout: String,
    /// Stderr.
    pub stderr: String,
}

impl Run {
    fn from_output(command: String, output: Output) -> Run {
        Run {
            command,
            success: output.status.success(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Asserts success and returns stdout.
    pub fn ok(self) -> String {
        assert!(
            self.success,
            "`{}` failed: stderr={:?} stdout={:?}",
            self.command, self.stderr, self.stdout
        );
        self.stdout
    }

    /// Asserts failure and returns stderr.
    pub fn fails(self) -> String {
        assert!(
            !self.success,
            "`{}` succeeded but must fail: stdout={:?}",
            self.command, self.stdout
        );
        self.stderr
    }
}

fn wait_bounded(mut child: std::process::Child, command: &str) -> Output {
    let deadline = Instant::now() + TOOL_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() > deadline => {
                let _ = child.kill();
                let output = child.wait_with_output().expect("reap client");
                panic!(
                    "`{command}` did not finish within {TOOL_TIMEOUT:?}; stdout={:?} stderr={:?}",
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                );
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(error) => panic!("wait for `{command}`: {error}"),
        }
    }
    child.wait_with_output().expect("collect client output")
}

/// Runs `tool arguments…` with `XENSTORED_PATH=socket` (bounded in time).
pub fn tool(socket: &Path, tool: &str, arguments: &[&str]) -> Run {
    let command = format!("{tool} {}", arguments.join(" "));
    let child = Command::new(tool)
        .args(arguments)
        .env("XENSTORED_PATH", socket)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("spawn {tool}: {error}"));
    Run::from_output(command.clone(), wait_bounded(child, &command))
}

/// Runs a Python script (given on stdin) with `/usr/bin/python3`; `XS_SOCKET` in the
/// script's environment names the socket.
pub fn python(socket: &Path, script: &str) -> Run {
    let mut child = Command::new(PYTHON)
        .arg("-")
        .env("XS_SOCKET", socket)
        .env("XENSTORED_PATH", socket)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("spawn {PYTHON}: {error}"));
    child
        .stdin
        .take()
        .expect("stdin piped")
        .write_all(script.as_bytes())
        .expect("write script");
    let command = format!("python3 script:\n{script}");
    Run::from_output(command.clone(), wait_bounded(child, &command))
}
