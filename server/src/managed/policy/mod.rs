//! Wren:IDM's policies (`policy.js`): each property's list of `{policyId,
//! params}`, checked on every create, replace and patch, and reported in
//! Wren's shape: `[{"property", "policyRequirements": [{"policyRequirement",
//! "params"}]}]`.
//!
//! A property's list is the policies its schema implies (Wren's order:
//! `required`, `not-empty`, `minimum-length`, `regexpMatches`, `valid-type`)
//! followed by the ones `managed.json` names. Three need the store (`unique`,
//! `no-internal-user-conflict`, `mapping-exists`): [`Policy::lookup`] says which,
//! and `ManagedObjects` asks the store for them.

mod checks;
#[cfg(test)]
mod tests;

use regex::{Regex, RegexBuilder};
use serde::Serialize;
use serde_json::{Map, Value, json};

/// The longest `pattern` or `regexp` accepted, in bytes.
pub const MAX_PATTERN_LEN: usize = 1024;
/// The compiled size a pattern may reach (the regex crate's own limit is 10 MiB).
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// One policy of one property, its parameters checked and compiled at load.
#[derive(Debug, Clone)]
pub struct Policy {
    pub id: &'static str,
    check: Check,
}

#[derive(Debug, Clone)]
enum Check {
    Required,
    NotEmpty,
    Unique,
    NoInternalUserConflict,
    Regexp {
        regex: Regex,
        source: String,
        flags: Option<String>,
    },
    ValidType(Vec<String>),
    ValidDate,
    ValidEmail,
    ValidName,
    ValidPhone,
    Capitals(u64),
    Numbers(u64),
    MinLength(u64),
    CannotContainOthers(Vec<String>),
    CannotContainCharacters(Vec<String>),
    CannotContainDuplicates,
    MappingExists,
}

/// What a store-backed policy asks about a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// Another object of the type holds the value (the store's unique keys
    /// answer it on a write; [`crate::managed::ManagedObjects::validate`] asks).
    Unique,
    /// An internal account (`internal/user/<name>`) has that name.
    InternalUser,
    /// A sync mapping has that name.
    Mapping,
}

/// Every policy id of Wren's `policy.js` that idm enforces.
pub const POLICY_IDS: &[&str] = &[
    "required",
    "not-empty",
    "unique",
    "no-internal-user-conflict",
    "regexpMatches",
    "valid-type",
    "valid-date",
    "valid-email-address-format",
    "valid-name-format",
    "valid-phone-format",
    "at-least-X-capitals",
    "at-least-X-numbers",
    "minimum-length",
    "cannot-contain-others",
    "cannot-contain-characters",
    "cannot-contain-duplicates",
    "mapping-exists",
];

impl Policy {
    /// A policy as `managed.json` names it; the error says what is wrong
    /// with the id or its `params`.
    pub fn from_decl(id: &str, params: &Value) -> Result<Policy, String> {
        let id = POLICY_IDS
            .iter()
            .copied()
            .find(|known| *known == id)
            .ok_or_else(|| {
                format!(
                    "unknown policyId \"{id}\" (idm knows: {})",
                    POLICY_IDS.join(", ")
                )
            })?;
        let count = |key: &str| -> Result<u64, String> {
            match params.get(key) {
                Some(Value::Number(n)) => n.as_u64(),
                Some(Value::String(s)) => s.trim().parse().ok(),
                _ => None,
            }
            .ok_or_else(|| format!("{id} needs params.{key}, a whole number"))
        };
        let names = |key: &str| -> Result<Vec<String>, String> {
            match params.get(key) {
                Some(Value::Array(items)) if items.len() <= 64 => items
                    .iter()
                    .map(|i| i.as_str().map(str::to_string))
                    .collect::<Option<Vec<_>>>(),
                // Wren's legacy form: a comma-separated string.
                Some(Value::String(s)) if s.len() <= 4096 => {
                    Some(s.split(',').map(|p| p.trim().to_string()).collect())
                }
                _ => None,
            }
            .ok_or_else(|| format!("{id} needs params.{key}, a list of at most 64 strings"))
        };
        let check = match id {
            "required" => Check::Required,
            "not-empty" => Check::NotEmpty,
            "unique" => Check::Unique,
            "no-internal-user-conflict" => Check::NoInternalUserConflict,
            "regexpMatches" => {
                let source = params
                    .get("regexp")
                    .and_then(Value::as_str)
                    .ok_or("regexpMatches needs params.regexp, a string")?;
                let flags = params.get("flags").and_then(Value::as_str);
                return Ok(Policy {
                    id,
                    check: regexp(source, flags)?,
                });
            }
            "valid-type" => Check::ValidType(names("types")?),
            "valid-date" => Check::ValidDate,
            "valid-email-address-format" => Check::ValidEmail,
            "valid-name-format" => Check::ValidName,
            "valid-phone-format" => Check::ValidPhone,
            "at-least-X-capitals" => Check::Capitals(count("numCaps")?),
            "at-least-X-numbers" => Check::Numbers(count("numNums")?),
            "minimum-length" => Check::MinLength(count("minLength")?),
            "cannot-contain-others" => Check::CannotContainOthers(names("disallowedFields")?),
            "cannot-contain-characters" => Check::CannotContainCharacters(names("forbiddenChars")?),
            "cannot-contain-duplicates" => Check::CannotContainDuplicates,
            _ => Check::MappingExists,
        };
        Ok(Policy { id, check })
    }

    /// The `pattern` of a schema property, as Wren turns it into `regexpMatches`.
    pub fn pattern(source: &str) -> Result<Policy, String> {
        Ok(Policy {
            id: "regexpMatches",
            check: regexp(source, None)?,
        })
    }

    /// `valid-type` for the schema's `type` (a relationship counts as an object).
    pub fn valid_type(types: &[String]) -> Policy {
        let types = types
            .iter()
            .map(|t| {
                if t == "relationship" {
                    "object".to_string()
                } else {
                    t.clone()
                }
            })
            .collect();
        Policy {
            id: "valid-type",
            check: Check::ValidType(types),
        }
    }

    pub fn required() -> Policy {
        Policy {
            id: "required",
            check: Check::Required,
        }
    }

    pub fn not_empty() -> Policy {
        Policy {
            id: "not-empty",
            check: Check::NotEmpty,
        }
    }

    pub fn minimum_length(length: u64) -> Policy {
        Policy {
            id: "minimum-length",
            check: Check::MinLength(length),
        }
    }

    /// The requirement name Wren reports for this policy (`MIN_LENGTH`, …).
    pub fn requirement_name(&self) -> &'static str {
        match self.check {
            Check::Required | Check::NotEmpty => "REQUIRED",
            Check::Unique | Check::NoInternalUserConflict => "UNIQUE",
            Check::Regexp { .. } => "MATCH_REGEXP",
            Check::ValidType(_) => "VALID_TYPE",
            Check::ValidDate => "VALID_DATE",
            Check::ValidEmail => "VALID_EMAIL_ADDRESS_FORMAT",
            Check::ValidName => "VALID_NAME_FORMAT",
            Check::ValidPhone => "VALID_PHONE_FORMAT",
            Check::Capitals(_) => "AT_LEAST_X_CAPITAL_LETTERS",
            Check::Numbers(_) => "AT_LEAST_X_NUMBERS",
            Check::MinLength(_) => "MIN_LENGTH",
            Check::CannotContainOthers(_) => "CANNOT_CONTAIN_OTHERS",
            Check::CannotContainCharacters(_) => "CANNOT_CONTAIN_CHARACTERS",
            Check::CannotContainDuplicates => "CANNOT_CONTAIN_DUPLICATES",
            Check::MappingExists => "MAPPING_EXISTS",
        }
    }

    /// The store question this policy asks, if it is one of those.
    pub fn lookup(&self) -> Option<Lookup> {
        match self.check {
            Check::Unique => Some(Lookup::Unique),
            Check::NoInternalUserConflict => Some(Lookup::InternalUser),
            Check::MappingExists => Some(Lookup::Mapping),
            _ => None,
        }
    }

    /// Wren's `validateOnlyIfPresent`: skipped when the property is absent.
    fn only_if_present(&self) -> bool {
        !matches!(
            self.check,
            Check::Required
                | Check::Unique
                | Check::NoInternalUserConflict
                | Check::Regexp { .. }
                | Check::ValidType(_)
                | Check::MappingExists
        )
    }

    /// The requirement this policy fails for `value` (`None`: absent), or
    /// `None` if it passes. `required_failed`: this property already failed
    /// a `REQUIRED` requirement (Wren's `isRequired`). Store-backed policies
    /// pass here; see [`Policy::lookup`].
    pub fn evaluate(
        &self,
        object: &Map<String, Value>,
        value: Option<&Value>,
        required_failed: bool,
    ) -> Option<Value> {
        if value.is_none() && self.only_if_present() {
            return None;
        }
        checks::evaluate(self, object, value, required_failed)
    }

    /// The requirement a store-backed policy reports when the store says the
    /// value conflicts.
    pub fn lookup_failure(&self) -> Value {
        json!({ "policyRequirement": self.requirement_name() })
    }
}

fn regexp(source: &str, flags: Option<&str>) -> Result<Check, String> {
    if source.len() > MAX_PATTERN_LEN {
        return Err(format!(
            "the pattern is {} bytes; at most {MAX_PATTERN_LEN}",
            source.len()
        ));
    }
    let mut builder = RegexBuilder::new(source);
    builder.size_limit(REGEX_SIZE_LIMIT);
    for flag in flags.unwrap_or_default().chars() {
        match flag {
            'i' => builder.case_insensitive(true),
            'm' => builder.multi_line(true),
            's' => builder.dot_matches_new_line(true),
            'g' | 'u' | 'y' => &mut builder, // no meaning for one test
            other => return Err(format!("unsupported regular expression flag '{other}'")),
        };
    }
    let regex = builder
        .build()
        .map_err(|e| format!("the pattern does not compile: {e}"))?;
    Ok(Check::Regexp {
        regex,
        source: source.to_string(),
        flags: flags.map(str::to_string),
    })
}

/// One property's failed requirements, in Wren's shape.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Failure {
    pub property: String,
    pub policy_requirements: Vec<Value>,
    /// The policy ids that failed, in the order of `policy_requirements`.
    #[serde(skip)]
    pub policy_ids: Vec<&'static str>,
}

impl Failure {
    /// One line for people: each requirement in words, and the policy id.
    pub fn describe(&self) -> String {
        self.policy_requirements
            .iter()
            .zip(&self.policy_ids)
            .map(|(requirement, id)| format!("{} ({id})", checks::in_words(requirement)))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// The failures of a whole object, grouped by property in first-failure order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Failures(pub Vec<Failure>);

impl Failures {
    pub fn add(&mut self, property: &str, policy: &Policy, requirement: Value) {
        self.add_named(property, policy.id, requirement);
    }

    pub fn add_named(&mut self, property: &str, policy_id: &'static str, requirement: Value) {
        let index = match self.0.iter().position(|f| f.property == property) {
            Some(index) => index,
            None => {
                self.0.push(Failure {
                    property: property.to_string(),
                    policy_requirements: Vec::new(),
                    policy_ids: Vec::new(),
                });
                self.0.len() - 1
            }
        };
        if let Some(failure) = self.0.get_mut(index) {
            failure.policy_requirements.push(requirement);
            failure.policy_ids.push(policy_id);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Wren's `failedPolicyRequirements` array.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(&self.0).unwrap_or(Value::Null)
    }

    /// Checks one property's policies against `object`, adding what fails.
    pub fn check_property(
        &mut self,
        object: &Map<String, Value>,
        property: &str,
        value: Option<&Value>,
        policies: &[Policy],
    ) {
        let mut required_failed = false;
        for policy in policies {
            if let Some(requirement) = policy.evaluate(object, value, required_failed) {
                required_failed |=
                    requirement.get("policyRequirement") == Some(&Value::String("REQUIRED".into()));
                self.add(property, policy, requirement);
            }
        }
    }
}

impl std::fmt::Display for Failures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|failure| format!("{}: {}", failure.property, failure.describe()))
            .collect();
        write!(f, "policy validation failed: {}", parts.join("; "))
    }
}
