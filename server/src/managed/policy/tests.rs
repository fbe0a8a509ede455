//! Each policy id: what it refuses, what it lets through, and Wren's shape.

#![allow(clippy::unwrap_used, clippy::panic)]

use serde_json::{Map, Value, json};

use super::{Failures, Policy};

fn policy(id: &str, params: Value) -> Policy {
    Policy::from_decl(id, &params).unwrap()
}

fn object(value: Value) -> Map<String, Value> {
    value.as_object().cloned().unwrap()
}

/// The requirement `policy` reports for `value`, or `None`.
fn verdict(policy: &Policy, value: Option<Value>) -> Option<Value> {
    policy.evaluate(&Map::new(), value.as_ref(), false)
}

fn refuses(policy: &Policy, value: Value) -> Value {
    verdict(policy, Some(value.clone()))
        .unwrap_or_else(|| panic!("{} let {value} through", policy.id))
}

fn accepts(policy: &Policy, value: Value) {
    assert_eq!(
        verdict(policy, Some(value.clone())),
        None,
        "{} refused {value}",
        policy.id
    );
}

#[test]
fn required_and_not_empty() {
    let required = policy("required", json!(null));
    assert_eq!(
        verdict(&required, None),
        Some(json!({"policyRequirement": "REQUIRED"}))
    );
    refuses(&required, json!(null));
    accepts(&required, json!(""));
    let not_empty = policy("not-empty", json!(null));
    assert_eq!(verdict(&not_empty, None), None, "only if present");
    assert_eq!(
        refuses(&not_empty, json!("")),
        json!({"policyRequirement": "REQUIRED"})
    );
    refuses(&not_empty, json!([]));
    accepts(&not_empty, json!("x"));
    accepts(&not_empty, json!(["x"]));
}

#[test]
fn regexp_matches_and_valid_type() {
    let regexp = policy("regexpMatches", json!({"regexp": "^[a-z]+$", "flags": "i"}));
    accepts(&regexp, json!("Snow"));
    assert_eq!(
        refuses(&regexp, json!("snow 1")),
        json!({"policyRequirement": "MATCH_REGEXP", "regexp": "^[a-z]+$", "flags": "i",
               "params": {"regexp": "^[a-z]+$", "flags": "i"}})
    );
    assert_eq!(
        verdict(&regexp, None),
        None,
        "absent and not required passes"
    );
    let phone = Policy::pattern(r"^\+?([0-9\- \(\)])*$").unwrap();
    refuses(&phone, json!("12ab"));
    accepts(&phone, json!(12345));
    assert!(Policy::from_decl("regexpMatches", &json!({"regexp": "(a"})).is_err());
    assert!(Policy::from_decl("regexpMatches", &json!({"regexp": "a", "flags": "x"})).is_err());

    let types = Policy::valid_type(&["string".into(), "null".into()]);
    accepts(&types, json!("x"));
    accepts(&types, json!(null));
    assert_eq!(
        refuses(&types, json!(3)),
        json!({"policyRequirement": "VALID_TYPE",
               "params": {"invalidType": "number", "validTypes": ["string", "null"]}})
    );
    let integer = Policy::valid_type(&["integer".into()]);
    accepts(&integer, json!(3));
    refuses(&integer, json!(3.5));
    refuses(&Policy::valid_type(&["array".into()]), json!({}));
}

#[test]
fn formats() {
    let date = policy("valid-date", json!(null));
    accepts(&date, json!("2024-02-29"));
    accepts(&date, json!("2024-02-29T10:00:00Z"));
    assert_eq!(
        refuses(&date, json!("2023-02-29")),
        json!({"policyRequirement": "VALID_DATE"})
    );
    refuses(&date, json!("yesterday"));
    let email = policy("valid-email-address-format", json!(null));
    accepts(&email, json!("jon.snow@example.com"));
    assert_eq!(
        refuses(&email, json!("jon.snow")),
        json!({"policyRequirement": "VALID_EMAIL_ADDRESS_FORMAT"})
    );
    let name = policy("valid-name-format", json!(null));
    accepts(&name, json!("Zoë O'Brien-Łukasz"));
    assert_eq!(
        refuses(&name, json!("Jon\u{1F600}")),
        json!({"policyRequirement": "VALID_NAME_FORMAT"})
    );
    let phone = policy("valid-phone-format", json!(null));
    accepts(&phone, json!("+1 (555) 010-9999"));
    assert_eq!(
        refuses(&phone, json!("call me")),
        json!({"policyRequirement": "VALID_PHONE_FORMAT"})
    );
    assert_eq!(verdict(&phone, None), None);
    accepts(&phone, json!(""));
}

#[test]
fn password_rules() {
    let caps = policy("at-least-X-capitals", json!({"numCaps": 2}));
    accepts(&caps, json!("AbC"));
    assert_eq!(
        refuses(&caps, json!("Abc")),
        json!({"policyRequirement": "AT_LEAST_X_CAPITAL_LETTERS", "params": {"numCaps": 2}})
    );
    let numbers = policy("at-least-X-numbers", json!({"numNums": 1}));
    accepts(&numbers, json!("a1"));
    assert_eq!(
        refuses(&numbers, json!("ab")),
        json!({"policyRequirement": "AT_LEAST_X_NUMBERS", "params": {"numNums": 1}})
    );
    let length = policy("minimum-length", json!({"minLength": 8}));
    accepts(&length, json!("12345678"));
    assert_eq!(
        refuses(&length, json!("1234567")),
        json!({"policyRequirement": "MIN_LENGTH", "params": {"minLength": 8}})
    );
    accepts(&length, json!("😀😀😀😀"));
    assert!(Policy::from_decl("minimum-length", &json!({})).is_err());
}

#[test]
fn cannot_contain() {
    let others = policy(
        "cannot-contain-others",
        json!({"disallowedFields": ["userName", "sn"]}),
    );
    let user = object(json!({"userName": "jsnow", "sn": ""}));
    assert_eq!(
        others.evaluate(&user, Some(&json!("xjsnow1X")), false),
        Some(
            json!({"policyRequirement": "CANNOT_CONTAIN_OTHERS", "params": {"disallowedFields": "userName"}})
        )
    );
    assert_eq!(
        others.evaluate(&user, Some(&json!("Secret12")), false),
        None
    );
    let legacy = policy(
        "cannot-contain-others",
        json!({"disallowedFields": "userName,sn"}),
    );
    assert!(
        legacy
            .evaluate(&user, Some(&json!("jsnow")), false)
            .is_some()
    );

    let characters = policy(
        "cannot-contain-characters",
        json!({"forbiddenChars": ["/", "*"]}),
    );
    accepts(&characters, json!("a-b"));
    assert_eq!(
        refuses(&characters, json!("a/b")),
        json!({"policyRequirement": "CANNOT_CONTAIN_CHARACTERS", "params": {"forbiddenChars": "/, *"}})
    );
    let duplicates = policy("cannot-contain-duplicates", json!(null));
    accepts(&duplicates, json!(["a", "b"]));
    assert_eq!(
        refuses(&duplicates, json!(["a", "b", "a"])),
        json!({"policyRequirement": "CANNOT_CONTAIN_DUPLICATES", "params": {"duplicateValue": "a"}})
    );
}

#[test]
fn store_backed_policies_pass_locally_and_say_what_they_ask() {
    for (id, requirement) in [
        ("unique", "UNIQUE"),
        ("no-internal-user-conflict", "UNIQUE"),
        ("mapping-exists", "MAPPING_EXISTS"),
    ] {
        let policy = policy(id, json!(null));
        accepts(&policy, json!("x"));
        assert!(policy.lookup().is_some());
        assert_eq!(
            policy.lookup_failure(),
            json!({"policyRequirement": requirement})
        );
    }
}

#[test]
fn unknown_ids_are_refused() {
    let err = Policy::from_decl("max-attempts-triggers-lock-cooldown", &json!(null)).unwrap_err();
    assert!(err.contains("unknown policyId"), "{err}");
}

#[test]
fn failures_group_by_property_in_wrens_shape() {
    // An empty userName with minLength 1: REQUIRED, then MIN_LENGTH (Wren's isRequired).
    let policies = [
        Policy::not_empty(),
        Policy::minimum_length(1),
        Policy::valid_type(&["string".into()]),
    ];
    let mut failures = Failures::default();
    failures.check_property(&Map::new(), "userName", Some(&json!("")), &policies);
    assert_eq!(
        failures.to_json(),
        json!([{"property": "userName", "policyRequirements": [
            {"policyRequirement": "REQUIRED"},
            {"policyRequirement": "MIN_LENGTH", "params": {"minLength": 1}}]}])
    );
    assert_eq!(
        failures.0[0].describe(),
        "is required and cannot be empty (not-empty); must be at least 1 characters long (minimum-length)"
    );
    assert!(
        failures
            .to_string()
            .starts_with("policy validation failed: userName: ")
    );
}
