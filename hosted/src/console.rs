//! The hosted daemon's debug shell endpoints: stdin (when it is a terminal) and a debug Unix
//! socket (`--debug-socket PATH`, one shell session per connection). Both feed command lines to
//! [`Server::shell`], the shell implementation shared with the unikernel console and
//! XS_CONTROL.
//!
//! Never blocks request service: the sockets are non-blocking and polled by the daemon's
//! loop; stdin is read only when `poll` reports it readable; a debug client that does not
//! read its answers has them buffered up to [`CONSOLE_OUTPUT_MAX_BYTES`] and is then
//! disconnected.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use xenstore_server::{Engine, Journal, Platform, Server};
use xenstore_shell::{LineBuffer, LineEvent};

/// Output buffered for one debug client before it is dropped.
pub const CONSOLE_OUTPUT_MAX_BYTES: usize = 1024 * 1024;
/// Debug clients served at once.
pub const CONSOLE_CLIENTS_MAX: usize = 16;

const PROMPT: &[u8] = b"xenstore> ";

struct ConsoleClient {
    stream: UnixStream,
    line: LineBuffer,
    output: Vec<u8>,
    gone: bool,
}

/// Where the debug shell listens.
pub struct Console {
    listener: Option<(UnixListener, PathBuf)>,
    clients: Vec<ConsoleClient>,
    stdin: Option<LineBuffer>,
}

impl std::fmt::Debug for Console {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Console")
            .field("clients", &self.clients.len())
            .field("stdin", &self.stdin.is_some())
            .finish_non_exhaustive()
    }
}

/// True when stdin is a terminal.
pub fn stdin_is_terminal() -> bool {
    // SAFETY: isatty has no memory-safety preconditions; fd 0 may be closed (then it
    // returns 0).
    unsafe { libc::isatty(0) == 1 }
}

impl Console {
    /// A console on stdin (if `use_stdin`) and on a debug socket (if `socket` is given).
    pub fn new(socket: Option<&Path>, use_stdin: bool) -> io::Result<Console> {
        let listener = match socket {
            Some(path) => {
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                let _ = std::fs::remove_file(path);
                let listener = UnixListener::bind(path)?;
                listener.set_nonblocking(true)?;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
                Some((listener, path.to_path_buf()))
            }
            None => None,
        };
        if use_stdin {
            print!("rxenstored debug shell (help for commands)\nxenstore> ");
            let _ = io::stdout().flush();
        }
        Ok(Console {
            listener,
            clients: Vec::new(),
            stdin: use_stdin.then(LineBuffer::new),
        })
    }

    /// File descriptors to poll and the events wanted, in a fixed order that
    /// [`Console::handle`] expects back.
    pub fn poll_fds(&self) -> Vec<(RawFd, i16)> {
        let mut fds = Vec::new();
        if self.stdin.is_some() {
            fds.push((0, libc::POLLIN));
        }
        if let Some((listener, _)) = &self.listener {
            fds.push((listener.as_raw_fd(), libc::POLLIN));
        }
        for client in &self.clients {
            let mut events = libc::POLLIN;
            if !client.output.is_empty() {
                events |= libc::POLLOUT;
            }
            fds.push((client.stream.as_raw_fd(), events));
        }
        fds
    }

    /// Handles the poll results for the fds of [`Console::poll_fds`] (same order).
    pub fn handle<P: Platform, E: Engine, J: Journal<E::Changes>>(
        &mut self,
        revents: &[i16],
        server: &mut Server<P, E, J>,
    ) {
        let mut index = 0;
        if let Some(line) = &mut self.stdin {
            if revents[index] & libc::POLLIN != 0 {
                let mut buffer = [0u8; 4096];
                // SAFETY: fd 0 is readable (poll said so) and the buffer is valid for its
                // length; a single read(2) does not block after POLLIN.
                let count = unsafe { libc::read(0, buffer.as_mut_ptr().cast(), buffer.len()) };
                if count <= 0 {
                    self.stdin = None; // EOF: stop reading the terminal
                } else {
                    let mut out = Vec::new();
                    for &byte in &buffer[..count as usize] {
                        run_byte(line, byte, server, &mut out);
                    }
                    let mut stdout = io::stdout();
                    let _ = stdout.write_all(&out);
                    let _ = stdout.flush();
                }
            } else if revents[index] & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0 {
                self.stdin = None;
            }
            index += 1;
        }
        if let Some((listener, _)) = &self.listener {
            if revents[index] & libc::POLLIN != 0 {
                while let Ok((stream, _)) = listener.accept() {
                    if self.clients.len() >= CONSOLE_CLIENTS_MAX
                        || stream.set_nonblocking(true).is_err()
                    {
                        continue;
                    }
                    self.clients.push(ConsoleClient {
                        stream,
                        line: LineBuffer::new(),
                        output: PROMPT.to_vec(),
                        gone: false,
                    });
                }
            }
            index += 1;
        }
        for client in &mut self.clients {
            let Some(&events) = revents.get(index) else {
                break; // accepted in this round: not polled yet
            };
            index += 1;
            if events & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
                let mut buffer = [0u8; 4096];
                match client.stream.read(&mut buffer) {
                    Ok(0) => client.gone = true,
                    Ok(count) => {
                        for &byte in &buffer[..count] {
                            run_byte(&mut client.line, byte, server, &mut client.output);
                        }
                    }
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => client.gone = true,
                }
            }
        }
        for client in &mut self.clients {
            while !client.output.is_empty() && !client.gone {
                match client.stream.write(&client.output) {
                    Ok(count) => {
                        client.output.drain(..count);
                    }
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => client.gone = true,
                }
            }
            if client.output.len() > CONSOLE_OUTPUT_MAX_BYTES {
                client.gone = true;
            }
        }
        self.clients.retain(|client| !client.gone);
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        if let Some((_, path)) = &self.listener {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn run_byte<P: Platform, E: Engine, J: Journal<E::Changes>>(
    line: &mut LineBuffer,
    byte: u8,
    server: &mut Server<P, E, J>,
    out: &mut Vec<u8>,
) {
    match line.push(byte) {
        LineEvent::Pending => {}
        LineEvent::Line(text) => {
            if !text.trim().is_empty() {
                out.extend_from_slice(server.shell(&text).as_bytes());
            }
            out.extend_from_slice(PROMPT);
        }
        LineEvent::Overflow => {
            out.extend_from_slice(b"error: line too long\n");
            out.extend_from_slice(PROMPT);
        }
    }
}
