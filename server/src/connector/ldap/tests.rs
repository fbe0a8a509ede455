//! The connector as a whole: its conf, and every operation against a real
//! slapd (idm-testkit's sandbox).

use std::collections::HashSet;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::Instant;

use futures::TryStreamExt;
use idm_testkit::Slapd;
use ldap3::{LdapConnAsync, Scope, SearchEntry};
use serde_json::json;

use super::connection::PROBE_WHEN_QUIET_FOR;
use super::password::ssha;
use super::*;

fn map(value: Value) -> Map<String, Value> {
    value.as_object().cloned().unwrap()
}

/// The sample's connector document pointed at a sandbox, with `extra`
/// top-level fields laid over it.
fn conf(slapd: &Slapd, extra: Value) -> Map<String, Value> {
    let mut body = map(json!({
        "connectorType": "ldap",
        "url": slapd.url(),
        "baseDn": slapd.base_dn(),
        "bindDn": slapd.admin_dn(),
        "bindPassword": slapd.admin_password(),
        "startTls": false, "tlsVerify": true, "timeoutSeconds": 10, "pageSize": 500,
        "passwordHashing": "SSHA",
        "objectTypes": {
            "account": {"baseDn": null, "namingAttribute": "uid",
                        "objectClasses": ["top", "person", "organizationalPerson", "inetOrgPerson"],
                        "passwordAttribute": "userPassword"},
            "group": {"namingAttribute": "cn", "objectClasses": ["top", "groupOfNames"],
                      "memberAttribute": "member", "placeholderMember": ""},
            "uniqueGroup": {"namingAttribute": "cn", "objectClasses": ["top", "groupOfUniqueNames"],
                            "memberAttribute": "uniqueMember", "placeholderMember": ""},
            "orgUnit": {"namingAttribute": "ou", "objectClasses": ["top", "organizationalUnit"]},
            "person": {"baseDn": format!("ou=people,{}", slapd.base_dn()), "namingAttribute": "uid",
                       "objectClasses": ["top", "inetOrgPerson"], "passwordAttribute": "userPassword"},
            "posixUser": {"namingAttribute": "uid",
                          "objectClasses": ["top", "inetOrgPerson", "posixAccount"]}
        }
    }));
    body.extend(map(extra));
    body
}

fn connector(slapd: &Slapd, extra: Value) -> LdapConnector {
    LdapConnector::from_config("ldap", &conf(slapd, extra), Path::new(".")).unwrap()
}

fn account(uid: &str) -> Map<String, Value> {
    map(json!({"uid": uid, "cn": format!("User {uid}"), "sn": uid}))
}

async fn all(stream: BoxStream<'_, Result<SourceItem, ConnectorError>>) -> Vec<ConnectorObject> {
    stream
        .map_ok(|item| match item {
            SourceItem::Object(object) => object,
            SourceItem::Bad(bad) => panic!("bad record {bad:?}"),
        })
        .try_collect()
        .await
        .unwrap()
}

async fn uids(stream: BoxStream<'_, Result<SourceItem, ConnectorError>>) -> Vec<String> {
    let mut uids: Vec<String> = all(stream)
        .await
        .into_iter()
        .map(|o| o.attributes["uid"].as_str().unwrap().to_string())
        .collect();
    uids.sort();
    uids
}

fn sorted(values: &Value) -> Vec<String> {
    let mut values: Vec<String> = values
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    values.sort();
    values
}

/// An attribute's values as the directory holds them, read as the admin
/// past the connector (which hides the placeholder member).
async fn stored_values(slapd: &Slapd, dn: &str, attribute: &str) -> Vec<String> {
    let (connection, mut ldap) = LdapConnAsync::new(&slapd.url()).await.unwrap();
    tokio::spawn(connection.drive());
    ldap.simple_bind(slapd.admin_dn(), slapd.admin_password())
        .await
        .unwrap();
    let (entries, _) = ldap
        .search(dn, Scope::Base, "(objectClass=*)", vec![attribute])
        .await
        .unwrap()
        .success()
        .unwrap();
    let mut entry = SearchEntry::construct(entries.into_iter().next().unwrap());
    entry.attrs.remove(attribute).unwrap_or_default()
}

fn ldapwhoami(slapd: &Slapd, dn: &str, password: &str) -> bool {
    Command::new("ldapwhoami")
        .args(["-x", "-H", &slapd.url(), "-D", dn, "-w", password])
        .output()
        .expect("ldapwhoami (apt-get install -y ldap-utils)")
        .status
        .success()
}

// -- pure ---------------------------------------------------------------

#[test]
fn conf_is_checked_and_env_text_is_accepted() {
    let base = json!({"connectorType": "ldap", "url": "ldap://h:389", "baseDn": "dc=x",
        "objectTypes": {"account": {"namingAttribute": "uid", "objectClasses": ["inetOrgPerson"]}}});
    let build = |patch: Value| {
        let mut body = map(base.clone());
        body.extend(map(patch));
        LdapConnector::from_config("dir", &body, Path::new("."))
    };
    let field_of = |patch: Value| match build(patch) {
        Err(ConnectorError::Config { field, .. }) => field,
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("accepted"),
    };
    assert_eq!(field_of(json!({"url": "http://h"})), "url");
    assert_eq!(field_of(json!({"url": null})), "url");
    assert_eq!(field_of(json!({"baseDn": ""})), "baseDn");
    assert_eq!(field_of(json!({"startTls": "maybe"})), "startTls");
    assert_eq!(
        field_of(json!({"url": "ldaps://h", "startTls": true})),
        "startTls"
    );
    assert_eq!(field_of(json!({"pageSize": 0})), "pageSize");
    assert_eq!(field_of(json!({"timeoutSeconds": -1})), "timeoutSeconds");
    assert_eq!(
        field_of(json!({"passwordHashing": "md5"})),
        "passwordHashing"
    );
    assert_eq!(field_of(json!({"objectTypes": {}})), "objectTypes");
    assert_eq!(
        field_of(json!({"objectTypes": {"a": {"namingAttribute": "uid", "objectClasses": []}}})),
        "objectTypes.a.objectClasses"
    );
    assert_eq!(
        field_of(
            json!({"objectTypes": {"a": {"namingAttribute": "u id", "objectClasses": ["x"]}}})
        ),
        "objectTypes.a.namingAttribute"
    );

    // What $env references resolve to: text.
    let c = build(
        json!({"startTls": "true", "tlsVerify": "false", "timeoutSeconds": "2.5",
        "pageSize": "50", "baseDn": "DC=Example, DC=org"}),
    )
    .unwrap();
    assert!(c.start_tls && !c.tls_verify);
    assert_eq!(c.timeout, Duration::from_millis(2500));
    assert_eq!(c.page_size, 50);
    assert_eq!(c.types["account"].base_dn, "dc=Example,dc=org");
    assert_eq!(
        c.capabilities(),
        Capabilities {
            read: true,
            create: true,
            update: true,
            delete: true
        }
    );
    assert_eq!(c.object_types()[0].name, "account");
    assert_eq!(c.object_types()[0].uid_attribute, "dn");
}

#[test]
fn uid_for_is_the_dn_create_would_use() {
    let c = LdapConnector::from_config(
        "ldap",
        &map(
            json!({"connectorType": "ldap", "url": "ldap://h", "baseDn": "dc=example,dc=org",
            "objectTypes": {
                "account": {"namingAttribute": "uid", "objectClasses": ["inetOrgPerson"],
                            "baseDn": "ou=people,dc=example,dc=org"}}}),
        ),
        Path::new("."),
    )
    .unwrap();
    let uid_for = |attrs: Value| c.uid_for("account", &map(attrs));
    assert_eq!(
        uid_for(json!({"uid": "jdoe", "cn": "J"})).as_deref(),
        Some("uid=jdoe,ou=people,dc=example,dc=org")
    );
    assert_eq!(
        uid_for(json!({"uid": ["Doe, J"]})).as_deref(),
        Some(r"uid=Doe\2C J,ou=people,dc=example,dc=org")
    );
    assert_eq!(
        uid_for(json!({"dn": "cn=x,dc=example,dc=org", "uid": "jdoe"})).as_deref(),
        Some("cn=x,dc=example,dc=org")
    );
    assert_eq!(uid_for(json!({"cn": "no uid"})), None);
    assert_eq!(uid_for(json!({"uid": ["a", "b"]})), None);
    assert_eq!(c.uid_for("nope", &map(json!({"uid": "a"}))), None);
}

#[test]
fn same_value_compares_like_the_directory() {
    let c = LdapConnector::from_config(
        "ldap",
        &map(
            json!({"connectorType": "ldap", "url": "ldap://h", "baseDn": "dc=x",
            "objectTypes": {
                "account": {"namingAttribute": "uid", "objectClasses": ["inetOrgPerson"],
                            "passwordAttribute": "userPassword"},
                "group": {"namingAttribute": "cn", "objectClasses": ["groupOfNames"],
                          "memberAttribute": "member", "placeholderMember": ""}}}),
        ),
        Path::new("."),
    )
    .unwrap();
    let same = |t: &str, a: &str, current: Option<Value>, wanted: Value| {
        c.same_value(t, a, current.as_ref(), &wanted)
    };
    let hash = json!(ssha("pw"));
    assert!(same(
        "account",
        "userPassword",
        Some(hash.clone()),
        json!("pw")
    ));
    assert!(same(
        "account",
        "USERPASSWORD",
        Some(hash.clone()),
        json!("pw")
    ));
    assert!(!same(
        "account",
        "userPassword",
        Some(hash.clone()),
        json!("other")
    ));
    assert!(!same("account", "userPassword", None, json!("pw")));
    assert!(same(
        "account",
        "userPassword",
        Some(hash.clone()),
        hash.clone()
    ));
    assert!(same(
        "account",
        "userPassword",
        Some(json!("{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=")),
        json!("secret")
    ));
    assert!(same("account", "userPassword", None, Value::Null));

    assert!(same(
        "account",
        "cn",
        Some(json!("John Doe")),
        json!("john doe")
    ));
    assert!(same(
        "account",
        "mail",
        Some(json!(["a@x", "B@x"])),
        json!(["b@x", "A@x"])
    ));
    assert!(!same(
        "account",
        "mail",
        Some(json!(["a@x"])),
        json!(["a@x", "b@x"])
    ));
    assert!(same("account", "mail", None, json!([])));
    assert!(same("account", "mail", None, Value::Null));
    assert!(!same("account", "mail", Some(json!("a@x")), Value::Null));
    assert!(same(
        "account",
        "employeeNumber",
        Some(json!("42")),
        json!(42)
    ));

    assert!(same(
        "group",
        "member",
        Some(json!(["uid=A,dc=x", "uid=b, dc=x"])),
        json!(["UID=b,dc=x", "uid=a,DC=x"])
    ));
    assert!(same("group", "member", None, json!([])));
    assert!(
        same("group", "member", None, json!([""])),
        "the placeholder is no member"
    );
    assert!(!same(
        "group",
        "member",
        Some(json!("uid=a,dc=x")),
        json!([])
    ));
}

#[test]
fn a_type_base_dn_must_lie_inside_the_connector_base_dn() {
    let body = |type_base: &str| {
        map(
            json!({"connectorType": "ldap", "url": "ldap://h", "baseDn": "ou=people,dc=example,dc=org",
            "objectTypes": {"account": {"namingAttribute": "uid", "objectClasses": ["inetOrgPerson"],
                                        "baseDn": type_base}}}),
        )
    };
    let c = LdapConnector::from_config(
        "ldap",
        &body("ou=staff,ou=people,dc=example,dc=org"),
        Path::new("."),
    )
    .unwrap();
    assert_eq!(
        c.uid_for("account", &map(json!({"uid": "jdoe"})))
            .as_deref(),
        Some("uid=jdoe,ou=staff,ou=people,dc=example,dc=org")
    );
    // A mapped dn elsewhere names nothing this connector may create.
    assert_eq!(
        c.uid_for("account", &map(json!({"dn": "cn=admin,dc=example,dc=org"}))),
        None
    );
    match LdapConnector::from_config("ldap", &body("dc=example,dc=org"), Path::new(".")) {
        Err(ConnectorError::Config { field, .. }) => {
            assert_eq!(field, "objectTypes.account.baseDn")
        }
        Err(other) => panic!("{other:?}"),
        Ok(_) => panic!("a type outside the connector's tree was accepted"),
    }
}

// -- against a real slapd ------------------------------------------------

#[tokio::test]
async fn a_mapped_dn_never_creates_or_moves_an_entry_outside_the_base_dn() {
    let slapd = Slapd::start().unwrap();
    let base = slapd.base_dn();
    let whole = connector(&slapd, json!({}));
    match whole.create("orgUnit", &map(json!({"ou": "people"}))).await {
        Ok(_) | Err(ConnectorError::AlreadyExists { .. }) => {}
        Err(other) => panic!("{other:?}"),
    }
    let people = connector(&slapd, json!({"baseDn": format!("ou=people,{base}")}));

    let outside = format!("uid=evil,{base}");
    let mut attrs = account("evil");
    attrs.insert("dn".into(), json!(outside));
    match people.create("account", &attrs).await {
        Err(e @ ConnectorError::Rejected { .. }) => {
            assert!(e.to_string().contains("not below"), "{e}");
            assert!(!e.is_transient());
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(whole.get("account", &outside).await.unwrap(), None);

    let inside = people.create("account", &account("moved")).await.unwrap();
    assert_eq!(inside, format!("uid=moved,ou=people,{base}"));
    match people
        .update(
            "account",
            &inside,
            &map(json!({"dn": format!("uid=moved,{base}")})),
        )
        .await
    {
        Err(e @ ConnectorError::Rejected { .. }) => {
            assert!(e.to_string().contains("not below"), "{e}");
            assert!(!e.is_transient());
        }
        other => panic!("{other:?}"),
    }
    assert!(people.get("account", &inside).await.unwrap().is_some());
    assert_eq!(
        whole
            .get("account", &format!("uid=moved,{base}"))
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn creates_reads_updates_renames_and_deletes_an_account() {
    let slapd = Slapd::start().unwrap();
    let c = connector(&slapd, json!({}));

    let mut attrs = account("jdoe");
    attrs.insert(
        "mail".into(),
        json!(["jdoe@example.org", "john@example.org"]),
    );
    attrs.insert("description".into(), Value::Null);
    attrs.insert("telephoneNumber".into(), json!([]));
    attrs.insert("employeeNumber".into(), json!(42));
    let dn = c.create("account", &attrs).await.unwrap();
    assert_eq!(dn, "uid=jdoe,dc=example,dc=org");

    let read = c.get("account", &dn).await.unwrap().expect("created entry");
    assert_eq!(read.uid, dn);
    assert_eq!(
        sorted(&read.attributes["objectClass"]),
        ["inetOrgPerson", "organizationalPerson", "person", "top"]
    );
    assert_eq!(read.attributes["uid"], json!("jdoe"));
    assert_eq!(read.attributes["employeeNumber"], json!("42"));
    let mut mail: Vec<_> = read.attributes["mail"].as_array().unwrap().clone();
    mail.sort_by_key(|v| v.to_string());
    assert_eq!(mail, [json!("jdoe@example.org"), json!("john@example.org")]);
    assert!(!read.attributes.contains_key("description"));
    // By naming attribute as well as by DN.
    assert_eq!(c.get("account", "jdoe").await.unwrap().unwrap().uid, dn);
    assert_eq!(c.get("account", "nobody").await.unwrap(), None);
    assert_eq!(
        c.get("account", "uid=nobody,dc=example,dc=org")
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        c.get("account", "uid=x,ou=nowhere,dc=example,dc=org")
            .await
            .unwrap(),
        None
    );
    // An entry of another type is not an account.
    assert_eq!(c.get("group", &dn).await.unwrap(), None);

    match c.create("account", &account("jdoe")).await {
        Err(ConnectorError::AlreadyExists { object, .. }) => {
            assert!(object.contains(&dn), "{object}")
        }
        other => panic!("{other:?}"),
    }

    let changes = map(json!({"mail": "jd@example.org", "employeeNumber": null,
        "description": [], "title": ["Engineer"]}));
    assert_eq!(c.update("account", &dn, &changes).await.unwrap(), dn);
    let read = c.get("account", &dn).await.unwrap().unwrap();
    assert_eq!(read.attributes["mail"], json!("jd@example.org"));
    assert_eq!(read.attributes["title"], json!("Engineer"));
    assert!(!read.attributes.contains_key("employeeNumber"));
    assert_eq!(c.update("account", &dn, &Map::new()).await.unwrap(), dn);

    // A new naming value renames the entry; the old value goes.
    let renamed = c
        .update(
            "account",
            &dn,
            &map(json!({"uid": "john.doe", "cn": "John Doe"})),
        )
        .await
        .unwrap();
    assert_eq!(renamed, "uid=john.doe,dc=example,dc=org");
    assert_eq!(c.get("account", &dn).await.unwrap(), None);
    let read = c.get("account", &renamed).await.unwrap().unwrap();
    assert_eq!(read.uid, renamed);
    assert_eq!(read.attributes["uid"], json!("john.doe"));
    assert_eq!(read.attributes["cn"], json!("John Doe"));
    assert_eq!(read.attributes["mail"], json!("jd@example.org"));
    // Same value in another case: no rename.
    assert_eq!(
        c.update("account", &renamed, &map(json!({"uid": "John.Doe"})))
            .await
            .unwrap(),
        renamed
    );
    // A rename by dn.
    let by_dn = c
        .update(
            "account",
            &renamed,
            &map(json!({"dn": "uid=jd,dc=example,dc=org", "uid": "jd"})),
        )
        .await
        .unwrap();
    assert_eq!(by_dn, "uid=jd,dc=example,dc=org");
    assert!(c.get("account", &by_dn).await.unwrap().is_some());

    match c.update("account", &dn, &map(json!({"title": "x"}))).await {
        Err(ConnectorError::NotFound { object, .. }) => {
            assert!(object.contains(&dn), "{object}")
        }
        other => panic!("{other:?}"),
    }
    match c
        .update("account", &by_dn, &map(json!({"noSuchAttr": "x"})))
        .await
    {
        Err(e @ ConnectorError::Rejected { .. }) => {
            let message = e.to_string();
            assert!(message.contains("undefinedAttributeType (17)"), "{message}");
            assert!(!e.is_transient());
        }
        other => panic!("{other:?}"),
    }
    match c
        .create("account", &map(json!({"uid": "nosn", "cn": "x"})))
        .await
    {
        Err(ConnectorError::Rejected { message, .. }) => {
            assert!(message.contains("objectClassViolation (65)"), "{message}")
        }
        other => panic!("{other:?}"),
    }

    c.delete("account", &by_dn).await.unwrap();
    assert_eq!(c.get("account", &by_dn).await.unwrap(), None);
    c.delete("account", &by_dn).await.unwrap();
    c.delete("account", "uid=never,dc=example,dc=org")
        .await
        .unwrap();
}

#[tokio::test]
async fn entries_live_under_their_types_base_and_names_are_escaped() {
    let slapd = Slapd::start().unwrap();
    let c = connector(&slapd, json!({}));
    // The person type's base does not exist yet.
    match c.create("person", &account("early")).await {
        Err(ConnectorError::NotFound { .. }) => {}
        other => panic!("{other:?}"),
    }
    match c.query("person").try_collect::<Vec<_>>().await {
        Err(ConnectorError::NotFound { object, .. }) => {
            assert!(object.contains("ou=people"), "{object}")
        }
        other => panic!("{other:?}"),
    }
    let ou = c
        .create("orgUnit", &map(json!({"ou": "people"})))
        .await
        .unwrap();
    assert_eq!(ou, "ou=people,dc=example,dc=org");

    let odd = r#"Doe, "J" + <x>; a=b\ *(y) #1 "#;
    let dn = c.create("person", &account(odd)).await.unwrap();
    assert_eq!(
        dn,
        r"uid=Doe\2C \22J\22 \2B \3Cx\3E\3B a\3Db\5C *(y) #1\20,ou=people,dc=example,dc=org"
    );
    assert_eq!(
        c.uid_for("person", &account(odd)).as_deref(),
        Some(dn.as_str())
    );
    // The server names the entry exactly as create did.
    let listed = all(c.query("person")).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].uid, dn);
    assert_eq!(listed[0].attributes["uid"], json!(odd));
    assert_eq!(c.get("person", odd).await.unwrap().unwrap().uid, dn);
    // An account type over the whole tree sees it too; person does not see the ou.
    assert_eq!(all(c.query("account")).await.len(), 1);

    let renamed = c
        .update("person", &dn, &map(json!({"uid": "a,b"})))
        .await
        .unwrap();
    assert_eq!(renamed, r"uid=a\2Cb,ou=people,dc=example,dc=org");
    assert_eq!(all(c.query("person")).await[0].uid, renamed);
    c.delete("person", &renamed).await.unwrap();
    assert!(all(c.query("person")).await.is_empty());
}

#[tokio::test]
async fn query_pages_through_more_entries_than_the_size_limit() {
    // Binds other than the admin get at most 5 entries per unpaged search.
    let slapd = Slapd::builder().size_limit(5).start().unwrap();
    let admin = connector(&slapd, json!({}));
    let mut reader = account("reader");
    reader.insert("userPassword".into(), json!("reader-pw"));
    let reader_dn = admin.create("account", &reader).await.unwrap();
    for i in 0..12 {
        admin
            .create("account", &account(&format!("user{i:02}")))
            .await
            .unwrap();
    }

    let c = connector(
        &slapd,
        json!({"bindDn": reader_dn, "bindPassword": "reader-pw", "pageSize": 5}),
    );
    let mut expected: Vec<String> = (0..12).map(|i| format!("user{i:02}")).collect();
    expected.push("reader".into());
    expected.sort();
    assert_eq!(uids(c.query("account")).await, expected);
    let filter = idm_proto::filter::parse(r#"uid sw "user""#).unwrap();
    assert_eq!(uids(c.search("account", &filter)).await.len(), 12);

    // Without paging the same bind is cut at 5: only paging got all 13.
    let (connection, mut ldap) = LdapConnAsync::new(&slapd.url()).await.unwrap();
    tokio::spawn(connection.drive());
    ldap.simple_bind(&reader_dn, "reader-pw")
        .await
        .unwrap()
        .success()
        .unwrap();
    let unpaged = ldap
        .search(
            slapd.base_dn(),
            Scope::Subtree,
            "(objectClass=inetOrgPerson)",
            vec!["uid"],
        )
        .await
        .unwrap();
    assert_eq!(
        (unpaged.1.rc, unpaged.0.len()),
        (4, 5),
        "sizeLimitExceeded after 5"
    );
}

#[tokio::test]
async fn search_translates_each_operator_against_real_entries() {
    let slapd = Slapd::start().unwrap();
    let c = connector(&slapd, json!({"pageSize": 2}));
    for (i, description) in ["plain", r"a*(b)\c", "a", r"aX(b)\c", "(b)"]
        .iter()
        .enumerate()
    {
        let mut attrs = account(&format!("u{i}"));
        attrs.insert(
            "objectClass".into(),
            json!(["top", "inetOrgPerson", "posixAccount"]),
        );
        attrs.insert("uidNumber".into(), json!(1000 + i));
        attrs.insert("gidNumber".into(), json!(100));
        attrs.insert("homeDirectory".into(), json!(format!("/home/u{i}")));
        attrs.insert("description".into(), json!(description));
        if i % 2 == 0 {
            attrs.insert("mail".into(), json!(format!("u{i}@example.org")));
        }
        c.create("posixUser", &attrs).await.unwrap();
    }
    // One entry of another type that every filter below would match.
    c.create(
        "account",
        &map(
            json!({"uid": "u9", "cn": "x", "sn": "x", "description": "a",
        "mail": "u9@example.org"}),
        ),
    )
    .await
    .unwrap();

    let search = |scim: &str| {
        let filter = idm_proto::filter::parse(scim).unwrap();
        let c = &c;
        async move { uids(c.search("posixUser", &filter)).await }
    };
    assert_eq!(search(r#"uid eq "u1""#).await, ["u1"]);
    assert_eq!(search(r#"uid ne "u1""#).await, ["u0", "u2", "u3", "u4"]);
    assert_eq!(
        search(r#"cn co "ser U""#).await,
        ["u0", "u1", "u2", "u3", "u4"]
    );
    assert_eq!(search(r#"cn sw "User u3""#).await, ["u3"]);
    assert_eq!(search(r#"cn ew "er u4""#).await, ["u4"]);
    assert_eq!(search("mail pr").await, ["u0", "u2", "u4"]);
    assert_eq!(search("uidNumber gt 1002").await, ["u3", "u4"]);
    assert_eq!(search("uidNumber ge 1002").await, ["u2", "u3", "u4"]);
    assert_eq!(search("uidNumber lt 1002").await, ["u0", "u1"]);
    assert_eq!(search("uidNumber le 1002").await, ["u0", "u1", "u2"]);
    assert_eq!(
        search(r#"mail pr and not (uid eq "u2")"#).await,
        ["u0", "u4"]
    );
    assert_eq!(
        search(r#"uid eq "u1" or uidNumber ge 1004"#).await,
        ["u1", "u4"]
    );
    assert_eq!(search("mail eq null").await, ["u1", "u3"]);
    // Special characters are values, not wildcards or structure.
    assert_eq!(search(r#"description eq "a*(b)\\c""#).await, ["u1"]);
    assert_eq!(search(r#"description co "(b)""#).await, ["u1", "u3", "u4"]);
    assert_eq!(search(r#"description co "*""#).await, ["u1"]);
    assert_eq!(search(r#"description eq "a""#).await, ["u2"]);
    assert_eq!(search(r#"description sw "a""#).await, ["u1", "u2", "u3"]);

    let filter = idm_proto::filter::parse(r#"emails[type eq "work"]"#).unwrap();
    match c.search("posixUser", &filter).try_collect::<Vec<_>>().await {
        Err(ConnectorError::Rejected { message, .. }) => {
            assert!(message.contains("value filters"), "{message}")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn passwords_are_stored_as_ssha_and_bind() {
    let slapd = Slapd::start().unwrap();
    let c = connector(&slapd, json!({}));
    let mut attrs = account("pat");
    attrs.insert("userPassword".into(), json!("Secr3t! pass"));
    let dn = c.create("account", &attrs).await.unwrap();

    let stored = c.get("account", &dn).await.unwrap().unwrap().attributes["userPassword"].clone();
    assert!(stored.as_str().unwrap().starts_with("{SSHA}"), "{stored}");
    assert!(ldapwhoami(&slapd, &dn, "Secr3t! pass"));
    assert!(!ldapwhoami(&slapd, &dn, "wrong"));
    assert!(c.same_value(
        "account",
        "userPassword",
        Some(&stored),
        &json!("Secr3t! pass")
    ));
    assert!(!c.same_value("account", "userPassword", Some(&stored), &json!("wrong")));

    c.update("account", &dn, &map(json!({"userPassword": "n3w"})))
        .await
        .unwrap();
    let stored = c.get("account", &dn).await.unwrap().unwrap().attributes["userPassword"].clone();
    assert!(c.same_value("account", "userPassword", Some(&stored), &json!("n3w")));
    assert!(ldapwhoami(&slapd, &dn, "n3w"));
    assert!(!ldapwhoami(&slapd, &dn, "Secr3t! pass"));

    // Cleartext for directories that hash themselves: sent as given.
    let clear = connector(&slapd, json!({"passwordHashing": "cleartext"}));
    let mut attrs = account("clara");
    attrs.insert("userPassword".into(), json!("plain-pw"));
    let dn = clear.create("account", &attrs).await.unwrap();
    let stored =
        clear.get("account", &dn).await.unwrap().unwrap().attributes["userPassword"].clone();
    assert_eq!(stored, json!("plain-pw"));
    assert!(ldapwhoami(&slapd, &dn, "plain-pw"));
}

#[tokio::test]
async fn an_emptied_group_keeps_the_placeholder_member() {
    let slapd = Slapd::start().unwrap();
    let c = connector(&slapd, json!({}));
    let alice = c.create("account", &account("alice")).await.unwrap();
    let bob = c.create("account", &account("bob")).await.unwrap();

    let group = c
        .create(
            "group",
            &map(json!({"cn": "staff", "member": [alice, bob]})),
        )
        .await
        .unwrap();
    assert_eq!(group, "cn=staff,dc=example,dc=org");
    let read = c.get("group", &group).await.unwrap().unwrap();
    assert_eq!(
        sorted(&read.attributes["objectClass"]),
        ["groupOfNames", "top"]
    );
    let members = read.attributes.get("member").cloned();
    assert!(c.same_value(
        "group",
        "member",
        members.as_ref(),
        &json!([bob, alice.to_uppercase()])
    ));

    c.update("group", &group, &map(json!({"member": []})))
        .await
        .unwrap();
    let read = c.get("group", &group).await.unwrap().unwrap();
    assert!(!read.attributes.contains_key("member"), "{read:?}");
    assert!(c.same_value("group", "member", None, &json!([])));
    // The directory holds the placeholder (groupOfNames needs a member).
    assert_eq!(stored_values(&slapd, &group, "member").await, [""]);

    c.update("group", &group, &map(json!({"member": [alice]})))
        .await
        .unwrap();
    let read = c.get("group", &group).await.unwrap().unwrap();
    assert_eq!(read.attributes["member"], json!(alice));
    c.update("group", &group, &map(json!({"member": null})))
        .await
        .unwrap();
    assert!(
        !c.get("group", &group)
            .await
            .unwrap()
            .unwrap()
            .attributes
            .contains_key("member")
    );

    let empty = c.create("group", &map(json!({"cn": "nobody-yet"}))).await;
    // No member given at all: groupOfNames refuses, as the schema says.
    assert!(
        matches!(empty, Err(ConnectorError::Rejected { .. })),
        "{empty:?}"
    );
    let empty = c
        .create("group", &map(json!({"cn": "empty", "member": []})))
        .await
        .unwrap();
    assert!(
        !c.get("group", &empty)
            .await
            .unwrap()
            .unwrap()
            .attributes
            .contains_key("member")
    );
}

#[tokio::test]
async fn a_group_of_unique_names_is_written_read_emptied_and_deleted() {
    let slapd = Slapd::start().unwrap();
    let c = connector(&slapd, json!({}));
    let alice = c.create("account", &account("alice")).await.unwrap();
    let bob = c.create("account", &account("bob")).await.unwrap();

    let group = c
        .create(
            "uniqueGroup",
            &map(json!({"cn": "admins", "uniqueMember": [alice, bob]})),
        )
        .await
        .unwrap();
    assert_eq!(group, "cn=admins,dc=example,dc=org");
    let read = c.get("uniqueGroup", &group).await.unwrap().unwrap();
    assert_eq!(read.uid, group);
    assert_eq!(
        sorted(&read.attributes["objectClass"]),
        ["groupOfUniqueNames", "top"]
    );
    assert_eq!(
        sorted(&read.attributes["uniqueMember"]),
        sorted(&json!([alice, bob]))
    );
    assert!(c.same_value(
        "uniqueGroup",
        "uniqueMember",
        read.attributes.get("uniqueMember"),
        &json!([bob.to_uppercase(), alice])
    ));
    // Not a groupOfNames, and a groupOfNames is not one of these.
    assert_eq!(c.get("group", &group).await.unwrap(), None);
    assert_eq!(all(c.query("uniqueGroup")).await.len(), 1);

    c.update("uniqueGroup", &group, &map(json!({"uniqueMember": []})))
        .await
        .unwrap();
    let read = c.get("uniqueGroup", &group).await.unwrap().unwrap();
    assert!(!read.attributes.contains_key("uniqueMember"), "{read:?}");
    assert!(c.same_value("uniqueGroup", "uniqueMember", None, &json!([])));
    // groupOfUniqueNames needs a member too: the directory holds the placeholder.
    assert_eq!(stored_values(&slapd, &group, "uniqueMember").await, [""]);

    c.delete("uniqueGroup", &group).await.unwrap();
    assert_eq!(c.get("uniqueGroup", &group).await.unwrap(), None);
    assert!(all(c.query("uniqueGroup")).await.is_empty());
}

#[tokio::test]
async fn a_server_that_never_answers_is_a_timeout() {
    // Accepts connections and holds them open without ever sending a byte.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ldap://{}", listener.local_addr().unwrap());
    let accepted = Arc::new(AtomicU64::new(0));
    let silent = tokio::spawn({
        let accepted = accepted.clone();
        async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                accepted.fetch_add(1, Ordering::Relaxed);
                held.push(socket);
            }
        }
    });
    let limit = Duration::from_millis(200);
    let connector = |bind_dn: Value| {
        let body = map(
            json!({"connectorType": "ldap", "url": url, "baseDn": "dc=example,dc=org",
            "bindDn": bind_dn, "bindPassword": "pw", "timeoutSeconds": 0.2,
            "objectTypes": {"account": {"namingAttribute": "uid", "objectClasses": ["inetOrgPerson"]}}}),
        );
        LdapConnector::from_config("ldap", &body, Path::new(".")).unwrap()
    };
    let timed_out = |outcome: Result<(), ConnectorError>, about: &str| match outcome {
        Err(ConnectorError::Timeout { object, after, .. }) => {
            assert_eq!(after, limit);
            assert!(object.contains(about), "{object} should name {about}");
        }
        other => panic!("{other:?}"),
    };
    let started = Instant::now();

    // The TCP connect succeeds; the bind is never answered.
    let bound = connector(json!("cn=admin,dc=example,dc=org"));
    timed_out(bound.get("account", "jdoe").await.map(|_| ()), &url);

    // Anonymous: no bind, so the operation itself waits. A connection that
    // timed out is dropped: each call opens a new one, and times out on it too.
    let anonymous = connector(Value::Null);
    let dn = "uid=jdoe,dc=example,dc=org";
    timed_out(anonymous.get("account", dn).await.map(|_| ()), dn);
    timed_out(
        anonymous
            .create("account", &account("jdoe"))
            .await
            .map(|_| ()),
        dn,
    );
    timed_out(
        anonymous
            .update("account", dn, &map(json!({"cn": "x"})))
            .await
            .map(|_| ()),
        dn,
    );
    timed_out(anonymous.delete("account", dn).await, dn);
    timed_out(
        anonymous
            .query("account")
            .try_collect::<Vec<_>>()
            .await
            .map(|_| ()),
        "dc=example,dc=org",
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "six calls at 200 ms each took {:?}",
        started.elapsed()
    );
    assert_eq!(accepted.load(Ordering::Relaxed), 6);
    silent.abort();
}

#[tokio::test]
async fn the_connection_survives_a_restart_and_is_unavailable_while_stopped() {
    let mut slapd = Slapd::start().unwrap();
    let c = connector(&slapd, json!({}));
    let dn = c.create("account", &account("before")).await.unwrap();

    slapd.stop();
    for outcome in [
        c.get("account", &dn).await.map(|_| ()),
        c.create("account", &account("during")).await.map(|_| ()),
        c.query("account").try_collect::<Vec<_>>().await.map(|_| ()),
    ] {
        match outcome {
            Err(e @ ConnectorError::Unavailable { .. }) => assert!(e.is_transient()),
            other => panic!("{other:?}"),
        }
    }

    slapd.restart().unwrap();
    assert!(
        c.get("account", &dn).await.unwrap().is_some(),
        "data and connection are back"
    );

    // A write first thing after a restart, on the connection from before
    // it, with no chance for the connection task to notice the close
    // (this thread blocks): the pause makes the connector check first.
    slapd.restart().unwrap();
    std::thread::sleep(PROBE_WHEN_QUIET_FOR);
    let after = c.create("account", &account("after")).await.unwrap();
    slapd.restart().unwrap();
    assert_eq!(uids(c.query("account")).await, ["after", "before"]);
    slapd.restart().unwrap();
    c.delete("account", &after).await.unwrap();
}

#[tokio::test]
async fn tls_by_ldaps_or_starttls_checks_the_certificate() {
    let slapd = Slapd::builder().tls().start().unwrap();
    let ca = slapd.tls_ca().unwrap();
    let ldaps = slapd.ldaps_url().unwrap();
    let trusting = [
        json!({"url": ldaps, "tlsCaFile": ca}),
        json!({"startTls": true, "tlsCaFile": ca}),
        json!({"url": ldaps, "tlsVerify": false}),
        json!({"startTls": true, "tlsVerify": false}),
    ];
    for (i, extra) in trusting.into_iter().enumerate() {
        let c = connector(&slapd, extra.clone());
        let dn = c.create("account", &account(&format!("tls{i}"))).await;
        let dn = dn.unwrap_or_else(|e| panic!("{extra}: {e}"));
        assert!(c.get("account", &dn).await.unwrap().is_some(), "{extra}");
    }

    // The system's CAs do not know the sandbox's CA.
    for extra in [json!({"url": ldaps}), json!({"startTls": true})] {
        match connector(&slapd, extra.clone())
            .get("account", "tls0")
            .await
        {
            Err(e @ ConnectorError::Rejected { .. }) => {
                let message = e.to_string();
                assert!(
                    message.contains("TLS") && message.contains("certificate"),
                    "{extra}: {message}"
                );
                assert!(!e.is_transient());
            }
            other => panic!("{extra}: {other:?}"),
        }
    }

    let field_of = |extra: Value| match LdapConnector::from_config(
        "ldap",
        &conf(&slapd, extra),
        Path::new("."),
    ) {
        Err(ConnectorError::Config { field, message, .. }) => format!("{field}: {message}"),
        other => panic!("{:?}", other.map(|_| ())),
    };
    assert!(
        field_of(json!({"tlsCaFile": "/nonexistent/ca.pem"}))
            .starts_with("tlsCaFile: /nonexistent/ca.pem")
    );
    assert!(
        field_of(json!({"tlsCaFile": ca, "tlsVerify": false}))
            .starts_with("tlsCaFile: tlsVerify is false")
    );
    let key = ca.with_file_name("server.key");
    assert!(field_of(json!({"tlsCaFile": key})).contains("no PEM certificate"));
}

#[tokio::test]
async fn a_refused_bind_is_rejected_without_the_password() {
    let slapd = Slapd::start().unwrap();
    let c = connector(&slapd, json!({"bindPassword": "not-the-admin-password"}));
    match c.get("account", "uid=x,dc=example,dc=org").await {
        Err(e @ ConnectorError::Rejected { .. }) => {
            let message = e.to_string();
            assert!(message.contains("invalidCredentials (49)"), "{message}");
            assert!(message.contains(slapd.admin_dn()), "{message}");
            assert!(!message.contains("not-the-admin-password"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn connector_build_makes_an_ldap_connector() {
    let slapd = Slapd::start().unwrap();
    let mut body = conf(&slapd, json!({}));
    body.insert(
        "url".into(),
        json!({"$env": "IDM_TEST_UNSET_LDAP_URL", "default": slapd.url()}),
    );
    // As stored: the bind password sealed, opened only to build.
    let secrets = test_secret_box();
    let sealed = crate::config::seal("connector", &body, &secrets).unwrap();
    assert!(sealed["bindPassword"]["$sealed"].is_string(), "{sealed:?}");
    let built = super::super::build("dir", &sealed, std::path::Path::new("."), &secrets).unwrap();
    assert_eq!(built.name(), "dir");
    let dn = built.create("account", &account("built")).await.unwrap();
    assert!(built.get("account", &dn).await.unwrap().is_some());
}

fn test_secret_box() -> crate::secrets::SecretBox {
    use base64::Engine;
    let key = base64::engine::general_purpose::STANDARD.encode([9u8; 32]);
    crate::secrets::SecretBox::load_or_create(std::path::Path::new("/nonexistent"), Some(&key))
        .unwrap()
}

#[tokio::test]
async fn connector_errors_name_env_references_and_secret_fields_never_their_values() {
    let slapd = Slapd::start().unwrap();
    let secrets = test_secret_box();
    // A URL from `$env` that is not an LDAP URL: the message names the reference.
    let mut body = conf(&slapd, json!({}));
    body.insert(
        "url".into(),
        json!({"$env": "IDM_TEST_UNSET_URL", "default": "http://s3cr3t-value.example"}),
    );
    let Err(refused) = super::super::build("dir", &body, std::path::Path::new("."), &secrets)
    else {
        panic!("an http:// URL was accepted");
    };
    let message = refused.to_string();
    assert!(!message.contains("s3cr3t-value"), "{message}");
    assert!(message.contains("$env:IDM_TEST_UNSET_URL"), "{message}");

    // A wrong sealed bind password: the bind is refused, and the password is not in the error.
    let mut body = conf(&slapd, json!({}));
    body.insert("bindPassword".into(), json!("wrong-s3cr3t-password"));
    let sealed = crate::config::seal("connector", &body, &secrets).unwrap();
    let built = super::super::build("dir", &sealed, std::path::Path::new("."), &secrets).unwrap();
    let failed = built
        .get("account", &format!("uid=x,{}", slapd.base_dn()))
        .await;
    let message = failed.unwrap_err().to_string();
    assert!(message.contains("bind"), "{message}");
    assert!(!message.contains("wrong-s3cr3t-password"), "{message}");

    // A sealed value under another key opens with another key only as an error.
    let other = {
        use base64::Engine;
        let key = base64::engine::general_purpose::STANDARD.encode([3u8; 32]);
        crate::secrets::SecretBox::load_or_create(std::path::Path::new("/nonexistent"), Some(&key))
            .unwrap()
    };
    let Err(unopened) = super::super::build("dir", &sealed, std::path::Path::new("."), &other)
    else {
        panic!("opened with the wrong key");
    };
    assert!(unopened.to_string().contains("bindPassword"), "{unopened}");
}

/// A measurement, not a check: raw ldap3 adds into a fresh sandbox, one
/// at a time and with 32 in flight on one connection.
/// `cargo test -p idm-server --lib connector::ldap -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn raw_add_rate() {
    let slapd = Slapd::start().unwrap();
    let (connection, mut ldap) = LdapConnAsync::new(&slapd.url()).await.unwrap();
    tokio::spawn(connection.drive());
    ldap.simple_bind(slapd.admin_dn(), slapd.admin_password())
        .await
        .unwrap();
    let entry = |i: usize| {
        vec![
            (
                "objectClass".to_string(),
                HashSet::from(["inetOrgPerson".to_string()]),
            ),
            ("uid".to_string(), HashSet::from([format!("u{i}")])),
            ("cn".to_string(), HashSet::from([format!("User {i}")])),
            ("sn".to_string(), HashSet::from([format!("S{i}")])),
            (
                "mail".to_string(),
                HashSet::from([format!("u{i}@example.org")]),
            ),
        ]
    };
    let dn = |i: usize| format!("uid=u{i},{}", slapd.base_dn());

    let n = 2_000;
    let started = Instant::now();
    for i in 0..n {
        ldap.add(&dn(i), entry(i)).await.unwrap().success().unwrap();
    }
    let serial = started.elapsed();

    let m = 10_000;
    let started = Instant::now();
    futures::stream::iter(n..n + m)
        .map(|i| {
            let mut ldap = ldap.clone();
            let (dn, entry) = (dn(i), entry(i));
            async move { ldap.add(&dn, entry).await.unwrap().success().unwrap() }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    let pipelined = started.elapsed();
    println!(
        "raw ldap3: one at a time {n} adds in {serial:?} = {:.0}/s; 32 in flight {m} adds in {pipelined:?} = {:.0}/s",
        n as f64 / serial.as_secs_f64(),
        m as f64 / pipelined.as_secs_f64()
    );

    // The same through the connector (one shared connection, spans, value checks).
    let c = connector(&slapd, json!({}));
    let started = Instant::now();
    for i in 0..n {
        c.create("account", &account(&format!("c{i}")))
            .await
            .unwrap();
    }
    let serial = started.elapsed();
    let started = Instant::now();
    futures::stream::iter(n..n + m)
        .map(|i| {
            let c = &c;
            async move {
                c.create("account", &account(&format!("c{i}")))
                    .await
                    .unwrap()
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    let pipelined = started.elapsed();
    println!(
        "LdapConnector::create: one at a time {n} in {serial:?} = {:.0}/s; 32 in flight {m} in {pipelined:?} = {:.0}/s",
        n as f64 / serial.as_secs_f64(),
        m as f64 / pipelined.as_secs_f64()
    );
}
