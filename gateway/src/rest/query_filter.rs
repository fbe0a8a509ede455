//! Wren's `_queryFilter` (Common REST's query filter grammar), translated
//! into the core's filter: a [`Filter`] tree printed in its canonical form,
//! so no text the client wrote reaches the core except as a JSON-escaped
//! literal or a validated attribute name.
//!
//! ```text
//! expr    = and-expr *("or" and-expr)
//! and-expr= not-expr *("and" not-expr)
//! not-expr= "!" primary | primary
//! primary = "(" expr ")" | "true" | "false" | pointer "pr" | pointer op value
//! op      = eq | co | sw | gt | ge | lt | le
//! value   = "string" | 'string' | number | true | false | null
//! pointer = /a/b (JSON pointer) or a bare name (a.b accepted too)
//! ```
//!
//! Bounds: the input at most [`MAX_FILTER_LEN`] bytes; [`MAX_TERMS`] terms and
//! [`MAX_DEPTH`] levels of nesting, counted while parsing (the recursion of
//! this parser is bounded by that count); pointers of at most two segments
//! whose names are `[A-Za-z_$][A-Za-z0-9_$-]*`.

use idm_proto::filter::{
    self, AttrPath, CompareOp, Filter, MAX_DEPTH, MAX_FILTER_LEN, MAX_TERMS, Value,
};

/// What a `_queryFilter` selects.
#[derive(Debug, Clone, PartialEq)]
pub enum Selection {
    /// `true` (or a filter that folds to it): every object.
    All,
    /// `false`: nothing; the core need not be asked.
    Nothing,
    Matching(Filter),
}

impl Selection {
    /// The core's filter text (`""` for everything). `Nothing` has none.
    pub fn core_filter(&self) -> Option<String> {
        match self {
            Selection::All => Some(String::new()),
            Selection::Nothing => None,
            Selection::Matching(filter) => Some(filter.to_string()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid _queryFilter at position {position}: {message}")]
pub struct QueryFilterError {
    /// 0-based byte offset.
    pub position: usize,
    pub message: String,
}

fn error(position: usize, message: impl Into<String>) -> QueryFilterError {
    QueryFilterError {
        position,
        message: message.into(),
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Open,
    Close,
    Bang,
    /// A quoted string, unescaped.
    Quoted(String),
    /// Anything else up to whitespace or a parenthesis.
    Word(String),
}

fn tokenize(input: &str) -> Result<Vec<(usize, Token)>, QueryFilterError> {
    let mut tokens = Vec::new();
    let mut chars = input.char_indices().peekable();
    while let Some(&(at, c)) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '(' => {
                chars.next();
                tokens.push((at, Token::Open));
            }
            ')' => {
                chars.next();
                tokens.push((at, Token::Close));
            }
            '!' => {
                chars.next();
                tokens.push((at, Token::Bang));
            }
            '"' | '\'' => {
                let quote = c;
                chars.next();
                let mut text = String::new();
                let mut closed = false;
                while let Some((index, c)) = chars.next() {
                    if c == quote {
                        closed = true;
                        break;
                    }
                    if c == '\\' {
                        let Some((_, escaped)) = chars.next() else {
                            return Err(error(index, "a backslash ends the filter"));
                        };
                        match escaped {
                            '"' | '\'' | '\\' | '/' => text.push(escaped),
                            'n' => text.push('\n'),
                            't' => text.push('\t'),
                            'r' => text.push('\r'),
                            'b' => text.push('\u{8}'),
                            'f' => text.push('\u{c}'),
                            'u' => {
                                let hex: String = (0..4)
                                    .filter_map(|_| chars.next())
                                    .map(|(_, c)| c)
                                    .collect();
                                let code = u32::from_str_radix(&hex, 16)
                                    .ok()
                                    .filter(|_| hex.len() == 4)
                                    .and_then(char::from_u32)
                                    .ok_or_else(|| {
                                        error(index, "\\u needs four hex digits of a character")
                                    })?;
                                text.push(code);
                            }
                            other => {
                                return Err(error(index, format!("unknown escape \\{other}")));
                            }
                        }
                    } else {
                        text.push(c);
                    }
                }
                if !closed {
                    return Err(error(at, "a quoted string is not closed"));
                }
                tokens.push((at, Token::Quoted(text)));
            }
            _ => {
                let mut word = String::new();
                while let Some(&(_, c)) = chars.peek() {
                    if c.is_whitespace() || c == '(' || c == ')' {
                        break;
                    }
                    word.push(c);
                    chars.next();
                }
                tokens.push((at, Token::Word(word)));
            }
        }
    }
    Ok(tokens)
}

/// A node while parsing: `true`/`false` fold away.
enum Node {
    Const(bool),
    Filter(Filter),
}

struct Parser {
    tokens: Vec<(usize, Token)>,
    index: usize,
    end: usize,
    depth: usize,
    terms: usize,
}

/// Parses a `_queryFilter`. Pure and bounded: fuzz it freely.
pub fn parse(input: &str) -> Result<Selection, QueryFilterError> {
    if input.len() > MAX_FILTER_LEN {
        return Err(error(
            0,
            format!("the filter is longer than {MAX_FILTER_LEN} bytes"),
        ));
    }
    let tokens = tokenize(input)?;
    if tokens.is_empty() {
        return Err(error(0, "empty filter"));
    }
    let mut parser = Parser {
        tokens,
        index: 0,
        end: input.len(),
        depth: 0,
        terms: 0,
    };
    let node = parser.or_expr()?;
    if let Some((at, _)) = parser.tokens.get(parser.index) {
        return Err(error(*at, "unexpected text after the filter"));
    }
    let selection = match node {
        Node::Const(true) => Selection::All,
        Node::Const(false) => Selection::Nothing,
        Node::Filter(filter) => Selection::Matching(filter),
    };
    // The core re-parses what it is sent: it must accept it as it is.
    if let Selection::Matching(filter) = &selection
        && filter::parse(&filter.to_string()).is_err()
    {
        return Err(error(0, "the filter is beyond idm's limits"));
    }
    Ok(selection)
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.index).map(|(_, t)| t)
    }

    fn position(&self) -> usize {
        self.tokens.get(self.index).map_or(self.end, |(at, _)| *at)
    }

    fn next(&mut self) -> Option<Token> {
        let token = self.tokens.get(self.index).map(|(_, t)| t.clone());
        self.index += 1;
        token
    }

    fn is_keyword(&self, keyword: &str) -> bool {
        matches!(self.peek(), Some(Token::Word(w)) if w.eq_ignore_ascii_case(keyword))
    }

    fn enter(&mut self) -> Result<(), QueryFilterError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(error(
                self.position(),
                format!("the filter nests deeper than {MAX_DEPTH} levels"),
            ));
        }
        Ok(())
    }

    fn or_expr(&mut self) -> Result<Node, QueryFilterError> {
        let mut node = self.and_expr()?;
        while self.is_keyword("or") {
            self.next();
            let right = self.and_expr()?;
            node = match (node, right) {
                (Node::Const(true), _) | (_, Node::Const(true)) => Node::Const(true),
                (Node::Const(false), other) | (other, Node::Const(false)) => other,
                (Node::Filter(a), Node::Filter(b)) => Node::Filter(a.or(b)),
            };
        }
        Ok(node)
    }

    fn and_expr(&mut self) -> Result<Node, QueryFilterError> {
        let mut node = self.not_expr()?;
        while self.is_keyword("and") {
            self.next();
            let right = self.not_expr()?;
            node = match (node, right) {
                (Node::Const(false), _) | (_, Node::Const(false)) => Node::Const(false),
                (Node::Const(true), other) | (other, Node::Const(true)) => other,
                (Node::Filter(a), Node::Filter(b)) => Node::Filter(a.and(b)),
            };
        }
        Ok(node)
    }

    fn not_expr(&mut self) -> Result<Node, QueryFilterError> {
        if self.peek() == Some(&Token::Bang) {
            self.next();
            self.enter()?;
            let inner = self.primary()?;
            self.depth -= 1;
            return Ok(match inner {
                Node::Const(value) => Node::Const(!value),
                Node::Filter(filter) => Node::Filter(Filter::Not(Box::new(filter))),
            });
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Node, QueryFilterError> {
        let at = self.position();
        match self.next() {
            Some(Token::Open) => {
                self.enter()?;
                let node = self.or_expr()?;
                self.depth -= 1;
                match self.next() {
                    Some(Token::Close) => Ok(node),
                    _ => Err(error(self.position(), "expected )")),
                }
            }
            Some(Token::Word(word)) => {
                let is_literal = word == "true" || word == "false";
                let next_is_operator = matches!(self.peek(), Some(Token::Word(w)) if operator(w).is_some() || w.eq_ignore_ascii_case("pr"));
                if is_literal && !next_is_operator {
                    return Ok(Node::Const(word == "true"));
                }
                let path = pointer(&word).map_err(|m| error(at, m))?;
                self.term(path)
            }
            Some(Token::Quoted(_)) => Err(error(at, "expected a field, found a string")),
            Some(Token::Close) => Err(error(at, "unexpected )")),
            Some(Token::Bang) => Err(error(at, "unexpected !")),
            None => Err(error(at, "the filter ends too early")),
        }
    }

    fn term(&mut self, path: AttrPath) -> Result<Node, QueryFilterError> {
        self.terms += 1;
        if self.terms > MAX_TERMS {
            return Err(error(
                self.position(),
                format!("the filter has more than {MAX_TERMS} terms"),
            ));
        }
        let at = self.position();
        let Some(Token::Word(op)) = self.next() else {
            return Err(error(at, "expected an operator (eq co sw gt ge lt le pr)"));
        };
        if op.eq_ignore_ascii_case("pr") {
            return Ok(Node::Filter(Filter::Present(path)));
        }
        let op = operator(&op).ok_or_else(|| {
            error(
                at,
                format!("unknown operator {op} (eq co sw gt ge lt le pr)"),
            )
        })?;
        let at = self.position();
        let value = match self.next() {
            Some(Token::Quoted(text)) => Value::String(text),
            Some(Token::Word(word)) => literal(&word).ok_or_else(|| {
                error(at, format!("{word} is not a value: quote strings (\"…\")"))
            })?,
            _ => return Err(error(at, "expected a value")),
        };
        Ok(Node::Filter(Filter::Compare(path, op, value)))
    }
}

fn operator(word: &str) -> Option<CompareOp> {
    [
        CompareOp::Eq,
        CompareOp::Co,
        CompareOp::Sw,
        CompareOp::Gt,
        CompareOp::Ge,
        CompareOp::Lt,
        CompareOp::Le,
    ]
    .into_iter()
    .find(|op| word.eq_ignore_ascii_case(op.as_str()))
}

fn literal(word: &str) -> Option<Value> {
    match word {
        "true" => Some(Value::Bool(true)),
        "false" => Some(Value::Bool(false)),
        "null" => Some(Value::Null),
        _ => serde_json::from_str::<serde_json::Number>(word)
            .ok()
            .map(Value::Number),
    }
}

/// `/a`, `/a/b`, `a` or `a.b` as an attribute path. Names are checked so
/// the printed filter means what was parsed.
pub fn pointer(text: &str) -> Result<AttrPath, String> {
    let segments: Vec<String> = match text.strip_prefix('/') {
        Some(rest) => rest
            .split('/')
            .map(|s| s.replace("~1", "/").replace("~0", "~"))
            .collect(),
        None => text.split('.').map(str::to_string).collect(),
    };
    if segments.len() > 2 {
        return Err(format!("{text}: at most two levels (/a/b) can be queried"));
    }
    for segment in &segments {
        if !is_name(segment) {
            return Err(format!("{text:?} is not a field"));
        }
    }
    let mut segments = segments.into_iter();
    Ok(AttrPath {
        urn: None,
        attr: segments.next().unwrap_or_default(),
        sub_attr: segments.next(),
    })
}

/// A field name idm can query: `[A-Za-z_$][A-Za-z0-9_$-]*`, at most 128 bytes.
pub fn is_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 128
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == '$')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '$' | '-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn core(input: &str) -> String {
        match parse(input).unwrap() {
            Selection::All => "<all>".into(),
            Selection::Nothing => "<nothing>".into(),
            Selection::Matching(f) => f.to_string(),
        }
    }

    #[test]
    fn wrens_grammar() {
        assert_eq!(core("true"), "<all>");
        assert_eq!(core("false"), "<nothing>");
        assert_eq!(core(r#"userName eq "bjensen""#), r#"userName eq "bjensen""#);
        assert_eq!(
            core(r#"/userName eq "bjensen""#),
            r#"userName eq "bjensen""#
        );
        assert_eq!(
            core(r#"/name/familyName sw 'Jen'"#),
            r#"name.familyName sw "Jen""#
        );
        assert_eq!(
            core(r#"(/sn co "a" or /sn co "b") and !(/mail pr) and /age ge 18"#),
            r#"(sn co "a" or sn co "b") and not (mail pr) and age ge 18"#
        );
        assert_eq!(core(r#"/active eq true and true"#), "active eq true");
        assert_eq!(core(r#"/a eq 1 or true"#), "<all>");
        assert_eq!(core(r#"/a eq 1 and false"#), "<nothing>");
        assert_eq!(core("!true"), "<nothing>");
        assert_eq!(core("/_id eq \"x\""), "_id eq \"x\"");
        assert_eq!(core(r#"/x lt -1.5e3"#), "x lt -1500.0");
    }

    #[test]
    fn hostile_quoting_stays_a_literal() {
        let f = core(r#"userName eq "x\" or true or \"""#);
        assert_eq!(f, r#"userName eq "x\" or true or \"""#);
        // It is one comparison whose value holds the quotes.
        let Selection::Matching(Filter::Compare(_, _, Value::String(s))) =
            parse(r#"userName eq "x\" or true or \"""#).unwrap()
        else {
            panic!()
        };
        assert_eq!(s, r#"x" or true or ""#);
        let Selection::Matching(Filter::Compare(_, _, Value::String(s))) =
            parse(r#"userName eq 'a\' OR 1=1; DELETE user; --'"#).unwrap()
        else {
            panic!()
        };
        assert_eq!(s, "a' OR 1=1; DELETE user; --");
    }

    #[test]
    fn bad_filters_name_the_position() {
        for bad in [
            "",
            "(",
            "userName",
            "userName eq",
            "userName eq bjensen",
            "userName ne \"x\"",
            r#"userName eq "x"#,
            r#"userName eq "\q""#,
            r#"/a/b/c eq 1"#,
            r#"/a;DROP eq 1"#,
            r#"user"Name eq 1"#,
            r#"a eq 1 b"#,
            "and",
            ")",
        ] {
            assert!(parse(bad).is_err(), "{bad} parsed");
        }
        assert_eq!(parse("a eq 1 )").unwrap_err().position, 7);
    }

    #[test]
    fn limits_are_counted() {
        let deep = format!(
            "{}a pr{}",
            "(".repeat(MAX_DEPTH + 1),
            ")".repeat(MAX_DEPTH + 1)
        );
        assert!(parse(&deep).is_err());
        let nots = format!("{}a pr{}", "!(".repeat(100), ")".repeat(100));
        assert!(parse(&nots).unwrap_err().message.contains("deeper"));
        assert!(parse("!!a pr").is_err());
        let parens = "(".repeat(MAX_FILTER_LEN);
        assert!(parse(&parens).is_err());
        let many = vec!["a pr"; MAX_TERMS + 1].join(" or ");
        assert!(parse(&many).is_err());
        let ok = vec!["a pr"; MAX_TERMS].join(" or ");
        assert!(parse(&ok).is_ok());
        assert!(parse(&"a".repeat(MAX_FILTER_LEN + 1)).is_err());
    }
}
