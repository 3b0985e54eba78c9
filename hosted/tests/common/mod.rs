//! Shared helpers for the daemon's end-to-end tests: start `rxenstored` on a private socket
//! in a temporary directory, run the real xenstore-utils tools against it, stop it (SIGTERM or
//! SIGKILL).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A daemon under test.
pub struct Daemon {
    pub child: Option<Child>,
    pub directory: PathBuf,
    pub socket: PathBuf,
    pub extra: Vec<String>,
}

/// A fresh temporary directory under /dev/shm (or /tmp).
pub fn temp_dir(name: &str) -> PathBuf {
    let base = if Path::new("/dev/shm").is_dir() {
        "/dev/shm"
    } else {
        "/tmp"
    };
    let directory =
        PathBuf::from(base).join(format!("rxenstored-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&directory);
    std::fs::create_dir_all(&directory).unwrap();
    directory
}

impl Daemon {
    /// Starts the daemon with extra arguments and waits for its pid file (readiness).
    pub fn start(directory: &Path, extra: &[&str]) -> Daemon {
        let mut daemon = Daemon {
            child: None,
            directory: directory.to_path_buf(),
            socket: directory.join("socket"),
            extra: extra.iter().map(|text| text.to_string()).collect(),
        };
        daemon.spawn();
        daemon
    }

    /// (Re)spawns with the same arguments.
    pub fn spawn(&mut self) {
        let pid_file = self.directory.join("pid");
        let _ = std::fs::remove_file(&pid_file);
        let child = Command::new(env!("CARGO_BIN_EXE_rxenstored"))
            .arg("--socket")
            .arg(&self.socket)
            .arg("--pid-file")
            .arg(&pid_file)
            .args(&self.extra)
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn rxenstored");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !pid_file.exists() {
            assert!(Instant::now() < deadline, "rxenstored did not become ready");
            std::thread::sleep(Duration::from_millis(10));
        }
        self.child = Some(child);
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// SIGTERM and wait for a clean exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        // SAFETY: sending a signal to our own child's pid has no memory-safety preconditions.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        child.wait().unwrap()
    }

    /// Runs a xenstore-utils tool against this daemon.
    pub fn tool(&self, tool: &str, arguments: &[&str]) -> Output {
        Command::new(tool)
            .args(arguments)
            .env("XENSTORED_PATH", &self.socket)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|error| panic!("{tool}: {error}"))
    }

    /// Runs a tool and returns its stdout, asserting success.
    pub fn ok(&self, tool: &str, arguments: &[&str]) -> String {
        let output = self.tool(tool, arguments);
        assert!(
            output.status.success(),
            "{tool} {arguments:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
        let _ = std::fs::remove_dir_all(&self.directory);
    }
}

/// True when the xenstore-utils tools are installed; prints why a test is skipped otherwise.
pub fn have_tools() -> bool {
    let present = Path::new("/usr/bin/xenstore-read").exists()
        && Path::new("/usr/bin/xenstore-write").exists();
    if !present {
        eprintln!("SKIPPED: xenstore-utils is not installed (run scripts/setup.sh)");
    }
    present
}

/// True when pyxs is importable by /usr/bin/python3.
pub fn have_pyxs() -> bool {
    let present = Command::new("/usr/bin/python3")
        .args(["-c", "import pyxs"])
        .stderr(Stdio::null())
        .status()
        .map(|status| status.success())
        .unwrap_or(false);
    if !present {
        eprintln!("SKIPPED: python3-pyxs is not installed (run scripts/setup.sh)");
    }
    present
}
