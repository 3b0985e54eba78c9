//! The persistence options of the command line (after init-xenstore-domain's `--event N`,
//! from its `--param` words, passed verbatim):
//!
//! - `--persistence=none|crash-resilient` (also the two-word form `--persistence
//!   crash-resilient`); default `none`;
//! - `--log-device=vbd|ram:<KiB>`; default `vbd` = the RAM disk dom0 attaches later (the state
//!   is volatile until it arrives); `ram:<KiB>` = a region of the stub domain's own RAM that
//!   survives warm restarts (see [`crate::log_device::RamDevice`]).
//!
//! Bad values are typed errors; the caller logs them and falls back to the default, so a typo
//! never stops xenstore from serving.

use crate::start_info::BootInfo;

/// Smallest RAM log device accepted (the log needs two regions with room for the state).
pub const RAM_LOG_KIB_MIN: u64 = 256;
/// Largest RAM log device accepted (it comes out of the heap; the domain is small).
pub const RAM_LOG_KIB_MAX: u64 = 1024 * 1024;

/// Persistence mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Persistence {
    /// Everything in memory; a panic halts the domain.
    #[default]
    None,
    /// Every request persisted before its reply, once a log device exists.
    CrashResilient,
}

/// Where the log lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogDeviceChoice {
    /// dom0's RAM disk through blkfront, attached after start.
    #[default]
    Vbd,
    /// Own RAM, this many KiB, carved from the heap at cold boot.
    Ram {
        /// Size in KiB.
        kib: u64,
    },
}

/// The parsed options.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PersistenceOptions {
    /// `--persistence`.
    pub persistence: Persistence,
    /// `--log-device`.
    pub log_device: LogDeviceChoice,
}

/// A bad option value (policy: logged, the default is used).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptionError {
    /// `--persistence` is neither `none` nor `crash-resilient`.
    BadPersistence,
    /// `--log-device` is neither `vbd` nor `ram:<KiB>` within the bounds.
    BadLogDevice,
}

impl core::fmt::Display for OptionError {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            OptionError::BadPersistence => {
                formatter.write_str("--persistence must be none or crash-resilient")
            }
            OptionError::BadLogDevice => write!(
                formatter,
                "--log-device must be vbd or ram:<KiB> with {RAM_LOG_KIB_MIN} <= KiB <= {RAM_LOG_KIB_MAX}"
            ),
        }
    }
}

impl PersistenceOptions {
    /// Reads the options; each bad one is reported through `report` and left at its default.
    pub fn from_command_line(boot: &BootInfo, mut report: impl FnMut(OptionError)) -> Self {
        let mut options = PersistenceOptions::default();
        match boot.option("--persistence").map(parse_persistence) {
            Some(Ok(persistence)) => options.persistence = persistence,
            Some(Err(error)) => report(error),
            None => {}
        }
        match boot.option("--log-device").map(parse_log_device) {
            Some(Ok(device)) => options.log_device = device,
            Some(Err(error)) => report(error),
            None => {}
        }
        options
    }
}

/// `none` | `crash-resilient`.
pub fn parse_persistence(value: &str) -> Result<Persistence, OptionError> {
    match value {
        "none" => Ok(Persistence::None),
        "crash-resilient" => Ok(Persistence::CrashResilient),
        _ => Err(OptionError::BadPersistence),
    }
}

/// `vbd` | `ram:<KiB>`.
pub fn parse_log_device(value: &str) -> Result<LogDeviceChoice, OptionError> {
    if value == "vbd" {
        return Ok(LogDeviceChoice::Vbd);
    }
    let kib = value
        .strip_prefix("ram:")
        .and_then(|kib| kib.parse::<u64>().ok())
        .ok_or(OptionError::BadLogDevice)?;
    if !(RAM_LOG_KIB_MIN..=RAM_LOG_KIB_MAX).contains(&kib) {
        return Err(OptionError::BadLogDevice);
    }
    Ok(LogDeviceChoice::Ram { kib })
}
