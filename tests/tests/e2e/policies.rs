//! Wren's policies in `managed.json`: each policy id refuses from gRPC with the
//! property and the policy named in both details (BadRequest and ErrorInfo);
//! the same cases from REST are Wren's 403 naming them, and from SCIM (those
//! whose property SCIM carries) a 400 naming them; Wren 6's default `managed.json` loads;
//! an unknown policy id stops start-up; ValidateObject answers like Wren.

use idm_proto::v1::{
    CreateObjectRequest, PatchObjectRequest, PatchOperation, ReplaceObjectRequest,
    ValidateObjectRequest,
};
use idm_tests::rest::{Auth, Rest};
use idm_tests::scim::Gateway;
use idm_tests::{Clients, Idmd, IdmdOptions, TempDir, attrs, json_of};
use serde_json::{Value, json};
use tonic::Code;
use tonic_types::StatusExt;

use crate::expect_code;

const MANAGED: &str = r#"{"objects": [{"name": "user", "schema": {
  "required": ["userName"],
  "properties": {
    "_id": {"type": "string", "policies": [
      {"policyId": "cannot-contain-characters", "params": {"forbiddenChars": ["*"]}}]},
    "userName": {"type": "string", "minLength": 3, "policies": [
      {"policyId": "unique"}, {"policyId": "no-internal-user-conflict"}]},
    "code": {"type": "string", "pattern": "^[A-Z]{3}$"},
    "age": {"type": ["integer", "null"]},
    "nick": {"type": "string", "policies": [{"policyId": "not-empty"}]},
    "birthday": {"type": "string", "policies": [{"policyId": "valid-date"}]},
    "mail": {"type": "string", "policies": [{"policyId": "valid-email-address-format"}]},
    "givenName": {"type": "string", "policies": [{"policyId": "valid-name-format"}]},
    "phone": {"type": "string", "policies": [{"policyId": "valid-phone-format"}]},
    "password": {"type": "string", "scope": "private", "encryption": {"key": "openidm-sym-default"},
      "policies": [
        {"policyId": "at-least-X-capitals", "params": {"numCaps": 1}},
        {"policyId": "at-least-X-numbers", "params": {"numNums": 1}},
        {"policyId": "minimum-length", "params": {"minLength": 8}},
        {"policyId": "cannot-contain-others", "params": {"disallowedFields": ["userName"]}}]},
    "tags": {"type": "array", "policies": [{"policyId": "cannot-contain-duplicates"}]},
    "dept": {"type": "string", "policies": [
      {"policyId": "cannot-contain-characters", "params": {"forbiddenChars": ["/"]}}]},
    "feed": {"type": "string", "policies": [{"policyId": "mapping-exists"}]},
    "team": {"type": "string", "policies": [
      {"policyId": "regexpMatches", "params": {"regexp": "^t-", "flags": "i"}}]}
  }}}]}"#;

fn conf_with(managed: &str) -> TempDir {
    let conf = TempDir::new("policies");
    std::fs::write(conf.path().join("managed.json"), managed).unwrap();
    conf
}

async fn idmd_with(managed: &str) -> Idmd {
    Idmd::start_with(IdmdOptions {
        conf: Some(conf_with(managed).path().to_path_buf()),
        env: vec![("IDM_ADMIN_PASSWORD".into(), "Admin-Passw0rd!".into())],
        ..Default::default()
    })
    .await
}

fn valid_user() -> Value {
    json!({"userName": "jsnow", "code": "ABC", "age": 30, "nick": "J", "birthday": "1990-01-31",
           "mail": "jon@example.com", "givenName": "Jon", "phone": "+1 555 0100",
           "password": "Winter1sComing", "tags": ["a", "b"], "dept": "north",
           "team": "T-watch"})
}

/// One broken policy: `property` given the value breaks `policy`, which
/// Wren reports as the requirement.
type PolicyCase = (&'static str, Value, &'static str, &'static str);

/// Each policy id of [`MANAGED`] broken once, for every front end. Case `i`
/// is created as `user<i>` (see [`case_user`]); the `unique` case needs
/// `jsnow` ([`valid_user`]) to exist.
fn policy_cases() -> Vec<PolicyCase> {
    vec![
        ("code", json!("abc"), "regexpMatches", "MATCH_REGEXP"),
        ("age", json!("ten"), "valid-type", "VALID_TYPE"),
        ("nick", json!(""), "not-empty", "REQUIRED"),
        ("birthday", json!("someday"), "valid-date", "VALID_DATE"),
        (
            "mail",
            json!("jon"),
            "valid-email-address-format",
            "VALID_EMAIL_ADDRESS_FORMAT",
        ),
        (
            "givenName",
            json!("Jon!"),
            "valid-name-format",
            "VALID_NAME_FORMAT",
        ),
        (
            "phone",
            json!("call me"),
            "valid-phone-format",
            "VALID_PHONE_FORMAT",
        ),
        (
            "password",
            json!("winter1scoming"),
            "at-least-X-capitals",
            "AT_LEAST_X_CAPITAL_LETTERS",
        ),
        (
            "password",
            json!("WinterIsComing"),
            "at-least-X-numbers",
            "AT_LEAST_X_NUMBERS",
        ),
        ("password", json!("Wint3r"), "minimum-length", "MIN_LENGTH"),
        // The userName each case is given (user<index>) inside the password.
        (
            "password",
            json!("Xuser10-99"),
            "cannot-contain-others",
            "CANNOT_CONTAIN_OTHERS",
        ),
        (
            "tags",
            json!(["a", "a"]),
            "cannot-contain-duplicates",
            "CANNOT_CONTAIN_DUPLICATES",
        ),
        (
            "dept",
            json!("north/south"),
            "cannot-contain-characters",
            "CANNOT_CONTAIN_CHARACTERS",
        ),
        (
            "feed",
            json!("no-such-mapping"),
            "mapping-exists",
            "MAPPING_EXISTS",
        ),
        ("team", json!("x-watch"), "regexpMatches", "MATCH_REGEXP"),
        ("userName", json!("js"), "minimum-length", "MIN_LENGTH"),
        ("userName", json!(""), "not-empty", "REQUIRED"),
        (
            "userName",
            json!("openidm-admin"),
            "no-internal-user-conflict",
            "UNIQUE",
        ),
        ("userName", json!("jsnow"), "unique", "UNIQUE"),
    ]
}

/// [`valid_user`] as case `index`: its own userName, and `property` broken.
fn case_user(index: usize, property: &str, value: &Value) -> Value {
    let mut body = valid_user();
    body["userName"] = json!(format!("user{index}"));
    body[property] = value.clone();
    body
}

async fn create(c: &mut Clients, id: &str, body: Value) -> Result<Value, tonic::Status> {
    c.objects
        .create_object(CreateObjectRequest {
            parent: "managed/user".into(),
            object_id: id.into(),
            attributes: attrs(body),
        })
        .await
        .map(|r| json_of(&r.into_inner()))
}

/// Asserts a policy refusal naming `property` and `policy` in the BadRequest
/// and `requirement` for `property` in the ErrorInfo's Wren array.
#[track_caller]
fn assert_policy(status: &tonic::Status, property: &str, policy: &str, requirement: &str) {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let details = status.get_error_details();
    let violations = details
        .bad_request()
        .expect("a BadRequest")
        .field_violations
        .clone();
    let violation = violations
        .iter()
        .find(|v| v.field == property)
        .unwrap_or_else(|| panic!("no violation for {property}: {violations:?}"));
    assert!(
        violation.description.contains(&format!("({policy})")),
        "{property}: {}",
        violation.description
    );
    let info = details.error_info().expect("an ErrorInfo");
    assert_eq!(info.reason, "POLICY_VALIDATION_FAILED");
    assert_eq!(info.domain, "idm.v1");
    let failed: Value = serde_json::from_str(&info.metadata["failedPolicyRequirements"]).unwrap();
    assert_failed_requirement(&failed, property, requirement);
    assert!(status.message().contains(property) && status.message().contains(policy));
}

/// Asserts that Wren's `failedPolicyRequirements` array lists `requirement`
/// for `property`.
#[track_caller]
fn assert_failed_requirement(failed: &Value, property: &str, requirement: &str) {
    let entry = failed
        .as_array()
        .and_then(|all| all.iter().find(|f| f["property"] == property))
        .unwrap_or_else(|| panic!("{property} not in {failed}"));
    assert!(
        entry["policyRequirements"]
            .as_array()
            .is_some_and(|all| all.iter().any(|r| r["policyRequirement"] == requirement)),
        "{requirement} not in {entry}"
    );
}

#[tokio::test]
async fn each_policy_refuses_a_grpc_create_naming_the_property_and_the_policy() {
    let idmd = idmd_with(MANAGED).await;
    let mut c = idmd.clients().await;
    create(&mut c, "ok", valid_user()).await.unwrap();

    for (index, (property, value, policy, requirement)) in policy_cases().iter().enumerate() {
        let status = create(
            &mut c,
            &format!("u{index}"),
            case_user(index, property, value),
        )
        .await
        .unwrap_err();
        assert_policy(&status, property, policy, requirement);
    }
    let mut missing = valid_user();
    missing.as_object_mut().unwrap().remove("userName");
    let status = create(&mut c, "nameless", missing).await.unwrap_err();
    assert_policy(&status, "userName", "required", "REQUIRED");
    let mut starred = valid_user();
    starred["userName"] = json!("starred");
    let status = create(&mut c, "a*b", starred).await.unwrap_err();
    assert_policy(
        &status,
        "_id",
        "cannot-contain-characters",
        "CANNOT_CONTAIN_CHARACTERS",
    );

    // Several failures: one entry per property, every requirement listed.
    let status = create(
        &mut c,
        "many",
        json!({"userName": "", "mail": "x", "password": "short"}),
    )
    .await
    .unwrap_err();
    let info = status.get_error_details().error_info().unwrap().clone();
    let failed: Value = serde_json::from_str(&info.metadata["failedPolicyRequirements"]).unwrap();
    let user_name = failed
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["property"] == "userName")
        .unwrap();
    assert_eq!(
        user_name["policyRequirements"],
        json!([{"policyRequirement": "REQUIRED"},
               {"policyRequirement": "MIN_LENGTH", "params": {"minLength": 3}}])
    );
    assert_eq!(
        status
            .get_error_details()
            .bad_request()
            .unwrap()
            .field_violations
            .len(),
        3
    );
    assert!(
        !status.message().contains("short"),
        "a password never shows: {}",
        status.message()
    );
}

#[tokio::test]
async fn replace_and_patch_are_checked_too() {
    let idmd = idmd_with(MANAGED).await;
    let mut c = idmd.clients().await;
    create(&mut c, "jsnow", valid_user()).await.unwrap();
    let mut body = valid_user();
    body.as_object_mut().unwrap().remove("password");
    body["mail"] = json!("not-an-address");
    let status = c
        .objects
        .replace_object(ReplaceObjectRequest {
            name: "managed/user/jsnow".into(),
            attributes: attrs(body.clone()),
            expected_revision: None,
        })
        .await
        .unwrap_err();
    assert_policy(
        &status,
        "mail",
        "valid-email-address-format",
        "VALID_EMAIL_ADDRESS_FORMAT",
    );
    body["mail"] = json!("jon@wall.example");
    c.objects
        .replace_object(ReplaceObjectRequest {
            name: "managed/user/jsnow".into(),
            attributes: attrs(body),
            expected_revision: None,
        })
        .await
        .expect("a replace without the private password keeps it and passes");
    let patch = |field: &str, value: Value| PatchObjectRequest {
        name: "managed/user/jsnow".into(),
        operations: vec![PatchOperation {
            operation: "replace".into(),
            field: field.into(),
            value: Some(idm_proto::json::to_proto_value(&value)),
            ..Default::default()
        }],
        expected_revision: None,
    };
    let status = c
        .objects
        .patch_object(patch("/password", json!("nocaps123")))
        .await
        .unwrap_err();
    assert_policy(
        &status,
        "password",
        "at-least-X-capitals",
        "AT_LEAST_X_CAPITAL_LETTERS",
    );
    let status = c
        .objects
        .patch_object(patch("/userName", json!("openidm-admin")))
        .await
        .unwrap_err();
    assert_policy(&status, "userName", "no-internal-user-conflict", "UNIQUE");
    // A copy writes a value the request does not carry, checked all the same.
    c.objects
        .patch_object(patch("/nick", json!("openidm-admin")))
        .await
        .unwrap();
    let status = c
        .objects
        .patch_object(PatchObjectRequest {
            name: "managed/user/jsnow".into(),
            operations: vec![PatchOperation {
                operation: "copy".into(),
                from: "/nick".into(),
                field: "/userName".into(),
                ..Default::default()
            }],
            expected_revision: None,
        })
        .await
        .unwrap_err();
    assert_policy(&status, "userName", "no-internal-user-conflict", "UNIQUE");
    c.objects
        .patch_object(patch("/password", json!("Longclaw123")))
        .await
        .unwrap();
}

/// Case `index` as a SCIM User, if SCIM carries its property
/// (`scim-map-default.json` maps userName, name.givenName, the work email
/// and password of these); `None` for the others.
fn scim_case_user(index: usize, property: &str, value: &Value) -> Option<Value> {
    let mut user = json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": format!("user{index}"), "name": {"givenName": "Jon"},
        "emails": [{"type": "work", "value": "jon@example.com"}], "password": "Winter1sComing"});
    let slot = match property {
        "userName" | "password" => &mut user[property],
        "givenName" => &mut user["name"]["givenName"],
        "mail" => &mut user["emails"][0]["value"],
        _ => return None,
    };
    *slot = value.clone();
    Some(user)
}

#[tokio::test]
async fn each_policy_scim_can_carry_refuses_a_scim_create_naming_the_property_and_the_policy() {
    let idmd = idmd_with(MANAGED).await;
    let mut c = idmd.clients().await;
    create(&mut c, "ok", valid_user()).await.unwrap();
    let gateway = Gateway::start(&idmd).await;
    let mut tried = Vec::new();
    for (index, (property, value, policy, _)) in policy_cases().iter().enumerate() {
        let Some(user) = scim_case_user(index, property, value) else {
            continue;
        };
        let reply = gateway
            .post("/Users", &user)
            .await
            .expect_error(400, Some("invalidValue"));
        let detail = reply.body["detail"].as_str().unwrap_or_default();
        assert!(
            detail.contains(property) && detail.contains(policy),
            "{property} ({policy}): {detail}"
        );
        tried.push(*policy);
    }
    assert_eq!(
        tried.len(),
        10,
        "four userName, four password, one givenName, one mail: {tried:?}"
    );
    // Only the case broke it: the same User with nothing broken is created.
    let fine = scim_case_user(99, "userName", &json!("jstark")).unwrap();
    gateway.post("/Users", &fine).await.expect(201);
}

#[tokio::test]
async fn each_policy_refuses_a_rest_create_in_wrens_shape() {
    let idmd = idmd_with(MANAGED).await;
    let mut c = idmd.clients().await;
    create(&mut c, "ok", valid_user()).await.unwrap();
    let rest = Rest::new(Gateway::start(&idmd).await);
    let admin = Auth::Basic("openidm-admin", "Admin-Passw0rd!");
    for (index, (property, value, _, requirement)) in policy_cases().iter().enumerate() {
        let body = case_user(index, property, value);
        let refused = rest
            .send(
                admin,
                "POST",
                "/managed/user?_action=create",
                Some(&body),
                &[],
            )
            .await
            .expect_wren_error(403);
        assert_eq!(
            (&refused.body["message"], &refused.body["detail"]["result"]),
            (&json!("Policy validation failed"), &json!(false)),
            "{}",
            refused.body
        );
        assert_failed_requirement(
            &refused.body["detail"]["failedPolicyRequirements"],
            property,
            requirement,
        );
        if *property == "password" {
            assert!(!refused.body.to_string().contains(value.as_str().unwrap()));
        }
    }
    let all = rest
        .send(admin, "GET", "/managed/user?_queryFilter=true", None, &[])
        .await
        .expect(200);
    assert_eq!(all.body["resultCount"], 1, "only jsnow: {}", all.body);
}

#[tokio::test]
async fn rest_refuses_in_wrens_shape_and_validates_without_writing() {
    let idmd = idmd_with(MANAGED).await;
    let rest = Rest::new(Gateway::start(&idmd).await);
    let admin = Auth::Basic("openidm-admin", "Admin-Passw0rd!");
    let mut weak = valid_user();
    weak["password"] = json!("short");
    let refused = rest
        .send(
            admin,
            "POST",
            "/managed/user?_action=create",
            Some(&weak),
            &[],
        )
        .await
        .expect_wren_error(403);
    assert_eq!(refused.body["detail"]["result"], false, "{}", refused.body);
    let failed = &refused.body["detail"]["failedPolicyRequirements"];
    let password = failed
        .as_array()
        .and_then(|f| f.iter().find(|p| p["property"] == "password"))
        .unwrap_or_else(|| panic!("{}", refused.body));
    let requirements: Vec<&str> = password["policyRequirements"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["policyRequirement"].as_str())
        .collect();
    assert!(requirements.contains(&"MIN_LENGTH"), "{requirements:?}");
    assert!(
        !refused.body.to_string().contains("short"),
        "{}",
        refused.body
    );

    // The policy service: a verdict, and nothing written.
    let verdict = rest
        .send(
            admin,
            "POST",
            "/policy/managed/user/*?_action=validateObject",
            Some(&weak),
            &[],
        )
        .await
        .expect(200);
    assert_eq!(verdict.body["result"], false, "{}", verdict.body);
    assert_eq!(
        verdict.body["failedPolicyRequirements"][0]["property"],
        "password"
    );
    let fine = rest
        .send(
            admin,
            "POST",
            "/policy/managed/user?_action=validateObject",
            Some(&valid_user()),
            &[],
        )
        .await
        .expect(200);
    assert_eq!(
        fine.body,
        json!({"result": true, "failedPolicyRequirements": []})
    );
    let one = rest
        .send(
            admin,
            "POST",
            "/policy/managed/user/jsnow?_action=validateProperty",
            Some(&json!({"code": "abc"})),
            &[],
        )
        .await
        .expect(200);
    assert_eq!(
        one.body["failedPolicyRequirements"][0]["property"], "code",
        "{}",
        one.body
    );
    rest.send(
        admin,
        "POST",
        "/policy/managed/user?_action=explode",
        Some(&json!({})),
        &[],
    )
    .await
    .expect_wren_error(400);
    let none = rest
        .send(admin, "GET", "/managed/user?_queryFilter=true", None, &[])
        .await;
    assert_eq!(none.body["resultCount"], 0, "{}", none.body);
}

#[tokio::test]
async fn wren6_default_managed_json_loads_and_its_policies_hold() {
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/wren6/managed.json");
    let idmd = idmd_with(&std::fs::read_to_string(fixture).unwrap()).await;
    let log = idmd.log();
    for named in [
        "managed.json",
        "user.actions: not supported",
        "user.onCreate: not run",
        "ui/onCreateUser",
        "role.members: read-only here",
    ] {
        assert!(log.contains(named), "{named} not warned about:\n{log}");
    }
    let mut c = idmd.clients().await;
    let jon = json!({"userName": "jsnow", "givenName": "Jon", "sn": "Snow",
                     "mail": "jon@example.com", "telephoneNumber": "+1 555 0100",
                     "password": "Ghost-Direwolf9", "lastSync": {"effectiveAssignments": []}});
    let created = create(&mut c, "jsnow", jon).await.unwrap();
    assert!(created.get("password").is_none());
    assert!(
        created.get("lastSync").is_none(),
        "scope: private is never shown"
    );
    let hidden = c
        .objects
        .query_objects(idm_proto::v1::QueryObjectsRequest {
            parent: "managed/user".into(),
            filter: "lastSync pr".into(),
            ..Default::default()
        })
        .await;
    expect_code(hidden, Code::InvalidArgument);
    let status = create(
        &mut c,
        "arya",
        json!({"userName": "arya", "givenName": "Arya", "sn": "Stark", "password": "needle"}),
    )
    .await
    .unwrap_err();
    assert_policy(&status, "mail", "required", "REQUIRED");
    assert_policy(&status, "password", "minimum-length", "MIN_LENGTH");
    assert_policy(
        &status,
        "password",
        "at-least-X-capitals",
        "AT_LEAST_X_CAPITAL_LETTERS",
    );
    let status = create(
        &mut c,
        "ned",
        json!({"userName": "ned", "givenName": "Ned", "sn": "Stark", "mail": "ned@example.com",
               "telephoneNumber": "winterfell", "password": "Stark-Ice99"}),
    )
    .await
    .unwrap_err();
    assert_policy(&status, "telephoneNumber", "regexpMatches", "MATCH_REGEXP");
    assert_policy(
        &status,
        "password",
        "cannot-contain-others",
        "CANNOT_CONTAIN_OTHERS",
    );
}

#[tokio::test]
async fn an_unknown_policy_id_stops_start_up_naming_the_file_and_property() {
    let conf = conf_with(
        r#"{"objects": [{"name": "user", "schema": {"properties": {
            "mail": {"type": "string", "policies": [{"policyId": "valid-emial"}]}}}}]}"#,
    );
    let log = Idmd::start_failure(IdmdOptions {
        conf: Some(conf.path().to_path_buf()),
        ..Default::default()
    })
    .await;
    assert!(
        log.contains("managed.json")
            && log.contains("objects[0].schema.properties.mail.policies[0].policyId")
            && log.contains("valid-emial"),
        "{log}"
    );
}

#[tokio::test]
async fn validate_object_answers_like_wren_without_writing() {
    let idmd = idmd_with(MANAGED).await;
    let mut c = idmd.clients().await;
    create(&mut c, "jsnow", valid_user()).await.unwrap();
    let mut validate = async |name: &str, body: Value, properties_only: bool| {
        c.objects
            .validate_object(ValidateObjectRequest {
                name: name.into(),
                attributes: attrs(body),
                properties_only,
            })
            .await
            .map(|r| r.into_inner())
    };
    let answer = validate("managed/user", json!({"userName": "js"}), false)
        .await
        .unwrap();
    assert!(!answer.result);
    assert_eq!(answer.failed_policy_requirements.len(), 1);
    let failure = &answer.failed_policy_requirements[0];
    assert_eq!(failure.property, "userName");
    assert_eq!(
        idm_proto::json::from_proto_struct(&failure.policy_requirements[0]),
        json!({"policyRequirement": "MIN_LENGTH", "params": {"minLength": 3}})
            .as_object()
            .cloned()
            .unwrap()
    );
    let taken = validate("managed/user", json!({"userName": "jsnow"}), false)
        .await
        .unwrap();
    assert_eq!(taken.failed_policy_requirements[0].property, "userName");
    let own = validate("managed/user/jsnow", json!({"userName": "jsnow"}), false)
        .await
        .unwrap();
    assert!(own.result, "its own userName is not a conflict: {own:?}");
    let one = validate("managed/user", json!({"mail": "x"}), true)
        .await
        .unwrap();
    assert_eq!(
        one.failed_policy_requirements.len(),
        1,
        "only the property given"
    );
    assert_eq!(one.failed_policy_requirements[0].property, "mail");
    let status = validate("managed/nothing", json!({}), false)
        .await
        .unwrap_err();
    expect_code::<()>(Err(status), Code::NotFound);
}

#[tokio::test]
async fn hooks_run_when_their_script_is_there_and_wren_built_ins_are_named() {
    let conf = conf_with(
        r#"{"objects": [{"name": "user",
          "onCreate": {"type": "text/javascript",
            "source": "object.displayName = object.givenName + ' ' + object.sn;"},
          "onUpdate": {"type": "text/javascript", "file": "stamp.js"},
          "onDelete": {"type": "text/javascript",
            "source": "if (object.keep) { throw new Error('kept users cannot be deleted'); }"},
          "postCreate": {"type": "text/javascript", "file": "roles/postOperation-roles.js"},
          "schema": {"properties": {
            "userName": {"type": "string"}, "givenName": {"type": "string"},
            "sn": {"type": "string"}, "displayName": {"type": "string", "minLength": 3}}}}]}"#,
    );
    std::fs::create_dir_all(conf.path().join("script")).unwrap();
    std::fs::write(
        conf.path().join("script/stamp.js"),
        "object.previousSn = oldObject.sn;\n",
    )
    .unwrap();
    let idmd = Idmd::start_with(IdmdOptions {
        conf: Some(conf.path().to_path_buf()),
        ..Default::default()
    })
    .await;
    assert!(
        idmd.log()
            .contains("user.postCreate: not run; its file roles/postOperation-roles.js"),
        "{}",
        idmd.log()
    );
    let mut c = idmd.clients().await;
    let jon = create(
        &mut c,
        "jon",
        json!({"userName": "jon", "givenName": "Jon", "sn": "Snow", "keep": true}),
    )
    .await
    .unwrap();
    assert_eq!(
        jon["displayName"], "Jon Snow",
        "onCreate ran before the write"
    );
    // The hook's output passes the policies too.
    let status = create(
        &mut c,
        "x",
        json!({"userName": "x", "givenName": "", "sn": ""}),
    )
    .await
    .unwrap_err();
    assert_policy(&status, "displayName", "minimum-length", "MIN_LENGTH");
    let updated = c
        .objects
        .replace_object(ReplaceObjectRequest {
            name: "managed/user/jon".into(),
            attributes: attrs(
                json!({"userName": "jon", "givenName": "Jon", "sn": "Targaryen",
                                     "displayName": "Aegon", "keep": true}),
            ),
            expected_revision: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        json_of(&updated)["previousSn"],
        "Snow",
        "onUpdate ran from script/stamp.js"
    );
    let refused = c
        .objects
        .delete_object(idm_proto::v1::DeleteObjectRequest {
            name: "managed/user/jon".into(),
            expected_revision: None,
        })
        .await;
    let status = expect_code(refused, Code::FailedPrecondition);
    assert!(
        status.message().contains("kept users cannot be deleted"),
        "{status:?}"
    );
}
