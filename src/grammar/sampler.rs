//! Top-down PCFG sampling that only takes choices the semantics admits.
//!
//! The grammar knows syntax and probabilities; what a form does to the shape
//! state (and what it costs) is supplied by a [`Semantics`], so this module
//! never needs to know about ops. Choices that cannot complete are removed and
//! another is drawn (einspace-style backtracking), under a bounded budget.

use super::derivation::Derivation;
use super::format::{Alternative, Grammar};
use super::value::Value;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, HashMap};
use std::fmt;

/// A form with chosen parameters, as the semantics sees it.
#[derive(Clone, Copy, Debug)]
pub struct Node<'a> {
    pub form: &'a str,
    pub params: &'a [(String, Value)],
}

impl Node<'_> {
    pub fn param(&self, name: &str) -> Option<&Value> {
        self.params.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }
}

/// Why a choice was refused. `key` groups reasons for the final report
/// (`"max_params"`, `"shape"`, ..); `detail` is one example. Limit
/// rejections carry their numbers unformatted in `measure` (value, limit):
/// the sampler refuses thousands of choices and keeps one example per key.
#[derive(Clone, Debug, PartialEq)]
pub struct Reject {
    pub key: &'static str,
    pub detail: String,
    pub measure: Option<(f64, f64)>,
}

impl Reject {
    pub fn new(key: &'static str, detail: impl Into<String>) -> Self {
        Reject {
            key,
            detail: detail.into(),
            measure: None,
        }
    }

    /// `what` = `value`, above the limit `key` = `max`.
    pub fn over(key: &'static str, what: &'static str, value: f64, max: f64) -> Self {
        Reject {
            key,
            detail: what.to_string(),
            measure: Some((value, max)),
        }
    }
}

impl fmt::Display for Reject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.measure {
            Some((v, m)) => write!(f, "{}: {} {v:.4e} > {m:.4e}", self.key, self.detail),
            None => write!(f, "{}: {}", self.key, self.detail),
        }
    }
}

/// What a form catalogue says is wrong with one alternative.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FormProblem {
    pub message: String,
    /// Text to look for inside the alternative to point at the problem.
    pub near: Option<String>,
}

/// What forms mean: how they transform the state flowing through a derivation.
pub trait Semantics {
    type State: Clone;

    /// Load-time check of an alternative: known form, parameter names and value
    /// kinds, number of child symbols.
    fn check_alternative(&self, alt: &Alternative) -> Result<(), FormProblem>;

    /// Number of child subtrees of a node whose alternative declares
    /// `declared` child symbols (child `i` expands symbol `min(i, declared-1)`).
    fn arity(&self, node: &Node, declared: usize) -> usize;

    /// Whether the node may be applied to `input`, before its children exist.
    fn admit(&self, node: &Node, input: &Self::State) -> Result<(), Reject>;

    /// Input state of child `i` of `n`, given the outputs of children `0..i`.
    fn child_input(
        &self,
        node: &Node,
        input: &Self::State,
        i: usize,
        n: usize,
        done: &[Self::State],
    ) -> Result<Self::State, Reject>;

    /// The node's output state once all children are expanded.
    fn output(
        &self,
        node: &Node,
        input: &Self::State,
        children: &[Self::State],
    ) -> Result<Self::State, Reject>;

    /// Whole-network check of the final state (output layout, global limits).
    fn finish(&self, out: &Self::State) -> Result<(), Reject>;

    /// The node's parameters with every one that cannot change the network
    /// (given the others) set to one canonical value, so that one network
    /// has one derivation. The sampler merges choices that canonicalise
    /// alike and mutation never proposes a change that canonicalises away.
    fn canonical(&self, node: &Node) -> Vec<(String, Value)> {
        node.params.to_vec()
    }
}

/// `d` with every node's parameters canonical (see [`Semantics::canonical`]).
pub fn canonical<S: Semantics>(sem: &S, d: &Derivation) -> Derivation {
    Derivation {
        symbol: d.symbol.clone(),
        alt: d.alt,
        form: d.form.clone(),
        params: sem.canonical(&Node {
            form: &d.form,
            params: &d.params,
        }),
        children: d.children.iter().map(|c| canonical(sem, c)).collect(),
    }
}

/// Bounds that keep sampling finite.
#[derive(Clone, Copy, Debug)]
pub struct SamplerConfig {
    /// Maximum derivation height (the root is depth 1).
    pub max_depth: usize,
    /// Node expansions allowed in one attempt before it is abandoned.
    pub max_expansions: usize,
    /// Attempts (restarts from the root) before giving up.
    pub max_attempts: usize,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig {
            max_depth: 16,
            max_expansions: 1000,
            max_attempts: 200,
        }
    }
}

/// Sampling gave up: no attempt produced a valid network.
#[derive(Clone, Debug, PartialEq)]
pub struct SampleError {
    pub attempts: usize,
    /// Reasons by how often they refused a choice: (key, count, example).
    pub reasons: Vec<(&'static str, u64, String)>,
}

impl SampleError {
    /// The limit or rule that refused most choices.
    pub fn main_reason(&self) -> Option<&'static str> {
        self.reasons.first().map(|r| r.0)
    }
}

impl fmt::Display for SampleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "no valid architecture after {} attempts; choices were refused by",
            self.attempts
        )?;
        let total: u64 = self.reasons.iter().map(|r| r.1).sum::<u64>().max(1);
        for (i, (key, n, ex)) in self.reasons.iter().take(3).enumerate() {
            let sep = if i == 0 { " " } else { "; " };
            write!(
                f,
                "{sep}{key} ({:.0}%, e.g. {ex})",
                100.0 * *n as f64 / total as f64
            )?;
        }
        write!(f, ". Relax that limit or change the grammar's weights.")
    }
}

impl std::error::Error for SampleError {}

#[derive(Default)]
struct Tally {
    expansions: usize,
    reasons: BTreeMap<&'static str, (u64, String)>,
}

impl Tally {
    fn note(&mut self, r: Reject) {
        let e = self.reasons.entry(r.key).or_insert((0, String::new()));
        e.0 += 1;
        if e.1.is_empty() {
            e.1 = r.to_string();
        }
    }
}

/// Samples derivations of one grammar under one semantics.
pub struct Sampler<'a, S: Semantics> {
    grammar: &'a Grammar,
    sem: &'a S,
    pub config: SamplerConfig,
}

/// Above this many parameter combinations an alternative's parameters are drawn
/// independently with rejection instead of enumerated.
const MAX_ENUMERATED_COMBOS: usize = 1024;

impl<'a, S: Semantics> Sampler<'a, S> {
    pub fn new(grammar: &'a Grammar, sem: &'a S, config: SamplerConfig) -> Self {
        Sampler {
            grammar,
            sem,
            config,
        }
    }

    pub fn grammar(&self) -> &Grammar {
        self.grammar
    }

    pub fn semantics(&self) -> &S {
        self.sem
    }

    /// Samples a whole network from the start symbol.
    pub fn sample(
        &self,
        input: &S::State,
        rng: &mut ChaCha8Rng,
    ) -> Result<(Derivation, S::State), SampleError> {
        self.sample_symbol(&self.grammar.start, input, 1, rng, true)
    }

    /// Samples a subtree for `symbol` at `depth` from `input` (used by mutation).
    /// With `whole`, the result must also pass [`Semantics::finish`].
    pub fn sample_symbol(
        &self,
        symbol: &str,
        input: &S::State,
        depth: usize,
        rng: &mut ChaCha8Rng,
        whole: bool,
    ) -> Result<(Derivation, S::State), SampleError> {
        let mut tally = Tally::default();
        for _ in 0..self.config.max_attempts {
            tally.expansions = 0;
            if let Some((d, out)) = self.expand(symbol, input, depth, rng, &mut tally) {
                if !whole {
                    return Ok((d, out));
                }
                match self.sem.finish(&out) {
                    Ok(()) => return Ok((d, out)),
                    Err(r) => tally.note(r),
                }
            }
        }
        let mut reasons: Vec<_> = tally
            .reasons
            .into_iter()
            .map(|(k, (n, ex))| (k, n, ex))
            .collect();
        reasons.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        Err(SampleError {
            attempts: self.config.max_attempts,
            reasons,
        })
    }

    fn alt_height(&self, alt: &Alternative) -> usize {
        1 + alt
            .children
            .iter()
            .map(|c| {
                self.grammar
                    .min_heights
                    .get(c)
                    .copied()
                    .unwrap_or(usize::MAX / 2)
            })
            .max()
            .unwrap_or(0)
    }

    fn expand(
        &self,
        symbol: &str,
        input: &S::State,
        depth: usize,
        rng: &mut ChaCha8Rng,
        tally: &mut Tally,
    ) -> Option<(Derivation, S::State)> {
        tally.expansions += 1;
        if tally.expansions > self.config.max_expansions {
            tally.note(Reject::new(
                "max_expansions",
                format!(
                    "more than {} expansions in one attempt",
                    self.config.max_expansions
                ),
            ));
            return None;
        }
        let alts = self.grammar.rules.get(symbol)?;
        let room = (self.config.max_depth + 1).saturating_sub(depth);
        let mut cands: Vec<(usize, f64)> = alts
            .iter()
            .enumerate()
            .filter(|(_, a)| self.alt_height(a) <= room)
            .map(|(i, a)| (i, a.weight))
            .collect();
        if cands.is_empty() {
            tally.note(Reject::new(
                "max_depth",
                format!(
                    "`{symbol}` cannot finish within depth {}",
                    self.config.max_depth
                ),
            ));
            return None;
        }
        while !cands.is_empty() {
            let k = pick(&cands, rng);
            let ai = cands[k].0;
            let alt = &alts[ai];
            let mut combos = self.admissible_combos(alt, input, rng, tally);
            while !combos.is_empty() {
                if tally.expansions > self.config.max_expansions {
                    return None;
                }
                let c = pick_weighted(&combos, |x| x.1, rng);
                let (params, _) = combos.swap_remove(c);
                if let Some(found) =
                    self.expand_children(symbol, ai, alt, params, input, depth, rng, tally)
                {
                    return Some(found);
                }
            }
            cands.swap_remove(k);
        }
        None
    }

    #[allow(clippy::too_many_arguments)]
    fn expand_children(
        &self,
        symbol: &str,
        ai: usize,
        alt: &Alternative,
        params: Vec<(String, Value)>,
        input: &S::State,
        depth: usize,
        rng: &mut ChaCha8Rng,
        tally: &mut Tally,
    ) -> Option<(Derivation, S::State)> {
        let node = Node {
            form: &alt.form,
            params: &params,
        };
        let n = self.sem.arity(&node, alt.children.len());
        // Each child costs an expansion, so more than the budget never fills.
        let room = n.min(self.config.max_expansions);
        let mut outs: Vec<S::State> = Vec::with_capacity(room);
        let mut kids = Vec::with_capacity(room);
        for i in 0..n {
            let child_sym = &alt.children[i.min(alt.children.len().saturating_sub(1))];
            let child_in = match self.sem.child_input(&node, input, i, n, &outs) {
                Ok(s) => s,
                Err(r) => {
                    tally.note(r);
                    return None;
                }
            };
            let (d, out) = self.expand(child_sym, &child_in, depth + 1, rng, tally)?;
            kids.push(d);
            outs.push(out);
        }
        match self.sem.output(&node, input, &outs) {
            Ok(out) => Some((
                Derivation {
                    symbol: Some(symbol.to_string()),
                    alt: Some(ai as u32),
                    form: alt.form.clone(),
                    params,
                    children: kids,
                },
                out,
            )),
            Err(r) => {
                tally.note(r);
                None
            }
        }
    }

    /// Parameter assignments of `alt` the semantics admits at `input`, with
    /// their probability weights.
    fn admissible_combos(
        &self,
        alt: &Alternative,
        input: &S::State,
        rng: &mut ChaCha8Rng,
        tally: &mut Tally,
    ) -> Vec<(Vec<(String, Value)>, f64)> {
        let total: usize = alt
            .params
            .iter()
            .map(|(_, c)| c.0.len())
            .try_fold(1usize, |a, n| a.checked_mul(n))
            .unwrap_or(usize::MAX);
        let mut out: Vec<(Vec<(String, Value)>, f64)> = Vec::new();
        // Choices that canonicalise alike are one choice with their weights
        // summed: the same distribution over networks, one spelling each.
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut admit = |params: Vec<(String, Value)>, w: f64, tally: &mut Tally| {
            let node = Node {
                form: &alt.form,
                params: &params,
            };
            match self.sem.admit(&node, input) {
                Ok(()) => {
                    let params = self.sem.canonical(&node);
                    let key: String = params.iter().map(|(n, v)| format!("{n}={v},")).collect();
                    match index.get(&key) {
                        Some(&i) => out[i].1 += w,
                        None => {
                            index.insert(key, out.len());
                            out.push((params, w));
                        }
                    }
                }
                Err(r) => tally.note(r),
            }
        };
        if total <= MAX_ENUMERATED_COMBOS {
            let mut idx = vec![0usize; alt.params.len()];
            'outer: loop {
                let mut w = 1.0;
                let params = alt
                    .params
                    .iter()
                    .zip(&idx)
                    .map(|((name, c), &j)| {
                        w *= c.0[j].1;
                        (name.clone(), c.0[j].0.clone())
                    })
                    .collect();
                admit(params, w, tally);
                for d in (0..idx.len()).rev() {
                    idx[d] += 1;
                    if idx[d] < alt.params[d].1 .0.len() {
                        continue 'outer;
                    }
                    idx[d] = 0;
                }
                break;
            }
        } else {
            // Too many to list: a few independent draws stand in for the set.
            for _ in 0..64 {
                let params = alt
                    .params
                    .iter()
                    .map(|(name, c)| {
                        let j = pick_weighted(&c.0, |x| x.1, rng);
                        (name.clone(), c.0[j].0.clone())
                    })
                    .collect();
                admit(params, 1.0, tally);
            }
        }
        out
    }

    /// Re-runs the semantics over an existing tree: validity and final state.
    /// Checks depth against the configured maximum too.
    pub fn replay(&self, d: &Derivation, input: &S::State) -> Result<S::State, Reject> {
        if d.height() > self.config.max_depth {
            return Err(Reject::new(
                "max_depth",
                format!(
                    "derivation height {} exceeds max_depth {}",
                    d.height(),
                    self.config.max_depth
                ),
            ));
        }
        let out = replay(self.sem, d, input)?;
        self.sem.finish(&out)?;
        Ok(out)
    }
}

/// Runs `sem` over a tree without a grammar (used for hand-written terms).
pub fn replay<S: Semantics>(sem: &S, d: &Derivation, input: &S::State) -> Result<S::State, Reject> {
    let node = Node {
        form: &d.form,
        params: &d.params,
    };
    sem.admit(&node, input)?;
    let mut outs = Vec::with_capacity(d.children.len());
    for (i, c) in d.children.iter().enumerate() {
        let child_in = sem.child_input(&node, input, i, d.children.len(), &outs)?;
        outs.push(replay(sem, c, &child_in)?);
    }
    sem.output(&node, input, &outs)
}

fn pick(cands: &[(usize, f64)], rng: &mut ChaCha8Rng) -> usize {
    pick_weighted(cands, |c| c.1, rng)
}

pub(super) fn pick_weighted<T>(items: &[T], w: impl Fn(&T) -> f64, rng: &mut ChaCha8Rng) -> usize {
    let total: f64 = items.iter().map(&w).sum();
    let mut x = rng.gen::<f64>() * total;
    for (i, it) in items.iter().enumerate() {
        x -= w(it);
        if x < 0.0 {
            return i;
        }
    }
    items.len() - 1
}

#[cfg(test)]
mod tests {
    use crate::space::Space;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use std::path::Path;

    fn space(name: &str) -> Space {
        Space::load(Path::new(&format!("spaces/{name}.ron"))).unwrap()
    }

    #[test]
    fn a_seed_draws_the_same_valid_samples_within_the_limits() {
        for name in ["quickstart", "moe-heavy", "einspace"] {
            let s = space(name);
            let draw = |seed| {
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                (0..8)
                    .map(|_| s.sample(&mut rng).unwrap())
                    .collect::<Vec<_>>()
            };
            let (a, b) = (draw(3), draw(3));
            assert_eq!(
                a.iter().map(|n| n.text()).collect::<Vec<_>>(),
                b.iter().map(|n| n.text()).collect::<Vec<_>>()
            );
            let l = &s.file.limits;
            for n in &a {
                assert!(n.term.height() <= l.max_depth, "{name}: {}", n.text());
                assert!(l.max_params.is_none_or(|m| n.cost.params <= m), "{name}");
                assert!(l.max_flops.is_none_or(|m| n.cost.flops <= m), "{name}");
                assert_eq!(s.check(n), Ok(()), "{name}: {}", n.text());
                assert_eq!(crate::arch::check(&n.arch), Ok(()));
                // The text form reads back through the grammar as the same network.
                let again = s.parse_arch(&n.text()).unwrap();
                assert_eq!((again.text(), again.cost), (n.text(), n.cost));
            }
            let distinct: std::collections::HashSet<_> = a.iter().map(|n| n.text()).collect();
            assert!(distinct.len() > 1, "{name}: every sample alike");
        }
    }
}
