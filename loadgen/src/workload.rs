//! The workloads.
//!
//! - `boot-storm`: what a toolstack (libxl) does when many domains boot at once. Per domain, in
//!   one transaction (retried on EAGAIN, as libxl does): the domain's home
//!   `/local/domain/<N>` (name, domid, vm, memory), `/vm/<uuid>`, and for each device a
//!   frontend directory `/local/domain/<N>/device/<kind>/<i>` and a backend directory
//!   `/local/domain/0/backend/<kind>/<N>/<i>` with their usual keys and permissions (frontend
//!   owned by the guest and readable by dom0, backend owned by dom0 and readable by the guest).
//!   Then a watch on each backend `state` (libxl waits for the backend this way), a simulated
//!   backend moving `state` to 4 (connected), the watcher waiting for that event, and finally
//!   (with `teardown`) the domain's removal. Domains are spread over the client threads.
//! - `rw`: plain write-then-read loops on per-client keys with values of `value_size` bytes.
//! - `mixed`: half the clients run boot-storm cycles (create, connect, tear down) and half run
//!   `rw`, for the duration.
//!
//! Node owners ([`NodeOwner`]): libxl creates a domain before writing its tree, so it can make
//! the guest the owner of its frontend nodes. The simulated domains here do not exist, and
//! C xenstored (4.17, since XSA-322) refuses SET_PERMS whose owner is not an existing domain
//! with ENOENT (`domain_alloc_permrefs` marks the owner entry ignored, `do_set_perms` then
//! fails); oxenstored and this project's server accept it. `--node-owner dom0` keeps the same
//! requests but makes dom0 the owner and grants the guest access through ACL entries, which
//! every server accepts for a missing domain (C xenstored ignores such entries). The Xen lab
//! uses `dom0` against every server so that the numbers stay comparable.

use std::time::{Duration, Instant};

use crate::stats::Samples;
use crate::wire::{Client, Target, WireError, op, strings};

/// Reply timeout of every request.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(30);
/// libxl's retry bound for a transaction that keeps failing with EAGAIN.
const MAX_TX_ATTEMPTS: u32 = 100;

/// Which workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// Many domains' device trees with transactions and watches.
    BootStorm,
    /// Plain read/write loops.
    ReadWrite,
    /// Both at once.
    Mixed,
}

impl Workload {
    /// Parses a workload name.
    pub fn parse(text: &str) -> Option<Workload> {
        match text {
            "boot-storm" => Some(Workload::BootStorm),
            "rw" => Some(Workload::ReadWrite),
            "mixed" => Some(Workload::Mixed),
            _ => None,
        }
    }

    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            Workload::BootStorm => "boot-storm",
            Workload::ReadWrite => "rw",
            Workload::Mixed => "mixed",
        }
    }
}

/// Who owns the simulated domains' nodes (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeOwner {
    /// The guest owns its home and frontends, as with libxl and a real domain.
    Guest,
    /// dom0 owns everything; the guest is granted access by ACL entries.
    Dom0,
}

impl NodeOwner {
    /// Parses `guest` or `dom0`.
    pub fn parse(text: &str) -> Option<NodeOwner> {
        match text {
            "guest" => Some(NodeOwner::Guest),
            "dom0" => Some(NodeOwner::Dom0),
            _ => None,
        }
    }

    /// The permission list of a guest-side node of `domid` (home, frontend).
    fn guest_side(self, domid: u32) -> [String; 2] {
        match self {
            NodeOwner::Guest => [format!("n{domid}"), "r0".to_string()],
            NodeOwner::Dom0 => ["n0".to_string(), format!("b{domid}")],
        }
    }
}

/// Workload parameters.
#[derive(Clone, Debug)]
pub struct Params {
    /// The xenstored under test.
    pub target: Target,
    /// Owner of the simulated domains' nodes.
    pub node_owner: NodeOwner,
    /// Client connections (threads).
    pub clients: u32,
    /// Domains created by boot-storm.
    pub domains: u32,
    /// First domid used.
    pub first_domid: u32,
    /// Devices of each kind (vif, vbd) per domain.
    pub devices: u32,
    /// Run time of `rw` and `mixed`.
    pub duration: Duration,
    /// Value size of `rw`.
    pub value_size: usize,
    /// Remove each booted domain's tree at the end.
    pub teardown: bool,
}

struct Timed<'a> {
    client: Client,
    samples: &'a mut Samples,
}

impl Timed<'_> {
    fn call(&mut self, message_type: u32, tx: u32, payload: &[u8]) -> Result<Vec<u8>, WireError> {
        let started = Instant::now();
        let result = self.client.request(message_type, tx, payload);
        self.samples.record(started.elapsed());
        result
    }

    fn write(&mut self, tx: u32, path: &str, value: &str) -> Result<(), WireError> {
        let mut payload = strings(&[path]);
        payload.extend_from_slice(value.as_bytes());
        self.call(op::WRITE, tx, &payload).map(drop)
    }

    fn set_perms(&mut self, tx: u32, path: &str, perms: &[&str]) -> Result<(), WireError> {
        let mut parts = vec![path];
        parts.extend_from_slice(perms);
        self.call(op::SET_PERMS, tx, &strings(&parts)).map(drop)
    }
}

fn connect(target: &Target) -> Result<Client, WireError> {
    Ok(Client::connect(target, REPLY_TIMEOUT)?)
}

const KINDS: [&str; 2] = ["vif", "vbd"];

/// The toolstack transaction creating one domain's tree; returns after commit.
fn create_domain(
    timed: &mut Timed<'_>,
    domid: u32,
    devices: u32,
    owner: NodeOwner,
) -> Result<(), WireError> {
    let home = format!("/local/domain/{domid}");
    let uuid = format!("00000000-0000-4000-8000-{domid:012x}");
    let [guest_owner, guest_acl] = owner.guest_side(domid);
    let guest_reads = format!("r{domid}");
    for attempt in 1..=MAX_TX_ATTEMPTS {
        let reply = timed.call(op::TRANSACTION_START, 0, b"\0")?;
        let tx: u32 = String::from_utf8_lossy(&reply)
            .trim_end_matches('\0')
            .parse()
            .map_err(|_| WireError::Protocol("transaction id is not decimal".into()))?;
        let body = (|| -> Result<(), WireError> {
            timed.call(op::MKDIR, tx, &strings(&[&home]))?;
            timed.set_perms(tx, &home, &[&guest_owner, &guest_acl])?;
            timed.write(tx, &format!("{home}/vm"), &format!("/vm/{uuid}"))?;
            timed.write(tx, &format!("{home}/name"), &format!("guest-{domid}"))?;
            timed.write(tx, &format!("{home}/domid"), &domid.to_string())?;
            timed.write(tx, &format!("{home}/memory/target"), "524288")?;
            timed.write(tx, &format!("/vm/{uuid}/name"), &format!("guest-{domid}"))?;
            for kind in KINDS {
                for index in 0..devices {
                    let frontend = format!("{home}/device/{kind}/{index}");
                    let backend = format!("/local/domain/0/backend/{kind}/{domid}/{index}");
                    timed.call(op::MKDIR, tx, &strings(&[&frontend]))?;
                    timed.set_perms(tx, &frontend, &[&guest_owner, &guest_acl])?;
                    timed.write(tx, &format!("{frontend}/backend"), &backend)?;
                    timed.write(tx, &format!("{frontend}/backend-id"), "0")?;
                    timed.write(tx, &format!("{frontend}/state"), "1")?;
                    timed.write(tx, &format!("{frontend}/handle"), &index.to_string())?;
                    timed.call(op::MKDIR, tx, &strings(&[&backend]))?;
                    timed.set_perms(tx, &backend, &["n0", &guest_reads])?;
                    timed.write(tx, &format!("{backend}/frontend"), &frontend)?;
                    timed.write(tx, &format!("{backend}/frontend-id"), &domid.to_string())?;
                    timed.write(tx, &format!("{backend}/online"), "1")?;
                    timed.write(tx, &format!("{backend}/state"), "1")?;
                    if kind == "vif" {
                        timed.write(
                            tx,
                            &format!("{backend}/script"),
                            "/etc/xen/scripts/vif-bridge",
                        )?;
                        timed.write(
                            tx,
                            &format!("{backend}/mac"),
                            &format!("00:16:3e:00:{:02x}:{index:02x}", domid & 0xff),
                        )?;
                    } else {
                        timed.write(
                            tx,
                            &format!("{backend}/params"),
                            &format!("/images/guest-{domid}.img"),
                        )?;
                    }
                }
            }
            Ok(())
        })();
        match body {
            Ok(()) => {}
            Err(error) if error.errno() == Some("EAGAIN") => {
                let _ = timed.call(op::TRANSACTION_END, tx, b"F\0");
                timed.samples.eagain_retries += 1;
                continue;
            }
            Err(error) => {
                let _ = timed.call(op::TRANSACTION_END, tx, b"F\0");
                return Err(error);
            }
        }
        match timed.call(op::TRANSACTION_END, tx, b"T\0") {
            Ok(_) => {
                timed.samples.transactions += 1;
                return Ok(());
            }
            Err(error) if error.errno() == Some("EAGAIN") && attempt < MAX_TX_ATTEMPTS => {
                timed.samples.eagain_retries += 1;
            }
            Err(error) => return Err(error),
        }
    }
    Err(WireError::Server {
        errno: "EAGAIN".into(),
        request: format!("domain {domid}'s transaction, {MAX_TX_ATTEMPTS} attempts"),
    })
}

/// Watches each backend's state, moves it to connected (4) as a backend would, and waits
/// for the events, as libxl does while a device comes up.
fn connect_devices(timed: &mut Timed<'_>, domid: u32, devices: u32) -> Result<(), WireError> {
    for kind in KINDS {
        for index in 0..devices {
            let state = format!("/local/domain/0/backend/{kind}/{domid}/{index}/state");
            let token = format!("be-{domid}-{kind}-{index}");
            timed.call(op::WATCH, 0, &strings(&[&state, &token]))?;
            wait_event(timed, &state, &token)?; // the initial event
            timed.write(0, &state, "4")?;
            wait_event(timed, &state, &token)?;
            timed.call(op::UNWATCH, 0, &strings(&[&state, &token]))?;
        }
    }
    Ok(())
}

fn wait_event(timed: &mut Timed<'_>, path: &str, token: &str) -> Result<(), WireError> {
    let started = Instant::now();
    loop {
        let (event_path, event_token) = timed.client.next_event()?;
        timed.samples.events += 1;
        if event_path == path && event_token == token {
            return Ok(());
        }
        if started.elapsed() > REPLY_TIMEOUT {
            return Err(WireError::Protocol(format!("no watch event for {path}")));
        }
    }
}

fn destroy_domain(timed: &mut Timed<'_>, domid: u32) -> Result<(), WireError> {
    for kind in KINDS {
        timed.call(
            op::RM,
            0,
            &strings(&[&format!("/local/domain/0/backend/{kind}/{domid}")]),
        )?;
    }
    timed.call(op::RM, 0, &strings(&[&format!("/local/domain/{domid}")]))?;
    let uuid = format!("00000000-0000-4000-8000-{domid:012x}");
    timed.call(op::RM, 0, &strings(&[&format!("/vm/{uuid}")]))?;
    Ok(())
}

fn boot_one(timed: &mut Timed<'_>, domid: u32, params: &Params) -> Result<(), WireError> {
    create_domain(timed, domid, params.devices, params.node_owner)?;
    connect_devices(timed, domid, params.devices)?;
    if params.teardown {
        destroy_domain(timed, domid)?;
    }
    Ok(())
}

fn boot_storm_client(params: &Params, index: u32) -> Result<Samples, WireError> {
    let mut samples = Samples::default();
    let mut timed = Timed {
        client: connect(&params.target)?,
        samples: &mut samples,
    };
    let mut domid = params.first_domid + index;
    while domid < params.first_domid + params.domains {
        boot_one(&mut timed, domid, params)?;
        domid += params.clients;
    }
    Ok(samples)
}

fn rw_client(params: &Params, index: u32, until: Instant) -> Result<Samples, WireError> {
    let mut samples = Samples::default();
    let mut timed = Timed {
        client: connect(&params.target)?,
        samples: &mut samples,
    };
    let value = "v".repeat(params.value_size);
    let mut round = 0u64;
    while Instant::now() < until {
        let path = format!("/loadgen/rw/c{index}/k{}", round % 16);
        timed.write(0, &path, &value)?;
        let read = timed.call(op::READ, 0, &strings(&[&path]))?;
        if read.len() != value.len() {
            timed.samples.errors += 1;
        }
        round += 1;
    }
    Ok(samples)
}

fn storm_cycles_client(params: &Params, index: u32, until: Instant) -> Result<Samples, WireError> {
    let mut samples = Samples::default();
    let mut timed = Timed {
        client: connect(&params.target)?,
        samples: &mut samples,
    };
    let cycle_params = Params {
        teardown: true,
        ..params.clone()
    };
    let domid = params.first_domid + index;
    while Instant::now() < until {
        boot_one(&mut timed, domid, &cycle_params)?;
    }
    Ok(samples)
}

/// Runs `workload` and returns the merged samples and wall-clock time.
pub fn run(workload: Workload, params: &Params) -> Result<(Samples, Duration), String> {
    let started = Instant::now();
    let until = started + params.duration;
    let results: Vec<Result<Samples, WireError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..params.clients.max(1))
            .map(|index| {
                scope.spawn(move || match workload {
                    Workload::BootStorm => boot_storm_client(params, index),
                    Workload::ReadWrite => rw_client(params, index, until),
                    Workload::Mixed if index % 2 == 0 => storm_cycles_client(params, index, until),
                    Workload::Mixed => rw_client(params, index, until),
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| {
                handle
                    .join()
                    .unwrap_or_else(|_| Err(WireError::Protocol("client thread panicked".into())))
            })
            .collect()
    });
    let wall = started.elapsed();
    let mut merged = Samples::default();
    for (index, result) in results.into_iter().enumerate() {
        match result {
            Ok(samples) => merged.merge(samples),
            Err(error) => return Err(format!("{} client {index}: {error}", workload.name())),
        }
    }
    Ok((merged, wall))
}
