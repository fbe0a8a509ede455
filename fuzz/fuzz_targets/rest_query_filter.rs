//! Wren's `_queryFilter` as idm-gateway's REST API reads it. Invariants: a
//! refusal names a position inside the input; a filter it accepts is sent to
//! idmd as text that parses back to exactly the tree it built (idmd parses
//! it again), within idmd's limits.

#![no_main]

use idm_gateway::rest::query_filter::{Selection, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse(text) {
        Err(e) => assert!(e.position <= text.len(), "{text:?}: {e}"),
        Ok(Selection::Matching(filter)) => {
            let sent = filter.to_string();
            match idm_proto::filter::parse(&sent) {
                Ok(again) => assert_eq!(again, filter, "{text:?} is sent as {sent:?}"),
                Err(e) => panic!("{text:?} is sent as {sent:?}, which idmd refuses: {e}"),
            }
        }
        Ok(Selection::All | Selection::Nothing) => {}
    }
});
