//! The daemon's event loop: one thread, `poll(2)` over the listening socket, client sockets,
//! the simulated event channels and a `signalfd` for SIGTERM/SIGINT; each wake-up feeds input
//! to the server core, runs [`Server::step`] and flushes (already durable) socket output.
//!
//! Readiness: the pid file is written once the socket listens. SIGTERM/SIGINT end the loop
//! cleanly (the socket and pid file are removed; in crash-resilient mode every acknowledged
//! request is already durable, so nothing more needs saving).

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use xenstore_server::{ConnectionId, Engine, Journal, Server};

use crate::console::Console;
use crate::platform::HostedPlatform;

/// Why the daemon stopped with an error.
#[derive(Debug)]
pub enum DaemonError {
    /// Setting up the socket, signals or pid file failed.
    Setup(String, io::Error),
    /// `poll` failed.
    Poll(io::Error),
    /// The server core stopped (journal failure).
    Server(String),
    /// A crash armed with `inject-crash` hit (the point's name): the caller restarts from
    /// the database as after a caught engine panic (see `xenstore_server::inject`).
    InjectedCrash(String),
}

impl std::fmt::Display for DaemonError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DaemonError::Setup(what, error) => write!(formatter, "{what}: {error}"),
            DaemonError::Poll(error) => write!(formatter, "poll: {error}"),
            DaemonError::Server(error) => write!(formatter, "{error}"),
            DaemonError::InjectedCrash(point) => write!(formatter, "injected crash ({point})"),
        }
    }
}

/// A blocked-signal `signalfd` for SIGTERM and SIGINT.
#[derive(Debug)]
pub struct Signals {
    fd: OwnedFd,
}

impl Signals {
    /// Blocks SIGTERM/SIGINT for this thread and opens a signalfd for them; ignores SIGPIPE
    /// (a client that hangs up mid-write gives EPIPE instead).
    pub fn install() -> io::Result<Signals> {
        // SAFETY: sigset_t is plain data; sigemptyset/sigaddset initialise it before use;
        // pthread_sigmask and signalfd get valid pointers; the returned fd is checked and
        // owned exactly once. signal(SIGPIPE, SIG_IGN) has no memory-safety preconditions.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGTERM);
            libc::sigaddset(&mut set, libc::SIGINT);
            if libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
                return Err(io::Error::last_os_error());
            }
            libc::signal(libc::SIGPIPE, libc::SIG_IGN);
            let fd = libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC);
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(Signals {
                fd: OwnedFd::from_raw_fd(fd),
            })
        }
    }

    fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Reads one pending signal number, if any.
    fn take(&self) -> Option<u32> {
        let mut info = [0u8; std::mem::size_of::<libc::signalfd_siginfo>()];
        let mut file = std::fs::File::from(self.fd.try_clone().ok()?);
        match file.read(&mut info) {
            Ok(count) if count == info.len() => {
                Some(u32::from_ne_bytes([info[0], info[1], info[2], info[3]]))
            }
            _ => None,
        }
    }
}

/// The listening socket, removed on drop.
#[derive(Debug)]
pub struct Listener {
    listener: UnixListener,
    path: PathBuf,
}

impl Listener {
    /// Binds the socket (creating its directory, replacing a stale socket file), mode 0600
    /// as C xenstored.
    pub fn bind(path: &Path) -> io::Result<Listener> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        if path.exists() {
            if UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    "another xenstored serves this socket",
                ));
            }
            std::fs::remove_file(path)?;
        }
        let listener = UnixListener::bind(path)?;
        listener.set_nonblocking(true)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        Ok(Listener {
            listener,
            path: path.to_path_buf(),
        })
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

struct Client {
    stream: UnixStream,
    peer_gone: bool,
}

fn poll(fds: &mut [libc::pollfd], timeout_ms: i32) -> io::Result<usize> {
    // SAFETY: `fds` is a valid, exclusively borrowed slice of pollfd for the whole call, and
    // its length is passed as nfds.
    let result = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
    if result < 0 {
        let error = io::Error::last_os_error();
        if error.kind() == io::ErrorKind::Interrupted {
            return Ok(0);
        }
        return Err(error);
    }
    Ok(result as usize)
}

fn pollfd(fd: RawFd, events: i16) -> libc::pollfd {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}

/// Why [`run`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// SIGTERM / SIGINT (the number): shut down.
    Signal(u32),
    /// A controlled warm restart was asked for (shell `restart`, or a caught engine panic):
    /// drop the server and recover a new one from the database.
    Restart,
}

/// Runs the loop until SIGTERM/SIGINT or a restart request. `ready` is called once the
/// socket listens; `after_step` after every step (true: restart now).
pub fn run<E: Engine, J: Journal<E::Changes>>(
    server: &mut Server<HostedPlatform, E, J>,
    listener: &Listener,
    signals: &Signals,
    console: &mut Console,
    mut ready: impl FnMut(),
    mut after_step: impl FnMut(&mut Server<HostedPlatform, E, J>) -> bool,
) -> Result<Exit, DaemonError> {
    let mut clients: BTreeMap<ConnectionId, Client> = BTreeMap::new();
    ready();
    let mut more_work = true;
    loop {
        let mut fds = vec![
            pollfd(signals.raw(), libc::POLLIN),
            pollfd(listener.listener.as_raw_fd(), libc::POLLIN),
        ];
        let console_fds = console.poll_fds();
        let console_start = fds.len();
        for (fd, events) in &console_fds {
            fds.push(pollfd(*fd, *events));
        }
        let clients_start = fds.len();
        let mut client_ids = Vec::new();
        for (id, client) in &clients {
            let mut events = 0;
            if server.socket_input_room(*id) > 0 && !client.peer_gone {
                events |= libc::POLLIN;
            }
            if !server.socket_output(*id).is_empty() {
                events |= libc::POLLOUT;
            }
            fds.push(pollfd(client.stream.as_raw_fd(), events));
            client_ids.push(*id);
        }
        let ports: Vec<u32> = server.platform().ports().keys().copied().collect();
        for port in &ports {
            let socket = &server.platform().ports()[port].socket;
            fds.push(pollfd(socket.as_raw_fd(), libc::POLLIN));
        }
        // Rings are re-scanned every step; the timeout bounds the latency of a guest whose
        // notification was lost (hint semantics).
        let timeout = if more_work { 0 } else { 200 };
        poll(&mut fds, timeout).map_err(DaemonError::Poll)?;

        if fds[0].revents != 0
            && let Some(signal) = signals.take()
        {
            return Ok(Exit::Signal(signal));
        }
        let console_revents: Vec<i16> = fds[console_start..clients_start]
            .iter()
            .map(|fd| fd.revents)
            .collect();
        console.handle(&console_revents, server);
        if fds[1].revents != 0 {
            loop {
                match listener.listener.accept() {
                    Ok((stream, _)) => {
                        if stream.set_nonblocking(true).is_err() {
                            continue;
                        }
                        match server.socket_open() {
                            Ok(id) => {
                                clients.insert(
                                    id,
                                    Client {
                                        stream,
                                        peer_gone: false,
                                    },
                                );
                            }
                            Err(_) => drop(stream), // table full: refuse
                        }
                    }
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => break,
                }
            }
        }
        for (index, id) in client_ids.iter().enumerate() {
            let revents = fds[clients_start + index].revents;
            if revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) == 0 {
                continue;
            }
            let Some(client) = clients.get_mut(id) else {
                continue;
            };
            let mut buffer = [0u8; 8192];
            loop {
                let room = server.socket_input_room(*id).min(buffer.len());
                if room == 0 {
                    break;
                }
                match client.stream.read(&mut buffer[..room]) {
                    Ok(0) => {
                        client.peer_gone = true;
                        server.socket_closed(*id);
                        break;
                    }
                    Ok(count) => {
                        let accepted = server.socket_input(*id, &buffer[..count]);
                        assert_eq!(accepted, count, "fed more than the room reported");
                    }
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                    Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => {
                        client.peer_gone = true;
                        server.socket_closed(*id);
                        break;
                    }
                }
            }
        }
        for port in &ports {
            server.platform().drain(*port);
        }

        let report = server.step().map_err(|error| match error {
            xenstore_server::ServerError::InjectedCrash(point) => {
                DaemonError::InjectedCrash(point.to_string())
            }
            error => DaemonError::Server(error.to_string()),
        })?;
        more_work = report.more_work;
        let restart = after_step(server);

        let mut finished = Vec::new();
        for (id, client) in clients.iter_mut() {
            loop {
                let chunk = server.socket_output(*id);
                if chunk.is_empty() || client.peer_gone {
                    break;
                }
                match client.stream.write(chunk) {
                    Ok(count) => server.socket_sent(*id, count),
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                    Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => {
                        client.peer_gone = true;
                        server.socket_closed(*id);
                        break;
                    }
                }
            }
            if server.socket_should_close(*id) {
                server.socket_closed(*id);
                finished.push(*id);
            }
        }
        for id in finished {
            clients.remove(&id);
        }
        // Connections the server already dropped (peer gone, processed by step).
        clients.retain(|id, client| !(client.peer_gone && server.connections().get(*id).is_none()));
        if clients.values().any(|client| client.peer_gone) {
            more_work = true;
        }
        if restart {
            return Ok(Exit::Restart);
        }
    }
}
