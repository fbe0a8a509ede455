//! What each policy of Wren's `policy.js` accepts, one function each.
//!
//! The shared shape of Wren's checks: a policy fails a non-empty string that
//! does not meet it, and also an absent or empty value once the property has
//! already failed `REQUIRED` (Wren's `isRequired`), so an empty `userName` with
//! `minLength: 1` reports both `REQUIRED` and `MIN_LENGTH`.

use std::collections::BTreeSet;
use std::sync::LazyLock;

use regex::Regex;
use serde_json::{Map, Value, json};

use super::{Check, Policy};

/// Wren's `validPhoneFormat`.
static PHONE: LazyLock<Option<Regex>> = LazyLock::new(|| Regex::new(r"^\+?([0-9\- \(\)])*$").ok());
/// Wren's `validEmailAddressFormat` (`/.+@.+\..+/i`).
static EMAIL: LazyLock<Option<Regex>> = LazyLock::new(|| Regex::new(r"(?i).+@.+\..+").ok());
/// Wren's `validNameFormat`, character for character (its `'-\u0105` range
/// included).
static NAME: LazyLock<Option<Regex>> = LazyLock::new(|| {
    let accented = "\u{0105}\u{0107}\u{0119}\u{0142}\u{00F3}\u{015B}\u{017C}\u{017A}\u{0104}\u{0106}\u{0118}\u{0141}\u{00D3}\u{015A}\u{017B}\u{0179}\u{00C0}\u{00C8}\u{00CC}\u{00D2}\u{00D9}\u{00E0}\u{00E8}\u{00EC}\u{00F2}\u{00F9}\u{00C1}\u{00C9}\u{00CD}\u{00D3}\u{00DA}\u{00DD}\u{00E1}\u{00E9}\u{00ED}\u{00F3}\u{00FA}\u{00FD}\u{00C2}\u{00CA}\u{00CE}\u{00D4}\u{00DB}\u{00E2}\u{00EA}\u{00EE}\u{00F4}\u{00FB}\u{00C3}\u{00D1}\u{00D5}\u{00E3}\u{00F1}\u{00F5}\u{00C4}\u{00CB}\u{00CF}\u{00D6}\u{00DC}\u{0178}\u{00E4}\u{00EB}\u{00EF}\u{00F6}\u{00FC}\u{0178}\u{00A1}\u{00BF}\u{00E7}\u{00C7}\u{0152}\u{0153}\u{00DF}\u{00D8}\u{00F8}\u{00C5}\u{00E5}\u{00C6}\u{00E6}\u{00DE}\u{00FE}\u{00D0}\u{00F0}";
    Regex::new(&format!(r"^([A-Za'-\x{{0105}}{accented}\-\s])+$")).ok()
});

fn fails_pattern(pattern: &LazyLock<Option<Regex>>, text: &str) -> bool {
    pattern.as_ref().is_none_or(|p| !p.is_match(text))
}

/// The non-empty string Wren's checks look at.
fn text(value: Option<&Value>) -> Option<&str> {
    value.and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// JavaScript's `length` of a string: UTF-16 code units.
fn js_length(text: &str) -> u64 {
    text.encode_utf16().count() as u64
}

/// Wren's pattern: fails a non-empty string for which `ok` is false, and
/// anything else once `REQUIRED` failed.
fn string_rule(value: Option<&Value>, required_failed: bool, ok: impl Fn(&str) -> bool) -> bool {
    match text(value) {
        Some(s) => !ok(s),
        None => required_failed,
    }
}

fn requirement(name: &str) -> Value {
    json!({ "policyRequirement": name })
}

fn with_params(name: &str, params: Value) -> Value {
    json!({ "policyRequirement": name, "params": params })
}

/// JavaScript's `typeof`, with arrays and null told apart as Wren does.
pub fn js_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

pub(super) fn evaluate(
    policy: &Policy,
    object: &Map<String, Value>,
    value: Option<&Value>,
    required_failed: bool,
) -> Option<Value> {
    let name = policy.requirement_name();
    let failed = match &policy.check {
        Check::Required => value.is_none_or(Value::is_null),
        Check::NotEmpty => match value {
            None => false,
            Some(Value::Null) => true,
            Some(Value::String(s)) => s.is_empty(),
            Some(Value::Array(items)) => items.is_empty(),
            Some(Value::Object(map)) => map.is_empty(),
            Some(_) => false,
        },
        Check::Unique | Check::NoInternalUserConflict | Check::MappingExists => false,
        Check::Regexp {
            regex,
            source,
            flags,
        } => {
            let number_text = value.filter(|v| v.is_number()).map(Value::to_string);
            let value = number_text.as_deref().or(text(value));
            let failed = match value {
                Some(s) => !regex.is_match(s),
                None => required_failed,
            };
            if !failed {
                return None;
            }
            let mut params = json!({ "regexp": source });
            let mut out = json!({ "policyRequirement": name, "regexp": source });
            if let Some(flags) = flags {
                params["flags"] = json!(flags);
                out["flags"] = json!(flags);
            }
            out["params"] = params;
            return Some(out);
        }
        Check::ValidType(types) => {
            let value = value?;
            let found = js_type(value);
            let fits = types.iter().any(|t| {
                t == found
                    || (t == "integer" && (value.is_i64() || value.is_u64()))
                    || (t == "number" && found == "number")
            });
            if fits {
                return None;
            }
            let found = if value.is_number() && types.iter().any(|t| t == "integer") {
                "number"
            } else {
                found
            };
            return Some(with_params(
                name,
                json!({ "invalidType": found, "validTypes": types }),
            ));
        }
        Check::ValidDate => string_rule(value, required_failed, is_date),
        Check::ValidEmail => string_rule(value, required_failed, |s| !fails_pattern(&EMAIL, s)),
        Check::ValidName => string_rule(value, required_failed, |s| !fails_pattern(&NAME, s)),
        Check::ValidPhone => string_rule(value, required_failed, |s| !fails_pattern(&PHONE, s)),
        Check::Capitals(count) => {
            if string_rule(value, required_failed, |s| {
                s.chars().filter(char::is_ascii_uppercase).count() as u64 >= *count
            }) {
                return Some(with_params(name, json!({ "numCaps": count })));
            }
            return None;
        }
        Check::Numbers(count) => {
            if string_rule(value, required_failed, |s| {
                s.chars().filter(char::is_ascii_digit).count() as u64 >= *count
            }) {
                return Some(with_params(name, json!({ "numNums": count })));
            }
            return None;
        }
        Check::MinLength(length) => {
            if string_rule(value, required_failed, |s| js_length(s) >= *length) {
                return Some(with_params(name, json!({ "minLength": length })));
            }
            return None;
        }
        Check::CannotContainOthers(fields) => {
            let s = text(value)?;
            let hit = fields.iter().find(|field| {
                object
                    .get(field.as_str())
                    .and_then(Value::as_str)
                    .is_some_and(|other| !other.is_empty() && s.contains(other))
            })?;
            return Some(with_params(name, json!({ "disallowedFields": hit })));
        }
        Check::CannotContainCharacters(forbidden) => {
            let s = text(value)?;
            if forbidden
                .iter()
                .any(|c| !c.is_empty() && s.contains(c.as_str()))
            {
                return Some(with_params(
                    name,
                    json!({ "forbiddenChars": forbidden.join(", ") }),
                ));
            }
            return None;
        }
        Check::CannotContainDuplicates => {
            let items = value.and_then(Value::as_array)?;
            let mut seen = BTreeSet::new();
            let duplicate = items.iter().find(|item| !seen.insert(item.to_string()))?;
            return Some(with_params(name, json!({ "duplicateValue": duplicate })));
        }
    };
    failed.then(|| requirement(name))
}

/// Wren accepts what JavaScript's `new Date(text)` parses; idm accepts the
/// forms people and directories write: RFC 3339, RFC 2822, a bare date
/// (`2024-02-29`) and a date with a time but no offset.
fn is_date(text: &str) -> bool {
    use time::format_description::well_known::{Iso8601, Rfc2822, Rfc3339};
    use time::macros::format_description;
    time::OffsetDateTime::parse(text, &Rfc3339).is_ok()
        || time::OffsetDateTime::parse(text, &Rfc2822).is_ok()
        || time::OffsetDateTime::parse(text, &Iso8601::DEFAULT).is_ok()
        || time::PrimitiveDateTime::parse(text, &Iso8601::DEFAULT).is_ok()
        || time::Date::parse(text, format_description!("[year]-[month]-[day]")).is_ok()
}

/// A requirement in words, for the message and the `BadRequest` description.
pub(super) fn in_words(requirement: &Value) -> String {
    let param = |key: &str| {
        requirement
            .get("params")
            .and_then(|p| p.get(key))
            .map(|v| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .unwrap_or_default()
    };
    let name = requirement
        .get("policyRequirement")
        .and_then(Value::as_str)
        .unwrap_or_default();
    match name {
        "REQUIRED" => "is required and cannot be empty".into(),
        "UNIQUE" => "must be unique".into(),
        "MATCH_REGEXP" => format!("must match the pattern {}", param("regexp")),
        "VALID_TYPE" => {
            let valid: Vec<String> = requirement
                .get("params")
                .and_then(|p| p.get("validTypes"))
                .and_then(Value::as_array)
                .map(|types| {
                    types
                        .iter()
                        .filter_map(Value::as_str)
                        .map(with_article)
                        .collect()
                })
                .unwrap_or_default();
            format!(
                "expected {}, got {}",
                valid.join(" or "),
                with_article(&param("invalidType"))
            )
        }
        "VALID_DATE" => "must be a valid date".into(),
        "VALID_EMAIL_ADDRESS_FORMAT" => "must be a valid email address".into(),
        "VALID_NAME_FORMAT" => "must be a valid name".into(),
        "VALID_PHONE_FORMAT" => "must be a valid phone number".into(),
        "AT_LEAST_X_CAPITAL_LETTERS" => {
            format!("must contain at least {} capital letters", param("numCaps"))
        }
        "AT_LEAST_X_NUMBERS" => format!("must contain at least {} digits", param("numNums")),
        "MIN_LENGTH" => format!("must be at least {} characters long", param("minLength")),
        "CANNOT_CONTAIN_OTHERS" => {
            format!(
                "must not contain the value of {}",
                param("disallowedFields")
            )
        }
        "CANNOT_CONTAIN_CHARACTERS" => {
            format!("must not contain any of {}", param("forbiddenChars"))
        }
        "CANNOT_CONTAIN_DUPLICATES" => {
            format!("must not contain {} twice", param("duplicateValue"))
        }
        "MAPPING_EXISTS" => "must name an existing mapping".into(),
        other => other.to_string(),
    }
}

/// `a string`, `an object`, `null`.
fn with_article(type_name: &str) -> String {
    match type_name {
        "null" => "null".into(),
        t if t.starts_with(['a', 'e', 'i', 'o', 'u']) => format!("an {t}"),
        t => format!("a {t}"),
    }
}
