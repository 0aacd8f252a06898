//! Matches a hand-written term against a grammar: finds the symbols and
//! alternatives that derive it, or says where it leaves the grammar.

use super::derivation::Derivation;
use super::format::Grammar;
use super::sampler::{Node, Semantics};
use super::value::{same_params, with_param, Value};

/// Why a term is not in the grammar: the deepest mismatch found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotDerivable {
    /// Child indices from the root to the node that did not match.
    pub path: Vec<usize>,
    pub message: String,
}

impl std::fmt::Display for NotDerivable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            write!(f, "at the root: {}", self.message)
        } else {
            let p: Vec<String> = self.path.iter().map(|i| i.to_string()).collect();
            write!(f, "at child path {}: {}", p.join("."), self.message)
        }
    }
}

/// Annotates `term` (symbols, alternatives, fixed parameters filled in) as a
/// derivation of the grammar's start symbol.
pub fn annotate<S: Semantics>(
    g: &Grammar,
    sem: &S,
    term: &Derivation,
) -> Result<Derivation, NotDerivable> {
    let mut best = None;
    match_symbol(g, sem, &g.start, term, &mut Vec::new(), &mut best).ok_or_else(|| {
        best.unwrap_or(NotDerivable {
            path: vec![],
            message: "does not match the grammar".into(),
        })
    })
}

fn keep_deepest(best: &mut Option<NotDerivable>, path: &[usize], message: String) {
    if best.as_ref().is_none_or(|b| path.len() >= b.path.len()) {
        *best = Some(NotDerivable {
            path: path.to_vec(),
            message,
        });
    }
}

/// The value of `name` in `term`'s canonical spelling when the grammar's
/// choices for it do not list the term's value (or the term leaves it out)
/// but it has no effect there: some choice (every choice, when left out)
/// gives the same canonical node. Terms canonicalised with a fixed value the
/// grammar never offers still match, and so do older spellings.
fn stand_in<S: Semantics>(
    sem: &S,
    term: &Derivation,
    name: &str,
    choices: &[(Value, f64)],
) -> Option<Value> {
    let canon = |params: &[(String, Value)]| {
        sem.canonical(&Node {
            form: &term.form,
            params,
        })
    };
    let value_in = |params: &[(String, Value)]| {
        params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    match term.param(name) {
        Some(v) if choices.iter().any(|(c, _)| c.same(v)) => None,
        Some(_) => {
            let own = canon(&term.params);
            choices
                .iter()
                .any(|(c, _)| same_params(&canon(&with_param(&term.params, name, c)), &own))
                .then(|| value_in(&own))
                .flatten()
        }
        None if choices.len() > 1 => {
            let all: Vec<_> = choices
                .iter()
                .map(|(c, _)| canon(&with_param(&term.params, name, c)))
                .collect();
            all.windows(2)
                .all(|w| same_params(&w[0], &w[1]))
                .then(|| value_in(&all[0]))
                .flatten()
        }
        None => None,
    }
}

fn match_symbol<S: Semantics>(
    g: &Grammar,
    sem: &S,
    sym: &str,
    term: &Derivation,
    path: &mut Vec<usize>,
    best: &mut Option<NotDerivable>,
) -> Option<Derivation> {
    let alts = g.rules.get(sym)?;
    let mut tried_form = false;
    'alts: for (ai, alt) in alts.iter().enumerate() {
        if alt.form != term.form {
            continue;
        }
        tried_form = true;
        // Parameters: every one the alternative has, with a value among its choices.
        let mut params = Vec::with_capacity(alt.params.len());
        for (name, choices) in &alt.params {
            if let Some(v) = stand_in(sem, term, name, &choices.0) {
                params.push((name.clone(), v));
                continue;
            }
            match term.param(name) {
                Some(v) => {
                    if !choices.0.iter().any(|(c, _)| c.same(v)) {
                        let allowed: Vec<String> =
                            choices.0.iter().map(|(c, _)| c.to_string()).collect();
                        keep_deepest(
                            best,
                            path,
                            format!(
                                "`{}` has {name}={v}, but `{sym}` allows {name} in [{}]",
                                term.form,
                                allowed.join(", ")
                            ),
                        );
                        continue 'alts;
                    }
                    // Keep the grammar's spelling so `1` and `1.0` print alike.
                    let canon = choices
                        .0
                        .iter()
                        .find(|(c, _)| c.same(v))
                        .map(|(c, _)| c.clone());
                    params.push((name.clone(), canon.unwrap_or_else(|| v.clone())));
                }
                None if choices.0.len() == 1 => params.push((name.clone(), choices.0[0].0.clone())),
                None => {
                    keep_deepest(
                        best,
                        path,
                        format!("`{}` needs parameter `{name}` (in `{sym}`)", term.form),
                    );
                    continue 'alts;
                }
            }
        }
        if let Some((extra, _)) = term
            .params
            .iter()
            .find(|(n, _)| !alt.params.iter().any(|(m, _)| m == n))
        {
            keep_deepest(
                best,
                path,
                format!("`{}` in `{sym}` has no parameter `{extra}`", term.form),
            );
            continue;
        }
        let node = Node {
            form: &alt.form,
            params: &params,
        };
        let n = sem.arity(&node, alt.children.len());
        if n != term.children.len() {
            keep_deepest(
                best,
                path,
                format!(
                    "`{}` in `{sym}` takes {n} child(ren), found {}",
                    term.form,
                    term.children.len()
                ),
            );
            continue;
        }
        let mut kids = Vec::with_capacity(n);
        for (i, child) in term.children.iter().enumerate() {
            let child_sym = &alt.children[i.min(alt.children.len().saturating_sub(1))];
            path.push(i);
            let m = match_symbol(g, sem, child_sym, child, path, best);
            path.pop();
            match m {
                Some(d) => kids.push(d),
                None => continue 'alts,
            }
        }
        return Some(Derivation {
            symbol: Some(sym.to_string()),
            alt: Some(ai as u32),
            form: alt.form.clone(),
            params,
            children: kids,
        });
    }
    if !tried_form {
        let forms: Vec<&str> = {
            let mut f: Vec<&str> = alts.iter().map(|a| a.form.as_str()).collect();
            f.dedup();
            f
        };
        keep_deepest(
            best,
            path,
            format!(
                "`{}` is not an alternative of `{sym}` (it allows: {})",
                term.form,
                forms.join(", ")
            ),
        );
    }
    None
}
