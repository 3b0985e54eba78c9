//! CONTROL replies in C xenstored's text formats (control.c, domain.c).
// Payloads are NUL-separated strings: in Rust `\0` followed by a digit is always NUL then
// the digit (there are no octal escapes), which is exactly what the wire format needs.
#![allow(clippy::octal_escapes)]
mod common;
use common::*;
use xenstore_protocol::MessageType as T;
use xenstore_store::Effect;

fn text(reply: Vec<u8>) -> String {
    assert_eq!(reply.last(), Some(&0));
    String::from_utf8(reply[..reply.len() - 1].to_vec()).unwrap()
}

#[test]
fn help_lists_commands() {
    let mut h = Harness::new(0);
    let help = text(h.ok(SOCKET, 0, T::Control, b"help\0"));
    assert!(
        help.starts_with("check           \nlog             [on|off|+<switch>|-<switch>]\n"),
        "{help}"
    );
    assert!(help.contains("quota           [set <name> <val>|<domid>|max [-r]]\n"));
}

#[test]
fn quota_texts() {
    let mut h = Harness::new(1);
    let quota = text(h.ok(SOCKET, 0, T::Control, b"quota\0"));
    assert!(
        quota.starts_with("Quota settings:\nnodes            :     1000 Nodes per domain\n"),
        "{quota}"
    );
    assert!(quota.contains("memory           :  2621440 Total Xenstore memory per domain\n"));
    let soft = text(h.ok(SOCKET, 0, T::Control, b"quota-soft\0"));
    assert_eq!(
        soft,
        "Quota settings:\nmemory           :  2097152 Total Xenstore memory per domain\n"
    );
    assert_eq!(
        h.ok(SOCKET, 0, T::Control, b"quota\0set\0nodes\0500\0"),
        b"OK\0"
    );
    assert_eq!(h.ok(SOCKET, 0, T::GetQuota, b"nodes\0"), b"500\0");
    assert_eq!(
        h.send(SOCKET, 0, T::Control, b"quota\0set\0nodes\00\0"),
        Err(xenstore_protocol::Errno::EINVAL)
    );
    let domain = text(h.ok(SOCKET, 0, T::Control, b"quota\01\0"));
    assert!(
        domain.starts_with("Domain 1:\nnodes            :        0 (max        0)\n"),
        "{domain}"
    );
    let max = text(h.ok(SOCKET, 0, T::Control, b"quota\0max\0"));
    assert!(
        max.starts_with("Max. seen accounting values:\nnodes            : "),
        "{max}"
    );
    assert_eq!(
        h.send(SOCKET, 0, T::Control, b"quota\099\0"),
        Err(xenstore_protocol::Errno::ENOENT)
    );
}

#[test]
fn log_print_memreport_effects() {
    let mut h = Harness::new(0);
    let log = text(h.ok(SOCKET, 0, T::Control, b"log\0"));
    assert_eq!(
        log,
        "Log switch settings:\nobj     : off\nio      : off\nwrl     : off\nacc     : off\ntdb     : off\n"
    );
    h.ok(SOCKET, 0, T::Control, b"log\0+io\0");
    assert!(
        matches!(h.last.as_ref().unwrap().effects[0], Effect::Log(settings) if settings.switches == 2)
    );
    assert!(text(h.ok(SOCKET, 0, T::Control, b"log\0")).contains("io      : on\n"));
    assert_eq!(
        h.send(SOCKET, 0, T::Control, b"log\0+bogus\0"),
        Err(xenstore_protocol::Errno::EINVAL)
    );
    h.ok(SOCKET, 0, T::Control, b"print\0hello\0");
    assert_eq!(
        h.last.as_ref().unwrap().effects,
        vec![Effect::Print(String::from("control: hello"))]
    );
    h.ok(SOCKET, 0, T::Control, b"memreport\0");
    assert!(matches!(
        &h.last.as_ref().unwrap().effects[0],
        Effect::MemoryReport { file: None, .. }
    ));
    assert_eq!(h.ok(SOCKET, 0, T::Control, b"check\0"), b"OK\0");
    let node = text(h.ok(SOCKET, 0, T::Control, b"node\0/tool\0"));
    assert!(node.starts_with("path: /tool\npermissions: n0\n"), "{node}");
    let connections = text(h.ok(SOCKET, 0, T::Control, b"connections\0"));
    assert!(
        connections.contains("0 Socket dom0 watches=0"),
        "{connections}"
    );
}
