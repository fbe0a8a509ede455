//! The two processes under load, idmd and idm-gateway: where their binaries
//! are, a scratch directory for their keys and logs, and waiting until each
//! serves.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use idm_proto::v1::GetObjectRequest;
use idm_proto::v1::object_service_client::ObjectServiceClient;
use reqwest::StatusCode;
use tonic::transport::{Channel, Endpoint};

use crate::http_client;

/// `IDM_BIN_DIR`, else `$CARGO_TARGET_DIR/release`, else the bench's own
/// target directory.
pub fn bin_dir() -> PathBuf {
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

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// A scratch directory for keys and logs; removed when dropped.
pub struct TempDir(pub PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process killed when dropped, on a panic too.
pub struct Process {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Process {
    pub fn spawn(name: &'static str, command: &mut Command, log: PathBuf) -> Self {
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

/// Waits until idmd answers a `GetObject` (NotFound: serving, token accepted).
pub async fn wait_for_idmd(idmd: &mut Process, endpoint: &str, bearer: &str) -> Channel {
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

/// Waits until the gateway serves SCIM's `ServiceProviderConfig`.
pub async fn wait_for_gateway(gateway: &mut Process, scim: &str) {
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
