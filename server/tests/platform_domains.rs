//! Platform-initiated domain changes through the server API, on in-memory rings:
//! `Server::introduce_domain` (C `init_domain`: the ring's indices are kept, so a request the
//! peer queued before the server started is served) versus XS_INTRODUCE (C `do_introduce`:
//! the ring is reset), and `Server::domain_states` (C `do_check_domains`: a first shutdown
//! fires `@releaseDomain` and keeps the domain's nodes; death closes the connection, removes
//! the nodes and fires `@releaseDomain`, transmitted only after the commit is synced).

mod common;

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;

use common::{Shared, SimPlatform, SimServer, TestJournal, add_page};
use xenstore_protocol::ring::{GuestRing, InMemoryPage};
use xenstore_protocol::{Domid, MessageType};
use xenstore_server::platform::RingLocation;
use xenstore_server::ring::Field;
use xenstore_server::server::request_frame;
use xenstore_server::store_engine::StoreEngine;
use xenstore_server::{Config, ConnectionId, DomainState, IntroduceError, NoJournal, Server};

/// The server over a journal that keeps nothing but records its appends and syncs (and dom0's
/// `rsp_prod` at each sync) in the world, next to the platform's calls.
type TestServer = SimServer<TestJournal<NoJournal>>;

fn new_server(world: &Shared) -> TestServer {
    let engine = StoreEngine::new(xenstore_store::Config::default());
    // Ports from 101, a clock that stands still.
    let platform = SimPlatform {
        world: world.clone(),
        clock: Rc::new(Cell::new(1)),
        tick_ns: 0,
        next_port: 100,
    };
    let journal = TestJournal::recording(NoJournal, world);
    Server::new(platform, engine, journal, Config::default())
}

fn location(domid: u16) -> RingLocation {
    RingLocation {
        domid: Domid(domid),
        gfn: 1,
        remote_port: 7,
    }
}

/// One frame as read back: (type, req_id, payload).
type Frame = (MessageType, u32, Vec<u8>);

fn parse_frames(bytes: &[u8]) -> Vec<Frame> {
    let mut frames = Vec::new();
    let mut rest = bytes;
    while rest.len() >= 16 {
        let word = |at: usize| u32::from_le_bytes(rest[at..at + 4].try_into().unwrap());
        let (kind, req_id, length) = (word(0), word(4), word(12) as usize);
        assert!(rest.len() >= 16 + length, "partial frame");
        frames.push((
            MessageType::from_u32(kind),
            req_id,
            rest[16..16 + length].to_vec(),
        ));
        rest = &rest[16 + length..];
    }
    assert!(rest.is_empty(), "partial header");
    frames
}

fn ring_send(page: &Arc<InMemoryPage>, kind: MessageType, req_id: u32, payload: &[u8]) {
    let frame = request_frame(kind, req_id, 0, payload);
    let transfer = GuestRing::new(page.clone()).write_requests(&frame).unwrap();
    assert_eq!(transfer.bytes, frame.len());
}

fn ring_receive(page: &Arc<InMemoryPage>) -> Vec<Frame> {
    let mut buffer = [0u8; 1024];
    let transfer = GuestRing::new(page.clone())
        .read_replies(&mut buffer)
        .unwrap();
    parse_frames(&buffer[..transfer.bytes])
}

fn socket_send(server: &mut TestServer, id: ConnectionId, kind: MessageType, payload: &[u8]) {
    let frame = request_frame(kind, 1, 0, payload);
    assert_eq!(server.socket_input(id, &frame), frame.len());
}

fn socket_receive(server: &mut TestServer, id: ConnectionId) -> Vec<Frame> {
    let mut bytes = Vec::new();
    loop {
        let chunk = server.socket_output(id).to_vec();
        if chunk.is_empty() {
            break;
        }
        server.socket_sent(id, chunk.len());
        bytes.extend(chunk);
    }
    parse_frames(&bytes)
}

/// Sends one socket request, steps, returns the frames that came back.
fn socket_request(
    server: &mut TestServer,
    id: ConnectionId,
    kind: MessageType,
    payload: &[u8],
) -> Vec<Frame> {
    socket_send(server, id, kind, payload);
    server.step().unwrap();
    socket_receive(server, id)
}

#[test]
fn platform_introduction_keeps_a_request_queued_before_the_server_started() {
    let world = Shared::default();
    let page = add_page(&world, 0);
    // dom0's kernel queued its first request before the stub domain mapped the ring.
    ring_send(&page, MessageType::Read, 42, b"/tool\0");
    let queued = page.field(Field::ReqProd);
    let mut server = new_server(&world);
    let id = server.introduce_domain(location(0)).unwrap();

    assert_eq!(page.field(Field::ReqProd), queued, "request kept");
    assert_eq!(page.field(Field::ReqCons), 0);
    assert_eq!(page.field(Field::Connection), 0, "CONNECTED");
    assert_ne!(page.field(Field::ServerFeatures), 0, "features advertised");
    {
        let world = world.borrow();
        assert_eq!(world.calls, ["bind 0", "append INTRODUCE", "sync"]);
    }
    assert_eq!(server.connections().by_domid(Domid::DOM0), Some(id));
    assert!(matches!(
        server.introduce_domain(location(0)),
        Err(IntroduceError::AlreadyConnected(existing)) if existing == id
    ));

    server.step().unwrap();
    let replies = ring_receive(&page);
    assert_eq!(replies.len(), 1, "{replies:?}");
    assert_eq!(replies[0].0, MessageType::Read);
    assert_eq!(replies[0].1, 42);
    assert_eq!(page.field(Field::ReqCons), queued);
}

#[test]
fn platform_introduction_of_a_guest_fires_introduce_domain() {
    let world = Shared::default();
    add_page(&world, 5);
    let mut server = new_server(&world);
    let socket = server.socket_open().unwrap();
    let frames = socket_request(
        &mut server,
        socket,
        MessageType::Watch,
        b"@introduceDomain\0t\0",
    );
    assert_eq!(frames.len(), 2, "reply and initial event: {frames:?}");
    server.introduce_domain(location(5)).unwrap();
    let frames = socket_receive(&mut server, socket);
    assert_eq!(
        frames,
        [(
            MessageType::WatchEvent,
            0,
            b"@introduceDomain\0t\0".to_vec()
        )]
    );
    let frames = socket_request(&mut server, socket, MessageType::IsDomainIntroduced, b"5\0");
    assert_eq!(frames[0].2, b"T\0");
}

#[test]
fn platform_introduction_resets_a_ring_with_inconsistent_indices() {
    let world = Shared::default();
    let page = add_page(&world, 3);
    page.set_field(Field::ReqProd, 5000);
    let mut server = new_server(&world);
    server.introduce_domain(location(3)).unwrap();
    assert_eq!(page.field(Field::ReqProd), 0);
    assert_eq!(page.field(Field::ReqCons), 0);
}

#[test]
fn xs_introduce_resets_the_ring_as_upstream_does() {
    let world = Shared::default();
    let page = add_page(&world, 4);
    // Something queued before the INTRODUCE is dropped (C `domain_conn_reset`).
    ring_send(&page, MessageType::Read, 9, b"/tool\0");
    let mut server = new_server(&world);
    let socket = server.socket_open().unwrap();
    let frames = socket_request(
        &mut server,
        socket,
        MessageType::Introduce,
        b"4\x001\x007\0",
    );
    assert_eq!(frames[0].0, MessageType::Introduce, "{frames:?}");
    assert_eq!(page.field(Field::ReqProd), 0);
    assert_eq!(page.field(Field::ReqCons), 0);
    server.step().unwrap();
    assert!(ring_receive(&page).is_empty());
}

#[test]
fn shutdown_fires_release_domain_and_death_releases_the_domain() {
    let world = Shared::default();
    let dom0_page = add_page(&world, 0);
    add_page(&world, 5);
    let mut server = new_server(&world);
    server.introduce_domain(location(0)).unwrap();
    let guest = server.introduce_domain(location(5)).unwrap();

    // dom0 (on its ring) watches @releaseDomain; a guest node owned by domain 5.
    ring_send(&dom0_page, MessageType::Watch, 1, b"@releaseDomain\0rel\0");
    ring_send(
        &dom0_page,
        MessageType::Write,
        2,
        b"/local/domain/5/data\0v",
    );
    ring_send(
        &dom0_page,
        MessageType::SetPerms,
        3,
        b"/local/domain/5\0n5\0",
    );
    server.step().unwrap();
    server.step().unwrap();
    let frames = ring_receive(&dom0_page);
    let kinds: Vec<MessageType> = frames.iter().map(|frame| frame.0).collect();
    assert_eq!(
        kinds,
        [
            MessageType::Watch,
            MessageType::WatchEvent,
            MessageType::Write,
            MessageType::SetPerms
        ],
        "{frames:?}"
    );
    let release_event = (
        MessageType::WatchEvent,
        0,
        b"@releaseDomain\0rel\0".to_vec(),
    );

    // First shutdown: one @releaseDomain event, after the sync; nodes and connection stay.
    world.borrow_mut().calls.clear();
    world.borrow_mut().rsp_prod_at_sync.clear();
    let before = dom0_page.field(Field::RspProd);
    let shutdown = DomainState {
        domid: Domid(5),
        shutdown: true,
        dead: false,
    };
    server.domain_states(&[shutdown]).unwrap();
    assert_eq!(
        world.borrow().rsp_prod_at_sync,
        [before],
        "sent before sync"
    );
    assert_eq!(
        ring_receive(&dom0_page),
        std::slice::from_ref(&release_event)
    );
    assert_eq!(server.connections().by_domid(Domid(5)), Some(guest));
    ring_send(&dom0_page, MessageType::Read, 4, b"/local/domain/5/data\0");
    server.step().unwrap();
    assert_eq!(
        ring_receive(&dom0_page),
        [(MessageType::Read, 4, b"v".to_vec())]
    );

    // The same state again: nothing new.
    server.domain_states(&[shutdown]).unwrap();
    assert!(ring_receive(&dom0_page).is_empty());

    // Death: connection closed (unbind + unmap), nodes gone, @releaseDomain after the sync.
    world.borrow_mut().calls.clear();
    world.borrow_mut().rsp_prod_at_sync.clear();
    let before = dom0_page.field(Field::RspProd);
    server
        .domain_states(&[DomainState {
            domid: Domid(5),
            shutdown: true,
            dead: true,
        }])
        .unwrap();
    {
        let world = world.borrow();
        assert!(world.calls.iter().any(|call| call.starts_with("unbind ")));
        assert!(world.calls.iter().any(|call| call == "unmap 5"));
        assert_eq!(world.calls.last().map(String::as_str), Some("sync"));
        assert_eq!(world.rsp_prod_at_sync, [before]);
    }
    assert_eq!(server.connections().by_domid(Domid(5)), None);
    assert_eq!(ring_receive(&dom0_page), [release_event]);
    ring_send(&dom0_page, MessageType::Read, 5, b"/local/domain/5/data\0");
    server.step().unwrap();
    let frames = ring_receive(&dom0_page);
    assert_eq!(frames[0].0, MessageType::Error, "{frames:?}");
    assert_eq!(frames[0].2, b"ENOENT\0");
}

#[test]
fn dead_domain_that_never_shut_down_is_released() {
    let world = Shared::default();
    add_page(&world, 6);
    let mut server = new_server(&world);
    let socket = server.socket_open().unwrap();
    server.introduce_domain(location(6)).unwrap();
    let frames = socket_request(
        &mut server,
        socket,
        MessageType::Watch,
        b"@releaseDomain\0r\0",
    );
    assert_eq!(frames.len(), 2);
    server
        .domain_states(&[DomainState {
            domid: Domid(6),
            shutdown: false,
            dead: true,
        }])
        .unwrap();
    assert_eq!(
        socket_receive(&mut server, socket),
        [(MessageType::WatchEvent, 0, b"@releaseDomain\0r\0".to_vec())]
    );
    assert_eq!(server.connections().by_domid(Domid(6)), None);
    let frames = socket_request(&mut server, socket, MessageType::IsDomainIntroduced, b"6\0");
    assert_eq!(frames[0].2, b"F\0");
}
