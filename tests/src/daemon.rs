//! Spawning `rxenstored` for tests.
//!
//! Binary location (the daemon is another package, so `CARGO_BIN_EXE_*` is not available):
//! 1. `$RXENSTORED_BIN` when set (must exist);
//! 2. `rxenstored` next to this test executable's `deps/` directory (cargo builds it there for
//!    `cargo test --workspace`), when it is newer than every source file it is built from;
//! 3. otherwise `cargo build -p rxenstored` into `<target>/e2e-rxenstored` (a separate target
//!    directory, so it never waits for the lock of the `cargo test` that runs us).
//!
//! Readiness is the pid file (`--pid-file`), which the daemon writes once its socket listens;
//! [`Daemon::spawn`] polls for it with a bound, and fails early (with the daemon's log) if the
//! process exits first. Every daemon runs in its own temporary directory on tmpfs
//! (`/dev/shm` when present) with its stderr appended to `daemon.log` there.
//!
//! `$XENSTORE_E2E_DAEMON_ARGS` (whitespace-separated) is appended to every daemon command line
//! (e.g. `--engine store` to try the full store engine); `$XENSTORE_E2E_KEEP=1` keeps the
//! temporary directories for inspection.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime};

/// How long a (re)start may take before the test fails.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Crates whose sources make up the daemon (for the staleness check).
const DAEMON_SOURCES: &[&str] = &["hosted", "server", "store", "persist", "protocol"];

fn newest_mtime(path: &Path, newest: &mut SystemTime) {
    let Ok(metadata) = std::fs::metadata(path) else {
        return;
    };
    if metadata.is_dir() {
        if let Ok(entries) = std::fs::read_dir(path) {
            for entry in entries.flatten() {
                newest_mtime(&entry.path(), newest);
            }
        }
    } else if let Ok(modified) = metadata.modified()
        && modified > *newest
    {
        *newest = modified;
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

fn is_fresh(binary: &Path) -> bool {
    let Ok(built) = std::fs::metadata(binary).and_then(|metadata| metadata.modified()) else {
        return false;
    };
    let root = workspace_root();
    let mut newest = SystemTime::UNIX_EPOCH;
    for name in DAEMON_SOURCES {
        newest_mtime(&root.join(name).join("src"), &mut newest);
        newest_mtime(&root.join(name).join("Cargo.toml"), &mut newest);
    }
    newest_mtime(&root.join("Cargo.lock"), &mut newest);
    built >= newest
}

fn locate_binary() -> PathBuf {
    if let Ok(path) = std::env::var("RXENSTORED_BIN") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "RXENSTORED_BIN={} does not name a file",
            path.display()
        );
        return path;
    }
    let exe = std::env::current_exe().expect("current_exe");
    // <target>/<profile>/deps/<test-binary>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary lives in <target>/<profile>/deps")
        .to_path_buf();
    let sibling = profile_dir.join("rxenstored");
    if is_fresh(&sibling) {
        return sibling;
    }
    let profile = profile_dir
        .file_name()
        .and_then(|name| name.to_str())
        .unwrap_or("debug")
        .to_string();
    let target_root = profile_dir
        .parent()
        .expect("profile dir has a parent")
        .to_path_buf();
    let own_target = target_root.join("e2e-rxenstored");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let mut command = Command::new(&cargo);
    command
        .arg("build")
        .arg("-p")
        .arg("rxenstored")
        .arg("--bin")
        .arg("rxenstored")
        .arg("--manifest-path")
        .arg(workspace_root().join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&own_target);
    if profile == "release" {
        command.arg("--release");
    }
    eprintln!(
        "xenstore-e2e: {} is missing or older than its sources; building it: {command:?}",
        sibling.display()
    );
    let status = command
        .status()
        .unwrap_or_else(|error| panic!("cannot run {cargo} to build rxenstored: {error}"));
    assert!(
        status.success(),
        "`cargo build -p rxenstored` failed ({status}); build it yourself or set RXENSTORED_BIN"
    );
    let built = own_target
        .join(if profile == "release" {
            "release"
        } else {
            "debug"
        })
        .join("rxenstored");
    assert!(
        built.is_file(),
        "cargo built rxenstored but {} is missing",
        built.display()
    );
    built
}

/// The `rxenstored` binary under test (located once per test process; a failed build is
/// reported once and then repeated as the same message by every test).
pub fn rxenstored_binary() -> &'static Path {
    static BINARY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let located = BINARY.get_or_init(|| {
        std::panic::catch_unwind(locate_binary).map_err(|panic| {
            panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|text| text.to_string()))
                .unwrap_or_else(|| "locating rxenstored failed".to_string())
        })
    });
    match located {
        Ok(path) => {
            static ANNOUNCED: std::sync::Once = std::sync::Once::new();
            ANNOUNCED.call_once(|| eprintln!("xenstore-e2e: using {}", path.display()));
            path
        }
        Err(message) => panic!("{message}"),
    }
}

/// A fresh, empty temporary directory on tmpfs (`/dev/shm` when present).
pub fn temp_dir(name: &str) -> PathBuf {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let base = if Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let directory = base.join(format!(
        "xenstore-e2e-{name}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&directory);
    std::fs::create_dir_all(&directory)
        .unwrap_or_else(|error| panic!("create {}: {error}", directory.display()));
    directory
}

/// Persistence mode of a daemon under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `--persistence none`.
    None,
    /// `--persistence crash-resilient --database <dir>/store.db`.
    CrashResilient,
}

/// A daemon under test: its directory, socket, simulated-domain directory and process.
#[derive(Debug)]
pub struct Daemon {
    child: Option<Child>,
    directory: PathBuf,
    socket: PathBuf,
    sim_dir: PathBuf,
    pid_file: PathBuf,
    log: PathBuf,
    arguments: Vec<String>,
    starts: u32,
}

impl Daemon {
    /// Starts a daemon in a new temporary directory named after `name`, with `extra`
    /// arguments (quota flags, ...), and waits until it is ready.
    pub fn start(name: &str, mode: Mode, extra: &[&str]) -> Daemon {
        Daemon::start_in(temp_dir(name), mode, extra)
    }

    /// As [`Daemon::start`] in an existing directory.
    pub fn start_in(directory: PathBuf, mode: Mode, extra: &[&str]) -> Daemon {
        let socket = directory.join("socket");
        let sim_dir = directory.join("domains");
        let pid_file = directory.join("pid");
        let log = directory.join("daemon.log");
        let mut arguments = vec![
            "--socket".to_string(),
            socket.display().to_string(),
            "--pid-file".to_string(),
            pid_file.display().to_string(),
            "--sim-dir".to_string(),
            sim_dir.display().to_string(),
        ];
        if mode == Mode::CrashResilient {
            arguments.extend([
                "--persistence".to_string(),
                "crash-resilient".to_string(),
                "--database".to_string(),
                directory.join("store.db").display().to_string(),
            ]);
        }
        arguments.extend(extra.iter().map(|text| text.to_string()));
        if let Ok(more) = std::env::var("XENSTORE_E2E_DAEMON_ARGS") {
            arguments.extend(more.split_whitespace().map(String::from));
        }
        let mut daemon = Daemon {
            child: None,
            directory,
            socket,
            sim_dir,
            pid_file,
            log,
            arguments,
            starts: 0,
        };
        daemon.spawn();
        daemon
    }

    /// The socket path (what `XENSTORED_PATH` should be).
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The directory of simulated domains (`--sim-dir`).
    pub fn sim_dir(&self) -> &Path {
        &self.sim_dir
    }

    /// The daemon's temporary directory.
    pub fn directory(&self) -> &Path {
        &self.directory
    }

    /// The pid of the running daemon.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Starts the daemon (again) with the same arguments and waits for its pid file.
    /// Panics with the daemon's log if it exits or does not become ready in time.
    pub fn spawn(&mut self) {
        if let Err(message) = self.try_spawn() {
            panic!("{message}");
        }
    }

    /// As [`Daemon::spawn`], returning a description of the failure instead of panicking.
    pub fn try_spawn(&mut self) -> Result<(), String> {
        assert!(self.child.is_none(), "daemon already running");
        let _ = std::fs::remove_file(&self.pid_file);
        self.starts += 1;
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|error| format!("open {}: {error}", self.log.display()))?;
        let mut child = Command::new(rxenstored_binary())
            .args(&self.arguments)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .map_err(|error| format!("spawn {}: {error}", rxenstored_binary().display()))?;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(text) = std::fs::read_to_string(&self.pid_file)
                && text.trim() == child.id().to_string()
            {
                self.child = Some(child);
                return Ok(());
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!(
                    "rxenstored exited ({status}) before becoming ready (start #{}); log tail:\n{}",
                    self.starts,
                    self.log_tail(40)
                ));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "rxenstored did not write its pid file within {START_TIMEOUT:?} (start #{}); log tail:\n{}",
                    self.starts,
                    self.log_tail(40)
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// True while the process runs; `Err(status)` if it exited by itself.
    pub fn check_alive(&mut self) -> Result<(), ExitStatus> {
        if let Some(child) = &mut self.child
            && let Ok(Some(status)) = child.try_wait()
        {
            self.child = None;
            return Err(status);
        }
        Ok(())
    }

    /// SIGKILL and reap (no-op when not running).
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait for the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("daemon running");
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        child.wait().expect("wait for rxenstored")
    }

    /// SIGKILL, then start again (waiting for readiness).
    pub fn restart_after_kill(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// The last `lines` lines of the daemon's stderr log (all starts).
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
        if std::env::var_os("XENSTORE_E2E_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.directory);
        } else {
            eprintln!("xenstore-e2e: kept {}", self.directory.display());
        }
    }
}
