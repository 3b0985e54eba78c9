//! `xenstore-inspect`: reads a copy of the stub domain's RAM disk (or the hosted daemon's
//! database file) and answers the questions an administrator asks after the fact: what did
//! the store hold at commit N, who changed a path and when, what differs between two commits,
//! and is every record and object intact.
//!
//! The image is loaded into memory and opened there, so the inspector never writes to the file
//! it was given (recovery on a real device may truncate a torn tail; a copy must stay as it is).
//! Every command writes plain text to the given writer; errors are [`InspectError`] values with
//! a one-line message, never panics.

pub mod migration;

use std::fmt;
use std::io::Write;

use xenstore_persist::{
    CommitEntry, Config, Log, MemDevice, NodeRecord, OpenError, Recovery, scan_records,
};
use xenstore_protocol::{MessageType, Permissions};

/// Why a command failed. Each variant prints as one line for the terminal.
#[derive(Debug)]
pub enum InspectError {
    /// The command line was wrong; the text says how.
    Usage(String),
    /// The image file could not be read.
    Io(std::io::Error),
    /// The image is not a log, or recovery failed.
    Open(OpenError),
    /// Reading history failed.
    Log(xenstore_persist::Error),
    /// A path or commit that does not exist.
    NotFound(String),
    /// `verify` found damage (the report has been printed).
    Damaged,
    /// A node cannot be written in the migration stream format.
    Export(migration::ExportError),
}

impl fmt::Display for InspectError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InspectError::Usage(text) => write!(formatter, "usage: {text}"),
            InspectError::Io(error) => write!(formatter, "cannot read image: {error}"),
            InspectError::Open(error) => write!(formatter, "cannot open log: {error}"),
            InspectError::Log(error) => write!(formatter, "log read failed: {error}"),
            InspectError::NotFound(what) => write!(formatter, "not found: {what}"),
            InspectError::Damaged => write!(formatter, "verify: damage found (see report above)"),
            InspectError::Export(error) => write!(formatter, "export: {error}"),
        }
    }
}

impl From<std::io::Error> for InspectError {
    fn from(error: std::io::Error) -> Self {
        InspectError::Io(error)
    }
}

impl From<xenstore_persist::Error> for InspectError {
    fn from(error: xenstore_persist::Error) -> Self {
        InspectError::Log(error)
    }
}

/// The help text (also printed for `help` and on usage errors).
pub const USAGE: &str = "\
xenstore-inspect IMAGE COMMAND [ARGS]

IMAGE is a copy of the RAM disk or the hosted daemon's database file (never modified).

commands:
  summary                  superblock, recovery result, sizes, history window
  log [FROM [TO]]          commits with their cause (connection, domid, request, path)
  ls [PATH] [@SEQ]         the tree below PATH (default /) with permissions and generation
  cat PATH [@SEQ]          the value of PATH
  history PATH             every commit that touched PATH or its subtree, with the value after it
  diff SEQ_A SEQ_B         paths added, removed and changed between two commits
  verify                   check every superblock, record checksum and object hash
  blobs [@SEQ]             the server's state blobs (connections, quotas) and their sizes
  export-migration FILE [@SEQ]
                           write the tree in xen.git's xenstore migration stream format
  help                     this text";

/// Loads the image into memory and opens it. `salvage` accepts damage (reported in the
/// recovery) so the newest intact state can still be browsed.
fn open_image(image: &[u8], salvage: bool) -> Result<(Log<MemDevice>, Recovery), InspectError> {
    let device = MemDevice::from_image(image);
    let opened = if salvage {
        Log::open_salvage(device, Config::default())
    } else {
        Log::open(device, Config::default())
    };
    opened.map_err(InspectError::Open)
}

/// Splits an optional trailing `@SEQ` argument off.
fn split_at_seq(arguments: &[String]) -> Result<(Vec<&str>, Option<u64>), InspectError> {
    let mut plain = Vec::new();
    let mut seq = None;
    for argument in arguments {
        if let Some(number) = argument.strip_prefix('@') {
            let parsed = number
                .parse::<u64>()
                .map_err(|_| InspectError::Usage(format!("bad commit number {argument:?}")))?;
            seq = Some(parsed);
        } else {
            plain.push(argument.as_str());
        }
    }
    Ok((plain, seq))
}

fn parse_seq(text: &str) -> Result<u64, InspectError> {
    text.trim_start_matches('@')
        .parse::<u64>()
        .map_err(|_| InspectError::Usage(format!("bad commit number {text:?}")))
}

/// Printable form of a value: text as is when it is printable ASCII, else escaped.
pub fn printable_value(value: &[u8]) -> String {
    let mut text = String::with_capacity(value.len());
    for &byte in value {
        match byte {
            b'\\' => text.push_str("\\\\"),
            b'"' => text.push_str("\\\""),
            0x20..=0x7e => text.push(byte as char),
            b'\n' => text.push_str("\\n"),
            b'\t' => text.push_str("\\t"),
            _ => text.push_str(&format!("\\x{byte:02x}")),
        }
    }
    text
}

/// Permissions as `b0 r5`, or the raw bytes escaped if they do not parse.
pub fn printable_permissions(bytes: &[u8]) -> String {
    match Permissions::parse_wire(bytes) {
        Ok(permissions) => permissions.to_string(),
        Err(_) => format!("<unparsable {}>", printable_value(bytes)),
    }
}

fn request_name(request_type: u32) -> String {
    MessageType::from_u32(request_type).to_string()
}

fn write_commit(out: &mut dyn Write, entry: &CommitEntry) -> std::io::Result<()> {
    let cause = &entry.commit.cause;
    let path = cause.path.as_deref().unwrap_or("-");
    let grouped = if cause.requests_grouped > 1 {
        format!(" (x{})", cause.requests_grouped)
    } else {
        String::new()
    };
    writeln!(
        out,
        "#{seq:<8} t={seconds}.{nanos:09}s conn={conn:<4} dom={dom:<5} {request:<18} req={req:<6} {path}{grouped} [{count} change(s)]",
        seq = entry.seq,
        seconds = cause.timestamp / 1_000_000_000,
        nanos = cause.timestamp % 1_000_000_000,
        conn = cause.connection,
        dom = cause.domid,
        request = if cause.requests_grouped == 0 {
            "internal".to_string()
        } else {
            request_name(cause.request_type)
        },
        req = cause.request_id,
        count = entry.commit.mutations.len(),
    )
}

fn write_node(out: &mut dyn Write, path: &str, record: &NodeRecord) -> std::io::Result<()> {
    writeln!(
        out,
        "{path} = \"{value}\"  ({perms}; gen {generation})",
        value = printable_value(&record.value),
        perms = printable_permissions(&record.permissions),
        generation = record.generation,
    )
}

/// Runs one command on an image already read into memory.
pub fn run(
    image: &[u8],
    command: &str,
    arguments: &[String],
    out: &mut dyn Write,
) -> Result<(), InspectError> {
    match command {
        "help" | "--help" | "-h" => {
            writeln!(out, "{USAGE}")?;
            Ok(())
        }
        "summary" | "stats" => summary(image, out),
        "log" => {
            let (mut log, _) = open_image(image, true)?;
            let (first, last) = log.history_range()?;
            let from = arguments
                .first()
                .map(|a| parse_seq(a))
                .transpose()?
                .unwrap_or(first);
            let to = arguments
                .get(1)
                .map(|a| parse_seq(a))
                .transpose()?
                .unwrap_or(last);
            if from > to {
                return Err(InspectError::Usage(format!("empty range {from}..{to}")));
            }
            for entry in log.commits(from.max(first), to.min(last))? {
                write_commit(out, &entry)?;
            }
            Ok(())
        }
        "ls" => {
            let (plain, seq) = split_at_seq(arguments)?;
            let root = plain.first().copied().unwrap_or("/");
            let (mut log, _) = open_image(image, true)?;
            let mut lines = Vec::new();
            let mut collect = |path: &str, record: &NodeRecord| {
                if xenstore_protocol::path::is_same_or_ancestor(root, path) {
                    lines.push((path.to_string(), record.clone()));
                }
            };
            match seq {
                Some(seq) => log.tree_at(seq)?.for_each_node(&mut collect),
                None => log.for_each_node(&mut collect),
            }
            if lines.is_empty() {
                return Err(InspectError::NotFound(root.to_string()));
            }
            lines.sort_by(|a, b| a.0.cmp(&b.0));
            for (path, record) in &lines {
                write_node(out, path, record)?;
            }
            Ok(())
        }
        "cat" => {
            let (plain, seq) = split_at_seq(arguments)?;
            let path = plain
                .first()
                .ok_or_else(|| InspectError::Usage("cat PATH [@SEQ]".into()))?;
            let (mut log, _) = open_image(image, true)?;
            let value = match seq {
                Some(seq) => log
                    .tree_at(seq)?
                    .node(path)
                    .map(|record| record.value.clone()),
                None => log.node(path).map(|record| record.value.clone()),
            };
            let value = value.ok_or_else(|| InspectError::NotFound((*path).to_string()))?;
            writeln!(out, "{}", printable_value(&value))?;
            Ok(())
        }
        "history" => {
            let path = arguments
                .first()
                .ok_or_else(|| InspectError::Usage("history PATH".into()))?;
            let (mut log, _) = open_image(image, true)?;
            let commits = log.commits_touching(path)?;
            if commits.is_empty() {
                writeln!(out, "no commit in the history window touched {path}")?;
            }
            for entry in &commits {
                write_commit(out, entry)?;
                let tree = log.tree_at(entry.seq)?;
                match tree.node(path) {
                    Some(record) => {
                        write!(out, "    after: ")?;
                        write_node(out, path, record)?;
                    }
                    None => writeln!(out, "    after: {path} absent")?,
                }
            }
            Ok(())
        }
        "diff" => {
            let (a, b) = match arguments {
                [a, b] => (parse_seq(a)?, parse_seq(b)?),
                _ => return Err(InspectError::Usage("diff SEQ_A SEQ_B".into())),
            };
            let (mut log, _) = open_image(image, true)?;
            let diff = log.diff(a, b)?;
            let after = log.tree_at(b)?;
            for path in &diff.added {
                match after.node(path) {
                    Some(record) => {
                        write!(out, "+ ")?;
                        write_node(out, path, record)?;
                    }
                    None => writeln!(out, "+ {path}")?,
                }
            }
            for path in &diff.removed {
                writeln!(out, "- {path}")?;
            }
            for path in &diff.changed {
                match after.node(path) {
                    Some(record) => {
                        write!(out, "~ ")?;
                        write_node(out, path, record)?;
                    }
                    None => writeln!(out, "~ {path}")?,
                }
            }
            for key in &diff.blobs_added {
                writeln!(out, "+ blob {key}")?;
            }
            for key in &diff.blobs_removed {
                writeln!(out, "- blob {key}")?;
            }
            for key in &diff.blobs_changed {
                writeln!(out, "~ blob {key}")?;
            }
            writeln!(
                out,
                "{} added, {} removed, {} changed",
                diff.added.len(),
                diff.removed.len(),
                diff.changed.len()
            )?;
            Ok(())
        }
        "blobs" => {
            let (_, seq) = split_at_seq(arguments)?;
            let (mut log, _) = open_image(image, true)?;
            let mut lines = Vec::new();
            match seq {
                Some(seq) => {
                    let snapshot = log.tree_at(seq)?.snapshot();
                    for (key, value) in &snapshot.blobs {
                        lines.push((key.clone(), value.len()));
                    }
                }
                None => log.for_each_blob(|key, value| lines.push((key.to_string(), value.len()))),
            }
            for (key, size) in lines {
                writeln!(out, "{key}  {size} bytes")?;
            }
            Ok(())
        }
        "verify" => verify(image, out),
        "export-migration" => {
            let (plain, seq) = split_at_seq(arguments)?;
            let file = plain
                .first()
                .ok_or_else(|| InspectError::Usage("export-migration FILE [@SEQ]".into()))?;
            let (mut log, _) = open_image(image, true)?;
            let mut nodes = Vec::new();
            let mut collect = |path: &str, record: &NodeRecord| {
                nodes.push((path.to_string(), record.clone()));
            };
            match seq {
                Some(seq) => log.tree_at(seq)?.for_each_node(&mut collect),
                None => log.for_each_node(&mut collect),
            }
            // Byte order puts every parent before its children ("/a" < "/a/b").
            nodes.sort_by(|a, b| a.0.cmp(&b.0));
            let mut writer = migration::StreamWriter::new();
            for (path, record) in &nodes {
                writer
                    .add_node(path, &record.value, &record.permissions)
                    .map_err(InspectError::Export)?;
            }
            let count = writer.node_count();
            std::fs::write(file, writer.finish())?;
            writeln!(out, "wrote {count} nodes to {file}")?;
            Ok(())
        }
        other => Err(InspectError::Usage(format!(
            "unknown command {other:?}\n{USAGE}"
        ))),
    }
}

fn summary(image: &[u8], out: &mut dyn Write) -> Result<(), InspectError> {
    let (mut log, recovery) = open_image(image, true)?;
    let (first, last) = log.history_range()?;
    writeln!(out, "image size:        {} bytes", image.len())?;
    writeln!(out, "newest commit:     {}", recovery.seq)?;
    writeln!(out, "checkpoint commit: {}", recovery.checkpoint_seq)?;
    writeln!(out, "replayed commits:  {}", recovery.replayed_commits)?;
    writeln!(out, "history window:    {first}..{last}")?;
    writeln!(out, "nodes:             {}", log.node_count())?;
    writeln!(
        out,
        "log bytes in use:  {} of {}",
        log.log_bytes(),
        log.region_bytes()
    )?;
    let mut blobs = 0usize;
    log.for_each_blob(|_, _| blobs += 1);
    writeln!(out, "state blobs:       {blobs}")?;
    if recovery.used_fallback_superblock {
        writeln!(
            out,
            "note: the newest superblock was unreadable; the older copy was used"
        )?;
    }
    match recovery.damage {
        Some(damage) => writeln!(out, "DAMAGE: {damage:?}")?,
        None => writeln!(out, "damage:            none found while opening")?,
    }
    Ok(())
}

fn verify(image: &[u8], out: &mut dyn Write) -> Result<(), InspectError> {
    let mut device = MemDevice::from_image(image);
    let (superblock, records, end) = scan_records(&mut device).map_err(InspectError::Open)?;
    writeln!(
        out,
        "superblock: generation {}, region {}, checkpoint at commit {}",
        superblock.generation, superblock.active_region, superblock.checkpoint_seq
    )?;
    writeln!(
        out,
        "records: {} intact, chain ends at byte {end}",
        records.len()
    )?;
    // A strict open re-checks every checksum, walks the whole tree from the checkpoint and
    // checks each object against its hash, then replays the commits after it.
    match Log::open(MemDevice::from_image(image), Config::default()) {
        Ok((log, recovery)) => {
            writeln!(
                out,
                "open: ok at commit {} ({} nodes, {} commits replayed)",
                recovery.seq,
                log.node_count(),
                recovery.replayed_commits
            )?;
            match recovery.damage {
                Some(damage) => {
                    writeln!(out, "DAMAGE: {damage:?}")?;
                    Err(InspectError::Damaged)
                }
                None => {
                    writeln!(out, "verify: ok")?;
                    Ok(())
                }
            }
        }
        Err(error) => {
            writeln!(out, "DAMAGE: {error}")?;
            if let Ok((_, recovery)) = open_image(image, true) {
                writeln!(out, "newest intact state: commit {}", recovery.seq)?;
            }
            Err(InspectError::Damaged)
        }
    }
}
