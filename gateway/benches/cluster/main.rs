//! Several idmd nodes on one SurrealDB server: how recon and SCIM reads
//! scale from one node to two.
//!
//! For each node count (`IDM_BENCH_NODES`, default `1,2`): a fresh
//! SurrealDB server (release `idm-surreal-server`, `memory` storage), that
//! many idmd nodes on it (`ws://`, root sign-in, one conf directory, node
//! `i` pinned to core `i` with `taskset` when the machine has the cores) and
//! one idm-gateway per node (`--no-tls`). Then:
//!
//! 1. **recon**: two mappings, each from its own CSV file of
//!    `IDM_BENCH_ROWS` rows (default 10,000) into `managed/user`, started
//!    together, the first on node 0 and the second on the last node; the
//!    rate is both files' rows over the time until both ended. The mapping is
//!    the cookbook's without its `password` default and its target phase (an argon2 hash per row
//!    is issue 18's subject, and would measure only the hash);
//! 2. **SCIM GET** `/Users/{id}` of the reconciled users, `IDM_BENCH_CONCURRENCY`
//!    workers (32) spread over the gateways, for `IDM_BENCH_SECONDS` (10)
//!    after a 2 s warm-up.
//!
//! Run: `cargo build --release --bins`, then
//! `cargo build --release --manifest-path testkit/surreal/Cargo.toml --target-dir "$CARGO_TARGET_DIR/surreal"`,
//! then `cargo bench -p idm-gateway --bench cluster`. The server binary is
//! `IDM_SURREAL_BIN`, else `$CARGO_TARGET_DIR/surreal/release/idm-surreal-server`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../scim/processes.rs"]
mod processes;
#[allow(dead_code)]
#[path = "../scim/report.rs"]
mod report;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use idm_proto::v1::StartReconRequest;
use idm_proto::v1::recon_run::State;
use idm_proto::v1::recon_service_client::ReconServiceClient;
use idm_testkit::SurrealServer;
use reqwest::StatusCode;
use reqwest::header::AUTHORIZATION;
use serde_json::json;
use tonic::transport::Channel;

use crate::processes::{Process, TempDir, bin_dir, free_port, wait_for_gateway, wait_for_idmd};
use crate::report::Phase;

const WARM_UP: Duration = Duration::from_secs(2);
const MAPPINGS: [(&str, &str); 2] = [
    ("csvEmployee_managedUser", "csv"),
    ("csv2Employee_managedUser", "csv2"),
];

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One keep-alive HTTP/1.1 connection (`processes.rs` uses it too).
fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .build()
        .expect("HTTP client")
}

fn surreal_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("IDM_SURREAL_BIN") {
        return PathBuf::from(path);
    }
    bin_dir()
        .parent()
        .expect("the target directory")
        .join("surreal/release/idm-surreal-server")
}

/// The conf every node starts with: the cookbook's managed types, two CSV
/// connectors and a mapping from each.
fn write_conf(dir: &Path, rows: u64) {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/idm-sync");
    std::fs::create_dir_all(dir.join("data")).expect("conf directory");
    std::fs::copy(fixtures.join("managed.json"), dir.join("managed.json")).expect("managed.json");
    let mut mappings = Vec::new();
    for (i, (mapping, connector)) in MAPPINGS.iter().enumerate() {
        let file = format!("data/{connector}.csv");
        let mut text = String::from("uid,firstName,lastName,telephoneNumber\n");
        let first = i as u64 * rows;
        for uid in first..first + rows {
            text.push_str(&format!("{uid},First{uid},Last{uid},555{uid}\n"));
        }
        std::fs::write(dir.join(&file), text).expect("CSV file");
        let document = json!({
            "connectorType": "csv",
            "file": file,
            "objectTypes": {"employee": {
                "uidColumn": "uid",
                "properties": ["uid", "firstName", "lastName", "telephoneNumber"]
            }}
        });
        std::fs::write(
            dir.join(format!("connector-{connector}.json")),
            serde_json::to_vec_pretty(&document).expect("JSON"),
        )
        .expect("connector file");
        mappings.push(json!({
            "name": mapping,
            "source": format!("system/{connector}/employee"),
            "target": "managed/user",
            "properties": [
                {"source": "uid", "target": "_id"},
                {"source": "firstName", "target": "givenName"},
                {"source": "lastName", "target": "sn"},
                {"source": "telephoneNumber", "target": "telephoneNumber"},
                {"source": "", "target": "userName", "transform": {
                    "type": "text/javascript",
                    "source": "source.lastName.toLowerCase() + source.uid;"
                }},
                {"source": "", "target": "mail", "transform": {
                    "type": "text/javascript",
                    "source": "source.firstName.toLowerCase() + '.' + source.lastName.toLowerCase() + '@example.com';"
                }}
            ],
            "correlationQuery": {
                "type": "text/javascript",
                "source": "({ _queryFilter: '_id eq \"' + source.uid + '\"' });"
            },
            // Each mapping's users are the other's unassigned targets.
            "runTargetPhase": false
        }));
    }
    std::fs::write(
        dir.join("sync.json"),
        serde_json::to_vec_pretty(&json!({ "mappings": mappings })).expect("JSON"),
    )
    .expect("sync.json");
}

/// Node `i` on core `i`, when there are cores enough and `taskset` exists.
fn pinned(program: &Path, node: usize, nodes: usize) -> Command {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let taskset = Command::new("taskset").arg("-V").output().is_ok();
    if nodes > 1 && nodes <= cores && taskset {
        let mut command = Command::new("taskset");
        command.arg("-c").arg(node.to_string()).arg(program);
        command
    } else {
        Command::new(program)
    }
}

struct Node {
    grpc: Channel,
    scim: String,
    // Dropped in this order: the gateway, then idmd.
    _gateway: Process,
    _idmd: Process,
}

struct Measured {
    nodes: usize,
    recon_rows_per_s: f64,
    recon_seconds: f64,
    get: Phase,
}

async fn measure(nodes: usize, rows: u64, seconds: u64, concurrency: u64) -> Measured {
    let bins = bin_dir();
    let dir = TempDir(std::env::temp_dir().join(format!(
        "idm-bench-cluster-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    )));
    let conf = dir.0.join("conf");
    write_conf(&conf, rows);
    let binary = surreal_binary();
    let server = tokio::task::spawn_blocking(move || {
        SurrealServer::builder()
            .binary(binary)
            .start()
            .unwrap_or_else(|e| panic!("the SurrealDB server did not start: {e}"))
    })
    .await
    .expect("server start");
    let token = format!("bench-{:016x}", rand::random::<u64>());
    let bearer = format!("Bearer {token}");
    let key = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        rand::random::<[u8; 32]>(),
    );

    let mut started = Vec::new();
    for i in 0..nodes {
        let grpc_port = free_port();
        let core = format!("http://127.0.0.1:{grpc_port}");
        let mut idmd = Process::spawn(
            "idmd",
            pinned(&bins.join("idmd"), i, nodes)
                .args(["--store", &server.url(), "--grpc"])
                .arg(format!("127.0.0.1:{grpc_port}"))
                .arg("--conf")
                .arg(&conf)
                .arg("--key-file")
                .arg(dir.0.join(format!("node{i}.key")))
                .env("IDM_STORE_USERNAME", server.root_user())
                .env("IDM_STORE_PASSWORD", server.root_password())
                .env("IDM_ADMIN_TOKEN", &token)
                .env("IDM_ENCRYPTION_KEY", &key),
            dir.0.join(format!("idmd{i}.log")),
        );
        // One after the other: the first applies the schema and the conf.
        let grpc = wait_for_idmd(&mut idmd, &core, &bearer).await;
        let port = free_port();
        let scim = format!("http://127.0.0.1:{port}/scim/v2");
        let mut gateway = Process::spawn(
            "idm-gateway",
            Command::new(bins.join("idm-gateway"))
                .args(["--core", &core, "--no-tls", "--listen"])
                .arg(format!("127.0.0.1:{port}")),
            dir.0.join(format!("gateway{i}.log")),
        );
        wait_for_gateway(&mut gateway, &scim).await;
        started.push(Node {
            grpc,
            scim,
            _gateway: gateway,
            _idmd: idmd,
        });
    }

    // Both mappings at once: on node 0 and on the last node.
    let start = Instant::now();
    let runs = MAPPINGS.iter().enumerate().map(|(i, (mapping, _))| {
        let node = if i == 0 { 0 } else { nodes - 1 };
        let mut client = ReconServiceClient::new(started[node].grpc.clone());
        let bearer = bearer.clone();
        async move {
            let mut request = tonic::Request::new(StartReconRequest {
                mapping: mapping.to_string(),
                wait: true,
            });
            request
                .metadata_mut()
                .insert("authorization", bearer.parse().expect("ASCII bearer"));
            let run = client
                .start_recon(request)
                .await
                .unwrap_or_else(|e| panic!("recon {mapping}: {e}"))
                .into_inner();
            assert_eq!(
                run.state(),
                State::Success,
                "recon {mapping} did not succeed: {run:?}"
            );
            run.source.map_or(0, |s| s.processed)
        }
    });
    let processed: i64 = futures::future::join_all(runs).await.into_iter().sum();
    let recon_seconds = start.elapsed().as_secs_f64();
    assert_eq!(processed as u64, 2 * rows);

    let ids: Arc<Vec<String>> = Arc::new((0..2 * rows).map(|n| n.to_string()).collect());
    let scims: Arc<Vec<String>> = Arc::new(started.iter().map(|n| n.scim.clone()).collect());
    let get = get_phase(&scims, &ids, &bearer, concurrency, seconds).await;
    drop(started);
    drop(server);
    Measured {
        nodes,
        recon_rows_per_s: processed as f64 / recon_seconds,
        recon_seconds,
        get,
    }
}

/// `GET /Users/{id}`, worker `w` on gateway `w % gateways`.
async fn get_phase(
    scims: &Arc<Vec<String>>,
    ids: &Arc<Vec<String>>,
    bearer: &str,
    concurrency: u64,
    seconds: u64,
) -> Phase {
    let window_start = Instant::now() + WARM_UP;
    let window_end = window_start + Duration::from_secs(seconds);
    let mut workers = Vec::new();
    for w in 0..concurrency as usize {
        let (scims, ids, bearer) = (Arc::clone(scims), Arc::clone(ids), bearer.to_string());
        workers.push(tokio::spawn(async move {
            let http = http_client();
            let scim = &scims[w % scims.len()];
            let (mut latencies, mut errors, mut first_error) = (Vec::new(), 0, None);
            while Instant::now() < window_end {
                let id = &ids[rand::random_range(0..ids.len())];
                let start = Instant::now();
                let outcome = http
                    .get(format!("{scim}/Users/{id}"))
                    .header(AUTHORIZATION, &bearer)
                    .send()
                    .await;
                let outcome = match outcome {
                    Ok(response) if response.status() == StatusCode::OK => {
                        response.bytes().await.map(drop).map_err(|e| e.to_string())
                    }
                    Ok(response) => Err(format!("{}", response.status())),
                    Err(e) => Err(e.to_string()),
                };
                let done = Instant::now();
                if done < window_start || done > window_end {
                    continue;
                }
                latencies.push(done - start);
                if let Err(e) = outcome {
                    errors += 1;
                    first_error.get_or_insert(e);
                }
            }
            (latencies, errors, first_error)
        }));
    }
    let mut phase = Phase {
        label: "GET /Users/{id}",
        latencies: Vec::new(),
        errors: 0,
        first_error: None,
        seconds: seconds as f64,
    };
    for worker in workers {
        let (latencies, errors, first_error): (Vec<Duration>, usize, Option<String>) =
            worker.await.expect("worker panicked");
        phase.latencies.extend(latencies);
        phase.errors += errors;
        phase.first_error = phase.first_error.or(first_error);
    }
    phase.latencies.sort();
    phase
}

#[tokio::main]
async fn main() {
    let rows = env_or("IDM_BENCH_ROWS", 10_000).max(1);
    let seconds = env_or("IDM_BENCH_SECONDS", 10).max(1);
    let concurrency = env_or("IDM_BENCH_CONCURRENCY", 32).max(1);
    let counts: Vec<usize> = std::env::var("IDM_BENCH_NODES")
        .unwrap_or_else(|_| "1,2".into())
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .filter(|n| *n >= 1)
        .collect();
    let bins = bin_dir();
    for needed in [
        bins.join("idmd"),
        bins.join("idm-gateway"),
        surreal_binary(),
    ] {
        if !needed.exists() {
            eprintln!(
                "{} is missing: build the release binaries first (see the top of benches/cluster/main.rs)",
                needed.display()
            );
            std::process::exit(1);
        }
    }
    println!(
        "idm cluster bench: a SurrealDB server (memory), idmd nodes on ws:// with a gateway each; \
         recon of 2 × {rows} rows (two mappings at once), then {concurrency} workers GET \
         /Users/{{id}} for {seconds} s; {} cores shared by all",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let mut results = Vec::new();
    for nodes in counts {
        let measured = measure(nodes, rows, seconds, concurrency).await;
        println!(
            "{nodes} node(s): recon {:.0} rows/s ({:.1} s); GET {:.0} req/s, p50 {:.1} ms, p99 {:.1} ms, errors {}{}",
            measured.recon_rows_per_s,
            measured.recon_seconds,
            measured.get.rate(),
            measured.get.percentile_ms(0.5),
            measured.get.percentile_ms(0.99),
            measured.get.errors,
            measured
                .get
                .first_error
                .as_deref()
                .map(|e| format!(" (first: {e})"))
                .unwrap_or_default()
        );
        results.push(measured);
    }
    if let (Some(one), Some(last)) = (results.first(), results.last())
        && last.nodes > one.nodes
    {
        println!(
            "scaling {} → {} nodes: recon {:.2}×, GET {:.2}×",
            one.nodes,
            last.nodes,
            last.recon_rows_per_s / one.recon_rows_per_s,
            last.get.rate() / one.get.rate()
        );
    }
}
