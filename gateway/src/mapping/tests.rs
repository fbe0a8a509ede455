use serde_json::json;

use super::*;
use crate::scim::schema::Registry;
use crate::scim::urn;

fn maps() -> (std::sync::Arc<Registry>, AttributeMap) {
    let registry = Registry::builtin().unwrap();
    let maps = AttributeMap::builtin(&registry).unwrap();
    (registry, maps)
}

fn object(value: Value) -> Map<String, Value> {
    value.as_object().unwrap().clone()
}

#[test]
fn a_scim_user_becomes_managed_properties_and_comes_back() {
    let (registry, maps) = maps();
    let scim = object(json!({
        "userName": "bjensen",
        "name": {"givenName": "Barbara", "familyName": "Jensen", "formatted": "Ms. Barbara J Jensen"},
        "displayName": "Babs",
        "active": true,
        "password": "t1meMa$heen",
        "emails": [{"value": "bj@example.com", "type": "work", "primary": true},
                   {"value": "babs@example.org", "type": "home"}],
        "phoneNumbers": [{"value": "555-0100", "type": "work"}],
        urn::ENTERPRISE_USER: {"department": "Tour Operations", "manager": {"value": "m1"}}
    }));
    let managed = maps.user.to_managed(&maps, &scim).unwrap();
    assert_eq!(
        Value::Object(managed.clone()),
        json!({
            "userName": "bjensen",
            "givenName": "Barbara",
            "sn": "Jensen",
            "mail": "bj@example.com",
            "telephoneNumber": "555-0100",
            "accountStatus": "active",
            "password": "t1meMa$heen",
            "department": "Tour Operations",
            "manager": "m1",
            "name": {"formatted": "Ms. Barbara J Jensen"},
            "displayName": "Babs",
            "emails": [{"type": "work", "primary": true}, {"value": "babs@example.org", "type": "home"}]
        })
    );
    let back = maps
        .user
        .to_scim(&maps, &registry.user, &managed, "https://idm/scim/v2");
    let mut expected = scim.clone();
    expected.remove("password");
    assert_eq!(Value::Object(back), Value::Object(expected));
}

#[test]
fn managed_properties_win_over_the_stored_scim_rest() {
    let (registry, maps) = maps();
    let managed = object(json!({
        "userName": "bjensen",
        "mail": "new@example.com",
        "accountStatus": "inactive",
        "emails": [{"type": "work", "primary": true}, {"value": "h@example.org", "type": "home"}],
        "groups": [{"_ref": "managed/group/g1"}],
        "hrOnly": "kept out of SCIM"
    }));
    let scim = maps
        .user
        .to_scim(&maps, &registry.user, &managed, "http://x/scim/v2");
    assert_eq!(
        scim["emails"][0],
        json!({"type": "work", "primary": true, "value": "new@example.com"})
    );
    assert_eq!(scim["active"], false);
    assert_eq!(
        scim["groups"],
        json!([{"value": "g1", "$ref": "http://x/scim/v2/Groups/g1", "type": "Group"}])
    );
    assert!(scim.get("hrOnly").is_none());

    // A PUT replaces what SCIM owns and keeps the rest.
    let replaced = maps
        .user
        .merge(&managed, object(json!({"userName": "bjensen"})));
    assert_eq!(
        Value::Object(replaced),
        json!({"hrOnly": "kept out of SCIM", "userName": "bjensen"})
    );
}

#[test]
fn group_members_are_references() {
    let (registry, maps) = maps();
    let scim = object(
        json!({"displayName": "Admins", "members": [{"value": "u1"}, {"value": "g2", "type": "Group"}]}),
    );
    let managed = maps.group.to_managed(&maps, &scim).unwrap();
    assert_eq!(
        Value::Object(managed.clone()),
        json!({"name": "Admins", "members": [{"_ref": "managed/user/u1"}, {"_ref": "managed/group/g2"}]})
    );
    let back = maps.group.to_scim(&maps, &registry.group, &managed, "");
    assert_eq!(
        back["members"][0],
        json!({"value": "u1", "$ref": "/Users/u1", "type": "User"})
    );
}

fn rewritten(filter: &str) -> Result<String, ScimError> {
    let (registry, maps) = maps();
    let parsed = idm_proto::filter::parse(filter).unwrap();
    let rewritten =
        maps.user
            .rewrite_filter(&maps, &registry.user, &parsed, filter::Unknown::Reject)?;
    Ok(match rewritten {
        Rewritten::Filter(f) => f.to_string(),
        Rewritten::Always(b) => format!("always {b}"),
    })
}

#[test]
fn filters_are_rewritten_through_the_map() {
    let cases = [
        ("userName eq \"bjensen\"", "userName eq \"bjensen\""),
        ("name.familyName sw \"J\"", "sn sw \"J\""),
        (
            "emails.value co \"@example\"",
            "mail co \"@example\" or emails.value co \"@example\"",
        ),
        (
            "emails[type eq \"work\" and value co \"@ex\"]",
            "emails[type eq \"work\" and value co \"@ex\"] or (mail pr and mail co \"@ex\")",
        ),
        ("emails[type eq \"home\"]", "emails[type eq \"home\"]"),
        ("active eq true", "accountStatus eq \"active\""),
        (
            "not (active eq false)",
            "not (accountStatus eq \"inactive\")",
        ),
        (
            "meta.lastModified gt \"2026-01-01T00:00:00Z\"",
            "_lastModified gt \"2026-01-01T00:00:00Z\"",
        ),
        ("meta.version eq \"W/\\\"3\\\"\"", "_rev eq 3"),
        (
            "id eq \"42\" and meta.resourceType eq \"User\"",
            "_id eq \"42\"",
        ),
        ("meta.resourceType eq \"Group\"", "always false"),
        (
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department eq \"Sales\"",
            "department eq \"Sales\"",
        ),
        (
            "urn:ietf:params:scim:schemas:core:2.0:User:userName eq \"x\"",
            "userName eq \"x\"",
        ),
        ("title pr", "title pr"),
        ("USERNAME Eq \"x\"", "userName eq \"x\""),
    ];
    for (scim, core) in cases {
        assert_eq!(rewritten(scim).unwrap(), core, "{scim}");
    }
    for bad in [
        "nosuch eq 1",
        "password eq \"x\"",
        "active gt true",
        "groups.value eq \"g\"",
        "meta.location pr",
    ] {
        let error = rewritten(bad).unwrap_err();
        assert_eq!(
            error.scim_type,
            Some(crate::scim::error::ScimType::InvalidFilter),
            "{bad}"
        );
    }
}

#[test]
fn group_member_filters_test_the_stored_references() {
    let (registry, maps) = maps();
    let parsed =
        idm_proto::filter::parse("members[value eq \"u1\"] or members.value eq \"u2\"").unwrap();
    let rewritten = maps
        .group
        .rewrite_filter(&maps, &registry.group, &parsed, filter::Unknown::Reject)
        .unwrap();
    assert_eq!(
        rewritten,
        Rewritten::Filter(
            idm_proto::filter::parse(
                "members[_ref eq \"managed/user/u1\"] or members[_ref eq \"managed/user/u2\"]"
            )
            .unwrap()
        )
    );
    let parsed =
        idm_proto::filter::parse("userName eq \"x\" or displayName eq \"Admins\"").unwrap();
    let lenient = maps
        .group
        .rewrite_filter(&maps, &registry.group, &parsed, filter::Unknown::NoMatch)
        .unwrap();
    assert_eq!(lenient.into_core_filter().unwrap(), "name eq \"Admins\"");
}

#[test]
fn sort_keys_go_through_the_map() {
    let (registry, maps) = maps();
    let key = |s: &str| maps.user.sort_key(&registry.user, s);
    assert_eq!(key("name.familyName").unwrap(), "sn");
    assert_eq!(key("emails").unwrap(), "mail");
    assert_eq!(key("meta.created").unwrap(), "_created");
    assert_eq!(key("title").unwrap(), "title");
    assert!(key("password").is_err());
    assert!(key("nosuch").is_err());
}

#[test]
fn a_bad_map_names_the_rule() {
    let (registry, _) = maps();
    let text = DEFAULT_MAP_JSON.replace("name.givenName", "name.nickname");
    let error = AttributeMap::from_json(&registry, &text, "map.json").unwrap_err();
    assert_eq!(error.field, "User.attributes[1]");
    assert!(error.to_string().contains("nickname"), "{error}");
}

/// Rewriting follows the parsed tree, a loop per chain and recursion only
/// per level: the longest and deepest filters the parser accepts, in SCIM
/// terms, rewrite on a small stack, and chains come out flat.
#[test]
fn the_largest_filters_rewrite_flat_on_a_small_stack() {
    use idm_proto::filter::{Filter, MAX_DEPTH, MAX_TERMS, extremes};
    std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(|| {
            let (registry, maps) = maps();
            let rewrite = |text: &str| {
                let parsed = idm_proto::filter::parse(text).unwrap();
                match maps
                    .user
                    .rewrite_filter(&maps, &registry.user, &parsed, filter::Unknown::Reject)
                    .unwrap()
                {
                    Rewritten::Filter(f) => f,
                    Rewritten::Always(b) => panic!("{text}: always {b}"),
                }
            };
            let and_chain = vec![r#"name.familyName eq "x""#; MAX_TERMS].join(" and ");
            match rewrite(&and_chain) {
                Filter::And(operands) => assert_eq!(operands.len(), MAX_TERMS),
                other => panic!("{other}"),
            }
            // Each `emails.value` becomes two tests, spliced into the chain.
            let or_chain = vec![r#"emails.value co "@""#; MAX_TERMS / 2].join(" or ");
            let f = rewrite(&or_chain);
            assert_eq!((f.depth(), f.terms()), (1, MAX_TERMS));

            let terms = [
                r#"userName eq "x""#,
                "name.familyName pr",
                r#"emails.value co "@""#,
                r#"emails[type eq "work" and value co "@"]"#,
                "title pr",
            ];
            let mut deep = String::from(r#"active eq true"#);
            for level in 0..MAX_DEPTH - 1 {
                let op = if level.is_multiple_of(2) { "or" } else { "and" };
                deep = format!("{} {op} ({deep})", terms[level % terms.len()]);
            }
            let f = rewrite(&deep);
            assert!(f.depth() <= MAX_DEPTH + 2, "{f}");
            let printed = f.to_string();
            assert_eq!(idm_proto::filter::parse(&printed).unwrap(), f);
            rewrite(&extremes::nots(MAX_DEPTH - 1, r#"emails[type eq "work"]"#));
        })
        .unwrap()
        .join()
        .unwrap();
}
