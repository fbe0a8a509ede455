//! Found by fuzzing (filter): a number literal with more digits than an f64
//! holds was read with serde_json's fast float parsing, which may be off by
//! one unit in the last place, and printed shortest-round-trip: the text
//! idm-gateway sends to idmd then parsed to a different number than the
//! client's. serde_json's `float_roundtrip` reads floats correctly rounded.

#![allow(clippy::unwrap_used)]

use idm_proto::filter::parse;

#[test]
fn a_long_number_literal_shows_as_text_that_parses_back_to_it() {
    for text in [
        "sn eq 4444444444444444444444444444444444",
        "n gt 0.30000000000000004441",
        "n lt 1.7976931348623157e308",
        "n eq 123456789012345678901234567890.123456789",
    ] {
        let filter = parse(text).unwrap();
        let shown = filter.to_string();
        assert_eq!(parse(&shown).unwrap(), filter, "{text} shows as {shown}");
    }
}
