//! SCIM filters rewritten onto managed properties through the built-in
//! attribute map, as idm-gateway does for `GET /Users?filter=…` and a search
//! across types. Invariants: the rewrite fails only with a 400; what it sends
//! to idmd is text that parses back to exactly the rewritten filter (idmd
//! parses it again), and a filter the map decides alone is sent as "all" or
//! not at all.

#![no_main]

use std::sync::{Arc, OnceLock};

use idm_gateway::mapping::{AttributeMap, Rewritten, Unknown};
use idm_gateway::scim::schema::{Kind, Registry};
use idm_proto::filter::parse;
use libfuzzer_sys::fuzz_target;

fn setup() -> &'static (Arc<Registry>, AttributeMap) {
    static SETUP: OnceLock<(Arc<Registry>, AttributeMap)> = OnceLock::new();
    SETUP.get_or_init(|| {
        let registry = Registry::builtin().unwrap_or_else(|e| panic!("schemas: {e}"));
        let maps = AttributeMap::builtin(&registry).unwrap_or_else(|e| panic!("map: {e}"));
        (registry, maps)
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(filter) = parse(text) else {
        return;
    };
    let (registry, maps) = setup();
    for kind in [Kind::User, Kind::Group] {
        let map = maps.for_kind(kind);
        let resource_type = registry.resource_type(kind);
        for unknown in [Unknown::Reject, Unknown::NoMatch] {
            let rewritten = match map.rewrite_filter(maps, resource_type, &filter, unknown) {
                Ok(rewritten) => rewritten,
                Err(e) => {
                    assert_eq!(e.status, 400, "{text:?}: {e}");
                    continue;
                }
            };
            let expected = match &rewritten {
                Rewritten::Filter(f) => Some(f.clone()),
                Rewritten::Always(_) => None,
            };
            match (rewritten.into_core_filter(), expected) {
                (Some(core), Some(expected)) => match parse(&core) {
                    Ok(again) => assert_eq!(
                        again, expected,
                        "{text:?} becomes {core:?}, which idmd reads differently"
                    ),
                    Err(e) => panic!("{text:?} becomes {core:?}, which idmd cannot parse: {e}"),
                },
                (Some(core), None) => assert!(core.is_empty(), "{text:?}: {core:?}"),
                (None, _) => {}
            }
        }
    }
});
