//! End-to-end: the real libxenstore command-line tools (Debian xenstore-utils) and pyxs
//! against `rxenstored` on a private socket, in persistence mode `none`.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Daemon, have_pyxs, have_tools, temp_dir};

#[test]
fn write_read_list_rm() {
    if !have_tools() {
        return;
    }
    let daemon = Daemon::start(&temp_dir("basic"), &[]);
    daemon.ok("xenstore-write", &["/a/b", "hello"]);
    assert_eq!(daemon.ok("xenstore-read", &["/a/b"]), "hello\n");
    let listing = daemon.ok("xenstore-ls", &["/a"]);
    assert!(listing.contains("b = \"hello\""), "{listing}");
    assert_eq!(daemon.ok("xenstore-list", &["/a"]), "b\n");
    daemon.ok("xenstore-rm", &["/a/b"]);
    let missing = daemon.tool("xenstore-read", &["/a/b"]);
    assert!(!missing.status.success());
}

#[test]
fn watch_sees_a_write() {
    if !have_tools() {
        return;
    }
    let daemon = Daemon::start(&temp_dir("watch"), &[]);
    daemon.ok("xenstore-write", &["/w", ""]);
    let watcher = Command::new("xenstore-watch")
        .args(["-n", "2", "/w"])
        .env("XENSTORED_PATH", &daemon.socket)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    daemon.ok("xenstore-write", &["/w/c", "1"]);
    let output = watcher.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.first(), Some(&"/w"), "initial event: {text}");
    assert!(lines.len() == 2 && lines[1].starts_with("/w"), "{text}");
}

#[test]
fn pyxs_round_trip() {
    if !have_pyxs() {
        return;
    }
    let daemon = Daemon::start(&temp_dir("pyxs"), &[]);
    let script = format!(
        "from pyxs import Client\n\
         with Client(unix_socket_path='{}') as c:\n\
         \x20   c[b'/p/q'] = b'v'\n\
         \x20   assert c[b'/p/q'] == b'v'\n\
         \x20   assert c.list(b'/p') == [b'q']\n\
         \x20   print('ok')\n",
        daemon.socket.display()
    );
    let output = Command::new("/usr/bin/python3")
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout), "ok\n");
}

#[test]
fn sigterm_is_a_clean_exit_and_removes_the_socket() {
    let mut daemon = Daemon::start(&temp_dir("sigterm"), &[]);
    let status = daemon.terminate();
    assert!(status.success(), "{status:?}");
    assert!(!daemon.socket.exists());
}
