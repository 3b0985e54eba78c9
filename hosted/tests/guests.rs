//! End-to-end: simulated guests (ring page in a shared-memory file + datagram event channel)
//! introduced by a dom0 socket client, talking to `rxenstored` over their rings; bad input
//! breaks only the offending connection.

mod common;

use std::time::Duration;

use common::{Daemon, temp_dir};
use rxenstored::client::SocketClient;
use rxenstored::guest::SimulatedGuest;
use xenstore_protocol::{Domid, MessageType};

const TIMEOUT: Duration = Duration::from_secs(5);

fn introduce(dom0: &mut SocketClient, guest: &SimulatedGuest) {
    let reply = dom0
        .request(MessageType::Introduce, 0, &guest.introduce_payload())
        .unwrap();
    assert_eq!(reply.error(), None, "INTRODUCE failed");
    // The toolstack's part: the guest's home, owned by the guest.
    let home = format!("/local/domain/{}", guest.domid().0);
    assert_eq!(dom0.write(&home, b"").unwrap().error(), None);
    let reply = dom0
        .request(
            MessageType::SetPerms,
            0,
            format!("{home}\0n{}\0", guest.domid().0).as_bytes(),
        )
        .unwrap();
    assert_eq!(reply.error(), None, "SET_PERMS of the home failed");
}

#[test]
fn guest_writes_over_its_ring_and_dom0_reads_back() {
    let directory = temp_dir("guest");
    let daemon = Daemon::start(
        &directory,
        &["--sim-dir", directory.join("domains").to_str().unwrap()],
    );
    let mut dom0 = SocketClient::connect(&daemon.socket, TIMEOUT).unwrap();
    let mut guest =
        SimulatedGuest::create(&directory.join("domains"), Domid(5), 0x1000, 3).unwrap();
    introduce(&mut dom0, &guest);
    // A value large enough that request and reply wrap around the 1024-byte rings (and
    // within the default node-size quota of 2048 bytes).
    let value = vec![b'x'; 1800];
    let mut payload = b"/local/domain/5/big\0".to_vec();
    payload.extend_from_slice(&value);
    for _ in 0..3 {
        let reply = guest
            .request(MessageType::Write, 0, &payload, TIMEOUT)
            .unwrap();
        assert_eq!(reply.payload, b"OK\0");
        let reply = guest
            .request(MessageType::Read, 0, b"/local/domain/5/big\0", TIMEOUT)
            .unwrap();
        assert_eq!(reply.payload, value);
    }
    let read = dom0.read("/local/domain/5/big").unwrap();
    assert_eq!(read.payload, value);
}

#[test]
fn oversized_header_breaks_only_that_guest() {
    let directory = temp_dir("badguest");
    let daemon = Daemon::start(
        &directory,
        &["--sim-dir", directory.join("domains").to_str().unwrap()],
    );
    let mut dom0 = SocketClient::connect(&daemon.socket, TIMEOUT).unwrap();
    let mut bad = SimulatedGuest::create(&directory.join("domains"), Domid(7), 1, 1).unwrap();
    let mut good = SimulatedGuest::create(&directory.join("domains"), Domid(8), 1, 1).unwrap();
    introduce(&mut dom0, &bad);
    introduce(&mut dom0, &good);
    let mut header = Vec::new();
    for word in [MessageType::Write.as_u32(), 1, 0, 100_000] {
        header.extend_from_slice(&word.to_le_bytes());
    }
    bad.send_raw(&header, std::time::Instant::now() + TIMEOUT)
        .unwrap();
    let deadline = std::time::Instant::now() + TIMEOUT;
    while bad.ring_error() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "error field never set"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(bad.ring_error(), 3, "XENSTORE_ERROR_PROTO");
    let reply = good
        .request(MessageType::Write, 0, b"/local/domain/8/ok\0yes", TIMEOUT)
        .unwrap();
    assert_eq!(reply.payload, b"OK\0");
    assert_eq!(dom0.read("/local/domain/8/ok").unwrap().payload, b"yes");
}

#[test]
fn garbage_on_the_socket_closes_only_that_client() {
    let directory = temp_dir("badsocket");
    let daemon = Daemon::start(&directory, &[]);
    let mut good = SocketClient::connect(&daemon.socket, TIMEOUT).unwrap();
    let mut bad = SocketClient::connect(&daemon.socket, TIMEOUT).unwrap();
    bad.send_raw(&[0xff; 16]).unwrap();
    // The server closes the bad connection: the next read sees EOF (or an error).
    assert!(bad.read("/x").is_err());
    assert_eq!(good.write("/still", b"fine").unwrap().payload, b"OK\0");
    assert_eq!(good.read("/still").unwrap().payload, b"fine");
}
