//! Turns a Wren-style script into the body of a function that `return`s the
//! script's completion value, so the script can be compiled once and called
//! per record.
//!
//! Wren scripts yield the value of the last expression statement (eval
//! semantics), and only `eval` computes completion values in JavaScript:
//! calling it per record would reparse the script every time. rquickjs offers
//! no safe way (and the workspace forbids `unsafe`) to keep a compiled global
//! script around: only modules, which have no completion value. So the
//! script's tail is rewritten into `return (…)` instead, and QuickJS compiles
//! the result once as an ordinary function.
//!
//! This is not a JavaScript parser. It tokenises (strings, templates, regular
//! expressions and comments are skipped correctly) and understands just
//! enough statement structure to find the last statement of a statement list:
//! after a `;`, or at a line break where automatic semicolon insertion must
//! apply. It handles a trailing expression, `if`/`else if`/`else` with block
//! branches, bare blocks and a trailing `throw`. Every rule errs towards
//! "cannot tell" ([`Rewrite::Unsure`]), which makes the engine evaluate the
//! original text with `eval` on each call instead: slower, but exact. The
//! parentheses around the returned tail make a wrong split a syntax error
//! (which also falls back) rather than a different meaning. Inserted text
//! never contains a line break, so line numbers in errors match the script.

/// What [`completion_body`] made of a script.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Rewrite {
    /// A function body returning the script's completion value.
    Body(String),
    /// The script contains a `return` outside any function. JavaScript
    /// refuses that in a script; the function this module wraps scripts into
    /// would quietly accept it, so it is refused here, at compile time.
    TopLevelReturn { line: u32 },
    /// A shape this module is not sure about: run the original through `eval`.
    Unsure,
}

/// Rewrites `code` into a function body returning its completion value.
pub(super) fn completion_body(code: &str) -> Rewrite {
    let mut lexer = Lexer::new(code);
    let Some(tokens) = lexer.run() else {
        return Rewrite::Unsure;
    };
    if let Some(offset) = lexer.top_level_return {
        let before = code.get(..offset).unwrap_or("");
        let line = before.matches('\n').count() + 1;
        return Rewrite::TopLevelReturn {
            line: u32::try_from(line).unwrap_or(u32::MAX),
        };
    }
    let count = tokens.len();
    let mut rewriter = Rewriter {
        src: code,
        tokens,
        edits: Vec::new(),
    };
    if rewriter.list(0, count, 0).is_err() {
        return Rewrite::Unsure;
    }
    let mut edits = rewriter.edits;
    edits.sort_by_key(|edit| edit.0);
    let mut body = String::with_capacity(code.len() + 16);
    let mut at = 0;
    for (offset, text) in edits {
        let Some(chunk) = code.get(at..offset) else {
            return Rewrite::Unsure;
        };
        body.push_str(chunk);
        body.push_str(text);
        at = offset;
    }
    body.push_str(code.get(at..).unwrap_or(""));
    Rewrite::Body(body)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Ident,
    Number,
    Str,
    Template,
    Regex,
    Punct,
}

#[derive(Debug, Clone)]
struct Token {
    kind: Kind,
    start: usize,
    end: usize,
    /// A line terminator (or a comment holding one) precedes the token: the
    /// precondition of automatic semicolon insertion.
    newline_before: bool,
    /// Bracket nesting level; brackets carry the level outside them.
    depth: u32,
    /// For an opening bracket, the index of its closing partner.
    partner: usize,
    /// A `)` closing the head of `if`/`for`/`while`/…: a statement follows,
    /// so neither an expression ends here nor can a regex be a division.
    control: bool,
}

/// Words after which an expression cannot have ended.
const KEYWORDS: &[&str] = &[
    "await",
    "break",
    "case",
    "catch",
    "class",
    "const",
    "continue",
    "debugger",
    "default",
    "delete",
    "do",
    "else",
    "enum",
    "export",
    "extends",
    "finally",
    "for",
    "function",
    "if",
    "import",
    "in",
    "instanceof",
    "new",
    "return",
    "super",
    "switch",
    "throw",
    "try",
    "typeof",
    "var",
    "void",
    "while",
    "with",
    "yield",
    // Contextual words that may begin a longer construct.
    "async",
    "get",
    "let",
    "of",
    "set",
    "static",
];

/// First words of statements whose completion value this module does not
/// compute: declarations (their value comes from an earlier statement) and
/// anything else that cannot be wrapped in `return (…)`.
const UNWRAPPABLE: &[&str] = &[
    "async", "break", "case", "catch", "class", "const", "continue", "debugger", "default", "do",
    "else", "export", "finally", "for", "function", "import", "let", "return", "switch", "try",
    "var", "while", "with",
];

/// Words before a `/` that make it the start of a regular expression.
const REGEX_AFTER: &[&str] = &[
    "await",
    "case",
    "delete",
    "do",
    "else",
    "in",
    "instanceof",
    "new",
    "of",
    "return",
    "throw",
    "typeof",
    "void",
    "yield",
];

const CONTROL_HEADS: &[&str] = &["if", "for", "while", "with", "switch", "catch"];

/// Deeper nesting (of blocks rewritten, or of templates inside templates) is
/// left to `eval`: both walks recurse, and no sane transform nests this deep.
const MAX_NESTING: u32 = 64;

struct Lexer<'a> {
    src: &'a str,
    pos: usize,
    /// Function bodies around the current position.
    function_depth: usize,
    /// Template substitutions around the current position.
    template_depth: u32,
    /// Offset of the first `return` outside any function body.
    top_level_return: Option<usize>,
}

impl<'a> Lexer<'a> {
    fn new(src: &'a str) -> Self {
        Lexer {
            src,
            pos: 0,
            function_depth: 0,
            template_depth: 0,
            top_level_return: None,
        }
    }

    fn run(&mut self) -> Option<Vec<Token>> {
        let tokens = self.tokens(false)?;
        (self.pos >= self.src.len()).then_some(tokens)
    }

    fn peek(&self) -> Option<char> {
        self.src.get(self.pos..)?.chars().next()
    }

    fn peek_at(&self, ahead: usize) -> Option<char> {
        self.src.get(self.pos..)?.chars().nth(ahead)
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn text(&self, token: &Token) -> &'a str {
        self.src.get(token.start..token.end).unwrap_or("")
    }

    /// Lexes until the end of input or, inside a template substitution, until
    /// its closing `}` (consumed).
    fn tokens(&mut self, in_template: bool) -> Option<Vec<Token>> {
        let mut tokens: Vec<Token> = Vec::new();
        // Opening brackets: token index, and whether it opens a function body.
        let mut open: Vec<(usize, bool)> = Vec::new();
        loop {
            let newline_before = self.skip_blank()?;
            let Some(c) = self.peek() else {
                return (open.is_empty() && !in_template).then_some(tokens);
            };
            let start = self.pos;
            let depth = u32::try_from(open.len()).ok()?;
            let mut token = Token {
                kind: Kind::Punct,
                start,
                end: start,
                newline_before,
                depth,
                partner: 0,
                control: false,
            };
            match c {
                '"' | '\'' => {
                    self.bump();
                    self.string(c)?;
                    token.kind = Kind::Str;
                }
                '`' => {
                    self.bump();
                    self.template()?;
                    token.kind = Kind::Template;
                }
                '0'..='9' => {
                    self.number();
                    token.kind = Kind::Number;
                }
                '.' if self.peek_at(1).is_some_and(|d| d.is_ascii_digit()) => {
                    self.number();
                    token.kind = Kind::Number;
                }
                '/' if self.regex_allowed(tokens.last()) => {
                    self.bump();
                    self.regex()?;
                    token.kind = Kind::Regex;
                }
                '(' | '[' | '{' => {
                    self.bump();
                    let prev = tokens.last();
                    if c == '(' {
                        token.control = prev.is_some_and(|prev| {
                            prev.kind == Kind::Ident && CONTROL_HEADS.contains(&self.text(prev))
                        });
                    }
                    // Every function body follows its parameters' `)` or an
                    // arrow; no block does (control heads aside).
                    let function_body = c == '{'
                        && prev.is_some_and(|prev| {
                            prev.kind == Kind::Punct
                                && ((self.text(prev) == ")" && !prev.control)
                                    || self.text(prev) == "=>")
                        });
                    if function_body {
                        self.function_depth += 1;
                    }
                    open.push((tokens.len(), function_body));
                }
                ')' | ']' | '}' => {
                    let Some((opener, function_body)) = open.pop() else {
                        if c == '}' && in_template {
                            self.bump();
                            return Some(tokens);
                        }
                        return None;
                    };
                    self.bump();
                    if function_body {
                        self.function_depth = self.function_depth.saturating_sub(1);
                    }
                    let expected = match c {
                        ')' => '(',
                        ']' => '[',
                        _ => '{',
                    };
                    let index = tokens.len();
                    let opening = tokens.get_mut(opener)?;
                    if !self.src.get(opening.start..)?.starts_with(expected) {
                        return None;
                    }
                    opening.partner = index;
                    token.control = opening.control;
                    token.depth = u32::try_from(open.len()).ok()?;
                }
                c if is_ident_char(c) => {
                    self.ident();
                    token.kind = Kind::Ident;
                    let word = self.src.get(start..self.pos);
                    if word == Some("return")
                        && self.function_depth == 0
                        && self.top_level_return.is_none()
                        && !self.is_property_name(tokens.last())
                    {
                        self.top_level_return = Some(start);
                    }
                }
                _ => self.punct(),
            }
            token.end = self.pos;
            tokens.push(token);
        }
    }

    /// Skips white space and comments, telling whether a line break was seen.
    fn skip_blank(&mut self) -> Option<bool> {
        let mut newline = false;
        while let Some(c) = self.peek() {
            if is_line_break(c) {
                newline = true;
                self.bump();
            } else if c.is_whitespace() || c == '\u{feff}' {
                self.bump();
            } else if c == '/' && self.peek_at(1) == Some('/') {
                while self.peek().is_some_and(|c| !is_line_break(c)) {
                    self.bump();
                }
            } else if c == '/' && self.peek_at(1) == Some('*') {
                self.pos += 2;
                let rest = self.src.get(self.pos..)?;
                let end = rest.find("*/")?;
                newline |= rest.get(..end)?.chars().any(is_line_break);
                self.pos += end + 2;
            } else {
                break;
            }
        }
        Some(newline)
    }

    fn string(&mut self, quote: char) -> Option<()> {
        loop {
            match self.bump()? {
                '\\' => {
                    self.bump()?;
                }
                c if c == quote => return Some(()),
                '\n' | '\r' => return None,
                _ => {}
            }
        }
    }

    fn template(&mut self) -> Option<()> {
        loop {
            match self.bump()? {
                '\\' => {
                    self.bump()?;
                }
                '`' => return Some(()),
                '$' if self.peek() == Some('{') => {
                    self.bump();
                    self.template_depth += 1;
                    if self.template_depth > MAX_NESTING {
                        return None;
                    }
                    self.tokens(true)?;
                    self.template_depth -= 1;
                }
                _ => {}
            }
        }
    }

    fn regex(&mut self) -> Option<()> {
        let mut in_class = false;
        loop {
            match self.bump()? {
                '\\' => {
                    self.bump()?;
                }
                '[' => in_class = true,
                ']' => in_class = false,
                '/' if !in_class => break,
                c if is_line_break(c) => return None,
                _ => {}
            }
        }
        self.ident();
        Some(())
    }

    fn number(&mut self) {
        let mut prev = ' ';
        while let Some(c) = self.peek() {
            let sign_of_exponent = (c == '+' || c == '-') && (prev == 'e' || prev == 'E');
            if c.is_ascii_alphanumeric() || c == '_' || c == '.' || sign_of_exponent {
                self.bump();
                prev = c;
            } else {
                break;
            }
        }
    }

    fn ident(&mut self) {
        while let Some(c) = self.peek() {
            if c == '\\' {
                self.bump();
                self.bump();
            } else if is_ident_char(c) || c.is_ascii_digit() {
                self.bump();
            } else {
                break;
            }
        }
    }

    fn punct(&mut self) {
        let rest = self.src.get(self.pos..).unwrap_or("");
        let optional_chain = rest.starts_with("?.")
            && !rest
                .as_bytes()
                .get(2)
                .is_some_and(|next| next.is_ascii_digit());
        let len = if rest.starts_with("...") {
            3
        } else if rest.starts_with("++")
            || rest.starts_with("--")
            || rest.starts_with("=>")
            || optional_chain
        {
            2
        } else {
            rest.chars().next().map_or(1, char::len_utf8)
        };
        self.pos += len;
    }

    /// Whether the word just lexed names a property (`x.return`,
    /// `{return: 1}`) rather than being a keyword.
    fn is_property_name(&mut self, prev: Option<&Token>) -> bool {
        if prev.is_some_and(|prev| matches!(self.text(prev), "." | "?.")) {
            return true;
        }
        let here = self.pos;
        let key = self.skip_blank().is_some() && self.peek() == Some(':');
        self.pos = here;
        key
    }

    fn regex_allowed(&self, prev: Option<&Token>) -> bool {
        let Some(prev) = prev else { return true };
        match prev.kind {
            Kind::Ident => REGEX_AFTER.contains(&self.text(prev)),
            Kind::Number | Kind::Str | Kind::Template | Kind::Regex => false,
            Kind::Punct => match self.text(prev) {
                ")" => prev.control,
                "]" | "++" | "--" => false,
                _ => true,
            },
        }
    }
}

fn is_line_break(c: char) -> bool {
    matches!(c, '\n' | '\r' | '\u{2028}' | '\u{2029}')
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphabetic()
        || c == '_'
        || c == '$'
        || c == '\\'
        || (!c.is_ascii() && !c.is_whitespace() && c != '\u{feff}')
}

/// The script shape is outside what this module handles.
struct Unsure;

/// Words that, at the start of a line, still belong to the statement before.
const NOT_STATEMENT_START: &[&str] = &[
    "case",
    "catch",
    "default",
    "else",
    "extends",
    "finally",
    "in",
    "instanceof",
    "of",
    "while",
];

struct Rewriter<'a> {
    src: &'a str,
    tokens: Vec<Token>,
    edits: Vec<(usize, &'static str)>,
}

impl Rewriter<'_> {
    fn token(&self, i: usize) -> Result<&Token, Unsure> {
        self.tokens.get(i).ok_or(Unsure)
    }

    fn text(&self, i: usize) -> &str {
        self.tokens
            .get(i)
            .and_then(|token| self.src.get(token.start..token.end))
            .unwrap_or("")
    }

    fn is(&self, i: usize, kind: Kind, text: &str) -> bool {
        self.tokens.get(i).is_some_and(|token| token.kind == kind) && self.text(i) == text
    }

    /// Rewrites the statement list `tokens[from..to]`, whose statements sit
    /// at bracket level `depth`.
    fn list(&mut self, from: usize, to: usize, depth: u32) -> Result<(), Unsure> {
        if depth > MAX_NESTING {
            return Err(Unsure);
        }
        let mut end = to;
        while end > from && self.is(end - 1, Kind::Punct, ";") {
            end -= 1;
        }
        if end == from {
            // Nothing runs, so the completion value is undefined, which is
            // what falling off the end of the function returns.
            return Ok(());
        }
        let mut tail = from;
        for k in (from + 1..end).rev() {
            if self.boundary(k, depth)? {
                tail = k;
                break;
            }
        }
        self.statement(tail, end)
    }

    /// Whether a statement certainly starts at token `k`.
    fn boundary(&self, k: usize, depth: u32) -> Result<bool, Unsure> {
        let token = self.token(k)?;
        if token.depth != depth {
            return Ok(false);
        }
        if self.is(k - 1, Kind::Punct, ";") && self.token(k - 1)?.depth == depth {
            return Ok(true);
        }
        Ok(token.newline_before && self.ends_expression(k - 1)? && self.starts_statement(k)?)
    }

    fn ends_expression(&self, i: usize) -> Result<bool, Unsure> {
        let token = self.token(i)?;
        Ok(match token.kind {
            Kind::Ident => !KEYWORDS.contains(&self.text(i)),
            Kind::Number | Kind::Str | Kind::Template | Kind::Regex => true,
            Kind::Punct => match self.text(i) {
                ")" => !token.control,
                "]" | "}" => true,
                // `++`/`--` may be a prefix operator still waiting for its operand.
                _ => false,
            },
        })
    }

    /// Whether the token cannot continue the expression before it, so that a
    /// line break before it ends that statement (automatic semicolon
    /// insertion). Anything that may continue it (`(`, `[`, a template, a
    /// binary operator…) answers no.
    fn starts_statement(&self, i: usize) -> Result<bool, Unsure> {
        let token = self.token(i)?;
        Ok(match token.kind {
            Kind::Ident => !NOT_STATEMENT_START.contains(&self.text(i)),
            Kind::Number | Kind::Str => true,
            // A template would be tagged; the lexer may have mistaken a
            // division for a regex.
            Kind::Template | Kind::Regex => false,
            Kind::Punct => matches!(self.text(i), "++" | "--" | "!" | "~"),
        })
    }

    /// Makes the statement `tokens[from..to]` return its completion value.
    fn statement(&mut self, from: usize, to: usize) -> Result<(), Unsure> {
        let first = self.token(from)?;
        let (kind, partner, depth, start) = (first.kind, first.partner, first.depth, first.start);
        let word = self.text(from);
        match kind {
            Kind::Ident if word == "if" => self.if_statement(from, to),
            // Abrupt: the completion value is never observed.
            Kind::Ident if word == "throw" => Ok(()),
            Kind::Ident if UNWRAPPABLE.contains(&word) => Err(Unsure),
            Kind::Punct if word == "{" => {
                if partner + 1 != to {
                    return Err(Unsure);
                }
                self.list(from + 1, partner, depth + 1)
            }
            _ => {
                let end = self.token(to - 1)?.end;
                self.edits.push((start, ";return ("));
                self.edits.push((end, ")"));
                Ok(())
            }
        }
    }

    /// `if (…) {…} [else if … | else {…}]`: each block returns its own
    /// completion value; an untaken `if` falls through to `undefined`, as
    /// ES2015 specifies.
    fn if_statement(&mut self, from: usize, to: usize) -> Result<(), Unsure> {
        let open = from + 1;
        if !self.is(open, Kind::Punct, "(") {
            return Err(Unsure);
        }
        let body = self.token(open)?.partner + 1;
        let after = self.block(body)?;
        if after == to {
            return Ok(());
        }
        if !self.is(after, Kind::Ident, "else") {
            return Err(Unsure);
        }
        let alternative = after + 1;
        if self.is(alternative, Kind::Ident, "if") {
            return self.if_statement(alternative, to);
        }
        if self.block(alternative)? == to {
            Ok(())
        } else {
            Err(Unsure)
        }
    }

    /// Rewrites the block opening at `open`; returns the index after it.
    fn block(&mut self, open: usize) -> Result<usize, Unsure> {
        if !self.is(open, Kind::Punct, "{") {
            return Err(Unsure);
        }
        let token = self.token(open)?;
        let (close, depth) = (token.partner, token.depth);
        self.list(open + 1, close, depth + 1)?;
        Ok(close + 1)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn body(code: &str) -> String {
        match completion_body(code) {
            Rewrite::Body(body) => body,
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn the_tail_expression_is_returned() {
        assert_eq!(body("source.a + 1;"), ";return (source.a + 1);");
        assert_eq!(body("var x = 1; x"), "var x = 1; ;return (x)");
        assert_eq!(body("var x = 1\nx"), "var x = 1\n;return (x)");
        assert_eq!(body("a\n+ b"), ";return (a\n+ b)");
        assert_eq!(body("a\n(b)"), ";return (a\n(b))");
        assert_eq!(body("a\n`t`"), ";return (a\n`t`)");
        assert_eq!(body("a\n++b"), "a\n;return (++b)");
        assert_eq!(body("f()\n!b"), "f()\n;return (!b)");
        assert_eq!(body(""), "");
        assert_eq!(body("x; // done"), ";return (x); // done");
        assert_eq!(body("throw new Error('x')"), "throw new Error('x')");
    }

    #[test]
    fn strings_templates_regexes_and_comments_hide_their_punctuation() {
        assert_eq!(body("'a;b'\n'c}'"), "'a;b'\n;return ('c}')");
        assert_eq!(
            body("`x;${ {a: '}'}.a };`"),
            ";return (`x;${ {a: '}'}.a };`)"
        );
        assert_eq!(body("/;}/.test(s)"), ";return (/;}/.test(s))");
        assert_eq!(body("x = /[/;]/g; y"), "x = /[/;]/g; ;return (y)");
        assert_eq!(body("a /* ; } */ / 2"), ";return (a /* ; } */ / 2)");
        assert_eq!(body("a /* \n */ b"), "a /* \n */ ;return (b)");
    }

    #[test]
    fn if_and_blocks_return_from_each_branch() {
        assert_eq!(
            body("if (a) { 'y' } else { 'n' }"),
            "if (a) { ;return ('y') } else { ;return ('n') }"
        );
        assert_eq!(
            body("if (a) { 1 }\nelse if (b) { 2 } else { 3 };"),
            "if (a) { ;return (1) }\nelse if (b) { ;return (2) } else { ;return (3) };"
        );
        assert_eq!(body("if (a) { 1 }"), "if (a) { ;return (1) }");
        assert_eq!(body("if (a) {}"), "if (a) {}");
        assert_eq!(body("{ 1; 2 }"), "{ 1; ;return (2) }");
        assert_eq!(body("if (a)\n{ x }"), "if (a)\n{ ;return (x) }");
    }

    #[test]
    fn unsure_shapes_are_left_to_eval() {
        for code in [
            "1; var y = 2",
            "for (;;) {} x",
            "while (a) b()",
            "do x; while (c)",
            "do { x }\nwhile (c)",
            "if (a) b; else c",
            "if (a) { 1 } x",
            "switch (a) { case 1: 2 }",
            "try { 1 } catch (e) { 2 }",
            "function f() {}",
            "class A {}",
            "let [a] = b",
            "a = 1; }",
            "(",
            "'unterminated",
            "x = /unterminated\n",
            "if (a) {\n}\nelse x",
            &format!("{}1{}", "{".repeat(100), "}".repeat(100)),
            &format!("{}1{}", "`${".repeat(100), "}`".repeat(100)),
        ] {
            assert_eq!(completion_body(code), Rewrite::Unsure, "{code:?}");
        }
    }

    #[test]
    fn a_top_level_return_is_refused() {
        assert_eq!(
            completion_body("var a = 1;\nreturn a"),
            Rewrite::TopLevelReturn { line: 2 }
        );
        assert_eq!(
            completion_body("if (a) {\n\n  return 1 }"),
            Rewrite::TopLevelReturn { line: 3 }
        );
        for code in [
            "function f() { return 1 } f()",
            "[1].map(function (v) { if (v) { return v } })",
            "[1].map(v => { return v })",
            "({ m() { return 1 }, get g() { return 2 } }).m()",
            "class A { m(a = {}) { return a } }",
            "`${(() => { return 1 })()}`",
            "var returned = 'return'",
            "x.return",
            "x?.return",
            "({ return: 1 }).return",
        ] {
            assert!(
                matches!(completion_body(code), Rewrite::Body(_) | Rewrite::Unsure),
                "{code:?}"
            );
        }
    }
}
