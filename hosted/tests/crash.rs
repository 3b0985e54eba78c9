//! End-to-end crash survival: `rxenstored --persistence crash-resilient` killed with SIGKILL
//! and restarted keeps every acknowledged write, for socket clients (real xenstore-utils) and
//! for a simulated guest whose ring, event channel and partial packet survive the restart.

mod common;

use std::time::{Duration, Instant};

use common::{Daemon, have_tools, temp_dir};
use rxenstored::client::SocketClient;
use rxenstored::guest::SimulatedGuest;
use xenstore_protocol::{Domid, MessageType};
use xenstore_server::frame::encode_frame;

const TIMEOUT: Duration = Duration::from_secs(5);

fn persistent(directory: &std::path::Path) -> Daemon {
    let database = directory.join("store.db");
    let sim = directory.join("domains");
    Daemon::start(
        directory,
        &[
            "--persistence",
            "crash-resilient",
            "--database",
            database.to_str().unwrap(),
            "--database-size",
            "8388608",
            "--sim-dir",
            sim.to_str().unwrap(),
        ],
    )
}

#[test]
fn tools_write_kill9_restart_read_back() {
    if !have_tools() {
        return;
    }
    let mut daemon = persistent(&temp_dir("crash-tools"));
    daemon.ok("xenstore-write", &["/a/b", "hello", "/a/c", "gone"]);
    daemon.ok("xenstore-rm", &["/a/c"]);
    daemon.kill9();
    daemon.spawn();
    assert_eq!(daemon.ok("xenstore-read", &["/a/b"]), "hello\n");
    assert!(!daemon.tool("xenstore-read", &["/a/c"]).status.success());
}

#[test]
fn guest_ring_survives_kill9_with_a_partial_packet() {
    let directory = temp_dir("crash-guest");
    let mut daemon = persistent(&directory);
    let mut dom0 = SocketClient::connect(&daemon.socket, TIMEOUT).unwrap();
    let mut guest =
        SimulatedGuest::create(&directory.join("domains"), Domid(9), 0x2000, 4).unwrap();
    let reply = dom0
        .request(MessageType::Introduce, 0, &guest.introduce_payload())
        .unwrap();
    assert_eq!(reply.error(), None);
    // The toolstack's part: the guest's home, owned by the guest.
    assert_eq!(dom0.write("/local/domain/9", b"").unwrap().error(), None);
    let reply = dom0
        .request(MessageType::SetPerms, 0, b"/local/domain/9\0n9\0")
        .unwrap();
    assert_eq!(reply.error(), None);
    drop(dom0);
    for round in 0..5u32 {
        let path = format!("/local/domain/9/k{round}");
        let mut payload = format!("{path}\0").into_bytes();
        payload.extend_from_slice(&vec![b'a' + round as u8; 1500]);
        let reply = guest
            .request(MessageType::Write, 0, &payload, TIMEOUT)
            .unwrap();
        assert_eq!(reply.payload, b"OK\0", "round {round}");
        // Half a packet goes in, the server dies, the rest comes after the restart.
        let frame = encode_frame(
            MessageType::Read.as_u32(),
            1000 + round,
            0,
            format!("{path}\0").as_bytes(),
        );
        let (first, second) = frame.split_at(10);
        guest.send_raw(first, Instant::now() + TIMEOUT).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        daemon.kill9();
        daemon.spawn();
        guest.send_raw(second, Instant::now() + TIMEOUT).unwrap();
        let reply = guest
            .wait_reply(1000 + round, Instant::now() + TIMEOUT)
            .unwrap();
        assert_eq!(
            reply.payload,
            vec![b'a' + round as u8; 1500],
            "round {round}"
        );
    }
    let mut dom0 = SocketClient::connect(&daemon.socket, TIMEOUT).unwrap();
    for round in 0..5u32 {
        let read = dom0.read(&format!("/local/domain/9/k{round}")).unwrap();
        assert_eq!(read.payload.len(), 1500);
    }
}
