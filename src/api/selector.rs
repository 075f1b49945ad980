//! Label and field selectors, in the full Kubernetes syntax.
//!
//! Label selectors accept what apimachinery's `labels.Parse` accepts: `k=v`, `k==v`, `k!=v`,
//! `k in (a,b)`, `k notin (a,b)`, `k` (exists), `!k` (does not exist), `k>5`, `k<5`, separated by
//! commas, with keys validated as qualified names and values as label values. Its quirks are kept
//! because clients rely on them: `k in ()` means `k in ("")`, `k=` means the value is empty, and a
//! NUL byte ends the input as the end of the string does.
//!
//! Field selectors accept what `fields.ParseSelector` accepts (`f=v`, `f==v`, `f!=v`, commas,
//! `\,` `\=` `\\` escapes in values). Only `metadata.name` and `metadata.namespace` are known: the
//! API server behind upstream converts field labels with the default conversion, which rejects
//! any other field with `BadRequest`, so [`FieldSelector::parse`] rejects it too. A cluster-scoped
//! object has no `metadata.namespace` field, which then reads as the empty string (so
//! `metadata.namespace=` selects every node and `metadata.namespace=x` none), as upstream's
//! filter does.
//!
//! Error reasons reproduce upstream's messages closely enough for a person to recognise them;
//! parsing never panics.

use crate::api::gofmt::push_go_quoted;
use crate::model::Labels;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid selector {input:?}: {reason}")]
pub struct SelectorError {
    pub input: String,
    pub reason: String,
}

/// A parsed label selector (`a=b,c!=d,e in (f,g),!h,i`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelector {
    /// All must match; sorted by key as upstream sorts them.
    requirements: Vec<Requirement>,
}

/// One term of a label selector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Requirement {
    pub key: String,
    pub operator: Operator,
    /// Sorted and without duplicates; empty for `Exists` and `DoesNotExist`.
    pub values: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operator {
    /// `=` or `==`.
    Equals,
    NotEquals,
    In,
    NotIn,
    Exists,
    DoesNotExist,
    GreaterThan,
    LessThan,
}

/// A parsed field selector; `metadata.name` and `metadata.namespace` are the fields served.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSelector {
    terms: Vec<FieldTerm>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct FieldTerm {
    field: Field,
    value: String,
    /// `!=` rather than `=`.
    negated: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field {
    Name,
    Namespace,
}

// === impl LabelSelector ===

impl LabelSelector {
    pub fn parse(input: &str) -> Result<Self, SelectorError> {
        let tokens = lex(input);
        let mut parser = Parser {
            tokens: &tokens,
            position: 0,
        };
        let mut requirements = parser.parse().map_err(|reason| SelectorError {
            input: input.to_owned(),
            reason,
        })?;
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(LabelSelector { requirements })
    }

    /// True when the selector selects everything.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    pub fn matches(&self, labels: &Labels) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// The requirements, all of which must match.
    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    /// This selector ANDed with `other` (as `--node-selector` is ANDed with a request's).
    pub fn and(mut self, other: &LabelSelector) -> LabelSelector {
        self.requirements.extend(other.requirements.iter().cloned());
        self.requirements.sort_by(|a, b| a.key.cmp(&b.key));
        self
    }
}

impl Requirement {
    pub fn matches(&self, labels: &Labels) -> bool {
        let value = labels.get(&self.key);
        let contains = |v: &str| self.values.iter().any(|x| x == v);
        match self.operator {
            Operator::Equals | Operator::In => value.is_some_and(contains),
            Operator::NotEquals | Operator::NotIn => !value.is_some_and(contains),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
            Operator::GreaterThan | Operator::LessThan => {
                // A label that is not an integer never matches, as upstream.
                let (Some(have), [want]) = (value, self.values.as_slice()) else {
                    return false;
                };
                let (Ok(have), Ok(want)) = (have.parse::<i64>(), want.parse::<i64>()) else {
                    return false;
                };
                if self.operator == Operator::GreaterThan {
                    have > want
                } else {
                    have < want
                }
            }
        }
    }
}

// === lexer ===

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Token {
    EndOfString,
    ClosedPar,
    Comma,
    DoesNotExist,
    DoubleEquals,
    Equals,
    GreaterThan,
    Identifier,
    In,
    LessThan,
    NotEquals,
    NotIn,
    OpenPar,
}

fn keyword(s: &str) -> Option<Token> {
    Some(match s {
        ")" => Token::ClosedPar,
        "," => Token::Comma,
        "!" => Token::DoesNotExist,
        "==" => Token::DoubleEquals,
        "=" => Token::Equals,
        ">" => Token::GreaterThan,
        "in" => Token::In,
        "<" => Token::LessThan,
        "!=" => Token::NotEquals,
        "notin" => Token::NotIn,
        "(" => Token::OpenPar,
        _ => return None,
    })
}

fn is_whitespace(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

fn is_special(b: u8) -> bool {
    matches!(b, b'=' | b'!' | b'(' | b')' | b',' | b'>' | b'<')
}

/// Splits `input` into tokens, ending with exactly one `EndOfString`. Works on bytes: every byte
/// that ends a token is ASCII, so literals are always whole UTF-8 slices. A NUL byte reads as the
/// end of input where a token starts and ends a token it interrupts, as upstream's lexer does.
fn lex(input: &str) -> Vec<(Token, &str)> {
    let bytes = input.as_bytes();
    let mut pos = 0;
    let mut tokens = Vec::new();
    // Reads one byte, 0 at the end (without advancing past it).
    let read = |pos: &mut usize| -> u8 {
        match bytes.get(*pos) {
            Some(&b) => {
                *pos += 1;
                b
            }
            None => 0,
        }
    };
    loop {
        let mut ch = read(&mut pos);
        while is_whitespace(ch) {
            ch = read(&mut pos);
        }
        if ch == 0 {
            tokens.push((Token::EndOfString, ""));
            return tokens;
        }
        pos -= 1;
        let start = pos;
        if is_special(ch) {
            // Longest run of special bytes that still forms a token.
            let mut last: Option<(Token, usize)> = None;
            loop {
                let b = read(&mut pos);
                if b == 0 {
                    break;
                }
                if !is_special(b) {
                    pos -= 1;
                    break;
                }
                match keyword(&input[start..pos]) {
                    Some(token) => last = Some((token, pos)),
                    None if last.is_some() => {
                        pos -= 1;
                        break;
                    }
                    None => {}
                }
            }
            match last {
                Some((token, end)) => tokens.push((token, &input[start..end])),
                // Every single special byte is a token, so the first byte always matched.
                None => tokens.push((Token::EndOfString, "")),
            }
            if last.is_none() {
                return tokens;
            }
        } else {
            let mut end;
            loop {
                end = pos;
                let b = read(&mut pos);
                if b == 0 {
                    break;
                }
                if is_special(b) || is_whitespace(b) {
                    pos -= 1;
                    break;
                }
            }
            let literal = &input[start..end];
            tokens.push((keyword(literal).unwrap_or(Token::Identifier), literal));
        }
    }
}

// === parser ===

struct Parser<'t, 's> {
    tokens: &'t [(Token, &'s str)],
    position: usize,
}

/// `in` and `notin` are plain identifiers where values are expected.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Context {
    KeyAndOperator,
    Values,
}

const BINARY_OPERATORS: &str = "in, notin, =, ==, !=, gt, lt";

impl<'s> Parser<'_, 's> {
    fn peek(&self, context: Context) -> (Token, &'s str) {
        // The token list always ends with EndOfString and nothing consumes past it.
        let (token, literal) = self.tokens[self.position.min(self.tokens.len() - 1)];
        (Self::in_context(token, context), literal)
    }

    fn next(&mut self, context: Context) -> (Token, &'s str) {
        let item = self.peek(context);
        if self.position < self.tokens.len() - 1 {
            self.position += 1;
        }
        item
    }

    fn in_context(token: Token, context: Context) -> Token {
        match (token, context) {
            (Token::In | Token::NotIn, Context::Values) => Token::Identifier,
            _ => token,
        }
    }

    fn parse(&mut self) -> Result<Vec<Requirement>, String> {
        let mut requirements = Vec::new();
        loop {
            let (token, literal) = self.peek(Context::Values);
            match token {
                Token::Identifier | Token::DoesNotExist => {
                    let requirement = self
                        .requirement()
                        .map_err(|e| format!("unable to parse requirement: {e}"))?;
                    requirements.push(requirement);
                    let (token, literal) = self.next(Context::Values);
                    match token {
                        Token::EndOfString => return Ok(requirements),
                        Token::Comma => {
                            let (after, literal) = self.peek(Context::Values);
                            if after != Token::Identifier && after != Token::DoesNotExist {
                                return Err(format!(
                                    "found '{literal}', expected: identifier after ','"
                                ));
                            }
                        }
                        _ => {
                            return Err(format!(
                                "found '{literal}', expected: ',' or 'end of string'"
                            ))
                        }
                    }
                }
                Token::EndOfString => return Ok(requirements),
                _ => {
                    return Err(format!(
                        "found '{literal}', expected: !, identifier, or 'end of string'"
                    ))
                }
            }
        }
    }

    fn requirement(&mut self) -> Result<Requirement, String> {
        let (key, unary) = self.key_and_unary_operator()?;
        if let Some(operator) = unary {
            return Ok(Requirement {
                key: key.to_owned(),
                operator,
                values: Vec::new(),
            });
        }
        let (token, literal) = self.next(Context::KeyAndOperator);
        let operator = match token {
            Token::In => Operator::In,
            Token::NotIn => Operator::NotIn,
            Token::Equals | Token::DoubleEquals => Operator::Equals,
            Token::NotEquals => Operator::NotEquals,
            Token::GreaterThan => Operator::GreaterThan,
            Token::LessThan => Operator::LessThan,
            _ => return Err(format!("found '{literal}', expected: {BINARY_OPERATORS}")),
        };
        let mut values = match operator {
            Operator::In | Operator::NotIn => self.value_list()?,
            _ => vec![self.exact_value()?],
        };
        values.sort_unstable();
        values.dedup();
        validate_values(operator, key, &values)?;
        Ok(Requirement {
            key: key.to_owned(),
            operator,
            values: values.into_iter().map(str::to_owned).collect(),
        })
    }

    /// The key, and the operator when it is unary (`!key`, or a key alone).
    fn key_and_unary_operator(&mut self) -> Result<(&'s str, Option<Operator>), String> {
        let (mut token, mut literal) = self.next(Context::Values);
        let negated = token == Token::DoesNotExist;
        if negated {
            (token, literal) = self.next(Context::Values);
        }
        if token != Token::Identifier {
            return Err(format!("found '{literal}', expected: identifier"));
        }
        validate_key(literal)?;
        let (after, _) = self.peek(Context::Values);
        if negated {
            return Ok((literal, Some(Operator::DoesNotExist)));
        }
        if after == Token::EndOfString || after == Token::Comma {
            return Ok((literal, Some(Operator::Exists)));
        }
        Ok((literal, None))
    }

    fn value_list(&mut self) -> Result<Vec<&'s str>, String> {
        let (token, literal) = self.next(Context::Values);
        if token != Token::OpenPar {
            return Err(format!("found '{literal}' expected: '('"));
        }
        let (token, literal) = self.peek(Context::Values);
        match token {
            Token::Identifier | Token::Comma => {
                let values = self.identifiers()?;
                if self.next(Context::Values).0 != Token::ClosedPar {
                    return Err(format!("found '{literal}', expected: ')'"));
                }
                Ok(values)
            }
            // "()" is the empty value.
            Token::ClosedPar => {
                self.next(Context::Values);
                Ok(vec![""])
            }
            _ => Err(format!(
                "found '{literal}', expected: ',', ')' or identifier"
            )),
        }
    }

    /// Values between the parentheses; empty items (`(,a)`, `(a,)`, `(a,,b)`) are the empty value.
    fn identifiers(&mut self) -> Result<Vec<&'s str>, String> {
        let mut values = Vec::new();
        loop {
            let (token, literal) = self.next(Context::Values);
            match token {
                Token::Identifier => {
                    values.push(literal);
                    match self.peek(Context::Values) {
                        (Token::Comma, _) => continue,
                        (Token::ClosedPar, _) => return Ok(values),
                        (_, literal) => {
                            return Err(format!("found '{literal}', expected: ',' or ')'"))
                        }
                    }
                }
                Token::Comma => {
                    if values.is_empty() {
                        values.push("");
                    }
                    match self.peek(Context::Values).0 {
                        Token::ClosedPar => {
                            values.push("");
                            return Ok(values);
                        }
                        Token::Comma => {
                            self.next(Context::Values);
                            values.push("");
                        }
                        _ => {}
                    }
                }
                _ => return Err(format!("found '{literal}', expected: ',', or identifier")),
            }
        }
    }

    fn exact_value(&mut self) -> Result<&'s str, String> {
        let (token, _) = self.peek(Context::Values);
        if token == Token::EndOfString || token == Token::Comma {
            return Ok("");
        }
        let (token, literal) = self.next(Context::Values);
        if token == Token::Identifier {
            Ok(literal)
        } else {
            Err(format!("found '{literal}', expected: identifier"))
        }
    }
}

// === validation ===

// The doubled spaces before "or" are upstream's: each example ends in ", " and " or " follows.
const QUALIFIED_NAME_MESSAGE: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const LABEL_VALUE_MESSAGE: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
const DNS_SUBDOMAIN_MESSAGE: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

/// Alphanumeric at both ends, `-`, `_`, `.` or alphanumeric between; not empty.
fn is_qualified_token(s: &str) -> bool {
    let b = s.as_bytes();
    match (b.first(), b.last()) {
        (Some(first), Some(last)) => {
            first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && b.iter()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        }
        _ => false,
    }
}

fn is_dns_subdomain(s: &str) -> bool {
    s.split('.').all(|label| {
        let b = label.as_bytes();
        let edge = |c: Option<&u8>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        edge(b.first())
            && edge(b.last())
            && b.iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
    })
}

/// The reasons `key` is not a qualified name (`[prefix/]name`), as apimachinery words them.
fn qualified_name_errors(key: &str) -> Vec<String> {
    let mut errors = Vec::new();
    let parts: Vec<&str> = key.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errors.push("prefix part must be non-empty".to_owned());
            } else {
                if prefix.len() > 253 {
                    errors.push("prefix part must be no more than 253 characters".to_owned());
                }
                if !is_dns_subdomain(prefix) {
                    errors.push(format!("prefix part {DNS_SUBDOMAIN_MESSAGE}"));
                }
            }
            *name
        }
        _ => {
            errors.push(format!(
                "a qualified name {QUALIFIED_NAME_MESSAGE} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
            ));
            return errors;
        }
    };
    if name.is_empty() {
        errors.push("name part must be non-empty".to_owned());
    } else if name.len() > 63 {
        errors.push("name part must be no more than 63 characters".to_owned());
    }
    if !is_qualified_token(name) {
        errors.push(format!("name part {QUALIFIED_NAME_MESSAGE}"));
    }
    errors
}

fn label_value_errors(value: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if value.len() > 63 {
        errors.push("must be no more than 63 characters".to_owned());
    }
    if !value.is_empty() && !is_qualified_token(value) {
        errors.push(LABEL_VALUE_MESSAGE.to_owned());
    }
    errors
}

/// A field error as apimachinery prints it: `<path>: Invalid value: "<value>": <details>`.
fn invalid(path: &str, value: &str, details: &[String]) -> String {
    let mut message = format!("{path}: Invalid value: ");
    push_go_quoted(&mut message, value);
    message.push_str(": ");
    message.push_str(&details.join("; "));
    message
}

fn validate_key(key: &str) -> Result<(), String> {
    let errors = qualified_name_errors(key);
    if errors.is_empty() {
        Ok(())
    } else {
        // Upstream parses with no field path, which prints as "<nil>".
        Err(invalid("<nil>", key, &errors))
    }
}

/// Checks the values of a requirement; several problems are reported together in brackets, as
/// an aggregated error prints.
fn validate_values(operator: Operator, key: &str, values: &[&str]) -> Result<(), String> {
    let mut errors: Vec<String> = Vec::new();
    if matches!(operator, Operator::GreaterThan | Operator::LessThan) {
        for (i, value) in values.iter().enumerate() {
            if value.parse::<i64>().is_err() {
                errors.push(invalid(
                    &format!("values[{i}]"),
                    value,
                    &["for 'Gt', 'Lt' operators, the value must be an integer".to_owned()],
                ));
            }
        }
    }
    for (i, value) in values.iter().enumerate() {
        let problems = label_value_errors(value);
        if !problems.is_empty() {
            errors.push(invalid(&format!("values[{i}][{key}]"), value, &problems));
        }
    }
    errors.dedup();
    match errors.len() {
        0 => Ok(()),
        1 => Err(errors.remove(0)),
        _ => Err(format!("[{}]", errors.join(", "))),
    }
}

// === impl FieldSelector ===

impl FieldSelector {
    pub fn parse(input: &str) -> Result<Self, SelectorError> {
        let error = |reason: String| SelectorError {
            input: input.to_owned(),
            reason,
        };
        let mut parts = split_terms(input);
        parts.sort_unstable();
        let mut parsed = Vec::with_capacity(parts.len());
        for part in parts.into_iter().filter(|p| !p.is_empty()) {
            let Some((field, negated, raw)) = split_term(part) else {
                return Err(error(format!(
                    "invalid selector: '{input}'; can't understand '{part}'"
                )));
            };
            let value = unescape(raw).map_err(error)?;
            parsed.push((field, negated, value));
        }
        // Field names are checked after every term parsed, as upstream's conversion runs then.
        let mut terms = Vec::with_capacity(parsed.len());
        for (field, negated, value) in parsed {
            let field = match field {
                "metadata.name" => Field::Name,
                "metadata.namespace" => Field::Namespace,
                other => {
                    let mut reason = String::new();
                    push_go_quoted(&mut reason, other);
                    reason.push_str(
                        r#" is not a known field selector: only "metadata.name", "metadata.namespace""#,
                    );
                    return Err(error(reason));
                }
            };
            terms.push(FieldTerm {
                field,
                value,
                negated,
            });
        }
        Ok(FieldSelector { terms })
    }

    /// True when the selector selects everything.
    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// `namespace` is `None` for cluster-scoped objects.
    pub fn matches(&self, namespace: Option<&str>, name: &str) -> bool {
        self.terms.iter().all(|term| {
            let actual = match term.field {
                Field::Name => name,
                // A missing field reads as empty, as a Go map lookup does.
                Field::Namespace => namespace.unwrap_or(""),
            };
            (actual == term.value) != term.negated
        })
    }

    /// The value every selected object's name must equal, if the selector pins one; lets a caller
    /// look one object up instead of filtering all.
    pub fn required_name(&self) -> Option<&str> {
        self.required(Field::Name)
    }

    /// The namespace every selected object must be in, if the selector pins one.
    pub fn required_namespace(&self) -> Option<&str> {
        self.required(Field::Namespace)
    }

    fn required(&self, field: Field) -> Option<&str> {
        self.terms
            .iter()
            .find(|t| t.field == field && !t.negated)
            .map(|t| t.value.as_str())
    }
}

/// Splits on commas not escaped by a backslash; escapes stay in the terms.
fn split_terms(input: &str) -> Vec<&str> {
    if input.is_empty() {
        return Vec::new();
    }
    let mut terms = Vec::new();
    let mut start = 0;
    let mut escaped = false;
    for (i, b) in input.bytes().enumerate() {
        if escaped {
            escaped = false;
        } else if b == b'\\' {
            escaped = true;
        } else if b == b',' {
            terms.push(&input[start..i]);
            start = i + 1;
        }
    }
    terms.push(&input[start..]);
    terms
}

/// Splits a term at the first operator: `!=`, `==` or `=`, tried in that order at each position.
fn split_term(term: &str) -> Option<(&str, bool, &str)> {
    for (i, _) in term.char_indices() {
        let rest = &term[i..];
        if let Some(value) = rest.strip_prefix("!=") {
            return Some((&term[..i], true, value));
        }
        if let Some(value) = rest.strip_prefix("==") {
            return Some((&term[..i], false, value));
        }
        if let Some(value) = rest.strip_prefix('=') {
            return Some((&term[..i], false, value));
        }
    }
    None
}

fn unescape(raw: &str) -> Result<String, String> {
    let mut value = String::with_capacity(raw.len());
    let mut escaped = false;
    for c in raw.chars() {
        if escaped {
            match c {
                '\\' | ',' | '=' => value.push(c),
                _ => {
                    return Err(format!(
                        "invalid field selector: invalid escape sequence: \\{c}"
                    ))
                }
            }
            escaped = false;
            continue;
        }
        match c {
            '\\' => escaped = true,
            // Upstream prints the rune with %v, which is its code point number.
            ',' | '=' => {
                return Err(format!(
                    "invalid field selector: unescaped character in value: {}",
                    c as u32
                ))
            }
            _ => value.push(c),
        }
    }
    if escaped {
        return Err("invalid field selector: invalid escape sequence: \\".to_owned());
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        Labels::from_pairs(pairs.iter().copied())
    }

    fn selects(selector: &str, pairs: &[(&str, &str)]) -> bool {
        LabelSelector::parse(selector)
            .unwrap_or_else(|e| panic!("{selector:?}: {e}"))
            .matches(&labels(pairs))
    }

    fn label_error(selector: &str) -> String {
        match LabelSelector::parse(selector) {
            Ok(parsed) => panic!("{selector:?} parsed as {parsed:?}"),
            Err(e) => {
                assert_eq!(e.input, selector);
                e.reason
            }
        }
    }

    #[test]
    fn empty_and_blank_label_selectors_select_everything() {
        for input in ["", "   ", "\t\n"] {
            let s = LabelSelector::parse(input).unwrap();
            assert!(s.is_empty());
            assert!(s.matches(&labels(&[("a", "b")])));
        }
    }

    #[test]
    fn equality_operators_match_values() {
        assert!(selects("app=web", &[("app", "web")]));
        assert!(selects("app==web", &[("app", "web")]));
        assert!(!selects("app=web", &[("app", "db")]));
        assert!(!selects("app=web", &[]));
        assert!(selects("app!=web", &[("app", "db")]));
        assert!(selects("app!=web", &[]));
        assert!(!selects("app!=web", &[("app", "web")]));
        // An empty value is allowed and means the empty string.
        assert!(selects("app=", &[("app", "")]));
        assert!(!selects("app=", &[]));
    }

    #[test]
    fn set_operators_match_any_listed_value() {
        let s = "env in (prod, staging)";
        assert!(selects(s, &[("env", "prod")]));
        assert!(selects(s, &[("env", "staging")]));
        assert!(!selects(s, &[("env", "dev")]));
        assert!(!selects(s, &[]));
        let s = "env notin (prod,staging)";
        assert!(selects(s, &[("env", "dev")]));
        assert!(selects(s, &[]));
        assert!(!selects(s, &[("env", "prod")]));
        // "in" and "notin" are plain values inside a list.
        assert!(selects("x in (in,notin)", &[("x", "notin")]));
        // Empty items are the empty value.
        assert!(selects("x in ()", &[("x", "")]));
        assert!(selects("x in (a,)", &[("x", "")]));
        assert!(selects("x in (,a)", &[("x", "a")]));
        assert!(selects("x in (a,,b)", &[("x", "")]));
        let parsed = LabelSelector::parse("x in (b,a,b)").unwrap();
        assert_eq!(parsed.requirements()[0].values, vec!["a", "b"]);
    }

    #[test]
    fn existence_operators_check_the_key_only() {
        assert!(selects("gpu", &[("gpu", "")]));
        assert!(!selects("gpu", &[("cpu", "x")]));
        assert!(selects("!gpu", &[("cpu", "x")]));
        assert!(!selects("!gpu", &[("gpu", "yes")]));
        assert!(selects("a,!b", &[("a", "1")]));
        assert!(selects("! gpu", &[]));
    }

    #[test]
    fn numeric_operators_compare_integers() {
        assert!(selects("n>5", &[("n", "6")]));
        assert!(!selects("n>5", &[("n", "5")]));
        assert!(selects("n<5", &[("n", "-7")]));
        assert!(!selects("n<5", &[("n", "abc")]));
        assert!(!selects("n<5", &[]));
    }

    #[test]
    fn requirements_are_anded_and_whitespace_is_ignored() {
        let s = " app = web ,\ttier in ( front , back ) , !legacy ";
        assert!(selects(s, &[("app", "web"), ("tier", "back")]));
        assert!(!selects(
            s,
            &[("app", "web"), ("tier", "back"), ("legacy", "1")]
        ));
        assert!(!selects(s, &[("app", "web")]));
        assert!(selects(
            "kubernetes.io/role=master",
            &[("kubernetes.io/role", "master")]
        ));
    }

    #[test]
    fn a_nul_byte_ends_the_selector_as_upstream_lexes_it() {
        // At the start of a token it ends the input; inside a token it ends only that token.
        assert!(selects("a=b \0,((", &[("a", "b")]));
        assert!(selects("a=\0b", &[("a", "b")]));
        assert_eq!(
            label_error("a=b\0,(("),
            "found '(', expected: identifier after ','"
        );
    }

    #[test]
    fn and_combines_two_selectors() {
        let s = LabelSelector::parse("a=1")
            .unwrap()
            .and(&LabelSelector::parse("b").unwrap());
        assert!(s.matches(&labels(&[("a", "1"), ("b", "")])));
        assert!(!s.matches(&labels(&[("a", "1")])));
    }

    #[test]
    fn syntax_errors_are_reported_with_upstream_wording() {
        let table: &[(&str, &str)] = &[
            ("a=b,", "found '', expected: identifier after ','"),
            (
                ",a",
                "found ',', expected: !, identifier, or 'end of string'",
            ),
            ("a=b c", "found 'c', expected: ',' or 'end of string'"),
            (
                "a b",
                "unable to parse requirement: found 'b', expected: in, notin, =, ==, !=, gt, lt",
            ),
            (
                "a in b",
                "unable to parse requirement: found 'b' expected: '('",
            ),
            (
                "a in (b",
                "unable to parse requirement: found '', expected: ',' or ')'",
            ),
            (
                "a in (b c)",
                "unable to parse requirement: found 'c', expected: ',' or ')'",
            ),
            (
                "a in (=)",
                "unable to parse requirement: found '=', expected: ',', ')' or identifier",
            ),
            (
                "a in",
                "unable to parse requirement: found '' expected: '('",
            ),
            (
                "a==(",
                "unable to parse requirement: found '(', expected: identifier",
            ),
            (
                "!",
                "unable to parse requirement: found '', expected: identifier",
            ),
            (
                "!=a",
                "found '!=', expected: !, identifier, or 'end of string'",
            ),
            (
                "!!a",
                "unable to parse requirement: found '!', expected: identifier",
            ),
            (
                "(a)",
                "found '(', expected: !, identifier, or 'end of string'",
            ),
            (
                "a))",
                "unable to parse requirement: found ')', expected: in, notin, =, ==, !=, gt, lt",
            ),
        ];
        for &(input, want) in table {
            assert_eq!(label_error(input), want, "{input:?}");
        }
    }

    #[test]
    fn invalid_keys_and_values_are_rejected() {
        let key = label_error("a b c=d");
        assert!(key.contains("found 'b'"), "{key}");
        let key = label_error("-a=b");
        assert!(
            key.starts_with("unable to parse requirement: <nil>: Invalid value: \"-a\": name part must consist of"),
            "{key}"
        );
        let key = label_error("Example.com/a=b");
        assert!(
            key.contains("prefix part a lowercase RFC 1123 subdomain"),
            "{key}"
        );
        let key = label_error("/a=b");
        assert!(key.contains("prefix part must be non-empty"), "{key}");
        let key = label_error("a/=b");
        assert!(
            key.contains("name part must be non-empty; name part must consist"),
            "{key}"
        );
        let key = label_error("a/b/c=d");
        assert!(key.contains("a qualified name must consist"), "{key}");
        let long = "k".repeat(64);
        let key = label_error(&format!("{long}=v"));
        assert!(
            key.contains("name part must be no more than 63 characters"),
            "{key}"
        );
        assert!(LabelSelector::parse(&format!("{}=v", &long[..63])).is_ok());

        let value = label_error("a=-b");
        assert_eq!(
            value,
            format!("unable to parse requirement: values[0][a]: Invalid value: \"-b\": {LABEL_VALUE_MESSAGE}")
        );
        let value = label_error(&format!("a={long}"));
        assert!(
            value.contains("must be no more than 63 characters"),
            "{value}"
        );
        let value = label_error("a in (ok, bad!)");
        assert!(value.contains("found '!'"), "{value}");
        let value = label_error("a in (ok,b@d)");
        assert!(
            value.contains("values[0][a]: Invalid value: \"b@d\""),
            "{value}"
        );
        let number = label_error("a>b");
        assert_eq!(
            number,
            "unable to parse requirement: values[0]: Invalid value: \"b\": for 'Gt', 'Lt' operators, the value must be an integer"
        );
        let both = label_error("a<-");
        assert!(
            both.starts_with("unable to parse requirement: [values[0]:"),
            "{both}"
        );
        let empty = label_error("a>");
        assert!(empty.contains("must be an integer"), "{empty}");
    }

    #[test]
    fn field_selectors_match_name_and_namespace() {
        let s = FieldSelector::parse("metadata.name=web-0,metadata.namespace==prod").unwrap();
        assert!(s.matches(Some("prod"), "web-0"));
        assert!(!s.matches(Some("dev"), "web-0"));
        assert!(!s.matches(Some("prod"), "web-1"));
        assert_eq!(s.required_name(), Some("web-0"));
        assert_eq!(s.required_namespace(), Some("prod"));

        let s = FieldSelector::parse("metadata.name!=web-0").unwrap();
        assert!(s.matches(None, "web-1"));
        assert!(!s.matches(None, "web-0"));
        assert_eq!(s.required_name(), None);

        for input in ["", ",", ",,"] {
            let s = FieldSelector::parse(input).unwrap();
            assert!(s.is_empty());
            assert!(s.matches(None, "anything"));
        }
    }

    #[test]
    fn cluster_scoped_objects_have_an_empty_namespace_field() {
        assert!(FieldSelector::parse("metadata.namespace=")
            .unwrap()
            .matches(None, "n"));
        assert!(!FieldSelector::parse("metadata.namespace=x")
            .unwrap()
            .matches(None, "n"));
        assert!(FieldSelector::parse("metadata.namespace!=x")
            .unwrap()
            .matches(None, "n"));
    }

    #[test]
    fn field_values_unescape_commas_equals_and_backslashes() {
        let s = FieldSelector::parse(r"metadata.name=a\,b\=c\\d").unwrap();
        assert!(s.matches(None, r"a,b=c\d"));
        // An escaped comma does not split terms.
        let s = FieldSelector::parse(r"metadata.name=x\,metadata.namespace=y");
        assert_eq!(
            s.unwrap_err().reason,
            "invalid field selector: unescaped character in value: 61"
        );
    }

    #[test]
    fn bad_field_selectors_are_rejected_with_upstream_wording() {
        let table: &[(&str, &str)] = &[
            (
                "metadata.name",
                "invalid selector: 'metadata.name'; can't understand 'metadata.name'",
            ),
            (
                "metadata.name=a,b",
                "invalid selector: 'metadata.name=a,b'; can't understand 'b'",
            ),
            (
                "metadata.name=a=b",
                "invalid field selector: unescaped character in value: 61",
            ),
            (
                r"metadata.name=a\x",
                r"invalid field selector: invalid escape sequence: \x",
            ),
            (
                r"metadata.name=a\",
                r"invalid field selector: invalid escape sequence: \",
            ),
            (
                "spec.nodeName=n1",
                r#""spec.nodeName" is not a known field selector: only "metadata.name", "metadata.namespace""#,
            ),
            (
                "metadata.name =a",
                r#""metadata.name " is not a known field selector: only "metadata.name", "metadata.namespace""#,
            ),
            (
                "spec\u{1}=a",
                r#""spec\x01" is not a known field selector: only "metadata.name", "metadata.namespace""#,
            ),
            (
                "=a",
                r#""" is not a known field selector: only "metadata.name", "metadata.namespace""#,
            ),
        ];
        for &(input, want) in table {
            let err = FieldSelector::parse(input).unwrap_err();
            assert_eq!(err.input, input);
            assert_eq!(err.reason, want, "{input:?}");
        }
    }

    fn valid_token() -> impl Strategy<Value = String> {
        "[A-Za-z0-9]([-A-Za-z0-9_.]{0,20}[A-Za-z0-9])?"
    }

    proptest! {
        #[test]
        fn label_parsing_never_panics(input in any::<String>()) {
            let _ = LabelSelector::parse(&input);
        }

        #[test]
        fn label_parsing_never_panics_on_selector_like_input(
            input in r#"[a-z!=(), <>\tin\x00notin/.-]{0,40}"#
        ) {
            let _ = LabelSelector::parse(&input);
        }

        #[test]
        fn field_parsing_never_panics(input in any::<String>()) {
            let _ = FieldSelector::parse(&input);
        }

        #[test]
        fn field_parsing_never_panics_on_selector_like_input(
            input in r#"(metadata\.(name|namespace)|[a-z]{0,3})(!=|==|=|)[a-z\\,=!]{0,8}(,[a-z.=\\!]{0,12}){0,3}"#
        ) {
            let _ = FieldSelector::parse(&input);
        }

        #[test]
        fn equality_selects_exactly_the_labelled_value(key in valid_token(), value in valid_token(), other in valid_token()) {
            let s = LabelSelector::parse(&format!("{key}={value}")).unwrap();
            prop_assert!(s.matches(&labels(&[(&key, &value)])));
            prop_assert_eq!(s.matches(&labels(&[(&key, &other)])), other == value);
            let s = LabelSelector::parse(&format!("{key} notin ({value})")).unwrap();
            prop_assert_eq!(s.matches(&labels(&[(&key, &other)])), other != value);
        }

        #[test]
        fn escaped_field_values_round_trip(name in "[a-z,=\\\\]{0,12}") {
            let escaped = name.replace('\\', r"\\").replace(',', r"\,").replace('=', r"\=");
            let s = FieldSelector::parse(&format!("metadata.name={escaped}")).unwrap();
            prop_assert!(s.matches(None, &name));
        }
    }
}
