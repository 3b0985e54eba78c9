//! `--spawn-rxenstored`: runs our daemon on a private socket in a temporary directory on
//! tmpfs (database there too in crash-resilient mode), waits for readiness (its pid file,
//! bounded poll), and stops it with SIGTERM afterwards.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long the daemon may take to become ready.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A daemon started by the load generator.
#[derive(Debug)]
pub struct Spawned {
    child: Option<Child>,
    directory: PathBuf,
    socket: PathBuf,
}

impl Spawned {
    /// Starts `binary` in persistence `mode`.
    pub fn start(binary: &Path, mode: &str) -> Result<Spawned, String> {
        let base = if Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let directory = base.join(format!("xenstore-loadgen-{}-{mode}", std::process::id()));
        let _ = std::fs::remove_dir_all(&directory);
        std::fs::create_dir_all(&directory)
            .map_err(|error| format!("create {}: {error}", directory.display()))?;
        let socket = directory.join("socket");
        let pid_file = directory.join("pid");
        let log = std::fs::File::create(directory.join("daemon.log"))
            .map_err(|error| format!("log file: {error}"))?;
        let mut command = Command::new(binary);
        command
            .arg("--socket")
            .arg(&socket)
            .arg("--pid-file")
            .arg(&pid_file)
            .arg("--persistence")
            .arg(mode)
            .arg("--database")
            .arg(directory.join("store.db"))
            .arg("--sim-dir")
            .arg(directory.join("domains"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log));
        let mut child = command
            .spawn()
            .map_err(|error| format!("spawn {}: {error}", binary.display()))?;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if std::fs::read_to_string(&pid_file)
                .map(|text| text.trim() == child.id().to_string())
                .unwrap_or(false)
            {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(directory.join("daemon.log")).unwrap_or_default();
                return Err(format!("rxenstored ({mode}) exited with {status}:\n{log}"));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "rxenstored ({mode}) not ready within {START_TIMEOUT:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(Spawned {
            child: Some(child),
            directory,
            socket,
        })
    }

    /// Its socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// SIGTERM, wait (bounded), clean up.
    pub fn stop(mut self) -> Result<(), String> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(()),
                Ok(Some(status)) => {
                    return Err(format!("rxenstored exited with {status} on SIGTERM"));
                }
                Ok(None) if Instant::now() > deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err("rxenstored ignored SIGTERM".into());
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                Err(error) => return Err(format!("wait: {error}")),
            }
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.directory);
    }
}
