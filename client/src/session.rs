//! `idmctl login`, `logout`, `whoami`, and the session kept between them:
//! `<config dir>/idm/session.json` (`$XDG_CONFIG_HOME/idm` or `~/.config/idm`
//! on Linux), directory 0700 and file 0600, holding `{endpoint, username,
//! token, expires}`. Later commands use its token when neither `--token`
//! nor `IDM_TOKEN` is given and their endpoint is the one it was made for.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use idm_proto::v1::{CallerKind, LoginRequest, LogoutRequest, Scope, WhoAmIRequest};
use serde_json::{Value as Json, json};
use tonic::Code;

use crate::connect::Context;
use crate::input::read_secret_line;
use crate::output::{CliError, Format, note, print_json, print_line, time_json};

/// A session as kept on disk.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub endpoint: String,
    pub username: String,
    pub token: String,
    /// RFC 3339; the absolute end.
    pub expires: Option<String>,
}

/// `<config dir>/idm/session.json`; `None` when there is no config directory.
pub fn path() -> Option<PathBuf> {
    dirs::config_dir().map(|dir| dir.join("idm").join("session.json"))
}

/// Endpoints compare without a trailing slash.
fn same_endpoint(a: &str, b: &str) -> bool {
    a.trim_end_matches('/') == b.trim_end_matches('/')
}

impl Stored {
    fn from_json(value: &Json) -> Option<Stored> {
        let text = |key: &str| value.get(key)?.as_str().map(String::from);
        Some(Stored {
            endpoint: text("endpoint")?,
            username: text("username")?,
            token: text("token")?,
            expires: text("expires"),
        })
    }

    fn to_json(&self) -> Json {
        json!({
            "endpoint": self.endpoint,
            "username": self.username,
            "token": self.token,
            "expires": self.expires,
        })
    }

    /// The stored session, if there is a readable one.
    pub fn load() -> Option<Stored> {
        let text = std::fs::read_to_string(path()?).ok()?;
        Stored::from_json(&serde_json::from_str(&text).ok()?)
    }

    /// Whether it is past its absolute end (as far as this machine's clock says).
    fn expired(&self) -> bool {
        let Some(end) = self
            .expires
            .as_deref()
            .and_then(|t| t.parse::<prost_types::Timestamp>().ok())
        else {
            return false;
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            .unwrap_or_default();
        end.seconds <= now
    }

    /// Its token, for a command against `endpoint`.
    pub fn token_for(&self, endpoint: &str) -> Option<String> {
        (same_endpoint(&self.endpoint, endpoint) && !self.expired()).then(|| self.token.clone())
    }

    /// Writes the session file: directory 0700, file created 0600.
    fn save(&self) -> Result<PathBuf, CliError> {
        let path = path().ok_or_else(|| {
            CliError::input(
                "no config directory to keep the session in (set HOME or XDG_CONFIG_HOME)",
            )
        })?;
        let failed = |e: std::io::Error| {
            CliError::input(format!("keeping the session in {}: {e}", path.display()))
        };
        let dir = path.parent().unwrap_or(&path);
        let mut text = self.to_json().to_string();
        text.push('\n');
        write_private(dir, &path, text.as_bytes()).map_err(failed)?;
        Ok(path)
    }
}

#[cfg(unix)]
fn write_private(
    dir: &std::path::Path,
    path: &std::path::Path,
    bytes: &[u8],
) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    // A file left by someone else with wider permissions is replaced, not reused.
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(not(unix))]
fn write_private(
    dir: &std::path::Path,
    path: &std::path::Path,
    bytes: &[u8],
) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(path, bytes)
}

/// A password: from the terminal without echo (asked twice when `confirm`),
/// else the first line of stdin. Never from the command line.
pub fn read_password(prompt: &str, confirm: bool) -> Result<String, CliError> {
    if !std::io::stdin().is_terminal() {
        return read_secret_line(prompt);
    }
    let ask = |prompt: &str| {
        rpassword::prompt_password(prompt)
            .map_err(|e| CliError::input(format!("reading the password: {e}")))
    };
    let password = ask(prompt)?;
    if confirm && ask("Again: ")? != password {
        return Err(CliError::input("the two passwords differ"));
    }
    Ok(password)
}

/// The account name: the argument, IDM_USERNAME, or asked on the terminal.
fn username(given: Option<String>) -> Result<String, CliError> {
    if let Some(name) = given
        .or_else(|| std::env::var("IDM_USERNAME").ok())
        .filter(|n| !n.is_empty())
    {
        return Ok(name);
    }
    if !std::io::stdin().is_terminal() {
        return Err(CliError::input(
            "which account? `idmctl login NAME` or IDM_USERNAME (stdin holds the password)",
        ));
    }
    let mut stderr = std::io::stderr().lock();
    let _ = write!(stderr, "Username: ");
    let _ = stderr.flush();
    drop(stderr);
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| CliError::input(format!("reading the username: {e}")))?;
    Ok(line.trim().to_string())
}

pub fn scope_name(scope: i32) -> &'static str {
    match Scope::try_from(scope) {
        Ok(Scope::Read) => "read",
        Ok(Scope::Scim) => "scim",
        Ok(Scope::Admin) => "admin",
        Ok(Scope::VerifyPassword) => "verify-password",
        Ok(Scope::Unspecified) | Err(_) => "none",
    }
}

fn minutes(d: Option<&prost_types::Duration>) -> String {
    match d.map(|d| d.seconds) {
        Some(s) if s % 60 == 0 => format!("{}m", s / 60),
        Some(s) => format!("{s}s"),
        None => "none".into(),
    }
}

pub async fn login(ctx: &Context, name: Option<String>) -> Result<(), CliError> {
    let username = username(name)?;
    let password = read_password("Password: ", false)?;
    let mut client = ctx.connect().await?.auth();
    let reply = client
        .login(LoginRequest {
            username: username.clone(),
            password,
            client_address: String::new(),
        })
        .await?
        .into_inner();
    let expires = reply.expire_time.as_ref().map(|t| t.to_string());
    let stored = Stored {
        endpoint: ctx.endpoint.clone(),
        username: reply.username.clone(),
        token: reply.session_token,
        expires: expires.clone(),
    };
    let path = stored.save()?;
    match ctx.format {
        Format::Json => print_json(&json!({
            "username": reply.username,
            "scope": scope_name(reply.scope),
            "expireTime": expires,
            "idleTimeoutSeconds": reply.idle_timeout.map(|d| d.seconds),
            "sessionFile": path.display().to_string(),
        })),
        Format::Table => {
            print_line(&format!(
                "logged in to {} as {} (scope {})",
                ctx.endpoint,
                reply.username,
                scope_name(reply.scope)
            ))?;
            note(&format!(
                "The session ends after {} without a call, and at {} at the latest; kept in {}.",
                minutes(reply.idle_timeout.as_ref()),
                expires.as_deref().unwrap_or("no set time"),
                path.display()
            ));
            Ok(())
        }
    }
}

/// Ends the stored session at its endpoint and deletes the file, whether
/// idmd still knew the session or not.
pub async fn logout(ctx: &Context, stored: Option<Stored>) -> Result<(), CliError> {
    let Some(stored) = stored else {
        let where_ =
            path().map_or_else(|| "no config directory".into(), |p| p.display().to_string());
        note(&format!("not logged in (no session in {where_})"));
        return Ok(());
    };
    let revoked = match ctx.connect().await {
        Ok(connection) => connection
            .auth()
            .logout(LogoutRequest {})
            .await
            .map(|_| ())
            .map_err(CliError::from),
        Err(e) => Err(e),
    };
    if let Some(path) = path() {
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(CliError::input(format!("removing {}: {e}", path.display())));
            }
            _ => {}
        }
        note(&format!("removed {}", path.display()));
    }
    match revoked {
        Ok(()) => print_line(&format!(
            "logged out of {} ({})",
            stored.endpoint, stored.username
        )),
        Err(CliError::Status(s)) if s.code() == Code::Unauthenticated => print_line(&format!(
            "the session of {} at {} had already ended",
            stored.username, stored.endpoint
        )),
        Err(e) => Err(e),
    }
}

pub async fn whoami(ctx: &Context) -> Result<(), CliError> {
    let mut client = ctx.connect().await?.auth();
    let me = client.who_am_i(WhoAmIRequest {}).await?.into_inner();
    let session = me.kind == i32::from(CallerKind::Session);
    match ctx.format {
        Format::Json => print_json(&json!({
            "kind": if session { "session" } else { "token" },
            "username": me.username,
            "tokenId": me.token_id,
            "scope": scope_name(me.scope),
            "expireTime": time_json(me.expire_time.as_ref()),
            "idleTimeoutSeconds": me.idle_timeout.map(|d| d.seconds),
        })),
        Format::Table if session => print_line(&format!(
            "{} (session {}, scope {}; ends after {} idle, at {} at the latest)",
            me.username,
            me.token_id,
            scope_name(me.scope),
            minutes(me.idle_timeout.as_ref()),
            me.expire_time
                .map_or_else(|| "no set time".into(), |t| t.to_string())
        )),
        Format::Table => print_line(&format!(
            "token {} (scope {})",
            me.token_id,
            scope_name(me.scope)
        )),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn stored(expires: Option<&str>) -> Stored {
        Stored {
            endpoint: "http://127.0.0.1:50051".into(),
            username: "alice".into(),
            token: "idm_ab_cd".into(),
            expires: expires.map(String::from),
        }
    }

    #[test]
    fn a_session_is_used_only_for_its_endpoint_until_it_expires() {
        let live = stored(Some("2999-01-01T00:00:00Z"));
        assert_eq!(
            live.token_for("http://127.0.0.1:50051/").as_deref(),
            Some("idm_ab_cd")
        );
        assert_eq!(live.token_for("http://127.0.0.1:50052"), None);
        assert_eq!(
            stored(Some("2001-01-01T00:00:00Z")).token_for(&live.endpoint),
            None
        );
        assert_eq!(Stored::from_json(&live.to_json()), Some(live));
        assert_eq!(Stored::from_json(&json!({"endpoint": "x"})), None);
    }
}
