//! Every shell command against a known fake server: the output shows the right data, and
//! wrong input gives one `error:` line while the shell keeps working.

use std::collections::BTreeMap;

use xenstore_shell::{
    CommitView, ConnectionView, DiffView, NodeView, RingView, ShellTarget, StatisticsView,
    TargetError, TraceTarget, TransactionView, WatchView, execute,
};

#[derive(Default)]
struct FakeServer {
    nodes: BTreeMap<String, NodeView>,
    log: BTreeMap<String, String>,
    traces: Vec<(TraceTarget, bool)>,
    restarts: u32,
    persistent: bool,
}

fn node(value: &str, permissions: &str, generation: u64) -> NodeView {
    NodeView {
        value: value.as_bytes().to_vec(),
        permissions: permissions.into(),
        generation,
    }
}

impl FakeServer {
    fn new() -> FakeServer {
        let mut server = FakeServer {
            persistent: true,
            ..FakeServer::default()
        };
        for (path, value, perms, generation) in [
            ("/", "", "n0", 0),
            ("/local", "", "n0", 1),
            ("/local/domain", "", "n0", 2),
            ("/local/domain/3", "", "n0 r3", 3),
            ("/local/domain/3/name", "guest3", "n0 r3", 4),
            ("/local/domain/3/data", "a\u{1}b", "b3", 5),
        ] {
            server
                .nodes
                .insert(path.into(), node(value, perms, generation));
        }
        server.log.insert("level".into(), "info".into());
        server.log.insert("io".into(), "off".into());
        server
    }
}

impl ShellTarget for FakeServer {
    fn node(&self, path: &str) -> Option<NodeView> {
        self.nodes.get(path).cloned()
    }
    fn children(&self, path: &str) -> Option<Vec<String>> {
        self.nodes.get(path)?;
        let prefix = if path == "/" {
            "/".to_string()
        } else {
            format!("{path}/")
        };
        Some(
            self.nodes
                .keys()
                .filter_map(|key| key.strip_prefix(&prefix))
                .filter(|rest| !rest.is_empty() && !rest.contains('/'))
                .map(str::to_string)
                .collect(),
        )
    }
    fn connections(&self) -> Vec<ConnectionView> {
        vec![
            ConnectionView {
                id: 1,
                domid: 0,
                kind: "socket".into(),
                ring: None,
                outstanding: 0,
                queued_output_bytes: 0,
                nodes: 5,
                watches: 1,
                transactions: 0,
                memory_bytes: 900,
            },
            ConnectionView {
                id: 2,
                domid: 3,
                kind: "ring".into(),
                ring: Some(RingView {
                    req_cons: 4294967290,
                    req_prod: 4294967290,
                    rsp_cons: 100,
                    rsp_prod: 400,
                    local_port: 17,
                    error: 2,
                }),
                outstanding: 3,
                queued_output_bytes: 64,
                nodes: 2,
                watches: 2,
                transactions: 1,
                memory_bytes: 300,
            },
        ]
    }
    fn watches(&self) -> Vec<WatchView> {
        vec![WatchView {
            connection: 2,
            domid: 3,
            path: "device".into(),
            token: "tok1".into(),
            depth: Some(2),
        }]
    }
    fn transactions(&self) -> Vec<TransactionView> {
        vec![TransactionView {
            connection: 2,
            domid: 3,
            id: 9,
            nodes_accessed: 4,
        }]
    }
    fn statistics(&self) -> StatisticsView {
        StatisticsView {
            uptime_seconds: 10,
            requests_by_type: vec![("READ".into(), 70), ("WRITE".into(), 30)],
            requests_total: 100,
            commits: 30,
            commit_latency_mean_us: 12,
            commit_latency_max_us: 80,
            log_bytes: 4096,
            persistence: "crash-resilient".into(),
            nodes: 6,
        }
    }
    fn history(&mut self, path: &str, limit: usize) -> Result<Vec<CommitView>, TargetError> {
        if !self.persistent {
            return Err(TargetError::NoHistory);
        }
        let all = vec![
            CommitView {
                seq: 4,
                timestamp_ns: 1_500_000_000,
                connection: 1,
                domid: 0,
                request: "WRITE".into(),
                path: path.into(),
                value_after: Some(b"guest".to_vec()),
            },
            CommitView {
                seq: 9,
                timestamp_ns: 2_000_000_001,
                connection: 2,
                domid: 3,
                request: "RM".into(),
                path: path.into(),
                value_after: None,
            },
        ];
        Ok(all.into_iter().rev().take(limit).rev().collect())
    }
    fn diff(&mut self, from: u64, to: u64) -> Result<DiffView, TargetError> {
        if to > 100 {
            return Err(TargetError::UnknownCommit(to));
        }
        let _ = from;
        Ok(DiffView {
            added: vec!["/a".into()],
            removed: vec!["/b".into(), "/c".into()],
            changed: vec![],
        })
    }
    fn log_settings(&self) -> Vec<(String, String)> {
        self.log
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
    fn set_log(&mut self, name: &str, value: &str) -> Result<(), TargetError> {
        match (name, value) {
            ("error" | "warn" | "info" | "debug" | "trace", "") => {
                self.log.insert("level".into(), name.into());
                Ok(())
            }
            ("io", switch) => {
                self.log.insert("io".into(), switch.into());
                Ok(())
            }
            _ => Err(TargetError::UnknownLogSetting(name.into())),
        }
    }
    fn set_trace(&mut self, target: TraceTarget, on: bool) {
        self.traces.push((target, on));
    }
    fn request_restart(&mut self) -> Result<(), TargetError> {
        self.restarts += 1;
        Ok(())
    }
}

fn run(server: &mut FakeServer, line: &str) -> (bool, String) {
    let mut out = String::new();
    let ok = execute(line, server, &mut out).is_ok();
    (ok, out)
}

#[test]
fn help_lists_every_command() {
    let (ok, out) = run(&mut FakeServer::new(), "help");
    assert!(ok);
    for command in [
        "ls", "read", "conns", "watches", "txns", "stats", "history", "diff", "log", "trace",
        "restart",
    ] {
        assert!(
            out.contains(&format!("  {command}")),
            "{command} missing from help:\n{out}"
        );
    }
}

#[test]
fn ls_prints_the_subtree_indented_with_perms_and_generation() {
    let (ok, out) = run(&mut FakeServer::new(), "ls /local/domain/3");
    assert!(ok);
    assert_eq!(
        out,
        "/local/domain/3 = \"\"  (n0 r3; gen 3)\n  data = \"a\\x01b\"  (b3; gen 5)\n  name = \"guest3\"  (n0 r3; gen 4)\n"
    );
    let (ok, whole) = run(&mut FakeServer::new(), "ls");
    assert!(
        ok && whole.starts_with("/ = \"\"  (n0; gen 0)\n  local"),
        "{whole}"
    );
}

#[test]
fn read_shows_one_node() {
    let (ok, out) = run(&mut FakeServer::new(), "read /local/domain/3/name");
    assert!(ok);
    assert!(out.contains("value:       \"guest3\""), "{out}");
    assert!(out.contains("permissions: n0 r3"), "{out}");
    assert!(out.contains("generation:  4"), "{out}");
}

#[test]
fn conns_shows_ring_indices_free_space_and_errors() {
    let (ok, out) = run(&mut FakeServer::new(), "conns");
    assert!(ok);
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].contains("req_cons") && lines[0].contains("free"),
        "{out}"
    );
    assert!(
        lines[1].contains("socket") && lines[1].contains(" - "),
        "{out}"
    );
    let ring = lines[2];
    assert!(
        ring.contains("4294967290") && ring.contains(" 724 ") && ring.contains(" 17 "),
        "{ring}"
    );
    assert!(lines[3].contains("ring error field = 2"), "{out}");
}

#[test]
fn watches_txns_and_stats() {
    let mut server = FakeServer::new();
    let (_, watches) = run(&mut server, "watches");
    assert!(
        watches.lines().nth(1).unwrap().contains("device / tok1"),
        "{watches}"
    );
    let (_, txns) = run(&mut server, "txns");
    assert!(
        txns.lines()
            .nth(1)
            .unwrap()
            .split_whitespace()
            .eq(["2", "3", "9", "4"]),
        "{txns}"
    );
    let (_, stats) = run(&mut server, "stats");
    assert!(stats.contains("requests/s:   10"), "{stats}");
    assert!(
        stats.contains("commit latency: mean 12 us, max 80 us"),
        "{stats}"
    );
    let read_line = stats.lines().position(|l| l.contains("READ")).unwrap();
    let write_line = stats.lines().position(|l| l.contains("WRITE")).unwrap();
    assert!(read_line < write_line, "sorted by count: {stats}");
}

#[test]
fn history_and_diff() {
    let mut server = FakeServer::new();
    let (ok, out) = run(&mut server, "history /local/domain/3/name");
    assert!(ok);
    assert_eq!(
        out,
        "#4        t=1.500000000s conn=1 dom=0 WRITE /local/domain/3/name -> \"guest\"\n\
         #9        t=2.000000001s conn=2 dom=3 RM /local/domain/3/name -> absent\n"
    );
    let (_, last) = run(&mut server, "history /x 1");
    assert_eq!(last.lines().count(), 1, "{last}");
    let (ok, diff) = run(&mut server, "diff 3 #9");
    assert!(ok);
    assert_eq!(diff, "+ /a\n- /b\n- /c\n1 added, 2 removed, 0 changed\n");
    let (ok, out) = run(&mut server, "diff 1 500");
    assert!(!ok);
    assert_eq!(out, "error: commit 500 is outside the history window\n");
    server.persistent = false;
    let (ok, out) = run(&mut server, "history /a");
    assert!(!ok && out.contains("without persistence"), "{out}");
}

#[test]
fn log_trace_and_restart_reach_the_server() {
    let mut server = FakeServer::new();
    assert_eq!(run(&mut server, "log debug"), (true, "ok\n".into()));
    assert_eq!(run(&mut server, "log io on"), (true, "ok\n".into()));
    assert_eq!(
        run(&mut server, "log"),
        (true, "io=on\nlevel=debug\n".into())
    );
    assert_eq!(run(&mut server, "trace 3 on"), (true, "ok\n".into()));
    assert_eq!(run(&mut server, "trace all off"), (true, "ok\n".into()));
    assert_eq!(
        server.traces,
        [(TraceTarget::Domain(3), true), (TraceTarget::All, false)]
    );
    assert_eq!(run(&mut server, "restart"), (true, "restarting\n".into()));
    assert_eq!(server.restarts, 1);
}

#[test]
fn bad_input_is_one_error_line_and_the_shell_goes_on() {
    let mut server = FakeServer::new();
    let cases = [
        (
            "frobnicate",
            "error: unknown command \"frobnicate\" (try help)\n",
        ),
        ("read", "error: usage: read PATH\n"),
        ("read /nope", "error: /nope: no such node\n"),
        ("ls /nope", "error: /nope: no such node\n"),
        (
            "history /a 0",
            "error: usage: history PATH [N] (N from 1 to 200)\n",
        ),
        ("history /a x", "error: usage: history PATH [N]\n"),
        ("diff 1", "error: usage: diff SEQ SEQ\n"),
        ("diff a b", "error: usage: diff SEQ SEQ\n"),
        (
            "trace 99999999 on",
            "error: usage: trace DOMID|all on|off\n",
        ),
        ("trace 3 maybe", "error: usage: trace DOMID|all on|off\n"),
        (
            "log io sideways",
            "error: usage: log LEVEL | log CATEGORY on|off\n",
        ),
        (
            "log loud",
            "error: unknown log level or category \"loud\"\n",
        ),
        (
            "conns extra",
            "error: usage: this command takes no arguments\n",
        ),
    ];
    for (line, expected) in cases {
        assert_eq!(
            run(&mut server, line),
            (false, expected.to_string()),
            "{line}"
        );
    }
    assert_eq!(run(&mut server, "   "), (true, String::new()));
    assert!(run(&mut server, "read /local").0, "the shell still works");
}
