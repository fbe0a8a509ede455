//! A stored record's bytes as JSON, walked straight out of SurrealDB's own
//! encoding (the `revision` crate's walkers, which SurrealDB's planner uses
//! to read fields without decoding a record).
//!
//! Decoding a record into SurrealDB's `Value` and then converting that to
//! JSON built every string, map and array twice; for a no-change
//! reconciliation, which reads every target back, that was a fifth of the
//! work of its batches. The plain kinds idm stores (objects, arrays,
//! strings, integers, floats, booleans, null) are walked here; anything
//! else in a value (a datetime, a record id, a decimal, …), and any
//! encoding this walker does not know, is decoded by SurrealDB and
//! converted as before, so nothing reads differently.

use std::borrow::Cow;

use revision::optimised::{IndexedMapWalker, IndexedSeqWalker};
use revision::{DeserializeRevisioned, SkipRevisioned, WalkRevisioned};
use serde_json::Value as Json;
use surrealdb_catalog::Record;
use surrealdb_catalog::val::{Array, Number, Object, Value};

use super::key_scan::to_json;

/// Deeper than anything idm writes; a walk that reaches it gives up (and
/// SurrealDB's own decoder, which bounds what it stores, decides).
const MAX_DEPTH: usize = 64;

/// The record's `data` as JSON, without the fields `keep` refuses (at the
/// top level only), as `object_to_json` gives it from the decoded record;
/// `None` when the data is not an object.
pub(super) fn record_json(
    bytes: &[u8],
    keep: impl Fn(&str) -> bool,
) -> anyhow::Result<Option<Json>> {
    match walk_record(bytes, &keep) {
        Ok(json) => Ok(json),
        // Whatever this walk does not know, SurrealDB's decoder does.
        Err(_) => {
            let record: Record = revision::from_slice(bytes)?;
            match &record.data {
                Value::Object(fields) => Ok(Some(super::key_scan::object_to_json(fields, keep)?)),
                _ => Ok(None),
            }
        }
    }
}

fn walk_record(bytes: &[u8], keep: &impl Fn(&str) -> bool) -> anyhow::Result<Option<Json>> {
    let data = record_data(bytes)?;
    let mut reader: &[u8] = &data;
    let walker = Value::walk_revisioned(&mut reader)?;
    if !walker.is_object() {
        return Ok(None);
    }
    let object = walker.object_view()?;
    Ok(Some(object_json(object.as_bytes(), 0, keep)?))
}

/// The bytes of a record's `data` field: a revision-2 record is an
/// indexed struct whose last field is `data` (SurrealDB reads it so too);
/// other revisions go through the record's walker.
fn record_data(bytes: &[u8]) -> anyhow::Result<Cow<'_, [u8]>> {
    let rev2 = || -> Option<&[u8]> {
        let payload = rev2_payload(bytes)?;
        let data_at = u32::from_le_bytes(payload.get(4..8)?.try_into().ok()?) as usize;
        payload.get(data_at..)
    };
    if let Some(data) = rev2() {
        return Ok(Cow::Borrowed(data));
    }
    let mut reader = bytes;
    let data = Record::walk_revisioned(&mut reader)?.into_data_bytes()?;
    Ok(Cow::Owned(data.into_owned()))
}

/// One encoded `Value`.
fn value_json(bytes: &[u8], depth: usize) -> anyhow::Result<Json> {
    let mut reader = bytes;
    let walker = Value::walk_revisioned(&mut reader)?;
    Ok(if walker.is_string() {
        Json::String(strand(walker.string_view()?.as_bytes())?.to_owned())
    } else if walker.is_object() {
        object_json(walker.object_view()?.as_bytes(), depth + 1, &|_| true)?
    } else if walker.is_array() {
        array_json(walker.array_view()?.as_bytes(), depth + 1)?
    } else if walker.is_number() {
        match walker.decode_number()? {
            Number::Int(i) => Json::from(i),
            Number::Float(f) => serde_json::Number::from_f64(f).map_or(Json::Null, Json::Number),
            other => to_json(&Value::Number(other))?,
        }
    } else if walker.is_bool() {
        Json::Bool(walker.decode_bool()?)
    } else if walker.is_null() || walker.is_none() {
        Json::Null
    } else {
        let mut reader = bytes;
        to_json(&Value::deserialize_revisioned(&mut reader)?)?
    })
}

/// An encoded `Object`: a revision-2 envelope around an indexed map of
/// strand keys to values (laid out plainly below eight entries).
fn object_json(bytes: &[u8], depth: usize, keep: &impl Fn(&str) -> bool) -> anyhow::Result<Json> {
    anyhow::ensure!(depth < MAX_DEPTH, "nested deeper than {MAX_DEPTH}");
    let Some(payload) = rev2_payload(bytes) else {
        let mut reader = bytes;
        let object = Object::deserialize_revisioned(&mut reader)?;
        return to_json(&Value::Object(object));
    };
    let map = IndexedMapWalker::<(), ()>::from_payload(payload)?;
    let mut out = serde_json::Map::with_capacity(map.len());
    let mut put = |key: &[u8], value: &[u8]| -> anyhow::Result<()> {
        let key = strand(key)?;
        if keep(key) {
            out.insert(key.to_owned(), value_json(value, depth)?);
        }
        Ok(())
    };
    match map.entries() {
        Some(entries) => {
            for (key, value) in entries {
                put(key, value)?;
            }
        }
        None => {
            let mut body = map.legacy_body().unwrap_or_default();
            for _ in 0..map.len() {
                let key = take(&mut body, <String as SkipRevisioned>::skip_revisioned)?;
                let value = take(&mut body, Value::skip_revisioned)?;
                put(key, value)?;
            }
        }
    }
    Ok(Json::Object(out))
}

/// An encoded `Array`: a revision-2 envelope around an indexed sequence.
fn array_json(bytes: &[u8], depth: usize) -> anyhow::Result<Json> {
    anyhow::ensure!(depth < MAX_DEPTH, "nested deeper than {MAX_DEPTH}");
    let Some(payload) = rev2_payload(bytes) else {
        let mut reader = bytes;
        let array = Array::deserialize_revisioned(&mut reader)?;
        return to_json(&Value::Array(array));
    };
    let seq = IndexedSeqWalker::<()>::from_payload(payload)?;
    let mut out = Vec::with_capacity(seq.len());
    if seq.is_indexed() {
        for i in 0..seq.len() {
            out.push(value_json(seq.element_bytes(i)?, depth)?);
        }
    } else {
        let mut body = seq.body();
        for _ in 0..seq.len() {
            out.push(value_json(take(&mut body, Value::skip_revisioned)?, depth)?);
        }
    }
    Ok(Json::Array(out))
}

/// The payload of an optimised revision-2 envelope: a one-byte revision,
/// the payload's length (`u32`, little-endian), the payload.
fn rev2_payload(bytes: &[u8]) -> Option<&[u8]> {
    let (&rev, rest) = bytes.split_first()?;
    if rev != 2 {
        return None;
    }
    let length = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    rest.get(4..4usize.checked_add(length)?)
}

/// A strand's wire form (a varint length, then UTF-8) as text.
fn strand(wire: &[u8]) -> anyhow::Result<&str> {
    let mut reader = wire;
    let length = usize::deserialize_revisioned(&mut reader)?;
    let text = reader
        .get(..length)
        .ok_or_else(|| anyhow::anyhow!("a key runs past its entry"))?;
    Ok(std::str::from_utf8(text)?)
}

/// The bytes of the next encoded item of `body` (which `skip` steps over),
/// leaving `body` after it.
fn take<'b>(
    body: &mut &'b [u8],
    skip: impl FnOnce(&mut &'b [u8]) -> Result<(), revision::Error>,
) -> anyhow::Result<&'b [u8]> {
    let start = *body;
    skip(body)?;
    Ok(&start[..start.len() - body.len()])
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use surrealdb_catalog::val::{RecordId, RecordIdKey, TableName};

    use super::*;
    use crate::store::key_scan::object_to_json;

    /// A small deterministic generator (no need for a crate).
    struct Dice(u64);

    impl Dice {
        fn roll(&mut self, sides: u64) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (self.0 >> 33) % sides
        }
    }

    const TEXTS: [&str; 8] = [
        "",
        "a",
        "Jon",
        "ü Ŝtark ☃",
        "it's \"quoted\"",
        "x\u{0}y",
        "id",
        "a much longer piece of text, to cross a varint's one byte: ................................................................................................",
    ];

    fn value(dice: &mut Dice, depth: u32) -> Value {
        let kinds = if depth >= 4 { 9 } else { 11 };
        match dice.roll(kinds) {
            0 => Value::None,
            1 => Value::Null,
            2 => Value::Bool(dice.roll(2) == 0),
            3 => Value::Number(Number::Int(
                [0, 1, -1, 127, 128, 300, i64::MIN, i64::MAX][dice.roll(8) as usize],
            )),
            4 => Value::Number(Number::Float(
                [0.5, -1e300, 2.0, 0.0][dice.roll(4) as usize],
            )),
            5 | 6 => Value::String(TEXTS[dice.roll(8) as usize].into()),
            7 => Value::Uuid(uuid::Uuid::from_u128(u128::from(dice.roll(1 << 20))).into()),
            8 => Value::RecordId(RecordId {
                table: TableName::from("object"),
                key: RecordIdKey::Array(Array(vec![Value::String("user".into())])),
            }),
            9 => Value::Array(Array(
                (0..dice.roll(12)).map(|_| value(dice, depth + 1)).collect(),
            )),
            _ => Value::Object(object(dice, depth + 1)),
        }
    }

    fn object(dice: &mut Dice, depth: u32) -> Object {
        let fields: Vec<(String, Value)> = (0..dice.roll(12))
            .map(|i| {
                let name = match dice.roll(3) {
                    0 => format!("f{i}"),
                    1 => TEXTS[dice.roll(8) as usize].to_string(),
                    _ => format!("ü{}", dice.roll(40)),
                };
                (name, value(dice, depth))
            })
            .collect();
        Object::from(fields)
    }

    /// Whatever a record holds, the walk reads it exactly as SurrealDB's
    /// decoder and the conversion after it do: maps and arrays below and
    /// above the eight entries where their encoding changes, nested, with
    /// kinds the walk hands to SurrealDB (uuids, record ids) inside.
    #[test]
    fn the_walk_reads_every_record_as_surrealdbs_decoder_does() {
        let mut dice = Dice(7);
        let mut walked_indexed = false;
        for _ in 0..3_000 {
            let data = Value::Object(object(&mut dice, 0));
            let record = Record {
                metadata: None,
                data,
            };
            let bytes = revision::to_vec(&record).unwrap();
            let keep = |name: &str| name != "id";
            let expected = match &record.data {
                Value::Object(fields) => object_to_json(fields, keep).unwrap(),
                _ => unreachable!(),
            };
            let walked = walk_record(&bytes, &keep).unwrap();
            assert_eq!(walked, Some(expected.clone()), "{:?}", record.data);
            assert_eq!(record_json(&bytes, keep).unwrap(), Some(expected));
            walked_indexed |= matches!(&record.data, Value::Object(o) if o.len() >= 8);
        }
        assert!(walked_indexed, "some maps were long enough to be indexed");

        let not_object = revision::to_vec(&Record {
            metadata: None,
            data: Value::String("x".into()),
        })
        .unwrap();
        assert_eq!(record_json(&not_object, |_| true).unwrap(), None);
        assert!(
            record_json(&not_object[..3], |_| true).is_err(),
            "truncated"
        );
    }

    /// Damaged bytes (a flipped byte, a cut) read as an error or as some
    /// value, never as a panic, however the damage falls.
    #[test]
    fn damaged_records_fail_cleanly() {
        let mut dice = Dice(11);
        for _ in 0..20_000 {
            let record = Record {
                metadata: None,
                data: Value::Object(object(&mut dice, 2)),
            };
            let mut bytes = revision::to_vec(&record).unwrap();
            if bytes.is_empty() {
                continue;
            }
            let at = dice.roll(bytes.len() as u64) as usize;
            match dice.roll(3) {
                0 => bytes.truncate(at),
                1 => bytes[at] ^= 1 << dice.roll(8),
                _ => bytes[at] = 0xff,
            }
            let _ = record_json(&bytes, |_| true);
        }
    }
}
