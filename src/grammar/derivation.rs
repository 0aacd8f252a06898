//! The tree of choices a sampler makes, and its one-line text form.
//!
//! Text form: `form`, or `form(item, item, ..)` where an item is a parameter
//! `name=value` or a child term. Example:
//! `repeat(n=2, block(norm=pre, residual=true, attention(causal=true, head_dim=16, heads=4)))`.

use super::value::Value;
use crate::diag::{Pos, SourceError};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The deepest an architecture may nest: parentheses in the text form,
/// derivation height, and the largest `max_depth` a space may set. Every
/// walk over a derivation (matching, replay, lowering, hashing, printing,
/// the store's JSON) recurses once per level, so a bound here keeps them all
/// off the end of the stack; 60 levels also stay inside serde_json's nesting
/// limit when the store reads a derivation back (two levels per node).
pub const MAX_HEIGHT: usize = 60;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Derivation {
    /// The nonterminal this node expands; `None` in a hand-written tree that
    /// has not been matched against a grammar yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symbol: Option<String>,
    /// Index of the chosen alternative of `symbol`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alt: Option<u32>,
    pub form: String,
    /// Chosen parameter values, sorted by name.
    #[serde(default)]
    pub params: Vec<(String, Value)>,
    #[serde(default)]
    pub children: Vec<Derivation>,
}

impl Derivation {
    pub fn leaf(form: &str) -> Self {
        Derivation {
            symbol: None,
            alt: None,
            form: form.to_string(),
            params: Vec::new(),
            children: Vec::new(),
        }
    }

    pub fn param(&self, name: &str) -> Option<&Value> {
        self.params.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// Number of nodes in the tree.
    pub fn size(&self) -> usize {
        1 + self.children.iter().map(Derivation::size).sum::<usize>()
    }

    /// Height of the tree (a leaf has height 1).
    pub fn height(&self) -> usize {
        1 + self
            .children
            .iter()
            .map(Derivation::height)
            .max()
            .unwrap_or(0)
    }

    /// Drops grammar annotations, leaving the plain term.
    pub fn strip(&self) -> Derivation {
        Derivation {
            symbol: None,
            alt: None,
            form: self.form.clone(),
            params: self.params.clone(),
            children: self.children.iter().map(Derivation::strip).collect(),
        }
    }

    /// Pre-order paths (child indices from the root) of every node.
    pub fn paths(&self) -> Vec<Vec<usize>> {
        let mut out = Vec::new();
        fn walk(d: &Derivation, path: &mut Vec<usize>, out: &mut Vec<Vec<usize>>) {
            out.push(path.clone());
            for (i, c) in d.children.iter().enumerate() {
                path.push(i);
                walk(c, path, out);
                path.pop();
            }
        }
        walk(self, &mut Vec::new(), &mut out);
        out
    }

    pub fn get(&self, path: &[usize]) -> Option<&Derivation> {
        path.iter().try_fold(self, |d, &i| d.children.get(i))
    }

    pub fn get_mut(&mut self, path: &[usize]) -> Option<&mut Derivation> {
        path.iter().try_fold(self, |d, &i| d.children.get_mut(i))
    }

    /// Parses the text form. Errors carry the column (line 1 unless the text
    /// spans lines, as in a file). Terms nested deeper than [`MAX_HEIGHT`]
    /// are refused.
    pub fn parse(text: &str) -> Result<Derivation, SourceError> {
        let mut p = Parser {
            src: text,
            at: 0,
            depth: 0,
        };
        p.skip_ws();
        let d = p.term()?;
        p.skip_ws();
        if p.at < text.len() {
            return Err(p.error(format!(
                "unexpected `{}` after the end of the architecture",
                p.peek().unwrap_or(' ')
            )));
        }
        Ok(d)
    }
}

impl fmt::Display for Derivation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.form)?;
        if self.params.is_empty() && self.children.is_empty() {
            return Ok(());
        }
        f.write_str("(")?;
        let mut first = true;
        for (name, value) in &self.params {
            if !first {
                f.write_str(", ")?;
            }
            first = false;
            write!(f, "{name}={value}")?;
        }
        for child in &self.children {
            if !first {
                f.write_str(", ")?;
            }
            first = false;
            write!(f, "{child}")?;
        }
        f.write_str(")")
    }
}

struct Parser<'a> {
    src: &'a str,
    at: usize,
    /// Terms open around the current position.
    depth: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<char> {
        self.src[self.at..].chars().next()
    }

    fn error(&self, msg: String) -> SourceError {
        SourceError::new(msg).at(Pos::of_offset(self.src, self.at))
    }

    fn skip_ws(&mut self) {
        while let Some(c) = self.peek() {
            if c.is_whitespace() {
                self.at += c.len_utf8();
            } else {
                break;
            }
        }
    }

    fn ident(&mut self) -> Result<&str, SourceError> {
        let start = self.at;
        while let Some(c) = self.peek() {
            if c.is_ascii_alphanumeric() || c == '_' {
                self.at += 1;
            } else {
                break;
            }
        }
        if start == self.at || self.src[start..].starts_with(|c: char| c.is_ascii_digit()) {
            self.at = start;
            return Err(self.error(match self.peek() {
                Some(c) => format!("expected a name, found `{c}`"),
                None => "expected a name, found the end of the text".into(),
            }));
        }
        Ok(&self.src[start..self.at])
    }

    fn term(&mut self) -> Result<Derivation, SourceError> {
        if self.depth >= MAX_HEIGHT {
            return Err(self.error(format!(
                "the architecture nests deeper than {MAX_HEIGHT} levels, the most archgram reads"
            )));
        }
        self.depth += 1;
        let d = self.term_body();
        self.depth -= 1;
        d
    }

    fn term_body(&mut self) -> Result<Derivation, SourceError> {
        let form = self.ident()?.to_string();
        let mut d = Derivation::leaf(&form);
        self.skip_ws();
        if self.peek() != Some('(') {
            return Ok(d);
        }
        self.at += 1;
        self.skip_ws();
        if self.peek() == Some(')') {
            self.at += 1;
            return Ok(d);
        }
        loop {
            self.skip_ws();
            let item_start = self.at;
            let name = self.ident()?.to_string();
            self.skip_ws();
            if self.peek() == Some('=') {
                self.at += 1;
                self.skip_ws();
                let value = self.value()?;
                if d.params.iter().any(|(n, _)| *n == name) {
                    self.at = item_start;
                    return Err(
                        self.error(format!("parameter `{name}` of `{form}` is given twice"))
                    );
                }
                d.params.push((name, value));
            } else {
                self.at = item_start;
                d.children.push(self.term()?);
            }
            self.skip_ws();
            match self.peek() {
                Some(',') => self.at += 1,
                Some(')') => {
                    self.at += 1;
                    break;
                }
                Some(c) => {
                    return Err(
                        self.error(format!("expected `,` or `)` in `{form}(..)`, found `{c}`"))
                    )
                }
                None => {
                    return Err(self.error(format!(
                        "unclosed `{form}(`: expected `)` before the end of the text"
                    )))
                }
            }
        }
        d.params.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(d)
    }

    fn value(&mut self) -> Result<Value, SourceError> {
        let start = self.at;
        while let Some(c) = self.peek() {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '+') {
                self.at += 1;
            } else {
                break;
            }
        }
        let tok = &self.src[start..self.at];
        if tok.is_empty() {
            return Err(self.error("expected a value after `=`".into()));
        }
        let v = match tok {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ if tok.starts_with(|c: char| c.is_ascii_digit() || c == '-' || c == '+') => {
                if let Ok(i) = tok.parse::<i64>() {
                    Value::Int(i)
                } else if let Ok(x) = tok.parse::<f64>() {
                    if !x.is_finite() {
                        self.at = start;
                        return Err(self.error(format!("`{tok}` is not a finite number")));
                    }
                    Value::Float(x)
                } else {
                    self.at = start;
                    return Err(self.error(format!("`{tok}` is not a number")));
                }
            }
            _ if tok.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') => {
                Value::Name(tok.to_string())
            }
            _ => {
                self.at = start;
                return Err(self.error(format!("`{tok}` is not a value")));
            }
        };
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_and_parses_back() {
        let text = "repeat(n=2, block(norm=pre, residual=true, attention(causal=true, heads=4)))";
        let d = Derivation::parse(text).unwrap();
        assert_eq!(d.to_string(), text);
        assert_eq!(d.size(), 3);
        assert_eq!(d.height(), 3);
    }

    #[test]
    fn params_are_sorted_and_values_typed() {
        let d = Derivation::parse("moe(top_k=2, capacity=1.0, router=token_choice, mlp)").unwrap();
        assert_eq!(d.params[0], ("capacity".into(), Value::Float(1.0)));
        assert_eq!(d.params[2], ("top_k".into(), Value::Int(2)));
        assert_eq!(
            d.to_string(),
            "moe(capacity=1.0, router=token_choice, top_k=2, mlp)"
        );
    }

    #[test]
    fn errors_point_at_the_column() {
        let e = Derivation::parse("seq(linear(width=64), )").unwrap_err();
        assert_eq!(e.pos.unwrap().col, 23);
        let e = Derivation::parse("seq(linear(width=64)").unwrap_err();
        assert!(e.message.contains("unclosed"), "{e}");
        let e = Derivation::parse("mlp(ratio=4, ratio=2)").unwrap_err();
        assert!(e.message.contains("twice"), "{e}");
        let e = Derivation::parse("mlp(ratio=)").unwrap_err();
        assert!(e.message.contains("value"), "{e}");
        assert!(Derivation::parse("").is_err());
        assert!(Derivation::parse("4x").is_err());
    }

    fn nested(levels: usize) -> String {
        format!(
            "{}identity{}",
            "seq(".repeat(levels - 1),
            ")".repeat(levels - 1)
        )
    }

    #[test]
    fn nesting_is_bounded_with_a_located_error() {
        let ok = Derivation::parse(&nested(MAX_HEIGHT)).unwrap();
        assert_eq!(ok.height(), MAX_HEIGHT);
        // Far deeper than the stack would take unbounded (the parser once
        // overflowed at about 30,000 levels).
        for levels in [MAX_HEIGHT + 1, 200_000] {
            let e = Derivation::parse(&nested(levels)).unwrap_err();
            assert!(e.message.contains("deeper than 60 levels"), "{e}");
            assert_eq!(e.pos.unwrap().col, 4 * MAX_HEIGHT + 1, "{e}");
        }
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    fn name() -> impl Strategy<Value = String> {
        "[a-z][a-z0-9_]{0,6}"
    }

    fn value() -> impl Strategy<Value = Value> {
        prop_oneof![
            any::<bool>().prop_map(Value::Bool),
            (-1000i64..100_000).prop_map(Value::Int),
            (-1e6f64..1e6).prop_map(Value::Float),
            name()
                .prop_filter("not a bool", |n| n != "true" && n != "false")
                .prop_map(Value::Name),
        ]
    }

    fn term() -> impl Strategy<Value = Derivation> {
        let leaf =
            (name(), prop::collection::btree_map(name(), value(), 0..3)).prop_map(|(f, p)| {
                Derivation {
                    symbol: None,
                    alt: None,
                    form: f,
                    params: p.into_iter().collect(),
                    children: vec![],
                }
            });
        leaf.prop_recursive(4, 40, 4, |inner| {
            (
                name(),
                prop::collection::btree_map(name(), value(), 0..3),
                prop::collection::vec(inner, 1..4),
            )
                .prop_map(|(f, p, c)| Derivation {
                    symbol: None,
                    alt: None,
                    form: f,
                    params: p.into_iter().collect(),
                    children: c,
                })
        })
    }

    proptest! {
        #[test]
        fn printed_terms_parse_back(d in term()) {
            let text = d.to_string();
            let back = Derivation::parse(&text).unwrap();
            prop_assert_eq!(back.to_string(), text);
            prop_assert_eq!(back.size(), d.size());
        }

        #[test]
        fn arbitrary_text_never_panics(s in "[a-z0-9_=(), .\\-]{0,60}") {
            let _ = Derivation::parse(&s);
        }

        /// Any nesting depth parses or is refused, never overflows, and the
        /// line between the two is exactly `MAX_HEIGHT`.
        #[test]
        fn deep_nesting_is_refused_exactly_past_the_limit(
            levels in 1usize..3 * MAX_HEIGHT,
            inner in prop_oneof![Just("identity"), Just("mlp(ratio=4)"), Just("(")],
            tail in prop_oneof![Just(""), Just(")"), Just(", x")],
        ) {
            let text = format!("{}{inner}{}{tail}", "seq(".repeat(levels - 1), ")".repeat(levels - 1));
            match Derivation::parse(&text) {
                Ok(d) => prop_assert!(d.height() <= MAX_HEIGHT),
                Err(e) => prop_assert!(e.pos.is_some(), "{}", e),
            }
            if levels > MAX_HEIGHT {
                prop_assert!(Derivation::parse(&text).is_err());
            }
        }
    }
}
