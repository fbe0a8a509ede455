//! The SCIM filter grammar and its SurrealQL compile, through their public
//! entry points only (`parse`, `Display`, `compile`). Invariants: a filter
//! that parses prints as text that parses back to the same tree (and prints
//! the same again); compiling it either fails with a message or gives SQL in
//! which no request text appears: no quote but the empty-string literal `''`,
//! and every `$pN` placeholder bound, every bound value used.

#![no_main]

use idm_fuzz::query::{FieldResolver, Identifier, ResolvedField, compile};
use idm_proto::filter::{AttrPath, parse};
use libfuzzer_sys::fuzz_target;

/// Like a managed object type's resolver: fixed columns, declared
/// single-valued properties, everything else inside `data`, and one kind of
/// attribute it does not know.
struct Managed;

impl FieldResolver for Managed {
    fn resolve(&self, path: &AttrPath) -> Result<ResolvedField, String> {
        let plain = path.urn.is_none() && path.sub_attr.is_none();
        match path.attr.as_str() {
            "_id" if plain => Ok(ResolvedField::Column {
                name: "oid",
                case_exact: true,
            }),
            "_lastModified" if plain => Ok(ResolvedField::Column {
                name: "updated",
                case_exact: true,
            }),
            "userName" | "mail" | "sn" | "givenName" if plain => Ok(ResolvedField::Property {
                name: Identifier::new(&path.attr).ok_or("not an identifier")?,
                case_exact: false,
            }),
            attr if attr.starts_with("unknown") => Err(format!("unknown attribute \"{path}\"")),
            attr => {
                let mut segments = vec![attr.to_string()];
                segments.extend(path.sub_attr.clone());
                Ok(ResolvedField::Data {
                    segments,
                    case_exact: path.attr.starts_with('x'),
                })
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(filter) = parse(text) else {
        return;
    };
    let shown = filter.to_string();
    match parse(&shown) {
        Ok(again) => {
            assert_eq!(
                again, filter,
                "{text:?} shows as {shown:?}, which parses differently"
            );
            assert_eq!(again.to_string(), shown, "{text:?}: Display is not stable");
        }
        Err(e) => panic!("{text:?} shows as {shown:?}, which does not parse: {e}"),
    }
    let Ok(compiled) = compile(&filter, &Managed) else {
        return;
    };
    let sql = compiled.sql.replace("''", "");
    assert!(
        !sql.contains('\'') && !sql.contains('"') && !sql.contains('`'),
        "{text:?}: a quote in {:?}",
        compiled.sql
    );
    let mut used = std::collections::BTreeSet::new();
    let mut rest = compiled.sql.as_str();
    while let Some(at) = rest.find("$p") {
        let digits: String = rest[at + 2..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        assert!(
            !digits.is_empty(),
            "{text:?}: a bare $p in {:?}",
            compiled.sql
        );
        let name = format!("p{digits}");
        assert!(
            compiled.params.contains_key(&name),
            "{text:?}: ${name} is not bound"
        );
        used.insert(name);
        rest = &rest[at + 2..];
    }
    assert_eq!(
        used.len(),
        compiled.params.len(),
        "{text:?}: bound parameters nobody uses"
    );
});
