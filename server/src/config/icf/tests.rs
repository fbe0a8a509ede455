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
