//! The LDAP connector (`org.identityconnectors.ldap.LdapConnector`) as idm's
//! `ldap` connector. As Wren's, an object's id is its `uidAttribute`
//! (`entryUUID` unless set), so a link survives a rename; `__NAME__` is the
//! entry's DN (a mapping's `dn` target names the entry).

use serde_json::{Map, Value, json};

use super::{Gaps, Reader, check_properties, flag, keep_shared, object_type, text, whole_number};
use crate::config::{ConfError, REDACTED};

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
        // idm's own forms: an `$env` reference, a sealed value, and the
        // marker a read shows (the core puts the stored secret back).
        Some(Value::Object(value))
            if value.contains_key("$env")
                || value.contains_key("$sealed")
                || value.contains_key(REDACTED) =>
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

/// Wren's LDAP connector, as its provisioner files name it.
pub(super) fn connector_ref() -> Value {
    json!({
        "bundleName": "org.forgerock.openicf.connectors.ldap-connector",
        "bundleVersion": "[1.4.0.0,2.0.0.0)",
        "connectorName": "org.identityconnectors.ldap.LdapConnector"
    })
}

/// The keys of idm's `ldap` connector document, and of each of its types.
const IDM_KEYS: &[&str] = &[
    "connectorType",
    "url",
    "baseDn",
    "bindDn",
    "bindPassword",
    "startTls",
    "tlsVerify",
    "tlsCaFile",
    "timeoutSeconds",
    "pageSize",
    "passwordHashing",
    "uidAttribute",
    "objectTypes",
];
const IDM_TYPE_KEYS: &[&str] = &[
    "baseDn",
    "namingAttribute",
    "objectClasses",
    "passwordAttribute",
    "memberAttribute",
    "placeholderMember",
    "searchFilter",
];
const NOT_IDM: &str = "not a setting of idm's LDAP connector";

/// The account settings: one set in the provisioner shape, shared by every
/// account type.
#[derive(Debug, PartialEq)]
struct Account {
    naming_attribute: String,
    object_classes: Vec<String>,
    password_attribute: String,
    search_filter: Option<String>,
}

/// The group settings, one set as well.
#[derive(Debug, PartialEq)]
struct Group {
    object_classes: Vec<String>,
    member_attribute: String,
    search_filter: Option<String>,
}

/// What [`translate`] makes of an ICF object type by its `nativeType`.
enum Role {
    Account(Account),
    Group(Group),
    /// Any other object class, named by `cn`.
    Class(String),
}

/// idm's `ldap` document as `configurationProperties` and `objectTypes`.
pub(super) fn to_provisioner(
    body: &Map<String, Value>,
    gaps: &mut Gaps,
) -> (Map<String, Value>, Map<String, Value>) {
    gaps.unknown_keys("", body, IDM_KEYS, NOT_IDM);
    let mut properties = Map::new();
    connection_to_provisioner(body, &mut properties, gaps);
    let base_dn = body.get("baseDn").and_then(Value::as_str).unwrap_or("");
    let Some(declared) = gaps.declared_types(body) else {
        return (properties, Map::new());
    };
    let mut account: Option<(&str, Account)> = None;
    let mut group: Option<(&str, Group)> = None;
    let mut types = Map::new();
    for (type_name, declaration) in declared {
        let at = format!("objectTypes.{type_name}");
        let Some(role) = role_of(&at, declaration, base_dn, gaps) else {
            continue;
        };
        let native_type = match role {
            Role::Account(this) => {
                keep_shared(&mut account, type_name, this, &at, gaps);
                "__ACCOUNT__".to_string()
            }
            Role::Group(this) => {
                keep_shared(&mut group, type_name, this, &at, gaps);
                "__GROUP__".to_string()
            }
            Role::Class(object_class) => object_class,
        };
        types.insert(type_name.clone(), object_type(&native_type));
    }
    if let Some((_, account)) = account {
        properties.insert(
            "accountUserNameAttributes".into(),
            json!([account.naming_attribute]),
        );
        properties.insert("accountObjectClasses".into(), json!(account.object_classes));
        properties.insert(
            "passwordAttribute".into(),
            json!(account.password_attribute),
        );
        properties.insert("accountSearchFilter".into(), json!(account.search_filter));
    }
    if let Some((_, group)) = group {
        properties.insert("groupObjectClasses".into(), json!(group.object_classes));
        properties.insert("groupMemberAttribute".into(), json!(group.member_attribute));
        properties.insert("groupSearchFilter".into(), json!(group.search_filter));
    }
    (properties, types)
}

/// Where and how the connector binds, and how it reads and writes.
fn connection_to_provisioner(
    body: &Map<String, Value>,
    properties: &mut Map<String, Value>,
    gaps: &mut Gaps,
) {
    match body.get("url").and_then(Value::as_str).and_then(address_of) {
        Some((host, port, ssl)) => {
            properties.insert("host".into(), json!(host));
            properties.insert("port".into(), json!(port));
            properties.insert("ssl".into(), json!(ssl));
        }
        None => gaps.note(
            "url",
            "host and port: ldap://host:port or ldaps://host:port",
        ),
    }
    match flag(body.get("startTls")) {
        Ok(start_tls) => {
            properties.insert("startTLS".into(), json!(start_tls.unwrap_or(false)));
        }
        Err(()) => gaps.note("startTls", "true or false"),
    }
    match text(body, "bindDn") {
        Ok(Some(principal)) => {
            properties.insert("principal".into(), json!(principal));
        }
        Ok(None) => {}
        Err(()) => gaps.note("bindDn", "principal is a DN"),
    }
    if let Some(credentials) = body.get("bindPassword").filter(|v| !v.is_null()) {
        properties.insert("credentials".into(), credentials.clone());
    }
    match text(body, "baseDn") {
        Ok(Some(base_dn)) => {
            properties.insert("baseContexts".into(), json!([base_dn]));
        }
        _ => gaps.note("baseDn", "baseContexts are DNs"),
    }
    match text(body, "uidAttribute") {
        Ok(uid) => {
            // idm's default is the DN; a provisioner's is entryUUID.
            properties.insert("uidAttribute".into(), json!(uid.as_deref().unwrap_or("dn")));
        }
        Err(()) => gaps.note("uidAttribute", "an attribute name"),
    }
    match text(body, "passwordHashing").map(|h| h.map(|h| h.to_ascii_lowercase())) {
        Ok(None) => {
            properties.insert("passwordHashAlgorithm".into(), json!("SSHA"));
        }
        Ok(Some(h)) if h == "ssha" => {
            properties.insert("passwordHashAlgorithm".into(), json!("SSHA"));
        }
        Ok(Some(h)) if h == "cleartext" => {
            properties.insert("passwordHashAlgorithm".into(), Value::Null);
        }
        _ => gaps.note("passwordHashing", "SSHA or cleartext"),
    }
    match whole_number(body.get("pageSize")) {
        Ok(None) => {}
        Ok(Some(block)) => {
            properties.insert("blockSize".into(), json!(block));
        }
        Err(()) => gaps.note("pageSize", "a whole number"),
    }
    if !matches!(flag(body.get("tlsVerify")), Ok(None | Some(true))) {
        gaps.note(
            "tlsVerify",
            "no ICF setting: Wren's connector always checks certificates",
        );
    }
    if !matches!(text(body, "tlsCaFile"), Ok(None)) {
        gaps.note(
            "tlsCaFile",
            "no ICF setting: Wren's connector trusts the JVM's CAs",
        );
    }
    if !body
        .get("timeoutSeconds")
        .is_none_or(|t| matches!(whole_number(Some(t)), Ok(None | Some(10))))
    {
        gaps.note(
            "timeoutSeconds",
            "no ICF setting: only idm's default of 10 is shown",
        );
    }
}

/// What the connector makes of a type, or `None` (noted) when [`translate`]
/// cannot give it back from any `nativeType`.
fn role_of(at: &str, declaration: &Value, base_dn: &str, gaps: &mut Gaps) -> Option<Role> {
    let Some(declaration) = declaration.as_object() else {
        gaps.note(at, "expected an object");
        return None;
    };
    gaps.unknown_keys(at, declaration, IDM_TYPE_KEYS, NOT_IDM);
    let field = |key: &str| format!("{at}.{key}");
    match text(declaration, "baseDn") {
        Ok(None) => {}
        Ok(Some(dn)) if dn.trim().eq_ignore_ascii_case(base_dn.trim()) => {}
        _ => gaps.note(
            field("baseDn"),
            "the provisioner shape keeps every type below the first base context",
        ),
    }
    let attribute = |key: &str| text(declaration, key).ok().flatten();
    let naming_attribute = attribute("namingAttribute");
    let object_classes = strings(declaration.get("objectClasses"));
    let search_filter = attribute("searchFilter").map(|f| f.trim().to_string());
    let (Some(naming_attribute), Some(object_classes)) = (naming_attribute, object_classes) else {
        gaps.note(at, "namingAttribute and objectClasses are required");
        return None;
    };
    let placeholder = declaration
        .get("placeholderMember")
        .filter(|p| !p.is_null());
    let password_attribute = attribute("passwordAttribute");
    if let Some(member_attribute) = attribute("memberAttribute") {
        if !naming_attribute.eq_ignore_ascii_case("cn") {
            gaps.note(
                field("namingAttribute"),
                "a provisioner group is named by cn",
            );
        }
        if placeholder != Some(&json!("")) {
            gaps.note(
                field("placeholderMember"),
                "a provisioner group keeps the empty DN as placeholder",
            );
        }
        if password_attribute.is_some() {
            gaps.note(field("passwordAttribute"), "a provisioner group has none");
        }
        return Some(Role::Group(Group {
            object_classes,
            member_attribute,
            search_filter,
        }));
    }
    if placeholder.is_some() {
        gaps.note(field("placeholderMember"), "only a group has one");
    }
    if let Some(password_attribute) = password_attribute {
        return Some(Role::Account(Account {
            naming_attribute,
            object_classes,
            password_attribute,
            search_filter,
        }));
    }
    match object_classes.as_slice() {
        [top, class]
            if top == "top"
                && naming_attribute.eq_ignore_ascii_case("cn")
                && search_filter.is_none()
                && !matches!(
                    class.as_str(),
                    "__ACCOUNT__" | "account" | "__GROUP__" | "group"
                ) =>
        {
            Some(Role::Class(class.clone()))
        }
        _ => {
            gaps.note(
                at,
                "not an account (passwordAttribute), a group (memberAttribute), nor a type \
                 named by cn of objectClasses [\"top\", <nativeType>] with no searchFilter",
            );
            None
        }
    }
}

/// `ldap[s]://host[:port][/]` as host, port and whether it is `ldaps`.
pub(super) fn address_of(url: &str) -> Option<(String, u16, bool)> {
    let scheme_end = url.find("://")?;
    let ssl = match url.get(..scheme_end)?.to_ascii_lowercase().as_str() {
        "ldap" => false,
        "ldaps" => true,
        _ => return None,
    };
    let rest = url.get(scheme_end + 3..)?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() || rest.contains(['/', '?', '#', '@']) {
        return None;
    }
    let (host, port) = match rest.strip_prefix('[') {
        Some(bracketed) => {
            let (host, after) = bracketed.split_once(']')?;
            match after {
                "" => (host, None),
                _ => (host, Some(after.strip_prefix(':')?)),
            }
        }
        None => match rest.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (rest, None),
        },
    };
    let port = match port {
        Some(port) => port.parse::<u16>().ok().filter(|p| *p > 0)?,
        None if ssl => 636,
        None => 389,
    };
    (!host.is_empty()).then(|| (host.to_string(), port, ssl))
}

/// A non-empty array of strings.
fn strings(value: Option<&Value>) -> Option<Vec<String>> {
    value?
        .as_array()?
        .iter()
        .map(|v| v.as_str().map(str::to_string))
        .collect::<Option<Vec<_>>>()
        .filter(|items| !items.is_empty())
}
