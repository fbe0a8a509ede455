//! SCIM filters and sort keys rewritten onto managed properties through the
//! attribute map: `name.familyName sw "J"` becomes `sn sw "J"`,
//! `emails[type eq "work"].value eq "x"` becomes `mail eq "x"`, `active eq
//! true` becomes `accountStatus eq "active"`, `meta.lastModified gt "…"`
//! becomes `_lastModified gt "…"`. The core compiles the result with bound
//! parameters, as it does every filter.

use idm_proto::filter::{AttrPath, CompareOp, Filter, Value as Literal};
use serde_json::Value;

use super::{AttributeMap, Rule, Transform, TypeMap};
use crate::scim::error::ScimError;
use crate::scim::path;
use crate::scim::schema::{Attribute, ResourceType};

/// A rewritten filter, or a constant when the map decides it alone (a
/// resource type's `meta.resourceType`, an attribute another type does not
/// have in a root search).
#[derive(Debug, Clone, PartialEq)]
pub enum Rewritten {
    Filter(Filter),
    Always(bool),
}

impl Rewritten {
    /// The filter for the core; `None` when nothing can match.
    pub fn into_core_filter(self) -> Option<String> {
        match self {
            Rewritten::Filter(filter) => Some(filter.to_string()),
            Rewritten::Always(true) => Some(String::new()),
            Rewritten::Always(false) => None,
        }
    }

    fn and(self, other: Rewritten) -> Rewritten {
        match (self, other) {
            (Rewritten::Always(false), _) | (_, Rewritten::Always(false)) => {
                Rewritten::Always(false)
            }
            (Rewritten::Always(true), x) | (x, Rewritten::Always(true)) => x,
            (Rewritten::Filter(a), Rewritten::Filter(b)) => Rewritten::Filter(a.and(b)),
        }
    }

    fn or(self, other: Rewritten) -> Rewritten {
        match (self, other) {
            (Rewritten::Always(true), _) | (_, Rewritten::Always(true)) => Rewritten::Always(true),
            (Rewritten::Always(false), x) | (x, Rewritten::Always(false)) => x,
            (Rewritten::Filter(a), Rewritten::Filter(b)) => Rewritten::Filter(a.or(b)),
        }
    }

    fn not(self) -> Rewritten {
        match self {
            Rewritten::Always(b) => Rewritten::Always(!b),
            Rewritten::Filter(f) => Rewritten::Filter(Filter::Not(Box::new(f))),
        }
    }
}

/// How to treat an attribute the resource type does not have: an error on a
/// resource endpoint, "does not match" in a search across types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unknown {
    Reject,
    NoMatch,
}

impl Unknown {
    fn verdict(self, why: String) -> Result<Rewritten, ScimError> {
        match self {
            Unknown::Reject => Err(ScimError::invalid_filter(why)),
            Unknown::NoMatch => Ok(Rewritten::Always(false)),
        }
    }
}

/// The test a leaf applies, before it is given a managed path.
#[derive(Debug, Clone)]
enum Test {
    Present,
    Compare(CompareOp, Literal),
}

impl Test {
    fn on(&self, path: AttrPath) -> Rewritten {
        Rewritten::Filter(match self {
            Test::Present => Filter::Present(path),
            Test::Compare(op, value) => Filter::Compare(path, *op, value.clone()),
        })
    }
}

fn managed_path(attr: &str, sub: Option<&str>) -> AttrPath {
    AttrPath {
        urn: None,
        attr: attr.to_string(),
        sub_attr: sub.map(str::to_string),
    }
}

impl TypeMap {
    pub fn rewrite_filter(
        &self,
        maps: &AttributeMap,
        resource_type: &ResourceType,
        filter: &Filter,
        unknown: Unknown,
    ) -> Result<Rewritten, ScimError> {
        Ok(match filter {
            // Folded operand by operand: a chain is a loop, and recursion only
            // follows the parser's bounded nesting.
            Filter::And(operands) => {
                let mut result = Rewritten::Always(true);
                for operand in operands {
                    result =
                        result.and(self.rewrite_filter(maps, resource_type, operand, unknown)?);
                }
                result
            }
            Filter::Or(operands) => {
                let mut result = Rewritten::Always(false);
                for operand in operands {
                    result =
                        result.or(self.rewrite_filter(maps, resource_type, operand, unknown)?);
                }
                result
            }
            Filter::Not(inner) => self
                .rewrite_filter(maps, resource_type, inner, unknown)?
                .not(),
            Filter::Present(path) => {
                self.leaf(maps, resource_type, path, Test::Present, unknown)?
            }
            Filter::Compare(path, op, value) => self.leaf(
                maps,
                resource_type,
                path,
                Test::Compare(*op, value.clone()),
                unknown,
            )?,
            Filter::ValuePath(path, inner) => {
                self.value_path(maps, resource_type, path, inner, unknown)?
            }
        })
    }

    fn leaf(
        &self,
        maps: &AttributeMap,
        resource_type: &ResourceType,
        path: &AttrPath,
        test: Test,
        unknown: Unknown,
    ) -> Result<Rewritten, ScimError> {
        let Some((extension, attribute, sub)) = resolve(resource_type, path) else {
            return unknown.verdict(format!(
                "{path} is not an attribute of {}",
                resource_type.kind.name()
            ));
        };
        if extension.is_none()
            && let Some(rewritten) = common(resource_type, attribute, sub, &test)?
        {
            return Ok(rewritten);
        }
        if attribute.returned == crate::scim::schema::Returned::Never {
            return Err(ScimError::invalid_filter(format!(
                "{path} cannot be filtered"
            )));
        }
        if let Test::Compare(op, _) = &test
            && matches!(
                op,
                CompareOp::Gt | CompareOp::Ge | CompareOp::Lt | CompareOp::Le
            )
        {
            let kind = sub.unwrap_or(attribute).kind;
            if matches!(
                kind,
                crate::scim::schema::AttributeType::Boolean
                    | crate::scim::schema::AttributeType::Binary
            ) {
                return Err(ScimError::invalid_filter(format!(
                    "{path} {op}: {} values have no order",
                    attribute.name
                )));
            }
        }
        // A multi-valued complex attribute without a sub-attribute compares its `value`s.
        let sub = sub.or_else(|| {
            (attribute.multi_valued && attribute.is_complex())
                .then(|| attribute.sub("value"))
                .flatten()
        });
        let extension = extension.map(|e| e.id.as_str());
        let sub_name = sub.map(|s| s.name.as_str());
        let mut result: Option<Rewritten> = None;
        for rule in &self.rules {
            if rule.scim.extension.as_deref() != extension || rule.scim.attribute != attribute.name
            {
                continue;
            }
            match (&rule.scim.selector, rule.scim.sub.as_deref()) {
                (None, rule_sub)
                    if rule_sub == sub_name
                        || (rule_sub.is_none()
                            && matches!(rule.transform, Transform::References { .. })) =>
                {
                    return rule_leaf(maps, rule, sub_name, &test, path);
                }
                // `emails.value` covers the work email the rule maps, and the rest.
                (Some(_), rule_sub) if rule_sub == sub_name => {
                    let mapped = test.on(managed_path(&rule.managed, None));
                    result = Some(match result {
                        None => mapped,
                        Some(so_far) => so_far.or(mapped),
                    });
                }
                _ => {}
            }
        }
        let passthrough = self
            .passthrough
            .iter()
            .any(|p| p.extension.as_deref() == extension && p.attribute == attribute.name);
        let stored = if passthrough {
            test.on(managed_path(&attribute.name, sub_name))
        } else if result.is_some() {
            Rewritten::Always(false)
        } else {
            return Err(ScimError::invalid_filter(format!(
                "{path} cannot be filtered"
            )));
        };
        Ok(match result {
            Some(mapped) => mapped.or(stored),
            None => stored,
        })
    }

    fn value_path(
        &self,
        maps: &AttributeMap,
        resource_type: &ResourceType,
        path: &AttrPath,
        inner: &Filter,
        unknown: Unknown,
    ) -> Result<Rewritten, ScimError> {
        let Some((extension, attribute, None)) = resolve(resource_type, path) else {
            return unknown.verdict(format!(
                "{path} is not a multi-valued attribute of {}",
                resource_type.kind.name()
            ));
        };
        if !attribute.multi_valued {
            return Err(ScimError::invalid_filter(format!(
                "{path}[…]: {} has one value",
                attribute.name
            )));
        }
        let extension = extension.map(|e| e.id.as_str());
        let mut inner = inner.clone();
        let mut bad = None;
        inner.walk_attrs_mut(&mut |p: &mut AttrPath| match attribute.sub(&p.attr) {
            Some(sub) => p.attr = sub.name.clone(),
            None => bad = bad.take().or(Some(p.attr.clone())),
        });
        if let Some(bad) = bad {
            return Err(ScimError::invalid_filter(format!(
                "{} has no sub-attribute {bad}",
                attribute.name
            )));
        }
        let rules: Vec<&Rule> = self
            .rules
            .iter()
            .filter(|r| {
                r.scim.extension.as_deref() == extension && r.scim.attribute == attribute.name
            })
            .collect();
        if let Some(rule) = rules
            .iter()
            .find(|r| matches!(r.transform, Transform::References { .. }))
        {
            if rule.read_only {
                return Err(ScimError::invalid_filter(format!(
                    "{} is computed and cannot be filtered",
                    attribute.name
                )));
            }
            return references_filter(maps, rule, &inner);
        }
        let mut result = if self
            .passthrough
            .iter()
            .any(|p| p.extension.as_deref() == extension && p.attribute == attribute.name)
        {
            Rewritten::Filter(Filter::ValuePath(
                managed_path(&attribute.name, None),
                Box::new(inner.clone()),
            ))
        } else {
            Rewritten::Always(false)
        };
        for rule in rules {
            // The element the rule maps exists when its property has a value;
            // test the filter against that element.
            let element = element_filter(rule, attribute, &inner);
            result = result.or(Rewritten::Filter(Filter::Present(managed_path(
                &rule.managed,
                None,
            )))
            .and(element));
        }
        Ok(result)
    }

    /// A `sortBy` as the core's `order_by` key.
    pub fn sort_key(
        &self,
        resource_type: &ResourceType,
        sort_by: &str,
    ) -> Result<String, ScimError> {
        let invalid = || {
            ScimError::invalid_value(format!(
                "sortBy: {sort_by} is not a sortable attribute of {}",
                resource_type.kind.name()
            ))
        };
        let path = match idm_proto::filter::parse(&format!("{sort_by} pr")) {
            Ok(Filter::Present(path)) => path,
            _ => return Err(invalid()),
        };
        let (extension, attribute, sub) = resolve(resource_type, &path).ok_or_else(invalid)?;
        if extension.is_none() {
            match (attribute.name.as_str(), sub.map(|s| s.name.as_str())) {
                ("id", None) => return Ok("_id".into()),
                ("meta", Some("created")) => return Ok("_created".into()),
                ("meta", Some("lastModified")) => return Ok("_lastModified".into()),
                ("meta", _) => return Err(invalid()),
                _ => {}
            }
        }
        let sub = sub.or_else(|| {
            attribute
                .multi_valued
                .then(|| attribute.sub("value"))
                .flatten()
        });
        let extension = extension.map(|e| e.id.as_str());
        let sub_name = sub.map(|s| s.name.as_str());
        if let Some(rule) = self.rules.iter().find(|r| {
            r.scim.extension.as_deref() == extension
                && r.scim.attribute == attribute.name
                && r.scim.sub.as_deref() == sub_name
                && !matches!(r.transform, Transform::References { .. })
                && !r.write_only
        }) {
            return Ok(rule.managed.clone());
        }
        if self
            .passthrough
            .iter()
            .any(|p| p.extension.as_deref() == extension && p.attribute == attribute.name)
        {
            return Ok(match sub_name {
                Some(sub) => format!("{}.{sub}", attribute.name),
                None => attribute.name.clone(),
            });
        }
        Err(invalid())
    }
}

type Resolved<'a> = (
    Option<&'a crate::scim::schema::Schema>,
    &'a Attribute,
    Option<&'a Attribute>,
);

fn resolve<'a>(resource_type: &'a ResourceType, path: &AttrPath) -> Option<Resolved<'a>> {
    let located = resource_type.attribute(path.urn.as_deref(), &path.attr)?;
    let sub = match &path.sub_attr {
        Some(sub) => Some(located.attribute.sub(sub)?),
        None => None,
    };
    Some((located.extension, located.attribute, sub))
}

/// `id`, `meta.*`: the object's own fields, not attributes.
fn common(
    resource_type: &ResourceType,
    attribute: &Attribute,
    sub: Option<&Attribute>,
    test: &Test,
) -> Result<Option<Rewritten>, ScimError> {
    let field = match (attribute.name.as_str(), sub.map(|s| s.name.as_str())) {
        ("id", None) => "_id",
        ("meta", Some("created")) => "_created",
        ("meta", Some("lastModified")) => "_lastModified",
        ("meta", Some("version")) => {
            let test = match test {
                Test::Compare(op, Literal::String(etag)) => {
                    let revision = etag
                        .trim_start_matches("W/")
                        .trim_matches('"')
                        .parse::<i64>()
                        .map_err(|_| {
                            ScimError::invalid_filter(format!(
                                "meta.version: {etag} is not a version of this server"
                            ))
                        })?;
                    Test::Compare(*op, Literal::Number(revision.into()))
                }
                other => other.clone(),
            };
            return Ok(Some(test.on(managed_path("_rev", None))));
        }
        ("meta", Some("resourceType")) => {
            let name = Value::String(resource_type.kind.name().into());
            return Ok(Some(Rewritten::Always(match test {
                Test::Present => true,
                Test::Compare(op, literal) => path::compare(sub, &name, *op, &literal.to_json()),
            })));
        }
        ("meta", _) => {
            return Err(ScimError::invalid_filter(format!(
                "meta.{} cannot be filtered",
                sub.map_or("", |s| s.name.as_str())
            )));
        }
        _ => return Ok(None),
    };
    Ok(Some(test.on(managed_path(field, None))))
}

/// A leaf on a rule without a selector, with the rule's value transform.
fn rule_leaf(
    maps: &AttributeMap,
    rule: &Rule,
    sub: Option<&str>,
    test: &Test,
    path: &AttrPath,
) -> Result<Rewritten, ScimError> {
    if rule.write_only {
        return Err(ScimError::invalid_filter(format!(
            "{path} cannot be filtered"
        )));
    }
    let target = managed_path(&rule.managed, None);
    match &rule.transform {
        Transform::Copy => Ok(test.on(target)),
        Transform::Boolean { on_true, on_false } => match test {
            Test::Present => Ok(test.on(target)),
            Test::Compare(op @ (CompareOp::Eq | CompareOp::Ne), Literal::Bool(b)) => {
                let stored = literal(if *b { on_true } else { on_false })?;
                Ok(Test::Compare(*op, stored).on(target))
            }
            Test::Compare(op, value) => Err(ScimError::invalid_filter(format!(
                "{path} {op} {value}: compare a boolean with eq or ne and true or false"
            ))),
        },
        Transform::References { .. } => {
            if rule.read_only {
                return Err(ScimError::invalid_filter(format!(
                    "{path} is computed and cannot be filtered"
                )));
            }
            match (test, sub) {
                (Test::Present, _) => Ok(test.on(target)),
                (Test::Compare(op, value), Some("value") | None) => references_filter(
                    maps,
                    rule,
                    &Filter::Compare(managed_path("value", None), *op, value.clone()),
                ),
                _ => Err(ScimError::invalid_filter(format!(
                    "{path}: only the value of a reference can be filtered"
                ))),
            }
        }
    }
}

/// `members[value eq "id"]` as a test on the stored `_ref`s.
fn references_filter(
    maps: &AttributeMap,
    rule: &Rule,
    inner: &Filter,
) -> Result<Rewritten, ScimError> {
    let Transform::References { default } = &rule.transform else {
        return Err(ScimError::internal("not a reference rule"));
    };
    let collection = &maps.for_kind(*default).collection;
    let on_ref = |op: CompareOp, id: &str| {
        Filter::ValuePath(
            managed_path(&rule.managed, None),
            Box::new(Filter::Compare(
                managed_path("_ref", None),
                op,
                Literal::String(format!("{collection}/{id}")),
            )),
        )
    };
    match inner {
        Filter::Compare(p, CompareOp::Eq, Literal::String(id)) if p.attr == "value" => {
            Ok(Rewritten::Filter(on_ref(CompareOp::Eq, id)))
        }
        Filter::Compare(p, CompareOp::Ne, Literal::String(id)) if p.attr == "value" => Ok(
            Rewritten::Filter(Filter::Not(Box::new(on_ref(CompareOp::Eq, id)))),
        ),
        Filter::Or(operands) => {
            let mut result = Rewritten::Always(false);
            for operand in operands {
                result = result.or(references_filter(maps, rule, operand)?);
            }
            Ok(result)
        }
        _ => Err(ScimError::invalid_filter(format!(
            "{}[{inner}]: only value eq/ne tests on references are supported",
            rule.scim.attribute
        ))),
    }
}

/// The value filter evaluated on the one element a selector rule maps: its
/// selector sub-attribute has the rule's literal, its mapped sub-attribute is
/// the managed property, and it has no other sub-attributes.
fn element_filter(rule: &Rule, attribute: &Attribute, filter: &Filter) -> Rewritten {
    let Some((key, literal)) = &rule.scim.selector else {
        return Rewritten::Always(false);
    };
    match filter {
        Filter::And(operands) => operands.iter().fold(Rewritten::Always(true), |result, f| {
            result.and(element_filter(rule, attribute, f))
        }),
        Filter::Or(operands) => operands.iter().fold(Rewritten::Always(false), |result, f| {
            result.or(element_filter(rule, attribute, f))
        }),
        Filter::Not(inner) => element_filter(rule, attribute, inner).not(),
        Filter::Present(p) if &p.attr == key => Rewritten::Always(true),
        Filter::Compare(p, op, value) if &p.attr == key => Rewritten::Always(path::compare(
            attribute.sub(key),
            literal,
            *op,
            &value.to_json(),
        )),
        Filter::Present(p) if Some(&p.attr) == rule.scim.sub.as_ref() => {
            Rewritten::Filter(Filter::Present(managed_path(&rule.managed, None)))
        }
        Filter::Compare(p, op, value) if Some(&p.attr) == rule.scim.sub.as_ref() => {
            Rewritten::Filter(Filter::Compare(
                managed_path(&rule.managed, None),
                *op,
                value.clone(),
            ))
        }
        Filter::Compare(_, CompareOp::Ne, _) => Rewritten::Always(true),
        _ => Rewritten::Always(false),
    }
}

fn literal(value: &Value) -> Result<Literal, ScimError> {
    Ok(match value {
        Value::Null => Literal::Null,
        Value::Bool(b) => Literal::Bool(*b),
        Value::Number(n) => Literal::Number(n.clone()),
        Value::String(s) => Literal::String(s.clone()),
        _ => return Err(ScimError::internal("a mapped value is not a literal")),
    })
}
