//! CONTROL (type 0) commands, with C xenstored's reply texts (xen.git
//! `tools/xenstored/control.c`, `domain.c` `domain_get_quota` / `domain_max_global_acc`).
//!
//! Supported: `check`, `log`, `memreport`, `print`, `quota`, `quota-soft`, `help`, and two
//! read-only debug commands of this project: `node <path>` and `connections`. `logfile` and
//! `live-update` are not offered (C answers `EINVAL` for unknown commands, so do we).
//! Commands that need the platform return an [`Effect`] (log switches, print, memory report).

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write;

use xenstore_protocol::{Domid, Errno};

use crate::access::Caller;
use crate::changes::{Change, Effect, Reply};
use crate::image::{LOG_SWITCHES, LogSettings};
use crate::quota::{self, QuotaKind, QuotaLevel};
use crate::store::{Store, Work};

/// Commands and their parameter help, in C's order (plus ours at the end).
const COMMANDS: [(&str, &str); 9] = [
    ("check", ""),
    ("log", "[on|off|+<switch>|-<switch>]"),
    ("memreport", "[<file>]"),
    ("print", "<string>"),
    ("quota", "[set <name> <val>|<domid>|max [-r]]"),
    ("quota-soft", "[set <name> <val>]"),
    ("help", ""),
    ("node", "<path>"),
    ("connections", ""),
];

fn text(reply: String) -> Reply {
    match xenstore_protocol::reply::string(reply) {
        Ok(payload) => Reply::Payload(payload),
        Err(errno) => Reply::Error(errno),
    }
}

fn ok() -> Reply {
    Reply::Payload(xenstore_protocol::reply::ok())
}

/// C `atoi`: optional blanks and sign, digits, junk ignored.
fn atoi(text: &str) -> i64 {
    i64::from(xenstore_protocol::request::c_atoi(text.as_bytes()))
}

/// Runs one CONTROL command (the caller is privileged: checked by `precheck`).
pub(crate) fn control(
    store: &mut Store,
    caller: &Caller,
    command: &str,
    arguments: &[&[u8]],
    work: &mut Work,
) -> Reply {
    let mut args: Vec<&str> = Vec::with_capacity(arguments.len());
    for argument in arguments {
        match core::str::from_utf8(argument) {
            Ok(argument) => args.push(argument),
            Err(_) => return Reply::Error(Errno::EINVAL),
        }
    }
    let _ = caller;
    match command {
        "check" => {
            if !args.is_empty() {
                return Reply::Error(Errno::EINVAL);
            }
            for problem in store.check() {
                work.effects
                    .push(Effect::Print(format!("check: {problem}")));
            }
            ok()
        }
        "log" => log(store, &args, work),
        "print" => {
            if args.len() != 1 {
                return Reply::Error(Errno::EINVAL);
            }
            work.effects
                .push(Effect::Print(format!("control: {}", args[0])));
            ok()
        }
        "memreport" => {
            if args.len() > 1 {
                return Reply::Error(Errno::EINVAL);
            }
            work.effects.push(Effect::MemoryReport {
                file: args.first().map(|file| String::from(*file)),
                text: memory_report(store),
            });
            ok()
        }
        "quota" => quota_command(store, &args, QuotaLevel::Hard, work),
        "quota-soft" => quota_command(store, &args, QuotaLevel::Soft, work),
        "help" => {
            if !args.is_empty() {
                return Reply::Error(Errno::EINVAL);
            }
            let mut out = String::new();
            for (name, parameters) in COMMANDS {
                let _ = writeln!(out, "{name:<15} {parameters}");
            }
            text(out)
        }
        "node" => {
            if args.len() != 1 {
                return Reply::Error(Errno::EINVAL);
            }
            match store.node(args[0]) {
                None => Reply::Error(Errno::ENOENT),
                Some(record) => {
                    let children = store.children(args[0]).unwrap_or_default();
                    text(format!(
                        "path: {}\npermissions: {}\ngeneration: {}\nvalue-bytes: {}\nchildren: {}\n",
                        args[0],
                        record.permissions,
                        record.generation,
                        record.value.len(),
                        children.len()
                    ))
                }
            }
        }
        "connections" => {
            if !args.is_empty() {
                return Reply::Error(Errno::EINVAL);
            }
            let mut out = String::new();
            for (id, connection) in store.connections() {
                let transactions: Vec<u32> = connection.transactions.keys().copied().collect();
                let _ = writeln!(
                    out,
                    "{} {:?} dom{} watches={} transactions={:?}",
                    id.0,
                    connection.record.kind,
                    connection.record.domid.0,
                    connection.record.watches.len(),
                    transactions
                );
            }
            text(out)
        }
        _ => Reply::Error(Errno::EINVAL),
    }
}

fn log(store: &mut Store, args: &[&str], work: &mut Work) -> Reply {
    let mut settings = store.log_settings();
    match args {
        [] => {
            let mut out = String::from("Log switch settings:\n");
            for (index, name) in LOG_SWITCHES.iter().enumerate() {
                let on = settings.switches & (1 << index) != 0;
                let _ = writeln!(out, "{name:<8}: {}", if on { "on" } else { "off" });
            }
            return text(out);
        }
        ["on"] => settings.enabled = true,
        ["off"] => settings.enabled = false,
        [switch] => {
            let (add, name) = match switch.as_bytes().first() {
                Some(b'+') => (true, &switch[1..]),
                Some(b'-') => (false, &switch[1..]),
                _ => return Reply::Error(Errno::EINVAL),
            };
            let Some(index) = LOG_SWITCHES.iter().position(|known| *known == name) else {
                return Reply::Error(Errno::EINVAL);
            };
            if add {
                settings.switches |= 1 << index;
            } else {
                settings.switches &= !(1 << index);
            }
        }
        _ => return Reply::Error(Errno::EINVAL),
    }
    apply_log(store, settings, work);
    ok()
}

fn apply_log(store: &mut Store, settings: LogSettings, work: &mut Work) {
    store.set_log_settings(settings);
    work.changes.push(Change::Log(settings));
    work.effects.push(Effect::Log(settings));
}

fn quota_command(store: &mut Store, args: &[&str], level: QuotaLevel, work: &mut Work) -> Reply {
    match args {
        [] => {
            let mut out = String::from("Quota settings:\n");
            for kind in QuotaKind::ALL {
                let value = store.global_quotas().get(kind, level);
                if value == quota::DISABLED {
                    continue;
                }
                let _ = writeln!(
                    out,
                    "{:<17}: {:>8} {}",
                    kind.name(),
                    value as i32,
                    kind.description()
                );
            }
            text(out)
        }
        ["set", rest @ ..] => {
            if rest.len() != 2 {
                return Reply::Error(Errno::EINVAL);
            }
            let value = atoi(rest[1]);
            if value < 1 {
                return Reply::Error(Errno::EINVAL);
            }
            let Some(kind) = QuotaKind::from_name(rest[0]) else {
                return Reply::Error(Errno::EINVAL);
            };
            if store.global_quotas().get(kind, level) == quota::DISABLED {
                return Reply::Error(Errno::EINVAL);
            }
            let mut quotas = store.global_quotas().clone();
            quotas.set(kind, level, value.min(i64::from(i32::MAX)) as u32);
            store.set_global_quotas(quotas.clone());
            work.changes.push(Change::GlobalQuotas(quotas));
            ok()
        }
        ["max", rest @ ..] if level == QuotaLevel::Hard => {
            let reset = match rest {
                [] => false,
                ["-r"] => true,
                _ => return Reply::Error(Errno::EINVAL),
            };
            let mut out = String::from("Max. seen accounting values:\n");
            for kind in QuotaKind::ALL {
                let _ = writeln!(
                    out,
                    "{:<17}: {:>8}",
                    kind.name(),
                    store.statistics().global_max[kind.index()]
                );
            }
            if reset {
                store.reset_global_statistics();
            }
            text(out)
        }
        [domid] if level == QuotaLevel::Hard => {
            let domid = atoi(domid);
            if !(0..=i64::from(u16::MAX)).contains(&domid) {
                return Reply::Error(Errno::ENOENT);
            }
            let domid = Domid(domid as u16);
            if store.domains().all(|(known, _)| known != domid) {
                return Reply::Error(Errno::ENOENT);
            }
            let usage = store.quota_usage(domid);
            let max = store
                .statistics()
                .domain_max
                .get(&domid)
                .copied()
                .unwrap_or([0; quota::QUOTA_KIND_COUNT]);
            let mut out = format!("Domain {}:\n", domid.0);
            for kind in QuotaKind::ALL {
                let _ = writeln!(
                    out,
                    "{:<17}: {:>8} (max {:>8})",
                    kind.name(),
                    usage.current[kind.index()],
                    max[kind.index()].max(usage.current[kind.index()])
                );
            }
            text(out)
        }
        _ => Reply::Error(Errno::EINVAL),
    }
}

fn memory_report(store: &Store) -> String {
    let mut out = String::from("Xenstore memory report (approximate, bytes):\n");
    let mut domids: Vec<Domid> = store.domains().map(|(domid, _)| domid).collect();
    domids.push(store.config().privileged_domid);
    domids.sort();
    domids.dedup();
    for domid in domids {
        let usage = store.quota_usage(domid);
        let _ = writeln!(
            out,
            "dom{}: nodes {} memory {} watches {} transactions {}",
            domid.0,
            usage.current[QuotaKind::Nodes.index()],
            usage.current[QuotaKind::Memory.index()],
            usage.current[QuotaKind::Watches.index()],
            usage.current[QuotaKind::Transactions.index()]
        );
    }
    let _ = writeln!(out, "total nodes {}", store.node_count());
    out
}
