//! The encryption key's record (`meta:key`: the fingerprint of the key the
//! store's secrets are sealed under, and a rotation in progress) and the
//! reads and compare-and-set writes a key rotation re-seals with.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::{ConfigDocument, Store, StoreError, with_retry};

/// `meta:key`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    /// The key the store's secrets are sealed under (`keys::fingerprint`).
    pub fingerprint: String,
    /// A rotation to this key has begun and not finished: values may be
    /// sealed under either key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotating_to: Option<String>,
}

/// The record id of a credential: `[type, _id, property]`.
pub type CredentialKey = Value;

/// One re-sealed value, written only if the stored value is still `old`.
#[derive(Debug, Clone, Serialize)]
pub struct Reseal {
    pub key: CredentialKey,
    pub old: String,
    pub new: String,
}

impl Store {
    pub async fn key_record(&self) -> Result<Option<KeyRecord>, StoreError> {
        self.query_one(
            "SELECT fingerprint, rotating_to FROM ONLY meta:key",
            Value::Null,
        )
        .await
    }

    /// Records the fingerprint of a store's first key. `false` if another
    /// node recorded one first (read it again).
    pub async fn record_key(&self, fingerprint: &str) -> Result<bool, StoreError> {
        match self
            .execute(
                "CREATE meta:key CONTENT { fingerprint: $fingerprint } RETURN NONE",
                json!({ "fingerprint": fingerprint }),
            )
            .await
        {
            Ok(()) => Ok(true),
            Err(StoreError::Query(message)) if message.contains("already exists") => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Marks a rotation from `from` to `to` as begun, if the store is at
    /// `from` and no rotation is under way; returns whether it did.
    pub async fn begin_key_rotation(&self, from: &str, to: &str) -> Result<bool, StoreError> {
        let changed: Vec<Value> = self
            .query_all(
                "UPDATE meta:key SET rotating_to = $to \
                 WHERE fingerprint = $from AND rotating_to = NONE RETURN VALUE id",
                json!({ "from": from, "to": to }),
            )
            .await?;
        Ok(!changed.is_empty())
    }

    /// Ends a rotation: the store is at `to`. Returns whether the record was
    /// in that rotation.
    pub async fn finish_key_rotation(&self, from: &str, to: &str) -> Result<bool, StoreError> {
        let changed: Vec<Value> = self
            .query_all(
                "UPDATE meta:key SET fingerprint = $to, rotating_to = NONE \
                 WHERE fingerprint = $from AND rotating_to = $to RETURN VALUE id",
                json!({ "from": from, "to": to }),
            )
            .await?;
        Ok(!changed.is_empty())
    }

    /// One sealed credential, if there is any: to check a key against a
    /// store that has no fingerprint yet.
    pub async fn any_sealed_credential(&self) -> Result<Option<String>, StoreError> {
        self.query_one("SELECT VALUE sealed FROM credential LIMIT 1", Value::Null)
            .await
    }

    /// The record ids of every credential (one read: paging a record-id
    /// range re-reads it per page, see ARCHITECTURE.md).
    pub async fn credential_keys(&self) -> Result<Vec<CredentialKey>, StoreError> {
        self.query_all("SELECT VALUE record::id(id) FROM credential", Value::Null)
            .await
    }

    /// The sealed values of `keys`, in order (`None` where one is gone).
    pub async fn sealed_credentials(
        &self,
        keys: &[CredentialKey],
    ) -> Result<Vec<Option<String>>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        self.query_all(
            "RETURN array::map($keys, |$k| type::record('credential', $k).sealed)",
            json!({ "keys": keys }),
        )
        .await
    }

    /// Writes each re-sealed value where the stored one is still the value
    /// it was computed from (a password changed meanwhile is left alone: it
    /// was sealed under the new key), in one transaction. Returns how many
    /// were written.
    pub async fn reseal_credentials(&self, updates: &[Reseal]) -> Result<u64, StoreError> {
        if updates.is_empty() {
            return Ok(0);
        }
        let params = json!({ "updates": updates });
        with_retry(|| async {
            let written: Option<u64> = self
                .query_one(
                    "RETURN array::len(array::filter(array::map($updates, |$u| \
                     (UPDATE type::record('credential', $u.key) SET sealed = $u.new \
                      WHERE sealed = $u.old RETURN VALUE id)), |$done| array::len($done) > 0))",
                    params.clone(),
                )
                .await?;
            Ok(written.unwrap_or(0))
        })
        .await
    }

    /// Every conf document (connectors, mappings, schedules): few and small.
    pub async fn all_config(&self) -> Result<Vec<ConfigDocument>, StoreError> {
        self.query_all(
            "SELECT kind, name, body, source FROM config ORDER BY kind, name",
            Value::Null,
        )
        .await
    }

    /// Replaces a conf document's body if it is still `old`; returns whether
    /// it did.
    pub async fn reseal_config(
        &self,
        kind: &str,
        name: &str,
        old: &Map<String, Value>,
        new: &Map<String, Value>,
    ) -> Result<bool, StoreError> {
        let changed: Vec<Value> = self
            .query_all(
                "UPDATE type::record('config', [$kind, $name]) SET body = $new \
                 WHERE body = $old RETURN VALUE id",
                json!({ "kind": kind, "name": name, "old": old, "new": new }),
            )
            .await?;
        Ok(!changed.is_empty())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    async fn store() -> Store {
        Store::open("mem://").await.unwrap()
    }

    #[tokio::test]
    async fn the_key_record_moves_only_by_compare_and_set() {
        let store = store().await;
        assert_eq!(store.key_record().await.unwrap(), None);
        assert!(store.record_key("aaa").await.unwrap());
        assert!(!store.record_key("bbb").await.unwrap(), "first one stays");
        assert!(!store.begin_key_rotation("zzz", "bbb").await.unwrap());
        assert!(store.begin_key_rotation("aaa", "bbb").await.unwrap());
        assert!(
            !store.begin_key_rotation("aaa", "ccc").await.unwrap(),
            "one rotation at a time"
        );
        assert_eq!(
            store.key_record().await.unwrap(),
            Some(KeyRecord {
                fingerprint: "aaa".into(),
                rotating_to: Some("bbb".into())
            })
        );
        assert!(!store.finish_key_rotation("aaa", "ccc").await.unwrap());
        assert!(store.finish_key_rotation("aaa", "bbb").await.unwrap());
        assert_eq!(
            store.key_record().await.unwrap(),
            Some(KeyRecord {
                fingerprint: "bbb".into(),
                rotating_to: None
            })
        );
    }

    #[tokio::test]
    async fn credentials_are_resealed_only_where_unchanged() {
        let store = store().await;
        store
            .execute(
                "INSERT INTO credential [\
                 { id: ['user', 'a', 'password'], hash: 'h', sealed: 'a-old' },\
                 { id: ['user', 'b', 'password'], hash: 'h', sealed: 'b-changed' }]",
                Value::Null,
            )
            .await
            .unwrap();
        let mut keys = store.credential_keys().await.unwrap();
        keys.sort_by_key(ToString::to_string);
        assert_eq!(
            keys,
            vec![
                json!(["user", "a", "password"]),
                json!(["user", "b", "password"])
            ]
        );
        assert!(store.any_sealed_credential().await.unwrap().is_some());
        let updates = vec![
            Reseal {
                key: keys[0].clone(),
                old: "a-old".into(),
                new: "a-new".into(),
            },
            Reseal {
                key: keys[1].clone(),
                old: "b-old".into(),
                new: "b-new".into(),
            },
        ];
        assert_eq!(store.reseal_credentials(&updates).await.unwrap(), 1);
        assert_eq!(
            store.sealed_credentials(&keys).await.unwrap(),
            vec![Some("a-new".into()), Some("b-changed".into())]
        );
    }

    #[tokio::test]
    async fn a_conf_document_is_resealed_only_if_unchanged() {
        let store = store().await;
        let body =
            json!({ "type": "ldap", "n": 1, "f": 0.5, "bindPassword": { "$sealed": "old" } });
        let body = body.as_object().unwrap().clone();
        store
            .put_config(&ConfigDocument {
                kind: "connector".into(),
                name: "ldap".into(),
                body: body.clone(),
                source: "api".into(),
            })
            .await
            .unwrap();
        let read = store.all_config().await.unwrap();
        assert_eq!(read.len(), 1);
        let mut new = read[0].body.clone();
        new.insert("bindPassword".into(), json!({ "$sealed": "new" }));
        let mut stale = body.clone();
        stale.insert("n".into(), json!(2));
        assert!(
            !store
                .reseal_config("connector", "ldap", &stale, &new)
                .await
                .unwrap()
        );
        assert!(
            store
                .reseal_config("connector", "ldap", &read[0].body, &new)
                .await
                .unwrap()
        );
        assert_eq!(
            store
                .get_config("connector", "ldap")
                .await
                .unwrap()
                .unwrap()
                .body,
            new
        );
    }
}
