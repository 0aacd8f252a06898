//! Mutation of derivations, as in einspace's evolutionary search: pick a
//! node uniformly (root included), then either resample its subtree from
//! its symbol with the same input state, or retune one of its parameters.
//! The mutant is replayed whole, so it is valid and within limits, and it
//! always differs from the parent.

use super::derivation::Derivation;
use super::sampler::{canonicalise, pick_weighted, Node, Reject, SampleError, Sampler, Semantics};
use super::value::{same_params, with_param, Value};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// What a mutation changed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Mutation {
    /// Child indices from the root to the mutated node.
    pub path: Vec<usize>,
    /// `"subtree"` or `"param"`.
    pub kind: String,
    /// Human-readable summary, e.g. `heads: 2 -> 4 at 0.1.0`.
    pub detail: String,
}

/// Tries per mutation before giving up (einspace uses 10 before falling back
/// to a fresh sample).
const TRIES: usize = 10;

/// Probability of retuning a parameter rather than resampling a subtree,
/// when the node has a parameter with more than one choice.
const PARAM_PROB: f64 = 0.5;

impl<S: Semantics> Sampler<'_, S> {
    /// The input state of the node at `path`, and its depth (root = 1).
    pub fn state_at(
        &self,
        d: &Derivation,
        path: &[usize],
        input: &S::State,
    ) -> Result<S::State, Reject> {
        let mut node = d;
        let mut state = input.clone();
        for &i in path {
            let n = Node {
                form: &node.form,
                params: &node.params,
            };
            let mut outs = Vec::with_capacity(i);
            for c in 0..i {
                let cin =
                    self.semantics()
                        .child_input(&n, &state, c, node.children.len(), &outs)?;
                outs.push(super::sampler::replay(
                    self.semantics(),
                    &node.children[c],
                    &cin,
                )?);
            }
            state = self
                .semantics()
                .child_input(&n, &state, i, node.children.len(), &outs)?;
            node = node
                .children
                .get(i)
                .ok_or_else(|| Reject::new("path", "mutation path leaves the tree"))?;
        }
        Ok(state)
    }

    /// A valid mutant of `d` (which must carry grammar annotations, as
    /// sampled derivations do).
    pub fn mutate(
        &self,
        d: &Derivation,
        input: &S::State,
        rng: &mut ChaCha8Rng,
    ) -> Result<(Derivation, Mutation), SampleError> {
        let paths = d.paths();
        let mut last = Reject::new("mutation", "no node could be changed");
        for _ in 0..TRIES {
            let path = paths[rng.gen_range(0..paths.len())].clone();
            let attempt = if rng.gen_bool(PARAM_PROB) {
                self.retune(d, &path, input, rng)
                    .or_else(|_| self.resample(d, &path, input, rng))
            } else {
                self.resample(d, &path, input, rng)
            };
            match attempt {
                Ok(m) => return Ok(m),
                Err(r) => last = r,
            }
        }
        Err(SampleError {
            attempts: TRIES,
            reasons: vec![(last.key, 1, last.to_string())],
        })
    }

    fn resample(
        &self,
        d: &Derivation,
        path: &[usize],
        input: &S::State,
        rng: &mut ChaCha8Rng,
    ) -> Result<(Derivation, Mutation), Reject> {
        let old = d.get(path).ok_or_else(|| Reject::new("path", "bad path"))?;
        let symbol = old.symbol.clone().ok_or_else(|| {
            Reject::new("mutation", "the tree is not annotated with grammar symbols")
        })?;
        let state = self.state_at(d, path, input)?;
        // Samples are canonical; an older parent may not be.
        let mut old = old.clone();
        canonicalise(self.semantics(), &mut old);
        for _ in 0..TRIES {
            let (sub, _) = self
                .sample_symbol(&symbol, &state, path.len() + 1, rng, false)
                .map_err(|e| Reject::new(e.main_reason().unwrap_or("sample"), e.to_string()))?;
            if sub == old {
                continue;
            }
            let mut child = d.clone();
            *child.get_mut(path).expect("path checked") = sub;
            if self.replay(&child, input).is_ok() {
                let detail = format!("resampled `{symbol}` at {}", show_path(path));
                return Ok((
                    child,
                    Mutation {
                        path: path.to_vec(),
                        kind: "subtree".into(),
                        detail,
                    },
                ));
            }
        }
        Err(Reject::new("mutation", "no different valid subtree found"))
    }

    fn retune(
        &self,
        d: &Derivation,
        path: &[usize],
        input: &S::State,
        rng: &mut ChaCha8Rng,
    ) -> Result<(Derivation, Mutation), Reject> {
        let old = d.get(path).ok_or_else(|| Reject::new("path", "bad path"))?;
        let alt = match (&old.symbol, old.alt) {
            (Some(s), Some(a)) => self
                .grammar()
                .rules
                .get(s)
                .and_then(|alts| alts.get(a as usize)),
            _ => None,
        }
        .ok_or_else(|| Reject::new("mutation", "the tree is not annotated with grammar symbols"))?;
        let sem = self.semantics();
        let canon = |params: &[(String, Value)]| {
            sem.canonical(&Node {
                form: &old.form,
                params,
            })
        };
        // Only values that make another network: a parameter with no effect
        // here (given the others) is not retuned.
        let changes = |params: &[(String, Value)], name: &str, v: &Value| {
            !same_params(&canon(&with_param(params, name, v)), &canon(params))
        };
        let options: Vec<(usize, Vec<&(Value, f64)>)> = alt
            .params
            .iter()
            .enumerate()
            .filter_map(|(i, (name, c))| {
                let others: Vec<&(Value, f64)> =
                    c.0.iter()
                        .filter(|(v, _)| changes(&old.params, name, v))
                        .collect();
                (!others.is_empty()).then_some((i, others))
            })
            .collect();
        if options.is_empty() {
            return Err(Reject::new("mutation", "no parameter to retune"));
        }
        let (at, others) = &options[rng.gen_range(0..options.len())];
        let name = &alt.params[*at].0;
        let new_value = others[pick_weighted(others, |c| c.1, rng)].0.clone();
        let mut params = with_param(&old.params, name, &new_value);
        // A parameter that had no effect and now has one (an expert-choice
        // router retuned to token choice makes `top_k` count) is drawn from
        // the grammar's choices: its canonical filler was never a choice.
        for (j, (other, choices)) in alt.params.iter().enumerate() {
            if j == *at || choices.0.len() < 2 {
                continue;
            }
            let was_idle = !choices
                .0
                .iter()
                .any(|(v, _)| changes(&old.params, other, v));
            let listed = params
                .iter()
                .find(|(n, _)| n == other)
                .is_some_and(|(_, v)| choices.0.iter().any(|(c, _)| c.same(v)));
            let live = choices.0.iter().any(|(v, _)| changes(&params, other, v));
            if live && (was_idle || !listed) {
                let v = &choices.0[pick_weighted(&choices.0, |c| c.1, rng)].0;
                params = with_param(&params, other, v);
            }
        }
        let params = canon(&params);
        let mut child = d.clone();
        let node = child.get_mut(path).expect("path checked");
        node.params = params;
        // A parameter that changes the number of children (repeat's `n`):
        // keep the common prefix, draw the rest.
        let n = self.semantics().arity(
            &Node {
                form: &node.form,
                params: &node.params,
            },
            alt.children.len(),
        );
        if n != node.children.len() {
            if n < node.children.len() {
                node.children.truncate(n);
            } else {
                let state = self.state_at(&child, path, input)?;
                let node_ref = child.get(path).expect("path checked").clone();
                let extended =
                    self.extend_children(&node_ref, &alt.children, &state, path.len(), n, rng)?;
                *child.get_mut(path).expect("path checked") = extended;
            }
        }
        self.replay(&child, input)?;
        let detail = format!(
            "{name}: {} -> {new_value} at {}",
            old.param(name).map_or("default".into(), |v| v.to_string()),
            show_path(path)
        );
        Ok((
            child,
            Mutation {
                path: path.to_vec(),
                kind: "param".into(),
                detail,
            },
        ))
    }

    /// Draws children `node.children.len()..n` of `node` given its input.
    fn extend_children(
        &self,
        node: &Derivation,
        declared: &[String],
        input: &S::State,
        depth: usize,
        n: usize,
        rng: &mut ChaCha8Rng,
    ) -> Result<Derivation, Reject> {
        let mut out = node.clone();
        let sem = self.semantics();
        let view = Node {
            form: &node.form,
            params: &node.params,
        };
        let mut outs = Vec::with_capacity(n);
        for (i, c) in node.children.iter().enumerate() {
            let cin = sem.child_input(&view, input, i, n, &outs)?;
            outs.push(super::sampler::replay(sem, c, &cin)?);
        }
        for i in node.children.len()..n {
            let cin = sem.child_input(&view, input, i, n, &outs)?;
            let sym = &declared[i.min(declared.len().saturating_sub(1))];
            let (sub, st) = self
                .sample_symbol(sym, &cin, depth + 2, rng, false)
                .map_err(|e| Reject::new(e.main_reason().unwrap_or("sample"), e.to_string()))?;
            out.children.push(sub);
            outs.push(st);
        }
        Ok(out)
    }
}

fn show_path(path: &[usize]) -> String {
    if path.is_empty() {
        "the root".into()
    } else {
        path.iter()
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(".")
    }
}

#[cfg(test)]
mod tests {
    use crate::arch::{ArchSemantics, Limits};
    use crate::grammar::Sampler;
    use crate::space::Space;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use std::path::Path;

    /// A subtree that cannot fit (here: any layer, with the parameter limit
    /// just above the embedding and head) costs a mutation its own, smaller
    /// number of attempts; a whole network still gets the full number.
    #[test]
    fn a_redraw_that_cannot_fit_gives_up_after_the_mutation_attempts() {
        let s = Space::load(Path::new("spaces/quickstart.ron")).unwrap();
        let tight = ArchSemantics::new(
            *s.ctx(),
            Limits {
                max_params: Some(1100.0),
                ..s.sem.limits
            },
        );
        let config = s.sampler_config;
        assert!(config.mutation_attempts < config.max_attempts);
        let sampler = Sampler::new(&s.grammar, &tight, config);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let start = tight.start();
        let redraw = sampler.sample_symbol("layer", &start, 2, &mut rng, false);
        assert_eq!(redraw.unwrap_err().attempts, config.mutation_attempts);
        let whole = sampler.sample_symbol("network", &start, 1, &mut rng, true);
        assert_eq!(whole.unwrap_err().attempts, config.max_attempts);
    }

    #[test]
    fn mutants_differ_from_their_parent_and_stay_valid() {
        for name in ["quickstart", "einspace"] {
            let s = Space::load(Path::new(&format!("spaces/{name}.ron"))).unwrap();
            let mut rng = ChaCha8Rng::seed_from_u64(4);
            let parent = s.sample(&mut rng).unwrap();
            for _ in 0..20 {
                let (child, m) = s.mutate(&parent.term, &mut rng).unwrap();
                assert_ne!(child.text(), parent.text(), "{name}: {m:?}");
                assert_eq!(s.check(&child), Ok(()), "{name}: {}", child.text());
                let again = s.parse_arch(&child.text()).unwrap();
                assert_eq!(again.text(), child.text());
            }
        }
    }
}
