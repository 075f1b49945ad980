//! A syntax check of `--node-selector` before it is sent to the API server.
//!
//! The API server is the judge of a label selector; this check exists so that a typo fails at
//! start-up with a clear message instead of as a watch that is refused and retried forever. It
//! accepts the Kubernetes label selector grammar (`k=v`, `k==v`, `k!=v`, `k in (a,b)`,
//! `k notin (a)`, `k`, `!k`, `k>1`, `k<1`, comma separated) and validates keys and values.

/// Checks `selector`; the error says what is wrong.
pub fn validate(selector: &str) -> Result<(), String> {
    let tokens = tokenize(selector)?;
    let mut tokens = tokens.iter().peekable();
    if tokens.peek().is_none() {
        return Ok(());
    }
    loop {
        requirement(&mut tokens)?;
        match tokens.next() {
            None => return Ok(()),
            Some(Token::Comma) => {}
            Some(other) => return Err(format!("expected ',' but found {other}")),
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Token<'a> {
    Word(&'a str),
    Not,
    Eq,
    DoubleEq,
    NotEq,
    Gt,
    Lt,
    Open,
    Close,
    Comma,
}

impl std::fmt::Display for Token<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = match self {
            Token::Word(w) => w,
            Token::Not => "!",
            Token::Eq => "=",
            Token::DoubleEq => "==",
            Token::NotEq => "!=",
            Token::Gt => ">",
            Token::Lt => "<",
            Token::Open => "(",
            Token::Close => ")",
            Token::Comma => ",",
        };
        write!(f, "{text:?}")
    }
}

fn tokenize(input: &str) -> Result<Vec<Token<'_>>, String> {
    let bytes = input.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let next = bytes.get(i + 1).copied();
        let (token, len) = match bytes[i] {
            b' ' | b'\t' | b'\n' | b'\r' => {
                i += 1;
                continue;
            }
            b'!' if next == Some(b'=') => (Token::NotEq, 2),
            b'!' => (Token::Not, 1),
            b'=' if next == Some(b'=') => (Token::DoubleEq, 2),
            b'=' => (Token::Eq, 1),
            b'>' => (Token::Gt, 1),
            b'<' => (Token::Lt, 1),
            b'(' => (Token::Open, 1),
            b')' => (Token::Close, 1),
            b',' => (Token::Comma, 1),
            _ => {
                let len = bytes[i..]
                    .iter()
                    .position(|b| b" \t\n\r!=<>(),".contains(b))
                    .unwrap_or(bytes.len() - i);
                (Token::Word(&input[i..i + len]), len)
            }
        };
        tokens.push(token);
        i += len;
    }
    Ok(tokens)
}

type Tokens<'t, 'a> = std::iter::Peekable<std::slice::Iter<'t, Token<'a>>>;

fn requirement(tokens: &mut Tokens<'_, '_>) -> Result<(), String> {
    let negated = tokens.next_if_eq(&&Token::Not).is_some();
    let key = match tokens.next() {
        Some(Token::Word(w)) => *w,
        Some(other) => return Err(format!("expected a label key but found {other}")),
        None => return Err("expected a label key but found the end".to_owned()),
    };
    label_key(key)?;
    if negated {
        return Ok(());
    }
    match tokens.peek() {
        None | Some(Token::Comma) => Ok(()),
        Some(Token::Eq | Token::DoubleEq | Token::NotEq) => {
            tokens.next();
            match tokens.peek() {
                Some(Token::Word(w)) => {
                    tokens.next();
                    label_value(w)
                }
                // `k=` selects an empty value.
                None | Some(Token::Comma) => Ok(()),
                Some(other) => Err(format!("expected a label value but found {other}")),
            }
        }
        Some(Token::Gt | Token::Lt) => {
            tokens.next();
            match tokens.next() {
                Some(Token::Word(w)) if w.parse::<i64>().is_ok() => Ok(()),
                _ => Err(format!("key {key:?}: '>' and '<' need an integer value")),
            }
        }
        Some(Token::Word(op @ ("in" | "notin"))) => {
            tokens.next();
            value_set(tokens, op)
        }
        Some(other) => Err(format!("unexpected {other} after key {key:?}")),
    }
}

fn value_set(tokens: &mut Tokens<'_, '_>, op: &str) -> Result<(), String> {
    if tokens.next() != Some(&Token::Open) {
        return Err(format!("expected '(' after {op:?}"));
    }
    let mut values = 0;
    loop {
        match tokens.next() {
            Some(Token::Word(w)) => {
                label_value(w)?;
                values += 1;
            }
            Some(Token::Comma) => {}
            Some(Token::Close) if op == "in" && values == 0 => {
                return Err("'in' needs at least one value".to_owned())
            }
            Some(Token::Close) => return Ok(()),
            Some(other) => return Err(format!("unexpected {other} in a value set")),
            None => return Err("unclosed value set".to_owned()),
        }
    }
}

/// `[prefix/]name`: a DNS subdomain prefix of at most 253 characters and a name part.
fn label_key(key: &str) -> Result<(), String> {
    let name = match key.split_once('/') {
        Some((prefix, name)) => {
            if prefix.is_empty() || prefix.len() > 253 || !is_dns_subdomain(prefix) {
                return Err(format!("invalid label key prefix {prefix:?}"));
            }
            name
        }
        None => key,
    };
    if name.is_empty() || !is_label_name(name) {
        return Err(format!("invalid label key {key:?}"));
    }
    Ok(())
}

fn label_value(value: &str) -> Result<(), String> {
    if value.is_empty() || is_label_name(value) {
        Ok(())
    } else {
        Err(format!("invalid label value {value:?}"))
    }
}

/// At most 63 characters, alphanumeric at both ends, `-`, `_`, `.` inside.
fn is_label_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// Lower-case DNS labels separated by dots.
fn is_dns_subdomain(s: &str) -> bool {
    s.split('.').all(|label| {
        let b = label.as_bytes();
        !b.is_empty()
            && b.len() <= 63
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
    })
}

#[cfg(test)]
mod tests {
    use super::validate;

    #[test]
    fn well_formed_selectors_pass() {
        for ok in [
            "",
            "  ",
            "role=worker",
            "role==worker,zone!=a",
            "node-role.kubernetes.io/worker",
            "!node-role.kubernetes.io/control-plane",
            "zone in (a, b),tier notin (x)",
            "empty=",
            "gen>3,gen<10",
            "kubernetes.io/os=linux, type!=virtual-kubelet",
        ] {
            assert_eq!(validate(ok), Ok(()), "{ok:?}");
        }
    }

    #[test]
    fn malformed_selectors_are_refused() {
        for bad in [
            "=worker",
            "role=worker,",
            ",role",
            "role=worker=again",
            "role in a",
            "role in ()",
            "role in (a",
            "role=-bad",
            "Bad_Prefix.COM/x=y",
            "/x",
            "a b",
            "gen>x",
            "role=work er",
            "!role=worker",
        ] {
            assert!(validate(bad).is_err(), "{bad:?}");
        }
    }
}
