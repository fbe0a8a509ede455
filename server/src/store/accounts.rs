//! Accounts of people (`internal/user/<name>`): `account:<name>`. The
//! password is kept as an argon2id PHC string; nothing here returns it but
//! `account_hash`, which only login and the bootstrap read.

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Store, StoreError};

/// An account as listed: everything but the password hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccountRecord {
    pub name: String,
    /// A token scope name: `read`, `scim` or `admin`.
    pub role: String,
    pub enabled: bool,
    pub created: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_login: Option<String>,
}

/// An account with its hash, for a password check.
#[derive(Debug, Clone, Deserialize)]
pub struct AccountSecret {
    pub hash: String,
    pub role: String,
    pub enabled: bool,
}

const COLUMNS: &str = "name, role, enabled, created, last_login";

impl Store {
    /// Creates `account:<name>`; `AlreadyExists` if the name is taken.
    pub async fn insert_account(
        &self,
        account: &AccountRecord,
        hash: &str,
    ) -> Result<(), StoreError> {
        let mut content = json!(account);
        content["hash"] = json!(hash);
        let created = self
            .execute(
                "CREATE type::record('account', $name) CONTENT $content RETURN NONE",
                json!({ "name": account.name, "content": content }),
            )
            .await;
        match created {
            Err(StoreError::Query(message)) if message.contains("already exists") => Err(
                StoreError::AlreadyExists(format!("internal/user/{}", account.name)),
            ),
            other => other,
        }
    }

    /// Creates or re-sets an account (the bootstrap admin): hash, role and
    /// enabled are set, `created` kept if it existed.
    pub async fn upsert_account(
        &self,
        name: &str,
        hash: &str,
        role: &str,
        now: &str,
    ) -> Result<(), StoreError> {
        self.execute(
            "UPSERT type::record('account', $name) SET name = $name, hash = $hash, \
             role = $role, enabled = true, created = created ?? $now RETURN NONE",
            json!({ "name": name, "hash": hash, "role": role, "now": now }),
        )
        .await
    }

    pub async fn list_accounts(&self) -> Result<Vec<AccountRecord>, StoreError> {
        self.query_all(
            &format!("SELECT {COLUMNS} FROM account ORDER BY name"),
            json!({}),
        )
        .await
    }

    pub async fn get_account(&self, name: &str) -> Result<Option<AccountRecord>, StoreError> {
        self.query_one(
            &format!("SELECT {COLUMNS} FROM ONLY type::record('account', $name)"),
            json!({ "name": name }),
        )
        .await
    }

    /// The hash, role and enabled flag, for a login.
    pub async fn account_secret(&self, name: &str) -> Result<Option<AccountSecret>, StoreError> {
        self.query_one(
            "SELECT hash, role, enabled FROM ONLY type::record('account', $name)",
            json!({ "name": name }),
        )
        .await
    }

    /// Sets the password hash; `None` if there is no such account.
    pub async fn set_account_hash(
        &self,
        name: &str,
        hash: &str,
    ) -> Result<Option<AccountRecord>, StoreError> {
        self.query_one(
            &format!(
                "UPDATE ONLY type::record('account', $name) SET hash = $hash RETURN {COLUMNS}"
            ),
            json!({ "name": name, "hash": hash }),
        )
        .await
    }

    pub async fn set_account_enabled(
        &self,
        name: &str,
        enabled: bool,
    ) -> Result<Option<AccountRecord>, StoreError> {
        self.query_one(
            &format!(
                "UPDATE ONLY type::record('account', $name) SET enabled = $enabled RETURN {COLUMNS}"
            ),
            json!({ "name": name, "enabled": enabled }),
        )
        .await
    }

    pub async fn set_last_login(&self, name: &str, at: &str) -> Result<(), StoreError> {
        self.execute(
            "UPDATE type::record('account', $name) SET last_login = $at RETURN NONE",
            json!({ "name": name, "at": at }),
        )
        .await
    }

    /// Deletes an account; whether it existed.
    pub async fn delete_account(&self, name: &str) -> Result<bool, StoreError> {
        let deleted: Vec<serde_json::Value> = self
            .query_all(
                "DELETE type::record('account', $name) RETURN BEFORE",
                json!({ "name": name }),
            )
            .await?;
        Ok(!deleted.is_empty())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn alice() -> AccountRecord {
        AccountRecord {
            name: "alice".into(),
            role: "read".into(),
            enabled: true,
            created: super::super::now_timestamp(),
            last_login: None,
        }
    }

    #[tokio::test]
    async fn accounts_round_trip_without_their_hash() {
        let store = Store::open("mem://").await.unwrap();
        store.insert_account(&alice(), "$argon2id$x").await.unwrap();
        let again = store.insert_account(&alice(), "$argon2id$y").await;
        assert!(
            matches!(again, Err(StoreError::AlreadyExists(ref n)) if n == "internal/user/alice"),
            "{again:?}"
        );
        let listed = store.list_accounts().await.unwrap();
        assert_eq!(
            listed,
            vec![alice()]
                .into_iter()
                .map(|mut a| {
                    a.created = listed[0].created.clone();
                    a
                })
                .collect::<Vec<_>>()
        );
        assert_eq!(
            store.account_secret("alice").await.unwrap().unwrap().hash,
            "$argon2id$x"
        );
        let changed = store
            .set_account_hash("alice", "$argon2id$z")
            .await
            .unwrap();
        assert!(changed.is_some());
        assert!(store.set_account_hash("bob", "h").await.unwrap().is_none());
        assert!(store.get_account("bob").await.unwrap().is_none());
        let disabled = store
            .set_account_enabled("alice", false)
            .await
            .unwrap()
            .unwrap();
        assert!(!disabled.enabled);
        store
            .set_last_login("alice", "2026-01-01T00:00:00.000000Z")
            .await
            .unwrap();
        let read = store.get_account("alice").await.unwrap().unwrap();
        assert_eq!(
            read.last_login.as_deref(),
            Some("2026-01-01T00:00:00.000000Z")
        );
        assert!(store.delete_account("alice").await.unwrap());
        assert!(!store.delete_account("alice").await.unwrap());
        // The bootstrap path creates, then re-sets keeping `created`.
        store
            .upsert_account("root", "h1", "admin", "2026-01-01T00:00:00.000000Z")
            .await
            .unwrap();
        store.set_account_enabled("root", false).await.unwrap();
        store
            .upsert_account("root", "h2", "admin", "2027-01-01T00:00:00.000000Z")
            .await
            .unwrap();
        let root = store.get_account("root").await.unwrap().unwrap();
        assert!(root.enabled);
        assert_eq!(root.created, "2026-01-01T00:00:00.000000Z");
        assert_eq!(
            store.account_secret("root").await.unwrap().unwrap().hash,
            "h2"
        );
    }
}
