//! Sets (and small maps) of ids by their 64-bit hash, at about the hash's
//! own size an entry: a run over a million-row file remembers every id it
//! has met (duplicate uids in a CSV file, the sources and targets a
//! reconciliation has seen) without the memory following the ids' length or
//! a hash table's slack.
//!
//! A `HashSet<u64>` costs 9 bytes a bucket at up to 87.5 % load and doubles
//! when it grows, with both tables alive while it rehashes: 19–28 MiB for a
//! million ids, where the hashes themselves are 8. Here new entries wait in
//! a small hash map and are merged, sorted, into one vector that grows
//! without slack; a lookup is a binary search plus a hash probe.
//!
//! The hash is SipHash with fixed keys, the same in every process, which is
//! fine for ids the operator's own files and store supply: a collision can
//! only make two ids look alike (about 1 in 10^7 per million ids).

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};

/// New entries gathered before they are merged into the sorted vector
/// (about half a MiB of hash map at most).
const RECENT: usize = 16 * 1024;

/// Ids by hash, each with a `V` (`()` for a set).
#[derive(Debug)]
pub struct HashedIds<V = ()> {
    sorted: Vec<(u64, V)>,
    recent: HashMap<u64, V>,
}

impl<V> Default for HashedIds<V> {
    fn default() -> Self {
        HashedIds {
            sorted: Vec::new(),
            recent: HashMap::new(),
        }
    }
}

/// The 64-bit hash an id is kept by.
pub fn hash_id(id: &str) -> u64 {
    BuildHasherDefault::<DefaultHasher>::default().hash_one(id)
}

impl<V: Copy> HashedIds<V> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.sorted.len() + self.recent.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The value kept for `hash`, if any.
    pub fn get(&self, hash: u64) -> Option<V> {
        if let Some(value) = self.recent.get(&hash) {
            return Some(*value);
        }
        self.sorted
            .binary_search_by_key(&hash, |(h, _)| *h)
            .ok()
            .map(|at| self.sorted[at].1)
    }

    pub fn contains(&self, hash: u64) -> bool {
        self.get(hash).is_some()
    }

    /// The value already kept for `hash`, or `value`, now kept.
    pub fn get_or_insert(&mut self, hash: u64, value: V) -> V {
        if let Some(kept) = self.get(hash) {
            return kept;
        }
        self.recent.insert(hash, value);
        if self.recent.len() >= RECENT {
            self.merge_recent();
        }
        value
    }

    /// Moves the recent entries into the sorted vector: sorts them, then
    /// merges from the back, in place (the two sets of keys are disjoint).
    fn merge_recent(&mut self) {
        let mut fresh: Vec<(u64, V)> = self.recent.drain().collect();
        fresh.sort_unstable_by_key(|(h, _)| *h);
        let old = self.sorted.len();
        // Room for an eighth more than needed, so a long run reallocates
        // (and copies) the vector about every eighth of its size, not at
        // every merge.
        self.sorted.reserve_exact(fresh.len().max(old / 8));
        self.sorted.extend_from_slice(&fresh);
        let (mut i, mut j) = (old, fresh.len());
        let mut k = old + fresh.len();
        while j > 0 {
            k -= 1;
            if i > 0 && self.sorted[i - 1].0 > fresh[j - 1].0 {
                self.sorted[k] = self.sorted[i - 1];
                i -= 1;
            } else {
                self.sorted[k] = fresh[j - 1];
                j -= 1;
            }
        }
    }
}

impl HashedIds<()> {
    /// Adds `hash`; false if it was there.
    pub fn insert(&mut self, hash: u64) -> bool {
        let before = self.len();
        self.get_or_insert(hash, ());
        self.len() > before
    }
}

impl Extend<u64> for HashedIds<()> {
    fn extend<I: IntoIterator<Item = u64>>(&mut self, hashes: I) {
        for hash in hashes {
            self.insert(hash);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// A cheap deterministic stream of hashes (splitmix64), with repeats.
    fn stream(n: usize) -> impl Iterator<Item = u64> {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        (0..n).map(move |i| {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            // Every seventh value repeats one from a while back.
            if i % 7 == 6 { z % 50_000 } else { z }
        })
    }

    #[test]
    fn agrees_with_a_hash_map_across_many_merges() {
        let mut ids = HashedIds::<u64>::new();
        let mut model = HashMap::new();
        for (n, hash) in stream(RECENT * 9 + 123).enumerate() {
            let line = n as u64;
            let kept = ids.get_or_insert(hash, line);
            assert_eq!(kept, *model.entry(hash).or_insert(line), "hash {hash}");
        }
        assert_eq!(ids.len(), model.len());
        assert!(ids.sorted.len() >= RECENT * 8, "entries were merged");
        assert!(ids.sorted.windows(2).all(|w| w[0].0 < w[1].0));
        for (hash, line) in &model {
            assert_eq!(ids.get(*hash), Some(*line));
        }
        for absent in [1u64, 2, u64::MAX, 0xdead_beef] {
            assert_eq!(ids.get(absent), model.get(&absent).copied());
        }
    }

    #[test]
    fn a_set_answers_membership_and_first_insertion() {
        let mut set = HashedIds::new();
        assert!(set.is_empty());
        set.extend((0..(RECENT as u64 * 3)).map(|n| n * 2));
        assert_eq!(set.len(), RECENT * 3);
        assert!(set.contains(0) && set.contains(4) && set.contains(RECENT as u64 * 6 - 2));
        assert!(!set.contains(3) && !set.contains(RECENT as u64 * 6));
        assert!(!set.insert(4), "already there");
        assert!(set.insert(5));
        assert!(set.contains(5));
        assert_eq!(hash_id("snow123"), hash_id("snow123"));
        assert_ne!(hash_id("snow123"), hash_id("doe456"));
    }

    #[test]
    fn a_million_ids_cost_about_their_hashes() {
        let mut set = HashedIds::new();
        set.extend(stream(1_000_000));
        let bytes =
            set.sorted.capacity() * std::mem::size_of::<(u64, ())>() + set.recent.capacity() * 9;
        assert!(
            bytes < 11 * 1024 * 1024,
            "{bytes} bytes for {} ids",
            set.len()
        );
    }
}
