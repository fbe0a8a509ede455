//! Accounts of people (`internal/user/<name>`): `account:<name>`. The
//! password is kept as an argon2id PHC string; nothing here returns it but
//! `account_hash`, which only login and the bootstrap read.

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::objects::{Tx, tx_query};
use super::{Store, StoreError, decode_optional, decode_rows, now_timestamp, with_retry};

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

    pub async fn set_last_login(&self, name: &str, at: &str) -> Result<(), StoreError> {
        self.execute(
            "UPDATE type::record('account', $name) SET last_login = $at RETURN NONE",
            json!({ "name": name, "at": at }),
        )
        .await
    }

    /// Changes an account's role or enabled flag, or deletes it, in one
    /// transaction that refuses to leave no enabled admin account: the
    /// change is not made when the account is the last enabled admin and
    /// would stop being one. Two such changes at once (two admins demoting
    /// each other) both write `meta:admin_guard`, so one of them conflicts
    /// and re-runs, and sees the other's change.
    pub async fn change_account(
        &self,
        name: &str,
        change: &AccountChange,
    ) -> Result<AccountChanged, StoreError> {
        with_retry(|| async {
            let tx = self.db.begin().await?;
            match change_in(&tx, name, change).await {
                Ok(changed @ AccountChanged::Done { .. }) => {
                    self.db.commit(tx).await?;
                    Ok(changed)
                }
                Ok(refused) => {
                    self.db.cancel(tx).await;
                    Ok(refused)
                }
                Err(e) => {
                    self.db.cancel(tx).await;
                    Err(e)
                }
            }
        })
        .await
    }
}

/// What [`Store::change_account`] does to an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountChange {
    /// A token scope name: `read`, `scim` or `admin`.
    Role(String),
    Enabled(bool),
    Delete,
}

#[derive(Debug, Clone, PartialEq)]
pub enum AccountChanged {
    /// No such account; nothing changed.
    Missing,
    /// The account is the last enabled admin and the change would end that;
    /// nothing changed.
    LastAdmin,
    /// `after` is `None` for a deletion.
    Done {
        before: Box<AccountRecord>,
        after: Option<Box<AccountRecord>>,
    },
}

const ADMIN: &str = "admin";

impl AccountRecord {
    fn is_enabled_admin(&self) -> bool {
        self.enabled && self.role == ADMIN
    }
}

async fn change_in(
    tx: &Tx,
    name: &str,
    change: &AccountChange,
) -> Result<AccountChanged, StoreError> {
    let before: Option<AccountRecord> = decode_optional(
        tx_query(
            tx,
            &format!("SELECT {COLUMNS} FROM ONLY type::record('account', $name)"),
            json!({ "name": name }),
        )
        .await?,
    )?;
    let Some(before) = before else {
        return Ok(AccountChanged::Missing);
    };
    let stays_admin = match change {
        AccountChange::Role(role) => role == ADMIN,
        AccountChange::Enabled(enabled) => *enabled,
        AccountChange::Delete => false,
    };
    if before.is_enabled_admin() && !stays_admin {
        tx_query(
            tx,
            "UPSERT meta:admin_guard SET changed = $now RETURN NONE",
            json!({ "now": now_timestamp() }),
        )
        .await?;
        let others: Vec<String> = decode_rows(
            tx_query(
                tx,
                "SELECT VALUE name FROM account WHERE role = $admin AND enabled = true \
                 AND name != $name LIMIT 1",
                json!({ "name": name, "admin": ADMIN }),
            )
            .await?,
        )?;
        if others.is_empty() {
            return Ok(AccountChanged::LastAdmin);
        }
    }
    let record = json!({ "name": name });
    let after: Option<AccountRecord> = match change {
        AccountChange::Role(role) => decode_optional(
            tx_query(
                tx,
                &format!(
                    "UPDATE ONLY type::record('account', $name) SET role = $role RETURN {COLUMNS}"
                ),
                json!({ "name": name, "role": role }),
            )
            .await?,
        )?,
        AccountChange::Enabled(enabled) => decode_optional(
            tx_query(
                tx,
                &format!(
                    "UPDATE ONLY type::record('account', $name) SET enabled = $enabled \
                     RETURN {COLUMNS}"
                ),
                json!({ "name": name, "enabled": enabled }),
            )
            .await?,
        )?,
        AccountChange::Delete => {
            tx_query(
                tx,
                "DELETE type::record('account', $name) RETURN NONE",
                record,
            )
            .await?;
            None
        }
    };
    Ok(AccountChanged::Done {
        before: Box::new(before),
        after: after.map(Box::new),
    })
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
            .change_account("alice", &AccountChange::Enabled(false))
            .await
            .unwrap();
        assert!(
            matches!(disabled, AccountChanged::Done { after: Some(ref a), .. } if !a.enabled),
            "{disabled:?}"
        );
        store
            .set_last_login("alice", "2026-01-01T00:00:00.000000Z")
            .await
            .unwrap();
        let read = store.get_account("alice").await.unwrap().unwrap();
        assert_eq!(
            read.last_login.as_deref(),
            Some("2026-01-01T00:00:00.000000Z")
        );
        assert!(matches!(
            store
                .change_account("alice", &AccountChange::Delete)
                .await
                .unwrap(),
            AccountChanged::Done { after: None, .. }
        ));
        assert_eq!(
            store
                .change_account("alice", &AccountChange::Delete)
                .await
                .unwrap(),
            AccountChanged::Missing
        );
        // The bootstrap path creates, then re-sets keeping `created`.
        store
            .upsert_account("root", "h1", "admin", "2026-01-01T00:00:00.000000Z")
            .await
            .unwrap();
        store
            .execute("UPDATE account:root SET enabled = false", json!({}))
            .await
            .unwrap();
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

    #[tokio::test]
    async fn the_last_enabled_admin_keeps_its_role_and_cannot_be_disabled_or_deleted() {
        let store = Store::open("mem://").await.unwrap();
        let now = super::super::now_timestamp();
        store
            .upsert_account("root", "h", "admin", &now)
            .await
            .unwrap();
        store.insert_account(&alice(), "h").await.unwrap();
        for change in [
            AccountChange::Role("read".into()),
            AccountChange::Enabled(false),
            AccountChange::Delete,
        ] {
            let refused = store.change_account("root", &change).await.unwrap();
            assert_eq!(refused, AccountChanged::LastAdmin, "{change:?}");
        }
        // Harmless changes to it pass.
        let same = store
            .change_account("root", &AccountChange::Role("admin".into()))
            .await
            .unwrap();
        assert!(matches!(same, AccountChanged::Done { .. }), "{same:?}");
        // A second enabled admin lets the first go, and is then the last.
        store
            .change_account("alice", &AccountChange::Role("admin".into()))
            .await
            .unwrap();
        let demoted = store
            .change_account("root", &AccountChange::Role("scim".into()))
            .await
            .unwrap();
        assert!(
            matches!(demoted, AccountChanged::Done { after: Some(ref a), .. } if a.role == "scim")
        );
        assert_eq!(
            store
                .change_account("alice", &AccountChange::Enabled(false))
                .await
                .unwrap(),
            AccountChanged::LastAdmin
        );
        assert_eq!(
            store
                .change_account("nobody", &AccountChange::Enabled(false))
                .await
                .unwrap(),
            AccountChanged::Missing
        );
        // Two admins demoting each other at once: one of them stays.
        store
            .change_account("root", &AccountChange::Role("admin".into()))
            .await
            .unwrap();
        let (a, b) = tokio::join!(
            store.change_account("root", &AccountChange::Enabled(false)),
            store.change_account("alice", &AccountChange::Enabled(false)),
        );
        let outcomes = [a.unwrap(), b.unwrap()];
        assert_eq!(
            outcomes
                .iter()
                .filter(|o| **o == AccountChanged::LastAdmin)
                .count(),
            1,
            "{outcomes:?}"
        );
    }
}
