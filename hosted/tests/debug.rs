//! End-to-end: the debug shell on `--debug-socket` and through XS_CONTROL, and a controlled
//! `restart` that recovers from the database while a debug session stays connected.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use common::{Daemon, temp_dir};
use rxenstored::client::SocketClient;
use xenstore_protocol::MessageType;

const TIMEOUT: Duration = Duration::from_secs(5);

/// Sends one line and collects the answer up to the next prompt.
fn shell(stream: &mut UnixStream, line: &str) -> String {
    stream.write_all(format!("{line}\n").as_bytes()).unwrap();
    let deadline = Instant::now() + TIMEOUT;
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    while !answer.ends_with(b"xenstore> ") {
        assert!(Instant::now() < deadline, "no prompt after {line:?}");
        match stream.read(&mut buffer) {
            Ok(0) => panic!("debug socket closed"),
            Ok(count) => answer.extend_from_slice(&buffer[..count]),
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(error) => panic!("{error}"),
        }
    }
    let text = String::from_utf8_lossy(&answer).to_string();
    text.trim_end_matches("xenstore> ").to_string()
}

fn connect_debug(path: &std::path::Path) -> UnixStream {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Ok(mut stream) = UnixStream::connect(path) {
            stream.set_read_timeout(Some(TIMEOUT)).unwrap();
            let mut prompt = [0u8; 10];
            stream.read_exact(&mut prompt).unwrap();
            assert_eq!(&prompt, b"xenstore> ");
            return stream;
        }
        assert!(Instant::now() < deadline, "debug socket never appeared");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn debug_socket_control_and_controlled_restart() {
    let directory = temp_dir("debug");
    let debug_path = directory.join("debug");
    let database = directory.join("store.db");
    let daemon = Daemon::start(
        &directory,
        &[
            "--persistence",
            "crash-resilient",
            "--database",
            database.to_str().unwrap(),
            "--database-size",
            "8388608",
            "--debug-socket",
            debug_path.to_str().unwrap(),
        ],
    );
    let mut dom0 = SocketClient::connect(&daemon.socket, TIMEOUT).unwrap();
    assert_eq!(dom0.write("/vm/name", b"guest").unwrap().error(), None);

    // XS_CONTROL reaches the shell's read-only commands.
    let reply = dom0
        .request(MessageType::Control, 0, b"read\0/vm/name\0")
        .unwrap();
    assert_eq!(reply.error(), None);
    assert!(String::from_utf8_lossy(&reply.payload).contains("value:       \"guest\""));
    let reply = dom0.request(MessageType::Control, 0, b"conns\0").unwrap();
    assert!(String::from_utf8_lossy(&reply.payload).contains(" socket "));

    let mut debug = connect_debug(&debug_path);
    assert!(shell(&mut debug, "ls /vm").contains("name = \"guest\""));
    assert!(shell(&mut debug, "history /vm/name").contains("WRITE /vm/name -> \"guest\""));
    assert!(shell(&mut debug, "nonsense").starts_with("error: unknown command"));
    assert_eq!(shell(&mut debug, "trace all on"), "ok\n");
    assert_eq!(shell(&mut debug, "restart"), "restarting\n");
    drop(dom0);

    // The restart recovered from the database: state and settings are back.
    let deadline = Instant::now() + TIMEOUT;
    let mut dom0 = loop {
        if let Ok(mut client) = SocketClient::connect(&daemon.socket, TIMEOUT)
            && let Ok(reply) = client.read("/vm/name")
        {
            assert_eq!(reply.payload, b"guest");
            break client;
        }
        assert!(Instant::now() < deadline, "daemon did not come back");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(shell(&mut debug, "log").contains("trace=all"));
    assert_eq!(dom0.write("/vm/after", b"1").unwrap().error(), None);
}

/// `inject-crash` through XS_CONTROL (what `xenstore-control inject-crash 1 after-sync`
/// sends): the arming request is answered, the next request crashes the server after its
/// commit is durable, the daemon restarts from the database in-process, and the write is
/// there afterwards.
#[test]
fn xs_control_inject_crash_restarts_from_the_database() {
    let directory = temp_dir("inject");
    let database = directory.join("store.db");
    let daemon = Daemon::start(
        &directory,
        &[
            "--persistence",
            "crash-resilient",
            "--database",
            database.to_str().unwrap(),
            "--database-size",
            "8388608",
        ],
    );
    let mut dom0 = SocketClient::connect(&daemon.socket, TIMEOUT).unwrap();
    assert_eq!(dom0.write("/before", b"1").unwrap().error(), None);
    let reply = dom0
        .request(MessageType::Control, 0, b"inject-crash\x001\0after-sync\0")
        .unwrap();
    assert_eq!(reply.error(), None);
    assert!(String::from_utf8_lossy(&reply.payload).contains("crash armed"));
    // The crash hits this request: its reply never comes (the socket dies with the server).
    let _ = dom0.write("/crashed", b"2");
    drop(dom0);
    let deadline = Instant::now() + TIMEOUT;
    let mut dom0 = loop {
        if let Ok(mut client) = SocketClient::connect(&daemon.socket, TIMEOUT)
            && let Ok(reply) = client.read("/before")
        {
            assert_eq!(reply.payload, b"1");
            break client;
        }
        assert!(Instant::now() < deadline, "daemon did not come back");
        std::thread::sleep(Duration::from_millis(20));
    };
    // after-sync: the commit was durable before the crash.
    assert_eq!(dom0.read("/crashed").unwrap().payload, b"2");
    assert_eq!(dom0.write("/after", b"3").unwrap().error(), None);
}
