//! The grammar file format (RON) and its loader.
//!
//! ```ron
//! Grammar(
//!     start: "network",
//!     rules: {
//!         "network": [
//!             Alt(form: "repeat", params: {"n": [2, 3]}, children: ["layer"]),
//!         ],
//!         "layer": [
//!             Alt(weight: 2.0, form: "mlp", params: {"ratio": [(2, 1.0), (4, 3.0)]}),
//!         ],
//!     },
//! )
//! ```
//! A parameter's choices are a weighted list `[(value, weight), ..]`, a plain list
//! (equal weights), or a single value (fixed).

use super::value::Value;
use crate::diag::{find_in_code, from_ron, read_text, Pos, SourceError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Choices for one parameter, as written in the file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ChoicesFile {
    Weighted(Vec<(Value, f64)>),
    Uniform(Vec<Value>),
    Fixed(Value),
}

/// One alternative of a nonterminal, as written in the file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename = "Alt", deny_unknown_fields)]
pub struct AltFile {
    #[serde(default = "one")]
    pub weight: f64,
    pub form: String,
    #[serde(default, deserialize_with = "crate::diag::unique_keys")]
    pub params: BTreeMap<String, ChoicesFile>,
    #[serde(default)]
    pub children: Vec<String>,
}

fn one() -> f64 {
    1.0
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename = "Grammar", deny_unknown_fields)]
pub struct GrammarFile {
    pub start: String,
    #[serde(deserialize_with = "crate::diag::unique_keys")]
    pub rules: BTreeMap<String, Vec<AltFile>>,
}

/// A parameter's choices after loading: values with positive weights.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Choices(pub Vec<(Value, f64)>);

/// One alternative after loading.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Alternative {
    pub weight: f64,
    pub form: String,
    /// Sorted by name: the order derivations store their parameters in.
    pub params: Vec<(String, Choices)>,
    pub children: Vec<String>,
}

/// A loaded, validated grammar.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Grammar {
    pub start: String,
    pub rules: BTreeMap<String, Vec<Alternative>>,
    /// Where it was loaded from (for messages); empty for grammars built in code.
    #[serde(skip)]
    pub path: PathBuf,
    /// Each productive symbol's smallest derivation height, worked out once
    /// on load (the sampler consults it at every expansion).
    #[serde(skip)]
    pub min_heights: BTreeMap<String, usize>,
}

/// Source text kept beside a grammar so later checks can point into it.
pub struct Source {
    pub path: PathBuf,
    pub text: String,
}

impl Source {
    pub fn read(path: &Path) -> Result<Source, SourceError> {
        let text = read_text(path)?;
        Ok(Source {
            path: path.to_path_buf(),
            text,
        })
    }

    fn at_offset(&self, offset: usize) -> Pos {
        Pos::of_offset(&self.text, offset)
    }

    /// Where nonterminal `sym` is defined (its quoted key followed by `:`).
    pub fn rule_offset(&self, sym: &str) -> Option<usize> {
        let key = format!("\"{sym}\"");
        let mut from = 0;
        while let Some(i) = find_in_code(&self.text[from..], &key) {
            let at = from + i;
            let rest = self.text[at + key.len()..].trim_start();
            if rest.starts_with(':') {
                return Some(at);
            }
            from = at + key.len();
        }
        None
    }

    /// Where alternative `idx` of `sym` starts.
    pub fn alt_offset(&self, sym: &str, idx: usize) -> Option<usize> {
        let mut at = self.rule_offset(sym)?;
        for k in 0..=idx {
            let i = find_in_code(&self.text[at..], "Alt")?;
            at += i;
            if k < idx {
                at += 3;
            }
        }
        Some(at)
    }

    /// Where `needle` first occurs inside alternative `idx` of `sym` (or the alternative itself).
    pub fn pos_in_alt(&self, sym: &str, idx: usize, needle: &str) -> Option<Pos> {
        let start = self.alt_offset(sym, idx)?;
        let end = self.text[start + 3..]
            .find("Alt")
            .map_or(self.text.len(), |e| start + 3 + e);
        let inner = self.text[start..end]
            .find(needle)
            .map_or(start, |i| start + i);
        Some(self.at_offset(inner))
    }

    pub fn pos_of_rule(&self, sym: &str) -> Option<Pos> {
        self.rule_offset(sym).map(|o| self.at_offset(o))
    }

    /// Where field `key` is set (`key:`, as a whole name, outside comments).
    pub fn pos_of_key(&self, key: &str) -> Option<Pos> {
        let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
        let mut from = 0;
        while let Some(i) = find_in_code(&self.text[from..], key) {
            let at = from + i;
            let before = self.text[..at].chars().next_back();
            let rest = self.text[at + key.len()..].trim_start();
            if !before.is_some_and(ident) && rest.starts_with(':') {
                return Some(self.at_offset(at));
            }
            from = at + key.len();
        }
        None
    }

    /// Where `needle` first occurs anywhere in the file.
    pub fn pos_of(&self, needle: &str) -> Option<Pos> {
        find_in_code(&self.text, needle).map(|o| self.at_offset(o))
    }
}

/// Parses grammar text (no semantic checks; see `validate`).
pub fn parse(src: &Source) -> Result<Grammar, SourceError> {
    let file: GrammarFile = ron::Options::default()
        .with_default_extension(ron::extensions::Extensions::IMPLICIT_SOME)
        .from_str(&src.text)
        .map_err(|e| from_ron(e, &src.path, &src.text))?;
    let mut rules = BTreeMap::new();
    for (sym, alts) in file.rules {
        let mut out = Vec::with_capacity(alts.len());
        for (idx, alt) in alts.into_iter().enumerate() {
            let params = alt
                .params
                .into_iter()
                .map(|(name, c)| {
                    let list = match c {
                        ChoicesFile::Weighted(v) => v,
                        ChoicesFile::Uniform(v) => v.into_iter().map(|x| (x, 1.0)).collect(),
                        ChoicesFile::Fixed(x) => vec![(x, 1.0)],
                    };
                    if list.is_empty() {
                        let pos = src.pos_in_alt(&sym, idx, &format!("\"{name}\""));
                        let mut e = SourceError::new(format!(
                            "parameter `{name}` of `{sym}` alternative {} has no choices",
                            idx + 1
                        ))
                        .in_file(&src.path);
                        e.pos = pos;
                        return Err(e);
                    }
                    Ok((name, Choices(list)))
                })
                .collect::<Result<Vec<_>, _>>()?;
            out.push(Alternative {
                weight: alt.weight,
                form: alt.form,
                params,
                children: alt.children,
            });
        }
        rules.insert(sym, out);
    }
    // `min_heights` is filled in by the loader, which owns validation.
    Ok(Grammar {
        start: file.start,
        rules,
        path: src.path.clone(),
        min_heights: BTreeMap::new(),
    })
}
