//! Warnings about how an LDAP connector reaches its directory: a password
//! sent in clear to another host, or TLS that checks no certificate. Decided
//! by a pure function; logged once per connector per process (again when the
//! connector's risks change), naming the connector and never a value.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{LazyLock, Mutex};

use serde_json::{Map, Value};

/// A risk in an LDAP connector's transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Risk {
    /// A simple bind with a password over plain `ldap://` (no StartTLS) to a
    /// host that is not this one.
    PasswordInClear,
    /// TLS (ldaps:// or StartTLS) with `tlsVerify: false`: anyone in the
    /// path can pose as the directory.
    UnverifiedTls,
}

impl Risk {
    fn message(self) -> &'static str {
        match self {
            Risk::PasswordInClear => {
                "LDAP connector binds with a password over plain ldap:// to a non-loopback host: \
                 the password crosses the network in clear; use ldaps:// or \"startTls\": true"
            }
            Risk::UnverifiedTls => {
                "LDAP connector has \"tlsVerify\": false: its TLS checks no certificate, so \
                 anyone in the path can pose as the directory; trust it with \"tlsCaFile\" instead"
            }
        }
    }
}

/// What an LDAP connector's settings put at risk. `binds_with_password`: a
/// `bindDn` and a non-empty `bindPassword` (an anonymous bind sends none).
pub fn risks(url: &str, start_tls: bool, tls_verify: bool, binds_with_password: bool) -> Vec<Risk> {
    let lower = url.trim().to_ascii_lowercase();
    let ldaps = lower.starts_with("ldaps://");
    let tls = ldaps || start_tls;
    let mut risks = Vec::new();
    if !tls && binds_with_password && !is_loopback_host(&lower) {
        risks.push(Risk::PasswordInClear);
    }
    if tls && !tls_verify {
        risks.push(Risk::UnverifiedTls);
    }
    risks
}

/// The host of `ldap://host:port/...` is this machine: `localhost`, 127/8,
/// `[::1]`. Anything unparsable counts as another host.
fn is_loopback_host(url: &str) -> bool {
    let Some((_, rest)) = url.split_once("://") else {
        return false;
    };
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    // user@host is not an LDAP URL form, but never mistake it for a host.
    let authority = authority.rsplit('@').next().unwrap_or_default();
    let host = if let Some(bracketed) = authority.strip_prefix('[') {
        bracketed.split(']').next().unwrap_or_default()
    } else {
        authority.split(':').next().unwrap_or_default()
    };
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The risks last logged for each connector, so each is logged once.
static LOGGED: LazyLock<Mutex<HashMap<String, Vec<Risk>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// Logs each of `risks` for `connector`, unless exactly these were logged
/// for it already in this process.
pub fn warn_once(connector: &str, risks: Vec<Risk>) {
    let Ok(mut logged) = LOGGED.lock() else {
        return;
    };
    if logged.get(connector) == Some(&risks) {
        return;
    }
    for risk in &risks {
        tracing::warn!(connector, risk = ?risk, "{}", risk.message());
    }
    logged.insert(connector.to_string(), risks);
}

/// The risks of a connector document as stored or sent: `$env` references
/// are resolved (only to read the URL and the flags); any non-empty
/// `bindPassword`, plain or sealed, counts as a password.
pub fn risks_of_document(body: &Map<String, Value>) -> Vec<Risk> {
    let mut hidden = Vec::new();
    let resolved = crate::config::resolve_env(&Value::Object(body.clone()), &mut hidden);
    let Some(body) = resolved.as_object() else {
        return Vec::new();
    };
    let Some(url) = body.get("url").and_then(Value::as_str) else {
        return Vec::new();
    };
    let flag =
        |name: &str, default: bool| super::bool_field(body, name, default).unwrap_or(default);
    let present = |name: &str| match body.get(name) {
        Some(Value::String(text)) => !text.trim().is_empty(),
        Some(Value::Object(_)) => true,
        _ => false,
    };
    risks(
        url,
        flag("startTls", false),
        flag("tlsVerify", true),
        present("bindDn") && present("bindPassword"),
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_password_in_clear_to_another_host_is_a_risk() {
        assert_eq!(
            risks("ldap://ldap.example.org", false, true, true),
            [Risk::PasswordInClear]
        );
        assert_eq!(
            risks("LDAP://192.0.2.1:389/dc=x", false, true, true),
            [Risk::PasswordInClear]
        );
        // StartTLS or ldaps:// protect it; no password, nothing to lose.
        assert!(risks("ldap://ldap.example.org", true, true, true).is_empty());
        assert!(risks("ldaps://ldap.example.org", false, true, true).is_empty());
        assert!(risks("ldap://ldap.example.org", false, true, false).is_empty());
    }

    #[test]
    fn loopback_hosts_are_not_a_risk() {
        for url in [
            "ldap://127.0.0.1:3389",
            "ldap://127.0.0.2",
            "ldap://localhost:389/",
            "ldap://[::1]:389",
        ] {
            assert!(risks(url, false, true, true).is_empty(), "{url}");
        }
        for url in [
            "ldap://[::2]:389",
            "ldap://localhost.example.org",
            "ldap://",
        ] {
            assert_eq!(
                risks(url, false, true, true),
                [Risk::PasswordInClear],
                "{url}"
            );
        }
    }

    #[test]
    fn tls_without_verification_is_a_risk_on_any_host() {
        assert_eq!(
            risks("ldaps://127.0.0.1:636", false, false, false),
            [Risk::UnverifiedTls]
        );
        assert_eq!(
            risks("ldap://ldap.example.org", true, false, true),
            [Risk::UnverifiedTls]
        );
        // Plain ldap:// has no TLS to verify: only the clear password counts.
        assert_eq!(
            risks("ldap://ldap.example.org", false, false, true),
            [Risk::PasswordInClear]
        );
    }

    #[test]
    fn documents_count_any_password_and_read_their_flags_loosely() {
        let doc = |v: serde_json::Value| risks_of_document(v.as_object().unwrap());
        assert_eq!(
            doc(json!({"url": "ldap://ldap.example.org", "bindDn": "cn=a",
                        "bindPassword": {"$sealed": "…"}})),
            [Risk::PasswordInClear]
        );
        assert!(
            doc(json!({"url": "ldap://ldap.example.org", "bindDn": "cn=a",
                        "bindPassword": "pw", "startTls": "true"}))
            .is_empty()
        );
        assert!(doc(json!({"url": "ldap://ldap.example.org", "bindPassword": "pw"})).is_empty());
        assert_eq!(
            doc(json!({"url": "ldaps://ldap.example.org", "tlsVerify": "false"})),
            [Risk::UnverifiedTls]
        );
        assert!(doc(json!({"url": 7})).is_empty());
    }

    #[test]
    fn each_connector_is_warned_once_until_its_risks_change() {
        let key = "transport-test-connector";
        warn_once(key, vec![Risk::PasswordInClear]);
        let logged = || LOGGED.lock().unwrap().get(key).cloned();
        assert_eq!(logged(), Some(vec![Risk::PasswordInClear]));
        warn_once(key, vec![]);
        assert_eq!(logged(), Some(vec![]));
    }
}
