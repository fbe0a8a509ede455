//! Compiles a parsed SCIM filter into a SurrealQL condition.
//!
//! User text never enters the query string: comparison values and attribute
//! names are bound as parameters (`data[$p0] = $p1`), and the only identifiers
//! written into the text are fixed columns chosen by a [`FieldResolver`].
//!
//! SCIM semantics kept here: a comparison against a multi-valued attribute
//! matches if any element matches; `caseExact: false` attributes compare
//! lower-cased; `co`/`sw`/`ew` need a string; `gt`…`le` need a string or number.

use idm_proto::filter::{AttrPath, CompareOp, Filter, Value as FilterValue};
use serde_json::{Map, Value};

/// A plain identifier (`[A-Za-z][A-Za-z0-9_]*`, at most 64 characters): the
/// only kind of name, besides fixed columns, that may be written into query
/// text. Resolvers build it from schema-declared property names, never from a
/// request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identifier(String);

impl Identifier {
    pub fn new(name: &str) -> Option<Self> {
        let mut chars = name.chars();
        let plain = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
            && name.len() <= 64;
        plain.then(|| Identifier(name.to_string()))
    }
}

/// Where an attribute of the filter lives in a record.
#[derive(Debug, Clone, PartialEq)]
pub enum ResolvedField {
    /// A fixed column such as `oid` or `time`.
    Column {
        name: &'static str,
        case_exact: bool,
    },
    /// A declared single-valued property: `data.<name>`, written as an idiom
    /// because SurrealDB evaluates it ~5x faster than a bound `data[$p]`.
    Property { name: Identifier, case_exact: bool },
    /// A path inside the record's `data` object, bound segment by segment.
    Data {
        segments: Vec<String>,
        case_exact: bool,
    },
}

/// Maps the filter's attribute names onto a record; `Err` is the message for an
/// unknown attribute.
pub trait FieldResolver {
    fn resolve(&self, path: &AttrPath) -> Result<ResolvedField, String>;
}

/// A record's fixed columns as the filter language names them, for lists
/// of runs, audit entries and the like: `(attribute, column)` pairs.
pub struct Columns {
    /// What the records are, for the unknown-attribute message.
    pub kind: &'static str,
    pub columns: &'static [(&'static str, &'static str)],
}

impl FieldResolver for Columns {
    fn resolve(&self, path: &AttrPath) -> Result<ResolvedField, String> {
        let column = self.columns.iter().find(|(attribute, _)| {
            path.sub_attr.is_none() && path.urn.is_none() && *attribute == path.attr
        });
        match column {
            Some((_, name)) => Ok(ResolvedField::Column {
                name,
                case_exact: true,
            }),
            None => {
                let known: Vec<&str> = self.columns.iter().map(|(a, _)| *a).collect();
                Err(format!(
                    "unknown {} attribute \"{path}\" ({})",
                    self.kind,
                    known.join(", ")
                ))
            }
        }
    }
}

/// A condition and its parameters.
#[derive(Debug, Clone, Default)]
pub struct CompiledFilter {
    pub sql: String,
    pub params: Map<String, Value>,
}

#[derive(Debug, Clone)]
pub struct SortKey {
    pub field: ResolvedField,
    pub descending: bool,
}

/// What one page of a query asks the store for.
#[derive(Debug, Clone, Default)]
pub struct QueryPlan {
    pub filter: CompiledFilter,
    /// Only these object ids can match (the filter pins `_id` or a unique
    /// property): read them directly instead of scanning the type.
    pub only: Option<Vec<String>>,
    pub sort: Vec<SortKey>,
    pub offset: usize,
    pub limit: usize,
}

/// Why a filter cannot be compiled (it parsed, but does not fit the data).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CompileError(pub String);

impl CompiledFilter {
    /// `true` when there is no filter.
    pub fn condition(&self) -> &str {
        if self.sql.is_empty() {
            "true"
        } else {
            &self.sql
        }
    }
}

/// Compiles `filter` into a condition over one record.
pub fn compile(
    filter: &Filter,
    resolver: &dyn FieldResolver,
) -> Result<CompiledFilter, CompileError> {
    let mut compiler = Compiler {
        params: Map::new(),
        closures: 0,
    };
    let sql = compiler.filter(filter, resolver, None)?;
    Ok(CompiledFilter {
        sql,
        params: compiler.params,
    })
}

/// Compiles sort keys into `(projection, order)` fragments: the projection adds
/// `<expr> AS sN` and the order clause sorts by the aliases, ties by `oid`.
pub fn sort_clauses(
    keys: &[SortKey],
    params: &mut Map<String, Value>,
    tie_breaker: &'static str,
) -> (String, String) {
    let mut compiler = Compiler {
        params: std::mem::take(params),
        closures: 0,
    };
    let mut projection = String::new();
    let mut order = Vec::new();
    for (index, key) in keys.iter().enumerate() {
        let (expr, case_exact) = compiler.field(&key.field, None);
        let expr = if case_exact {
            expr
        } else {
            format!(
                "(IF type::is_string({expr}) {{ string::lowercase({expr}) }} ELSE {{ {expr} }})"
            )
        };
        projection.push_str(&format!(", {expr} AS s{index}"));
        order.push(format!(
            "s{index} {}",
            if key.descending { "DESC" } else { "ASC" }
        ));
    }
    order.push(format!("{tie_breaker} ASC"));
    *params = compiler.params;
    (projection, order.join(", "))
}

struct Compiler {
    params: Map<String, Value>,
    closures: usize,
}

impl Compiler {
    fn bind(&mut self, value: Value) -> String {
        let name = format!("p{}", self.params.len());
        self.params.insert(name.clone(), value);
        format!("${name}")
    }

    fn closure_var(&mut self) -> String {
        self.closures += 1;
        format!("$e{}", self.closures)
    }

    /// The expression for a field; `element` is the closure variable when the
    /// field is relative to an element of a value path.
    fn field(&mut self, field: &ResolvedField, element: Option<&str>) -> (String, bool) {
        match field {
            ResolvedField::Column { name, case_exact } => (
                match element {
                    Some(var) => format!("{var}.{name}"),
                    None => (*name).to_string(),
                },
                *case_exact,
            ),
            ResolvedField::Property { name, case_exact } => {
                (format!("data.{}", name.0), *case_exact)
            }
            ResolvedField::Data {
                segments,
                case_exact,
            } => {
                let mut expr = element.map_or_else(|| "data".to_string(), str::to_string);
                for segment in segments {
                    let param = self.bind(Value::String(segment.clone()));
                    expr.push_str(&format!("[{param}]"));
                }
                (expr, *case_exact)
            }
        }
    }

    fn filter(
        &mut self,
        filter: &Filter,
        resolver: &dyn FieldResolver,
        element: Option<&str>,
    ) -> Result<String, CompileError> {
        Ok(match filter {
            Filter::And(a, b) => format!(
                "({} AND {})",
                self.filter(a, resolver, element)?,
                self.filter(b, resolver, element)?
            ),
            Filter::Or(a, b) => format!(
                "({} OR {})",
                self.filter(a, resolver, element)?,
                self.filter(b, resolver, element)?
            ),
            Filter::Not(inner) => format!("!({})", self.filter(inner, resolver, element)?),
            Filter::Present(path) => {
                let field = resolve(resolver, path, element)?;
                self.any_element(&field, element, |x| {
                    Ok(format!(
                        "({x} != NONE AND {x} != NULL AND {x} != '' AND {x} != [])"
                    ))
                })?
            }
            Filter::Compare(path, op, value) => {
                let field = resolve(resolver, path, element)?;
                self.compare(path, &field, *op, value, element)?
            }
            Filter::ValuePath(path, inner) => {
                if element.is_some() {
                    return Err(CompileError(format!("{path}: value filters cannot nest")));
                }
                let field = resolve(resolver, path, None)?;
                let (expr, _) = self.field(&field, None);
                let var = self.closure_var();
                let condition = self.filter(inner, &ElementResolver, Some(&var))?;
                format!(
                    "(IF type::is_array({expr}) {{ array::any({expr}, |{var}| {condition}) }} ELSE {{ false }})"
                )
            }
        })
    }

    fn compare(
        &mut self,
        path: &AttrPath,
        field: &ResolvedField,
        op: CompareOp,
        value: &FilterValue,
        element: Option<&str>,
    ) -> Result<String, CompileError> {
        if op == CompareOp::Ne {
            let equal = self.compare(path, field, CompareOp::Eq, value, element)?;
            return Ok(format!("!({equal})"));
        }
        let case_exact = match field {
            ResolvedField::Column { case_exact, .. }
            | ResolvedField::Property { case_exact, .. }
            | ResolvedField::Data { case_exact, .. } => *case_exact,
        };
        let value = value.to_json();
        let fold = !case_exact && value.is_string();
        let bound = self.bind(match (&value, fold) {
            (Value::String(s), true) => Value::String(s.to_lowercase()),
            _ => value.clone(),
        });
        let test = |subject: &str| -> Result<String, CompileError> {
            let folded = if fold {
                format!("string::lowercase({subject})")
            } else {
                subject.to_string()
            };
            Ok(match op {
                CompareOp::Eq | CompareOp::Ne => {
                    if fold {
                        format!("(type::is_string({subject}) AND {folded} = {bound})")
                    } else {
                        format!("{subject} = {bound}")
                    }
                }
                CompareOp::Co | CompareOp::Sw | CompareOp::Ew => {
                    if !value.is_string() {
                        return Err(CompileError(format!(
                            "{path} {op}: the value must be a string"
                        )));
                    }
                    let function = match op {
                        CompareOp::Co => "string::contains",
                        CompareOp::Sw => "string::starts_with",
                        _ => "string::ends_with",
                    };
                    format!("(type::is_string({subject}) AND {function}({folded}, {bound}))")
                }
                CompareOp::Gt | CompareOp::Ge | CompareOp::Lt | CompareOp::Le => {
                    let guard = match &value {
                        Value::String(_) => "type::is_string",
                        Value::Number(_) => "type::is_number",
                        _ => {
                            return Err(CompileError(format!(
                                "{path} {op}: the value must be a string or a number"
                            )));
                        }
                    };
                    let symbol = match op {
                        CompareOp::Gt => ">",
                        CompareOp::Ge => ">=",
                        CompareOp::Lt => "<",
                        _ => "<=",
                    };
                    format!("({guard}({subject}) AND {folded} {symbol} {bound})")
                }
            })
        };
        self.any_element(field, element, test)
    }

    /// `test` applied with SCIM's multi-valued semantics: an array matches if
    /// any element does, and `emails.value` tests the `value` of every element
    /// of `emails`.
    fn any_element(
        &mut self,
        field: &ResolvedField,
        element: Option<&str>,
        test: impl Fn(&str) -> Result<String, CompileError>,
    ) -> Result<String, CompileError> {
        match field {
            ResolvedField::Data {
                segments,
                case_exact,
            } if segments.len() == 2 => {
                let parent = ResolvedField::Data {
                    segments: vec![segments[0].clone()],
                    case_exact: *case_exact,
                };
                let (parent_expr, _) = self.field(&parent, element);
                let key = self.bind(Value::String(segments[1].clone()));
                let outer = self.closure_var();
                let on_element = self.any_of(&format!("{outer}[{key}]"), &test)?;
                let on_parent = self.any_of(&format!("{parent_expr}[{key}]"), &test)?;
                Ok(format!(
                    "(IF type::is_array({parent_expr}) {{ array::any({parent_expr}, |{outer}| {on_element}) }} ELSE {{ {on_parent} }})"
                ))
            }
            // Declared single-valued: the schema guarantees it is never an array.
            ResolvedField::Property { .. } => {
                let (expr, _) = self.field(field, element);
                test(&expr)
            }
            _ => {
                let (expr, _) = self.field(field, element);
                self.any_of(&expr, &test)
            }
        }
    }

    fn any_of(
        &mut self,
        expr: &str,
        test: &impl Fn(&str) -> Result<String, CompileError>,
    ) -> Result<String, CompileError> {
        let var = self.closure_var();
        Ok(format!(
            "(IF type::is_array({expr}) {{ array::any({expr}, |{var}| {}) }} ELSE {{ {} }})",
            test(&var)?,
            test(expr)?
        ))
    }
}

fn resolve(
    resolver: &dyn FieldResolver,
    path: &AttrPath,
    element: Option<&str>,
) -> Result<ResolvedField, CompileError> {
    if element.is_some() {
        ElementResolver.resolve(path)
    } else {
        resolver.resolve(path)
    }
    .map_err(CompileError)
}

/// Inside `attr[...]`, names are keys of each element.
struct ElementResolver;

impl FieldResolver for ElementResolver {
    fn resolve(&self, path: &AttrPath) -> Result<ResolvedField, String> {
        let mut segments = vec![path.attr.clone()];
        segments.extend(path.sub_attr.clone());
        Ok(ResolvedField::Data {
            segments,
            case_exact: false,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use idm_proto::filter::parse;

    /// Every attribute lives in `data`, case-insensitively.
    struct AnyData;

    impl FieldResolver for AnyData {
        fn resolve(&self, path: &AttrPath) -> Result<ResolvedField, String> {
            let mut segments = vec![path.attr.clone()];
            segments.extend(path.sub_attr.clone());
            Ok(ResolvedField::Data {
                segments,
                case_exact: false,
            })
        }
    }

    #[test]
    fn request_text_reaches_the_query_only_as_parameters() {
        let filter = parse(
            r#"x-DELETE eq "'; REMOVE TABLE object; --" or (a.b co "⟩ OR true" and not (c[d sw "$type"])) or e pr"#,
        )
        .unwrap();
        let compiled = compile(&filter, &AnyData).unwrap();
        for hostile in ["x-DELETE", "REMOVE", "⟩", "$type", "\"", "'; "] {
            assert!(
                !compiled.sql.contains(hostile),
                "{hostile} spliced into {}",
                compiled.sql
            );
        }
        let bound: Vec<String> = compiled.params.values().map(Value::to_string).collect();
        assert!(
            bound.iter().any(|v| v.contains("remove table object")),
            "values are bound (lower-cased): {bound:?}"
        );
        assert!(
            bound.iter().any(|v| v.contains("x-DELETE")),
            "names are bound too: {bound:?}"
        );
    }

    #[test]
    fn only_plain_identifiers_can_be_written_as_idioms() {
        for hostile in [
            "sn;", "a b", "data`x", "⟨x⟩", "x-y", "1a", "", "sn.x", "$p0",
        ] {
            assert!(Identifier::new(hostile).is_none(), "{hostile}");
        }
        struct Declared;
        impl FieldResolver for Declared {
            fn resolve(&self, path: &AttrPath) -> Result<ResolvedField, String> {
                let name = Identifier::new(&path.attr).ok_or("not declared")?;
                Ok(ResolvedField::Property {
                    name,
                    case_exact: true,
                })
            }
        }
        let compiled = compile(&parse(r#"sn eq "Doe""#).unwrap(), &Declared).unwrap();
        assert_eq!(compiled.sql, "data.sn = $p0");
    }

    #[test]
    fn operators_that_need_a_string_or_number_refuse_other_values() {
        assert!(compile(&parse("a co 5").unwrap(), &AnyData).is_err());
        assert!(compile(&parse("a gt true").unwrap(), &AnyData).is_err());
    }
}
