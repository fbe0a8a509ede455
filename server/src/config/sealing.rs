//! Connector secrets in conf documents. What is secret is declared by the
//! connector type ([`SecretFields`]), not guessed from key names. In the
//! store a secret is `{"$sealed": "<SecretBox::seal>"}` (and so is the
//! `default` of an `$env` reference in a secret field); reads show
//! `{"$redacted": true}`; only [`crate::connector::build`] opens them.
//!
//! The walks below recurse over documents that were decoded first (serde_json
//! stops at 128 levels, prost at 100), so their depth is bounded.

use serde_json::{Map, Value, json};

use crate::connector::SecretFields;
use crate::secrets::SecretBox;

/// The key of a sealed value: `{"$sealed": "<base64 nonce || ciphertext>"}`.
/// Key rotation re-seals every such value.
pub const SEALED: &str = "$sealed";
/// What a read shows in place of a secret; sent back, it keeps the stored value.
pub const REDACTED: &str = "$redacted";

#[derive(Debug, thiserror::Error)]
#[error("{field}: {message}")]
pub struct SealError {
    /// The path of the value in the document.
    pub field: String,
    pub message: String,
}

fn join(at: &str, key: &str) -> String {
    if at.is_empty() {
        key.to_string()
    } else {
        format!("{at}.{key}")
    }
}

fn is_env(map: &Map<String, Value>) -> bool {
    map.get("$env").is_some_and(Value::is_string)
}

/// What is secret in a document of this kind: a connector's by its type;
/// mappings and schedules declare none.
pub fn secret_fields(kind: &str, body: &Map<String, Value>) -> SecretFields {
    if kind == "connector" {
        SecretFields::of_document(body)
    } else {
        SecretFields::Declared(&[])
    }
}

/// The document as stored: every secret (a string at or under a declared
/// path, or the `default` of an `$env` reference there) sealed. Values
/// already `{"$sealed": …}` (kept from the stored document) stay as they are.
pub fn seal(
    kind: &str,
    body: &Map<String, Value>,
    secrets: &SecretBox,
) -> Result<Map<String, Value>, SealError> {
    let fields = secret_fields(kind, body);
    let mut path = Vec::new();
    seal_map(body, false, &mut path, fields, secrets)
}

fn seal_map<'a>(
    map: &'a Map<String, Value>,
    secret: bool,
    path: &mut Vec<&'a str>,
    fields: SecretFields,
    secrets: &SecretBox,
) -> Result<Map<String, Value>, SealError> {
    let mut out = Map::new();
    for (key, value) in map {
        path.push(key);
        let secret = secret || fields.covers(path);
        let sealed = seal_value(value, secret, path, fields, secrets);
        path.pop();
        out.insert(key.clone(), sealed?);
    }
    Ok(out)
}

fn seal_value<'a>(
    value: &'a Value,
    secret: bool,
    path: &mut Vec<&'a str>,
    fields: SecretFields,
    secrets: &SecretBox,
) -> Result<Value, SealError> {
    let seal_text = |text: &str| {
        secrets
            .seal(text)
            .map(|sealed| json!({ SEALED: sealed }))
            .map_err(|e| SealError {
                field: path.join("."),
                message: e.to_string(),
            })
    };
    match value {
        Value::Object(map) if map.contains_key(SEALED) => Ok(value.clone()),
        Value::Object(map) if is_env(map) => {
            let mut reference = map.clone();
            if secret && let Some(Value::String(default)) = map.get("default") {
                reference.insert("default".into(), seal_text(default)?);
            }
            Ok(Value::Object(reference))
        }
        Value::Object(map) => seal_map(map, secret, path, fields, secrets).map(Value::Object),
        Value::Array(items) => items
            .iter()
            .map(|item| seal_value(item, secret, path, fields, secrets))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array),
        Value::String(text) if secret => seal_text(text),
        other => Ok(other.clone()),
    }
}

/// The document with every `{"$sealed": …}` opened back to its text.
pub fn open_sealed(
    body: &Map<String, Value>,
    secrets: &SecretBox,
) -> Result<Map<String, Value>, SealError> {
    open_map(body, "", secrets)
}

fn open_map(
    map: &Map<String, Value>,
    at: &str,
    secrets: &SecretBox,
) -> Result<Map<String, Value>, SealError> {
    map.iter()
        .map(|(key, value)| Ok((key.clone(), open_value(value, &join(at, key), secrets)?)))
        .collect()
}

fn open_value(value: &Value, at: &str, secrets: &SecretBox) -> Result<Value, SealError> {
    match value {
        Value::Object(map) if map.contains_key(SEALED) => map
            .get(SEALED)
            .and_then(Value::as_str)
            .ok_or_else(|| SealError {
                field: at.to_string(),
                message: "\"$sealed\" must hold a sealed string".into(),
            })
            .and_then(|sealed| {
                secrets.open(sealed).map_err(|e| SealError {
                    field: at.to_string(),
                    message: e.to_string(),
                })
            })
            .map(Value::String),
        Value::Object(map) => open_map(map, at, secrets).map(Value::Object),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| open_value(item, &format!("{at}[{i}]"), secrets))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array),
        other => Ok(other.clone()),
    }
}

/// The document as a read shows it: secrets (sealed or not) are
/// `{"$redacted": true}`; an `$env` reference shows its name, and its
/// `default` (if any) as `{"$redacted": true}`. Sent back unchanged, the
/// markers keep the stored values.
pub fn redact(kind: &str, body: &Map<String, Value>) -> Map<String, Value> {
    redact_with(body, secret_fields(kind, body))
}

fn redact_with(body: &Map<String, Value>, fields: SecretFields) -> Map<String, Value> {
    let mut path = Vec::new();
    redact_map(body, false, &mut path, fields)
}

fn redacted() -> Value {
    json!({ REDACTED: true })
}

fn redact_map<'a>(
    map: &'a Map<String, Value>,
    secret: bool,
    path: &mut Vec<&'a str>,
    fields: SecretFields,
) -> Map<String, Value> {
    let mut out = Map::new();
    for (key, value) in map {
        path.push(key);
        let secret = secret || fields.covers(path);
        let shown = redact_value(value, secret, path, fields);
        path.pop();
        out.insert(key.clone(), shown);
    }
    out
}

fn redact_value<'a>(
    value: &'a Value,
    secret: bool,
    path: &mut Vec<&'a str>,
    fields: SecretFields,
) -> Value {
    match value {
        Value::Object(map) if map.contains_key(SEALED) => redacted(),
        Value::Object(map) if map.contains_key("$env") => {
            let mut shown = Map::new();
            shown.insert(
                "$env".into(),
                map.get("$env").cloned().unwrap_or(Value::Null),
            );
            if map.contains_key("default") {
                shown.insert("default".into(), redacted());
            }
            Value::Object(shown)
        }
        Value::Object(map) => Value::Object(redact_map(map, secret, path, fields)),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|item| redact_value(item, secret, path, fields))
                .collect(),
        ),
        Value::Null => Value::Null,
        _ if secret => redacted(),
        other => other.clone(),
    }
}

/// `Err(path)` of the first `{"$sealed": …}` in a document a client sent:
/// only idmd seals, and a client cannot make it open a value elsewhere.
pub fn find_sealed(body: &Map<String, Value>) -> Option<String> {
    fn walk(value: &Value, at: &str) -> Option<String> {
        match value {
            Value::Object(map) if map.contains_key(SEALED) => Some(at.to_string()),
            Value::Object(map) => map.iter().find_map(|(k, v)| walk(v, &join(at, k))),
            Value::Array(items) => items
                .iter()
                .enumerate()
                .find_map(|(i, v)| walk(v, &format!("{at}[{i}]"))),
            _ => None,
        }
    }
    body.iter().find_map(|(k, v)| walk(v, k))
}

/// Adds the text of every secret of an opened, resolved document to
/// `hidden`, labelled by its field, so errors can be scrubbed of it.
pub fn note_secrets(
    body: &Map<String, Value>,
    fields: SecretFields,
    hidden: &mut Vec<(String, String)>,
) {
    fn walk<'a>(
        value: &'a Value,
        secret: bool,
        path: &mut Vec<&'a str>,
        fields: SecretFields,
        hidden: &mut Vec<(String, String)>,
    ) {
        match value {
            Value::Object(map) => {
                for (key, value) in map {
                    path.push(key);
                    let secret = secret || fields.covers(path);
                    walk(value, secret, path, fields, hidden);
                    path.pop();
                }
            }
            Value::Array(items) => {
                for item in items {
                    walk(item, secret, path, fields, hidden);
                }
            }
            Value::String(text) if secret => {
                hidden.push((text.clone(), format!("<{}>", path.join("."))));
            }
            _ => {}
        }
    }
    let mut path = Vec::new();
    for (key, value) in body {
        path.push(key.as_str());
        let secret = fields.covers(&path);
        walk(value, secret, &mut path, fields, hidden);
        path.pop();
    }
}

/// Values shorter than this are not scrubbed from messages: they would
/// garble every number in them and reveal nothing.
const SCRUB_MIN_LEN: usize = 3;

/// `text` with every hidden value replaced by its label; `hidden` longest
/// value first, so a value containing another is replaced whole.
pub fn scrub_text(mut text: String, hidden: &[(String, String)]) -> String {
    for (value, label) in hidden {
        if value.len() >= SCRUB_MIN_LEN && text.contains(value.as_str()) {
            text = text.replace(value.as_str(), label);
        }
    }
    text
}

/// A kept secret (a `{"$redacted": true}` marker in a secret field) goes
/// only where it was given for: when the connector's destination (its `url`,
/// TLS settings …) changes, the client must send the secret again, or an
/// admin could point the connector at their own server and receive it.
pub fn check_kept_secrets(
    kind: &str,
    body: &Map<String, Value>,
    stored: Option<&Map<String, Value>>,
) -> Result<(), SealError> {
    let Some(stored) = stored.filter(|_| kind == "connector") else {
        return Ok(());
    };
    let Some(changed) = crate::connector::destination_changed(body, stored) else {
        return Ok(());
    };
    let fields = secret_fields(kind, body);
    let mut path = Vec::new();
    match kept_secret(&fields, &Value::Object(body.clone()), &mut path) {
        Some(field) => Err(SealError {
            field,
            message: format!(
                "\"{changed}\" changed, so the stored secret is not kept: send it again"
            ),
        }),
        None => Ok(()),
    }
}

/// The path of the first redacted marker in a secret field.
fn kept_secret(fields: &SecretFields, value: &Value, path: &mut Vec<String>) -> Option<String> {
    if value.get(REDACTED) == Some(&Value::Bool(true)) {
        let keys: Vec<&str> = path.iter().map(String::as_str).collect();
        return fields.covers(&keys).then(|| keys.join("."));
    }
    let children: Vec<(String, &Value)> = match value {
        Value::Object(map) => map.iter().map(|(k, v)| (k.clone(), v)).collect(),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, v)| (i.to_string(), v))
            .collect(),
        _ => return None,
    };
    for (key, child) in children {
        path.push(key);
        let found = kept_secret(fields, child, path);
        path.pop();
        if found.is_some() {
            return found;
        }
    }
    None
}

/// Puts stored values back where a client sent `{"$redacted": true}` (it
/// read a redacted document and writes it back); `Err` is the path of a
/// marker with no stored value behind it.
pub fn restore_redacted(
    body: &mut Map<String, Value>,
    stored: Option<&Map<String, Value>>,
) -> Result<(), String> {
    restore_at(body, stored, "")
}

fn restore_at(
    body: &mut Map<String, Value>,
    stored: Option<&Map<String, Value>>,
    at: &str,
) -> Result<(), String> {
    for (key, value) in body.iter_mut() {
        restore_value(value, stored.and_then(|s| s.get(key)), &join(at, key))?;
    }
    Ok(())
}

/// Array elements are matched by position (a mapping's `properties`).
fn restore_value(value: &mut Value, old: Option<&Value>, at: &str) -> Result<(), String> {
    if value.get(REDACTED) == Some(&Value::Bool(true)) {
        *value = old.cloned().ok_or_else(|| at.to_string())?;
        return Ok(());
    }
    match value {
        Value::Object(inner) => restore_at(inner, old.and_then(Value::as_object), at),
        Value::Array(items) => items.iter_mut().enumerate().try_for_each(|(i, item)| {
            restore_value(item, old.and_then(|o| o.get(i)), &format!("{at}[{i}]"))
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::store::Store;

    fn secret_box(byte: u8) -> SecretBox {
        use base64::Engine;
        let key = base64::engine::general_purpose::STANDARD.encode([byte; 32]);
        SecretBox::load_or_create(std::path::Path::new("/nonexistent"), Some(&key)).unwrap()
    }

    fn map(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap()
    }

    const LDAP: &str = r#"{"connectorType": "ldap", "url": "ldap://127.0.0.1:3389",
        "baseDn": "dc=example,dc=org", "bindDn": "cn=admin,dc=example,dc=org",
        "bindPassword": "s3cr3t-literal", "passwordHashing": "SSHA",
        "objectTypes": {"account": {"namingAttribute": "uid", "objectClasses": ["inetOrgPerson"],
                                    "passwordAttribute": "userPassword"}}}"#;
    const FROM_ENV: &str = r#"{"connectorType": "ldap", "url": "ldap://127.0.0.1:3389",
        "baseDn": "dc=example,dc=org",
        "bindPassword": {"$env": "IDM_TEST_UNSET_BIND_PASSWORD", "default": "s3cr3t-default"}}"#;

    #[tokio::test]
    async fn conf_file_secrets_are_stored_sealed_and_an_unchanged_file_writes_nothing() {
        let dir = std::env::temp_dir().join(format!("idm-sealing-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("connector-ldap.json"), LDAP).unwrap();
        std::fs::write(dir.join("connector-env.json"), FROM_ENV).unwrap();
        let conf = crate::config::read(Some(&dir)).unwrap();
        let store = Store::open("mem://").await.unwrap();
        let secrets = secret_box(1);
        assert_eq!(
            crate::config::apply(&store, &conf, &secrets).await.unwrap(),
            2
        );

        let stored = store
            .get_config("connector", "ldap")
            .await
            .unwrap()
            .unwrap();
        let raw = serde_json::to_string(&stored.body).unwrap();
        assert!(!raw.contains("s3cr3t"), "{raw}");
        let sealed = stored.body["bindPassword"][SEALED].as_str().unwrap();
        assert_eq!(secrets.open(sealed).unwrap(), "s3cr3t-literal");
        assert_eq!(
            stored.body["passwordHashing"], "SSHA",
            "not a secret: {raw}"
        );
        let env = store.get_config("connector", "env").await.unwrap().unwrap();
        let raw = serde_json::to_string(&env.body).unwrap();
        assert!(!raw.contains("s3cr3t"), "{raw}");
        assert_eq!(
            env.body["bindPassword"]["$env"],
            "IDM_TEST_UNSET_BIND_PASSWORD"
        );
        assert!(
            env.body["bindPassword"]["default"][SEALED].is_string(),
            "{raw}"
        );

        // Sealing is randomized; an unchanged file is still not rewritten.
        assert_eq!(
            crate::config::apply(&store, &conf, &secrets).await.unwrap(),
            0
        );
        let again = store
            .get_config("connector", "ldap")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(again.body, stored.body);
        // A changed secret is.
        std::fs::write(
            dir.join("connector-ldap.json"),
            LDAP.replace("literal", "changed"),
        )
        .unwrap();
        let conf = crate::config::read(Some(&dir)).unwrap();
        assert_eq!(
            crate::config::apply(&store, &conf, &secrets).await.unwrap(),
            1
        );
        let changed = store
            .get_config("connector", "ldap")
            .await
            .unwrap()
            .unwrap();
        let opened = open_sealed(&changed.body, &secrets).unwrap();
        assert_eq!(opened["bindPassword"], "s3cr3t-changed");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn reads_hide_what_the_connector_declares_secret_and_every_env_default() {
        let secrets = secret_box(2);
        let ldap = seal(
            "connector",
            &map(serde_json::from_str(LDAP).unwrap()),
            &secrets,
        )
        .unwrap();
        let shown = redact("connector", &ldap);
        assert_eq!(shown["bindPassword"], json!({"$redacted": true}));
        // Key names that look secret but are not declared are shown.
        assert_eq!(shown["passwordHashing"], "SSHA");
        assert_eq!(
            shown["objectTypes"]["account"]["passwordAttribute"],
            "userPassword"
        );

        let env = seal(
            "connector",
            &map(serde_json::from_str(FROM_ENV).unwrap()),
            &secrets,
        )
        .unwrap();
        assert_eq!(
            redact("connector", &env)["bindPassword"],
            json!({"$env": "IDM_TEST_UNSET_BIND_PASSWORD", "default": {"$redacted": true}})
        );
        // A non-secret field's `$env` default is hidden too; the name is shown.
        let csv = map(
            json!({"connectorType": "csv", "file": {"$env": "HR_FILE", "default": "data/hr.csv"}}),
        );
        assert_eq!(
            redact("connector", &csv)["file"],
            json!({"$env": "HR_FILE", "default": {"$redacted": true}})
        );

        // A secret under a name that does not look secret, declared so: hidden.
        let declared = SecretFields::Declared(&[
            "configurationProperties.credentials",
            "objectTypes.*.apiKey",
        ]);
        let body = map(json!({
            "configurationProperties": {"credentials": {"user": "u", "value": "g1"}, "host": "h"},
            "objectTypes": {"a": {"apiKey": "k1", "name": "n"}}}));
        let shown = redact_with(&body, declared);
        assert_eq!(
            shown["configurationProperties"]["credentials"]["value"],
            json!({"$redacted": true})
        );
        assert_eq!(shown["configurationProperties"]["host"], "h");
        assert_eq!(
            shown["objectTypes"]["a"]["apiKey"],
            json!({"$redacted": true})
        );
        assert_eq!(shown["objectTypes"]["a"]["name"], "n");

        // A type idm does not know: only its type is shown.
        let unknown = map(
            json!({"connectorType": "scim", "endpoint": "https://x", "token": "t0k3n",
                                  "nested": {"a": "b"}}),
        );
        let sealed = seal("connector", &unknown, &secrets).unwrap();
        assert!(!serde_json::to_string(&sealed).unwrap().contains("t0k3n"));
        let shown = redact("connector", &sealed);
        assert_eq!(shown["connectorType"], "scim");
        assert_eq!(shown["endpoint"], json!({"$redacted": true}));
        assert_eq!(shown["nested"]["a"], json!({"$redacted": true}));
    }

    #[test]
    fn a_redacted_read_written_back_keeps_the_sealed_values() {
        let secrets = secret_box(3);
        let stored = seal(
            "connector",
            &map(serde_json::from_str(FROM_ENV).unwrap()),
            &secrets,
        )
        .unwrap();
        let mut sent = redact("connector", &stored);
        sent.insert("url".into(), json!("ldap://127.0.0.1:4389"));
        assert_eq!(find_sealed(&sent), None);
        restore_redacted(&mut sent, Some(&stored)).unwrap();
        let resealed = seal("connector", &sent, &secrets).unwrap();
        assert_eq!(resealed["bindPassword"], stored["bindPassword"]);
        assert_eq!(
            open_sealed(&resealed, &secrets).unwrap()["bindPassword"]["default"],
            "s3cr3t-default"
        );
        // In arrays, by position.
        let stored = map(json!({"properties": [{"default": {"$env": "X", "default": "d"}}]}));
        let mut sent = redact("mapping", &stored);
        assert_eq!(
            sent["properties"][0]["default"]["default"],
            json!({"$redacted": true})
        );
        restore_redacted(&mut sent, Some(&stored)).unwrap();
        assert_eq!(sent, stored);
        let mut fresh = map(json!({"bindPassword": {"$redacted": true}}));
        assert_eq!(
            restore_redacted(&mut fresh, None),
            Err("bindPassword".to_string())
        );
        assert_eq!(
            find_sealed(&resealed),
            Some("bindPassword.default".to_string())
        );
    }

    #[test]
    fn scrubbing_replaces_values_longest_first() {
        let hidden = vec![
            ("s3cr3t-long".to_string(), "<bindPassword>".to_string()),
            ("s3cr3t".to_string(), "$env:X".to_string()),
            ("ab".to_string(), "$env:SHORT".to_string()),
        ];
        assert_eq!(
            scrub_text("a s3cr3t-long and s3cr3t, ab".into(), &hidden),
            "a <bindPassword> and $env:X, ab"
        );
    }
}
