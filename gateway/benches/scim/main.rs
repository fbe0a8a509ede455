//! idm-gateway under load: a real idmd (`mem://` or SurrealKV) and idm-gateway on loopback,
//! N seeded users, then C concurrent workers for D seconds a phase:
//!
//! 1. `GET /scim/v2/Users/{id}` through the gateway;
//! 2. `GET /openidm/managed/user/{id}`, Wren's REST API, same bearer token;
//! 3. the same REST read with HTTP Basic as `openidm-admin` (the gateway
//!    exchanges the name and password for a core session and caches it);
//! 4. `GetObject` straight to idmd over gRPC (one shared tonic channel, as the
//!    gateway has): the limit the gateway is measured against;
//! 5. `GET /scim/v2/Users?filter=userName eq "…"` through the gateway;
//! 6. `GET /openidm/managed/user?_queryFilter=userName eq "…"`, the same
//!    query over REST;
//! 7. `GET /scim/v2/Users/{id}` again under wrk (2 threads, C connections),
//!    issue 18's load generator, when `wrk` is installed;
//! 8. `POST /scim/v2/Users` through the gateway (last: the reads all see N
//!    users, and none runs while SurrealKV flushes and compacts the writes).
//!
//! Each HTTP worker has its own keep-alive HTTP/1.1 connection, in plain
//! HTTP (`--no-tls`, as the README's earlier numbers were measured). Latency
//! is from sending a request to having read its whole body.
//!
//! Run: `cargo build --release --bins && cargo bench -p idm-gateway --bench scim`.
//! `IDM_BENCH_USERS` (default 1000), `IDM_BENCH_SECONDS` (10, after a 2 s
//! warm-up), `IDM_BENCH_CONCURRENCY` (32), `IDM_BENCH_STORE` (`mem`, or
//! `surrealkv`: an embedded store on disk, idmd's default); the binaries are taken from
//! `IDM_BIN_DIR`, else `$CARGO_TARGET_DIR/release`, else the bench's own
//! target directory. `IDM_BENCH_BASELINE=DIR`: another build's binaries
//! (issue 18's pre-issue build), started and seeded alike after phase 7;
//! the wrk GET then runs `IDM_BENCH_ROUNDS` (3) times on each, in turns,
//! and the medians are compared.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod processes;
mod report;
mod wrk;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use idm_proto::v1::GetObjectRequest;
use idm_proto::v1::object_service_client::ObjectServiceClient;
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use serde_json::{Value, json};
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

use crate::processes::{Process, TempDir, bin_dir, free_port, wait_for_gateway, wait_for_idmd};
use crate::report::{Phase, print_rest_verdicts, print_scim_verdicts, print_table};

const WARM_UP: Duration = Duration::from_secs(2);
const SCIM_JSON: &str = "application/scim+json";
const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
/// The internal account `IDM_ADMIN_PASSWORD` creates.
const ADMIN_ACCOUNT: &str = "openidm-admin";

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn user_body(name: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "schemas": [USER_SCHEMA],
        "userName": name,
        "name": {"givenName": format!("G{name}"), "familyName": format!("F{name}")},
        "emails": [{"value": format!("{name}@example.com"), "type": "work"}],
        "active": true,
    }))
    .expect("a user body")
}

/// What every worker needs.
struct Target {
    /// `http://127.0.0.1:<port>/scim/v2`.
    scim: String,
    /// `http://127.0.0.1:<port>/openidm`.
    rest: String,
    /// `Bearer <IDM_ADMIN_TOKEN>`, for SCIM, REST and gRPC.
    bearer: String,
    /// `Basic <openidm-admin:password>`.
    basic: String,
    grpc: Channel,
    ids: Vec<String>,
    users: u64,
    /// Numbers for the userNames `POST` creates, past the seeded ones.
    next_user: AtomicU64,
}

#[derive(Clone, Copy, PartialEq)]
enum Op {
    GetUser,
    RestGet,
    RestGetBasic,
    GrpcGet,
    FilterUsers,
    RestQuery,
    CreateUser,
}

impl Op {
    fn label(self) -> &'static str {
        match self {
            Op::GetUser => "GET /Users/{id}",
            Op::RestGet => "REST GET managed/user/{id}",
            Op::RestGetBasic => "REST GET managed/user/{id} Basic",
            Op::GrpcGet => "gRPC GetObject (direct)",
            Op::FilterUsers => "GET /Users?filter=userName eq",
            Op::RestQuery => "REST _queryFilter=userName eq",
            Op::CreateUser => "POST /Users",
        }
    }
}

/// One keep-alive HTTP/1.1 connection (reqwest without the http2 feature).
fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .build()
        .expect("HTTP client")
}

/// One request; `Err` says what was unexpected.
async fn request(
    op: Op,
    target: &Target,
    http: &reqwest::Client,
    grpc: &mut ObjectServiceClient<Channel>,
    authorization: &MetadataValue<tonic::metadata::Ascii>,
) -> Result<(), String> {
    let random_id = || &target.ids[rand::random_range(0..target.ids.len())];
    let (response, expected) = match op {
        Op::GrpcGet => {
            let mut request = tonic::Request::new(GetObjectRequest {
                name: format!("managed/user/{}", random_id()),
                read_mask: None,
            });
            request
                .metadata_mut()
                .insert("authorization", authorization.clone());
            return grpc
                .get_object(request)
                .await
                .map(drop)
                .map_err(|s| s.to_string());
        }
        Op::GetUser => (
            http.get(format!("{}/Users/{}", target.scim, random_id()))
                .header(AUTHORIZATION, &target.bearer)
                .send()
                .await,
            StatusCode::OK,
        ),
        Op::RestGet | Op::RestGetBasic => {
            let authorization = match op {
                Op::RestGetBasic => &target.basic,
                _ => &target.bearer,
            };
            (
                http.get(format!("{}/managed/user/{}", target.rest, random_id()))
                    .header(AUTHORIZATION, authorization)
                    .send()
                    .await,
                StatusCode::OK,
            )
        }
        Op::RestQuery => {
            let n = rand::random_range(0..target.users);
            (
                http.get(format!(
                    "{}/managed/user?_queryFilter=userName%20eq%20%22user{n}%22",
                    target.rest
                ))
                .header(AUTHORIZATION, &target.bearer)
                .send()
                .await,
                StatusCode::OK,
            )
        }
        Op::FilterUsers => {
            let n = rand::random_range(0..target.users);
            (
                http.get(format!(
                    "{}/Users?filter=userName%20eq%20%22user{n}%22",
                    target.scim
                ))
                .header(AUTHORIZATION, &target.bearer)
                .send()
                .await,
                StatusCode::OK,
            )
        }
        Op::CreateUser => {
            let n = target.next_user.fetch_add(1, Ordering::Relaxed);
            (
                http.post(format!("{}/Users", target.scim))
                    .header(AUTHORIZATION, &target.bearer)
                    .header(CONTENT_TYPE, SCIM_JSON)
                    .body(user_body(&format!("user{n}")))
                    .send()
                    .await,
                StatusCode::CREATED,
            )
        }
    };
    let response = response.map_err(|e| e.to_string())?;
    let status = response.status();
    let body = response.bytes().await.map_err(|e| e.to_string())?;
    if status != expected {
        return Err(format!("{status}: {}", String::from_utf8_lossy(&body)));
    }
    let count = match op {
        Op::FilterUsers => "totalResults",
        Op::RestQuery => "resultCount",
        _ => return Ok(()),
    };
    let list: Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
    if list[count] != 1 {
        return Err(format!("{count} {}", list[count]));
    }
    Ok(())
}

/// `concurrency` workers loop on `op` for the warm-up and then `seconds`;
/// only requests completing inside the measured window count.
async fn run_phase(op: Op, target: &Arc<Target>, concurrency: u64, seconds: u64) -> Phase {
    let window_start = Instant::now() + WARM_UP;
    let window_end = window_start + Duration::from_secs(seconds);
    let authorization: MetadataValue<_> = target.bearer.parse().expect("ASCII bearer");
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let target = Arc::clone(target);
        let authorization = authorization.clone();
        workers.push(tokio::spawn(async move {
            let http = http_client();
            let mut grpc = ObjectServiceClient::new(target.grpc.clone());
            let mut latencies = Vec::new();
            let mut errors = 0;
            let mut first_error = None;
            while Instant::now() < window_end {
                let start = Instant::now();
                let outcome = request(op, &target, &http, &mut grpc, &authorization).await;
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
        label: op.label(),
        latencies: Vec::new(),
        errors: 0,
        first_error: None,
        seconds: seconds as f64,
    };
    for worker in workers {
        let (latencies, errors, first_error) = worker.await.expect("worker panicked");
        phase.latencies.extend(latencies);
        phase.errors += errors;
        phase.first_error = phase.first_error.or(first_error);
    }
    phase.latencies.sort();
    phase
}

/// Creates `users` users, `concurrency` at a time; returns their ids.
async fn seed(target: &Target, users: u64, concurrency: u64) -> Vec<String> {
    let mut workers = Vec::new();
    for worker in 0..concurrency {
        let url = format!("{}/Users", target.scim);
        let bearer = target.bearer.clone();
        workers.push(tokio::spawn(async move {
            let http = http_client();
            let mut ids = Vec::new();
            for n in (worker..users).step_by(concurrency as usize) {
                let response = http
                    .post(&url)
                    .header(AUTHORIZATION, &bearer)
                    .header(CONTENT_TYPE, SCIM_JSON)
                    .body(user_body(&format!("user{n}")))
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("seed user{n}: {e}"));
                let status = response.status();
                let body: Value = response
                    .json()
                    .await
                    .unwrap_or_else(|e| panic!("seed user{n}: {e}"));
                assert_eq!(status, StatusCode::CREATED, "seed user{n}: {body}");
                let id = body["id"].as_str().expect("a created user's id");
                ids.push(id.to_string());
            }
            ids
        }));
    }
    let mut ids = Vec::new();
    for worker in workers {
        ids.extend(worker.await.expect("seed worker panicked"));
    }
    ids
}

/// An idmd and an idm-gateway from one directory of binaries, serving
/// `users` seeded users.
struct Deployment {
    target: Target,
    seeded: Duration,
    // Dropped after `target`: the processes are killed last.
    _gateway: Process,
    _idmd: Process,
}

/// Starts idmd (on `store`: `mem` or `surrealkv`) and idm-gateway from
/// `bins`, their keys, logs and store under `dir`, and seeds `users` users.
async fn deploy(bins: &Path, dir: &Path, store: &str, users: u64, concurrency: u64) -> Deployment {
    let (idmd_bin, gateway_bin) = (bins.join("idmd"), bins.join("idm-gateway"));
    if !idmd_bin.exists() || !gateway_bin.exists() {
        eprintln!(
            "{} or {} is missing: run `cargo build --release --bins` first",
            idmd_bin.display(),
            gateway_bin.display()
        );
        std::process::exit(1);
    }
    std::fs::create_dir_all(dir).expect("scratch directory");
    let token = format!("bench-{:016x}", rand::random::<u64>());
    let bearer = format!("Bearer {token}");
    let password = format!("Bench-{:016x}", rand::random::<u64>());
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{ADMIN_ACCOUNT}:{password}"))
    );
    let key = base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>());
    let store = match store {
        "surrealkv" => format!("surrealkv://{}", dir.join("store").display()),
        _ => "mem://".to_string(),
    };
    let grpc_port = free_port();
    let core = format!("http://127.0.0.1:{grpc_port}");
    let mut idmd = Process::spawn(
        "idmd",
        Command::new(&idmd_bin)
            .args(["--store", &store, "--grpc"])
            .arg(format!("127.0.0.1:{grpc_port}"))
            .arg("--key-file")
            .arg(dir.join("idm.key"))
            .env("IDM_ADMIN_TOKEN", &token)
            .env("IDM_ADMIN_PASSWORD", &password)
            .env("IDM_ENCRYPTION_KEY", &key)
            .env_remove("IDM_CONF"),
        dir.join("idmd.log"),
    );
    let grpc = wait_for_idmd(&mut idmd, &core, &bearer).await;

    let gateway_port = free_port();
    let scim = format!("http://127.0.0.1:{gateway_port}/scim/v2");
    let rest = format!("http://127.0.0.1:{gateway_port}/openidm");
    let mut gateway = Process::spawn(
        "idm-gateway",
        // Plain HTTP/1.1 (the gateway's default is HTTPS), as the numbers in
        // the README were measured (and the load generator has no TLS).
        Command::new(&gateway_bin)
            .args(["--core", &core, "--no-tls", "--listen"])
            .arg(format!("127.0.0.1:{gateway_port}")),
        dir.join("idm-gateway.log"),
    );
    wait_for_gateway(&mut gateway, &scim).await;

    let mut target = Target {
        scim,
        rest,
        bearer,
        basic,
        grpc,
        ids: Vec::new(),
        users,
        next_user: AtomicU64::new(users),
    };
    let start = Instant::now();
    target.ids = seed(&target, users, concurrency).await;
    Deployment {
        target,
        seeded: start.elapsed(),
        _gateway: gateway,
        _idmd: idmd,
    }
}

#[tokio::main]
async fn main() {
    let users = env_or("IDM_BENCH_USERS", 1000).max(1);
    let seconds = env_or("IDM_BENCH_SECONDS", 10).max(1);
    let concurrency = env_or("IDM_BENCH_CONCURRENCY", 32).max(1);
    let store = match std::env::var("IDM_BENCH_STORE").as_deref() {
        Ok("surrealkv") => "surrealkv",
        Ok("mem") | Err(_) => "mem",
        Ok(other) => panic!("IDM_BENCH_STORE is mem or surrealkv, not {other:?}"),
    };

    // Declared first so it is dropped last, after the processes.
    let dir = TempDir(std::env::temp_dir().join(format!(
        "idm-bench-scim-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    )));
    let Deployment {
        target,
        seeded,
        _gateway: gateway,
        _idmd: idmd,
    } = deploy(&bin_dir(), &dir.0.join("bench"), store, users, concurrency).await;
    println!(
        "idm-gateway bench: {users} users seeded in {:.1} s ({:.0}/s); {concurrency} workers, \
         {WARM_UP:?} warm-up + {seconds} s a phase; idmd ({store}), idm-gateway and the load \
         generator share {} cores",
        seeded.as_secs_f64(),
        users as f64 / seeded.as_secs_f64(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!();

    let target = Arc::new(target);
    // Each REST phase right after the SCIM phase it is compared with.
    let order = [
        Op::GetUser,
        Op::RestGet,
        Op::RestGetBasic,
        Op::GrpcGet,
        Op::FilterUsers,
        Op::RestQuery,
        Op::CreateUser,
    ];
    // The reads first, then wrk's GETs on the same store (the writes of
    // `POST /Users` leave SurrealKV flushing and compacting for a while
    // after, which the GETs would pay for), then the writes.
    let (reads, writes) = order.split_at(order.len() - 1);
    let mut phases = Vec::new();
    for &op in reads {
        phases.push(run_phase(op, &target, concurrency, seconds).await);
    }
    let wrk_get = |target: &Target| {
        let users_url = format!("{}/Users", target.scim);
        wrk::get_users(
            &dir.0,
            &users_url,
            &target.bearer,
            &target.ids,
            concurrency,
            2,
            seconds,
        )
    };
    let wrk_phase = wrk::available().then(|| wrk_get(&target));
    // Issue 18 compares the GET with the build before it in one run: the
    // baseline's idmd and gateway, seeded alike, measured in turns with
    // this build's (the shared cores drift over minutes).
    let mut turns = Vec::new();
    let baseline_bins = std::env::var("IDM_BENCH_BASELINE").ok();
    if let Some(baseline_bins) = baseline_bins.as_deref().filter(|_| wrk_phase.is_some()) {
        let rounds = env_or("IDM_BENCH_ROUNDS", 3).max(1);
        let baseline = deploy(
            Path::new(baseline_bins),
            &dir.0.join("baseline"),
            store,
            users,
            concurrency,
        )
        .await;
        for _ in 0..rounds {
            for (build, measured) in [("baseline", &baseline.target), ("this build", &*target)] {
                turns.push((build, wrk_get(measured)));
            }
        }
    }
    for &op in writes {
        phases.push(run_phase(op, &target, concurrency, seconds).await);
    }

    let phase = |op: Op| &phases[order.iter().position(|o| *o == op).expect("a phase run")];
    print_table(&phases);
    print_scim_verdicts(phase(Op::GetUser), phase(Op::GrpcGet));
    print_rest_verdicts(
        phase(Op::RestGet),
        phase(Op::GetUser),
        phase(Op::RestQuery),
        phase(Op::FilterUsers),
        phase(Op::RestGetBasic),
    );
    match wrk_phase {
        None => println!("\nwrk is not on the PATH: the wrk phases are skipped"),
        Some(Err(e)) => println!("\nwrk: {e}"),
        Some(Ok(measured)) => wrk::print_verdicts(&measured, phase(Op::GetUser)),
    }
    if let Some(baseline_bins) = &baseline_bins {
        match turns
            .into_iter()
            .map(|(build, measured)| measured.map(|phase| (build, phase)))
            .collect::<Result<Vec<_>, _>>()
        {
            Ok(turns) if !turns.is_empty() => wrk::print_against_baseline(baseline_bins, &turns),
            Ok(_) => {}
            Err(e) => println!("\nwrk against the baseline: {e}"),
        }
    }

    drop(target);
    drop(gateway);
    drop(idmd);
}
