//! The embedded SurrealKV store, opened by idm itself so that its memory
//! follows `--store-memory` rather than the machine. SurrealKV sizes its
//! memtable (1 GiB on a 16–64 GiB machine) and its block cache (half the RAM
//! less 1 GiB) from the total RAM, and the SDK's `connect` passes a store
//! URL's parameters on only with a `datastore_` prefix, so neither can be
//! set through the URL. Here the `Datastore` is built with those two set, as
//! the SDK's own `connect` would build it otherwise, and handed to the SDK
//! (`Surreal::<Db>::unstable_from_datastore`: doc-hidden, which is why
//! `surrealdb` is pinned to one version).

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use surrealdb::Surreal;
use surrealdb::engine::local::Db;
use surrealdb_cnf::ConfigMap;
use surrealdb_engine_local::Datastore;

const MIB: u64 = 1024 * 1024;

/// The memory SurrealKV may keep: its memtables (writes not yet flushed to
/// disk), its block cache (pages read) and what it holds beside them (every
/// table's bloom filter, and a compaction's filter and buffers for the table
/// it writes: ~40 MiB at a million users). A memtable gets a quarter:
/// SurrealKV fills one while up to two full ones wait for their flush (it
/// stalls writes at two), so three quarters may hold writes. A transaction
/// must fit in one memtable (idm's largest, a reconciliation batch, needs a
/// few MiB). The cache gets a sixteenth, and the rest is left for the
/// filters and compaction. Measured on a million-row reconciliation in
/// 192 MiB (jemalloc with one arena): with a quarter of cache it peaked at
/// 255 MiB RSS, with an eighth at 227, with a sixteenth at 213, at the same
/// rate or better (a reconciliation reads little twice, and the system's
/// page cache still holds the tables); a sixth a memtable and a quarter of
/// cache peaked at 243 MiB and ran a little slower (more flushes to merge).
/// `auto` leaves both to SurrealKV, which sizes them from the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreMemory(Option<u64>);

impl StoreMemory {
    /// A small VM's share: three 64 MiB memtables and 16 MiB of cache.
    pub const DEFAULT: StoreMemory = StoreMemory(Some(256 * MIB));
    /// Below this a memtable (16 MiB here) could not be trusted to hold
    /// every transaction idm writes.
    pub const MIN: StoreMemory = StoreMemory(Some(64 * MIB));
    /// SurrealKV's own sizing, from the machine's memory.
    pub const AUTO: StoreMemory = StoreMemory(None);

    /// The bound in bytes; `None` for `auto`.
    pub fn bytes(self) -> Option<u64> {
        self.0
    }

    /// A quarter: SurrealKV may hold three memtables at once, the one it
    /// fills and the two full ones it lets wait for a flush before it stalls
    /// writes (`memtable_stall_threshold`, 2 in surrealkv 0.21).
    pub fn memtable(self) -> Option<u64> {
        self.0.map(|bytes| bytes / 4)
    }

    /// A sixteenth; what the memtables and the cache leave (3/16) is for
    /// SurrealKV's filters and compactions.
    pub fn block_cache(self) -> Option<u64> {
        self.0.map(|bytes| bytes / 16)
    }
}

impl Default for StoreMemory {
    fn default() -> Self {
        StoreMemory::DEFAULT
    }
}

impl fmt::Display for StoreMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            None => f.write_str("auto"),
            Some(bytes) if bytes.is_multiple_of(MIB) => write!(f, "{}MiB", bytes / MIB),
            Some(bytes) => write!(f, "{bytes}B"),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StoreMemoryError {
    #[error("expected a size such as 256MiB, 1GiB or 512M, or auto: {0:?}")]
    Malformed(String),
    #[error("{given} is below the least the store can work in ({min})")]
    TooSmall { given: String, min: StoreMemory },
}

impl FromStr for StoreMemory {
    type Err = StoreMemoryError;

    /// A whole number with an optional unit: `B`; `K`, `KiB`, `M`, `MiB`,
    /// `G`, `GiB` (powers of 1024); `KB`, `MB`, `GB` (powers of 1000). Or
    /// `auto`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let malformed = || StoreMemoryError::Malformed(s.chars().take(32).collect());
        let text = s.trim();
        if text.eq_ignore_ascii_case("auto") {
            return Ok(StoreMemory::AUTO);
        }
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (digits, unit) = text.split_at(split);
        let number: u64 = digits.parse().map_err(|_| malformed())?;
        let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kib" => 1 << 10,
            "m" | "mib" => 1 << 20,
            "g" | "gib" => 1 << 30,
            "kb" => 1_000,
            "mb" => 1_000_000,
            "gb" => 1_000_000_000,
            _ => return Err(malformed()),
        };
        let bytes = number.checked_mul(scale).ok_or_else(malformed)?;
        if StoreMemory::MIN.0.is_some_and(|min| bytes < min) {
            return Err(StoreMemoryError::TooSmall {
                given: text.to_string(),
                min: StoreMemory::MIN,
            });
        }
        Ok(StoreMemory(Some(bytes)))
    }
}

/// Opens `url` (`surrealkv://PATH?…`, its parameters as written) with its
/// memtable and block cache sized by `memory`, the way the SDK's `connect`
/// opens one: maintenance tasks started after the version check and the
/// bootstrap, so a new store gets its version key first.
/// The datastore is returned beside the SDK's handle for reads below
/// SurrealQL (`key_scan.rs`).
pub(super) async fn open_surrealkv(
    url: &str,
    memory: StoreMemory,
) -> Result<(Surreal<Db>, Arc<Datastore>), String> {
    let mut config = ConfigMap::empty();
    if let (Some(memtable), Some(cache)) = (memory.memtable(), memory.block_cache()) {
        config = config
            .with_key_value("surrealkv_max_memtable_size", memtable.to_string())
            .with_key_value("surrealkv_block_cache_capacity", cache.to_string());
    }
    let datastore: Arc<Datastore> = Datastore::builder()
        .with_config(config)
        .without_maintenance_tasks()
        .build_with_path(url)
        .await
        .map_err(|e| e.to_string())?;
    datastore.check_version().await.map_err(|e| e.to_string())?;
    datastore.bootstrap().await.map_err(|e| e.to_string())?;
    datastore.start_maintenance_tasks();
    let db = Surreal::<Db>::unstable_from_datastore(Arc::clone(&datastore), None)
        .await
        .map_err(|e| e.to_string())?;
    Ok((db, datastore))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_people_write_them_and_give_each_memtable_a_quarter() {
        for (text, bytes) in [
            ("256MiB", 256 * MIB),
            ("256M", 256 * MIB),
            ("256 mib", 256 * MIB),
            ("1GiB", 1024 * MIB),
            ("1g", 1024 * MIB),
            ("100MB", 100_000_000),
            ("67108864", 64 * MIB),
        ] {
            assert_eq!(
                text.parse::<StoreMemory>().unwrap().bytes(),
                Some(bytes),
                "{text}"
            );
        }
        let memory: StoreMemory = "192MiB".parse().unwrap();
        assert_eq!(
            (memory.memtable(), memory.block_cache()),
            (Some(48 * MIB), Some(12 * MIB))
        );
        assert_eq!(memory.to_string(), "192MiB");
        let auto: StoreMemory = "Auto".parse().unwrap();
        assert_eq!(auto, StoreMemory::AUTO);
        assert_eq!((auto.memtable(), auto.to_string()), (None, "auto".into()));
        for bad in ["", "MiB", "12XB", "-5M", "1.5G", "99999999999999999999G"] {
            assert!(
                matches!(
                    bad.parse::<StoreMemory>(),
                    Err(StoreMemoryError::Malformed(_))
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            "16MiB".parse::<StoreMemory>(),
            Err(StoreMemoryError::TooSmall { .. })
        ));
    }

    /// SurrealKV refuses a transaction larger than its memtable: a write of
    /// ~24 MiB fails in 64 MiB (a 16 MiB memtable) and succeeds in 256 MiB,
    /// so the size given is the size SurrealKV works in.
    #[tokio::test]
    async fn the_memtable_is_the_size_given() {
        let dir = std::env::temp_dir().join(format!("idm-embedded-{}", uuid::Uuid::new_v4()));
        let rows: Vec<serde_json::Value> = (0..12_000)
            .map(|i| serde_json::json!({ "n": i, "data": "x".repeat(2_000) }))
            .collect();
        let mut outcomes = Vec::new();
        for (name, memory) in [
            ("small", StoreMemory::MIN),
            ("default", StoreMemory::DEFAULT),
        ] {
            let url = format!("surrealkv://{}", dir.join(name).display());
            let (db, _) = open_surrealkv(&url, memory).await.unwrap();
            db.use_ns("t").use_db("t").await.unwrap();
            let outcome = db
                .query("INSERT INTO blob $rows RETURN NONE")
                .bind(("rows", rows.clone()))
                .await
                .and_then(|response| response.check());
            outcomes.push(outcome.map(|_| ()).map_err(|e| e.to_string()));
        }
        assert!(
            outcomes[0]
                .as_ref()
                .is_err_and(|e| e.contains("Memtable arena is full")),
            "{outcomes:?}"
        );
        assert!(outcomes[1].is_ok(), "{outcomes:?}");
        let _ = std::fs::remove_dir_all(dir);
    }

    /// idm builds surrealkv with its table writers' bloom filters made from
    /// key digests (a flush) or sized up front and filled key by key (a
    /// compaction; vendor/surrealkv/PATCHED.md). Point reads consult those
    /// filters, so a wrong one would lose records: ~120 MiB through a 16 MiB
    /// memtable flushes several tables and compacts them, and every record
    /// still reads back by its id.
    #[tokio::test]
    async fn records_read_back_by_id_after_flushes_and_a_compaction() {
        let dir = std::env::temp_dir().join(format!("idm-compaction-{}", uuid::Uuid::new_v4()));
        let (db, _) = open_surrealkv(&format!("surrealkv://{}", dir.display()), StoreMemory::MIN)
            .await
            .unwrap();
        db.use_ns("t").use_db("t").await.unwrap();
        const BATCHES: usize = 30;
        const ROWS: usize = 2_000;
        for batch in 0..BATCHES {
            let rows: Vec<serde_json::Value> = (0..ROWS)
                .map(|i| {
                    let n = batch * ROWS + i;
                    serde_json::json!({ "id": n, "n": n, "data": "x".repeat(2_000) })
                })
                .collect();
            db.query("INSERT INTO blob $rows RETURN NONE")
                .bind(("rows", rows))
                .await
                .and_then(|response| response.check())
                .unwrap();
        }
        // Tables are numbered from 1 as they are written (flushed or
        // compacted); a compaction deletes the tables it merged, so fewer
        // files than the highest number means one ran (in the background,
        // once four tables wait in L0).
        let tables = || -> (usize, u64) {
            let ids: Vec<u64> = std::fs::read_dir(dir.join("sstables"))
                .map(|entries| {
                    entries
                        .filter_map(|e| e.ok()?.path().file_stem()?.to_str()?.parse().ok())
                        .collect()
                })
                .unwrap_or_default();
            (ids.len(), ids.into_iter().max().unwrap_or(0))
        };
        let compacted = |(files, highest): (usize, u64)| highest >= 5 && (files as u64) < highest;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !compacted(tables()) && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        assert!(
            compacted(tables()),
            "tables (files, highest id): {:?}",
            tables()
        );
        let total = BATCHES * ROWS;
        let found: Vec<i64> = db
            .query("SELECT VALUE n FROM array::map($ns, |$n| type::record('blob', $n))")
            .bind(("ns", (0..total).collect::<Vec<usize>>()))
            .await
            .unwrap()
            .take(0)
            .unwrap();
        assert_eq!(found.len(), total);
        assert!(found.iter().enumerate().all(|(i, n)| *n == i as i64));
        let _ = std::fs::remove_dir_all(dir);
    }
}
