//! idm's sixth SurrealKV patch (vendor/surrealkv/PATCHED.md): a compaction
//! cuts its output into tables of a target size, and moves a table that
//! overlaps nothing below it down unmerged. Checked here against a model, on
//! a tree whose levels are a few hundred KiB, so that a few MiB of writes
//! run every path many times: sequential keys (ids that grow with time, as
//! audit entries'), random ones, overwrites and deletes, before and after a
//! reopen.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;

use surrealkv::{LSMIterator, Options, Tree, TreeBuilder};

const LEVEL_BYTES: u64 = 256 * 1024;

fn open(dir: &Path) -> Tree {
    let mut options = Options::default();
    options.max_bytes_for_level = LEVEL_BYTES;
    options.level0_max_files = 2;
    TreeBuilder::with_options(options)
        .with_path(dir.to_path_buf())
        .with_max_memtable_size(128 * 1024)
        .with_block_size(1024)
        .build()
        .unwrap()
}

/// A key of one of three "tables": `a` grows with each write, `b` and `c`
/// are spread (`c` is also overwritten and deleted).
fn key(table: u8, n: u64) -> Vec<u8> {
    let id = match table {
        b'a' => n,
        _ => n.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17),
    };
    let mut key = vec![table, b'/'];
    key.extend_from_slice(&id.to_be_bytes());
    key
}

fn value(key: &[u8], version: u64) -> Vec<u8> {
    let mut value = format!("{key:?}@{version}:").into_bytes();
    value.resize(96, b'.');
    value
}

async fn write(tree: &Tree, model: &mut BTreeMap<Vec<u8>, Vec<u8>>, rounds: u64) {
    let mut next = model.len() as u64;
    for round in 0..rounds {
        let mut tx = tree.begin().unwrap();
        for _ in 0..25 {
            for table in [b'a', b'b', b'c'] {
                let k = key(table, next);
                let v = value(&k, round);
                tx.set(k.clone(), v.clone()).unwrap();
                model.insert(k, v);
            }
            // An earlier `c` key: overwritten, or deleted one time in three.
            let old = key(b'c', next / 2);
            if next.is_multiple_of(3) {
                tx.delete(old.clone()).unwrap();
                model.remove(&old);
            } else {
                let v = value(&old, round + 1_000_000);
                tx.set(old.clone(), v.clone()).unwrap();
                model.insert(old, v);
            }
            next += 1;
        }
        tx.commit().await.unwrap();
    }
}

fn check(tree: &Tree, model: &BTreeMap<Vec<u8>, Vec<u8>>) {
    let tx = tree.begin().unwrap();
    for (k, v) in model {
        assert_eq!(tx.get(k.as_slice()).unwrap().as_ref(), Some(v), "{k:?}");
    }
    for n in (0..model.len() as u64).step_by(7) {
        let k = key(b'c', n / 2);
        assert_eq!(
            tx.get(k.as_slice()).unwrap().as_ref(),
            model.get(&k),
            "{k:?}"
        );
    }
    let mut scan = tx.range(b"a".to_vec(), b"d".to_vec()).unwrap();
    let mut seen = Vec::new();
    let mut valid = scan.seek_first().unwrap();
    while valid {
        seen.push((scan.key().user_key().to_vec(), scan.value().unwrap()));
        valid = scan.next().unwrap();
    }
    assert_eq!(seen.len(), model.len(), "a scan sees every live key once");
    assert!(
        seen.iter()
            .zip(model)
            .all(|(s, (k, v))| &s.0 == k && &s.1 == v),
        "a scan sees the model, in order"
    );
}

/// The tables the tree holds (SurrealKV keeps them in `sstables/`).
fn table_files(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("sstables"))
        .unwrap()
        .flatten()
        .filter(|entry| entry.path().extension().is_some_and(|e| e == "sst"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compactions_cut_and_move_tables_and_lose_nothing() {
    let dir = std::env::temp_dir().join(format!("idm-skv-{}", uuid::Uuid::new_v4()));
    let mut model = BTreeMap::new();
    let tree = open(&dir);
    write(&tree, &mut model, 480).await;
    check(&tree, &model);
    tree.close().await.unwrap();

    let tree = open(&dir);
    check(&tree, &model);
    write(&tree, &mut model, 240).await;
    check(&tree, &model);
    tree.close().await.unwrap();

    // Without the cut, a level past L0 is one table: at most 12 L0 tables
    // (the stall) and one a level.
    let tables = table_files(&dir);
    assert!(
        tables > 20,
        "{tables} tables: the compactions' output was not cut"
    );
    let tree = open(&dir);
    check(&tree, &model);
    tree.close().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
