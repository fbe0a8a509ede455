//! The CSV connector's reader on arbitrary files. The first byte picks the
//! format (delimiter, quote, escape), the rest is the file. Invariants: every
//! row carries a line that exists in the file (an error names where to look),
//! lines never go back, an object has a trimmed non-empty uid that no earlier
//! object had, and a duplicate names the line of the first.

#![no_main]

use std::collections::HashMap;

use idm_fuzz::csv_rows::{Format, Row, Rows};
use libfuzzer_sys::fuzz_target;

fn format(byte: u8) -> Format {
    Format {
        delimiter: [b',', b';', b'\t', b'|'][usize::from(byte & 3)],
        quote: if byte & 4 == 0 { b'"' } else { b'\'' },
        escape: (byte & 8 != 0).then_some(b'\\'),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, file)) = data.split_first() else {
        return;
    };
    // Lines as an editor counts them: LF, CRLF and a lone CR each end one.
    let mut lines = 1u64;
    for (i, byte) in file.iter().enumerate() {
        match byte {
            b'\n' => lines += 1,
            b'\r' if file.get(i + 1) != Some(&b'\n') => lines += 1,
            _ => {}
        }
    }
    let Ok(mut rows) = Rows::open(file, format(first), "uid") else {
        return;
    };
    let header_len = rows.header().len();
    let mut last = 1u64;
    let mut uids: HashMap<String, u64> = HashMap::new();
    loop {
        let row = match rows.next_row() {
            Ok(Some(row)) => row,
            Ok(None) => break,
            Err(e) => panic!("reading a byte slice cannot fail: {e}"),
        };
        let line = match &row {
            Row::Object { line, .. } | Row::Bad { line, .. } => *line,
        };
        assert!(
            (2..=lines).contains(&line),
            "row on line {line}, the header is line 1 and the file has {lines} lines: {row:?}"
        );
        assert!(line >= last, "line {line} after line {last}: {row:?}");
        last = line;
        match row {
            Row::Object {
                uid, attributes, ..
            } => {
                assert!(!uid.is_empty() && uid.trim() == uid, "uid {uid:?}");
                assert!(attributes.len() <= header_len);
                assert!(
                    attributes.values().all(serde_json::Value::is_string),
                    "{attributes:?}"
                );
                if let Some(first) = uids.insert(uid.clone(), line) {
                    panic!("uid {uid:?} on line {line} was already an object on line {first}");
                }
            }
            Row::Bad { reason, uid, line } => {
                assert!(!reason.is_empty());
                if let Some(uid) = &uid {
                    assert!(!uid.is_empty() && uid.trim() == uid, "uid {uid:?}");
                }
                if let Some(first) = reason
                    .strip_prefix("duplicate uid ")
                    .and_then(|r| r.rsplit_once("(first on line "))
                    .map(|(_, n)| n.trim_end_matches(')'))
                {
                    let uid = uid.unwrap_or_default();
                    assert_eq!(
                        uids.get(&uid).map(u64::to_string).as_deref(),
                        Some(first),
                        "duplicate on line {line}: {reason}"
                    );
                }
            }
        }
    }
});
