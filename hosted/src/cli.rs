//! Command-line options of `rxenstored`. Flags follow C xenstored's where they overlap
//! (`-F/--pid-file`, `-N/--no-fork`, `-T/--trace-file`, quota flags `-E -S -W -t -A -M -Q -q`,
//! `-V/--verbose`); the rest are ours (`--socket`, `--sim-dir`, `--persistence`, `--database`).
//!
//! Environment: the socket path defaults to `$XENSTORED_PATH`, else
//! `$XENSTORED_RUNDIR/socket`, else `/var/run/xenstored/socket` (the paths libxenstore uses).

use std::path::PathBuf;

/// Persistence modes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Persistence {
    /// Everything in memory.
    None,
    /// Every reply waits for a durable commit in the database.
    CrashResilient,
}

/// Parsed options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// Unix socket to serve.
    pub socket: PathBuf,
    /// Directory of simulated domains' rings and event channels.
    pub sim_dir: PathBuf,
    /// Persistence mode.
    pub persistence: Persistence,
    /// Database file (crash-resilient mode).
    pub database: PathBuf,
    /// Database size in bytes when it is created.
    pub database_bytes: u64,
    /// Pid file written once the socket listens.
    pub pid_file: Option<PathBuf>,
    /// Request trace file.
    pub trace_file: Option<PathBuf>,
    /// Verbose logging on stderr.
    pub verbose: bool,
    /// Debug shell socket (`--debug-socket PATH`).
    pub debug_socket: Option<PathBuf>,
    /// Do not offer the debug shell on stdin even when it is a terminal.
    pub no_console: bool,
    /// Quota settings `name=value` (hard), in command-line order.
    pub quotas: Vec<(String, u32)>,
    /// Soft quota settings `name=value`.
    pub soft_quotas: Vec<(String, u32)>,
}

/// Default socket path.
pub const DEFAULT_SOCKET: &str = "/var/run/xenstored/socket";
/// Default database path (on a RAM filesystem).
pub const DEFAULT_DATABASE: &str = "/run/xenstored/store.db";
/// Default database size.
pub const DEFAULT_DATABASE_BYTES: u64 = 64 * 1024 * 1024;

/// Why the command line was rejected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CliError {
    /// `--help` was given: print usage and exit 0.
    Help,
    /// An unknown flag.
    UnknownFlag(String),
    /// A flag without its value.
    MissingValue(String),
    /// A value that does not parse.
    BadValue {
        /// The flag.
        flag: String,
        /// The value.
        value: String,
    },
}

impl std::fmt::Display for CliError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CliError::Help => formatter.write_str("help requested"),
            CliError::UnknownFlag(flag) => write!(formatter, "unknown option {flag}"),
            CliError::MissingValue(flag) => write!(formatter, "option {flag} needs a value"),
            CliError::BadValue { flag, value } => {
                write!(formatter, "bad value {value:?} for {flag}")
            }
        }
    }
}

/// Usage text.
pub const USAGE: &str = "\
usage: rxenstored [options]
  --socket PATH            Unix socket (default $XENSTORED_PATH, $XENSTORED_RUNDIR/socket,
                           /var/run/xenstored/socket)
  --sim-dir PATH           simulated domains' rings/event channels (default <socket dir>/domains)
  --persistence MODE       none | crash-resilient (default none)
  --debug-socket PATH      debug shell on a Unix socket (e.g. socat - UNIX-CONNECT:PATH)
  --no-console             no debug shell on stdin (default: offered when stdin is a TTY)
  --database PATH          log file for crash-resilient mode (default /run/xenstored/store.db)
  --database-size BYTES    size of a new database file (default 64 MiB)
  -F, --pid-file PATH      write the pid once the socket listens
  -N, --no-fork            accepted (rxenstored never forks)
  -T, --trace-file PATH    request/reply trace
  -V, --verbose            log to stderr verbosely
  -E, --entry-nb N         quota: nodes per domain
  -S, --entry-size N       quota: node size
  -W, --watch-nb N         quota: watches per domain
  -t, --transaction N      quota: transactions per domain
  -A, --perm-nb N          quota: permissions per node
  -M, --path-max N         quota: path length
  -Q, --quota NAME=VAL     any hard quota
  -q, --quota-soft NAME=VAL any soft quota
  -h, --help               this text
";

fn number(flag: &str, value: &str) -> Result<u32, CliError> {
    value.parse().map_err(|_| CliError::BadValue {
        flag: flag.into(),
        value: value.into(),
    })
}

fn assignment(flag: &str, value: &str) -> Result<(String, u32), CliError> {
    let (name, number_text) = value.split_once('=').ok_or_else(|| CliError::BadValue {
        flag: flag.into(),
        value: value.into(),
    })?;
    Ok((name.to_string(), number(flag, number_text)?))
}

/// Parses arguments (without the program name) with the given environment lookup.
pub fn parse(
    arguments: &[String],
    environment: impl Fn(&str) -> Option<String>,
) -> Result<Options, CliError> {
    let mut socket: Option<PathBuf> = None;
    let mut sim_dir: Option<PathBuf> = None;
    let mut options = Options {
        socket: PathBuf::new(),
        sim_dir: PathBuf::new(),
        persistence: Persistence::None,
        database: PathBuf::from(DEFAULT_DATABASE),
        database_bytes: DEFAULT_DATABASE_BYTES,
        pid_file: None,
        trace_file: None,
        verbose: false,
        debug_socket: None,
        no_console: false,
        quotas: Vec::new(),
        soft_quotas: Vec::new(),
    };
    let mut index = 0;
    while index < arguments.len() {
        let argument = &arguments[index];
        index += 1;
        let (flag, inline) = match argument.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => {
                (flag.to_string(), Some(value.to_string()))
            }
            _ => (argument.clone(), None),
        };
        let takes_value = matches!(
            flag.as_str(),
            "--socket"
                | "--engine"
                | "--debug-socket"
                | "--sim-dir"
                | "--persistence"
                | "--database"
                | "--database-size"
                | "-F"
                | "--pid-file"
                | "-T"
                | "--trace-file"
                | "-E"
                | "--entry-nb"
                | "-S"
                | "--entry-size"
                | "-W"
                | "--watch-nb"
                | "-t"
                | "--transaction"
                | "-A"
                | "--perm-nb"
                | "-M"
                | "--path-max"
                | "-Q"
                | "--quota"
                | "-q"
                | "--quota-soft"
        );
        let value = if takes_value {
            match inline {
                Some(value) => value,
                None => {
                    let value = arguments
                        .get(index)
                        .cloned()
                        .ok_or_else(|| CliError::MissingValue(flag.clone()))?;
                    index += 1;
                    value
                }
            }
        } else {
            String::new()
        };
        match flag.as_str() {
            "-h" | "--help" => return Err(CliError::Help),
            "-N" | "--no-fork" => {}
            "-V" | "--verbose" => options.verbose = true,
            "--socket" => socket = Some(PathBuf::from(value)),
            "--sim-dir" => sim_dir = Some(PathBuf::from(value)),
            // Kept for old scripts: the store is the only engine.
            "--engine" if value == "store" => {}
            "--engine" => return Err(CliError::BadValue { flag, value }),
            "--debug-socket" => options.debug_socket = Some(PathBuf::from(value)),
            "--no-console" => options.no_console = true,
            "--persistence" => {
                options.persistence = match value.as_str() {
                    "none" => Persistence::None,
                    "crash-resilient" => Persistence::CrashResilient,
                    _ => return Err(CliError::BadValue { flag, value }),
                }
            }
            "--database" => options.database = PathBuf::from(value),
            "--database-size" => {
                options.database_bytes = value
                    .parse()
                    .map_err(|_| CliError::BadValue { flag, value })?
            }
            "-F" | "--pid-file" => options.pid_file = Some(PathBuf::from(value)),
            "-T" | "--trace-file" => options.trace_file = Some(PathBuf::from(value)),
            "-E" | "--entry-nb" => options
                .quotas
                .push(("nodes".into(), number(&flag, &value)?)),
            "-S" | "--entry-size" => options
                .quotas
                .push(("node-size".into(), number(&flag, &value)?)),
            "-W" | "--watch-nb" => options
                .quotas
                .push(("watches".into(), number(&flag, &value)?)),
            "-t" | "--transaction" => options
                .quotas
                .push(("transactions".into(), number(&flag, &value)?)),
            "-A" | "--perm-nb" => options
                .quotas
                .push(("node-permissions".into(), number(&flag, &value)?)),
            "-M" | "--path-max" => options
                .quotas
                .push(("path-max".into(), number(&flag, &value)?)),
            "-Q" | "--quota" => options.quotas.push(assignment(&flag, &value)?),
            "-q" | "--quota-soft" => options.soft_quotas.push(assignment(&flag, &value)?),
            _ => return Err(CliError::UnknownFlag(flag)),
        }
    }
    options.socket = socket
        .or_else(|| environment("XENSTORED_PATH").map(PathBuf::from))
        .or_else(|| {
            environment("XENSTORED_RUNDIR").map(|directory| PathBuf::from(directory).join("socket"))
        })
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET));
    options.sim_dir = sim_dir.unwrap_or_else(|| {
        options
            .socket
            .parent()
            .map(|parent| parent.join("domains"))
            .unwrap_or_else(|| PathBuf::from("domains"))
    });
    Ok(options)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(text: &str) -> Vec<String> {
        text.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn defaults_and_environment() {
        let options = parse(&[], |_| None).unwrap();
        assert_eq!(options.socket, PathBuf::from(DEFAULT_SOCKET));
        assert_eq!(options.sim_dir, PathBuf::from("/var/run/xenstored/domains"));
        assert_eq!(options.persistence, Persistence::None);
        let options = parse(&[], |name| {
            (name == "XENSTORED_PATH").then(|| "/tmp/x/s".into())
        })
        .unwrap();
        assert_eq!(options.socket, PathBuf::from("/tmp/x/s"));
    }

    #[test]
    fn c_xenstored_flags() {
        let options = parse(
            &args("-N -F /tmp/pid -T /tmp/t -E 5 -W 3 -Q memory=10 --persistence=crash-resilient"),
            |_| None,
        )
        .unwrap();
        assert_eq!(options.pid_file, Some(PathBuf::from("/tmp/pid")));
        assert_eq!(options.trace_file, Some(PathBuf::from("/tmp/t")));
        assert_eq!(
            options.quotas,
            vec![
                ("nodes".into(), 5),
                ("watches".into(), 3),
                ("memory".into(), 10)
            ]
        );
        assert_eq!(options.persistence, Persistence::CrashResilient);
    }

    #[test]
    fn errors() {
        assert_eq!(
            parse(&args("--bogus"), |_| None),
            Err(CliError::UnknownFlag("--bogus".into()))
        );
        assert_eq!(
            parse(&args("--socket"), |_| None),
            Err(CliError::MissingValue("--socket".into()))
        );
        assert!(matches!(
            parse(&args("-E x"), |_| None),
            Err(CliError::BadValue { .. })
        ));
        assert!(matches!(
            parse(&args("--persistence maybe"), |_| None),
            Err(CliError::BadValue { .. })
        ));
        assert_eq!(parse(&args("-h"), |_| None), Err(CliError::Help));
    }
}
