//! Checks a parsed grammar: symbols, forms, weights, productivity, reachability.

use super::error::SourceError;
use super::format::{Grammar, Source};
use super::sampler::Semantics;
use std::collections::{BTreeMap, BTreeSet};

/// A problem that does not stop loading.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning(pub String);

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a form catalogue says is wrong with one alternative.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FormProblem {
    pub message: String,
    /// Text to look for inside the alternative to point at the problem.
    pub near: Option<String>,
}

/// Validates `g` against its source text and the forms `sem` knows.
pub fn validate<S: Semantics>(
    g: &Grammar,
    src: &Source,
    sem: &S,
) -> Result<Vec<Warning>, SourceError> {
    let err_rule = |sym: &str, msg: String| {
        let mut e = SourceError::new(msg).in_file(&src.path);
        e.pos = src.pos_of_rule(sym);
        e
    };
    let err_alt = |sym: &str, idx: usize, near: &str, msg: String| {
        let mut e = SourceError::new(msg).in_file(&src.path);
        e.pos = src.pos_in_alt(sym, idx, near);
        e
    };

    if !g.rules.contains_key(&g.start) {
        let mut e = SourceError::new(format!(
            "start symbol `{}` is not defined; defined symbols: {}",
            g.start,
            g.rules.keys().cloned().collect::<Vec<_>>().join(", ")
        ))
        .in_file(&src.path);
        e.pos = src.pos_of("start");
        return Err(e);
    }

    for (sym, alts) in &g.rules {
        if alts.is_empty() {
            return Err(err_rule(
                sym,
                format!("nonterminal `{sym}` has no alternatives"),
            ));
        }
        for (idx, alt) in alts.iter().enumerate() {
            if !(alt.weight.is_finite() && alt.weight > 0.0) {
                return Err(err_alt(
                    sym,
                    idx,
                    "weight",
                    format!(
                        "alternative {} of `{sym}` has weight {}; weights must be positive",
                        idx + 1,
                        alt.weight
                    ),
                ));
            }
            for child in &alt.children {
                if !g.rules.contains_key(child) {
                    return Err(err_alt(
                        sym,
                        idx,
                        &format!("\"{child}\""),
                        format!(
                            "alternative {} of `{sym}` uses undefined symbol `{child}`",
                            idx + 1
                        ),
                    ));
                }
            }
            for (name, choices) in &alt.params {
                for (value, w) in &choices.0 {
                    if !(w.is_finite() && *w > 0.0) {
                        return Err(err_alt(
                            sym,
                            idx,
                            &format!("\"{name}\""),
                            format!(
                                "choice `{value}` of parameter `{name}` in `{sym}` alternative {} has weight {w}; weights must be positive",
                                idx + 1
                            ),
                        ));
                    }
                }
            }
            if let Err(p) = sem.check_alternative(alt) {
                let near = p.near.unwrap_or_else(|| format!("\"{}\"", alt.form));
                return Err(err_alt(
                    sym,
                    idx,
                    &near,
                    format!("`{sym}` alternative {}: {}", idx + 1, p.message),
                ));
            }
        }
    }

    let heights = min_heights(g);
    if let Some(sym) = g.rules.keys().find(|s| !heights.contains_key(*s)) {
        return Err(err_rule(
            sym,
            format!(
                "nonterminal `{sym}` can never finish a derivation: every alternative needs a symbol that cannot finish ({})",
                unproductive(g, &heights).join(", ")
            ),
        ));
    }

    let reach = reachable(g);
    Ok(g.rules
        .keys()
        .filter(|s| !reach.contains(*s))
        .map(|s| {
            Warning(format!(
                "nonterminal `{s}` is unreachable from start `{}`",
                g.start
            ))
        })
        .collect())
}

/// The smallest derivation height of each productive symbol (a terminal
/// alternative has height 1). Unproductive symbols are absent: this is the
/// productive-set fixpoint.
pub fn min_heights(g: &Grammar) -> BTreeMap<String, usize> {
    let mut h: BTreeMap<String, usize> = BTreeMap::new();
    loop {
        let mut changed = false;
        for (sym, alts) in &g.rules {
            for alt in alts {
                let child_max = alt
                    .children
                    .iter()
                    .map(|c| h.get(c).copied())
                    .try_fold(0usize, |m, c| c.map(|c| m.max(c)));
                if let Some(m) = child_max {
                    let cand = m + 1;
                    if h.get(sym).is_none_or(|&old| cand < old) {
                        h.insert(sym.clone(), cand);
                        changed = true;
                    }
                }
            }
        }
        if !changed {
            return h;
        }
    }
}

fn unproductive(g: &Grammar, heights: &BTreeMap<String, usize>) -> Vec<String> {
    g.rules
        .keys()
        .filter(|s| !heights.contains_key(*s))
        .cloned()
        .collect()
}

fn reachable(g: &Grammar) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut stack = vec![g.start.clone()];
    while let Some(s) = stack.pop() {
        if !seen.insert(s.clone()) {
            continue;
        }
        if let Some(alts) = g.rules.get(&s) {
            for alt in alts {
                stack.extend(alt.children.iter().cloned());
            }
        }
    }
    seen
}
