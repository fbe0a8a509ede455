//! The LDAP connector (`org.identityconnectors.ldap.LdapConnector`) as idm's
//! `ldap` connector. As Wren's, an object's id is its `uidAttribute`
//! (`entryUUID` unless set), so a link survives a rename; `__NAME__` is the
//! entry's DN (a mapping's `dn` target names the entry).

use serde_json::{Map, Value, json};

use super::{Reader, check_properties};
use crate::config::ConfError;

const AT: &str = "configurationProperties";

const HANDLED: &[&str] = &[
    "host",
    "port",
    "ssl",
    "startTLS",
    "principal",
    "credentials",
    "baseContexts",
    "baseContextsToSynchronize",
    "accountObjectClasses",
    "accountUserNameAttributes",
    "uidAttribute",
    "passwordHashAlgorithm",
    "passwordAttribute",
    "groupMemberAttribute",
    "groupObjectClasses",
    "usePagedResultControl",
    "blockSize",
    "accountSearchFilter",
    "groupSearchFilter",
];

/// Settings that ask nothing of idm at these values (the connector's own
/// defaults, as Wren's sample files write them).
fn inert() -> Vec<(&'static str, Value)> {
    vec![
        ("synchronizePasswords", json!(false)),
        ("removeLogEntryObjectClassFromFilter", json!(true)),
        ("modifiersNamesToFilterOut", json!([])),
        ("changeLogBlockSize", json!(100)),
        ("attributesToSynchronize", json!([])),
        ("changeNumberAttribute", json!("changeNumber")),
        ("filterWithOrInsteadOfAnd", json!(false)),
        ("objectClassesToSynchronize", json!(["inetOrgPerson"])),
        ("vlvSortAttribute", json!("uid")),
        ("useBlocks", json!(false)),
        ("maintainPosixGroupMembership", json!(false)),
        ("failover", json!([])),
        ("readSchema", json!(true)),
        ("maintainLdapGroupMembership", json!(false)),
        (
            "respectResourcePasswordPolicyChangeAfterReset",
            json!(false),
        ),
        ("useTimestampsForSync", json!(false)),
    ]
}

pub(super) fn translate(
    reader: &mut Reader<'_>,
    properties: &Map<String, Value>,
    types: &Map<String, Value>,
) -> Result<Map<String, Value>, ConfError> {
    let field = |key: &str| format!("{AT}.{key}");
    let host = reader
        .string(properties, AT, "host")?
        .filter(|h| !h.trim().is_empty())
        .ok_or_else(|| reader.invalid(field("host"), "required: the directory's host name"))?;
    let ssl = reader.flag(properties, AT, "ssl")?.unwrap_or(false);
    let start_tls = reader.flag(properties, AT, "startTLS")?.unwrap_or(false);
    let port = reader
        .number(properties, AT, "port")?
        .unwrap_or(if ssl { 636 } else { 389 });
    if !(1..=65535).contains(&port) {
        return Err(reader.invalid(field("port"), "a port from 1 to 65535"));
    }
    let host_part = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host
    };
    let url = format!(
        "{}://{host_part}:{port}",
        if ssl { "ldaps" } else { "ldap" }
    );

    let mut body = Map::new();
    body.insert("connectorType".into(), json!("ldap"));
    body.insert("url".into(), json!(url));
    body.insert("startTls".into(), json!(start_tls));
    if let Some(principal) = reader
        .string(properties, AT, "principal")?
        .filter(|p| !p.is_empty())
    {
        body.insert("bindDn".into(), json!(principal));
    }
    match properties.get("credentials") {
        None | Some(Value::Null) => {}
        Some(Value::String(password)) => {
            body.insert("bindPassword".into(), json!(password));
        }
        Some(Value::Object(value)) if value.contains_key("$crypto") => {
            reader.unreadable.push(field("credentials"));
        }
        // idm's own forms: an `$env` reference, a sealed value.
        Some(Value::Object(value))
            if value.contains_key("$env") || value.contains_key("$sealed") =>
        {
            body.insert("bindPassword".into(), Value::Object(value.clone()));
        }
        Some(_) => return Err(reader.invalid(field("credentials"), "expected a string")),
    }

    let contexts = reader
        .strings(properties, AT, "baseContexts")?
        .filter(|c| !c.is_empty())
        .ok_or_else(|| {
            reader.invalid(field("baseContexts"), "required: [\"dc=example,dc=org\"]")
        })?;
    body.insert("baseDn".into(), json!(contexts[0]));
    if contexts.len() > 1 {
        reader.ignore(
            field("baseContexts[1..]"),
            "idm reads and writes below the first base context only",
        );
    }
    if let Some(to_sync) = reader.strings(properties, AT, "baseContextsToSynchronize")?
        && !to_sync.is_empty()
        && to_sync != contexts[..1]
    {
        reader.ignore(
            field("baseContextsToSynchronize"),
            "idm's liveSync reads below the first base context",
        );
    }

    let uid_attribute = reader
        .string(properties, AT, "uidAttribute")?
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| "entryUUID".into());
    body.insert("uidAttribute".into(), json!(uid_attribute));
    match reader
        .string(properties, AT, "passwordHashAlgorithm")?
        .as_deref()
    {
        None | Some("") => {
            body.insert("passwordHashing".into(), json!("cleartext"));
        }
        Some(h) if h.eq_ignore_ascii_case("none") => {
            body.insert("passwordHashing".into(), json!("cleartext"));
        }
        Some(h) if h.eq_ignore_ascii_case("ssha") => {
            body.insert("passwordHashing".into(), json!("SSHA"));
        }
        Some(_) => {
            reader.ignore(field("passwordHashAlgorithm"), "idm hashes with SSHA (or sends the password for the directory to hash); SSHA is used");
            body.insert("passwordHashing".into(), json!("SSHA"));
        }
    }
    if reader.flag(properties, AT, "usePagedResultControl")? == Some(false) {
        reader.ignore(
            field("usePagedResultControl"),
            "idm always pages with the Simple Paged Results control",
        );
    }
    if let Some(block) = reader.number(properties, AT, "blockSize")? {
        if !(1..=1_000_000).contains(&block) {
            return Err(reader.invalid(field("blockSize"), "a whole number from 1 to 1000000"));
        }
        body.insert("pageSize".into(), json!(block));
    }
    reader.ignore_rest(
        AT,
        properties,
        HANDLED,
        &inert(),
        "not supported by idm's LDAP connector",
    );

    let account_classes = reader
        .strings(properties, AT, "accountObjectClasses")?
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| {
            ["top", "person", "organizationalPerson", "inetOrgPerson"]
                .map(String::from)
                .to_vec()
        });
    let user_names = reader
        .strings(properties, AT, "accountUserNameAttributes")?
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| vec!["uid".into()]);
    if user_names.len() > 1 {
        reader.ignore(
            field("accountUserNameAttributes[1..]"),
            "idm names new entries by the first attribute",
        );
    }
    let password_attribute = reader
        .string(properties, AT, "passwordAttribute")?
        .unwrap_or_else(|| "userPassword".into());
    let member_attribute = reader
        .string(properties, AT, "groupMemberAttribute")?
        .unwrap_or_else(|| "uniqueMember".into());
    let group_classes = reader
        .strings(properties, AT, "groupObjectClasses")?
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| ["top", "groupOfUniqueNames"].map(String::from).to_vec());
    let account_filter = search_filter(reader, properties, "accountSearchFilter")?;
    let group_filter = search_filter(reader, properties, "groupSearchFilter")?;

    let mut object_types = Map::new();
    for (type_name, declaration) in types {
        let declaration = declaration.as_object().ok_or_else(|| {
            reader.invalid(format!("objectTypes.{type_name}"), "expected an object")
        })?;
        let native_type = declaration
            .get("nativeType")
            .or_else(|| declaration.get("id"))
            .and_then(Value::as_str)
            .unwrap_or(type_name);
        let mut idm_type = Map::new();
        match native_type {
            "__ACCOUNT__" | "account" => {
                idm_type.insert("namingAttribute".into(), json!(user_names[0]));
                idm_type.insert("objectClasses".into(), json!(account_classes));
                idm_type.insert("passwordAttribute".into(), json!(password_attribute));
                if let Some(filter) = &account_filter {
                    idm_type.insert("searchFilter".into(), json!(filter));
                }
            }
            "__GROUP__" | "group" => {
                idm_type.insert("namingAttribute".into(), json!("cn"));
                idm_type.insert("objectClasses".into(), json!(group_classes));
                idm_type.insert("memberAttribute".into(), json!(member_attribute));
                // groupOfNames and groupOfUniqueNames need a member: an
                // emptied group keeps the empty DN, never read back.
                idm_type.insert("placeholderMember".into(), json!(""));
                if let Some(filter) = &group_filter {
                    idm_type.insert("searchFilter".into(), json!(filter));
                }
            }
            object_class => {
                idm_type.insert("namingAttribute".into(), json!("cn"));
                idm_type.insert("objectClasses".into(), json!(["top", object_class]));
            }
        }
        let password = password_attribute.clone();
        let uid = uid_attribute.clone();
        check_properties(reader, type_name, declaration, |native| match native {
            "__NAME__" => Some("dn".into()),
            "__UID__" => Some(uid.clone()),
            "__PASSWORD__" => Some(password.clone()),
            _ => None,
        });
        object_types.insert(type_name.clone(), Value::Object(idm_type));
    }
    body.insert("objectTypes".into(), Value::Object(object_types));
    Ok(body)
}

/// An LDAP filter a type's searches add (`(&(objectClass=…)<filter>)`).
fn search_filter(
    reader: &Reader<'_>,
    properties: &Map<String, Value>,
    key: &str,
) -> Result<Option<String>, ConfError> {
    let Some(filter) = reader
        .string(properties, AT, key)?
        .filter(|f| !f.trim().is_empty())
    else {
        return Ok(None);
    };
    let filter = filter.trim().to_string();
    let balanced = filter.len() <= 4096
        && filter.starts_with('(')
        && filter.ends_with(')')
        && filter.chars().try_fold(0i32, |depth, c| {
            let depth = depth + i32::from(c == '(') - i32::from(c == ')');
            (depth >= 0).then_some(depth)
        }) == Some(0);
    if !balanced {
        return Err(reader.invalid(
            format!("{AT}.{key}"),
            "an LDAP filter in parentheses, e.g. (uid=*)",
        ));
    }
    Ok(Some(filter))
}
