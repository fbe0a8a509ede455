use std::path::Path;

use serde_json::{Value, json};

use super::*;

fn object(value: Value) -> Map<String, Value> {
    value.as_object().cloned().unwrap()
}

fn sample(name: &str) -> Map<String, Value> {
    let text = match name {
        "csv" => include_str!("../../../../samples/sync/conf/provisioner.openicf-csv.json"),
        _ => include_str!("../../../../samples/sync/conf/provisioner.openicf-ldap.json"),
    };
    serde_json::from_str(text).unwrap()
}

fn run(icf: &Map<String, Value>) -> Translated {
    translate(Path::new("conf/provisioner.openicf-x.json"), "x", icf)
        .unwrap()
        .unwrap()
}

#[test]
fn the_cookbook_csv_file_becomes_a_csv_connector() {
    let translated = run(&sample("csv"));
    assert_eq!(translated.name, "csv");
    assert_eq!(
        Value::Object(translated.body),
        json!({"connectorType": "csv", "file": "&{launcher.project.location}/data/hr.csv",
               "objectTypes": {"employee": {"uidColumn": "uid", "delimiter": ",", "quote": "\""}}})
    );
    assert_eq!(translated.ignored, Vec::<String>::new());
}

#[test]
fn csv_headers_delimiter_quote_and_encoding_are_read() {
    let icf = object(json!({
        "connectorRef": {"connectorName": "org.forgerock.openicf.connectors.csvfile.CSVFileConnector"},
        "configurationProperties": {"csvFile": "/data/people.csv", "headerUid": "id", "headerName": "login",
            "fieldDelimiter": ";", "quoteCharacter": "'", "encoding": "ISO-8859-1", "newlineString": "\n"},
        "objectTypes": {"person": {"nativeType": "__ACCOUNT__", "properties": {
            "id": {"nativeName": "__UID__"}, "login": {"nativeName": "__NAME__"}, "email": {"nativeName": "mail"}}}}
    }));
    let translated = run(&icf);
    assert_eq!(translated.name, "x", "no name: the file's");
    assert_eq!(
        translated.body["objectTypes"]["person"],
        json!({"uidColumn": "id", "delimiter": ";", "quote": "'"})
    );
    assert_eq!(translated.body["file"], "/data/people.csv");
    let ignored = translated.ignored.join("\n");
    assert!(
        ignored.contains("configurationProperties.encoding"),
        "{ignored}"
    );
    assert!(
        ignored.contains("objectTypes.person.properties.email.nativeName"),
        "{ignored}"
    );
    assert_eq!(translated.ignored.len(), 2, "{ignored}");
}

#[test]
fn the_cookbook_ldap_file_becomes_an_ldap_connector_named_by_entry_uuid() {
    let mut icf = sample("ldap");
    let props = icf["configurationProperties"].as_object_mut().unwrap();
    props.insert("host".into(), json!("ldap"));
    props.insert("port".into(), json!("389"));
    props.insert("principal".into(), json!("cn=admin,dc=wrensecurity,dc=org"));
    props.insert("credentials".into(), json!("admin"));
    let translated = run(&icf);
    assert_eq!(translated.name, "ldap");
    assert_eq!(
        Value::Object(translated.body),
        json!({"connectorType": "ldap", "url": "ldap://ldap:389", "startTls": false,
               "bindDn": "cn=admin,dc=wrensecurity,dc=org", "bindPassword": "admin",
               "baseDn": "dc=wrensecurity,dc=org", "uidAttribute": "entryUUID",
               "passwordHashing": "SSHA", "pageSize": 100,
               "objectTypes": {"account": {"namingAttribute": "uid",
                   "objectClasses": ["top", "person", "organizationalPerson", "inetOrgPerson"],
                   "passwordAttribute": "userPassword"}}})
    );
    assert_eq!(translated.ignored, Vec::<String>::new());
    assert!(translated.unreadable.is_empty());
}

#[test]
fn ldap_settings_map_and_groups_get_their_member_attribute() {
    let icf = object(json!({
        "name": "directory",
        "connectorRef": {"connectorName": "org.identityconnectors.ldap.LdapConnector"},
        "configurationProperties": {"host": "dir.example", "ssl": true, "principal": "cn=idm",
            "credentials": {"$crypto": {"type": "x-simple-encryption", "value": {"data": "…"}}},
            "baseContexts": ["ou=people,dc=x", "ou=groups,dc=x"], "uidAttribute": "nsUniqueId",
            "accountUserNameAttributes": ["cn"], "groupMemberAttribute": "member",
            "groupObjectClasses": ["top", "groupOfNames"], "passwordHashAlgorithm": null,
            "accountSearchFilter": "(employeeType=staff)", "usePagedResultControl": false,
            "blockSize": 250, "useBlocks": true, "synchronizePasswords": false},
        "objectTypes": {
            "account": {"nativeType": "__ACCOUNT__", "properties": {"dn": {"nativeName": "__NAME__"}}},
            "group": {"nativeType": "__GROUP__", "properties": {"cn": {}, "member": {}}}},
        "poolConfigOption": {"maxObjects": 20, "maxIdle": 10},
        "operationOptions": {"DELETE": {"denied": true}}
    }));
    let translated = run(&icf);
    assert_eq!(translated.name, "directory");
    let body = &translated.body;
    assert_eq!(body["url"], "ldaps://dir.example:636");
    assert_eq!(body["baseDn"], "ou=people,dc=x");
    assert_eq!(body["uidAttribute"], "nsUniqueId");
    assert_eq!(body["passwordHashing"], "cleartext");
    assert_eq!(body["pageSize"], 250);
    assert!(
        body.get("bindPassword").is_none(),
        "a $crypto value is not guessed at"
    );
    assert_eq!(
        translated.unreadable,
        ["configurationProperties.credentials"]
    );
    assert_eq!(
        body["objectTypes"]["account"],
        json!({"namingAttribute": "cn", "objectClasses": ["top", "person", "organizationalPerson", "inetOrgPerson"],
               "passwordAttribute": "userPassword", "searchFilter": "(employeeType=staff)"})
    );
    assert_eq!(
        body["objectTypes"]["group"],
        json!({"namingAttribute": "cn", "objectClasses": ["top", "groupOfNames"],
               "memberAttribute": "member", "placeholderMember": ""})
    );
    let ignored: Vec<&str> = translated
        .ignored
        .iter()
        .map(|i| i.split(' ').next().unwrap())
        .collect();
    assert_eq!(
        ignored,
        [
            "configurationProperties.baseContexts[1..]",
            "configurationProperties.usePagedResultControl",
            "configurationProperties.useBlocks",
            "poolConfigOption.maxObjects",
            "operationOptions.DELETE.denied",
        ]
    );
}

#[test]
fn an_unknown_connector_ref_stops_naming_the_file() {
    let icf = object(json!({
        "connectorRef": {"connectorName": "org.forgerock.openicf.connectors.scriptedsql.ScriptedSQLConnector"},
        "objectTypes": {"account": {}}
    }));
    let err = translate(Path::new("conf/provisioner.openicf-db.json"), "db", &icf)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("conf/provisioner.openicf-db.json")
            && err.contains("connectorRef.connectorName")
            && err.contains("ScriptedSQLConnector"),
        "{err}"
    );
    let no_ref = object(json!({"objectTypes": {"account": {}}}));
    assert!(translate(Path::new("p.json"), "p", &no_ref).is_err());
}

#[test]
fn a_disabled_connector_is_not_loaded_and_missing_settings_are_named() {
    let mut icf = sample("ldap");
    icf.insert("enabled".into(), json!(false));
    assert!(translate(Path::new("p.json"), "p", &icf).unwrap().is_none());
    let mut icf = sample("ldap");
    let props = icf["configurationProperties"].as_object_mut().unwrap();
    props.insert("port".into(), json!(389));
    props.remove("baseContexts");
    let err = translate(Path::new("p.json"), "p", &icf)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("configurationProperties.baseContexts"),
        "{err}"
    );
}

/// The sample LDAP file with what its `&{…}` properties resolve to.
fn ldap_sample() -> Map<String, Value> {
    let mut icf = sample("ldap");
    let props = icf["configurationProperties"].as_object_mut().unwrap();
    props.insert("host".into(), json!("ldap.example"));
    props.insert("port".into(), json!("1389"));
    props.insert("principal".into(), json!("cn=admin,dc=wrensecurity,dc=org"));
    props.insert("credentials".into(), json!("admin"));
    icf
}

/// `icf` translated, read back as a provisioner document, translated again:
/// the same idm document, with nothing idm would ignore.
fn round_trip(icf: &Map<String, Value>) -> Map<String, Value> {
    let first = run(icf);
    let shown = provisioner_of(&first.name, &first.body).unwrap();
    let again = translate(Path::new("api"), &first.name, &shown)
        .unwrap()
        .unwrap();
    assert_eq!(again.body, first.body, "{shown:#?}");
    assert_eq!(again.name, first.name);
    assert_eq!(again.ignored, Vec::<String>::new(), "{shown:#?}");
    shown
}

fn gaps(body: Value) -> Vec<String> {
    let NotExpressible(found) = provisioner_of("x", &object(body)).unwrap_err();
    found
        .iter()
        .map(|g| g.split(' ').next().unwrap().to_string())
        .collect()
}

#[test]
fn the_sample_connectors_read_back_in_wrens_shape() {
    let ldap = round_trip(&ldap_sample());
    assert_eq!(ldap["name"], "ldap");
    assert_eq!(
        ldap["connectorRef"]["connectorName"],
        "org.identityconnectors.ldap.LdapConnector"
    );
    let props = &ldap["configurationProperties"];
    assert_eq!(props["host"], "ldap.example");
    assert_eq!(props["port"], 1389);
    assert_eq!(props["ssl"], false);
    assert_eq!(props["principal"], "cn=admin,dc=wrensecurity,dc=org");
    assert_eq!(props["baseContexts"], json!(["dc=wrensecurity,dc=org"]));
    assert_eq!(props["accountSearchFilter"], Value::Null);
    assert_eq!(props["blockSize"], 100);
    assert_eq!(ldap["objectTypes"]["account"]["nativeType"], "__ACCOUNT__");

    let csv = round_trip(&sample("csv"));
    assert_eq!(
        csv["connectorRef"]["connectorName"],
        "org.forgerock.openicf.csvfile.CSVFileConnector"
    );
    assert_eq!(
        csv["configurationProperties"],
        json!({"csvFile": "&{launcher.project.location}/data/hr.csv", "headerUid": "uid",
               "fieldDelimiter": ",", "quoteCharacter": "\""})
    );
}

#[test]
fn every_setting_idm_acts_on_survives_the_round_trip() {
    round_trip(&object(json!({
        "name": "directory",
        "connectorRef": {"connectorName": "org.identityconnectors.ldap.LdapConnector"},
        "configurationProperties": {"host": "::1", "ssl": true, "principal": "cn=idm",
            "credentials": "pw", "baseContexts": ["ou=people,dc=x"], "uidAttribute": "nsUniqueId",
            "accountUserNameAttributes": ["cn"], "accountObjectClasses": ["top", "person"],
            "passwordAttribute": "unicodePwd", "groupMemberAttribute": "member",
            "groupObjectClasses": ["top", "groupOfNames"], "passwordHashAlgorithm": "NONE",
            "accountSearchFilter": "(employeeType=staff)", "groupSearchFilter": "(cn=g*)",
            "blockSize": 250},
        "objectTypes": {
            "account": {"nativeType": "__ACCOUNT__"},
            "contractor": {"id": "__ACCOUNT__"},
            "group": {"nativeType": "__GROUP__"},
            "device": {"nativeType": "device"}}
    })));
    round_trip(&object(json!({
        "connectorRef": {"connectorName": "org.identityconnectors.ldap.LdapConnector"},
        "configurationProperties": {"host": "dir", "port": 1636, "startTLS": true,
            "baseContexts": "dc=x", "uidAttribute": "dn"},
        "objectTypes": {"group": {"nativeType": "__GROUP__"}}
    })));
    round_trip(&object(json!({
        "connectorRef": {"connectorName": "org.forgerock.openicf.connectors.csvfile.CSVFileConnector"},
        "configurationProperties": {"csvFile": "/data/people.csv", "headerUid": "id",
            "fieldDelimiter": ";", "quoteCharacter": "'"},
        "objectTypes": {"person": {}, "alumnus": {}}
    })));
}

#[test]
fn secrets_are_carried_both_ways_as_they_are() {
    for secret in [
        json!({"$redacted": true}),
        json!({"$env": "BIND_PW", "default": {"$redacted": true}}),
    ] {
        let mut icf = ldap_sample();
        icf["configurationProperties"]["credentials"] = secret.clone();
        let translated = run(&icf);
        assert_eq!(translated.body["bindPassword"], secret);
        let shown = round_trip(&icf);
        assert_eq!(shown["configurationProperties"]["credentials"], secret);
    }
}

#[test]
fn idm_defaults_read_back_as_the_provisioner_settings_meaning_them() {
    let shown = provisioner_of(
        "corp",
        &object(
            json!({"connectorType": "ldap", "url": "ldaps://dir.example",
            "baseDn": "dc=x", "bindDn": "", "tlsVerify": true, "timeoutSeconds": 10,
            "objectTypes": {"people": {"namingAttribute": "uid", "objectClasses": ["inetOrgPerson"],
                "passwordAttribute": "userPassword", "baseDn": "DC=x"}}}),
        ),
    )
    .unwrap();
    let props = &shown["configurationProperties"];
    assert_eq!(props["port"], 636);
    assert_eq!(props["ssl"], true);
    assert_eq!(props["startTLS"], false);
    assert_eq!(props["uidAttribute"], "dn", "idm's default: the DN");
    assert_eq!(props["passwordHashAlgorithm"], "SSHA");
    assert!(props.get("principal").is_none() && props.get("credentials").is_none());
    assert!(props.get("blockSize").is_none());
    let body = run(&shown).body;
    assert_eq!(body["url"], "ldaps://dir.example:636");
    assert_eq!(body["uidAttribute"], "dn");
    assert_eq!(
        body["objectTypes"]["people"]["objectClasses"],
        json!(["inetOrgPerson"])
    );
}

#[test]
fn what_the_provisioner_shape_cannot_hold_is_named_not_dropped() {
    // The e2e suite's corp connector: an account type with no password attribute.
    assert_eq!(
        gaps(
            json!({"connectorType": "ldap", "url": "ldap://127.0.0.1:9", "baseDn": "dc=corp",
            "bindPassword": "pw", "objectTypes": {"account": {"namingAttribute": "uid",
            "objectClasses": ["top", "inetOrgPerson"]}}})
        ),
        ["objectTypes.account"]
    );
    assert_eq!(
        gaps(
            json!({"connectorType": "ldap", "url": {"$env": "LDAP_URL"}, "baseDn": "dc=x",
            "tlsVerify": false, "tlsCaFile": "ca.pem", "timeoutSeconds": 5, "comment": "c",
            "objectTypes": {
                "a": {"namingAttribute": "uid", "objectClasses": ["person"], "passwordAttribute": "userPassword"},
                "b": {"namingAttribute": "cn", "objectClasses": ["person"], "passwordAttribute": "userPassword"},
                "c": {"namingAttribute": "cn", "objectClasses": ["top", "groupOfNames"],
                      "memberAttribute": "member", "baseDn": "ou=groups,dc=x"},
                "d": {"namingAttribute": "cn", "objectClasses": ["top", "device"], "searchFilter": "(cn=*)"}}})
        ),
        [
            "comment",
            "url",
            "tlsVerify",
            "tlsCaFile",
            "timeoutSeconds",
            "objectTypes.b",
            "objectTypes.c.baseDn",
            "objectTypes.c.placeholderMember",
            "objectTypes.d",
        ]
    );
    assert_eq!(
        gaps(
            json!({"connectorType": "csv", "file": "a.csv", "objectTypes": {
            "a": {"escape": "\\", "properties": ["uid"]},
            "b": {"file": "b.csv"}}})
        ),
        [
            "objectTypes.a.properties",
            "objectTypes.a.escape",
            "objectTypes.b"
        ]
    );
    assert_eq!(gaps(json!({"connectorType": "scim"})), ["connectorType"]);
}

#[test]
fn ldap_urls_read_as_host_port_and_ssl() {
    use super::ldap::address_of;
    assert_eq!(address_of("ldap://h"), Some(("h".into(), 389, false)));
    assert_eq!(address_of("LDAPS://h/"), Some(("h".into(), 636, true)));
    assert_eq!(
        address_of("ldap://[::1]:1389"),
        Some(("::1".into(), 1389, false))
    );
    for bad in [
        "http://h",
        "ldap://",
        "ldap://h:0",
        "ldap://h:x",
        "ldap://h/dc=x",
        "ldap://u@h",
        "ldap://[::1",
        "ldap://::1",
    ] {
        assert_eq!(address_of(bad), None, "{bad}");
    }
}
