//! Parsing and executing shell commands. Each command is one line; its answer is text.
//!
//! ```text
//! help                          list the commands
//! ls [PATH]                     the subtree at PATH (default /) with permissions and generation
//! read PATH                     one node: value, permissions, generation
//! conns                         connections: domid, ring indices and free space, outstanding
//!                               requests, queued output, quota usage, open transactions
//! watches                       every watch: connection, domid, path, token, depth
//! txns                          open transactions
//! stats                         requests by type, commit latency, log size
//! history PATH [N]              the last N (default 20) commits that touched PATH
//! diff SEQ SEQ                  what changed between two commits
//! log                           show log settings
//! log LEVEL | log CATEGORY on|off
//! trace DOMID|all on|off        decoded request/reply trace for a domain or everyone
//! restart                       controlled warm restart (exercises recovery)
//! ```

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt::{self, Write};

use crate::target::{ShellTarget, TargetError, TraceTarget};

/// Most lines `ls` prints before it stops (the console must stay responsive).
pub const LS_LINES_MAX: usize = 2000;
/// Most commits `history` shows.
pub const HISTORY_ENTRIES_MAX: usize = 200;
/// Longest value shown in full by `ls`; longer ones are cut with a marker.
pub const LS_VALUE_BYTES_MAX: usize = 120;

/// A parsed command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// `help`
    Help,
    /// `ls [PATH]`
    List { path: String },
    /// `read PATH`
    Read { path: String },
    /// `conns`
    Connections,
    /// `watches`
    Watches,
    /// `txns`
    Transactions,
    /// `stats`
    Statistics,
    /// `history PATH [N]`
    History { path: String, limit: usize },
    /// `diff SEQ SEQ`
    Diff { from: u64, to: u64 },
    /// `log` without arguments.
    ShowLog,
    /// `log NAME [VALUE]`
    SetLog { name: String, value: String },
    /// `trace DOMID|all on|off`
    Trace { target: TraceTarget, on: bool },
    /// `restart`
    Restart,
    /// An empty line.
    Nothing,
}

/// Why a command line was rejected; printed as one `error: …` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommandError {
    /// Not a command.
    Unknown(String),
    /// Wrong arguments; the text is the command's usage.
    Usage(&'static str),
    /// The server could not answer.
    Target(TargetError),
    /// The path does not exist.
    NoSuchNode(String),
}

impl fmt::Display for CommandError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommandError::Unknown(word) => {
                write!(formatter, "error: unknown command {word:?} (try help)")
            }
            CommandError::Usage(usage) => write!(formatter, "error: usage: {usage}"),
            CommandError::NoSuchNode(path) => write!(formatter, "error: {path}: no such node"),
            CommandError::Target(TargetError::NoHistory) => {
                write!(
                    formatter,
                    "error: no history: the server runs without persistence"
                )
            }
            CommandError::Target(TargetError::UnknownCommit(seq)) => {
                write!(
                    formatter,
                    "error: commit {seq} is outside the history window"
                )
            }
            CommandError::Target(TargetError::Log(text)) => write!(formatter, "error: log: {text}"),
            CommandError::Target(TargetError::UnknownLogSetting(name)) => {
                write!(formatter, "error: unknown log level or category {name:?}")
            }
        }
    }
}

/// The text of `help`.
pub const HELP: &str = "\
commands:
  help                          this list
  ls [PATH]                     subtree with permissions and generation (default /)
  read PATH                     one node: value, permissions, generation
  conns                         connections, ring indices, outstanding requests, quota usage
  watches                       registered watches
  txns                          open transactions
  stats                         requests by type, commit latency, log size
  history PATH [N]              last N commits (default 20) that touched PATH
  diff SEQ SEQ                  changes between two commits
  log [LEVEL | CATEGORY on|off] show or change logging
  trace DOMID|all on|off        decoded request/reply trace
  restart                       controlled warm restart
  inject-crash N [POINT]        crash while handling the N-th request from now, at POINT:
                                before-append|after-append|after-sync|after-reply|random";

fn parse_number<T: core::str::FromStr>(text: &str, usage: &'static str) -> Result<T, CommandError> {
    text.parse::<T>().map_err(|_| CommandError::Usage(usage))
}

fn parse_switch(text: &str, usage: &'static str) -> Result<bool, CommandError> {
    match text {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(CommandError::Usage(usage)),
    }
}

/// Parses one command line (words separated by blanks).
pub fn parse(line: &str) -> Result<Command, CommandError> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let Some((&name, arguments)) = words.split_first() else {
        return Ok(Command::Nothing);
    };
    let command = match (name, arguments) {
        ("help" | "?", []) => Command::Help,
        ("ls", []) => Command::List {
            path: "/".to_string(),
        },
        ("ls", [path]) => Command::List {
            path: path.to_string(),
        },
        ("ls", _) => return Err(CommandError::Usage("ls [PATH]")),
        ("read", [path]) => Command::Read {
            path: path.to_string(),
        },
        ("read", _) => return Err(CommandError::Usage("read PATH")),
        ("conns", []) => Command::Connections,
        ("watches", []) => Command::Watches,
        ("txns", []) => Command::Transactions,
        ("stats", []) => Command::Statistics,
        ("history", [path]) => Command::History {
            path: path.to_string(),
            limit: 20,
        },
        ("history", [path, limit]) => {
            let limit: usize = parse_number(limit, "history PATH [N]")?;
            if limit == 0 || limit > HISTORY_ENTRIES_MAX {
                return Err(CommandError::Usage("history PATH [N] (N from 1 to 200)"));
            }
            Command::History {
                path: path.to_string(),
                limit,
            }
        }
        ("history", _) => return Err(CommandError::Usage("history PATH [N]")),
        ("diff", [from, to]) => Command::Diff {
            from: parse_number(from.trim_start_matches('#'), "diff SEQ SEQ")?,
            to: parse_number(to.trim_start_matches('#'), "diff SEQ SEQ")?,
        },
        ("diff", _) => return Err(CommandError::Usage("diff SEQ SEQ")),
        ("log", []) => Command::ShowLog,
        ("log", [level]) => Command::SetLog {
            name: level.to_string(),
            value: String::new(),
        },
        ("log", [category, switch]) => {
            parse_switch(switch, "log LEVEL | log CATEGORY on|off")?;
            Command::SetLog {
                name: category.to_string(),
                value: switch.to_string(),
            }
        }
        ("log", _) => return Err(CommandError::Usage("log LEVEL | log CATEGORY on|off")),
        ("trace", [who, switch]) => {
            const USAGE: &str = "trace DOMID|all on|off";
            let target = if *who == "all" {
                TraceTarget::All
            } else {
                TraceTarget::Domain(parse_number(who, USAGE)?)
            };
            Command::Trace {
                target,
                on: parse_switch(switch, USAGE)?,
            }
        }
        ("trace", _) => return Err(CommandError::Usage("trace DOMID|all on|off")),
        ("restart", []) => Command::Restart,
        ("conns" | "watches" | "txns" | "stats" | "restart" | "help", _) => {
            return Err(CommandError::Usage("this command takes no arguments"));
        }
        (other, _) => return Err(CommandError::Unknown(other.to_string())),
    };
    Ok(command)
}

/// Printable form of a value: printable ASCII as is, other bytes escaped.
pub fn printable(value: &[u8], limit: usize) -> String {
    let mut text = String::new();
    for &byte in value.iter().take(limit) {
        match byte {
            b'\\' => text.push_str("\\\\"),
            b'"' => text.push_str("\\\""),
            0x20..=0x7e => text.push(byte as char),
            _ => {
                let _ = write!(text, "\\x{byte:02x}");
            }
        }
    }
    if value.len() > limit {
        let _ = write!(text, "...({} bytes)", value.len());
    }
    text
}

fn list(target: &dyn ShellTarget, root: &str, out: &mut dyn Write) -> Result<(), CommandError> {
    if target.node(root).is_none() {
        return Err(CommandError::NoSuchNode(root.to_string()));
    }
    // Depth-first, children in name order, bounded by LS_LINES_MAX.
    let mut stack: Vec<(String, usize)> = alloc::vec![(root.to_string(), 0)];
    let mut lines = 0usize;
    while let Some((path, depth)) = stack.pop() {
        if lines == LS_LINES_MAX {
            let _ = writeln!(out, "... (stopped after {LS_LINES_MAX} nodes)");
            break;
        }
        let Some(node) = target.node(&path) else {
            continue;
        };
        let name = if depth == 0 {
            path.as_str()
        } else {
            path.rsplit('/').next().unwrap_or("")
        };
        let _ = writeln!(
            out,
            "{:indent$}{name} = \"{value}\"  ({perms}; gen {generation})",
            "",
            indent = depth * 2,
            value = printable(&node.value, LS_VALUE_BYTES_MAX),
            perms = node.permissions,
            generation = node.generation,
        );
        lines += 1;
        let mut children = target.children(&path).unwrap_or_default();
        children.sort();
        for child in children.into_iter().rev() {
            let child_path = if path == "/" {
                format!("/{child}")
            } else {
                format!("{path}/{child}")
            };
            stack.push((child_path, depth + 1));
        }
    }
    Ok(())
}

fn connections(target: &dyn ShellTarget, out: &mut dyn Write) {
    let _ = writeln!(
        out,
        "{:>5} {:>5} {:<6} {:>10} {:>10} {:>10} {:>10} {:>5} {:>4} {:>5} {:>6} {:>6} {:>4} {:>8}",
        "conn",
        "domid",
        "kind",
        "req_cons",
        "req_prod",
        "rsp_cons",
        "rsp_prod",
        "free",
        "port",
        "outst",
        "queued",
        "nodes",
        "txns",
        "memory"
    );
    for connection in target.connections() {
        let (ring, free, port) = match connection.ring {
            Some(ring) => (
                format!(
                    "{:>10} {:>10} {:>10} {:>10}",
                    ring.req_cons, ring.req_prod, ring.rsp_cons, ring.rsp_prod
                ),
                // Free space in the reply ring, as the guest will see it.
                (1024u32.saturating_sub(ring.rsp_prod.wrapping_sub(ring.rsp_cons))).to_string(),
                ring.local_port.to_string(),
            ),
            None => (
                format!("{:>10} {:>10} {:>10} {:>10}", "-", "-", "-", "-"),
                "-".into(),
                "-".into(),
            ),
        };
        let _ = writeln!(
            out,
            "{:>5} {:>5} {:<6} {ring} {free:>5} {port:>4} {:>5} {:>6} {:>6} {:>4} {:>8}",
            connection.id,
            connection.domid,
            connection.kind,
            connection.outstanding,
            connection.queued_output_bytes,
            connection.nodes,
            connection.transactions,
            connection.memory_bytes,
        );
        if let Some(ring) = connection.ring {
            if ring.error != 0 {
                let _ = writeln!(out, "      ^ ring error field = {}", ring.error);
            }
        }
    }
}

fn statistics(target: &dyn ShellTarget, out: &mut dyn Write) {
    let stats = target.statistics();
    let _ = writeln!(out, "uptime:       {} s", stats.uptime_seconds);
    let _ = writeln!(out, "persistence:  {}", stats.persistence);
    let _ = writeln!(out, "nodes:        {}", stats.nodes);
    let _ = writeln!(out, "requests:     {}", stats.requests_total);
    let rate = stats
        .requests_total
        .checked_div(stats.uptime_seconds)
        .unwrap_or(stats.requests_total);
    let _ = writeln!(out, "requests/s:   {rate} (mean since start)");
    let _ = writeln!(out, "commits:      {}", stats.commits);
    let _ = writeln!(
        out,
        "commit latency: mean {} us, max {} us",
        stats.commit_latency_mean_us, stats.commit_latency_max_us
    );
    let _ = writeln!(out, "log bytes:    {}", stats.log_bytes);
    let mut by_type = stats.requests_by_type;
    by_type.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    for (name, count) in by_type {
        let _ = writeln!(out, "  {name:<22} {count}");
    }
}

/// Executes one command line against `target`, writing the answer to `out`. Errors are written
/// as one `error: …` line too, and returned so callers (XS_CONTROL) can map them.
pub fn execute(
    line: &str,
    target: &mut dyn ShellTarget,
    out: &mut dyn Write,
) -> Result<(), CommandError> {
    let result = run(line, target, out);
    if let Err(error) = &result {
        let _ = writeln!(out, "{error}");
    }
    result
}

fn run(line: &str, target: &mut dyn ShellTarget, out: &mut dyn Write) -> Result<(), CommandError> {
    match parse(line)? {
        Command::Nothing => {}
        Command::Help => {
            let _ = writeln!(out, "{HELP}");
        }
        Command::List { path } => list(target, &path, out)?,
        Command::Read { path } => {
            let node = target
                .node(&path)
                .ok_or(CommandError::NoSuchNode(path.clone()))?;
            let _ = writeln!(out, "path:        {path}");
            let _ = writeln!(
                out,
                "value:       \"{}\"",
                printable(&node.value, usize::MAX)
            );
            let _ = writeln!(out, "length:      {}", node.value.len());
            let _ = writeln!(out, "permissions: {}", node.permissions);
            let _ = writeln!(out, "generation:  {}", node.generation);
            let children = target.children(&path).unwrap_or_default();
            let _ = writeln!(out, "children:    {}", children.len());
        }
        Command::Connections => connections(target, out),
        Command::Watches => {
            let _ = writeln!(
                out,
                "{:>5} {:>5} {:>5}  path / token",
                "conn", "domid", "depth"
            );
            for watch in target.watches() {
                let depth = watch
                    .depth
                    .map_or("-".to_string(), |depth| depth.to_string());
                let _ = writeln!(
                    out,
                    "{:>5} {:>5} {depth:>5}  {} / {}",
                    watch.connection, watch.domid, watch.path, watch.token
                );
            }
        }
        Command::Transactions => {
            let _ = writeln!(
                out,
                "{:>5} {:>5} {:>10} {:>8}",
                "conn", "domid", "tx", "accessed"
            );
            for transaction in target.transactions() {
                let _ = writeln!(
                    out,
                    "{:>5} {:>5} {:>10} {:>8}",
                    transaction.connection,
                    transaction.domid,
                    transaction.id,
                    transaction.nodes_accessed
                );
            }
        }
        Command::Statistics => statistics(target, out),
        Command::History { path, limit } => {
            let commits = target.history(&path, limit).map_err(CommandError::Target)?;
            if commits.is_empty() {
                let _ = writeln!(out, "no commit in the history window touched {path}");
            }
            for commit in commits {
                let after = match &commit.value_after {
                    Some(value) => format!("\"{}\"", printable(value, LS_VALUE_BYTES_MAX)),
                    None => "absent".to_string(),
                };
                let _ = writeln!(
                    out,
                    "#{:<8} t={}.{:09}s conn={} dom={} {} {} -> {after}",
                    commit.seq,
                    commit.timestamp_ns / 1_000_000_000,
                    commit.timestamp_ns % 1_000_000_000,
                    commit.connection,
                    commit.domid,
                    commit.request,
                    commit.path,
                );
            }
        }
        Command::Diff { from, to } => {
            let diff = target.diff(from, to).map_err(CommandError::Target)?;
            for path in &diff.added {
                let _ = writeln!(out, "+ {path}");
            }
            for path in &diff.removed {
                let _ = writeln!(out, "- {path}");
            }
            for path in &diff.changed {
                let _ = writeln!(out, "~ {path}");
            }
            let _ = writeln!(
                out,
                "{} added, {} removed, {} changed",
                diff.added.len(),
                diff.removed.len(),
                diff.changed.len()
            );
        }
        Command::ShowLog => {
            for (name, value) in target.log_settings() {
                let _ = writeln!(out, "{name}={value}");
            }
        }
        Command::SetLog { name, value } => {
            target
                .set_log(&name, &value)
                .map_err(CommandError::Target)?;
            let _ = writeln!(out, "ok");
        }
        Command::Trace { target: who, on } => {
            target.set_trace(who, on);
            let _ = writeln!(out, "ok");
        }
        Command::Restart => {
            target.request_restart().map_err(CommandError::Target)?;
            let _ = writeln!(out, "restarting");
        }
    }
    Ok(())
}
