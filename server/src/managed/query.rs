//! Queries of managed objects: filters resolved against a type's properties
//! and compiled for the store, sort keys, page sizes and page tokens (bound
//! to the query that made them).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use idm_proto::filter::{self, AttrPath};
use sha2::{Digest, Sha256};

use super::{DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, ManagedError, ObjectType, PropertyKind};
use crate::store::{CompileError, FieldResolver, Identifier, ResolvedField, SortKey, compile};

/// Maps filter attributes of a managed type onto its records.
pub(super) struct ObjectResolver<'a>(pub(super) &'a ObjectType);

impl FieldResolver for ObjectResolver<'_> {
    fn resolve(&self, path: &AttrPath) -> Result<ResolvedField, String> {
        if path.urn.is_some() {
            return Err(format!("{path}: managed objects have no schema URNs"));
        }
        let column = |name| {
            Ok(ResolvedField::Column {
                name,
                case_exact: true,
            })
        };
        match path.attr.as_str() {
            "_id" => return column("oid"),
            "_rev" => return column("rev"),
            "_created" => return column("created"),
            "_lastModified" => return column("modified"),
            _ => {}
        }
        if self.0.reverse.iter().any(|r| r.name == path.attr) {
            return Err(format!(
                "{} is computed from another type's relationships and cannot be filtered",
                path.attr
            ));
        }
        let property = self.0.properties.get(&path.attr);
        if property.is_some_and(|p| p.private || p.hidden) {
            return Err(format!("{} is private", path.attr));
        }
        let case_exact = property.is_none_or(|p| p.case_exact);
        let single_valued = property.is_some_and(|p| {
            matches!(
                p.kind,
                PropertyKind::String
                    | PropertyKind::Number
                    | PropertyKind::Integer
                    | PropertyKind::Boolean
            )
        });
        if single_valued
            && path.sub_attr.is_none()
            && let Some((declared, _)) = self.0.properties.get_key_value(&path.attr)
            && let Some(name) = Identifier::new(declared)
        {
            // The schema's copy of the name goes into the query, not the request's.
            return Ok(ResolvedField::Property { name, case_exact });
        }
        let mut segments = vec![path.attr.clone()];
        segments.extend(path.sub_attr.clone());
        Ok(ResolvedField::Data {
            segments,
            case_exact,
        })
    }
}

/// Parses and compiles a filter; positions point into the caller's text.
pub fn compile_filter(
    text: &str,
    resolver: &dyn FieldResolver,
) -> Result<crate::store::CompiledFilter, ManagedError> {
    compile_parsed(parse_filter(text)?.as_ref(), resolver)
}

/// A filter's AST; `None` for an empty filter (everything matches).
pub(super) fn parse_filter(text: &str) -> Result<Option<filter::Filter>, ManagedError> {
    if text.trim().is_empty() {
        return Ok(None);
    }
    filter::parse(text)
        .map(Some)
        .map_err(|e| ManagedError::Filter {
            position: e.position,
            message: e.message,
        })
}

pub(super) fn compile_parsed(
    parsed: Option<&filter::Filter>,
    resolver: &dyn FieldResolver,
) -> Result<crate::store::CompiledFilter, ManagedError> {
    let Some(parsed) = parsed else {
        return Ok(crate::store::CompiledFilter::default());
    };
    compile(parsed, resolver).map_err(|CompileError(message)| ManagedError::Filter {
        position: 0,
        message,
    })
}

/// `sn asc, givenName desc` → sort keys.
pub fn parse_order_by(
    text: &str,
    resolver: &dyn FieldResolver,
) -> Result<Vec<SortKey>, ManagedError> {
    let mut keys = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let mut words = part.split_whitespace();
        let attr = words.next().unwrap_or_default();
        let descending = match words.next().map(str::to_ascii_lowercase).as_deref() {
            None | Some("asc") => false,
            Some("desc") => true,
            Some(other) => {
                return Err(ManagedError::invalid(
                    "order_by",
                    format!("\"{other}\" is not asc or desc"),
                ));
            }
        };
        if words.next().is_some() {
            return Err(ManagedError::invalid(
                "order_by",
                format!("\"{part}\": expected ATTRIBUTE [asc|desc]"),
            ));
        }
        let path = match filter::parse(&format!("{attr} pr")) {
            Ok(filter::Filter::Present(path)) => path,
            _ => {
                return Err(ManagedError::invalid(
                    "order_by",
                    format!("\"{attr}\" is not an attribute name"),
                ));
            }
        };
        let field = resolver
            .resolve(&path)
            .map_err(|m| ManagedError::invalid("order_by", m))?;
        keys.push(SortKey { field, descending });
    }
    Ok(keys)
}

pub fn page_size(requested: usize) -> Result<usize, ManagedError> {
    match requested {
        0 => Ok(DEFAULT_PAGE_SIZE),
        n => Ok(n.min(MAX_PAGE_SIZE)),
    }
}

pub fn fingerprint(parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    hasher
        .finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub fn encode_page_token(offset: usize, fingerprint: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{offset}:{fingerprint}"))
}

pub fn decode_page_token(token: &str, fingerprint: &str) -> Result<usize, ManagedError> {
    let bad = || ManagedError::invalid("page_token", "not a page token of this query");
    let text = URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(bad)?;
    let (offset, print) = text.split_once(':').ok_or_else(bad)?;
    if print != fingerprint {
        return Err(bad());
    }
    offset.parse().map_err(|_| bad())
}
