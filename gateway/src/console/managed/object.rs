//! `/admin/managed/{type}/{id}`: one object — every viewable property, its
//! relationships (a group's members, added and removed here; a user's
//! groups), its linked accounts per mapping (an LDAP entry by its DN), and
//! its audit trail; and its deletion, behind a confirmation page.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use idm_proto::filter::{AttrPath, CompareOp, Filter, Value as FilterValue};
use idm_proto::json::from_proto_struct;
use idm_proto::v1::audit_service_client::AuditServiceClient;
use idm_proto::v1::object_link::Side;
use idm_proto::v1::object_service_client::ObjectServiceClient;
use idm_proto::v1::recon_service_client::ReconServiceClient;
use idm_proto::v1::{
    DeleteObjectRequest, GetObjectRequest, ListLinksRequest, ManagedObject, QueryAuditRequest,
    QueryObjectsRequest,
};
use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;
use serde_json::{Map, Value};

use super::{Kind, RefLink, TypeSchema, refs, schema_of, schemas, shown};
use crate::console::page::{thousands, timestamp, url_part};
use crate::console::{
    Chrome, ConsoleError, ConsoleState, Form, Nav, Viewer, console_call, render, see_other,
};

/// Audit entries shown on an object's page (the newest).
const AUDIT_SHOWN: i32 = 20;

/// A property's value on the page: text, or links to other objects.
pub enum Shown {
    Text(String),
    Links(Vec<RefLink>),
}

pub struct PropRow {
    pub title: String,
    pub value: Shown,
}

/// A list of references the page adds to and removes from.
pub struct Relation {
    pub name: String,
    pub title: String,
    /// `User`: that type's title.
    pub target_title: String,
    pub members: Vec<RefLink>,
}

pub struct LinkRow {
    pub mapping: String,
    /// `source of` / `target of`: how the object takes part.
    pub role: &'static str,
    pub other: String,
    /// The linked object as people know it (an LDAP DN), or its id.
    pub linked: String,
    /// Its page, when it is a managed object.
    pub href: String,
    /// The id when it differs from what `linked` shows (an entryUUID), or why
    /// the name could not be read.
    pub note: String,
}

pub struct AuditRow {
    pub when: String,
    pub actor: String,
    pub operation: String,
    pub changed: String,
    pub outcome: String,
}

#[derive(Template)]
#[template(path = "console/managed/object.html")]
struct ObjectPage {
    chrome: Chrome,
    type_name: String,
    type_title: String,
    id: String,
    heading: String,
    revision: i64,
    notice: &'static str,
    props: Vec<PropRow>,
    reverse: Vec<(String, Vec<RefLink>)>,
    relations: Vec<Relation>,
    has_secrets: bool,
    links: Vec<LinkRow>,
    links_problem: String,
    audit: Vec<AuditRow>,
    audit_problem: String,
    /// `The newest 20 of 1,234.` when there are more.
    audit_more: String,
    /// The audit page for this object.
    audit_href: String,
    /// This object's page.
    base: String,
}

#[derive(Template)]
#[template(path = "console/managed/delete.html")]
struct DeletePage {
    chrome: Chrome,
    type_name: String,
    type_title: String,
    id: String,
    heading: String,
    revision: i64,
    base: String,
}

#[derive(Debug, Default, Deserialize)]
pub struct ShowQuery {
    #[serde(default)]
    done: String,
}

/// The notice after a change (post/redirect/get): fixed words, never
/// anything from the request.
fn notice(done: &str) -> &'static str {
    match done {
        "created" => "Created.",
        "saved" => "Saved.",
        "password" => "The password was set.",
        "added" => "Added.",
        "removed" => "Removed.",
        _ => "",
    }
}

/// The object, or the page's error.
pub async fn get_object(
    state: &ConsoleState,
    viewer: &Viewer,
    schema: &TypeSchema,
    id: &str,
) -> Result<ManagedObject, ConsoleError> {
    console_call!(
        state,
        viewer,
        ObjectServiceClient.get_object(GetObjectRequest {
            name: schema.object_name(id),
            read_mask: None,
        })
    )
    .await
}

/// What a page calls the object: its first column's value, else its id.
/// An object's attributes as JSON (none: an empty map).
pub fn attributes_of(object: &ManagedObject) -> Map<String, Value> {
    object
        .attributes
        .as_ref()
        .map(from_proto_struct)
        .unwrap_or_default()
}

pub fn heading(schema: &TypeSchema, attributes: &Map<String, Value>, id: &str) -> String {
    schema
        .columns()
        .first()
        .and_then(|c| attributes.get(&c.name))
        .map(shown)
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| id.to_string())
}

/// `object eq "<name>"`, printed from the filter tree.
fn audit_filter(object: &str) -> String {
    Filter::Compare(
        AttrPath {
            urn: None,
            attr: "object".into(),
            sub_attr: None,
        },
        CompareOp::Eq,
        FilterValue::String(object.to_string()),
    )
    .to_string()
}

pub async fn show(
    State(state): State<ConsoleState>,
    Path((type_name, id)): Path<(String, String)>,
    Query(query): Query<ShowQuery>,
    viewer: Viewer,
) -> Result<Response, ConsoleError> {
    let all = schemas(&state, &viewer).await?;
    let schema = all
        .iter()
        .find(|t| t.name == type_name)
        .cloned()
        .ok_or_else(|| {
            ConsoleError::NotFound(format!("There is no managed type \"{type_name}\"."))
        })?;
    let name = schema.object_name(&id);
    let (object, links, audit) = tokio::join!(
        get_object(&state, &viewer, &schema, &id),
        console_call!(
            &state,
            &viewer,
            ReconServiceClient.list_links(ListLinksRequest {
                object: name.clone(),
                resolve_names: true,
            })
        ),
        console_call!(
            &state,
            &viewer,
            AuditServiceClient.query_audit(QueryAuditRequest {
                filter: audit_filter(&name),
                order_by: String::new(),
                page_size: AUDIT_SHOWN,
                page_token: String::new(),
            })
        ),
    );
    let object = object?;
    let attributes = attributes_of(&object);
    let mut referenced: Vec<String> = schema
        .props
        .iter()
        .filter(|p| matches!(p.kind, Kind::Relationship | Kind::Relationships))
        .map(|p| p.name.as_str())
        .chain(schema.reverse.iter().map(|r| r.name.as_str()))
        .flat_map(|name| refs(attributes.get(name)))
        .collect();
    referenced.sort();
    referenced.dedup();
    let labels = labels_of(&state, &viewer, &all, &referenced).await;
    let link = |r: &String| RefLink::named(r, &labels);
    let props = schema
        .props
        .iter()
        .filter(|p| p.viewable && !p.private && p.kind != Kind::Relationships)
        .map(|p| {
            let value = attributes.get(&p.name);
            PropRow {
                title: p.title.clone(),
                value: match p.kind {
                    Kind::Relationship => {
                        Shown::Links(refs(value).iter().map(|r| RefLink::of(r)).collect())
                    }
                    _ => Shown::Text(value.map(shown).unwrap_or_default()),
                },
            }
        })
        .collect();
    let relations = schema
        .relations()
        .map(|p| Relation {
            name: p.name.clone(),
            title: if p.title == p.name {
                super::capitalised(&p.title)
            } else {
                p.title.clone()
            },
            target_title: p
                .collection
                .as_deref()
                .and_then(|c| c.strip_prefix("managed/"))
                .and_then(|t| all.iter().find(|s| s.name == t))
                .map(|t| t.title.clone())
                .unwrap_or_else(|| "Object".into()),
            members: refs(attributes.get(&p.name)).iter().map(link).collect(),
        })
        .collect();
    let reverse = schema
        .reverse
        .iter()
        .map(|r| {
            (
                r.title.clone(),
                refs(attributes.get(&r.name)).iter().map(link).collect(),
            )
        })
        .collect();
    let (links, links_problem) = match links {
        Ok(reply) => (reply.links.iter().map(link_row).collect(), String::new()),
        Err(e) => (Vec::new(), e.message()),
    };
    let (audit, audit_total, audit_problem) = match audit {
        Ok(reply) => (
            reply
                .entries
                .iter()
                .map(|e| AuditRow {
                    when: timestamp(e.time.as_ref()),
                    actor: e.actor.clone(),
                    operation: e.operation.clone(),
                    changed: e.changed_properties.join(", "),
                    outcome: e.outcome.clone(),
                })
                .collect(),
            reply.total_size,
            String::new(),
        ),
        Err(e) => (Vec::new(), 0, e.message()),
    };
    let heading = heading(&schema, &attributes, &object.id);
    let audit_shown = i64::try_from(audit.len()).unwrap_or(0);
    let chrome = Chrome::new(
        &state,
        &viewer,
        Nav::Managed(schema.name.clone()),
        &format!("{} {heading}", schema.title),
    )
    .await;
    Ok(render(&ObjectPage {
        chrome,
        type_name: schema.name.clone(),
        type_title: schema.title.clone(),
        id: object.id.clone(),
        heading,
        revision: object.revision,
        notice: notice(&query.done),
        props,
        reverse,
        relations,
        has_secrets: schema.secrets().next().is_some(),
        links,
        links_problem,
        audit,
        audit_problem,
        audit_more: if audit_total > audit_shown {
            format!("The newest {audit_shown} of {}.", thousands(audit_total))
        } else {
            String::new()
        },
        audit_href: format!("/admin/audit?object={}", url_part(&name)),
        base: object_href(&schema.name, &id),
    }))
}

/// The most referenced objects named on one page; the rest show their ids.
const MAX_NAMED: usize = 200;
/// Ids (of at most 100 characters) asked for in one query.
const NAMED_PER_QUERY: usize = 50;

/// What each referenced object is called (its type's first column: a
/// user's userName, a group's name), by one query per type. Objects not
/// found, or a query that fails, leave the ids to speak for themselves.
async fn labels_of(
    state: &ConsoleState,
    viewer: &Viewer,
    all: &[TypeSchema],
    referenced: &[String],
) -> HashMap<String, String> {
    let mut by_type: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for reference in referenced.iter().take(MAX_NAMED) {
        let mut parts = reference.splitn(3, '/');
        if let (Some("managed"), Some(type_name), Some(id)) =
            (parts.next(), parts.next(), parts.next())
            && id.len() <= 100
        {
            by_type.entry(type_name).or_default().push(id);
        }
    }
    let mut labels = HashMap::new();
    // Chunks keep each filter well inside the core's length and term limits.
    let chunks: Vec<(String, Vec<String>)> = by_type
        .iter()
        .flat_map(|(type_name, ids)| {
            ids.chunks(NAMED_PER_QUERY).map(|ids| {
                (
                    (*type_name).to_string(),
                    ids.iter().map(|id| (*id).to_string()).collect(),
                )
            })
        })
        .collect();
    for (type_name, ids) in chunks {
        let Some(target) = all.iter().find(|t| t.name == *type_name) else {
            continue;
        };
        let id_is = |id: &str| {
            Filter::Compare(
                AttrPath {
                    urn: None,
                    attr: "_id".into(),
                    sub_attr: None,
                },
                CompareOp::Eq,
                FilterValue::String(id.to_string()),
            )
        };
        let filter = match ids.as_slice() {
            [one] => id_is(one),
            many => Filter::Or(many.iter().map(|id| id_is(id)).collect()),
        };
        let reply = console_call!(
            state,
            viewer,
            ObjectServiceClient.query_objects(QueryObjectsRequest {
                parent: format!("managed/{type_name}"),
                filter: filter.to_string(),
                order_by: String::new(),
                page_size: i32::try_from(ids.len()).unwrap_or(i32::MAX),
                page_token: String::new(),
                offset: 0,
                read_mask: None,
                // Only the objects are shown, never their number.
                estimate_total: true,
            })
        )
        .await;
        let Ok(reply) = reply else { continue };
        for object in reply.objects {
            let attributes = attributes_of(&object);
            labels.insert(
                target.object_name(&object.id),
                heading(target, &attributes, &object.id),
            );
        }
    }
    labels
}

fn link_row(link: &idm_proto::v1::ObjectLink) -> LinkRow {
    let role = match link.side() {
        Side::Source => "source",
        Side::Target => "target",
        Side::Unspecified => "",
    };
    let linked = if !link.display_name.is_empty() {
        link.display_name.clone()
    } else {
        link.linked_id.clone()
    };
    let note = if link.linked_id.is_empty() {
        String::new()
    } else if !link.name_error.is_empty() {
        format!("its name could not be read: {}", link.name_error)
    } else if link.display_name != link.linked_id && !link.display_name.is_empty() {
        format!("id {}", link.linked_id)
    } else {
        String::new()
    };
    let href = if link.other_collection.starts_with("managed/") && !link.linked.is_empty() {
        RefLink::of(&link.linked).href
    } else {
        String::new()
    };
    LinkRow {
        mapping: link.mapping.clone(),
        role,
        other: link.other_collection.clone(),
        linked,
        href,
        note,
    }
}

pub async fn confirm_delete(
    State(state): State<ConsoleState>,
    Path((type_name, id)): Path<(String, String)>,
    viewer: Viewer,
) -> Result<Response, ConsoleError> {
    viewer.require_change()?;
    let schema = schema_of(&state, &viewer, &type_name).await?;
    let object = get_object(&state, &viewer, &schema, &id).await?;
    let attributes = attributes_of(&object);
    let heading = heading(&schema, &attributes, &object.id);
    let chrome = Chrome::new(
        &state,
        &viewer,
        Nav::Managed(schema.name.clone()),
        &format!("Delete {} {heading}", schema.title),
    )
    .await;
    Ok(render(&DeletePage {
        chrome,
        type_name: schema.name.clone(),
        type_title: schema.title.clone(),
        id: object.id,
        heading,
        revision: object.revision,
        base: object_href(&schema.name, &id),
    }))
}

/// The console page of `managed/<type_name>/<id>`.
pub fn object_href(type_name: &str, id: &str) -> String {
    format!("/admin/managed/{}/{}", url_part(type_name), url_part(id))
}

/// The `revision` field of a form: the revision the person saw.
pub fn revision_of(form: &Form) -> Result<Option<i64>, ConsoleError> {
    match form
        .get("revision")
        .map(str::trim)
        .filter(|r| !r.is_empty())
    {
        None => Ok(None),
        Some(text) => text
            .parse()
            .map(Some)
            .map_err(|_| ConsoleError::BadRequest("The form's revision is not a number.".into())),
    }
}

pub async fn delete(
    State(state): State<ConsoleState>,
    Path((type_name, id)): Path<(String, String)>,
    form: Form,
) -> Result<Response, ConsoleError> {
    form.viewer.require_change()?;
    let schema = schema_of(&state, &form.viewer, &type_name).await?;
    let expected_revision = revision_of(&form)?;
    console_call!(
        &state,
        &form.viewer,
        ObjectServiceClient.delete_object(DeleteObjectRequest {
            name: schema.object_name(&id),
            expected_revision,
        })
    )
    .await
    .map_err(|e| match e {
        ConsoleError::Conflict(_) => ConsoleError::Conflict(format!(
            "Someone changed this {} after you opened the confirmation; it was not deleted. Look at it again first.",
            schema.title
        )),
        other => other,
    })?;
    Ok(see_other(&format!(
        "/admin/managed/{}",
        url_part(&schema.name)
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_audit_filter_quotes_the_object_name() {
        assert_eq!(
            audit_filter("managed/user/a\"b"),
            r#"object eq "managed/user/a\"b""#
        );
        assert_eq!(notice("saved"), "Saved.");
        assert_eq!(notice("<script>"), "");
    }
}
