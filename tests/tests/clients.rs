//! End-to-end with real, unmodified clients against `rxenstored --persistence none` on a
//! private socket: Debian xenstore-utils (`xenstore-*` via `XENSTORED_PATH`), pyxs, a raw
//! wire client for error names the libraries validate away, and a simulated unprivileged
//! guest (ring) for permission checks. Expectations follow C xenstored.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use rxenstored::client::SocketClient;
use rxenstored::guest::SimulatedGuest;
use xenstore_e2e::daemon::{Daemon, Mode};
use xenstore_e2e::tools::{have_pyxs, have_tools, missing, python, tool, xen_utils_tool};
use xenstore_e2e::wire::{error_name, path_payload, show, strings_payload, write_payload};
use xenstore_protocol::{Domid, MessageType};

const TIMEOUT: Duration = Duration::from_secs(10);

fn daemon(name: &str) -> Daemon {
    Daemon::start(name, Mode::None, &[])
}

fn dom0(daemon: &Daemon) -> SocketClient {
    SocketClient::connect(daemon.socket(), TIMEOUT).expect("connect to the daemon socket")
}

/// Sends one raw request and returns the error name (`None` on success).
fn wire_error(
    client: &mut SocketClient,
    message_type: MessageType,
    tx: u32,
    payload: &[u8],
) -> Option<String> {
    let reply = client
        .request(message_type, tx, payload)
        .unwrap_or_else(|error| panic!("{message_type:?} {}: {error}", show(payload)));
    error_name(reply.header.message_type, &reply.payload)
}

#[test]
fn tools_write_read_exists_list_rm() {
    if !have_tools() {
        return;
    }
    let daemon = daemon("tools-basic");
    let socket = daemon.socket();
    tool(
        socket,
        "xenstore-write",
        &["/a/b", "hello", "/a/c", "two words"],
    )
    .ok();
    assert_eq!(tool(socket, "xenstore-read", &["/a/b"]).ok(), "hello\n");
    assert_eq!(tool(socket, "xenstore-read", &["/a/c"]).ok(), "two words\n");
    assert_eq!(tool(socket, "xenstore-list", &["/a"]).ok(), "b\nc\n");
    tool(socket, "xenstore-exists", &["/a/b"]).ok();
    tool(socket, "xenstore-exists", &["/a/nothing"]).fails();
    tool(socket, "xenstore-rm", &["/a/b"]).ok();
    let stderr = tool(socket, "xenstore-read", &["/a/b"]).fails();
    assert!(stderr.contains("couldn't read path /a/b"), "{stderr}");
    // Relative paths from a socket client resolve against /local/domain/0.
    tool(socket, "xenstore-write", &["relative", "r"]).ok();
    assert_eq!(
        tool(socket, "xenstore-read", &["/local/domain/0/relative"]).ok(),
        "r\n"
    );
}

#[test]
fn xenstore_ls_output_format() {
    if !have_tools() {
        return;
    }
    let daemon = daemon("tools-ls");
    let socket = daemon.socket();
    tool(socket, "xenstore-write", &["/t/a", "1", "/t/b/c", "x y"]).ok();
    assert_eq!(
        tool(socket, "xenstore-ls", &["/t"]).ok(),
        "a = \"1\"\nb = \"\"\n c = \"x y\"\n"
    );
    assert_eq!(
        tool(socket, "xenstore-ls", &["-f", "/t"]).ok(),
        "/t/a = \"1\"\n/t/b = \"\"\n/t/b/c = \"x y\"\n"
    );
    tool(socket, "xenstore-chmod", &["/t/a", "n0", "r5"]).ok();
    let with_perms = tool(socket, "xenstore-ls", &["-p", "/t"]).ok();
    let first = with_perms.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("a = \"1\"") && first.ends_with("(n0,r5)"),
        "xenstore-ls -p: {with_perms}"
    );
}

#[test]
fn chmod_denies_an_unprivileged_guest_with_eacces() {
    if !have_tools() {
        return;
    }
    let daemon = daemon("perms");
    let socket = daemon.socket();
    tool(
        socket,
        "xenstore-write",
        &["/local/domain/5/secret", "s", "/local/domain/5/shared", "o"],
    )
    .ok();
    tool(socket, "xenstore-chmod", &["/local/domain/5/secret", "n0"]).ok();
    tool(
        socket,
        "xenstore-chmod",
        &["/local/domain/5/shared", "n0", "r5"],
    )
    .ok();
    let mut dom0 = dom0(&daemon);
    let mut guest =
        SimulatedGuest::create(daemon.sim_dir(), Domid(5), 0x5000, 7).expect("guest ring");
    assert_eq!(
        wire_error(
            &mut dom0,
            MessageType::Introduce,
            0,
            &guest.introduce_payload()
        ),
        None,
        "INTRODUCE"
    );
    let read = |guest: &mut SimulatedGuest, path: &str| {
        let reply = guest
            .request(MessageType::Read, 0, &path_payload(path), TIMEOUT)
            .unwrap_or_else(|error| panic!("guest read {path}: {error}"));
        (
            error_name(reply.header.message_type, &reply.payload),
            reply.payload,
        )
    };
    assert_eq!(
        read(&mut guest, "/local/domain/5/secret").0.as_deref(),
        Some("EACCES")
    );
    assert_eq!(
        read(&mut guest, "/local/domain/5/shared"),
        (None, b"o".to_vec())
    );
    let reply = guest
        .request(
            MessageType::Write,
            0,
            &write_payload("/local/domain/5/secret", b"mine"),
            TIMEOUT,
        )
        .expect("guest write");
    assert_eq!(
        error_name(reply.header.message_type, &reply.payload).as_deref(),
        Some("EACCES"),
        "write to a node without w perm"
    );
    let reply = guest
        .request(
            MessageType::Write,
            0,
            &write_payload("/local/domain/5/shared", b"mine"),
            TIMEOUT,
        )
        .expect("guest write");
    assert_eq!(
        error_name(reply.header.message_type, &reply.payload).as_deref(),
        Some("EACCES"),
        "write to a read-only node"
    );
    // Privileged-only operations are refused to the guest.
    let reply = guest
        .request(MessageType::Introduce, 0, b"6\x001\x001\x00", TIMEOUT)
        .expect("guest introduce");
    assert_eq!(
        error_name(reply.header.message_type, &reply.payload).as_deref(),
        Some("EACCES")
    );
    // Nothing changed for dom0.
    assert_eq!(
        tool(socket, "xenstore-read", &["/local/domain/5/secret"]).ok(),
        "s\n"
    );
}

#[test]
fn xenstore_watch_reports_initial_event_then_the_write() {
    if !have_tools() {
        return;
    }
    let daemon = daemon("tools-watch");
    let socket = daemon.socket();
    tool(socket, "xenstore-write", &["/w", ""]).ok();
    let mut watcher = Command::new("xenstore-watch")
        .args(["-n", "2", "/w"])
        .env("XENSTORED_PATH", socket)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn xenstore-watch");
    let stdout = watcher.stdout.take().expect("piped");
    let (lines_tx, lines_rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    // The initial event is the readiness signal: the watch is registered.
    let first = lines_rx.recv_timeout(TIMEOUT);
    if first.is_err() {
        let _ = watcher.kill();
    }
    assert_eq!(first.as_deref(), Ok("/w"), "initial watch event");
    tool(socket, "xenstore-write", &["/w/c", "1"]).ok();
    let second = lines_rx.recv_timeout(TIMEOUT);
    if second.is_err() {
        let _ = watcher.kill();
    }
    assert_eq!(second.as_deref(), Ok("/w/c"), "event for the write");
    let status = watcher
        .wait()
        .expect("xenstore-watch exits after -n 2 events");
    assert!(status.success(), "{status}");
    reader.join().expect("reader thread");
}

#[test]
fn pyxs_read_write_list_perms() {
    if !have_pyxs() {
        return;
    }
    let daemon = daemon("pyxs-basic");
    let out = python(
        daemon.socket(),
        r#"
import os
from pyxs import Client
with Client(unix_socket_path=os.environ["XS_SOCKET"]) as c:
    c[b"/p/q"] = b"v"
    # pyxs itself only sends NUL and 0x20-0x7f (its _re_7bit_ascii check): the value holds an
    # embedded NUL, which the server must keep (values are raw bytes, not C strings).
    c.write(b"/p/r", b"\x00bin\x00ary\x7f")
    assert c[b"/p/q"] == b"v"
    assert c.read(b"/p/r") == b"\x00bin\x00ary\x7f"
    assert sorted(c.list(b"/p")) == [b"q", b"r"]
    assert c.exists(b"/p/q") and not c.exists(b"/p/zz")
    c.set_perms(b"/p/q", [b"n0", b"r3"])
    assert c.get_perms(b"/p/q") == [b"n0", b"r3"], c.get_perms(b"/p/q")
    assert c.get_domain_path(7) == b"/local/domain/7"
    c.delete(b"/p/q")
    assert not c.exists(b"/p/q")
    print("ok")
"#,
    )
    .ok();
    assert_eq!(out, "ok\n");
}

#[test]
fn pyxs_watch_sees_a_write_from_another_client() {
    if !have_pyxs() {
        return;
    }
    let daemon = daemon("pyxs-watch");
    let out = python(
        daemon.socket(),
        r#"
import os, signal
from pyxs import Client
signal.alarm(20)
path = os.environ["XS_SOCKET"]
with Client(unix_socket_path=path) as c, Client(unix_socket_path=path) as writer:
    c[b"/pw"] = b""
    with c.monitor() as m:
        m.watch(b"/pw", b"tok")
        events = m.wait()
        first = next(events)
        assert (first.path, first.token) == (b"/pw", b"tok"), first
        writer[b"/pw/x"] = b"1"
        second = next(events)
        assert (second.path, second.token) == (b"/pw/x", b"tok"), second
print("ok")
"#,
    )
    .ok();
    assert_eq!(out, "ok\n");
}

#[test]
fn pyxs_transaction_conflict_ends_with_eagain() {
    if !have_pyxs() {
        return;
    }
    let daemon = daemon("pyxs-tx");
    let out = python(
        daemon.socket(),
        r#"
import os
from pyxs import Client
path = os.environ["XS_SOCKET"]
with Client(unix_socket_path=path) as c, Client(unix_socket_path=path) as other:
    c[b"/tc/x"] = b"0"
    # No conflict: commits.
    c.transaction()
    assert c[b"/tc/x"] == b"0"
    c[b"/tc/y"] = b"first"
    assert c.commit() is True
    assert other[b"/tc/y"] == b"first"
    # Conflict: a node read in the transaction is written outside it.
    c.transaction()
    assert c[b"/tc/x"] == b"0"
    other[b"/tc/x"] = b"1"
    assert c[b"/tc/x"] == b"0", "transaction must keep its snapshot"
    c[b"/tc/y"] = b"second"
    assert c.commit() is False, "commit after a conflicting write must fail (EAGAIN)"
    assert other[b"/tc/y"] == b"first", "a failed transaction must not be applied"
    # Aborted transaction leaves nothing behind.
    c.transaction()
    c[b"/tc/z"] = b"never"
    c.rollback()
    assert not other.exists(b"/tc/z")
print("ok")
"#,
    )
    .ok();
    assert_eq!(out, "ok\n");
}

#[test]
fn transaction_conflict_error_name_on_the_wire() {
    let daemon = daemon("wire-tx");
    let mut c = dom0(&daemon);
    let mut other = dom0(&daemon);
    assert_eq!(c.write("/tw/x", b"0").expect("write").error(), None);
    let reply = c
        .request(MessageType::TransactionStart, 0, b"\0")
        .expect("start");
    assert_eq!(reply.error(), None);
    let tx: u32 = String::from_utf8_lossy(&reply.payload)
        .trim_end_matches('\0')
        .parse()
        .expect("decimal transaction id");
    assert_ne!(tx, 0, "transaction ids are never 0");
    let read = c
        .request(MessageType::Read, tx, &path_payload("/tw/x"))
        .expect("read");
    assert_eq!(read.payload, b"0");
    assert_eq!(other.write("/tw/x", b"1").expect("write").error(), None);
    assert_eq!(
        wire_error(
            &mut c,
            MessageType::Write,
            tx,
            &write_payload("/tw/y", b"v")
        ),
        None
    );
    assert_eq!(
        wire_error(&mut c, MessageType::TransactionEnd, tx, b"T\0").as_deref(),
        Some("EAGAIN")
    );
    // The id is dead after END, whatever the outcome.
    assert_eq!(
        wire_error(&mut c, MessageType::Read, tx, &path_payload("/tw/x")).as_deref(),
        Some("ENOENT")
    );
    assert_eq!(
        wire_error(&mut c, MessageType::Read, 0, &path_payload("/tw/y")).as_deref(),
        Some("ENOENT")
    );
}

#[test]
fn error_names_seen_by_pyxs() {
    if !have_pyxs() {
        return;
    }
    let daemon = daemon("pyxs-errors");
    let out = python(
        daemon.socket(),
        r#"
import os, errno
from pyxs import Client
from pyxs.exceptions import PyXSError
def name(f):
    try:
        f()
    except PyXSError as e:
        return errno.errorcode.get(e.args[0], repr(e.args))
    return "OK"
with Client(unix_socket_path=os.environ["XS_SOCKET"]) as c:
    print(name(lambda: c.read(b"/nope")))
    print(name(lambda: c.delete(b"/nope/deeper")))
    print(name(lambda: c.get_perms(b"/nope")))
    with c.monitor() as m:
        print(name(lambda: m.unwatch(b"/nope", b"t")))
        m.watch(b"/dup", b"t")
        print(name(lambda: m.watch(b"/dup", b"t")))
"#,
    )
    .ok();
    assert_eq!(out, "ENOENT\nENOENT\nENOENT\nENOENT\nEEXIST\n");
}

#[test]
fn error_names_for_bad_paths_and_arguments_on_the_wire() {
    let daemon = daemon("wire-errors");
    let mut c = dom0(&daemon);
    for bad in ["/a//b", "/a/", "/a b", "/a\u{e9}", ""] {
        assert_eq!(
            wire_error(&mut c, MessageType::Write, 0, &write_payload(bad, b"v")).as_deref(),
            Some("EINVAL"),
            "WRITE {bad:?}"
        );
        assert_eq!(
            wire_error(&mut c, MessageType::Read, 0, &path_payload(bad)).as_deref(),
            Some("EINVAL"),
            "READ {bad:?}"
        );
    }
    let too_long = format!("/{}", "x".repeat(3100));
    assert_eq!(
        wire_error(
            &mut c,
            MessageType::Write,
            0,
            &write_payload(&too_long, b"v")
        )
        .as_deref(),
        Some("EINVAL"),
        "path longer than XENSTORE_ABS_PATH_MAX"
    );
    assert_eq!(
        wire_error(&mut c, MessageType::Rm, 0, &path_payload("/")).as_deref(),
        Some("EINVAL"),
        "RM /"
    );
    assert_eq!(
        wire_error(&mut c, MessageType::Read, 0, b"/a\0extra\0").as_deref(),
        Some("EINVAL"),
        "single-argument request with two strings"
    );
    assert_eq!(
        wire_error(
            &mut c,
            MessageType::Read,
            0,
            &path_payload("@introduceDomain")
        )
        .as_deref(),
        Some("EINVAL"),
        "special path in READ"
    );
    assert_eq!(
        wire_error(&mut c, MessageType::TransactionEnd, 0, b"T\0").as_deref(),
        Some("ENOENT"),
        "TRANSACTION_END without a transaction"
    );
    assert_eq!(
        wire_error(&mut c, MessageType::Read, 4242, &path_payload("/a")).as_deref(),
        Some("ENOENT"),
        "unknown transaction id"
    );
    assert_eq!(
        wire_error(&mut c, MessageType::from_u32(9999), 0, b"x\0").as_deref(),
        Some("ENOSYS"),
        "unknown message type"
    );
    assert_eq!(
        wire_error(
            &mut c,
            MessageType::SetPerms,
            0,
            &strings_payload(&["/a", "x5"])
        )
        .as_deref(),
        Some("EINVAL"),
        "bad permission letter"
    );
    // The connection still works.
    assert_eq!(c.write("/fine", b"yes").expect("write").error(), None);
}

/// The unmodified `xenstore-control` (extracted by scripts/setup.sh from xen-utils-4.17,
/// because Debian's /usr/bin/xenstore-control is a link to a wrapper of xen-utils-common).
#[test]
fn xenstore_control_tool_help_print_quota() {
    let Some(control) = xen_utils_tool("xenstore-control") else {
        missing("xenstore-control (scripts/setup.sh extracts it)");
        return;
    };
    let daemon = daemon("control-tool");
    let socket = daemon.socket();
    let help = tool(socket, &control, &["help"]).ok();
    assert!(help.contains("print") && help.contains("quota"), "{help}");
    tool(socket, &control, &["print", "hello-from-e2e"]).ok();
    let quota = tool(socket, &control, &["quota"]).ok();
    assert!(quota.contains("nodes"), "{quota}");
}

/// xen.git's own conformance test (tools/tests/xenstore/test-xenstore.c), unmodified: reads,
/// writes, directories, removal and transactions including the EAGAIN conflict case, over the
/// socket with relative paths.
#[test]
fn upstream_test_xenstore_passes() {
    let Some(conformance) = xen_utils_tool("test-xenstore") else {
        missing("test-xenstore (scripts/setup.sh extracts it)");
        return;
    };
    let daemon = daemon("test-xenstore");
    let run = tool(daemon.socket(), &conformance, &["-i", "5"]);
    assert!(
        run.success,
        "test-xenstore failed:\n{}\n{}",
        run.stdout, run.stderr
    );
}

#[test]
fn control_help_print_quota_on_the_wire() {
    let daemon = daemon("control-wire");
    let mut c = dom0(&daemon);
    let reply = c
        .request(MessageType::Control, 0, &strings_payload(&["help"]))
        .expect("CONTROL help");
    assert_eq!(reply.error(), None, "CONTROL help");
    let help = String::from_utf8_lossy(&reply.payload).to_string();
    for command in ["print", "quota", "log", "check"] {
        assert!(help.contains(command), "help lacks {command}: {help}");
    }
    let reply = c
        .request(
            MessageType::Control,
            0,
            &strings_payload(&["print", "hello-from-e2e"]),
        )
        .expect("CONTROL print");
    assert_eq!(reply.error(), None, "CONTROL print");
    let reply = c
        .request(MessageType::Control, 0, &strings_payload(&["quota"]))
        .expect("CONTROL quota");
    assert_eq!(reply.error(), None, "CONTROL quota");
    let quota = String::from_utf8_lossy(&reply.payload).to_string();
    assert!(
        quota.contains("nodes") && quota.contains("watches"),
        "{quota}"
    );
    assert!(
        std::fs::read_to_string(daemon.directory().join("daemon.log"))
            .unwrap_or_default()
            .contains("hello-from-e2e"),
        "CONTROL print must reach the daemon's log"
    );
}
