//! Database sessions for transactions.
//!
//! With the SDK of SurrealDB 3, `Surreal::clone` opens a new session, and on
//! a SurrealDB server a new session replays the sign-in: one password hash on
//! the server per clone (argon2; ~25 ms of a release server's core, ~0.4 s of
//! a debug one). `Store` therefore shares one handle, and a transaction, which
//! must own a handle (`Surreal::begin(self)`), takes an idle session from
//! here and gives it back when it commits or is cancelled: a write pays for a
//! sign-in only when more transactions run at once than ever before.
//!
//! A handle is one of two SDK types ([`Conn`]): `Surreal<Any>` for what the
//! SDK opens from a URL, `Surreal<Db>` for an embedded SurrealKV store idm
//! builds itself to size its memory (`--store-memory`; see `embedded.rs`).
//! [`Query`] and [`Tx`] hide which.

use std::future::{Future, IntoFuture};
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};

use surrealdb::engine::any::Any;
use surrealdb::engine::local::Db;
use surrealdb::method::{Backup, Transaction};
use surrealdb::{IndexedResults, Surreal};

use super::StoreError;

/// Idle sessions kept; more concurrent transactions open (and later drop)
/// their own.
const MAX_IDLE: usize = 32;

/// A handle on the database.
#[derive(Clone)]
pub(super) enum Conn {
    Any(Surreal<Any>),
    Local(Surreal<Db>),
}

/// A query being built on a [`Conn`] or a [`Tx`].
pub(super) enum Query<'a> {
    Any(surrealdb::method::Query<'a, Any>),
    Local(surrealdb::method::Query<'a, Db>),
}

/// A transaction on one session.
pub(super) enum Tx {
    Any(Transaction<Any>),
    Local(Transaction<Db>),
}

impl Conn {
    pub(super) fn query<'a>(&'a self, sql: impl Into<std::borrow::Cow<'a, str>>) -> Query<'a> {
        match self {
            Conn::Any(db) => Query::Any(db.query(sql)),
            Conn::Local(db) => Query::Local(db.query(sql)),
        }
    }

    /// SurrealDB's export of the database, piece by piece.
    pub(super) async fn export(&self) -> Result<Backup, surrealdb::Error> {
        match self {
            Conn::Any(db) => db.export(()).await,
            Conn::Local(db) => db.export(()).await,
        }
    }

    pub(super) async fn import(&self, file: &Path) -> Result<(), surrealdb::Error> {
        match self {
            Conn::Any(db) => db.import(file).await,
            Conn::Local(db) => db.import(file).await,
        }
    }

    async fn begin(self) -> Result<Tx, surrealdb::Error> {
        Ok(match self {
            Conn::Any(db) => Tx::Any(db.begin().await?),
            Conn::Local(db) => Tx::Local(db.begin().await?),
        })
    }
}

impl<'a> Query<'a> {
    pub(super) fn bind(self, variable: impl surrealdb::method::IntoVariables) -> Self {
        match self {
            Query::Any(q) => Query::Any(q.bind(variable)),
            Query::Local(q) => Query::Local(q.bind(variable)),
        }
    }
}

impl<'a> IntoFuture for Query<'a> {
    type Output = Result<IndexedResults, surrealdb::Error>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send + 'a>>;

    fn into_future(self) -> Self::IntoFuture {
        match self {
            Query::Any(q) => Box::pin(q.into_future()),
            Query::Local(q) => Box::pin(q.into_future()),
        }
    }
}

impl Tx {
    pub(super) fn query<'a>(&'a self, sql: impl Into<std::borrow::Cow<'a, str>>) -> Query<'a> {
        match self {
            Tx::Any(tx) => Query::Any(tx.query(sql)),
            Tx::Local(tx) => Query::Local(tx.query(sql)),
        }
    }

    async fn commit(self) -> Result<Conn, surrealdb::Error> {
        Ok(match self {
            Tx::Any(tx) => Conn::Any(tx.commit().await?),
            Tx::Local(tx) => Conn::Local(tx.commit().await?),
        })
    }

    async fn cancel(self) -> Result<Conn, surrealdb::Error> {
        Ok(match self {
            Tx::Any(tx) => Conn::Any(tx.cancel().await?),
            Tx::Local(tx) => Conn::Local(tx.cancel().await?),
        })
    }
}

/// The shared handle and the idle sessions beside it; cheap to clone.
#[derive(Clone)]
pub(super) struct Sessions {
    shared: Arc<Conn>,
    idle: Arc<Mutex<Vec<Conn>>>,
}

impl Sessions {
    pub(super) fn new(db: Conn) -> Self {
        Sessions {
            shared: Arc::new(db),
            idle: Arc::default(),
        }
    }

    /// The handle every query outside a transaction uses.
    pub(super) fn shared(&self) -> &Conn {
        &self.shared
    }

    /// Begins a transaction on an idle session (a new one if none is idle).
    pub(super) async fn begin(&self) -> Result<Tx, StoreError> {
        let idle = self.lock().pop();
        let session = idle.unwrap_or_else(|| (*self.shared).clone());
        Ok(session.begin().await?)
    }

    /// Commits, and keeps the session for the next transaction.
    pub(super) async fn commit(&self, tx: Tx) -> Result<(), StoreError> {
        let session = tx.commit().await?;
        self.give_back(session);
        Ok(())
    }

    /// Cancels (the error that made the caller cancel is what it reports).
    pub(super) async fn cancel(&self, tx: Tx) {
        match tx.cancel().await {
            Ok(session) => self.give_back(session),
            Err(e) => tracing::warn!(error = %e, "cancelling a store transaction failed"),
        }
    }

    /// Drops every session: the embedded engine closes once the last is gone.
    pub(super) fn close(self) {
        self.lock().clear();
    }

    fn give_back(&self, session: Conn) {
        let mut idle = self.lock();
        if idle.len() < MAX_IDLE {
            idle.push(session);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Conn>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn idle(sessions: &Sessions) -> usize {
        sessions.lock().len()
    }

    #[tokio::test]
    async fn transactions_reuse_idle_sessions_instead_of_opening_new_ones() {
        let db = surrealdb::engine::any::connect("mem://").await.unwrap();
        db.use_ns("t").use_db("t").await.unwrap();
        let sessions = Sessions::new(Conn::Any(db));
        // Three at once open three sessions, kept once they end.
        let (a, b, c) = tokio::join!(sessions.begin(), sessions.begin(), sessions.begin());
        sessions.commit(a.unwrap()).await.unwrap();
        sessions.cancel(b.unwrap()).await;
        sessions.commit(c.unwrap()).await.unwrap();
        assert_eq!(idle(&sessions), 3);
        // One after the other they take and give back the same ones.
        for _ in 0..10 {
            let tx = sessions.begin().await.unwrap();
            assert_eq!(idle(&sessions), 2);
            sessions.commit(tx).await.unwrap();
        }
        assert_eq!(idle(&sessions), 3);
        // No more than MAX_IDLE are kept.
        let many: Vec<Tx> = futures::future::join_all((0..MAX_IDLE + 5).map(|_| sessions.begin()))
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        for tx in many {
            sessions.commit(tx).await.unwrap();
        }
        assert_eq!(idle(&sessions), MAX_IDLE);
    }
}
