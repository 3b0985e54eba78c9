//! `rxenstored` entry point: parse options, open the socket and (in crash-resilient mode) the
//! database, recover, serve until SIGTERM/SIGINT.

use std::process::ExitCode;

use rxenstored::cli::{self, CliError, Persistence};
use rxenstored::console::{self, Console};
use rxenstored::daemon::{self, Exit, Listener, Signals};
use rxenstored::fsinfo;
use rxenstored::guard::{self, GuardedEngine};
use rxenstored::platform::HostedPlatform;
use xenstore_persist::{FileDevice, Log};
use xenstore_server::log_journal::LogJournal;
use xenstore_server::store_engine::{StoreChanges, StoreEngine, start_crash_resilient};
use xenstore_server::{Config, Journal, NoJournal, Server};

/// The store's configuration from the quota flags (unknown quota names are reported).
fn store_config(options: &cli::Options) -> xenstore_store::Config {
    let mut config = xenstore_store::Config::default();
    for (name, value, soft) in options
        .quotas
        .iter()
        .map(|(name, value)| (name, value, false))
        .chain(
            options
                .soft_quotas
                .iter()
                .map(|(name, value)| (name, value, true)),
        )
    {
        let full = if soft {
            format!("soft-{name}")
        } else {
            name.clone()
        };
        match config.quotas.parse_name(&full) {
            Some((kind, level)) => config.quotas.set(kind, level, *value),
            None => eprintln!("rxenstored: warning: unknown quota {full:?} ignored"),
        }
    }
    config
}

/// Opens (recovering) or creates the database.
fn open_database(options: &cli::Options) -> Result<(LogJournal<FileDevice>, bool), String> {
    let path = &options.database;
    if let Ok(false) = fsinfo::is_ram_filesystem(path) {
        eprintln!(
            "rxenstored: warning: database {} is not on a RAM filesystem (tmpfs/ramfs); every commit costs a disk sync",
            path.display()
        );
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|error| error.to_string())?;
    }
    let config = xenstore_persist::Config::default();
    if path.exists() {
        let device = FileDevice::open(path).map_err(|error| format!("{error:?}"))?;
        let (log, recovery) = Log::open(device, config).map_err(|error| format!("{error:?}"))?;
        eprintln!(
            "rxenstored: database recovered at commit {:?}",
            recovery.seq
        );
        Ok((LogJournal::new(log), false))
    } else {
        let sectors = options.database_bytes / 512;
        let device = FileDevice::create(path, sectors).map_err(|error| format!("{error:?}"))?;
        let log = Log::create(device, config).map_err(|error| format!("{error:?}"))?;
        Ok((LogJournal::new(log), true))
    }
}

type Daemon<J> = Server<HostedPlatform, GuardedEngine<StoreEngine>, J>;

/// Builds the crash-resilient server: recovers the store and every ring connection from the
/// database, or writes the initial image into a new one.
fn crash_resilient_server(
    options: &cli::Options,
    platform: HostedPlatform,
    config: Config,
) -> Result<Daemon<LogJournal<FileDevice>>, String> {
    let (journal, _created) = open_database(options)?;
    let (server, started) = start_crash_resilient(
        platform,
        config,
        store_config(options),
        journal.into_log(),
        GuardedEngine::new,
    )
    .map_err(|error| error.to_string())?;
    match started {
        xenstore_server::store_engine::Started::Fresh => {
            eprintln!("rxenstored: new database: the initial store is its first commit")
        }
        xenstore_server::store_engine::Started::Recovered(report) => {
            eprintln!("rxenstored: recovered from the database: {report:?}")
        }
    }
    Ok(server)
}

/// Runs the loop with readiness (pid file written once) and the restart policy.
fn serve<J: Journal<StoreChanges>>(
    server: &mut Daemon<J>,
    listener: &Listener,
    signals: &Signals,
    console: &mut Console,
    options: &cli::Options,
    announced: &mut bool,
) -> Result<Exit, daemon::DaemonError> {
    let persistent = options.persistence == Persistence::CrashResilient;
    daemon::run(
        server,
        listener,
        signals,
        console,
        || {
            if *announced {
                return;
            }
            *announced = true;
            if let Some(path) = &options.pid_file
                && let Err(error) = std::fs::write(path, format!("{}\n", std::process::id()))
            {
                eprintln!("rxenstored: pid file {}: {error}", path.display());
            }
            eprintln!("rxenstored: listening on {}", options.socket.display());
        },
        |server| {
            if server.restart_requested() {
                eprintln!("rxenstored: controlled restart requested");
                return true;
            }
            if server.engine().poisoned().is_some() {
                if persistent {
                    eprintln!("rxenstored: restarting from the database after the panic");
                    return true;
                }
                // Mode none: nothing to recover from; keep serving (see guard.rs).
                let _ = server.engine_mut().clear_poison();
            }
            false
        },
    )
}

fn platform(options: &cli::Options) -> Result<HostedPlatform, String> {
    let trace = match &options.trace_file {
        Some(path) => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|error| format!("trace file {}: {error}", path.display()))?,
        ),
        None => None,
    };
    Ok(HostedPlatform::new(
        options.sim_dir.clone(),
        options.verbose,
        trace,
    ))
}

/// At most [`RestartBudget::RESTARTS_MAX`] in-process restarts after journal failures within
/// [`RestartBudget::WINDOW`]; beyond that the daemon exits (the device is broken) and the
/// service manager takes over.
#[derive(Debug, Default)]
struct RestartBudget {
    recent: Vec<std::time::Instant>,
}

impl RestartBudget {
    const RESTARTS_MAX: usize = 3;
    const WINDOW: std::time::Duration = std::time::Duration::from_secs(60);

    fn allow(&mut self, now: std::time::Instant) -> bool {
        self.recent
            .retain(|then| now.duration_since(*then) < Self::WINDOW);
        if self.recent.len() >= Self::RESTARTS_MAX {
            return false;
        }
        self.recent.push(now);
        true
    }
}

fn main() -> ExitCode {
    let arguments: Vec<String> = std::env::args().skip(1).collect();
    let options = match cli::parse(&arguments, |name| std::env::var(name).ok()) {
        Ok(options) => options,
        Err(CliError::Help) => {
            print!("{}", cli::USAGE);
            return ExitCode::SUCCESS;
        }
        Err(error) => {
            eprintln!("rxenstored: {error}\n{}", cli::USAGE);
            return ExitCode::from(2);
        }
    };
    let signals = match Signals::install() {
        Ok(signals) => signals,
        Err(error) => {
            eprintln!("rxenstored: signals: {error}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(error) = std::fs::create_dir_all(&options.sim_dir) {
        eprintln!(
            "rxenstored: cannot create {}: {error}",
            options.sim_dir.display()
        );
        return ExitCode::FAILURE;
    }
    guard::install_panic_hook();
    let config = Config {
        trace: options.trace_file.is_some() || options.verbose,
        ..Config::default()
    };
    let listener = match Listener::bind(&options.socket) {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("rxenstored: socket {}: {error}", options.socket.display());
            return ExitCode::FAILURE;
        }
    };
    let use_stdin = !options.no_console && console::stdin_is_terminal();
    let mut console = match Console::new(options.debug_socket.as_deref(), use_stdin) {
        Ok(console) => console,
        Err(error) => {
            eprintln!("rxenstored: debug socket: {error}");
            return ExitCode::FAILURE;
        }
    };
    let mut announced = false;
    let mut journal_restarts = RestartBudget::default();
    let result = loop {
        let platform = match platform(&options) {
            Ok(platform) => platform,
            Err(error) => {
                eprintln!("rxenstored: {error}");
                return ExitCode::FAILURE;
            }
        };
        let exit = match options.persistence {
            Persistence::None => {
                let engine = GuardedEngine::new(StoreEngine::new(store_config(&options)));
                let mut server = Server::new(platform, engine, NoJournal, config);
                serve(
                    &mut server,
                    &listener,
                    &signals,
                    &mut console,
                    &options,
                    &mut announced,
                )
            }
            Persistence::CrashResilient => {
                let mut server = match crash_resilient_server(&options, platform, config) {
                    Ok(server) => server,
                    Err(error) => {
                        eprintln!(
                            "rxenstored: database {}: {error}",
                            options.database.display()
                        );
                        return ExitCode::FAILURE;
                    }
                };
                serve(
                    &mut server,
                    &listener,
                    &signals,
                    &mut console,
                    &options,
                    &mut announced,
                )
            }
        };
        match exit {
            Ok(Exit::Restart) => continue,
            Ok(Exit::Signal(signal)) => break Ok(signal),
            // `inject-crash` (debug shell or XS_CONTROL): the in-process restart of a caught
            // engine panic; mode none restarts with an empty store, as a real crash would.
            Err(daemon::DaemonError::InjectedCrash(point)) => {
                eprintln!("rxenstored: injected crash ({point}): restarting from the database");
                continue;
            }
            // A journal failure: nothing of the failed step was transmitted; recover from the
            // last durable commit in-process, unless that keeps failing.
            Err(daemon::DaemonError::Server(error))
                if options.persistence == Persistence::CrashResilient
                    && journal_restarts.allow(std::time::Instant::now()) =>
            {
                eprintln!("rxenstored: {error}; restarting from the database");
                continue;
            }
            Err(error) => break Err(error),
        }
    };
    if let Some(path) = &options.pid_file {
        let _ = std::fs::remove_file(path);
    }
    match result {
        Ok(signal) => {
            eprintln!("rxenstored: signal {signal}: shutting down");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("rxenstored: {error}");
            ExitCode::FAILURE
        }
    }
}
