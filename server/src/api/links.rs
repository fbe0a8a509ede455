//! `ReconService.ListLinks`: what one object is linked to, mapping by mapping
//! (a user's LDAP entry, the CSV row it came from). The links are point reads
//! of `link:[mapping, source]` or `link_target:[mapping, target]`; naming a
//! linked LDAP entry by its DN is one point read through its connector.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use idm_proto::v1::object_link::Side;
use idm_proto::v1::{ListLinksRequest, ListLinksResponse, ObjectLink};
use serde_json::Value;
use tonic::Status;

use super::system::{open_connector, status_of};
use crate::connector::{self, Connector};
use crate::sync::recon::Reconciler;

/// How long naming one linked object may take: a page waits for it.
const NAME_TIMEOUT: Duration = Duration::from_secs(5);

/// `managed/<type>/<id>` → (`managed/<type>`, id); `system/<c>/<t>/<id>` →
/// (`system/<c>/<t>`, id). An id may hold `/` (a DN may).
fn split_object(object: &str) -> Result<(&str, &str), Status> {
    let head = match object.split('/').next() {
        Some("managed") => 2,
        Some("system") => 3,
        _ => 0,
    };
    let mut cut = 0;
    let mut slashes = 0;
    for (i, c) in object.char_indices() {
        if c == '/' {
            slashes += 1;
            if slashes == head {
                cut = i;
                break;
            }
        }
    }
    let (collection, id) = (&object[..cut], object.get(cut + 1..).unwrap_or(""));
    if head == 0 || cut == 0 || id.is_empty() || collection.split('/').any(str::is_empty) {
        return Err(Status::invalid_argument(format!(
            "object: expected managed/<type>/<id> or system/<connector>/<objectType>/<id>, \
             got {object:?}"
        )));
    }
    Ok((collection, id))
}

pub(super) async fn list_links(
    reconciler: &Reconciler,
    request: ListLinksRequest,
) -> Result<ListLinksResponse, Status> {
    let (collection, id) = split_object(&request.object)?;
    if let Some(type_name) = collection.strip_prefix("managed/") {
        reconciler
            .objects()
            .schema()
            .get(type_name)
            .map_err(|e| Status::not_found(e.to_string()))?;
    }
    let store = reconciler.store();
    let ids = [id.to_string()];
    let mut links = Vec::new();
    for document in store.list_config("mapping").await? {
        let end = |key: &str| document.body.get(key).and_then(Value::as_str).unwrap_or("");
        let (source, target) = (end("source"), end("target"));
        if source == collection {
            let found = store.links_of_sources(&document.name, &ids).await?;
            let linked = found.into_iter().next().map(|l| l.target);
            links.push(link(&document.name, Side::Source, target, linked));
        }
        if target == collection {
            let found = store.links_to_targets(&document.name, &ids).await?;
            let linked = found.into_iter().next().map(|l| l.source);
            links.push(link(&document.name, Side::Target, source, linked));
        }
    }
    if request.resolve_names {
        let mut connectors = HashMap::new();
        for link in &mut links {
            if !link.linked_id.is_empty() {
                name_linked(reconciler, &mut connectors, link).await;
            }
        }
    }
    Ok(ListLinksResponse { links })
}

fn link(mapping: &str, side: Side, other: &str, linked: Option<String>) -> ObjectLink {
    let linked_id = linked.unwrap_or_default();
    ObjectLink {
        mapping: mapping.to_string(),
        side: side as i32,
        other_collection: other.to_string(),
        linked: if linked_id.is_empty() {
            String::new()
        } else {
            format!("{other}/{linked_id}")
        },
        linked_id,
        display_name: String::new(),
        name_error: String::new(),
    }
}

/// Sets `display_name` (or `name_error`): the id itself, unless the linked
/// system object is known by another attribute (an LDAP entry's DN when its
/// id is an `entryUUID`), which is then read through the connector.
async fn name_linked(
    reconciler: &Reconciler,
    connectors: &mut HashMap<String, Result<Arc<dyn Connector>, Status>>,
    link: &mut ObjectLink,
) {
    let mut parts = link.other_collection.splitn(3, '/');
    let (Some("system"), Some(name), Some(object_type)) =
        (parts.next(), parts.next(), parts.next())
    else {
        link.display_name = link.linked_id.clone();
        return;
    };
    if !connectors.contains_key(name) {
        let opened = open_connector(
            reconciler.store(),
            reconciler.objects(),
            reconciler.conf_dir(),
            name,
            object_type,
        )
        .await;
        connectors.insert(name.to_string(), opened);
    }
    let built = match connectors.get(name) {
        Some(Ok(built)) => Arc::clone(built),
        Some(Err(status)) => {
            link.name_error = status.message().to_string();
            return;
        }
        None => return,
    };
    let display = built
        .object_types()
        .into_iter()
        .find(|t| t.name == object_type)
        .and_then(|t| t.display_attribute);
    let Some(attribute) = display else {
        link.display_name = link.linked_id.clone();
        return;
    };
    let read = connector::time_limited(
        name,
        &link.linked,
        NAME_TIMEOUT,
        built.get(object_type, &link.linked_id),
    )
    .await;
    match read {
        Ok(Some(object)) => {
            link.display_name = object
                .attributes
                .iter()
                .find(|(key, _)| key.eq_ignore_ascii_case(&attribute))
                .and_then(|(_, value)| value.as_str())
                .unwrap_or(&link.linked_id)
                .to_string();
        }
        Ok(None) => link.name_error = format!("{} does not exist", link.linked),
        Err(error) => link.name_error = status_of(error).message().to_string(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::split_object;

    #[test]
    fn objects_split_into_collection_and_id() {
        assert_eq!(
            split_object("managed/user/123").unwrap(),
            ("managed/user", "123")
        );
        assert_eq!(
            split_object("system/ldap/account/uid=a,dc=x/y").unwrap(),
            ("system/ldap/account", "uid=a,dc=x/y")
        );
        for bad in [
            "",
            "managed/user",
            "managed/user/",
            "managed//1",
            "system/ldap/1",
            "recon/1/2",
            "user/1",
        ] {
            assert!(split_object(bad).is_err(), "{bad:?}");
        }
    }
}
