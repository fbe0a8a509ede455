//! The end-to-end test harness: starts real `idmd` processes (built by
//! `cargo build --workspace --bins`) on free loopback ports, and gives typed
//! gRPC clients and the `idmctl` binary pointed at them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod browser;
pub mod cluster;
pub mod console;
pub mod directory;
pub mod pki;
pub mod rest;
pub mod scim;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use idm_proto::v1::account_service_client::AccountServiceClient;
use idm_proto::v1::audit_service_client::AuditServiceClient;
use idm_proto::v1::auth_service_client::AuthServiceClient;
use idm_proto::v1::config_service_client::ConfigServiceClient;
use idm_proto::v1::object_service_client::ObjectServiceClient;
use idm_proto::v1::recon_service_client::ReconServiceClient;
use idm_proto::v1::schedule_service_client::ScheduleServiceClient;
use idm_proto::v1::sync_service_client::SyncServiceClient;
use idm_proto::v1::token_service_client::TokenServiceClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Request, Status};

/// The directory holding the workspace's binaries (`target/debug`).
pub fn bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("IDM_BIN_DIR") {
        return PathBuf::from(dir);
    }
    // target/debug/deps/e2e-<hash> → target/debug
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent()
        .and_then(Path::parent)
        .expect("target directory")
        .to_path_buf()
}

pub fn binary(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` first (scripts/test does)",
        path.display()
    );
    path
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A copy of idm's own flat conf directory `tests/fixtures/idm-<name>`
/// (`connector-*.json`, the cookbook's mappings with idm's extras) in a
/// scratch directory, for tests that edit it.
pub fn idm_conf(name: &str) -> TempDir {
    let dir = TempDir::new(name);
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(format!("idm-{name}"));
    copy_tree(&fixture, dir.path());
    dir
}

/// A copy of the Wren project `samples/<name>` (`conf/` with Wren's own
/// files, `data/`, `script/`) in a scratch directory.
pub fn wren_sample(name: &str) -> TempDir {
    let dir = TempDir::new(name);
    let samples = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../samples")
        .join(name);
    copy_tree(&samples, dir.path());
    dir
}

/// A scratch directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(label: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "idm-test-{label}-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// How to start an idmd.
#[derive(Clone, Default)]
pub struct IdmdOptions {
    pub conf: Option<PathBuf>,
    /// Default: `mem://`.
    pub store: Option<String>,
    pub extra_args: Vec<String>,
    /// Extra environment (`IDM_LDAP_URL`, …) for this idmd only.
    pub env: Vec<(String, String)>,
    /// Keep the encryption key in this key file (created on first start)
    /// instead of passing `IDM_ENCRYPTION_KEY`.
    pub key_file: Option<PathBuf>,
    /// Serve gRPC over TLS with these files; clients trust `ca_pem`.
    pub tls: Option<TlsOptions>,
    /// The address to listen on (default `127.0.0.1`); clients still dial
    /// loopback, so `0.0.0.0` works.
    pub bind: Option<std::net::IpAddr>,
}

/// idmd's certificate and key files, and the CA that issued them.
#[derive(Clone)]
pub struct TlsOptions {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca_pem: String,
}

impl TlsOptions {
    /// A certificate for `localhost` and `127.0.0.1` from `ca`, written under `dir`.
    pub fn issued_by(ca: &pki::TestCa, dir: &Path) -> Self {
        let files = ca.write_issued(dir, "idmd", &["localhost", "127.0.0.1"]);
        TlsOptions {
            cert: files.cert,
            key: files.key,
            ca_pem: ca.pem(),
        }
    }
}

/// A running idmd; killed on drop.
pub struct Idmd {
    child: Child,
    pub endpoint: String,
    pub admin_token: String,
    pub encryption_key: String,
    pub dir: TempDir,
    pub log_path: PathBuf,
    /// The CA (PEM) that issued idmd's certificate, when it serves TLS
    /// (`https://localhost:<port>`); what a client passes as `--ca`.
    pub ca_pem: Option<String>,
}

pub type Authed = InterceptedService<Channel, Bearer>;

#[derive(Clone)]
pub struct Bearer(pub Option<String>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(token) = &self.0 {
            request.metadata_mut().insert(
                "authorization",
                format!("Bearer {token}").parse().expect("ascii token"),
            );
        }
        Ok(request)
    }
}

impl Idmd {
    pub async fn start() -> Self {
        Self::start_with(IdmdOptions::default()).await
    }

    pub async fn start_with(options: IdmdOptions) -> Self {
        let dir = TempDir::new("idmd");
        let key = base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>());
        let admin_token = format!("admin-{}", rand::random::<u64>());
        Self::spawn(options, dir, admin_token, key)
            .await
            .unwrap_or_else(|log| panic!("idmd did not start:\n{log}"))
    }

    /// Starts an idmd that must refuse to start; returns its log.
    pub async fn start_failure(options: IdmdOptions) -> String {
        let key = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        match Self::spawn(options, TempDir::new("fail"), "t".into(), key).await {
            Ok(_) => panic!("idmd started, and should not have"),
            Err(log) => log,
        }
    }

    /// The services a stock reflection client sees listed.
    pub async fn reflected_services(&self) -> Vec<String> {
        use tonic_reflection::pb::v1::ServerReflectionRequest;
        use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
        let mut client = ServerReflectionClient::with_interceptor(
            self.channel().await,
            Bearer(Some(self.admin_token.clone())),
        );
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut responses = client
            .server_reflection_info(tokio_stream::once(request))
            .await
            .unwrap()
            .into_inner();
        let response = responses.message().await.unwrap().unwrap();
        let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
            panic!("unexpected reflection answer {response:?}");
        };
        list.service.into_iter().map(|s| s.name).collect()
    }

    /// Starts idmd and waits until it serves; `Err` carries its log.
    pub async fn spawn(
        options: IdmdOptions,
        dir: TempDir,
        admin_token: String,
        key: String,
    ) -> Result<Self, String> {
        let port = free_port();
        let log_path = dir.path().join(format!("idmd-{port}.log"));
        let log = std::fs::File::create(&log_path).unwrap();
        let mut command = Command::new(binary("idmd"));
        command
            .arg("--store")
            .arg(options.store.clone().unwrap_or_else(|| "mem://".into()))
            .arg("--grpc")
            .arg(
                std::net::SocketAddr::new(options.bind.unwrap_or([127, 0, 0, 1].into()), port)
                    .to_string(),
            )
            .arg("--key-file")
            .arg(
                options
                    .key_file
                    .clone()
                    .unwrap_or_else(|| dir.path().join("idm.key")),
            )
            .args(&options.extra_args)
            .env("IDM_ADMIN_TOKEN", &admin_token)
            .env("IDM_ENCRYPTION_KEY", &key)
            .env("RUST_LOG", "info,idm_server=debug")
            .env_remove("IDM_CONF")
            .env_remove("IDM_TLS_CERT")
            .env_remove("IDM_TLS_KEY")
            .env_remove("IDM_ALLOW_PLAINTEXT")
            .env_remove("IDM_STORE_USERNAME")
            .env_remove("IDM_STORE_PASSWORD")
            .env_remove("IDM_STORE_AUTH")
            // What a wss:// store trusts (the cluster harness sets it).
            .env_remove("SSL_CERT_FILE")
            // A conf with LDAP mappings must never reach a directory the test
            // did not start (the sample's own slapd on 3389, say): port 9 refuses
            // (IDM_LDAP_PORT: the Wren sample's &{idm.ldap.port}).
            .env("IDM_LDAP_URL", "ldap://127.0.0.1:9")
            .env("IDM_LDAP_PORT", "9")
            .envs(options.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        if let Some(conf) = &options.conf {
            command.arg("--conf").arg(conf);
        }
        if options.key_file.is_some() {
            command.env_remove("IDM_ENCRYPTION_KEY");
        }
        if let Some(tls) = &options.tls {
            command
                .arg("--tls-cert")
                .arg(&tls.cert)
                .arg("--tls-key")
                .arg(&tls.key);
        }
        let child = command.spawn().unwrap();
        let (endpoint, ca_pem) = match &options.tls {
            Some(tls) => (
                format!("https://localhost:{port}"),
                Some(tls.ca_pem.clone()),
            ),
            None => (format!("http://127.0.0.1:{port}"), None),
        };
        let mut idmd = Idmd {
            child,
            endpoint,
            admin_token,
            encryption_key: key,
            dir,
            log_path,
            ca_pem,
        };
        // Generous: only a failing start waits this long, and a node on a
        // debug-built SurrealDB server on a busy machine takes tens of seconds.
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Ok(Some(_)) = idmd.child.try_wait() {
                return Err(idmd.log());
            }
            if idmd.health().await.is_ok() {
                return Ok(idmd);
            }
            if Instant::now() > deadline {
                return Err(format!("timed out\n{}", idmd.log()));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Dials idmd as a client that trusts its CA (if it serves TLS).
    pub async fn connect(&self) -> Result<Channel, String> {
        idm_proto::dial::endpoint(&self.endpoint, self.ca_pem.as_deref().map(str::as_bytes))
            .map_err(|e| e.to_string())?
            .connect()
            .await
            .map_err(|e| idm_proto::dial::reason(&e))
    }

    pub async fn health(&self) -> Result<i32, String> {
        let channel = self.connect().await?;
        let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
        let response = client
            .check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await
            .map_err(|e| e.to_string())?;
        Ok(response.into_inner().status)
    }

    pub async fn channel(&self) -> Channel {
        self.connect()
            .await
            .unwrap_or_else(|e| panic!("cannot reach {}: {e}", self.endpoint))
    }

    pub async fn clients(&self) -> Clients {
        self.clients_with(Some(self.admin_token.clone())).await
    }

    pub async fn clients_with(&self, token: Option<String>) -> Clients {
        let channel = self.channel().await;
        let bearer = Bearer(token);
        Clients {
            objects: ObjectServiceClient::with_interceptor(channel.clone(), bearer.clone()),
            audit: AuditServiceClient::with_interceptor(channel.clone(), bearer.clone()),
            tokens: TokenServiceClient::with_interceptor(channel.clone(), bearer.clone()),
            config: ConfigServiceClient::with_interceptor(channel.clone(), bearer.clone()),
            recon: ReconServiceClient::with_interceptor(channel.clone(), bearer.clone()),
            sync: SyncServiceClient::with_interceptor(channel.clone(), bearer.clone()),
            auth: AuthServiceClient::with_interceptor(channel.clone(), bearer.clone()),
            accounts: AccountServiceClient::with_interceptor(channel.clone(), bearer.clone()),
            schedules: ScheduleServiceClient::with_interceptor(channel, bearer),
        }
    }

    /// Runs `idmctl` against this server with the admin token.
    pub fn idmctl(&self, args: &[&str]) -> Output {
        self.idmctl_with(&self.admin_token, args, None)
    }

    pub fn idmctl_with(&self, token: &str, args: &[&str], stdin: Option<&str>) -> Output {
        use std::io::Write;
        let mut command = Command::new(binary("idmctl"));
        command
            .arg("--endpoint")
            .arg(&self.endpoint)
            .env_remove("IDM_CA");
        if let Some(ca) = &self.ca_pem {
            let path = self.dir.path().join("idmctl-ca.pem");
            std::fs::write(&path, ca).unwrap();
            command.arg("--ca").arg(path);
        }
        let mut child = command
            .args(args)
            .env("IDM_TOKEN", token)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        if let Some(input) = stdin {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
        }
        drop(child.stdin.take());
        child.wait_with_output().unwrap()
    }

    /// Runs `idmctl` with no token in its environment (IDM_TOKEN and
    /// IDM_USERNAME removed), `env` added (HOME, XDG_CONFIG_HOME, …) and
    /// `stdin` as its input: how a person logged in with `idmctl login` runs it.
    pub fn idmctl_env(&self, args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Output {
        use std::io::Write;
        let mut child = Command::new(binary("idmctl"))
            .arg("--endpoint")
            .arg(&self.endpoint)
            .args(args)
            .env_remove("IDM_TOKEN")
            .env_remove("IDM_USERNAME")
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).unwrap();
        }
        drop(input);
        child.wait_with_output().unwrap()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops the process the hard way (as a crash would).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            assert!(Instant::now() < deadline, "idmd did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Idmd {
    fn drop(&mut self) {
        self.kill();
    }
}

pub struct Clients {
    pub objects: ObjectServiceClient<Authed>,
    pub audit: AuditServiceClient<Authed>,
    pub tokens: TokenServiceClient<Authed>,
    pub config: ConfigServiceClient<Authed>,
    pub recon: ReconServiceClient<Authed>,
    pub sync: SyncServiceClient<Authed>,
    pub schedules: ScheduleServiceClient<Authed>,
    /// Login, Logout, WhoAmI.
    pub auth: AuthServiceClient<Authed>,
    pub accounts: AccountServiceClient<Authed>,
}

/// A JSON object literal as a protobuf `Struct`.
pub fn attrs(value: serde_json::Value) -> Option<prost_types::Struct> {
    Some(idm_proto::json::to_proto_struct(
        value.as_object().expect("a JSON object"),
    ))
}

/// A managed object's attributes as JSON.
pub fn json_of(object: &idm_proto::v1::ManagedObject) -> serde_json::Value {
    serde_json::Value::Object(
        object
            .attributes
            .as_ref()
            .map(idm_proto::json::from_proto_struct)
            .unwrap_or_default(),
    )
}
