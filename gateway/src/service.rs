//! The SCIM service provider's operations, free of HTTP: read, create,
//! replace, patch, delete and list resources, each a few gRPC calls on the core
//! with the attribute map in between. The HTTP handlers and `/Bulk` both call
//! these.

use std::sync::Arc;

use idm_proto::v1::{ManagedObject, QueryObjectsRequest};
use serde_json::{Map, Value};
use tracing::instrument;

use crate::core::{Bearer, Core};
use crate::mapping::{AttributeMap, Rewritten, Unknown};
use crate::scim::discovery::Limits;
use crate::scim::error::ScimError;
use crate::scim::messages::{ListRequest, PatchRequest, SortOrder};
use crate::scim::normalize::{self, Mode};
use crate::scim::patch;
use crate::scim::project::Projection;
use crate::scim::resources::ResourceBody;
use crate::scim::schema::{Kind, Registry, ResourceType};

/// How many times a PATCH or PUT without `If-Match` re-reads and retries when
/// another write got in between its read and its write.
const WRITE_ATTEMPTS: usize = 3;

pub struct Scim {
    pub registry: Arc<Registry>,
    pub maps: AttributeMap,
    pub core: Core,
    pub limits: Limits,
}

/// One resource as SCIM shows it.
#[derive(Debug, Clone)]
pub struct Resource {
    pub kind: Kind,
    pub id: String,
    pub revision: i64,
    /// `id`, the attributes and `meta`; `projected` adds `schemas` from what
    /// is left after projection.
    pub body: Map<String, Value>,
}

impl Resource {
    /// The weak ETag (`W/"<revision>"`), also `meta.version`.
    pub fn etag(&self) -> String {
        etag(self.revision)
    }

    pub fn location(&self) -> Option<&str> {
        self.body.get("meta")?.get("location")?.as_str()
    }

    /// The body to send: `attributes` / `excludedAttributes` applied (which
    /// also sets `schemas`), then the typed resource, which fixes names, order
    /// and what is never sent.
    pub fn projected(
        mut self,
        registry: &Registry,
        projection: &Projection,
    ) -> Result<ResourceBody, ScimError> {
        projection.apply(registry.resource_type(self.kind), &mut self.body);
        ResourceBody::from_canonical(self.kind, self.body).map_err(|e| {
            ScimError::internal(format!("a {} did not fit its type: {e}", self.kind.name()))
        })
    }
}

pub fn etag(revision: i64) -> String {
    format!("W/\"{revision}\"")
}

/// `If-Match` / `If-None-Match`: `*` or a list of ETags.
#[derive(Debug, Clone, PartialEq)]
pub enum Precondition {
    Any,
    Revisions(Vec<i64>),
}

impl Precondition {
    /// ETags that are not this server's match nothing.
    pub fn parse(header: &str) -> Precondition {
        if header.trim() == "*" {
            return Precondition::Any;
        }
        Precondition::Revisions(
            header
                .split(',')
                .filter_map(|tag| {
                    tag.trim()
                        .trim_start_matches("W/")
                        .trim_matches('"')
                        .parse()
                        .ok()
                })
                .collect(),
        )
    }

    pub fn matches(&self, revision: i64) -> bool {
        match self {
            Precondition::Any => true,
            Precondition::Revisions(revisions) => revisions.contains(&revision),
        }
    }
}

/// A page of resources.
pub struct Listing {
    pub total: u64,
    pub start_index: u64,
    pub resources: Vec<Resource>,
}

impl Scim {
    fn resource_type(&self, kind: Kind) -> &ResourceType {
        self.registry.resource_type(kind)
    }

    fn object_name(&self, kind: Kind, id: &str) -> Result<String, ScimError> {
        if id.is_empty() || id.contains('/') || id.chars().any(char::is_control) {
            return Err(ScimError::not_found(format!(
                "{} {id} not found",
                kind.name()
            )));
        }
        Ok(format!("{}/{id}", self.maps.for_kind(kind).collection))
    }

    /// A managed object as a SCIM resource.
    fn view(&self, kind: Kind, object: &ManagedObject, base: &str) -> Resource {
        let resource_type = self.resource_type(kind);
        let managed = object
            .attributes
            .as_ref()
            .map(idm_proto::json::from_proto_struct)
            .unwrap_or_default();
        let attributes =
            self.maps
                .for_kind(kind)
                .to_scim(&self.maps, resource_type, &managed, base);
        let mut body = Map::new();
        body.insert("id".into(), Value::String(object.id.clone()));
        body.extend(attributes);
        let mut meta = Map::new();
        meta.insert("resourceType".into(), kind.name().into());
        if let Some(created) = object.create_time.as_ref().and_then(rfc3339) {
            meta.insert("created".into(), created.into());
        }
        if let Some(modified) = object.update_time.as_ref().and_then(rfc3339) {
            meta.insert("lastModified".into(), modified.into());
        }
        meta.insert(
            "location".into(),
            format!("{base}{}/{}", kind.endpoint(), object.id).into(),
        );
        meta.insert("version".into(), etag(object.revision).into());
        body.insert("meta".into(), Value::Object(meta));
        Resource {
            kind,
            id: object.id.clone(),
            revision: object.revision,
            body,
        }
    }

    /// The canonical attributes of a resource body a client sent.
    fn accept(&self, kind: Kind, body: &Value) -> Result<Map<String, Value>, ScimError> {
        let resource_type = self.resource_type(kind);
        let attributes = normalize::resource(resource_type, body, Mode::Write)?;
        normalize::required_present(resource_type, &attributes)?;
        Ok(attributes)
    }

    #[instrument(skip_all, fields(kind = kind.name(), id))]
    pub async fn get(
        &self,
        bearer: &Bearer,
        kind: Kind,
        id: &str,
        base: &str,
    ) -> Result<Resource, ScimError> {
        let object = self.core.get(bearer, &self.object_name(kind, id)?).await?;
        Ok(self.view(kind, &object, base))
    }

    #[instrument(skip_all, fields(kind = kind.name()))]
    pub async fn create(
        &self,
        bearer: &Bearer,
        kind: Kind,
        body: &Value,
        base: &str,
    ) -> Result<Resource, ScimError> {
        let attributes = self.accept(kind, body)?;
        let map = self.maps.for_kind(kind);
        let managed = map.to_managed(&self.maps, &attributes)?;
        let object = self.core.create(bearer, &map.collection, &managed).await?;
        Ok(self.view(kind, &object, base))
    }

    #[instrument(skip_all, fields(kind = kind.name(), id))]
    pub async fn replace(
        &self,
        bearer: &Bearer,
        kind: Kind,
        id: &str,
        body: &Value,
        if_match: Option<&Precondition>,
        base: &str,
    ) -> Result<Resource, ScimError> {
        let attributes = self.accept(kind, body)?;
        self.write(bearer, kind, id, if_match, base, |_| Ok(attributes.clone()))
            .await
    }

    #[instrument(skip_all, fields(kind = kind.name(), id))]
    pub async fn patch(
        &self,
        bearer: &Bearer,
        kind: Kind,
        id: &str,
        patch: &PatchRequest,
        if_match: Option<&Precondition>,
        base: &str,
    ) -> Result<Resource, ScimError> {
        let resource_type = self.resource_type(kind);
        self.write(bearer, kind, id, if_match, base, |current| {
            let mut attributes = current.clone();
            patch::apply(resource_type, &mut attributes, &patch.operations)?;
            Ok(attributes)
        })
        .await
    }

    /// Read, compute the new SCIM attributes from the current ones, write them
    /// at the revision read. Without `If-Match`, a concurrent write makes it
    /// read again; with one, it is the client's 412.
    async fn write(
        &self,
        bearer: &Bearer,
        kind: Kind,
        id: &str,
        if_match: Option<&Precondition>,
        base: &str,
        change: impl Fn(&Map<String, Value>) -> Result<Map<String, Value>, ScimError>,
    ) -> Result<Resource, ScimError> {
        let name = self.object_name(kind, id)?;
        let map = self.maps.for_kind(kind);
        let resource_type = self.resource_type(kind);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let object = self.core.get(bearer, &name).await?;
            if let Some(precondition) = if_match
                && !precondition.matches(object.revision)
            {
                return Err(ScimError::precondition_failed(format!(
                    "{} {id} is at version {}, not the one If-Match names",
                    kind.name(),
                    etag(object.revision)
                )));
            }
            let stored = object
                .attributes
                .as_ref()
                .map(idm_proto::json::from_proto_struct)
                .unwrap_or_default();
            let current = map.to_scim(&self.maps, resource_type, &stored, base);
            let changed = change(&current)?;
            let merged = map.merge(&stored, map.to_managed(&self.maps, &changed)?);
            match self
                .core
                .replace(bearer, &name, &merged, object.revision)
                .await
            {
                Ok(object) => return Ok(self.view(kind, &object, base)),
                Err(e) if e.status == 412 && if_match.is_none() && attempt < WRITE_ATTEMPTS => {
                    continue;
                }
                Err(e) => return Err(e),
            }
        }
    }

    #[instrument(skip_all, fields(kind = kind.name(), id))]
    pub async fn delete(
        &self,
        bearer: &Bearer,
        kind: Kind,
        id: &str,
        if_match: Option<&Precondition>,
    ) -> Result<(), ScimError> {
        let name = self.object_name(kind, id)?;
        let expected = match if_match {
            None | Some(Precondition::Any) => None,
            Some(Precondition::Revisions(revisions)) => match revisions.as_slice() {
                [one] => Some(*one),
                _ => {
                    let object = self.core.get(bearer, &name).await?;
                    if !revisions.contains(&object.revision) {
                        return Err(ScimError::precondition_failed(
                            "If-Match names another version",
                        ));
                    }
                    Some(object.revision)
                }
            },
        };
        if self.core.delete(bearer, &name, expected).await? {
            Ok(())
        } else {
            Err(ScimError::not_found(format!(
                "{} {id} not found",
                kind.name()
            )))
        }
    }

    /// A list or search over one resource type, or over several (the root
    /// `/.search`: users first, then groups; attributes a type does not have
    /// match nothing there).
    // A filter holds values (a name, a mail): its span is at debug only.
    #[instrument(level = "debug", skip_all, fields(filter = request.filter.as_deref().unwrap_or("")))]
    pub async fn list(
        &self,
        bearer: &Bearer,
        kinds: &[Kind],
        request: &ListRequest,
        base: &str,
    ) -> Result<Listing, ScimError> {
        let parsed = match request
            .filter
            .as_deref()
            .map(str::trim)
            .filter(|f| !f.is_empty())
        {
            None => None,
            Some(text) => Some(
                idm_proto::filter::parse(text)
                    .map_err(|e| ScimError::invalid_filter(format!("filter: {e}")))?,
            ),
        };
        let unknown = if kinds.len() == 1 {
            Unknown::Reject
        } else {
            Unknown::NoMatch
        };
        let wanted = request
            .count
            .unwrap_or(self.limits.max_results.min(100))
            .min(self.limits.max_results);
        let mut skip = request.start_index - 1;
        let mut resources = Vec::new();
        let mut total = 0;
        for &kind in kinds {
            let map = self.maps.for_kind(kind);
            let resource_type = self.resource_type(kind);
            let filter = match &parsed {
                None => Some(String::new()),
                Some(filter) => {
                    let rewritten =
                        map.rewrite_filter(&self.maps, resource_type, filter, unknown)?;
                    within_limits(&rewritten)?;
                    rewritten.into_core_filter()
                }
            };
            let Some(filter) = filter else {
                continue;
            };
            // Across types, a sort key one type lacks leaves that type unsorted.
            let key = match request
                .sort_by
                .as_deref()
                .map(|s| map.sort_key(resource_type, s))
            {
                None => None,
                Some(Ok(key)) => Some(key),
                Some(Err(error)) if unknown == Unknown::Reject => return Err(error),
                Some(Err(_)) => None,
            };
            let order_by = match (key, request.sort_order) {
                (None, _) => String::new(),
                (Some(key), SortOrder::Ascending) => format!("{key} asc"),
                (Some(key), SortOrder::Descending) => format!("{key} desc"),
            };
            let room = wanted - resources.len() as u64;
            let matched = if room == 0 {
                self.core
                    .count(bearer, &map.collection, &filter)
                    .await
                    .map_err(as_filter_error)?
            } else {
                let response = self
                    .core
                    .query(
                        bearer,
                        QueryObjectsRequest {
                            parent: map.collection.clone(),
                            filter,
                            order_by,
                            page_size: i32::try_from(room).unwrap_or(i32::MAX),
                            page_token: String::new(),
                            offset: i32::try_from(skip).unwrap_or(i32::MAX),
                            read_mask: None,
                            estimate_total: false,
                        },
                    )
                    .await
                    .map_err(as_filter_error)?;
                resources.extend(response.objects.iter().map(|o| self.view(kind, o, base)));
                u64::try_from(response.total_size).unwrap_or_default()
            };
            total += matched;
            skip = skip.saturating_sub(matched);
        }
        Ok(Listing {
            total,
            start_index: request.start_index,
            resources,
        })
    }
}

/// The core parses the rewritten filter with the same limits as the client's;
/// mapping can add terms and levels (`emails.value` is the work email's
/// property or the others'), so say so rather than point into text the
/// client never sent.
fn within_limits(rewritten: &Rewritten) -> Result<(), ScimError> {
    use idm_proto::filter::{MAX_DEPTH, MAX_TERMS};
    let Rewritten::Filter(filter) = rewritten else {
        return Ok(());
    };
    let terms = filter.terms();
    if terms > MAX_TERMS {
        return Err(ScimError::invalid_filter(format!(
            "filter: mapped onto stored attributes it has {terms} terms, more than {MAX_TERMS}"
        )));
    }
    let depth = filter.depth();
    if depth > MAX_DEPTH {
        return Err(ScimError::invalid_filter(format!(
            "filter: mapped onto stored attributes it is nested {depth} levels deep, more than {MAX_DEPTH}"
        )));
    }
    Ok(())
}

/// The core refuses a rewritten filter only for a reason in the client's
/// filter (`co` on a number, say).
fn as_filter_error(error: ScimError) -> ScimError {
    match error.status {
        400 => ScimError::invalid_filter(error.detail),
        _ => error,
    }
}

fn rfc3339(timestamp: &prost_types::Timestamp) -> Option<String> {
    let nanos = i128::from(timestamp.seconds) * 1_000_000_000 + i128::from(timestamp.nanos);
    let time = time::OffsetDateTime::from_unix_timestamp_nanos(nanos).ok()?;
    time.format(&time::format_description::well_known::Rfc3339)
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filter_that_mapping_takes_past_the_limits_is_invalid() {
        use idm_proto::filter::MAX_TERMS;
        let registry = Registry::builtin().unwrap();
        let maps = AttributeMap::builtin(&registry).unwrap();
        let rewrite = |text: &str| {
            let parsed = idm_proto::filter::parse(text).unwrap();
            maps.user
                .rewrite_filter(&maps, &registry.user, &parsed, Unknown::Reject)
                .unwrap()
        };
        // `emails.value` is two tests once mapped (`mail` or the rest).
        let at_cap = vec![r#"emails.value co "@""#; MAX_TERMS / 2].join(" and ");
        within_limits(&rewrite(&at_cap)).unwrap();
        let over = vec![r#"emails.value co "@""#; MAX_TERMS / 2 + 1].join(" and ");
        let error = within_limits(&rewrite(&over)).unwrap_err();
        assert_eq!(error.status, 400);
        assert!(error.detail.contains("more than 256"), "{}", error.detail);
    }

    #[test]
    fn preconditions_read_weak_and_strong_etags() {
        assert_eq!(Precondition::parse("*"), Precondition::Any);
        let list = Precondition::parse("W/\"3\", \"4\"");
        assert!(list.matches(3) && list.matches(4) && !list.matches(5));
        assert!(!Precondition::parse("W/\"abc\"").matches(0));
    }
}
