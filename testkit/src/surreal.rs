//! A throwaway SurrealDB server: SurrealDB's own server (`surrealdb-server`
//! from crates.io, the version idm's `surrealdb` pins) built as the small
//! binary `testkit/surreal` (`idm-surreal-server`, outside the workspace with
//! its own target), started on a free loopback port with a random root user,
//! in memory or on a SurrealKV directory, over `ws://` or `wss://` with a
//! certificate from a test CA. Killed, and its directory removed, on drop.
//!
//! The binary is `$IDM_SURREAL_BIN`, else
//! `$CARGO_TARGET_DIR/surreal/debug/idm-surreal-server` (`CARGO_TARGET_DIR`
//! defaults to `~/.cache/idm-target`, as `scripts/test` sets it); build it with
//! [`BUILD_COMMAND`] (`scripts/test` does).
//!
//! ```no_run
//! let server = idm_testkit::SurrealServer::start()?;
//! // ws://127.0.0.1:<port>, root user and password for IDM_STORE_USERNAME/PASSWORD
//! println!("{} {}", server.url(), server.root_user());
//! server.define_database_user("idm", "idm", "idmd", "s3cret")?;
//! # Ok::<(), idm_testkit::SurrealError>(())
//! ```

use std::fs::{File, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;

use crate::{free_port, fresh_dir_named, pki};

/// How `idm-surreal-server` is built (what `scripts/test` runs).
pub const BUILD_COMMAND: &str = "cargo build --manifest-path testkit/surreal/Cargo.toml --target-dir \"$CARGO_TARGET_DIR/surreal\"";
/// How long the server may take to answer `/health` after it was spawned
/// (a debug build on a busy machine takes a few seconds).
const READY_TIMEOUT: Duration = Duration::from_secs(60);
const PORT_ATTEMPTS: usize = 5;
/// At most this much of an HTTP answer is read.
const MAX_ANSWER: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum SurrealError {
    #[error("SurrealDB on {url} exited ({status}) before answering; its log:\n{log}")]
    Exited {
        url: String,
        status: String,
        log: String,
    },
    #[error("SurrealDB on {url} did not answer /health within {after:?} ({last}); its log:\n{log}")]
    NotReady {
        url: String,
        after: Duration,
        last: String,
        log: String,
    },
    #[error("SurrealDB refused {what}: {answer}")]
    Refused { what: String, answer: String },
    #[error("SurrealDB test server: {context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

fn io_error(context: impl Into<String>) -> impl FnOnce(io::Error) -> SurrealError {
    let context = context.into();
    move |source| SurrealError::Io { context, source }
}

/// Where the server keeps its data.
#[derive(Debug, Clone, Default)]
enum Storage {
    #[default]
    Memory,
    SurrealKv,
}

/// What [`SurrealServerBuilder::start`] creates.
#[derive(Debug, Clone, Default)]
pub struct SurrealServerBuilder {
    storage: Storage,
    tls: bool,
    binary: Option<PathBuf>,
}

impl SurrealServerBuilder {
    /// Keep the data in a SurrealKV directory (`<dir>/data`) instead of
    /// memory: it survives [`SurrealServer::restart`].
    pub fn surrealkv(mut self) -> Self {
        self.storage = Storage::SurrealKv;
        self
    }

    /// Serve `wss://localhost:<port>` with a certificate for `localhost` and
    /// `127.0.0.1` from a CA of the server's own ([`SurrealServer::tls_ca`]).
    pub fn tls(mut self) -> Self {
        self.tls = true;
        self
    }

    /// Run this `idm-surreal-server` instead of [`binary`]'s (the benches
    /// take a release build).
    pub fn binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.binary = Some(path.into());
        self
    }

    /// Starts the server on a free loopback port; returns once it answers.
    pub fn start(self) -> Result<SurrealServer, SurrealError> {
        let dir = fresh_dir_named("surreal").map_err(io_error("cannot create a directory"))?;
        let mut server = SurrealServer {
            dir,
            port: 0,
            storage: self.storage,
            root_user: format!("root{:x}", random_u64()),
            root_password: format!("{:x}{:x}", random_u64(), random_u64()),
            tls: None,
            child: None,
            binary: self.binary.unwrap_or_else(binary),
        };
        if self.tls {
            let tls_dir = server.dir.join("tls");
            std::fs::create_dir(&tls_dir)
                .map_err(io_error(format!("cannot create {}", tls_dir.display())))?;
            let ca = pki::TestCa::new("idm surreal test CA");
            let ca_path = ca.write_ca(&tls_dir);
            let files = ca.write_issued(&tls_dir, "server", &["localhost", "127.0.0.1"]);
            server.tls = Some(Tls {
                ca_path,
                ca_der: ca.der(),
                cert: files.cert,
                key: files.key,
            });
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            server.port = free_port().map_err(io_error("cannot find a free loopback port"))?;
            match server.spawn_and_wait() {
                Err(SurrealError::Exited { log, .. })
                    if attempt < PORT_ATTEMPTS
                        && (log.contains("Address already in use")
                            || log.contains("address already in use")) => {}
                other => return other.map(|()| server),
            }
        }
    }
}

#[derive(Debug)]
struct Tls {
    ca_path: PathBuf,
    ca_der: Vec<u8>,
    cert: PathBuf,
    key: PathBuf,
}

/// A running throwaway SurrealDB server. Killed, and its directory removed,
/// on drop.
#[derive(Debug)]
pub struct SurrealServer {
    dir: PathBuf,
    port: u16,
    storage: Storage,
    root_user: String,
    root_password: String,
    /// The `idm-surreal-server` it runs.
    binary: PathBuf,
    tls: Option<Tls>,
    child: Option<Child>,
}

impl SurrealServer {
    /// An in-memory server on `ws://127.0.0.1:<port>` with a random root user.
    pub fn start() -> Result<SurrealServer, SurrealError> {
        SurrealServerBuilder::default().start()
    }

    /// To keep the data in SurrealKV or serve TLS.
    pub fn builder() -> SurrealServerBuilder {
        SurrealServerBuilder::default()
    }

    /// `ws://127.0.0.1:<port>`, or `wss://localhost:<port>` with TLS: the
    /// store URL idmd takes.
    pub fn url(&self) -> String {
        match self.tls {
            Some(_) => format!("wss://localhost:{}", self.port),
            None => format!("ws://127.0.0.1:{}", self.port),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn root_user(&self) -> &str {
        &self.root_user
    }

    pub fn root_password(&self) -> &str {
        &self.root_password
    }

    /// The CA certificate (PEM) that signed the server's, with TLS.
    pub fn tls_ca(&self) -> Option<&Path> {
        self.tls.as_ref().map(|tls| tls.ca_path.as_path())
    }

    /// The server's directory: `surreal.log` (its output across restarts),
    /// `data/` with SurrealKV, `tls/` with TLS.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What the server wrote so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("surreal.log")).unwrap_or_default()
    }

    /// Whether the server is running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// Kills the server (as a crash would) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server if it runs and starts it again on the same port
    /// (and, with SurrealKV, the same data).
    pub fn restart(&mut self) -> Result<(), SurrealError> {
        self.stop();
        self.spawn_and_wait()
    }

    /// Defines the user `name` with `password` on database `db` of namespace
    /// `ns` (both created if missing), role EDITOR: what idmd signs in as with
    /// `IDM_STORE_AUTH=database`. Names and password must be plain
    /// (letters, digits, `_`, `-`), as a test's are.
    pub fn define_database_user(
        &self,
        ns: &str,
        db: &str,
        name: &str,
        password: &str,
    ) -> Result<(), SurrealError> {
        for (what, value) in [
            ("ns", ns),
            ("db", db),
            ("name", name),
            ("password", password),
        ] {
            assert!(
                !value.is_empty()
                    && value
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'),
                "define_database_user: {what} must be plain letters, digits, _ or -"
            );
        }
        let sql = format!(
            "DEFINE NAMESPACE IF NOT EXISTS `{ns}`; USE NS `{ns}`; \
             DEFINE DATABASE IF NOT EXISTS `{db}`; USE DB `{db}`; \
             DEFINE USER OVERWRITE `{name}` ON DATABASE PASSWORD '{password}' ROLES EDITOR;"
        );
        self.sql(&sql, &format!("the user {name} on {ns}/{db}"))
    }

    /// Runs SurrealQL as root through the HTTP `/sql` endpoint; every
    /// statement must succeed.
    pub fn sql(&self, sql: &str, what: &str) -> Result<(), SurrealError> {
        let (status, body) = self.http("POST", "/sql", sql)?;
        // Every statement's result says "status":"OK"; an error says "ERR".
        if status == 200 && !body.contains("\"ERR\"") {
            return Ok(());
        }
        Err(SurrealError::Refused {
            what: what.to_string(),
            answer: format!("HTTP {status}: {body}"),
        })
    }

    /// One HTTP/1.1 request as root (over TLS when the server serves it);
    /// returns the status code and the body.
    fn http(&self, method: &str, path: &str, body: &str) -> Result<(u16, String), SurrealError> {
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let stream = TcpStream::connect_timeout(&address, Duration::from_secs(2))
            .map_err(io_error(format!("cannot connect to {address}")))?;
        let timeout = Some(Duration::from_secs(30));
        let _ = stream.set_read_timeout(timeout);
        let _ = stream.set_write_timeout(timeout);
        let basic = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", self.root_user, self.root_password));
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost:{port}\r\nAuthorization: Basic {basic}\r\n\
             Accept: application/json\r\nContent-Type: text/plain\r\nContent-Length: {len}\r\n\
             Connection: close\r\n\r\n{body}",
            port = self.port,
            len = body.len()
        );
        let mut answer = Vec::new();
        let context = format!("{method} {path} on {}", self.url());
        match &self.tls {
            None => {
                let mut stream = stream;
                stream
                    .write_all(request.as_bytes())
                    .map_err(io_error(context.clone()))?;
                read_answer(&mut stream, &mut answer).map_err(io_error(context.clone()))?;
            }
            Some(tls) => {
                let config = client_config(&tls.ca_der).map_err(io_error(context.clone()))?;
                let name = rustls::pki_types::ServerName::try_from("localhost")
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
                    .map_err(io_error(context.clone()))?;
                let connection = rustls::ClientConnection::new(Arc::new(config), name)
                    .map_err(|e| io::Error::other(e.to_string()))
                    .map_err(io_error(context.clone()))?;
                let mut stream = rustls::StreamOwned::new(connection, stream);
                stream
                    .write_all(request.as_bytes())
                    .map_err(io_error(context.clone()))?;
                read_answer(&mut stream, &mut answer).map_err(io_error(context.clone()))?;
            }
        }
        let text = String::from_utf8_lossy(&answer).to_string();
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or(0);
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_string())
            .unwrap_or_default();
        Ok((status, body))
    }

    fn spawn_and_wait(&mut self) -> Result<(), SurrealError> {
        let log_path = self.dir.join("surreal.log");
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(io_error(format!("cannot open {}", log_path.display())))?;
        let log_start = log.metadata().map(|m| m.len()).unwrap_or(0);
        let stderr = log
            .try_clone()
            .map_err(io_error(format!("cannot open {}", log_path.display())))?;
        let path = match self.storage {
            Storage::Memory => "memory".to_string(),
            Storage::SurrealKv => format!("surrealkv://{}", self.dir.join("data").display()),
        };
        let mut command = Command::new(&self.binary);
        command
            .arg("start")
            .arg("--no-banner")
            .arg("--bind")
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--log")
            .arg("info")
            .env("SURREAL_USER", &self.root_user)
            .env("SURREAL_PASS", &self.root_password)
            .env_remove("SURREAL_PATH")
            .env_remove("SURREAL_BIND")
            .env_remove("SURREAL_IMPORT_FILE");
        if let Some(tls) = &self.tls {
            command
                .arg("--web-crt")
                .arg(&tls.cert)
                .arg("--web-key")
                .arg(&tls.key);
        }
        let child = command
            .arg(path)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr)
            .spawn()
            .map_err(io_error(format!("cannot run {}", self.binary.display())))?;
        self.child = Some(child);

        let log_since_start = || {
            let mut text = String::new();
            if let Ok(mut file) = File::open(&log_path) {
                use std::io::Seek;
                let _ = file.seek(io::SeekFrom::Start(log_start));
                let _ = file.read_to_string(&mut text);
            }
            text
        };
        let url = self.url();
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut last;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(SurrealError::Exited {
                    url,
                    status: status.to_string(),
                    log: log_since_start(),
                });
            }
            match self.http("GET", "/health", "") {
                Ok((200, _)) => return Ok(()),
                Ok((status, body)) => last = format!("/health answered {status}: {body}"),
                Err(e) => last = e.to_string(),
            }
            if Instant::now() >= deadline {
                self.stop();
                return Err(SurrealError::NotReady {
                    url,
                    after: READY_TIMEOUT,
                    last,
                    log: log_since_start(),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for SurrealServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `idm-surreal-server`: `$IDM_SURREAL_BIN`, else
/// `$CARGO_TARGET_DIR/surreal/debug/idm-surreal-server` (`CARGO_TARGET_DIR`
/// defaulting to `~/.cache/idm-target`). Panics with the command that builds
/// it when it is missing: a test cannot run without it.
pub fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("IDM_SURREAL_BIN") {
        return PathBuf::from(path);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache/idm-target"))
        })
        .unwrap_or_else(|| PathBuf::from("target"));
    let path = target.join("surreal/debug/idm-surreal-server");
    #[allow(clippy::panic)]
    if !path.is_file() {
        panic!(
            "{} is missing: build SurrealDB's server for the tests with `{BUILD_COMMAND}` \
             (scripts/test does), or point IDM_SURREAL_BIN at one",
            path.display()
        );
    }
    path
}

fn read_answer(stream: &mut impl Read, answer: &mut Vec<u8>) -> io::Result<()> {
    match stream.take(MAX_ANSWER).read_to_end(answer) {
        Ok(_) => Ok(()),
        // A TLS peer that closes without close_notify: the answer is complete.
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && !answer.is_empty() => Ok(()),
        Err(e) => Err(e),
    }
}

fn client_config(ca_der: &[u8]) -> io::Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(ca_der.to_vec()))
        .map_err(|e| io::Error::other(e.to_string()))?;
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| io::Error::other(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth())
}

/// A random u64 from the standard library's per-process random keys.
fn random_u64() -> u64 {
    let mut hasher = std::hash::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    hasher.finish()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn a_memory_server_answers_defines_a_user_and_is_killed_on_drop() {
        let server = SurrealServer::start().unwrap();
        assert_eq!(server.url(), format!("ws://127.0.0.1:{}", server.port()));
        server
            .define_database_user("idm", "idm", "idmd", "pw-1")
            .unwrap();
        let wrong = SurrealServer {
            dir: server.dir.clone(),
            port: server.port,
            storage: Storage::Memory,
            root_user: server.root_user.clone(),
            root_password: "wrong".into(),
            binary: server.binary.clone(),
            tls: None,
            child: None,
        };
        assert!(matches!(
            wrong.sql("INFO FOR ROOT;", "root info"),
            Err(SurrealError::Refused { .. })
        ));
        std::mem::forget(wrong);
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, server.port()));
        let dir = server.dir().to_path_buf();
        drop(server);
        assert!(!dir.exists());
        assert!(TcpStream::connect(address).is_err(), "killed on drop");
    }

    #[test]
    fn a_surrealkv_server_keeps_its_data_across_a_restart() {
        let mut server = SurrealServer::builder().surrealkv().start().unwrap();
        server
            .sql(
                "DEFINE NAMESPACE kit; USE NS kit; DEFINE DATABASE kit; USE DB kit; CREATE thing:one SET n = 1;",
                "a record",
            )
            .unwrap();
        server.restart().unwrap();
        let (status, body) = server
            .http(
                "POST",
                "/sql",
                "USE NS kit; USE DB kit; SELECT n FROM thing:one;",
            )
            .unwrap();
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("\"n\":1"), "{body}");
    }

    #[test]
    fn a_tls_server_answers_with_its_ca() {
        let server = SurrealServer::builder().tls().start().unwrap();
        assert_eq!(server.url(), format!("wss://localhost:{}", server.port()));
        assert!(server.tls_ca().unwrap().is_file());
        server.define_database_user("idm", "idm", "u", "p").unwrap();
    }
}
