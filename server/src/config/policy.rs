//! What a conf document sent over the API may refer to. A conf file on disk
//! is the operator's own and keeps full `$env`; a document from a client
//! holding an admin token may not read the host: its `$env` references name
//! only variables the operator allows (`IDM_CONF_ENV_ALLOW`), and its file
//! paths (`file`: a CSV connector's file, a script's file; `tlsCaFile`) stay
//! inside the conf directory or a directory the operator lists
//! (`--allow-path`), `..` and symlinks resolved before the check.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

/// Keys whose string value is a path, wherever they sit in a document.
const PATH_KEYS: &[&str] = &["file", "tlsCaFile"];

#[derive(Debug, thiserror::Error)]
#[error("{field}: {message}")]
pub struct PolicyViolation {
    pub field: String,
    pub message: String,
}

/// The operator's allowances for documents sent over the API.
#[derive(Debug, Clone, Default)]
pub struct ApiDocumentPolicy {
    conf_dir: PathBuf,
    env_allow: BTreeSet<String>,
    /// Canonical: the conf directory and each allowed path that exists.
    roots: Vec<PathBuf>,
}

impl ApiDocumentPolicy {
    /// `conf_dir` is where relative paths start and is always allowed.
    pub fn new(conf_dir: &Path, env_allow: &[String], allow_paths: &[PathBuf]) -> Self {
        let mut roots = Vec::new();
        for root in std::iter::once(conf_dir).chain(allow_paths.iter().map(PathBuf::as_path)) {
            match root.canonicalize() {
                Ok(canonical) => roots.push(canonical),
                Err(e) => tracing::warn!(
                    path = %root.display(),
                    error = %e,
                    "an allowed conf path cannot be resolved; files under it are refused"
                ),
            }
        }
        ApiDocumentPolicy {
            conf_dir: conf_dir.to_path_buf(),
            env_allow: env_allow
                .iter()
                .map(|n| n.trim().to_string())
                .filter(|n| !n.is_empty())
                .collect(),
            roots,
        }
    }

    /// Checks a document a client sent. `stored` is the document it replaces:
    /// an `$env` reference the stored document already holds at the same
    /// place (a read-modify-write of a conf-file connector) is kept.
    pub fn check(
        &self,
        body: &Map<String, Value>,
        stored: Option<&Map<String, Value>>,
    ) -> Result<(), PolicyViolation> {
        body.iter().try_for_each(|(key, value)| {
            self.check_value(key, key, value, stored.and_then(|s| s.get(key)))
        })
    }

    fn check_value(
        &self,
        at: &str,
        key: &str,
        value: &Value,
        stored: Option<&Value>,
    ) -> Result<(), PolicyViolation> {
        match value {
            Value::Object(map) if map.contains_key("$env") => {
                let name = map.get("$env").and_then(Value::as_str).unwrap_or_default();
                let kept = stored
                    .and_then(|s| s.get("$env"))
                    .and_then(Value::as_str)
                    .is_some_and(|old| old == name);
                if !kept && !self.env_allow.contains(name) {
                    return Err(PolicyViolation {
                        field: at.to_string(),
                        message: format!(
                            "{{\"$env\": \"{name}\"}} is not allowed in a document sent over the API \
                             (IDM_CONF_ENV_ALLOW lists the variables that are)"
                        ),
                    });
                }
                if PATH_KEYS.contains(&key) {
                    let resolved = std::env::var(name).ok().or_else(|| {
                        map.get("default")
                            .and_then(Value::as_str)
                            .map(str::to_string)
                    });
                    if let Some(path) = resolved {
                        self.check_path(at, &path, &format!("$env:{name}"))?;
                    }
                }
                Ok(())
            }
            Value::Object(map) => map.iter().try_for_each(|(k, v)| {
                self.check_value(&format!("{at}.{k}"), k, v, stored.and_then(|s| s.get(k)))
            }),
            Value::Array(items) => items.iter().enumerate().try_for_each(|(i, v)| {
                self.check_value(&format!("{at}[{i}]"), key, v, stored.and_then(|s| s.get(i)))
            }),
            Value::String(path) if PATH_KEYS.contains(&key) => {
                self.check_path(at, path, &format!("\"{path}\""))
            }
            _ => Ok(()),
        }
    }

    /// `shown` is how the message names the path: as written, or the
    /// `$env` reference it came from (never the resolved value).
    fn check_path(&self, at: &str, path: &str, shown: &str) -> Result<(), PolicyViolation> {
        let refused = |why: &str| PolicyViolation {
            field: at.to_string(),
            message: format!("{shown} {why}"),
        };
        if path.is_empty() || path.contains('\0') {
            return Err(refused("is not a file path"));
        }
        let joined = self.conf_dir.join(path);
        // The file itself, or (for one yet to be written) its directory.
        let canonical = match joined.canonicalize() {
            Ok(canonical) => canonical,
            Err(_) => {
                let (Some(parent), Some(name)) = (joined.parent(), joined.file_name()) else {
                    return Err(refused("is not a file path"));
                };
                if name == ".." {
                    return Err(refused("is not a file path"));
                }
                parent
                    .canonicalize()
                    .map_err(|_| refused("does not exist"))?
                    .join(name)
            }
        };
        if self.roots.iter().any(|root| canonical.starts_with(root)) {
            Ok(())
        } else {
            Err(refused(
                "is outside the conf directory and the allowed paths (--allow-path)",
            ))
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn dir(label: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("idm-policy-{label}-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(dir.join("data")).unwrap();
        std::fs::write(dir.join("data/hr.csv"), "uid\n").unwrap();
        dir
    }

    fn body(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap()
    }

    #[test]
    fn files_stay_inside_the_conf_directory_or_an_allowed_path() {
        let conf = dir("conf");
        let elsewhere = dir("else");
        #[cfg(unix)]
        std::os::unix::fs::symlink("/etc/passwd", conf.join("data/link.csv")).unwrap();
        let policy = ApiDocumentPolicy::new(&conf, &[], std::slice::from_ref(&elsewhere));
        let file = |path: &str| policy.check(&body(json!({"file": path})), None);
        file("data/hr.csv").unwrap();
        file("data/not-yet.csv").unwrap();
        file(elsewhere.join("data/hr.csv").to_str().unwrap()).unwrap();
        for outside in [
            "/etc/passwd",
            "../../../../../../etc/passwd",
            "data/../../x.csv",
        ] {
            let refused = file(outside).unwrap_err();
            assert_eq!(refused.field, "file");
            assert!(refused.message.contains("outside"), "{outside}: {refused}");
        }
        #[cfg(unix)]
        assert!(
            file("data/link.csv")
                .unwrap_err()
                .message
                .contains("outside")
        );
        let nested = policy.check(
            &body(json!({"objectTypes": {"employee": {"file": "/etc/passwd"}}})),
            None,
        );
        assert_eq!(nested.unwrap_err().field, "objectTypes.employee.file");
        let script = policy.check(
            &body(json!({"properties": [{"transform": {"type": "text/javascript", "file": "/etc/shadow"}}]})),
            None,
        );
        assert_eq!(script.unwrap_err().field, "properties[0].transform.file");
        std::fs::remove_dir_all(conf).unwrap();
        std::fs::remove_dir_all(elsewhere).unwrap();
    }

    #[test]
    fn env_references_name_only_allowed_variables() {
        let conf = dir("env");
        let policy = ApiDocumentPolicy::new(&conf, &["IDM_LDAP_URL".into()], &[]);
        policy
            .check(&body(json!({"url": {"$env": "IDM_LDAP_URL"}})), None)
            .unwrap();
        let refused = policy
            .check(&body(json!({"url": {"$env": "IDM_ENCRYPTION_KEY"}})), None)
            .unwrap_err();
        assert_eq!(refused.field, "url");
        assert!(refused.message.contains("IDM_ENCRYPTION_KEY"), "{refused}");
        // Kept from the stored document at the same place: allowed.
        let stored =
            body(json!({"bindPassword": {"$env": "LDAP_PW", "default": {"$sealed": "x"}}}));
        let sent =
            body(json!({"bindPassword": {"$env": "LDAP_PW", "default": {"$redacted": true}}}));
        policy.check(&sent, Some(&stored)).unwrap();
        let moved = body(json!({"url": {"$env": "LDAP_PW"}}));
        assert!(policy.check(&moved, Some(&stored)).is_err());
        std::fs::remove_dir_all(conf).unwrap();
    }
}
