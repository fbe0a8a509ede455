//! Links: which source object a mapping tied to which target object. A
//! reconciliation reads them in batches and writes them with its changes.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{Store, StoreError};

/// `link:[mapping, source id]`; indexed by `[mapping, target]` for the target phase.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    pub mapping: String,
    pub source: String,
    pub target: String,
}

impl Store {
    /// Creates or moves links, in one transaction.
    pub async fn put_links(&self, links: &[Link]) -> Result<(), StoreError> {
        if links.is_empty() {
            return Ok(());
        }
        let rows: Vec<Value> = links
            .iter()
            .map(|l| json!({ "id": [l.mapping, l.source], "mapping": l.mapping, "source": l.source, "target": l.target }))
            .collect();
        self.execute(
            "BEGIN; FOR $row IN $rows { UPSERT type::record('link', $row.id) CONTENT { mapping: $row.mapping, source: $row.source, target: $row.target } RETURN NONE; }; COMMIT;",
            json!({ "rows": rows }),
        )
        .await
    }

    /// Removes the links of these source ids; removing what is gone succeeds.
    pub async fn delete_links(&self, mapping: &str, sources: &[String]) -> Result<(), StoreError> {
        if sources.is_empty() {
            return Ok(());
        }
        let ids: Vec<Value> = sources.iter().map(|s| json!([mapping, s])).collect();
        self.execute(
            "BEGIN; FOR $id IN $ids { DELETE type::record('link', $id) RETURN NONE; }; COMMIT;",
            json!({ "ids": ids }),
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
        let ids: Vec<Value> = sources.iter().map(|s| json!([mapping, s])).collect();
        self.query_all(
            "SELECT mapping, source, target FROM array::map($ids, |$id| type::record('link', $id))",
            json!({ "ids": ids }),
        )
        .await
    }

    /// The links pointing at a target (more than one means two sources claim it).
    pub async fn links_to_target(
        &self,
        mapping: &str,
        target: &str,
    ) -> Result<Vec<Link>, StoreError> {
        self.query_all(
            "SELECT mapping, source, target FROM link WHERE mapping = $mapping AND target = $target",
            json!({ "mapping": mapping, "target": target }),
        )
        .await
    }

    /// One page of a mapping's links in source order, after `after` (exclusive):
    /// keyset paging, so a long walk neither skips nor repeats.
    pub async fn links_page(
        &self,
        mapping: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Link>, StoreError> {
        let after_clause = if after.is_some() {
            "AND source > $after"
        } else {
            ""
        };
        self.query_all(
            &format!(
                "SELECT mapping, source, target FROM link WHERE mapping = $mapping {after_clause} \
                 ORDER BY source LIMIT $limit"
            ),
            json!({ "mapping": mapping, "after": after, "limit": limit }),
        )
        .await
    }

    pub async fn count_links(&self, mapping: &str) -> Result<u64, StoreError> {
        #[derive(Deserialize)]
        struct Count {
            n: u64,
        }
        let count: Option<Count> = self
            .query_one(
                "SELECT count() AS n FROM link WHERE mapping = $mapping GROUP ALL",
                json!({ "mapping": mapping }),
            )
            .await?;
        Ok(count.map_or(0, |c| c.n))
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
            store.links_to_target(mapping, "snow123").await.unwrap(),
            [link("123", "snow123")]
        );

        store.put_links(&[link("123", "stark123")]).await.unwrap();
        assert!(
            store
                .links_to_target(mapping, "snow123")
                .await
                .unwrap()
                .is_empty(),
            "a link moves, it does not duplicate"
        );

        let first = store.links_page(mapping, None, 2).await.unwrap();
        assert_eq!(
            first.iter().map(|l| l.source.as_str()).collect::<Vec<_>>(),
            ["123", "456"]
        );
        let rest = store.links_page(mapping, Some("456"), 2).await.unwrap();
        assert_eq!(rest, [link("789", "doe789")]);

        store
            .delete_links(mapping, &["456".into(), "nope".into()])
            .await
            .unwrap();
        assert_eq!(store.count_links(mapping).await.unwrap(), 2);
        assert_eq!(store.count_links("other").await.unwrap(), 1);
    }
}
