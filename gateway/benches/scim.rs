//! SCIM gateway under load: a real idmd (`mem://`) and idm-gateway on loopback,
//! N seeded users, then C concurrent workers for D seconds a phase:
//!
//! 1. `GET /Users/{id}` through the gateway;
//! 2. `GetObject` straight to idmd over gRPC (one shared tonic channel, as the
//!    gateway has): the limit the gateway is measured against;
//! 3. `GET /Users?filter=userName eq "…"` through the gateway;
//! 4. `POST /Users` through the gateway (last: the reads all see N users).
//!
//! Each HTTP worker has its own keep-alive HTTP/1.1 connection. Latency is
//! from sending a request to having read its whole body.
//!
//! Run: `cargo build --release --bins && cargo bench -p idm-gateway --bench scim`.
//! `IDM_BENCH_USERS` (default 1000), `IDM_BENCH_SECONDS` (10, after a 2 s
//! warm-up), `IDM_BENCH_CONCURRENCY` (32); the binaries are taken from
//! `IDM_BIN_DIR`, else `$CARGO_TARGET_DIR/release`, else the bench's own
//! target directory.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
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
use tonic::transport::{Channel, Endpoint};

const WARM_UP: Duration = Duration::from_secs(2);
const SCIM_JSON: &str = "application/scim+json";
const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";

// Targets.
const TARGET_GET_RATE: f64 = 10_000.0;
const TARGET_GET_P99_MS: f64 = 5.0;
const TARGET_GRPC_OVER_GET: f64 = 1.5;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("IDM_BIN_DIR") {
        return PathBuf::from(dir);
    }
    if let Ok(dir) = std::env::var("CARGO_TARGET_DIR") {
        return Path::new(&dir).join("release");
    }
    // target/release/deps/scim-<hash> → target/release
    let exe = std::env::current_exe().expect("bench executable path");
    exe.parent()
        .and_then(Path::parent)
        .expect("target directory")
        .to_path_buf()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
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

/// A scratch directory for keys and logs; removed when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process killed when dropped, on a panic too.
struct Process {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Process {
    fn spawn(name: &'static str, command: &mut Command, log: PathBuf) -> Self {
        let file = std::fs::File::create(&log).expect("log file");
        let child = command
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Process { name, child, log }
    }

    /// Panics with the process's log if it has exited or `deadline` passed.
    fn check_alive(&mut self, deadline: Instant) {
        let exited = matches!(self.child.try_wait(), Ok(Some(_)));
        if exited || Instant::now() > deadline {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let what = if exited { "exited" } else { "timed out" };
            panic!("{} {what} while starting:\n{log}", self.name);
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What every worker needs.
struct Target {
    scim: String,
    bearer: String,
    grpc: Channel,
    ids: Vec<String>,
    users: u64,
    /// Numbers for the userNames `POST` creates, past the seeded ones.
    next_user: AtomicU64,
}

#[derive(Clone, Copy)]
enum Op {
    GetUser,
    GrpcGet,
    FilterUsers,
    CreateUser,
}

impl Op {
    fn label(self) -> &'static str {
        match self {
            Op::GetUser => "GET /Users/{id}",
            Op::GrpcGet => "gRPC GetObject (direct)",
            Op::FilterUsers => "GET /Users?filter=userName eq",
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
    if let Op::FilterUsers = op {
        let list: Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
        if list["totalResults"] != 1 {
            return Err(format!("totalResults {}", list["totalResults"]));
        }
    }
    Ok(())
}

/// What one phase measured.
struct Phase {
    label: &'static str,
    latencies: Vec<Duration>,
    errors: usize,
    first_error: Option<String>,
    seconds: f64,
}

impl Phase {
    fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.seconds
    }

    /// Nearest-rank percentile, in ms (latencies are sorted).
    fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return 0.0;
        }
        let rank = (p * self.latencies.len() as f64).ceil() as usize;
        let index = rank.clamp(1, self.latencies.len()) - 1;
        self.latencies[index].as_secs_f64() * 1000.0
    }
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

/// Waits until idmd answers a `GetObject` (NotFound: serving, token accepted).
async fn wait_for_idmd(idmd: &mut Process, endpoint: &str, bearer: &str) -> Channel {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        idmd.check_alive(deadline);
        let channel = Endpoint::from_shared(endpoint.to_string())
            .expect("endpoint")
            .tcp_nodelay(true)
            .connect()
            .await;
        if let Ok(channel) = channel {
            let mut request = tonic::Request::new(GetObjectRequest {
                name: "managed/user/bench-probe".into(),
                read_mask: None,
            });
            request
                .metadata_mut()
                .insert("authorization", bearer.parse().expect("ASCII bearer"));
            match ObjectServiceClient::new(channel.clone())
                .get_object(request)
                .await
            {
                Ok(_) => return channel,
                Err(s) if s.code() == tonic::Code::NotFound => return channel,
                Err(s) if s.code() == tonic::Code::Unavailable => {}
                Err(s) => panic!("idmd refused the bench's probe: {s}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_for_gateway(gateway: &mut Process, scim: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let http = http_client();
    loop {
        gateway.check_alive(deadline);
        let response = http
            .get(format!("{scim}/ServiceProviderConfig"))
            .send()
            .await;
        if response.is_ok_and(|r| r.status() == StatusCode::OK) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn print_table(phases: &[Phase]) {
    println!(
        "{:<30} {:>9} {:>7} {:>9} {:>8} {:>8} {:>8} {:>8}",
        "phase", "requests", "errors", "req/s", "p50 ms", "p90 ms", "p99 ms", "max ms"
    );
    for phase in phases {
        println!(
            "{:<30} {:>9} {:>7} {:>9.0} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
            phase.label,
            phase.latencies.len(),
            phase.errors,
            phase.rate(),
            phase.percentile_ms(0.50),
            phase.percentile_ms(0.90),
            phase.percentile_ms(0.99),
            phase.percentile_ms(1.0),
        );
    }
    for phase in phases {
        if let Some(error) = &phase.first_error {
            println!("first error in {}: {error}", phase.label);
        }
    }
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "NOT met" }
}

fn print_comparison(get: &Phase, grpc: &Phase) {
    let over = grpc.rate() / get.rate();
    let get_p99 = get.percentile_ms(0.99);
    println!();
    println!(
        "gateway GET ÷ direct gRPC:  {:.2} x the req/s (gRPC is {over:.2} x the gateway)",
        get.rate() / grpc.rate()
    );
    println!(
        "gateway adds:               p50 {:+.2} ms, p99 {:+.2} ms",
        get.percentile_ms(0.50) - grpc.percentile_ms(0.50),
        get_p99 - grpc.percentile_ms(0.99)
    );
    println!(
        "target GET ≥ {TARGET_GET_RATE:.0} req/s:      {:>9.0}  {}",
        get.rate(),
        verdict(get.rate() >= TARGET_GET_RATE)
    );
    println!(
        "target GET p99 ≤ {TARGET_GET_P99_MS:.0} ms:         {get_p99:>9.2}  {}",
        verdict(get_p99 <= TARGET_GET_P99_MS)
    );
    println!(
        "target gRPC ÷ GET ≤ {TARGET_GRPC_OVER_GET}:      {over:>9.2}  {}",
        verdict(over <= TARGET_GRPC_OVER_GET)
    );
}

#[tokio::main]
async fn main() {
    let users = env_or("IDM_BENCH_USERS", 1000).max(1);
    let seconds = env_or("IDM_BENCH_SECONDS", 10).max(1);
    let concurrency = env_or("IDM_BENCH_CONCURRENCY", 32).max(1);

    let bins = bin_dir();
    let (idmd_bin, scim_bin) = (bins.join("idmd"), bins.join("idm-gateway"));
    if !idmd_bin.exists() || !scim_bin.exists() {
        eprintln!(
            "{} or {} is missing: run `cargo build --release --bins` first",
            idmd_bin.display(),
            scim_bin.display()
        );
        std::process::exit(1);
    }

    // Declared first so it is dropped last, after both processes.
    let dir = TempDir(std::env::temp_dir().join(format!(
        "idm-bench-scim-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    )));
    std::fs::create_dir_all(&dir.0).expect("scratch directory");
    let token = format!("bench-{:016x}", rand::random::<u64>());
    let bearer = format!("Bearer {token}");
    let key = base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>());

    let grpc_port = free_port();
    let core = format!("http://127.0.0.1:{grpc_port}");
    let mut idmd = Process::spawn(
        "idmd",
        Command::new(&idmd_bin)
            .args(["--store", "mem://", "--grpc"])
            .arg(format!("127.0.0.1:{grpc_port}"))
            .arg("--key-file")
            .arg(dir.0.join("idm.key"))
            .env("IDM_ADMIN_TOKEN", &token)
            .env("IDM_ENCRYPTION_KEY", &key)
            .env_remove("IDM_CONF"),
        dir.0.join("idmd.log"),
    );
    let grpc = wait_for_idmd(&mut idmd, &core, &bearer).await;

    let scim_port = free_port();
    let scim = format!("http://127.0.0.1:{scim_port}/scim/v2");
    let mut gateway = Process::spawn(
        "idm-gateway",
        // Plain HTTP/1.1, as the numbers in the README were measured (and the
        // load generator has no TLS).
        Command::new(&scim_bin)
            .args(["--core", &core, "--no-tls", "--listen"])
            .arg(format!("127.0.0.1:{scim_port}")),
        dir.0.join("idm-gateway.log"),
    );
    wait_for_gateway(&mut gateway, &scim).await;

    let mut target = Target {
        scim,
        bearer,
        grpc,
        ids: Vec::new(),
        users,
        next_user: AtomicU64::new(users),
    };
    let start = Instant::now();
    target.ids = seed(&target, users, concurrency).await;
    let seeded = start.elapsed();
    println!(
        "idm-gateway bench: {users} users seeded in {:.1} s ({:.0}/s); {concurrency} workers, \
         {WARM_UP:?} warm-up + {seconds} s a phase; idmd (mem://), idm-gateway and the load \
         generator share {} cores",
        seeded.as_secs_f64(),
        users as f64 / seeded.as_secs_f64(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!();

    let target = Arc::new(target);
    let mut phases = Vec::new();
    for op in [Op::GetUser, Op::GrpcGet, Op::FilterUsers, Op::CreateUser] {
        phases.push(run_phase(op, &target, concurrency, seconds).await);
    }
    print_table(&phases);
    print_comparison(&phases[0], &phases[1]);

    drop(gateway);
    drop(idmd);
}
