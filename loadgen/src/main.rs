//! `xenstore-loadgen`: a load-generating benchmark for any xenstored, speaking the wire
//! protocol itself over the Unix socket or the xenbus device (so the same binary measures C
//! xenstored, oxenstored and the stub domain in the Xen lab), and the crash scenario's client.
//!
//! ```text
//! xenstore-loadgen [--socket PATH | --device PATH] [--workload boot-storm|rw|mixed|all]
//!                  [--clients N] [--domains N] [--devices N] [--first-domid N]
//!                  [--duration SECS] [--value-size BYTES] [--no-teardown]
//!                  [--node-owner guest|dom0] [--lab]
//! xenstore-loadgen --spawn-rxenstored PATH [--persistence none|crash-resilient|both] ...
//! xenstore-loadgen --crash-client LABEL [--socket PATH | --device PATH] [--prefix PATH]
//!                  [--keys N] [--tx-every N] [--rounds N] [--pace-ms MS] [--ack-every N]
//!                  [--reply-timeout SECS] [--event-grace SECS] [--wait-for PATH]
//! ```
//!
//! Socket: `--socket`, else `$XENSTORED_PATH`, else `$XENSTORED_RUNDIR/socket`, else
//! `/var/run/xenstored/socket` (libxenstore's order); `--device /dev/xen/xenbus` talks through
//! Linux's xenbus driver instead (see `wire`). With `--spawn-rxenstored` the load
//! generator starts our daemon itself on a private socket (database on tmpfs), once per
//! persistence mode, runs the workloads against each and prints a table with the ratio
//! crash-resilient / none. Output: one line per run with requests/s and latency percentiles;
//! with `--lab` also `LAB-BENCH <workload>-rate|-p50|-p99 <value> <unit>` lines for the Xen
//! lab's scenario d (`scripts/lab/scenarios/bench.sh`). `--crash-client`: see `crash`.

mod crash;
mod spawn;
mod stats;
mod wire;
mod workload;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use crash::CrashParams;
use stats::Summary;
use wire::Target;
use workload::{NodeOwner, Params, Workload};

const USAGE: &str = "\
usage: xenstore-loadgen [options]
  --socket PATH              xenstored socket (default $XENSTORED_PATH, $XENSTORED_RUNDIR/socket,
                             /var/run/xenstored/socket)
  --device PATH              a xenbus device instead, e.g. /dev/xen/xenbus
  --workload NAME            boot-storm | rw | mixed | all (default all)
  --clients N                client connections (default 4)
  --domains N                boot-storm: domains to create (default 64)
  --devices N                boot-storm: vifs and vbds per domain (default 2)
  --first-domid N            boot-storm: first domid (default 1)
  --duration SECS            rw/mixed: run time (default 3)
  --value-size BYTES         rw: value size (default 64)
  --no-teardown              boot-storm: keep the domains' trees
  --node-owner guest|dom0    boot-storm: owner of the simulated domains' nodes (default guest;
                             C xenstored refuses a domain that does not exist as owner: ENOENT)
  --lab                      also print LAB-BENCH <workload>-rate|-p50|-p99 lines (Xen lab)
  --spawn-rxenstored PATH    start this rxenstored on a private socket for each mode
  --persistence MODE         with --spawn-rxenstored: none | crash-resilient | both (default both)
  --crash-client LABEL       run the crash scenario's client instead (see below)
  -h, --help                 this text
crash client options:
  --prefix PATH              where to write (default /local/domain/<own domid>/data/crash)
  --keys N                   plain keys in rotation (default 8)
  --tx-every N               a transaction every N rounds (default 4; 0 = none)
  --rounds N                 stop after N rounds (default 0: when <prefix>/stop appears)
  --pace-ms MS               pause between rounds (default 0)
  --ack-every N              acknowledgements as one snapshot line every N rounds (default 1:
                             a line per acknowledged change)
  --reply-timeout SECS       bound on every reply (default 60)
  --wait-for PATH            start once PATH exists (polled, up to 600 s)
  --event-grace SECS         wait this long at the end for owed watch events (default 30)
";

/// Parsed command line.
#[derive(Debug)]
struct Options {
    params: Params,
    workloads: Vec<Workload>,
    spawn: Option<PathBuf>,
    modes: Vec<&'static str>,
    lab: bool,
    crash: Option<CrashParams>,
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
        target: Target::Socket(default_socket()),
        node_owner: NodeOwner::Guest,
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
    let mut lab = false;
    let mut crash_label = None;
    let mut crash = CrashParams {
        target: params.target.clone(),
        label: String::new(),
        prefix: None,
        keys: 8,
        tx_every: 4,
        reply_timeout: Duration::from_secs(60),
        rounds_max: 0,
        pace: Duration::ZERO,
        ack_every: 1,
        event_grace: Duration::from_secs(30),
        wait_for: None,
    };
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
            "--socket" => params.target = Target::Socket(PathBuf::from(value()?)),
            "--device" => params.target = Target::Device(PathBuf::from(value()?)),
            "--node-owner" => {
                let name = value()?;
                params.node_owner = NodeOwner::parse(&name)
                    .ok_or_else(|| format!("--node-owner is guest or dom0, not {name:?}"))?;
            }
            "--lab" => lab = true,
            "--crash-client" => crash_label = Some(value()?),
            "--prefix" => crash.prefix = Some(value()?),
            "--keys" => crash.keys = number(value()?)?.max(1),
            "--tx-every" => crash.tx_every = number(value()?)?,
            "--rounds" => crash.rounds_max = number(value()?)?,
            "--pace-ms" => crash.pace = Duration::from_millis(number(value()?)?),
            "--ack-every" => crash.ack_every = number(value()?)?.max(1),
            "--wait-for" => crash.wait_for = Some(value()?),
            "--reply-timeout" => {
                crash.reply_timeout = Duration::from_secs(number(value()?)?.max(1));
            }
            "--event-grace" => crash.event_grace = Duration::from_secs(number(value()?)?),
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
    let crash = crash_label.map(|label| CrashParams {
        target: params.target.clone(),
        label,
        ..crash
    });
    Ok(Options {
        params,
        workloads,
        spawn,
        modes,
        lab,
        crash,
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
        if options.lab {
            for line in summary.lab_lines(workload.name()) {
                println!("{line}");
            }
        }
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
    if let Some(crash) = &options.crash {
        return match crash::run(crash) {
            Ok(0) => ExitCode::SUCCESS,
            Ok(_) => ExitCode::FAILURE,
            Err(error) => {
                println!("CC {} violation cannot run: {error}", crash.label);
                eprintln!("xenstore-loadgen: crash client: {error}");
                ExitCode::from(3)
            }
        };
    }
    let Some(binary) = &options.spawn else {
        println!("xenstore-loadgen: against {}", options.params.target);
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
            target: Target::Socket(daemon.socket().to_path_buf()),
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
