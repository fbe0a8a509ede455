//! SCIM PATCH and the loose-input normalizer. Input: a resource body, a NUL
//! byte, a PatchOp request body (both JSON, as clients send them); each runs
//! against the User and the Group resource types. Invariants: the canonical
//! form is a fixed point (normalizing it again, for a write or a read, gives
//! it back); a PATCH that succeeds leaves a canonical resource with its
//! required attributes; a PATCH that fails is the client's 400, never a 500,
//! and names the operation at fault.

#![no_main]

use std::sync::OnceLock;

use idm_gateway::scim::messages::PatchRequest;
use idm_gateway::scim::normalize::{self, Mode};
use idm_gateway::scim::patch;
use idm_gateway::scim::schema::{Registry, ResourceType};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<std::sync::Arc<Registry>> = OnceLock::new();
    REGISTRY.get_or_init(|| Registry::builtin().unwrap_or_else(|e| panic!("schemas: {e}")))
}

fn canonical(resource_type: &ResourceType, resource: &Map<String, Value>, what: &str) {
    let value = Value::Object(resource.clone());
    for mode in [Mode::Write, Mode::Read] {
        match normalize::resource(resource_type, &value, mode) {
            Ok(again) => assert_eq!(
                &again, resource,
                "{what} is not canonical ({mode:?}): {value}"
            ),
            Err(e) => panic!("{what} does not normalize again ({mode:?}): {e}: {value}"),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some(split) = data.iter().position(|b| *b == 0) else {
        return;
    };
    let Ok(body) = serde_json::from_slice::<Value>(&data[..split]) else {
        return;
    };
    let request = serde_json::from_slice::<PatchRequest>(&data[split + 1..]).ok();
    let registry = registry();
    for resource_type in [&registry.user, &registry.group] {
        let Ok(current) = normalize::resource(resource_type, &body, Mode::Write) else {
            continue;
        };
        canonical(resource_type, &current, "a normalized body");
        let Some(request) = &request else {
            continue;
        };
        if normalize::required_present(resource_type, &current).is_err() {
            continue;
        }
        let mut patched = current.clone();
        match patch::apply(resource_type, &mut patched, &request.operations) {
            Ok(()) => {
                canonical(resource_type, &patched, "a patched resource");
                assert!(normalize::required_present(resource_type, &patched).is_ok());
            }
            Err(e) => {
                assert_eq!(e.status, 400, "{e}");
                assert!(
                    e.detail.starts_with("Operations[") || e.detail.ends_with(" is required"),
                    "{e}"
                );
            }
        }
    }
});
