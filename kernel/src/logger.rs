//! The `log` backend: formats each record once and sends it to port 0xE9 (see [`debugcon`])
//! and, once Xen's PV console ring is up, to the console ring (see [`crate::xen::console`]).
//!
//! Never blocks: the console ring drops (and counts) what does not fit; 0xE9 cannot block.
//! Records are serialised by a try-lock: a record that would nest inside another (only
//! possible from a fault inside the logger) is dropped instead of deadlocking.
//!
//! [`debugcon`]: crate::debugcon

use core::fmt::Write;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use log::{LevelFilter, Log, Metadata, Record};

use crate::debugcon;
use crate::xen::console;

/// Longest formatted log line; longer records are truncated (and marked with `...`).
pub const LINE_LENGTH_MAX: usize = 512;

struct KernelLogger;

static LOGGER: KernelLogger = KernelLogger;
static BUSY: AtomicBool = AtomicBool::new(false);
static RECORDS_DROPPED: AtomicU64 = AtomicU64::new(0);

/// Fixed-capacity line buffer; silently truncates.
struct LineBuffer {
    bytes: [u8; LINE_LENGTH_MAX],
    length: usize,
    truncated: bool,
}

impl Write for LineBuffer {
    fn write_str(&mut self, text: &str) -> core::fmt::Result {
        let room = LINE_LENGTH_MAX - self.length;
        let take = text.len().min(room);
        self.bytes[self.length..self.length + take].copy_from_slice(&text.as_bytes()[..take]);
        self.length += take;
        if take < text.len() {
            self.truncated = true;
        }
        Ok(())
    }
}

impl Log for KernelLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        if BUSY.swap(true, Ordering::Acquire) {
            RECORDS_DROPPED.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let mut line = LineBuffer {
            bytes: [0; LINE_LENGTH_MAX],
            length: 0,
            truncated: false,
        };
        let _ = write!(
            line,
            "[{:<5} {}] {}",
            record.level(),
            record.target(),
            record.args()
        );
        if line.truncated {
            line.length = LINE_LENGTH_MAX - 4;
            line.bytes[line.length..line.length + 3].copy_from_slice(b"...");
            line.length += 3;
        }
        line.bytes[line.length] = b'\n';
        let text = &line.bytes[..line.length + 1];
        if debugcon::enabled() {
            debugcon::write_bytes(text);
        }
        console::write_bytes(text);
        BUSY.store(false, Ordering::Release);
    }

    fn flush(&self) {}
}

/// Installs the logger (idempotent) with the given maximum level.
pub fn init(level: LevelFilter) {
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
}

/// Number of whole records dropped because the logger was re-entered.
pub fn records_dropped() -> u64 {
    RECORDS_DROPPED.load(Ordering::Relaxed)
}
