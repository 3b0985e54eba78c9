//! `xenstore-loadgen`: a load-generating benchmark for any xenstored, speaking the wire
//! protocol itself over the Unix socket (so the same binary measures C xenstored and
//! oxenstored in the Xen lab).
//!
//! ```text
//! xenstore-loadgen [--socket PATH] [--workload boot-storm|rw|mixed|all] [--clients N]
//!                  [--domains N] [--devices N] [--first-domid N] [--duration SECS]
//!                  [--value-size BYTES] [--no-teardown]
//! xenstore-loadgen --spawn-rxenstored PATH [--persistence none|crash-resilient|both] ...
//! ```
//!
//! Socket: `--socket`, else `$XENSTORED_PATH`, else `$XENSTORED_RUNDIR/socket`, else
//! `/var/run/xenstored/socket` (libxenstore's order). With `--spawn-rxenstored` the load
//! generator starts our daemon itself on a private socket (database on tmpfs), once per
//! persistence mode, runs the workloads against each and prints a table with the ratio
//! crash-resilient / none. Output: one line per run with requests/s and latency percentiles.

mod spawn;
mod stats;
mod wire;
mod workload;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use stats::Summary;
use workload::{Params, Workload};

const USAGE: &str = "\
usage: xenstore-loadgen [options]
  --socket PATH              xenstored socket (default $XENSTORED_PATH, $XENSTORED_RUNDIR/socket,
                             /var/run/xenstored/socket)
  --workload NAME            boot-storm | rw | mixed | all (default all)
  --clients N                client connections (default 4)
  --domains N                boot-storm: domains to create (default 64)
  --devices N                boot-storm: vifs and vbds per domain (default 2)
  --first-domid N            boot-storm: first domid (default 1)
  --duration SECS            rw/mixed: run time (default 3)
  --value-size BYTES         rw: value size (default 64)
  --no-teardown              boot-storm: keep the domains' trees
  --spawn-rxenstored PATH    start this rxenstored on a private socket for each mode
  --persistence MODE         with --spawn-rxenstored: none | crash-resilient | both (default both)
  -h, --help                 this text
";

/// Parsed command line.
#[derive(Debug)]
struct Options {
    params: Params,
    workloads: Vec<Workload>,
    spawn: Option<PathBuf>,
    modes: Vec<&'static str>,
}

fn default_socket() -> PathBuf {
    if let Ok(path) = std::env::var("XENSTORED_PATH") {
        return PathBuf::from(path);
    }
    if let Ok(directory) = std::env::var("XENSTORED_RUNDIR") {
        return PathBuf::from(directory).join("socket");
    }
    PathBuf::from("/var/run/xenstored/socket")
}

fn parse(arguments: &[String]) -> Result<Options, String> {
    let mut params = Params {
        socket: default_socket(),
        clients: 4,
        domains: 64,
        first_domid: 1,
        devices: 2,
        duration: Duration::from_secs(3),
        value_size: 64,
        teardown: true,
    };
    let mut workloads = vec![Workload::BootStorm, Workload::ReadWrite, Workload::Mixed];
    let mut spawn = None;
    let mut modes = vec!["none", "crash-resilient"];
    let mut iter = arguments.iter();
    while let Some(flag) = iter.next() {
        let mut value = || {
            iter.next()
                .cloned()
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        let number = |text: String| -> Result<u64, String> {
            text.parse()
                .map_err(|_| format!("bad number {text:?} for {flag}"))
        };
        match flag.as_str() {
            "-h" | "--help" => return Err(String::new()),
            "--socket" => params.socket = PathBuf::from(value()?),
            "--workload" => {
                let name = value()?;
                workloads = if name == "all" {
                    vec![Workload::BootStorm, Workload::ReadWrite, Workload::Mixed]
                } else {
                    vec![
                        Workload::parse(&name)
                            .ok_or_else(|| format!("unknown workload {name:?}"))?,
                    ]
                };
            }
            "--clients" => params.clients = number(value()?)?.max(1) as u32,
            "--domains" => params.domains = number(value()?)? as u32,
            "--devices" => params.devices = number(value()?)? as u32,
            "--first-domid" => params.first_domid = number(value()?)? as u32,
            "--duration" => params.duration = Duration::from_secs_f64(number(value()?)? as f64),
            "--value-size" => params.value_size = (number(value()?)? as usize).min(4000),
            "--no-teardown" => params.teardown = false,
            "--spawn-rxenstored" => spawn = Some(PathBuf::from(value()?)),
            "--persistence" => {
                modes = match value()?.as_str() {
                    "none" => vec!["none"],
                    "crash-resilient" => vec!["crash-resilient"],
                    "both" => vec!["none", "crash-resilient"],
                    other => return Err(format!("unknown persistence mode {other:?}")),
                }
            }
            other => return Err(format!("unknown option {other}")),
        }
    }
    Ok(Options {
        params,
        workloads,
        spawn,
        modes,
    })
}

fn run_all(
    options: &Options,
    params: &Params,
    label: &str,
) -> Result<Vec<(Workload, Summary)>, String> {
    let mut results = Vec::new();
    for workload in &options.workloads {
        let (samples, wall) = workload::run(*workload, params)?;
        let summary = Summary::of(samples, wall);
        println!("{label}{:<11} {}", workload.name(), summary.line());
        results.push((*workload, summary));
    }
    Ok(results)
}

fn main() -> ExitCode {
    let arguments: Vec<String> = std::env::args().skip(1).collect();
    let options = match parse(&arguments) {
        Ok(options) => options,
        Err(message) if message.is_empty() => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("xenstore-loadgen: {message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let Some(binary) = &options.spawn else {
        println!(
            "xenstore-loadgen: against {}",
            options.params.socket.display()
        );
        return match run_all(&options, &options.params, "") {
            Ok(_) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("xenstore-loadgen: {error}");
                ExitCode::FAILURE
            }
        };
    };
    let mut table: Vec<(&str, Vec<(Workload, Summary)>)> = Vec::new();
    for mode in &options.modes {
        let daemon = match spawn::Spawned::start(binary, mode) {
            Ok(daemon) => daemon,
            Err(error) => {
                eprintln!("xenstore-loadgen: {error}");
                return ExitCode::FAILURE;
            }
        };
        let params = Params {
            socket: daemon.socket().to_path_buf(),
            ..options.params.clone()
        };
        let result = run_all(&options, &params, &format!("{mode:<16} "));
        let stopped = daemon.stop();
        match result {
            Ok(results) => table.push((mode, results)),
            Err(error) => {
                eprintln!("xenstore-loadgen: mode {mode}: {error}");
                return ExitCode::FAILURE;
            }
        }
        if let Err(error) = stopped {
            eprintln!("xenstore-loadgen: mode {mode}: {error}");
            return ExitCode::FAILURE;
        }
    }
    print_table(&table);
    ExitCode::SUCCESS
}

fn print_table(table: &[(&str, Vec<(Workload, Summary)>)]) {
    println!();
    println!("| workload | persistence | req/s | p50 us | p90 us | p99 us | max us |");
    println!("| --- | --- | ---: | ---: | ---: | ---: | ---: |");
    for (mode, results) in table {
        for (workload, summary) in results {
            println!(
                "| {} | {} | {:.0} | {} | {} | {} | {} |",
                workload.name(),
                mode,
                summary.rate,
                summary.p50,
                summary.p90,
                summary.p99,
                summary.max
            );
        }
    }
    let find = |mode: &str| table.iter().find(|(name, _)| *name == mode).map(|(_, r)| r);
    if let (Some(none), Some(resilient)) = (find("none"), find("crash-resilient")) {
        println!();
        println!("| workload | ratio crash-resilient/none: req/s | p50 | p99 |");
        println!("| --- | ---: | ---: | ---: |");
        for ((workload, base), (_, durable)) in none.iter().zip(resilient.iter()) {
            let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
            println!(
                "| {} | {:.2} | {:.2} | {:.2} |",
                workload.name(),
                ratio(durable.rate, base.rate),
                ratio(f64::from(durable.p50), f64::from(base.p50)),
                ratio(f64::from(durable.p99), f64::from(base.p99))
            );
        }
    }
}
