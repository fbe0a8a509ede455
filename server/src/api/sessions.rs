//! When a login session was last used, and when that is worth writing down.
//!
//! The interceptor checks a session on every call without a store round trip,
//! so the last use is kept in memory here, beside (not inside) the token
//! records. A node that finds a session idle too long by what it knows reads
//! the record again before refusing (another node may have used it). It is written to the store at most every
//! [`write_every`] per session, so a restart or another node sees a time at
//! most that old: a session can outlive its idle timeout there by that much,
//! never end early.

use std::collections::HashMap;
use std::sync::Mutex;

use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};

use crate::store::TokenRecord;

/// The longest a last use stays only in memory.
const WRITE_AT_LEAST_EVERY: Duration = Duration::seconds(30);

/// How often a session's last use is written: every 30 s, or every quarter of
/// its idle timeout if that is shorter.
pub fn write_every(idle: Duration) -> Duration {
    let quarter: Duration = idle / 4_i32;
    quarter.min(WRITE_AT_LEAST_EVERY)
}

/// Whether a session last used at `last` has been idle too long at `now`.
pub fn idle_expired(last: OffsetDateTime, idle: Duration, now: OffsetDateTime) -> bool {
    now - last >= idle
}

#[derive(Debug, Clone, Copy)]
struct Use {
    /// The latest use seen by this node.
    at: OffsetDateTime,
    /// The latest use written to the store (by this node).
    written: OffsetDateTime,
}

/// What a session use decided.
#[derive(Debug, PartialEq, Eq)]
pub enum Touch {
    /// Idle too long: the session has ended.
    Expired,
    /// Alive; nothing to write.
    Alive,
    /// Alive, and this time should be written to the store.
    Write(String),
}

/// Last uses by session id; entries only for sessions the registry holds.
#[derive(Default)]
pub struct LastUses(Mutex<HashMap<String, Use>>);

impl LastUses {
    /// Records a use of `session` at `now`, unless it had been idle too long.
    pub fn touch(&self, session: &TokenRecord, now: OffsetDateTime) -> Touch {
        let Some(idle) = session.idle_timeout.map(Duration::seconds) else {
            return Touch::Alive;
        };
        let parse = |t: &str| OffsetDateTime::parse(t, &Rfc3339).ok();
        // What the store knows: another node's use, or the login itself.
        let stored = session
            .last_used
            .as_deref()
            .and_then(parse)
            .into_iter()
            .chain(parse(&session.created))
            .max()
            .unwrap_or(OffsetDateTime::UNIX_EPOCH);
        let Ok(mut uses) = self.0.lock() else {
            return Touch::Expired;
        };
        let entry = uses.entry(session.tid.clone()).or_insert(Use {
            at: stored,
            written: stored,
        });
        let last = entry.at.max(stored);
        if idle_expired(last, idle, now) {
            return Touch::Expired;
        }
        entry.at = now;
        if now - entry.written.max(stored) >= write_every(idle) {
            entry.written = now;
            Touch::Write(crate::store::format_timestamp(now))
        } else {
            Touch::Alive
        }
    }

    /// Whether `session` has been idle too long at `now` as this node knows
    /// it (its own uses and the store's record); changes nothing.
    pub fn idle(&self, session: &TokenRecord, now: OffsetDateTime) -> bool {
        let Some(idle) = session.idle_timeout.map(Duration::seconds) else {
            return false;
        };
        let parse = |t: &str| OffsetDateTime::parse(t, &Rfc3339).ok();
        let stored = session
            .last_used
            .as_deref()
            .and_then(parse)
            .into_iter()
            .chain(parse(&session.created))
            .max()
            .unwrap_or(OffsetDateTime::UNIX_EPOCH);
        let seen = self
            .0
            .lock()
            .ok()
            .and_then(|uses| uses.get(&session.tid).map(|u| u.at));
        let last = seen.map_or(stored, |at| at.max(stored));
        idle_expired(last, idle, now)
    }

    /// Forgets sessions no longer in the registry.
    pub fn retain(&self, live: impl Fn(&str) -> bool) {
        if let Ok(mut uses) = self.0.lock() {
            uses.retain(|tid, _| live(tid));
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::store::{TokenKind, format_timestamp};

    fn session(
        created: OffsetDateTime,
        idle_secs: i64,
        last_used: Option<OffsetDateTime>,
    ) -> TokenRecord {
        TokenRecord {
            tid: "s1".into(),
            scope: "read".into(),
            description: String::new(),
            hash: String::new(),
            created: format_timestamp(created),
            expires: None,
            revoked: false,
            kind: TokenKind::Session,
            account: Some("alice".into()),
            idle_timeout: Some(idle_secs),
            last_used: last_used.map(format_timestamp),
            changed: None,
        }
    }

    #[test]
    fn writes_come_every_quarter_of_the_idle_timeout_up_to_30_seconds() {
        assert_eq!(write_every(Duration::minutes(30)), Duration::seconds(30));
        assert_eq!(write_every(Duration::seconds(60)), Duration::seconds(15));
        assert_eq!(
            write_every(Duration::seconds(2)),
            Duration::milliseconds(500)
        );
    }

    #[test]
    fn a_session_used_within_its_idle_timeout_stays_alive() {
        let t0 = OffsetDateTime::now_utc();
        let record = session(t0, 60, None);
        let uses = LastUses::default();
        let s = Duration::seconds;
        assert_eq!(uses.touch(&record, t0 + s(10)), Touch::Alive);
        // Each use moves the deadline, though the store still says t0.
        assert_eq!(
            uses.touch(&record, t0 + s(50)),
            Touch::Write(format_timestamp(t0 + s(50)))
        );
        assert_eq!(
            uses.touch(&record, t0 + s(100)),
            Touch::Write(format_timestamp(t0 + s(100)))
        );
        assert_eq!(uses.touch(&record, t0 + s(160)), Touch::Expired);
        // Expired stays expired.
        assert_eq!(uses.touch(&record, t0 + s(161)), Touch::Expired);
    }

    #[test]
    fn another_nodes_written_use_counts_and_a_fresh_registry_starts_from_the_store() {
        let t0 = OffsetDateTime::now_utc();
        let s = Duration::seconds;
        let uses = LastUses::default();
        assert_eq!(uses.touch(&session(t0, 60, None), t0 + s(1)), Touch::Alive);
        // Another node used it at t0+55 and wrote that; we last saw t0+1.
        let refreshed = session(t0, 60, Some(t0 + s(55)));
        assert_ne!(uses.touch(&refreshed, t0 + s(100)), Touch::Expired);
        // A restarted node knows only the store.
        let restarted = LastUses::default();
        assert_eq!(restarted.touch(&refreshed, t0 + s(116)), Touch::Expired);
    }

    #[test]
    fn forgotten_sessions_leave_the_map() {
        let t0 = OffsetDateTime::now_utc();
        let uses = LastUses::default();
        uses.touch(&session(t0, 60, None), t0);
        uses.retain(|tid| tid != "s1");
        assert!(uses.0.lock().unwrap().is_empty());
    }
}
