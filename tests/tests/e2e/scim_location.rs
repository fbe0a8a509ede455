//! Where idm-gateway says resources live: `--public-url`, else its listen
//! address; never what a request's `Host` (or `X-Forwarded-*`) header claims.

use idm_tests::scim::Gateway;
use serde_json::json;

use crate::scim::{USER, setup};

const FORGED: &[(&str, &str)] = &[
    ("host", "evil.example"),
    ("x-forwarded-proto", "gopher"),
    ("x-forwarded-host", "evil.example"),
];

#[tokio::test]
async fn a_forged_host_header_is_not_reflected_into_locations() {
    let (_idmd, gateway) = setup().await;
    let created = gateway
        .send(
            "POST",
            "/Users",
            Some(&json!({"schemas": [USER], "userName": "mallory"})),
            FORGED,
        )
        .await
        .expect(201);
    let location = created.header("location").unwrap().to_string();
    let id = created.body["id"].as_str().unwrap();
    assert_eq!(location, format!("{}/Users/{id}", gateway.base));
    assert_eq!(created.body["meta"]["location"], location.as_str());

    let read = gateway
        .send("GET", &format!("/Users/{id}"), None, FORGED)
        .await
        .expect(200);
    assert_eq!(read.body["meta"]["location"], location.as_str());
    let discovery = gateway
        .send_as(None, "GET", "/ResourceTypes/User", None, FORGED)
        .await
        .expect(200);
    assert!(!discovery.body.to_string().contains("evil.example"));
    assert!(!discovery.body.to_string().contains("gopher"));
}

#[tokio::test]
async fn public_url_names_locations_whatever_the_host_header() {
    let (idmd, _) = setup().await;
    let gateway =
        Gateway::start_with(&idmd, &["--public-url", "https://idm.example.org/scim/v2/"]).await;
    let created = gateway
        .send(
            "POST",
            "/Users",
            Some(&json!({"schemas": [USER], "userName": "alice"})),
            FORGED,
        )
        .await
        .expect(201);
    let id = created.body["id"].as_str().unwrap();
    assert_eq!(
        created.header("location"),
        Some(format!("https://idm.example.org/scim/v2/Users/{id}").as_str())
    );
    assert_eq!(
        created.body["meta"]["location"],
        format!("https://idm.example.org/scim/v2/Users/{id}")
    );
}
