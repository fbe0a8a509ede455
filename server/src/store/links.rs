//! Links: which source object a mapping tied to which target object. A
//! reconciliation reads them in batches and writes them with its changes.
//!
//! `link:[mapping, source]` holds the target and is the truth. Finding the
//! source of a target goes through `link_target:[mapping, target]` (the
//! source), a record-id lookup rather than an index: an index on the link
//! table cost a reconciliation's create transactions more than the objects
//! themselves. A reverse record can go stale when a link moves; readers
//! check it against the forward link, so a stale one is simply ignored.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{Store, StoreError};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    pub mapping: String,
    pub source: String,
    pub target: String,
}

/// Writes the rows bound as `$links` and `$reverse` (see [`link_rows`]).
pub(super) const PUT_LINKS: &str = "INSERT INTO link $links ON DUPLICATE KEY UPDATE target = $input.target RETURN NONE; \
     INSERT INTO link_target $reverse ON DUPLICATE KEY UPDATE source = $input.source RETURN NONE;";

/// [`PUT_LINKS`] for rows bound as `$moved` and `$moved_reverse`.
pub(super) const MOVE_LINKS: &str = "INSERT INTO link $moved ON DUPLICATE KEY UPDATE target = $input.target RETURN NONE; \
     INSERT INTO link_target $moved_reverse ON DUPLICATE KEY UPDATE source = $input.source RETURN NONE;";

/// Writes new links (none of their sources may be linked yet): plain inserts
/// cost a third of the upserts inside a large create transaction.
pub(super) const INSERT_LINKS: &str =
    "INSERT INTO link $links RETURN NONE; INSERT INTO link_target $reverse RETURN NONE;";

/// Removes the links of `$mapping` from the sources bound as `$sources`
/// (and their reverse records, unless they moved on).
pub(super) const DELETE_LINKS: &str = "FOR $source IN $sources { \
       LET $link = type::record('link', [$mapping, $source]); \
       LET $reverse = type::record('link_target', [$mapping, $link.target]); \
       IF $link.target != NONE AND $reverse.source == $source { DELETE $reverse RETURN NONE; }; \
       DELETE $link RETURN NONE; \
     };";

/// `(links, reverse)` rows for [`PUT_LINKS`] and [`INSERT_LINKS`].
pub(super) fn link_rows(links: &[Link]) -> (Vec<Value>, Vec<Value>) {
    links
        .iter()
        .map(|l| {
            (
                json!({ "id": [l.mapping, l.source], "mapping": l.mapping, "source": l.source, "target": l.target }),
                json!({ "id": [l.mapping, l.target], "source": l.source }),
            )
        })
        .unzip()
}

impl Store {
    /// Creates or moves links, in one transaction.
    pub async fn put_links(&self, links: &[Link]) -> Result<(), StoreError> {
        if links.is_empty() {
            return Ok(());
        }
        let (links, reverse) = link_rows(links);
        self.execute(
            &format!("BEGIN; {PUT_LINKS} COMMIT;"),
            json!({ "links": links, "reverse": reverse }),
        )
        .await
    }

    /// Removes the links of these source ids; removing what is gone succeeds.
    pub async fn delete_links(&self, mapping: &str, sources: &[String]) -> Result<(), StoreError> {
        if sources.is_empty() {
            return Ok(());
        }
        self.execute(
            &format!("BEGIN; {DELETE_LINKS} COMMIT;"),
            json!({ "mapping": mapping, "sources": sources }),
        )
        .await
    }

    /// The links of these source ids (those that have one).
    pub async fn links_of_sources(
        &self,
        mapping: &str,
        sources: &[String],
    ) -> Result<Vec<Link>, StoreError> {
        if sources.is_empty() {
            return Ok(Vec::new());
        }
        self.records(
            "mapping, source, target",
            "link",
            sources.iter().map(|source| [mapping, source.as_str()]),
        )
        .await
    }

    /// The links pointing at any of these targets.
    pub async fn links_to_targets(
        &self,
        mapping: &str,
        targets: &[String],
    ) -> Result<Vec<Link>, StoreError> {
        if targets.is_empty() {
            return Ok(Vec::new());
        }
        self.query_all(
            "RETURN array::filter(
                 array::map($targets, |$t| { mapping: $mapping, target: $t,
                     source: type::record('link_target', [$mapping, $t]).source }),
                 |$l| $l.source != NONE
                     AND type::record('link', [$mapping, $l.source]).target == $l.target)",
            json!({ "mapping": mapping, "targets": targets }),
        )
        .await
    }

    /// A page of a mapping's links as `(source, target)`, in source-id
    /// order: at most `limit`, after the source `after` (from the first when
    /// `None`). Walking a mapping's links page by page keeps memory bounded
    /// whatever their number.
    pub async fn links_page(
        &self,
        mapping: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, String)>, StoreError> {
        self.range_page("[source, target]", "link", mapping, after, limit)
            .await
    }

    /// A page of a mapping's linked source ids, in source order: at most
    /// `limit`, after the source `after`. An embedded store reads them from
    /// the links' keys alone (key_scan.rs).
    pub async fn link_sources_page(
        &self,
        mapping: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        match &self.key_scan {
            Some(keys) => keys.ids_page("link", mapping, after, limit).await,
            None => {
                self.range_page("source", "link", mapping, after, limit)
                    .await
            }
        }
    }

    /// How many links a mapping has: a key-range count, nothing decoded.
    pub async fn count_links(&self, mapping: &str) -> Result<u64, StoreError> {
        self.count(
            "SELECT count() AS n FROM link:[$mapping, NONE]..[$mapping, ..] GROUP ALL",
            json!({ "mapping": mapping }),
        )
        .await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn link(source: &str, target: &str) -> Link {
        Link {
            mapping: "csvEmployee_managedUser".into(),
            source: source.into(),
            target: target.into(),
        }
    }

    #[tokio::test]
    async fn links_are_kept_per_mapping_and_found_both_ways() {
        let store = Store::open("mem://").await.unwrap();
        let mapping = "csvEmployee_managedUser";
        store
            .put_links(&[
                link("123", "snow123"),
                link("456", "doe456"),
                link("789", "doe789"),
            ])
            .await
            .unwrap();
        store
            .put_links(&[Link {
                mapping: "other".into(),
                source: "123".into(),
                target: "x".into(),
            }])
            .await
            .unwrap();
        assert_eq!(store.count_links(mapping).await.unwrap(), 3);

        let found = store
            .links_of_sources(mapping, &["456".into(), "999".into()])
            .await
            .unwrap();
        assert_eq!(found, [link("456", "doe456")]);
        assert_eq!(
            store
                .links_to_targets(mapping, &["snow123".into(), "nobody".into()])
                .await
                .unwrap(),
            [link("123", "snow123")]
        );

        store.put_links(&[link("123", "stark123")]).await.unwrap();
        assert!(
            store
                .links_to_targets(mapping, &["snow123".into()])
                .await
                .unwrap()
                .is_empty(),
            "a link moves, it does not duplicate"
        );
        assert_eq!(
            store
                .links_to_targets(mapping, &["stark123".into()])
                .await
                .unwrap(),
            [link("123", "stark123")]
        );

        let pair = |s: &str, t: &str| (s.to_string(), t.to_string());
        assert_eq!(
            store.links_page(mapping, None, 10).await.unwrap(),
            [
                pair("123", "stark123"),
                pair("456", "doe456"),
                pair("789", "doe789")
            ]
        );
        assert_eq!(
            store.links_page(mapping, None, 2).await.unwrap(),
            [pair("123", "stark123"), pair("456", "doe456")]
        );
        assert_eq!(
            store.links_page(mapping, Some("456"), 2).await.unwrap(),
            [pair("789", "doe789")],
            "a page starts after the last source of the one before"
        );
        assert!(
            store
                .links_page(mapping, Some("789"), 2)
                .await
                .unwrap()
                .is_empty()
        );

        store
            .delete_links(mapping, &["456".into(), "nope".into()])
            .await
            .unwrap();
        assert_eq!(store.count_links(mapping).await.unwrap(), 2);
        assert!(
            store
                .links_to_targets(mapping, &["doe456".into()])
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(store.count_links("other").await.unwrap(), 1);
    }
}
