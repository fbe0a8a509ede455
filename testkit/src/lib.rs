//! Throwaway servers for idm's tests.
//!
//! [`Slapd`] is a real OpenLDAP server in a fresh temporary directory, on a
//! free loopback port, built by `scripts/slapd-sandbox` (which also serves a
//! person trying the LDAP sample by hand, so tests and people get the same
//! directory). It is killed and its directory removed when dropped.
//!
//! Everything here is blocking std code, so it serves plain and async tests
//! alike: calling [`Slapd::start`] from a `#[tokio::test]` blocks that thread
//! for the ~0.1 s slapd takes to start, which no test notices.
//!
//! [`pki::TestCa`] makes the certificates TLS tests need (slapd's own too).
//!
//! ```no_run
//! let slapd = idm_testkit::Slapd::start()?;
//! // ldap://127.0.0.1:<port>, cn=admin,dc=example,dc=org / admin
//! println!("{} {} {}", slapd.url(), slapd.admin_dn(), slapd.admin_password());
//! # Ok::<(), idm_testkit::SlapdError>(())
//! ```

pub mod pki;
pub mod surreal;

pub use surreal::{SurrealError, SurrealServer, SurrealServerBuilder};

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long slapd may take to answer a bind after it was spawned.
const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// How often a port taken between picking it and slapd binding it is retried.
const PORT_ATTEMPTS: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum SlapdError {
    #[error("slapd is not installed (on Debian/Ubuntu: apt-get install -y slapd ldap-utils): {0}")]
    NotInstalled(String),
    #[error("scripts/slapd-sandbox init {dir} failed ({status}): {output}")]
    Init {
        dir: PathBuf,
        status: String,
        output: String,
    },
    #[error("slapd on {url} exited ({status}) before answering; its log:\n{log}")]
    Exited {
        url: String,
        status: String,
        log: String,
    },
    #[error(
        "slapd on {url} did not accept the admin bind within {after:?} ({last}); its log:\n{log}"
    )]
    NotReady {
        url: String,
        after: Duration,
        last: String,
        log: String,
    },
    #[error("slapd sandbox: {context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

fn io_error(context: impl Into<String>) -> impl FnOnce(io::Error) -> SlapdError {
    let context = context.into();
    move |source| SlapdError::Io { context, source }
}

/// What [`SlapdBuilder::start`] creates.
#[derive(Debug, Clone)]
pub struct SlapdBuilder {
    base_dn: String,
    admin_password: String,
    size_limit: Option<u32>,
    tls: bool,
    durable: bool,
    log_operations: bool,
}

impl Default for SlapdBuilder {
    fn default() -> Self {
        SlapdBuilder {
            base_dn: "dc=example,dc=org".into(),
            admin_password: "admin".into(),
            size_limit: None,
            tls: false,
            durable: false,
            log_operations: false,
        }
    }
}

impl SlapdBuilder {
    /// The suffix of the one database (default `dc=example,dc=org`); it must
    /// start with `dc=`.
    pub fn base_dn(mut self, base_dn: &str) -> Self {
        self.base_dn = base_dn.into();
        self
    }

    /// The password of `cn=admin,<base>` (default `admin`).
    pub fn admin_password(mut self, password: &str) -> Self {
        self.admin_password = password.into();
        self
    }

    /// At most `limit` entries per search for every bind but the admin's
    /// (which slapd never limits), unless the search pages its results with
    /// the Simple Paged Results control (which may then return any number):
    /// how Active Directory's MaxPageSize behaves. Default: no limit.
    pub fn size_limit(mut self, limit: u32) -> Self {
        self.size_limit = Some(limit);
        self
    }

    /// A certificate for `localhost` and `127.0.0.1` signed by a CA of the
    /// sandbox's own ([`Slapd::tls_ca`]), StartTLS on [`Slapd::url`] and an
    /// `ldaps://` listener on [`Slapd::ldaps_url`].
    pub fn tls(mut self) -> Self {
        self.tls = true;
        self
    }

    /// Writes synced to disk on every commit, as a production directory
    /// does (back-mdb's default). The sandbox skips the sync by default,
    /// which makes writes several times faster; benchmarks that compare
    /// against a real directory want this.
    pub fn durable(mut self) -> Self {
        self.durable = true;
        self
    }

    /// slapd logs every operation it serves (`-d stats`), which
    /// [`Slapd::operations`] reads back: what tests count to prove a change
    /// reached the directory once.
    pub fn log_operations(mut self) -> Self {
        self.log_operations = true;
        self
    }

    /// Creates the directory in a fresh temporary directory and starts slapd
    /// on a free loopback port; returns once the admin can bind.
    pub fn start(self) -> Result<Slapd, SlapdError> {
        let dir = fresh_dir()?;
        let mut slapd = Slapd {
            dir,
            port: 0,
            ldaps_port: None,
            base_dn: self.base_dn.clone(),
            admin_dn: format!("cn=admin,{}", self.base_dn),
            admin_password: self.admin_password.clone(),
            child: None,
            log_operations: self.log_operations,
        };
        // From here on, Drop removes the directory whatever fails.
        slapd.init(self.size_limit, self.tls, self.durable)?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            slapd.port = free_port().map_err(io_error("cannot find a free loopback port"))?;
            if self.tls {
                slapd.ldaps_port =
                    Some(free_port().map_err(io_error("cannot find a free loopback port"))?);
            }
            match slapd.spawn_and_wait() {
                // Someone took the port between our probe and slapd's bind.
                Err(SlapdError::Exited { log, .. })
                    if attempt < PORT_ATTEMPTS && log.contains("Address already in use") => {}
                other => return other.map(|()| slapd),
            }
        }
    }
}

/// A running throwaway slapd. Killed, and its directory removed, on drop.
#[derive(Debug)]
pub struct Slapd {
    dir: PathBuf,
    port: u16,
    ldaps_port: Option<u16>,
    base_dn: String,
    admin_dn: String,
    admin_password: String,
    child: Option<Child>,
    log_operations: bool,
}

impl Slapd {
    /// A fresh directory `dc=example,dc=org` with admin
    /// `cn=admin,dc=example,dc=org` / `admin`, running on a free port.
    pub fn start() -> Result<Slapd, SlapdError> {
        SlapdBuilder::default().start()
    }

    /// To choose the base DN, the admin password or a size limit.
    pub fn builder() -> SlapdBuilder {
        SlapdBuilder::default()
    }

    /// `ldap://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `ldaps://127.0.0.1:<port>`, when started with [`SlapdBuilder::tls`].
    pub fn ldaps_url(&self) -> Option<String> {
        self.ldaps_port
            .map(|port| format!("ldaps://127.0.0.1:{port}"))
    }

    /// The certificate (PEM) of the CA that signed the server's, for
    /// clients to trust, when started with [`SlapdBuilder::tls`].
    pub fn tls_ca(&self) -> Option<PathBuf> {
        self.ldaps_port.map(|_| self.dir.join("tls/ca.pem"))
    }

    pub fn base_dn(&self) -> &str {
        &self.base_dn
    }

    /// `cn=admin,<base>`: the rootdn, which may read and write everything
    /// (userPassword included) and is never size-limited.
    pub fn admin_dn(&self) -> &str {
        &self.admin_dn
    }

    pub fn admin_password(&self) -> &str {
        &self.admin_password
    }

    /// The sandbox directory: `config/` (cn=config), `data/` (the mdb
    /// database), `slapd.log` (slapd's stderr across restarts).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether slapd is running (it was started, not stopped, and has not
    /// exited).
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// Kills slapd (as a crash would) and waits for it; the data stays, and
    /// [`Slapd::restart`] serves it again on the same port.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops slapd if it runs, then starts it again on the same port and
    /// data; returns once the admin can bind.
    pub fn restart(&mut self) -> Result<(), SlapdError> {
        self.stop();
        self.spawn_and_wait()
    }

    /// What slapd wrote to stderr so far (start-up messages and errors).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("slapd.log")).unwrap_or_default()
    }

    /// The operations slapd served of one kind (`ADD`, `MOD`, `DEL`,
    /// `MODRDN`), as the DNs they named, in order, across restarts; only
    /// with [`SlapdBuilder::log_operations`].
    pub fn operations(&self, kind: &str) -> Vec<String> {
        let marker = format!(" {kind} dn=\"");
        self.log()
            .lines()
            .filter_map(|line| {
                let at = line.find(&marker)?;
                let dn = &line[at + marker.len()..];
                Some(dn.strip_suffix('"').unwrap_or(dn).to_string())
            })
            .collect()
    }

    fn init(&self, size_limit: Option<u32>, tls: bool, durable: bool) -> Result<(), SlapdError> {
        let mut command = Command::new(sandbox_script());
        command
            .arg("init")
            .arg(&self.dir)
            .arg(&self.base_dn)
            .arg(&self.admin_password)
            .stdin(Stdio::null());
        if let Some(limit) = size_limit {
            command.env("SLAPD_SANDBOX_SIZE_LIMIT", limit.to_string());
        }
        if tls {
            // Made here (rcgen), so the sandbox needs no openssl command.
            let dir = self.dir.join("tls");
            std::fs::create_dir(&dir)
                .map_err(io_error(format!("cannot create {}", dir.display())))?;
            let ca = pki::TestCa::new("idm slapd-sandbox CA");
            ca.write_ca(&dir);
            ca.write_issued(&dir, "server", &["localhost", "127.0.0.1"]);
            command.env("SLAPD_SANDBOX_TLS", "1");
        }
        if durable {
            command.env("SLAPD_SANDBOX_DURABLE", "1");
        }
        let output = command.output().map_err(io_error(format!(
            "cannot run {}",
            sandbox_script().display()
        )))?;
        if output.status.success() {
            return Ok(());
        }
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        if text.contains("not installed") {
            return Err(SlapdError::NotInstalled(text.trim().to_string()));
        }
        Err(SlapdError::Init {
            dir: self.dir.clone(),
            status: output.status.to_string(),
            output: text.trim().to_string(),
        })
    }

    fn spawn_and_wait(&mut self) -> Result<(), SlapdError> {
        let log_path = self.dir.join("slapd.log");
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(io_error(format!("cannot open {}", log_path.display())))?;
        let log_start = log.metadata().map(|m| m.len()).unwrap_or(0);
        let stderr = log
            .try_clone()
            .map_err(io_error(format!("cannot open {}", log_path.display())))?;
        let url = self.url();
        let urls = match self.ldaps_url() {
            Some(ldaps) => format!("{url} {ldaps}"),
            None => url.clone(),
        };
        // `run` execs slapd, so the child is slapd itself and kill() reaches it.
        let child = Command::new(sandbox_script())
            .arg("run")
            .arg(&self.dir)
            .arg(&urls)
            .env(
                "SLAPD_SANDBOX_DEBUG",
                if self.log_operations { "stats" } else { "none" },
            )
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr)
            .spawn()
            .map_err(io_error(format!(
                "cannot run {}",
                sandbox_script().display()
            )))?;
        self.child = Some(child);

        let log_since_start = || {
            let mut text = String::new();
            if let Ok(mut file) = File::open(&log_path) {
                let _ = file.seek(SeekFrom::Start(log_start));
                let _ = file.read_to_string(&mut text);
            }
            text
        };
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut last;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                let log = log_since_start();
                if log.contains("not installed") {
                    return Err(SlapdError::NotInstalled(log.trim().to_string()));
                }
                return Err(SlapdError::Exited {
                    url,
                    status: status.to_string(),
                    log,
                });
            }
            match simple_bind(address, &self.admin_dn, &self.admin_password) {
                Ok(0) => return Ok(()),
                Ok(code) => last = format!("the admin bind returned result code {code}"),
                Err(e) => last = e.to_string(),
            }
            if Instant::now() >= deadline {
                self.stop();
                return Err(SlapdError::NotReady {
                    url,
                    after: READY_TIMEOUT,
                    last,
                    log: log_since_start(),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `scripts/slapd-sandbox` of this workspace: found from the working
/// directory first (cargo runs tests and benches in their package's
/// directory), because cargo reuses a built testkit when the work tree moves
/// and the path baked in at build time may be gone.
pub fn sandbox_script() -> PathBuf {
    let relative = Path::new("scripts/slapd-sandbox");
    std::env::current_dir()
        .ok()
        .and_then(|dir| {
            dir.ancestors()
                .map(|d| d.join(relative))
                .find(|candidate| candidate.is_file())
        })
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join(relative)
        })
}

fn fresh_dir() -> Result<PathBuf, SlapdError> {
    let dir = fresh_dir_named("slapd");
    dir.map_err(io_error("cannot create a temporary directory"))
}

/// A new directory `idm-<label>-<pid>-<n>-<nanos>` under the temporary directory.
pub(crate) fn fresh_dir_named(label: &str) -> io::Result<PathBuf> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!(
        "idm-{label}-{}-{}-{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir(&dir)?;
    Ok(dir)
}

/// A loopback port nobody listens on right now.
pub(crate) fn free_port() -> io::Result<u16> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
}

/// A simple bind with OpenLDAP's `ldapwhoami` (ldap-utils, which the tests
/// use anyway); returns the LDAP result code (0: success, 49: bad
/// credentials). A server that does not answer is an error.
pub fn simple_bind(address: SocketAddr, dn: &str, password: &str) -> io::Result<u8> {
    let output = Command::new("ldapwhoami")
        .args([
            "-x",
            "-o",
            "nettimeout=2",
            "-H",
            &format!("ldap://{address}"),
        ])
        .args(["-D", dn, "-w", password])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("ldapwhoami: {e} (on Debian/Ubuntu: apt-get install -y ldap-utils)"),
            )
        })?;
    match output.status.code().and_then(|c| u8::try_from(c).ok()) {
        // 255 is the tools' -1: the server could not be reached.
        Some(code) if code != 255 => Ok(code),
        _ => Err(io::Error::new(
            io::ErrorKind::ConnectionRefused,
            String::from_utf8_lossy(&output.stderr).trim().to_string(),
        )),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::TcpStream;

    #[test]
    fn slapd_starts_stops_restarts_with_its_data_and_cleans_up() {
        let mut slapd = Slapd::builder()
            .base_dn("dc=kit,dc=test")
            .admin_password("s3cret pass")
            .start()
            .unwrap();
        assert_eq!(slapd.url(), format!("ldap://127.0.0.1:{}", slapd.port()));
        assert_eq!(slapd.admin_dn(), "cn=admin,dc=kit,dc=test");
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, slapd.port()));
        assert_eq!(
            simple_bind(address, slapd.admin_dn(), "s3cret pass").unwrap(),
            0
        );
        assert_eq!(simple_bind(address, slapd.admin_dn(), "wrong").unwrap(), 49);

        // An entry written now must survive the restart.
        let ldif = "dn: uid=kit,dc=kit,dc=test\nobjectClass: inetOrgPerson\nuid: kit\ncn: Kit\nsn: Test\nuserPassword: kit-pw\n";
        let mut ldapadd = Command::new("ldapadd")
            .args(["-x", "-H", &slapd.url(), "-D", slapd.admin_dn(), "-w"])
            .arg(slapd.admin_password())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("ldapadd (apt-get install -y ldap-utils)");
        ldapadd
            .stdin
            .take()
            .unwrap()
            .write_all(ldif.as_bytes())
            .unwrap();
        assert!(ldapadd.wait().unwrap().success());
        assert_eq!(
            simple_bind(address, "uid=kit,dc=kit,dc=test", "kit-pw").unwrap(),
            0
        );

        slapd.stop();
        assert!(!slapd.is_running());
        assert!(
            TcpStream::connect(address).is_err(),
            "nothing listens after stop"
        );

        slapd.restart().unwrap();
        assert!(slapd.is_running());
        assert_eq!(
            simple_bind(address, "uid=kit,dc=kit,dc=test", "kit-pw").unwrap(),
            0
        );
        slapd.restart().unwrap();
        assert_eq!(
            simple_bind(address, "uid=kit,dc=kit,dc=test", "kit-pw").unwrap(),
            0
        );

        let dir = slapd.dir().to_path_buf();
        assert!(dir.join("data").is_dir());
        drop(slapd);
        assert!(!dir.exists(), "the sandbox directory is removed on drop");
        assert!(
            TcpStream::connect(address).is_err(),
            "slapd is killed on drop"
        );
    }

    #[test]
    fn a_missing_slapd_is_reported_with_the_install_command() {
        let dir = fresh_dir().unwrap();
        let output = Command::new(sandbox_script())
            .arg("init")
            .arg(&dir)
            .env("SLAPD_BIN", "/nonexistent/slapd")
            .output()
            .unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("slapd is not installed")
                && stderr.contains("apt-get install -y slapd ldap-utils"),
            "{stderr}"
        );
    }

    #[test]
    fn a_tls_sandbox_serves_ldaps_and_starttls_with_its_certificate() {
        let slapd = Slapd::builder().tls().start().unwrap();
        let cert = slapd.tls_ca().unwrap();
        assert!(
            std::fs::read_to_string(&cert)
                .unwrap()
                .contains("BEGIN CERTIFICATE")
        );
        let whoami = |url: &str, starttls: bool| {
            let mut command = Command::new("ldapwhoami");
            command.env("LDAPTLS_CACERT", &cert).args(["-x", "-H", url]);
            if starttls {
                command.arg("-ZZ");
            }
            command
                .args(["-D", slapd.admin_dn(), "-w", slapd.admin_password()])
                .output()
                .unwrap()
                .status
                .success()
        };
        assert!(whoami(&slapd.ldaps_url().unwrap(), false));
        assert!(whoami(&slapd.url(), true));
        assert_eq!(Slapd::start().unwrap().ldaps_url(), None);
    }

    #[test]
    fn two_sandboxes_run_side_by_side() {
        let a = Slapd::start().unwrap();
        let b = Slapd::start().unwrap();
        assert_ne!(a.port(), b.port());
        assert_ne!(a.dir(), b.dir());
    }
}
