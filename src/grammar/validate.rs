//! Checks a parsed grammar: symbols, forms, weights, productivity, reachability.

use super::format::{Grammar, Source};
use super::sampler::Semantics;
use crate::diag::SourceError;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// A problem that does not stop loading.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning(pub String);

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
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
            // The sampler draws a parameter combination with probability
            // proportional to the product of its choices' weights, out of
            // their total: both must stay finite and non-zero floats, or one
            // choice silently always wins.
            let (total, least) = alt.params.iter().fold((1.0f64, 1.0f64), |(t, l), (_, c)| {
                let sum: f64 = c.0.iter().map(|x| x.1).sum();
                let min = c.0.iter().map(|x| x.1).fold(f64::INFINITY, f64::min);
                (t * sum, l * min)
            });
            if !(total.is_finite() && least > 0.0) {
                return Err(err_alt(
                    sym,
                    idx,
                    "params",
                    format!(
                        "the choice weights of `{sym}` alternative {} are too large or too small to draw from (their combinations weigh {total:e} in all, the lightest {least:e}); keep weights near 1",
                        idx + 1
                    ),
                ));
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

    for (sym, alts) in &g.rules {
        let total: f64 = alts.iter().map(|a| a.weight).sum();
        if !total.is_finite() {
            return Err(err_rule(
                sym,
                format!(
                    "the weights of `{sym}`'s alternatives add up to {total}, more than a 64-bit float holds; keep weights near 1"
                ),
            ));
        }
    }

    let heights = &g.min_heights;
    if let Some(sym) = g.rules.keys().find(|s| !heights.contains_key(*s)) {
        return Err(err_rule(
            sym,
            format!(
                "nonterminal `{sym}` can never finish a derivation: every alternative needs a symbol that cannot finish ({})",
                unproductive(g, heights).join(", ")
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
    min_heights_counted(g).0
}

/// [`min_heights`] and the number of steps it took. Symbols settle in order
/// of height (a bucket queue), and an alternative is looked at once per
/// child occurrence, so the work is linear in the grammar's size; a plain
/// fixpoint over the rules took one pass per level of a chain, quadratic.
fn min_heights_counted(g: &Grammar) -> (BTreeMap<String, usize>, usize) {
    let syms: Vec<&String> = g.rules.keys().collect();
    let index: HashMap<&str, usize> = syms
        .iter()
        .enumerate()
        .map(|(i, s)| (s.as_str(), i))
        .collect();
    // Per alternative: its symbol and how many child occurrences are not
    // settled yet; per symbol: the alternatives that use it, once per use.
    let mut alt_sym = Vec::new();
    let mut waiting = Vec::new();
    let mut used_by: Vec<Vec<usize>> = vec![Vec::new(); syms.len()];
    // buckets[h]: symbols that some alternative finishes at height h.
    let mut buckets: Vec<Vec<usize>> = vec![Vec::new(), Vec::new()];
    let mut work = 0usize;
    for (si, alts) in g.rules.values().enumerate() {
        for alt in alts {
            let a = alt_sym.len();
            alt_sym.push(si);
            work += alt.children.len();
            let kids: Option<Vec<usize>> = alt
                .children
                .iter()
                .map(|c| index.get(c.as_str()).copied())
                .collect();
            // An alternative with an undefined symbol never finishes.
            let Some(kids) = kids else {
                waiting.push(usize::MAX);
                continue;
            };
            for &ci in &kids {
                used_by[ci].push(a);
            }
            waiting.push(kids.len());
            if kids.is_empty() {
                buckets[1].push(si);
            }
        }
    }
    let mut height: Vec<Option<usize>> = vec![None; syms.len()];
    let mut h = 1;
    while h < buckets.len() {
        let level = std::mem::take(&mut buckets[h]);
        for si in level {
            work += 1;
            if height[si].is_some() {
                continue;
            }
            height[si] = Some(h);
            for &a in &used_by[si] {
                work += 1;
                waiting[a] -= 1;
                if waiting[a] == 0 {
                    // Its last child settled now, at the greatest height.
                    if buckets.len() <= h + 1 {
                        buckets.push(Vec::new());
                    }
                    buckets[h + 1].push(alt_sym[a]);
                }
            }
        }
        h += 1;
    }
    let out = syms
        .iter()
        .zip(height)
        .filter_map(|(s, h)| h.map(|h| ((*s).clone(), h)))
        .collect();
    (out, work)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grammar::Alternative;
    use proptest::prelude::*;

    fn grammar(rules: Vec<(String, Vec<Vec<String>>)>) -> Grammar {
        let rules = rules
            .into_iter()
            .map(|(sym, alts)| {
                let alts = alts
                    .into_iter()
                    .map(|children| Alternative {
                        weight: 1.0,
                        form: "seq".into(),
                        params: vec![],
                        children,
                    })
                    .collect();
                (sym, alts)
            })
            .collect();
        let mut g = Grammar {
            start: "s0".into(),
            rules,
            path: Default::default(),
            min_heights: BTreeMap::new(),
        };
        g.min_heights = min_heights(&g);
        g
    }

    /// The definition, as a plain fixpoint: a reference for the fast one.
    fn fixpoint(g: &Grammar) -> BTreeMap<String, usize> {
        let mut h: BTreeMap<String, usize> = BTreeMap::new();
        loop {
            let mut changed = false;
            for (sym, alts) in &g.rules {
                for alt in alts {
                    let m = alt
                        .children
                        .iter()
                        .map(|c| h.get(c).copied())
                        .try_fold(0usize, |m, c| c.map(|c| m.max(c)));
                    if let Some(m) = m {
                        if h.get(sym).is_none_or(|&old| m + 1 < old) {
                            h.insert(sym.clone(), m + 1);
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

    /// `s0 → s1 → … → sN`, the chain that made loading quadratic (each
    /// pass of a fixpoint over the rules in name order settled one link).
    fn chain(n: usize) -> Grammar {
        let mut rules: Vec<(String, Vec<Vec<String>>)> = (0..n)
            .map(|i| (format!("s{i}"), vec![vec![format!("s{}", i + 1)]]))
            .collect();
        rules.push((format!("s{n}"), vec![vec![]]));
        grammar(rules)
    }

    #[test]
    fn heights_of_a_long_chain_take_linear_work() {
        for n in [1_000, 10_000] {
            let g = chain(n);
            let (h, work) = min_heights_counted(&g);
            assert_eq!(h.len(), n + 1);
            assert_eq!(h["s0"], n + 1);
            assert_eq!(h[&format!("s{n}")], 1);
            // Symbols + alternatives + child references, a few times over;
            // the old fixpoint needed about n²/2 rule visits.
            let size = 3 * (n + 1);
            assert!(work <= 2 * size, "n={n}: {work} steps for size {size}");
        }
    }

    proptest! {
        /// Random grammars (cycles, unproductive symbols, undefined and
        /// repeated children): the same heights as the plain fixpoint.
        #[test]
        fn heights_match_the_fixpoint(
            alts in prop::collection::vec(
                prop::collection::vec(prop::collection::vec(0usize..9, 0..4), 1..4),
                1..8,
            )
        ) {
            let rules = alts
                .iter()
                .enumerate()
                .map(|(i, a)| {
                    let alts = a
                        .iter()
                        .map(|kids| kids.iter().map(|k| format!("s{k}")).collect())
                        .collect();
                    (format!("s{i}"), alts)
                })
                .collect();
            let g = grammar(rules);
            prop_assert_eq!(&g.min_heights, &fixpoint(&g));
        }
    }
}
