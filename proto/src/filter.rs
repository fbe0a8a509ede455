//! The SCIM 2.0 filter grammar (RFC 7644 §3.4.2.2).
//!
//! [`parse`] turns a filter string such as
//! `userName eq "bjensen" and emails[type eq "work" and value co "@example.com"]`
//! into a [`Filter`] tree; [`Filter`]'s `Display` prints it back in a
//! canonical form that parses to the same tree.
//!
//! The parser is a small tokenizer followed by recursive descent. Errors carry
//! the 0-based *character* offset of the problem. `and`/`or` chains become one
//! n-ary node (`a and b and c` is [`Filter::And`] of three), so walking a chain
//! is a loop, not recursion per term. Inputs are limited to
//! [`MAX_FILTER_LEN`] bytes, [`MAX_TERMS`] comparisons and presence tests and
//! [`MAX_DEPTH`] levels of nesting, all counted by the parser itself: no tree
//! it returns is larger, so every consumer (printing, the SCIM rewrite, the
//! SurrealQL compiler, the LDAP filter) may recurse on it safely.

use std::fmt;
use std::str::FromStr;

/// Longest accepted filter, in bytes.
pub const MAX_FILTER_LEN: usize = 8 * 1024;

/// Most comparisons and presence tests (`attr op value`, `attr pr`, also
/// inside value filters) in one filter.
pub const MAX_TERMS: usize = 256;

/// Deepest accepted nesting: the most `and`, `or`, `not` and value-filter
/// (`attr[...]`) nodes on any path from the root of the parsed tree to a
/// term (see [`Filter::depth`]), and the most parentheses open at once.
///
/// Small on purpose: consumers recurse once per level, and the SurrealQL a
/// filter compiles to must stay within SurrealDB's parser limits (the store
/// tests run the deepest accepted filters against a real store).
pub const MAX_DEPTH: usize = 8;

/// A parsed SCIM filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// `a and b and …`: every operand matches. The parser builds it with two
    /// or more operands, none of them itself an `And` (chains are flattened).
    And(Vec<Filter>),
    /// `a or b or …`: some operand matches. Two or more operands, none of
    /// them itself an `Or`.
    Or(Vec<Filter>),
    /// `not (inner)`.
    Not(Box<Filter>),
    /// `attr pr`: the attribute has a non-empty value.
    Present(AttrPath),
    /// `attr op value`.
    Compare(AttrPath, CompareOp, Value),
    /// `attr[inner]`, e.g. `emails[type eq "work" and value co "@x"]`.
    ///
    /// The attribute paths inside `inner` are relative to `attr` (`type`
    /// above means `emails.type`). Value filters do not nest, and the
    /// trailing `].sub` form is not accepted (it only exists in PATCH paths).
    ValuePath(AttrPath, Box<Filter>),
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    /// `eq`: equal.
    Eq,
    /// `ne`: not equal.
    Ne,
    /// `co`: contains.
    Co,
    /// `sw`: starts with.
    Sw,
    /// `ew`: ends with.
    Ew,
    /// `gt`: greater than.
    Gt,
    /// `ge`: greater than or equal.
    Ge,
    /// `lt`: less than.
    Lt,
    /// `le`: less than or equal.
    Le,
}

/// A comparison value: a JSON literal other than an array or object.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A JSON number.
    Number(serde_json::Number),
    /// A JSON string (already unescaped).
    String(String),
}

/// An attribute path: optional schema URN, attribute name, optional
/// sub-attribute.
///
/// `urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value`
/// has `urn` `Some("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User")`,
/// `attr` `"manager"` and `sub_attr` `Some("value")`. Names keep the case
/// they were written in (SCIM attribute names are case-insensitive; compare
/// them accordingly).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AttrPath {
    /// Schema URN, without the `:` that separates it from the attribute.
    pub urn: Option<String>,
    /// Attribute name.
    pub attr: String,
    /// Sub-attribute name (after the `.`).
    pub sub_attr: Option<String>,
}

/// Why a filter did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid filter at position {position}: {message}")]
pub struct FilterError {
    /// 0-based character (not byte) offset into the input. At the end of the
    /// input this is the input's length in characters.
    pub position: usize,
    /// What is wrong, in words.
    pub message: String,
}

impl FilterError {
    fn at(position: usize, message: impl Into<String>) -> Self {
        Self {
            position,
            message: message.into(),
        }
    }
}

/// Parses a SCIM filter.
///
/// Keywords (`and`, `or`, `not`, `pr`, the operators, `true`, `false`,
/// `null`) are case-insensitive. `not` binds tighter than `and`, which binds
/// tighter than `or`; a chain of one operator, parenthesised or not, is one
/// n-ary node.
///
/// Fails on more than [`MAX_FILTER_LEN`] bytes, [`MAX_TERMS`] terms or
/// [`MAX_DEPTH`] levels of nesting, naming the limit.
pub fn parse(input: &str) -> Result<Filter, FilterError> {
    if input.len() > MAX_FILTER_LEN {
        return Err(FilterError::at(
            0,
            format!(
                "filter is too long ({} bytes, the maximum is {MAX_FILTER_LEN})",
                input.len()
            ),
        ));
    }
    let tokens = tokenize(input)?;
    if tokens.is_empty() {
        return Err(FilterError::at(0, "empty filter"));
    }
    let mut parser = Parser {
        tokens,
        index: 0,
        end: input.chars().count(),
        depth: 0,
        terms: 0,
        in_value_path: false,
    };
    let filter = parser.parse_or()?.filter;
    parser.expect_closer(Closer::End)?;
    Ok(filter)
}

impl FromStr for Filter {
    type Err = FilterError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse(s)
    }
}

impl Filter {
    /// Calls `f` on every attribute path in the filter, in order of
    /// appearance, so it can be inspected or rewritten in place.
    ///
    /// For a [`Filter::ValuePath`] the outer path is visited first, then the
    /// paths of the inner filter, which are relative to the outer attribute
    /// (in `emails[type eq "work"]`, `f` sees `emails` and then `type`).
    pub fn walk_attrs_mut(&mut self, f: &mut impl FnMut(&mut AttrPath)) {
        match self {
            Filter::And(operands) | Filter::Or(operands) => {
                for operand in operands {
                    operand.walk_attrs_mut(f);
                }
            }
            Filter::Not(inner) => inner.walk_attrs_mut(f),
            Filter::Present(path) | Filter::Compare(path, _, _) => f(path),
            Filter::ValuePath(path, inner) => {
                f(path);
                inner.walk_attrs_mut(f);
            }
        }
    }
}

impl Filter {
    /// `self and other`, flattened: operands that are themselves `And`s are
    /// spliced in, so the result never has an `And` operand.
    pub fn and(self, other: Filter) -> Filter {
        let mut operands = match self {
            Filter::And(operands) => operands,
            single => vec![single],
        };
        match other {
            Filter::And(more) => operands.extend(more),
            single => operands.push(single),
        }
        Filter::And(operands)
    }

    /// `self or other`, flattened like [`Filter::and`].
    pub fn or(self, other: Filter) -> Filter {
        let mut operands = match self {
            Filter::Or(operands) => operands,
            single => vec![single],
        };
        match other {
            Filter::Or(more) => operands.extend(more),
            single => operands.push(single),
        }
        Filter::Or(operands)
    }

    /// The most `and`, `or`, `not` and value-filter nodes on a path from this
    /// node to a term: 0 for a term, at most [`MAX_DEPTH`] for a parsed filter.
    pub fn depth(&self) -> usize {
        match self {
            Filter::And(operands) | Filter::Or(operands) => {
                1 + operands.iter().map(Filter::depth).max().unwrap_or(0)
            }
            Filter::Not(inner) | Filter::ValuePath(_, inner) => 1 + inner.depth(),
            Filter::Present(_) | Filter::Compare(..) => 0,
        }
    }

    /// How many comparisons and presence tests the filter holds: at most
    /// [`MAX_TERMS`] for a parsed filter.
    pub fn terms(&self) -> usize {
        match self {
            Filter::And(operands) | Filter::Or(operands) => {
                operands.iter().map(Filter::terms).sum()
            }
            Filter::Not(inner) | Filter::ValuePath(_, inner) => inner.terms(),
            Filter::Present(_) | Filter::Compare(..) => 1,
        }
    }
}

/// Prints the canonical form: lower-case keywords, single spaces, JSON
/// literals, `not (...)`, and parentheses around any `and`/`or` operand that
/// is itself an `and`/`or`, e.g. `(a eq 1 and b pr) or not (c sw "z")`.
/// A parsed filter prints to text that parses to the same tree.
impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Filter::And(operands) => write_operands(f, operands, " and "),
            Filter::Or(operands) => write_operands(f, operands, " or "),
            Filter::Not(inner) => write!(f, "not ({inner})"),
            Filter::Present(path) => write!(f, "{path} pr"),
            Filter::Compare(path, op, value) => write!(f, "{path} {op} {value}"),
            Filter::ValuePath(path, inner) => write!(f, "{path}[{inner}]"),
        }
    }
}

/// Writes the operands of an `and`/`or`, parenthesising those that are
/// themselves `and`/`or` (in a parsed filter, always the other operator).
fn write_operands(f: &mut fmt::Formatter<'_>, operands: &[Filter], separator: &str) -> fmt::Result {
    for (index, operand) in operands.iter().enumerate() {
        if index > 0 {
            f.write_str(separator)?;
        }
        match operand {
            Filter::And(..) | Filter::Or(..) => write!(f, "({operand})")?,
            _ => write!(f, "{operand}")?,
        }
    }
    Ok(())
}

impl CompareOp {
    /// Every operator, in the order of RFC 7644 table 3.
    pub const ALL: [CompareOp; 9] = [
        CompareOp::Eq,
        CompareOp::Ne,
        CompareOp::Co,
        CompareOp::Sw,
        CompareOp::Ew,
        CompareOp::Gt,
        CompareOp::Ge,
        CompareOp::Lt,
        CompareOp::Le,
    ];

    /// The lower-case keyword: `"eq"`, `"ne"`, ….
    pub fn as_str(&self) -> &'static str {
        match self {
            CompareOp::Eq => "eq",
            CompareOp::Ne => "ne",
            CompareOp::Co => "co",
            CompareOp::Sw => "sw",
            CompareOp::Ew => "ew",
            CompareOp::Gt => "gt",
            CompareOp::Ge => "ge",
            CompareOp::Lt => "lt",
            CompareOp::Le => "le",
        }
    }

    /// The operator for a keyword, ignoring case.
    fn from_keyword(word: &str) -> Option<CompareOp> {
        CompareOp::ALL
            .into_iter()
            .find(|op| word.eq_ignore_ascii_case(op.as_str()))
    }
}

impl fmt::Display for CompareOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Value {
    /// The value as a JSON value.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Number(n) => serde_json::Value::Number(n.clone()),
            Value::String(s) => serde_json::Value::String(s.clone()),
        }
    }
}

/// Prints the value as a JSON literal (strings quoted and escaped).
impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("null"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Number(n) => write!(f, "{n}"),
            Value::String(s) => f.write_str(&serde_json::to_string(s).map_err(|_| fmt::Error)?),
        }
    }
}

impl AttrPath {
    /// The attribute name followed by the sub-attribute name, if any (the URN
    /// is not included).
    pub fn segments(&self) -> Vec<&str> {
        let mut segments = vec![self.attr.as_str()];
        segments.extend(self.sub_attr.as_deref());
        segments
    }
}

/// Prints `urn:...:attr.sub` (URN and sub-attribute only when present).
impl fmt::Display for AttrPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(urn) = &self.urn {
            write!(f, "{urn}:")?;
        }
        f.write_str(&self.attr)?;
        if let Some(sub) = &self.sub_attr {
            write!(f, ".{sub}")?;
        }
        Ok(())
    }
}

/// The largest filters [`parse`] accepts, for tests that every consumer
/// (printing, the SCIM rewrite, the SurrealQL compiler, the LDAP filter)
/// handles them: long chains, the deepest nesting of `and`/`or`, `not` and
/// value filters, and both at once. Terms use the attribute names `a`
/// (single name), `a.b` (sub-attribute) and, for value filters, `x[…]`.
#[doc(hidden)]
pub mod extremes {
    use super::{MAX_DEPTH, MAX_TERMS};

    /// A term, cycling through the operators and name shapes.
    pub fn term(i: usize) -> String {
        const TERMS: [&str; 8] = [
            "a pr",
            r#"a.b ne "x""#,
            r#"a co "x""#,
            "a gt 1",
            r#"a.b eq "X""#,
            "a.b pr",
            r#"a sw "x""#,
            "a le 2.5",
        ];
        TERMS[i % TERMS.len()].to_string()
    }

    /// `n` terms joined by `op`.
    pub fn chain(op: &str, n: usize) -> String {
        (0..n)
            .map(term)
            .collect::<Vec<_>>()
            .join(&format!(" {op} "))
    }

    /// `depth` levels of `and`/`or` alternating, each a term and a group,
    /// around `innermost` (which counts as a level if it is a chain).
    pub fn alternating(depth: usize, innermost: &str) -> String {
        let mut filter = innermost.to_string();
        for level in 0..depth {
            let op = if level.is_multiple_of(2) { "or" } else { "and" };
            filter = format!("{} {op} ({filter})", term(level));
        }
        filter
    }

    /// `depth` nested `not (…)` around `inner`.
    pub fn nots(depth: usize, inner: &str) -> String {
        format!("{}{inner}{}", "not (".repeat(depth), ")".repeat(depth))
    }

    /// A balanced tree, `branching` operands per node, alternating `and` and
    /// `or`, as deep as `depth` and with at most `terms` terms.
    pub fn balanced(branching: usize, depth: usize, terms: usize) -> String {
        /// The filter and whether it is a chain (needs parentheses inside
        /// another chain).
        fn build(
            branching: usize,
            depth: usize,
            budget: &mut usize,
            level: usize,
        ) -> (String, bool) {
            if depth == 0 || *budget <= 1 {
                *budget = budget.saturating_sub(1);
                return (term(*budget), false);
            }
            let op = if level.is_multiple_of(2) {
                " and "
            } else {
                " or "
            };
            let mut operands = Vec::new();
            while operands.len() < branching && *budget > 0 {
                let (operand, is_chain) = build(branching, depth - 1, budget, level + 1);
                operands.push(if is_chain {
                    format!("({operand})")
                } else {
                    operand
                });
            }
            let is_chain = operands.len() > 1;
            (operands.join(op), is_chain)
        }
        let mut budget = terms;
        build(branching, depth, &mut budget, 0).0
    }

    /// Every shape at the limits: each parses, with at most [`MAX_TERMS`]
    /// terms and [`MAX_DEPTH`] levels.
    pub fn accepted() -> Vec<String> {
        let d = MAX_DEPTH;
        let mut filters = vec![
            chain("and", MAX_TERMS),
            chain("or", MAX_TERMS),
            alternating(d - 1, &chain("and", 2)),
            alternating(d - 1, &chain("or", MAX_TERMS - (d - 1))),
            alternating(d - 1, &chain("and", MAX_TERMS - (d - 1))),
            nots(d, &term(1)),
            nots(d - 1, &chain("or", MAX_TERMS)),
            format!("{}a pr{}", "(".repeat(d), ")".repeat(d)),
        ];
        // Value filters at every height, `not` and sub-attributes inside.
        for inside in 0..d {
            let inner = alternating(
                inside.saturating_sub(1),
                &nots(inside.min(1), r#"a.b ne "x""#),
            );
            let value_filter = format!("x[{inner}]");
            filters.push(alternating(d - 1 - inside, &value_filter));
        }
        filters.push(format!(
            "x[{}]",
            alternating(d - 2, &chain("and", MAX_TERMS - (d - 2)))
        ));
        for branching in [2, 3, 4, 6, 16, 31, 32, 33, 64, MAX_TERMS] {
            filters.push(balanced(branching, d, MAX_TERMS));
        }
        filters
    }
}

// ---------------------------------------------------------------------------
// Tokenizer

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    LParen,
    RParen,
    LBracket,
    RBracket,
    /// A quoted string, unescaped.
    Str(String),
    /// Anything else up to whitespace, a bracket, a parenthesis or a quote:
    /// an attribute path, a keyword or an unquoted literal. Its meaning
    /// depends on where it appears, so it is classified by the parser.
    Word(String),
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    /// Character offset of the token's first character.
    pos: usize,
}

impl Token {
    fn describe(&self) -> String {
        match &self.tok {
            Tok::LParen => "\"(\"".to_owned(),
            Tok::RParen => "\")\"".to_owned(),
            Tok::LBracket => "\"[\"".to_owned(),
            Tok::RBracket => "\"]\"".to_owned(),
            Tok::Str(s) => format!("string {}", serde_json::Value::from(s.as_str())),
            Tok::Word(w) => format!("\"{w}\""),
        }
    }

    fn is_word(&self, keyword: &str) -> bool {
        matches!(&self.tok, Tok::Word(w) if w.eq_ignore_ascii_case(keyword))
    }
}

type Chars<'a> = std::iter::Peekable<std::iter::Enumerate<std::str::Chars<'a>>>;

fn tokenize(input: &str) -> Result<Vec<Token>, FilterError> {
    let mut tokens = Vec::new();
    let mut chars: Chars<'_> = input.chars().enumerate().peekable();
    while let Some(&(pos, c)) = chars.peek() {
        let tok = match c {
            c if c.is_whitespace() => {
                chars.next();
                continue;
            }
            '(' => Tok::LParen,
            ')' => Tok::RParen,
            '[' => Tok::LBracket,
            ']' => Tok::RBracket,
            '"' => {
                chars.next();
                tokens.push(Token {
                    tok: Tok::Str(lex_string(&mut chars, pos)?),
                    pos,
                });
                continue;
            }
            _ => {
                let mut word = String::new();
                while let Some(&(_, c)) = chars.peek() {
                    if c.is_whitespace() || matches!(c, '(' | ')' | '[' | ']' | '"') {
                        break;
                    }
                    word.push(c);
                    chars.next();
                }
                tokens.push(Token {
                    tok: Tok::Word(word),
                    pos,
                });
                continue;
            }
        };
        chars.next();
        tokens.push(Token { tok, pos });
    }
    Ok(tokens)
}

/// Reads a JSON string body; the opening quote (at `start`) is consumed.
fn lex_string(chars: &mut Chars<'_>, start: usize) -> Result<String, FilterError> {
    let unterminated = || FilterError::at(start, "unterminated string (missing closing '\"')");
    let mut out = String::new();
    loop {
        let (pos, c) = chars.next().ok_or_else(unterminated)?;
        match c {
            '"' => return Ok(out),
            '\\' => {
                let (_, escape) = chars.next().ok_or_else(unterminated)?;
                let unescaped = match escape {
                    '"' => '"',
                    '\\' => '\\',
                    '/' => '/',
                    'b' => '\u{8}',
                    'f' => '\u{c}',
                    'n' => '\n',
                    'r' => '\r',
                    't' => '\t',
                    'u' => lex_unicode_escape(chars, pos)?,
                    other => {
                        return Err(FilterError::at(
                            pos,
                            format!("invalid escape \"\\{other}\" in string"),
                        ));
                    }
                };
                out.push(unescaped);
            }
            c => out.push(c),
        }
    }
}

/// Reads the rest of a `\uXXXX` escape (and the low half of a surrogate
/// pair); `pos` is the position of the backslash.
fn lex_unicode_escape(chars: &mut Chars<'_>, pos: usize) -> Result<char, FilterError> {
    let unpaired = || FilterError::at(pos, "invalid unicode escape: unpaired surrogate");
    let high = hex4(chars, pos)?;
    let code = match high {
        0xD800..=0xDBFF => {
            let backslash = chars.next().map(|(_, c)| c);
            let u = chars.next().map(|(_, c)| c);
            if backslash != Some('\\') || u != Some('u') {
                return Err(unpaired());
            }
            let low = hex4(chars, pos)?;
            if !(0xDC00..=0xDFFF).contains(&low) {
                return Err(unpaired());
            }
            0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00)
        }
        0xDC00..=0xDFFF => return Err(unpaired()),
        _ => high,
    };
    char::from_u32(code).ok_or_else(unpaired)
}

fn hex4(chars: &mut Chars<'_>, pos: usize) -> Result<u32, FilterError> {
    let mut value = 0;
    for _ in 0..4 {
        let digit = chars
            .next()
            .and_then(|(_, c)| c.to_digit(16))
            .ok_or_else(|| {
                FilterError::at(
                    pos,
                    "invalid unicode escape: expected 4 hex digits after \"\\u\"",
                )
            })?;
        value = value * 16 + digit;
    }
    Ok(value)
}

// ---------------------------------------------------------------------------
// Parser

const EXPECTED_ATTR: &str = "an attribute name, \"not\" or \"(\"";
const EXPECTED_OP: &str = "a comparison operator (eq, ne, co, sw, ew, gt, ge, lt, le, pr)";
const EXPECTED_VALUE: &str = "a value (a string, number, true, false or null)";

/// What must follow a complete (sub-)filter.
#[derive(Clone, Copy)]
enum Closer {
    /// The end of the input.
    End,
    /// `)` matching the `(` at this position.
    Paren(usize),
    /// `]` matching the `[` at this position.
    Bracket(usize),
}

struct Parser {
    tokens: Vec<Token>,
    index: usize,
    /// Length of the input in characters, the position of end-of-input errors.
    end: usize,
    /// Parentheses and brackets open at this point.
    depth: usize,
    /// Comparisons and presence tests so far.
    terms: usize,
    in_value_path: bool,
}

/// A parsed (sub-)filter and its [`Filter::depth`].
struct Parsed {
    filter: Filter,
    depth: usize,
}

impl Parsed {
    fn term(filter: Filter) -> Self {
        Parsed { filter, depth: 0 }
    }
}

/// `node` (a `not` or value filter at `pos`) over an operand of depth
/// `inner_depth`, if that stays within [`MAX_DEPTH`].
fn nested(node: Filter, inner_depth: usize, pos: usize) -> Result<Parsed, FilterError> {
    let depth = inner_depth + 1;
    if depth > MAX_DEPTH {
        return Err(too_deep(pos));
    }
    Ok(Parsed {
        filter: node,
        depth,
    })
}

fn too_deep(pos: usize) -> FilterError {
    FilterError::at(
        pos,
        format!("filter is nested too deeply (the maximum depth is {MAX_DEPTH})"),
    )
}

fn is_and(filter: &Filter) -> bool {
    matches!(filter, Filter::And(_))
}

fn is_or(filter: &Filter) -> bool {
    matches!(filter, Filter::Or(_))
}

/// The operands of one `and` or `or` chain, collected flat: an operand that
/// is the same operator (a parenthesised chain) is spliced in.
struct Chain {
    operands: Vec<Filter>,
    /// Depth of the deepest operand.
    depth: usize,
    same: fn(&Filter) -> bool,
    /// Position of the first operator, where a too-deep chain is reported.
    pos: Option<usize>,
}

impl Chain {
    fn new(first: Parsed, same: fn(&Filter) -> bool) -> Self {
        let mut chain = Chain {
            operands: Vec::new(),
            depth: 0,
            same,
            pos: None,
        };
        chain.add(first);
        chain
    }

    fn add(&mut self, operand: Parsed) {
        if (self.same)(&operand.filter) {
            // Its operands are one level shallower than it.
            self.depth = self.depth.max(operand.depth.saturating_sub(1));
            if let Filter::And(more) | Filter::Or(more) = operand.filter {
                self.operands.extend(more);
            }
        } else {
            self.depth = self.depth.max(operand.depth);
            self.operands.push(operand.filter);
        }
    }

    /// Adds the operand after the operator at `pos`.
    fn push(&mut self, operand: Parsed, pos: usize) -> Result<(), FilterError> {
        let pos = *self.pos.get_or_insert(pos);
        self.add(operand);
        if self.depth + 1 > MAX_DEPTH {
            return Err(too_deep(pos));
        }
        Ok(())
    }

    fn finish(self, node: fn(Vec<Filter>) -> Filter) -> Parsed {
        Parsed {
            filter: node(self.operands),
            depth: self.depth + 1,
        }
    }
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.index)
    }

    fn peek_second(&self) -> Option<&Token> {
        self.tokens.get(self.index + 1)
    }

    fn bump(&mut self) {
        self.index += 1;
    }

    /// "expected X, found Y" at `found`, or "unexpected end of filter,
    /// expected X" when the input is exhausted.
    fn expected(&self, what: &str, found: Option<&Token>) -> FilterError {
        match found {
            Some(token) => FilterError::at(
                token.pos,
                format!("expected {what}, found {}", token.describe()),
            ),
            None => FilterError::at(
                self.end,
                format!("unexpected end of filter, expected {what}"),
            ),
        }
    }

    /// `or_expr = and_expr *("or" and_expr)`, as one n-ary `Or`.
    fn parse_or(&mut self) -> Result<Parsed, FilterError> {
        let first = self.parse_and()?;
        if !self.peek().is_some_and(|t| t.is_word("or")) {
            return Ok(first);
        }
        let mut chain = Chain::new(first, is_or);
        while let Some(token) = self.peek().filter(|t| t.is_word("or")) {
            let pos = token.pos;
            self.bump();
            let operand = self.parse_and()?;
            chain.push(operand, pos)?;
        }
        Ok(chain.finish(Filter::Or))
    }

    /// `and_expr = atom *("and" atom)`, as one n-ary `And`.
    fn parse_and(&mut self) -> Result<Parsed, FilterError> {
        let first = self.parse_atom()?;
        if !self.peek().is_some_and(|t| t.is_word("and")) {
            return Ok(first);
        }
        let mut chain = Chain::new(first, is_and);
        while let Some(token) = self.peek().filter(|t| t.is_word("and")) {
            let pos = token.pos;
            self.bump();
            let operand = self.parse_atom()?;
            chain.push(operand, pos)?;
        }
        Ok(chain.finish(Filter::And))
    }

    /// `atom = "(" or_expr ")" / "not" "(" or_expr ")" / attrPath "[" or_expr "]"
    ///       / attrPath "pr" / attrPath compareOp value`
    fn parse_atom(&mut self) -> Result<Parsed, FilterError> {
        let Some(token) = self.peek().cloned() else {
            return Err(self.expected(EXPECTED_ATTR, None));
        };
        match token.tok {
            Tok::LParen => {
                self.bump();
                self.parse_group(token.pos)
            }
            // `not` followed by an operator is an attribute called "not".
            Tok::Word(ref word)
                if word.eq_ignore_ascii_case("not") && !self.second_is_operator() =>
            {
                self.bump();
                match self.peek() {
                    Some(Token {
                        tok: Tok::LParen,
                        pos,
                    }) => {
                        let open = *pos;
                        self.bump();
                        let inner = self.parse_group(open)?;
                        nested(Filter::Not(Box::new(inner.filter)), inner.depth, token.pos)
                    }
                    other => Err(self.expected("\"(\" after \"not\"", other)),
                }
            }
            // So are "and" and "or"; otherwise they are misplaced keywords.
            Tok::Word(ref word) if is_and_or(word) && !self.second_is_operator() => {
                Err(self.expected(EXPECTED_ATTR, Some(&token)))
            }
            Tok::Word(ref word) => {
                self.bump();
                let path = parse_attr_path(word, token.pos)?;
                self.parse_after_attr(path, token.pos)
            }
            _ => Err(self.expected(EXPECTED_ATTR, Some(&token))),
        }
    }

    fn second_is_operator(&self) -> bool {
        matches!(self.peek_second(), Some(Token { tok: Tok::Word(w), .. })
            if w.eq_ignore_ascii_case("pr") || CompareOp::from_keyword(w).is_some())
    }

    /// The rest of a parenthesised filter whose `(` at `open` is consumed.
    fn parse_group(&mut self, open: usize) -> Result<Parsed, FilterError> {
        self.enter(open)?;
        let inner = self.parse_or()?;
        self.expect_closer(Closer::Paren(open))?;
        self.depth -= 1;
        Ok(inner)
    }

    /// Opens a parenthesis or bracket: bounds the parser's own recursion,
    /// which redundant parentheses (`((a pr))`) deepen without deepening the
    /// tree.
    fn enter(&mut self, pos: usize) -> Result<(), FilterError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(too_deep(pos));
        }
        Ok(())
    }

    /// Counts one comparison or presence test starting at `pos`.
    fn term(&mut self, pos: usize) -> Result<(), FilterError> {
        self.terms += 1;
        if self.terms > MAX_TERMS {
            return Err(FilterError::at(
                pos,
                format!("filter has more than {MAX_TERMS} terms (comparisons and presence tests)"),
            ));
        }
        Ok(())
    }

    /// What follows an attribute path: a value filter, `pr`, or an operator
    /// and a value.
    /// and a value. `start` is the position of the attribute path.
    fn parse_after_attr(&mut self, path: AttrPath, start: usize) -> Result<Parsed, FilterError> {
        let Some(token) = self.peek().cloned() else {
            return Err(self.expected(EXPECTED_OP, None));
        };
        match token.tok {
            Tok::LBracket => self.parse_value_path(path, token.pos),
            Tok::Word(ref word) if word.eq_ignore_ascii_case("pr") => {
                self.bump();
                if let Some(next) = self.peek()
                    && looks_like_value(next)
                {
                    return Err(FilterError::at(next.pos, "\"pr\" takes no value"));
                }
                self.term(start)?;
                Ok(Parsed::term(Filter::Present(path)))
            }
            Tok::Word(ref word) => match CompareOp::from_keyword(word) {
                Some(op) => {
                    self.bump();
                    let value = self.parse_value()?;
                    self.term(start)?;
                    Ok(Parsed::term(Filter::Compare(path, op, value)))
                }
                None => Err(self.expected(EXPECTED_OP, Some(&token))),
            },
            _ => Err(self.expected(EXPECTED_OP, Some(&token))),
        }
    }

    /// `attr[...]`, with the `[` at `open` not yet consumed.
    fn parse_value_path(&mut self, path: AttrPath, open: usize) -> Result<Parsed, FilterError> {
        if self.in_value_path {
            return Err(FilterError::at(
                open,
                "value filters (\"[...]\") cannot be nested",
            ));
        }
        self.bump();
        self.enter(open)?;
        self.in_value_path = true;
        let inner = self.parse_or()?;
        self.expect_closer(Closer::Bracket(open))?;
        self.in_value_path = false;
        self.depth -= 1;
        if let Some(Token {
            tok: Tok::Word(word),
            pos,
        }) = self.peek()
            && word.starts_with('.')
        {
            return Err(FilterError::at(
                *pos,
                "a sub-attribute after a value filter (\"].sub\") is only allowed in PATCH paths, not in filters",
            ));
        }
        nested(
            Filter::ValuePath(path, Box::new(inner.filter)),
            inner.depth,
            open,
        )
    }

    fn parse_value(&mut self) -> Result<Value, FilterError> {
        let token = self.peek().cloned();
        let value = match &token {
            Some(Token {
                tok: Tok::Str(s), ..
            }) => Value::String(s.clone()),
            Some(Token {
                tok: Tok::Word(word),
                pos,
            }) => parse_literal(word, *pos)?,
            other => return Err(self.expected(EXPECTED_VALUE, other.as_ref())),
        };
        self.bump();
        Ok(value)
    }

    /// Consumes the token that must follow a complete filter.
    fn expect_closer(&mut self, closer: Closer) -> Result<(), FilterError> {
        let token = self.peek();
        let error = match (closer, token) {
            (Closer::End, None) => return Ok(()),
            (
                Closer::Paren(_),
                Some(Token {
                    tok: Tok::RParen, ..
                }),
            )
            | (
                Closer::Bracket(_),
                Some(Token {
                    tok: Tok::RBracket, ..
                }),
            ) => {
                self.bump();
                return Ok(());
            }
            (Closer::Paren(open), None) => {
                FilterError::at(open, "unbalanced parenthesis: \"(\" is never closed")
            }
            (Closer::Bracket(open), None) => {
                FilterError::at(open, "unbalanced bracket: \"[\" is never closed")
            }
            (
                _,
                Some(Token {
                    tok: Tok::RParen,
                    pos,
                }),
            ) => FilterError::at(*pos, "unbalanced parenthesis: unexpected \")\""),
            (
                _,
                Some(Token {
                    tok: Tok::RBracket,
                    pos,
                }),
            ) => FilterError::at(*pos, "unexpected \"]\""),
            (Closer::End, found) => self.expected("\"and\" or \"or\"", found),
            (Closer::Paren(_), found) => self.expected("\"and\", \"or\" or \")\"", found),
            (Closer::Bracket(_), found) => self.expected("\"and\", \"or\" or \"]\"", found),
        };
        Err(error)
    }
}

fn is_and_or(word: &str) -> bool {
    word.eq_ignore_ascii_case("and") || word.eq_ignore_ascii_case("or")
}

/// Whether a token after `pr` looks like someone tried to give it a value.
fn looks_like_value(token: &Token) -> bool {
    match &token.tok {
        Tok::Str(_) => true,
        Tok::Word(w) => {
            ["true", "false", "null"]
                .iter()
                .any(|k| w.eq_ignore_ascii_case(k))
                || w.starts_with(|c: char| c == '-' || c.is_ascii_digit())
        }
        _ => false,
    }
}

/// An unquoted literal: `true`, `false`, `null` (any case) or a JSON number.
fn parse_literal(word: &str, pos: usize) -> Result<Value, FilterError> {
    if word.eq_ignore_ascii_case("true") {
        Ok(Value::Bool(true))
    } else if word.eq_ignore_ascii_case("false") {
        Ok(Value::Bool(false))
    } else if word.eq_ignore_ascii_case("null") {
        Ok(Value::Null)
    } else if word.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
        if !is_json_number(word) {
            return Err(FilterError::at(pos, format!("invalid number \"{word}\"")));
        }
        serde_json::Number::from_str(word)
            .map(Value::Number)
            .map_err(|_| FilterError::at(pos, format!("number \"{word}\" is out of range")))
    } else {
        Err(FilterError::at(
            pos,
            format!(
                "expected {EXPECTED_VALUE}, found \"{word}\" (strings must be in double quotes)"
            ),
        ))
    }
}

/// `-? (0 / [1-9][0-9]*) ("." [0-9]+)? ([eE] [+-]? [0-9]+)?`
fn is_json_number(s: &str) -> bool {
    fn digits(b: &[u8]) -> usize {
        b.iter().take_while(|c| c.is_ascii_digit()).count()
    }
    let b = s.as_bytes();
    let mut i = usize::from(b.first() == Some(&b'-'));
    match b.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => i += digits(&b[i..]),
        _ => return false,
    }
    if b.get(i) == Some(&b'.') {
        let n = digits(&b[i + 1..]);
        if n == 0 {
            return false;
        }
        i += 1 + n;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let n = digits(&b[i..]);
        if n == 0 {
            return false;
        }
        i += n;
    }
    i == b.len()
}

/// Parses `[urn:...:]attr[.sub]` from a word starting at character `pos`.
fn parse_attr_path(word: &str, pos: usize) -> Result<AttrPath, FilterError> {
    let (urn, rest, rest_pos) = if word
        .get(..4)
        .is_some_and(|p| p.eq_ignore_ascii_case("urn:"))
    {
        // The URN runs up to the last ':'; a name never contains one.
        let colon = word.rfind(':').unwrap_or(3);
        let urn = &word[..colon];
        if colon < 5 {
            return Err(FilterError::at(
                pos,
                format!("incomplete schema URN in attribute path \"{word}\""),
            ));
        }
        (
            Some(urn.to_owned()),
            &word[colon + 1..],
            pos + urn.chars().count() + 1,
        )
    } else {
        (None, word, pos)
    };
    if rest.is_empty() {
        return Err(FilterError::at(
            rest_pos,
            format!("missing attribute name after schema URN \"{word}\""),
        ));
    }
    let (attr, sub_attr) = match rest.split_once('.') {
        Some((attr, sub)) => (attr, Some(sub)),
        None => (rest, None),
    };
    check_name(attr, rest_pos, word)?;
    if let Some(sub) = sub_attr {
        let sub_pos = rest_pos + attr.chars().count() + 1;
        if let Some(dot) = sub.find('.') {
            return Err(FilterError::at(
                sub_pos + sub[..dot].chars().count(),
                format!("attribute path \"{word}\" has more than one sub-attribute"),
            ));
        }
        check_name(sub, sub_pos, word)?;
    }
    Ok(AttrPath {
        urn,
        attr: attr.to_owned(),
        sub_attr: sub_attr.map(str::to_owned),
    })
}

/// `ATTRNAME = (ALPHA / "_" / "$") *("-" / "_" / DIGIT / ALPHA)`
fn check_name(name: &str, pos: usize, word: &str) -> Result<(), FilterError> {
    let mut chars = name.chars().enumerate();
    match chars.next() {
        None => Err(FilterError::at(
            pos,
            format!("empty attribute name in \"{word}\""),
        )),
        Some((_, c)) if !(c.is_ascii_alphabetic() || c == '_' || c == '$') => Err(FilterError::at(
            pos,
            format!(
                "expected an attribute name, found \"{word}\" (names start with a letter, \"_\" or \"$\")"
            ),
        )),
        Some(_) => match chars.find(|&(_, c)| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        {
            Some((i, c)) => Err(FilterError::at(
                pos + i,
                format!("invalid character {c:?} in attribute name \"{word}\""),
            )),
            None => Ok(()),
        },
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    fn p(attr: &str) -> AttrPath {
        let (attr, sub) = match attr.split_once('.') {
            Some((a, s)) => (a, Some(s.to_owned())),
            None => (attr, None),
        };
        AttrPath {
            urn: None,
            attr: attr.to_owned(),
            sub_attr: sub,
        }
    }

    fn cmp(attr: &str, op: CompareOp, value: Value) -> Filter {
        Filter::Compare(p(attr), op, value)
    }

    fn s(v: &str) -> Value {
        Value::String(v.to_owned())
    }

    fn n(v: i64) -> Value {
        Value::Number(v.into())
    }

    fn and(l: Filter, r: Filter) -> Filter {
        Filter::And(vec![l, r])
    }

    fn or(l: Filter, r: Filter) -> Filter {
        Filter::Or(vec![l, r])
    }

    fn not(f: Filter) -> Filter {
        Filter::Not(Box::new(f))
    }

    fn err(input: &str) -> FilterError {
        match parse(input) {
            Ok(f) => panic!("{input:?} parsed as {f:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn every_operator() {
        for op in CompareOp::ALL {
            let input = format!("userName {} \"x\"", op.as_str());
            assert_eq!(parse(&input).unwrap(), cmp("userName", op, s("x")));
            let upper = format!("userName {} \"x\"", op.as_str().to_uppercase());
            assert_eq!(parse(&upper).unwrap(), cmp("userName", op, s("x")));
            assert_eq!(parse(&input).unwrap().to_string(), input);
        }
        assert_eq!(parse("title pr").unwrap(), Filter::Present(p("title")));
        assert_eq!(parse("title PR").unwrap(), Filter::Present(p("title")));
    }

    #[test]
    fn precedence() {
        let a = || cmp("a", CompareOp::Eq, n(1));
        let b = || cmp("b", CompareOp::Eq, n(2));
        let c = || cmp("c", CompareOp::Eq, n(3));
        assert_eq!(
            parse("a eq 1 or b eq 2 and c eq 3").unwrap(),
            or(a(), and(b(), c()))
        );
        assert_eq!(
            parse("a eq 1 and b eq 2 or c eq 3").unwrap(),
            or(and(a(), b()), c())
        );
        assert_eq!(
            parse("a eq 1 and (b eq 2 or c eq 3)").unwrap(),
            and(a(), or(b(), c()))
        );
        // A chain of one operator is one node, parenthesised or not.
        assert_eq!(
            parse("a eq 1 and b eq 2 and c eq 3").unwrap(),
            Filter::And(vec![a(), b(), c()])
        );
        assert_eq!(
            parse("a eq 1 or b eq 2 or c eq 3").unwrap(),
            Filter::Or(vec![a(), b(), c()])
        );
        assert_eq!(
            parse("a eq 1 or (b eq 2 or c eq 3)").unwrap(),
            Filter::Or(vec![a(), b(), c()])
        );
        assert_eq!(
            parse("((a eq 1 and b eq 2) and (c eq 3 and a eq 1)) and b eq 2").unwrap(),
            Filter::And(vec![a(), b(), c(), a(), b()])
        );
        // not binds tightest.
        assert_eq!(
            parse("not (a eq 1) and b eq 2").unwrap(),
            and(not(a()), b())
        );
        assert_eq!(parse("NOT(a eq 1 or b eq 2)").unwrap(), not(or(a(), b())));
    }

    #[test]
    fn nested_parentheses() {
        let a = || cmp("a", CompareOp::Eq, n(1));
        assert_eq!(parse("((((a eq 1))))").unwrap(), a());
        assert_eq!(
            parse("((a eq 1 or (a eq 1)) and not ((a eq 1)))").unwrap(),
            and(or(a(), a()), not(a()))
        );
        assert_eq!(parse(" ( a eq 1 )\t").unwrap(), a());
    }

    #[test]
    fn paths() {
        assert_eq!(
            parse("name.familyName co \"O'Malley\"").unwrap(),
            cmp("name.familyName", CompareOp::Co, s("O'Malley"))
        );
        assert_eq!(
            parse("_id eq \"1\"").unwrap(),
            cmp("_id", CompareOp::Eq, s("1"))
        );
        assert_eq!(
            parse("members.$ref pr").unwrap(),
            Filter::Present(p("members.$ref"))
        );
        assert_eq!(parse("x-y_z2 pr").unwrap(), Filter::Present(p("x-y_z2")));

        let core = "urn:ietf:params:scim:schemas:core:2.0:User:name.familyName";
        let Filter::Present(path) = parse(&format!("{core} pr")).unwrap() else {
            panic!()
        };
        assert_eq!(
            path.urn.as_deref(),
            Some("urn:ietf:params:scim:schemas:core:2.0:User")
        );
        assert_eq!(path.attr, "name");
        assert_eq!(path.sub_attr.as_deref(), Some("familyName"));
        assert_eq!(path.segments(), ["name", "familyName"]);
        assert_eq!(path.to_string(), core);

        let enterprise =
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber";
        let f = parse(&format!("{enterprise} eq \"701984\"")).unwrap();
        let Filter::Compare(path, CompareOp::Eq, Value::String(v)) = &f else {
            panic!()
        };
        assert_eq!(
            path.urn.as_deref(),
            Some("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User")
        );
        assert_eq!(path.attr, "employeeNumber");
        assert_eq!(path.sub_attr, None);
        assert_eq!(path.segments(), ["employeeNumber"]);
        assert_eq!(v, "701984");
        assert_eq!(f.to_string(), format!("{enterprise} eq \"701984\""));

        let upper = parse("URN:ietf:params:scim:schemas:core:2.0:Group:displayName pr").unwrap();
        let Filter::Present(path) = upper else {
            panic!()
        };
        assert_eq!(
            path.urn.as_deref(),
            Some("URN:ietf:params:scim:schemas:core:2.0:Group")
        );
    }

    #[test]
    fn value_paths() {
        let f = parse("emails[type eq \"work\" and value co \"@example.com\"] or ims[type eq \"xmpp\" and (value co \"@foo.com\" or not (primary eq true))]").unwrap();
        assert_eq!(
            f,
            or(
                Filter::ValuePath(
                    p("emails"),
                    Box::new(and(
                        cmp("type", CompareOp::Eq, s("work")),
                        cmp("value", CompareOp::Co, s("@example.com"))
                    ))
                ),
                Filter::ValuePath(
                    p("ims"),
                    Box::new(and(
                        cmp("type", CompareOp::Eq, s("xmpp")),
                        or(
                            cmp("value", CompareOp::Co, s("@foo.com")),
                            not(cmp("primary", CompareOp::Eq, Value::Bool(true)))
                        )
                    ))
                )
            )
        );
        assert_eq!(parse(&f.to_string()).unwrap(), f);
        assert_eq!(
            parse("userType eq \"Employee\" and emails[type eq \"work\"]")
                .unwrap()
                .to_string(),
            "userType eq \"Employee\" and emails[type eq \"work\"]"
        );
    }

    #[test]
    fn case_insensitive_keywords() {
        let f = parse("a Eq TRUE AnD NoT (b pR) oR c LE Null").unwrap();
        assert_eq!(
            f,
            or(
                and(
                    cmp("a", CompareOp::Eq, Value::Bool(true)),
                    not(Filter::Present(p("b")))
                ),
                cmp("c", CompareOp::Le, Value::Null)
            )
        );
        assert_eq!(f.to_string(), "(a eq true and not (b pr)) or c le null");
    }

    #[test]
    fn literals() {
        let value = |lit: &str| match parse(&format!("a eq {lit}")).unwrap() {
            Filter::Compare(_, _, v) => v,
            other => panic!("{other:?}"),
        };
        assert_eq!(value("true"), Value::Bool(true));
        assert_eq!(value("False"), Value::Bool(false));
        assert_eq!(value("NULL"), Value::Null);
        assert_eq!(value("0"), n(0));
        assert_eq!(value("42"), n(42));
        assert_eq!(value("-7"), n(-7));
        assert_eq!(
            value("18446744073709551615"),
            Value::Number(u64::MAX.into())
        );
        assert_eq!(value("1.5").to_json(), serde_json::json!(1.5));
        assert_eq!(value("-0.25e2").to_json(), serde_json::json!(-25.0));
        assert_eq!(value("2E+3").to_json(), serde_json::json!(2000.0));
        assert_eq!(value("1e-3").to_json(), serde_json::json!(0.001));
        assert_eq!(value("\"\"").to_json(), serde_json::json!(""));
        assert_eq!(value("\"Zoë ⟨x⟩\""), s("Zoë ⟨x⟩"));
        assert_eq!(
            value(r#""a\"b\\c\/d\b\f\n\r\t""#),
            s("a\"b\\c/d\u{8}\u{c}\n\r\t")
        );
        assert_eq!(value(r#""\u00e9\u00C9\u0000""#), s("éÉ\0"));
        assert_eq!(value(r#""\ud83d\ude00 ok""#), s("😀 ok"));
        assert_eq!(
            value("\"(a eq 1) [x] and or not\""),
            s("(a eq 1) [x] and or not")
        );
        assert_eq!(s("x").to_json(), serde_json::json!("x"));
        assert_eq!(Value::Null.to_json(), serde_json::Value::Null);

        // Display escapes what needs escaping and keeps unicode as is.
        let f = cmp("a", CompareOp::Eq, s("q\"b\\n\n\u{1}Zoë"));
        assert_eq!(f.to_string(), r#"a eq "q\"b\\n\n\u0001Zoë""#);
        assert_eq!(parse(&f.to_string()).unwrap(), f);
    }

    #[test]
    fn injection_looking_strings_are_plain_values() {
        let f = parse(r#"userName eq "x\"; DELETE object; --""#).unwrap();
        assert_eq!(
            f,
            cmp("userName", CompareOp::Eq, s("x\"; DELETE object; --"))
        );
        let f = parse(r#"userName eq "' OR 1=1 --" and x pr"#).unwrap();
        assert_eq!(
            f,
            and(
                cmp("userName", CompareOp::Eq, s("' OR 1=1 --")),
                Filter::Present(p("x"))
            )
        );
        assert!(parse("userName eq x; DELETE object").is_err());
    }

    #[test]
    fn round_trip() {
        let filters = [
            r#"userName eq "bjensen""#,
            r#"name.familyName co "O'Malley""#,
            r#"userName sw "J""#,
            r#"urn:ietf:params:scim:schemas:core:2.0:User:userName sw "J""#,
            "title pr",
            r#"meta.lastModified gt "2011-05-13T04:42:34Z""#,
            r#"meta.lastModified ge "2011-05-13T04:42:34Z""#,
            r#"meta.lastModified lt "2011-05-13T04:42:34Z""#,
            r#"meta.lastModified le "2011-05-13T04:42:34Z""#,
            r#"title pr and userType eq "Employee""#,
            r#"title pr or userType eq "Intern""#,
            r#"schemas eq "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User""#,
            r#"userType eq "Employee" and (emails co "example.com" or emails.value co "example.org")"#,
            r#"userType ne "Employee" and not (emails co "example.com" or emails.value co "example.org")"#,
            r#"userType eq "Employee" and (emails.type eq "work")"#,
            r#"userType eq "Employee" and emails[type eq "work" and value co "@example.com"]"#,
            r#"emails[type eq "work" and value co "@example.com"] or ims[type eq "xmpp" and value co "@foo.com"]"#,
            "a eq 1 or b eq 2 and c eq 3",
            "(a eq 1 or b eq 2) and c eq 3",
            "a eq 1 or (b eq 2 or c eq 3)",
            "a eq 1 and (b eq 2 and c eq 3)",
            "not (not (a pr))",
            "not (a eq 1) and not (b eq 2 or c eq 3)",
            "a eq -1.5e10 or b eq 0 or c eq -0",
            "a eq 18446744073709551615 and b eq -9223372036854775808",
            "a ew null and b ne true and c eq FALSE",
            r#"displayName eq "Zoë ⟨x⟩ \u0007 \ud83d\ude00""#,
            r#"_id eq "user:1" and _rev pr and members.$ref co "/Users/""#,
            r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value eq "26118915-6090-4610-87e4-49d8ca9f808d""#,
            r#"((a eq 1 and (b eq 2 or not (c eq 3))) or d[e eq "f" or (g lt 1 and h gt 2)])"#,
            "not eq 1 or not pr",
            "and eq 1 and or pr or not (pr pr)",
        ];
        for input in filters {
            let parsed = parse(input).unwrap();
            let printed = parsed.to_string();
            let reparsed = parse(&printed).unwrap_or_else(|e| panic!("{input} → {printed}: {e}"));
            assert_eq!(reparsed, parsed, "{input} → {printed}");
            // The canonical form is a fixed point.
            assert_eq!(reparsed.to_string(), printed);
        }
    }

    #[test]
    fn display_canonical_form() {
        let canonical = |input: &str| parse(input).unwrap().to_string();
        assert_eq!(canonical("a EQ \"x\""), "a eq \"x\"");
        assert_eq!(
            canonical("(a eq 1 AND b PR) OR NOT(c sw \"z\")"),
            "(a eq 1 and b pr) or not (c sw \"z\")"
        );
        assert_eq!(
            canonical("a eq 1 or b eq 2 and c eq 3"),
            "a eq 1 or (b eq 2 and c eq 3)"
        );
        assert_eq!(
            canonical("(a pr or b pr) and c pr"),
            "(a pr or b pr) and c pr"
        );
        assert_eq!(
            canonical("((a pr and b pr) and c pr)"),
            "a pr and b pr and c pr"
        );
        assert_eq!(
            canonical("a pr and (b pr and c pr)"),
            "a pr and b pr and c pr"
        );
        assert_eq!(canonical("a eq 1.0"), "a eq 1.0");
        assert_eq!(
            canonical("emails [ type eq \"work\" ]"),
            "emails[type eq \"work\"]"
        );
    }

    #[test]
    fn walk_attrs() {
        let mut f = parse(
            r#"userName eq "x" and emails[type eq "work"] and not (name.givenName pr or urn:ietf:params:scim:schemas:core:2.0:User:title pr)"#,
        )
        .unwrap();
        let mut seen = Vec::new();
        f.walk_attrs_mut(&mut |path: &mut AttrPath| {
            seen.push(path.to_string());
            path.urn = None;
            path.attr = path.attr.to_uppercase();
        });
        assert_eq!(
            seen,
            [
                "userName",
                "emails",
                "type",
                "name.givenName",
                "urn:ietf:params:scim:schemas:core:2.0:User:title"
            ]
        );
        assert_eq!(
            f.to_string(),
            r#"USERNAME eq "x" and EMAILS[TYPE eq "work"] and not (NAME.givenName pr or TITLE pr)"#
        );
    }

    #[test]
    fn from_str() {
        let f: Filter = "a pr".parse().unwrap();
        assert_eq!(f, Filter::Present(p("a")));
        assert!("".parse::<Filter>().is_err());
    }

    #[test]
    fn errors_are_positioned() {
        let cases: &[(&str, usize, &str)] = &[
            ("", 0, "empty filter"),
            ("  \t ", 0, "empty filter"),
            (
                "userName eq",
                11,
                "unexpected end of filter, expected a value (a string, number, true, false or null)",
            ),
            (
                r#"userName equals "x""#,
                9,
                r#"expected a comparison operator (eq, ne, co, sw, ew, gt, ge, lt, le, pr), found "equals""#,
            ),
            (
                "userName",
                8,
                "unexpected end of filter, expected a comparison operator (eq, ne, co, sw, ew, gt, ge, lt, le, pr)",
            ),
            (
                "(a eq 1",
                0,
                r#"unbalanced parenthesis: "(" is never closed"#,
            ),
            (
                "a eq 1 and (b eq 2 or (c eq 3)",
                11,
                r#"unbalanced parenthesis: "(" is never closed"#,
            ),
            ("a eq 1)", 6, r#"unbalanced parenthesis: unexpected ")""#),
            ("a eq 1]", 6, r#"unexpected "]""#),
            (
                r#"a eq "unterminated"#,
                5,
                r#"unterminated string (missing closing '"')"#,
            ),
            (
                r#"a eq "ends with backslash\"#,
                5,
                r#"unterminated string (missing closing '"')"#,
            ),
            (
                "a eq 1 and",
                10,
                r#"unexpected end of filter, expected an attribute name, "not" or "(""#,
            ),
            (
                r#"emails[type eq "work""#,
                6,
                r#"unbalanced bracket: "[" is never closed"#,
            ),
            (
                r#"emails[type eq "work")"#,
                21,
                r#"unbalanced parenthesis: unexpected ")""#,
            ),
            ("(a eq 1]", 7, r#"unexpected "]""#),
            ("a eq 01x", 5, r#"invalid number "01x""#),
            ("a eq 1.", 5, r#"invalid number "1.""#),
            ("a eq -", 5, r#"invalid number "-""#),
            ("a eq 1e400", 5, r#"number "1e400" is out of range"#),
            ("not a eq 1", 4, r#"expected "(" after "not", found "a""#),
            (
                "not",
                3,
                r#"unexpected end of filter, expected "(" after "not""#,
            ),
            (r#"a eq "x\q""#, 7, r#"invalid escape "\q" in string"#),
            (
                r#"a eq "\u12G4""#,
                6,
                r#"invalid unicode escape: expected 4 hex digits after "\u""#,
            ),
            (
                r#"a eq "\ud800x""#,
                6,
                "invalid unicode escape: unpaired surrogate",
            ),
            (
                r#"a eq "\udc00""#,
                6,
                "invalid unicode escape: unpaired surrogate",
            ),
            // Positions count characters, not bytes.
            (
                r#"a eq "ë⟨⟩" b"#,
                11,
                r#"expected "and" or "or", found "b""#,
            ),
            (
                "a eq bjensen",
                5,
                r#"expected a value (a string, number, true, false or null), found "bjensen" (strings must be in double quotes)"#,
            ),
            (
                "a eq (1)",
                5,
                r#"expected a value (a string, number, true, false or null), found "(""#,
            ),
            (r#"a pr "x""#, 5, r#""pr" takes no value"#),
            ("a pr 1", 5, r#""pr" takes no value"#),
            ("a pr b", 5, r#"expected "and" or "or", found "b""#),
            ("a eq 1 b eq 2", 7, r#"expected "and" or "or", found "b""#),
            (
                "(a eq 1 b eq 2)",
                8,
                r#"expected "and", "or" or ")", found "b""#,
            ),
            (
                "a eq 1 and or b pr",
                11,
                r#"expected an attribute name, "not" or "(", found "or""#,
            ),
            (
                "()",
                1,
                r#"expected an attribute name, "not" or "(", found ")""#,
            ),
            (
                r#""x" eq a"#,
                0,
                r#"expected an attribute name, "not" or "(", found string "x""#,
            ),
            (
                "1abc pr",
                0,
                r#"expected an attribute name, found "1abc" (names start with a letter, "_" or "$")"#,
            ),
            (
                "user!name pr",
                4,
                r#"invalid character '!' in attribute name "user!name""#,
            ),
            (
                "name.given.x pr",
                10,
                r#"attribute path "name.given.x" has more than one sub-attribute"#,
            ),
            ("name. pr", 5, r#"empty attribute name in "name.""#),
            (
                "foo:bar pr",
                3,
                r#"invalid character ':' in attribute name "foo:bar""#,
            ),
            (
                "urn:x:y:2.0:User: pr",
                17,
                r#"missing attribute name after schema URN "urn:x:y:2.0:User:""#,
            ),
            (
                "urn:name pr",
                0,
                r#"incomplete schema URN in attribute path "urn:name""#,
            ),
            (
                r#"emails[type eq "work"].value eq "x""#,
                22,
                r#"a sub-attribute after a value filter ("].sub") is only allowed in PATCH paths, not in filters"#,
            ),
            (
                r#"emails[type eq "work" and x[y pr]]"#,
                27,
                r#"value filters ("[...]") cannot be nested"#,
            ),
        ];
        for &(input, position, message) in cases {
            let e = err(input);
            assert_eq!(
                (e.position, e.message.as_str()),
                (position, message),
                "input: {input:?}"
            );
        }
        assert_eq!(
            err(r#"userName equals "x""#).to_string(),
            r#"invalid filter at position 9: expected a comparison operator (eq, ne, co, sw, ew, gt, ge, lt, le, pr), found "equals""#
        );
    }

    #[test]
    fn depth_limit() {
        let nested = |depth: usize| format!("{}a pr{}", "(".repeat(depth), ")".repeat(depth));
        assert_eq!(parse(&nested(MAX_DEPTH)).unwrap(), Filter::Present(p("a")));
        let e = err(&nested(MAX_DEPTH + 1));
        assert_eq!(e.position, MAX_DEPTH);
        assert_eq!(
            e.message,
            format!("filter is nested too deeply (the maximum depth is {MAX_DEPTH})")
        );

        let nots = |depth: usize| extremes::nots(depth, "a pr");
        assert_eq!(parse(&nots(MAX_DEPTH)).unwrap().depth(), MAX_DEPTH);
        assert!(
            err(&nots(MAX_DEPTH + 1))
                .message
                .contains("nested too deeply")
        );

        // `and`/`or` nesting counts without parentheses too: `a or b and c`
        // is an `or` over an `and`.
        assert_eq!(parse("a pr or b pr and c pr").unwrap().depth(), 2);
        let alternating = |depth: usize| extremes::alternating(depth - 1, "a pr and b pr");
        assert_eq!(parse(&alternating(MAX_DEPTH)).unwrap().depth(), MAX_DEPTH);
        let e = err(&alternating(MAX_DEPTH + 1));
        assert!(e.message.contains("nested too deeply"), "{e}");
        // Reported at the first operator of the chain that is too deep.
        assert_eq!(e.position, extremes::term(MAX_DEPTH - 1).len() + 1);

        // A value filter is a level, and so is `not` inside one.
        let value = |depth: usize| extremes::alternating(depth - 2, r#"x[not (y eq "1")]"#);
        assert_eq!(parse(&value(MAX_DEPTH)).unwrap().depth(), MAX_DEPTH);
        assert!(
            err(&value(MAX_DEPTH + 1))
                .message
                .contains("nested too deeply")
        );

        // Redundant parentheses and same-operator groups add no depth.
        assert_eq!(parse("((a pr and (b pr and c pr)))").unwrap().depth(), 1);

        // Hostile input far beyond the limit fails cleanly, without recursing deeply.
        let e = err(&"(".repeat(MAX_FILTER_LEN));
        assert!(e.message.contains("nested too deeply"), "{e}");
        let e = err(&"not (".repeat(MAX_FILTER_LEN / 5));
        assert!(e.message.contains("nested too deeply"), "{e}");
    }

    #[test]
    fn term_limit() {
        for op in ["and", "or"] {
            let f = parse(&extremes::chain(op, MAX_TERMS)).unwrap();
            assert_eq!(f.terms(), MAX_TERMS);
            assert_eq!(f.depth(), 1, "one flat node");
            let (Filter::And(operands) | Filter::Or(operands)) = &f else {
                panic!("{f:?}");
            };
            assert_eq!(operands.len(), MAX_TERMS);

            let over = extremes::chain(op, MAX_TERMS + 1);
            let e = err(&over);
            assert_eq!(
                e.message,
                format!("filter has more than {MAX_TERMS} terms (comparisons and presence tests)")
            );
            // At the first term past the limit.
            let last = over.rfind(&format!(" {op} ")).unwrap() + op.len() + 2;
            assert_eq!(e.position, last);

            // The attack from issue 12: as many terms as fit the length
            // limit (a thousand for `or`).
            let fit = (MAX_FILTER_LEN + op.len() + 2) / ("a pr".len() + op.len() + 2);
            let attack = vec!["a pr"; fit].join(&format!(" {op} "));
            assert!(attack.len() <= MAX_FILTER_LEN && fit > 900, "{fit}");
            assert!(err(&attack).message.contains("more than 256 terms"));
        }
        // Terms inside value filters and `not` count too.
        let inside = format!("x[{}] and not (a pr)", extremes::chain("or", MAX_TERMS));
        assert!(err(&inside).message.contains("terms"));
        let at_cap = format!("x[{}] and not (a pr)", extremes::chain("or", MAX_TERMS - 1));
        assert_eq!(parse(&at_cap).unwrap().terms(), MAX_TERMS);
    }

    #[test]
    fn every_extreme_is_accepted_and_round_trips() {
        for input in extremes::accepted() {
            let f = parse(&input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert!(f.depth() <= MAX_DEPTH, "{input}");
            assert!(f.terms() <= MAX_TERMS, "{input}");
            let printed = f.to_string();
            assert_eq!(parse(&printed).unwrap(), f, "{input} → {printed}");
        }
        // The generators reach the limits.
        let accepted = extremes::accepted();
        let parsed: Vec<Filter> = accepted.iter().map(|f| parse(f).unwrap()).collect();
        assert!(
            parsed
                .iter()
                .any(|f| f.depth() == MAX_DEPTH && f.terms() == MAX_TERMS)
        );
        assert!(parsed.iter().filter(|f| f.depth() == MAX_DEPTH).count() > 10);
    }

    /// Everything that walks a parsed filter (parsing, printing, cloning,
    /// comparing, dropping) fits a small stack at the limits, in a debug
    /// build; the server and the gateway test their own walks the same way.
    #[test]
    fn extremes_fit_a_small_stack() {
        let worker = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(|| {
                for input in extremes::accepted() {
                    let mut f = parse(&input).unwrap();
                    let copy = f.clone();
                    assert_eq!(parse(&f.to_string()).unwrap(), copy);
                    f.walk_attrs_mut(&mut |path: &mut AttrPath| path.attr.push('x'));
                    assert_ne!(f, copy);
                    let _ = format!("{f:?}");
                }
            })
            .unwrap();
        worker.join().unwrap();
    }

    #[test]
    fn builders_flatten() {
        let a = || Filter::Present(p("a"));
        let chain = a().and(a()).and(a().and(a()));
        assert_eq!(chain, Filter::And(vec![a(), a(), a(), a()]));
        let mixed = a().or(a()).and(a());
        assert_eq!(mixed, Filter::And(vec![or(a(), a()), a()]));
        assert_eq!(mixed.to_string(), "(a pr or a pr) and a pr");
        assert_eq!(mixed.depth(), 2);
        assert_eq!(mixed.terms(), 3);
    }

    #[test]
    fn length_limit() {
        let long_chain = |len: usize| {
            let mut f = String::from("a pr");
            while f.len() + " or a pr".len() <= len {
                f.push_str(" or a pr");
            }
            f
        };
        // Long flat chains are fine up to the term limit (and so is printing them).
        let f = parse(&long_chain(MAX_TERMS * 8 - 4)).unwrap();
        assert_eq!(f.terms(), MAX_TERMS);
        assert_eq!(parse(&f.to_string()).unwrap(), f);

        let too_long = format!("a eq \"{}\"", "x".repeat(MAX_FILTER_LEN));
        let e = err(&too_long);
        assert_eq!(e.position, 0);
        assert!(e.message.starts_with("filter is too long"), "{e}");
    }
}
