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
use smallvec::SmallVec;
use std::borrow::Cow;
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::sync::Mutex;

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
    /// Borrowed where it is fixed text: limit refusals are the sampler's
    /// most frequent, and are made without allocating.
    pub detail: Cow<'static, str>,
    pub measure: Option<(f64, f64)>,
}

impl Reject {
    pub fn new(key: &'static str, detail: impl Into<Cow<'static, str>>) -> Self {
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
            detail: Cow::Borrowed(what),
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

    /// What, besides a node's parameters, decides whether the node is
    /// admitted up to the limits: inputs with one key get one
    /// [`Semantics::admit_charge`], which the sampler keeps per key.
    type Key: Clone + Eq + Hash + Send;

    /// What admitting a node adds to the state before the limits are
    /// checked.
    type Charge: Clone + Send;

    fn admit_key(&self, input: &Self::State) -> Self::Key;

    /// The node's rules at `input`, all but the limits: what it would add.
    /// Must depend on `input` only through [`Semantics::admit_key`].
    fn admit_charge(&self, node: &Node, input: &Self::State) -> Result<Self::Charge, Reject>;

    /// Whether `input` with `charge` added stays within the limits.
    fn admit_within(&self, charge: &Self::Charge, input: &Self::State) -> Result<(), Reject>;

    /// Whether the node may be applied to `input`, before its children exist.
    fn admit(&self, node: &Node, input: &Self::State) -> Result<(), Reject> {
        self.admit_within(&self.admit_charge(node, input)?, input)
    }

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

    /// [`Semantics::canonical`] in place, for a semantics that can fix a
    /// node without copying its parameters.
    fn make_canonical(&self, form: &str, params: &mut Vec<(String, Value)>) {
        *params = self.canonical(&Node { form, params });
    }
}

/// Sets every node's parameters of `d` canonical (see
/// [`Semantics::canonical`]).
pub fn canonicalise<S: Semantics>(sem: &S, d: &mut Derivation) {
    sem.make_canonical(&d.form, &mut d.params);
    for c in &mut d.children {
        canonicalise(sem, c);
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
    /// Attempts at a subtree a mutation redraws (a resampled node, or the
    /// children a retuned `repeat` gains) before giving up on it: the
    /// mutation then tries another node. A subtree that cannot fit where
    /// it is (a fourth MoE layer in a network at its parameter limit)
    /// fails every attempt, and 200 such attempts took about 40 ms, 95% of
    /// the quickstart's mutation time (a redraw that fits was found within
    /// 14 attempts in 2,000 quickstart mutations and 8 in 2,000 einspace
    /// ones, so those are unchanged).
    pub mutation_attempts: usize,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig {
            max_depth: 16,
            max_expansions: 1000,
            max_attempts: 200,
            mutation_attempts: 20,
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
    /// (key, count, the first example), in order of first refusal: a
    /// handful of keys, so a list beats a map.
    reasons: Vec<(&'static str, u64, String)>,
}

impl Tally {
    fn note(&mut self, r: &Reject) {
        self.note_times(r, 1);
    }

    /// `n` refusals for `r`'s key, `r` the first of them.
    fn note_times(&mut self, r: &Reject, n: u64) {
        // Keys are literals, so the same key is nearly always the same
        // pointer: compare that before the text.
        match self
            .reasons
            .iter_mut()
            .find(|e| std::ptr::eq(e.0, r.key) || e.0 == r.key)
        {
            Some(e) => e.1 += n,
            None => self.reasons.push((r.key, n, r.to_string())),
        }
    }
}

/// Samples derivations of one grammar under one semantics.
pub struct Sampler<'a, S: Semantics> {
    grammar: &'a Grammar,
    sem: &'a S,
    tables: Cow<'a, Tables<S>>,
    pub config: SamplerConfig,
}

/// Above this many parameter combinations an alternative's parameters are drawn
/// independently with rejection instead of enumerated.
const MAX_ENUMERATED_COMBOS: usize = 1024;

/// Up to this many combinations an alternative's are listed once in its
/// [`Tables`] (random draws then index the list); above, they are built
/// per draw.
const MAX_TABULATED_COMBOS: usize = 1 << 14;

/// A grammar compiled for sampling under one semantics: symbols as
/// indices, each alternative's height, and every parameter combination
/// with its weight and canonical class, worked out once. Sampling then
/// neither looks names up, clones parameters nor formats keys per choice;
/// it takes the same choices, and the same random numbers, as building
/// everything per draw would. It also keeps what the semantics said of
/// each listed combination at each [`Semantics::admit_key`], so that a
/// combination's rules run once per key rather than once per draw.
pub struct Tables<S: Semantics> {
    ids: HashMap<String, usize>,
    names: Vec<String>,
    /// Per symbol, the grammar's alternatives, so that an expansion finds
    /// them by index rather than by name.
    rules: Vec<Vec<Alternative>>,
    /// Per symbol, per alternative (the grammar's order).
    alts: Vec<Vec<AltTable>>,
    verdicts: Mutex<Verdicts<S>>,
}

/// Up to this many combinations' verdicts are kept (at most 72 bytes
/// each, so under 20 MB); past it, new keys are judged afresh each time,
/// as if nothing were kept.
const MAX_KEPT_VERDICTS: usize = 1 << 18;

/// What [`Semantics::admit_charge`] said, per (symbol, alternative, key).
struct Verdicts<S: Semantics> {
    map: HashMap<(usize, usize, S::Key), Judged<S>, foldhash::fast::RandomState>,
    /// Combinations judged in `map`.
    held: usize,
}

/// One alternative's combinations judged at one key.
enum Judged<S: Semantics> {
    /// All of them, as an alternative whose combinations are enumerated
    /// asks: those admitted with their charges, in the table's order, and
    /// per refusal key the first refusal and how many.
    Listed {
        admitted: Vec<(usize, S::Charge)>,
        refused: Vec<(Reject, u64)>,
    },
    /// One slot per combination, filled as draws ask for them.
    Drawn(Vec<Option<Result<S::Charge, Reject>>>),
}

impl<S: Semantics> Judged<S> {
    fn listed(sem: &S, alt: &Alternative, combos: &[Combo], input: &S::State) -> Self {
        let mut admitted = Vec::new();
        let mut refused: Vec<(Reject, u64)> = Vec::new();
        for (i, c) in combos.iter().enumerate() {
            let node = Node {
                form: &alt.form,
                params: &c.params,
            };
            match sem.admit_charge(&node, input) {
                Ok(charge) => admitted.push((i, charge)),
                Err(r) => match refused.iter_mut().find(|(f, _)| f.key == r.key) {
                    Some((_, n)) => *n += 1,
                    None => refused.push((r, 1)),
                },
            }
        }
        Judged::Listed { admitted, refused }
    }
}

impl<S: Semantics> Default for Verdicts<S> {
    fn default() -> Self {
        Verdicts {
            map: HashMap::default(),
            held: 0,
        }
    }
}

/// A copy starts with no verdicts kept.
impl<S: Semantics> Clone for Tables<S> {
    fn clone(&self) -> Self {
        Tables {
            ids: self.ids.clone(),
            names: self.names.clone(),
            rules: self.rules.clone(),
            alts: self.alts.clone(),
            verdicts: Mutex::default(),
        }
    }
}

impl<S: Semantics> fmt::Debug for Tables<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tables")
            .field("names", &self.names)
            .field("alts", &self.alts)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Debug)]
struct AltTable {
    /// Least derivation height of a subtree starting with this alternative.
    height: usize,
    /// Child symbols; `None` for a name the grammar does not define.
    children: Vec<Option<usize>>,
    /// Every parameter combination, last parameter fastest; `None` when
    /// there are more than [`MAX_TABULATED_COMBOS`].
    combos: Option<Vec<Combo>>,
    /// Number of distinct canonical parameter sets among `combos`.
    classes: usize,
    /// Per parameter, the sum of its choices' weights, for draws of one
    /// combination at a time.
    totals: Vec<f64>,
}

#[derive(Clone, Debug)]
struct Combo {
    params: Vec<(String, Value)>,
    /// Product of the chosen values' weights.
    weight: f64,
    canonical: Vec<(String, Value)>,
    /// Combos with equal canonical text share a class.
    class: usize,
}

/// The identity of a canonical parameter set: combos that canonicalise
/// to the same text are one choice.
fn class_key(params: &[(String, Value)]) -> String {
    params.iter().map(|(n, v)| format!("{n}={v},")).collect()
}

/// Number of parameter combinations of `alt` (saturating).
fn combo_count(alt: &Alternative) -> usize {
    alt.params
        .iter()
        .map(|(_, c)| c.0.len())
        .try_fold(1usize, |a, n| a.checked_mul(n))
        .unwrap_or(usize::MAX)
}

impl<S: Semantics> Tables<S> {
    pub fn new(grammar: &Grammar, sem: &S) -> Tables<S> {
        let names: Vec<String> = grammar.rules.keys().cloned().collect();
        let ids: HashMap<String, usize> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), i))
            .collect();
        let alts = grammar
            .rules
            .values()
            .map(|alts| {
                alts.iter()
                    .map(|alt| AltTable {
                        height: 1 + alt
                            .children
                            .iter()
                            .map(|c| {
                                grammar
                                    .min_heights
                                    .get(c)
                                    .copied()
                                    .unwrap_or(usize::MAX / 2)
                            })
                            .max()
                            .unwrap_or(0),
                        children: alt.children.iter().map(|c| ids.get(c).copied()).collect(),
                        combos: None,
                        classes: 0,
                        totals: alt
                            .params
                            .iter()
                            .map(|(_, c)| weight_total(&c.0, |x| x.1))
                            .collect(),
                    })
                    .collect::<Vec<_>>()
            })
            .collect::<Vec<_>>();
        let mut t = Tables {
            ids,
            names,
            rules: grammar.rules.values().cloned().collect(),
            alts,
            verdicts: Mutex::default(),
        };
        for (sym, alts) in grammar.rules.values().enumerate() {
            for (ai, alt) in alts.iter().enumerate() {
                if combo_count(alt) <= MAX_TABULATED_COMBOS {
                    let (combos, classes) = tabulate(alt, sem);
                    t.alts[sym][ai].combos = Some(combos);
                    t.alts[sym][ai].classes = classes;
                }
            }
        }
        t
    }

    fn id(&self, symbol: &str) -> Option<usize> {
        self.ids.get(symbol).copied()
    }
}

/// Every parameter combination of `alt` in enumeration order (last
/// parameter fastest) with its weight and canonical class.
fn tabulate<S: Semantics>(alt: &Alternative, sem: &S) -> (Vec<Combo>, usize) {
    let mut classes: HashMap<String, usize> = HashMap::new();
    let mut combos = Vec::new();
    let mut idx = vec![0usize; alt.params.len()];
    'outer: loop {
        let mut weight = 1.0;
        let params: Vec<(String, Value)> = alt
            .params
            .iter()
            .zip(&idx)
            .map(|((name, c), &j)| {
                weight *= c.0[j].1;
                (name.clone(), c.0[j].0.clone())
            })
            .collect();
        let canonical = sem.canonical(&Node {
            form: &alt.form,
            params: &params,
        });
        let n = classes.len();
        let class = *classes.entry(class_key(&canonical)).or_insert(n);
        combos.push(Combo {
            params,
            weight,
            canonical,
            class,
        });
        for d in (0..idx.len()).rev() {
            idx[d] += 1;
            if idx[d] < alt.params[d].1 .0.len() {
                continue 'outer;
            }
            idx[d] = 0;
        }
        break;
    }
    (combos, classes.len())
}

/// One admissible parameter choice: a listed combo (its canonical
/// parameters are in the table) or one built for this draw.
enum Choice {
    Listed(usize),
    Built(Vec<(String, Value)>),
}

/// A node of a derivation being drawn. A tree is kept in depth-first
/// order, so a node's subtree is `at..end` and a subtree that fails is
/// the arena's tail: dropping it is a truncation, and nothing is built
/// for the many tries that fail.
struct Drawn {
    sym: usize,
    alt: usize,
    params: Choice,
    end: usize,
}

/// An alternative's admissible choices with their weights; most
/// alternatives have a handful, kept off the heap.
type Admissible = SmallVec<[(Choice, f64); 8]>;

impl<'a, S: Semantics> Sampler<'a, S> {
    /// A sampler that compiles its own [`Tables`]; callers that sample
    /// often keep one `Tables` and use [`Sampler::with_tables`].
    pub fn new(grammar: &'a Grammar, sem: &'a S, config: SamplerConfig) -> Self {
        Sampler {
            grammar,
            sem,
            tables: Cow::Owned(Tables::new(grammar, sem)),
            config,
        }
    }

    /// A sampler over tables compiled from this `grammar` and `sem`.
    pub fn with_tables(
        grammar: &'a Grammar,
        sem: &'a S,
        tables: &'a Tables<S>,
        config: SamplerConfig,
    ) -> Self {
        Sampler {
            grammar,
            sem,
            tables: Cow::Borrowed(tables),
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

    /// Samples a subtree for `symbol` at `depth` from `input`. With `whole`
    /// (a whole network) the result must also pass [`Semantics::finish`];
    /// without it (a mutation's redraw) it has `mutation_attempts` attempts.
    pub fn sample_symbol(
        &self,
        symbol: &str,
        input: &S::State,
        depth: usize,
        rng: &mut ChaCha8Rng,
        whole: bool,
    ) -> Result<(Derivation, S::State), SampleError> {
        let mut tally = Tally::default();
        let sym = self.tables.id(symbol);
        let attempts = if whole {
            self.config.max_attempts
        } else {
            self.config.mutation_attempts
        };
        let mut arena = Vec::new();
        for _ in 0..attempts {
            tally.expansions = 0;
            arena.clear();
            if let Some(out) = self.expand(sym, input, depth, rng, &mut tally, &mut arena) {
                if !whole {
                    return Ok((self.derivation(&arena, 0), out));
                }
                match self.sem.finish(&out) {
                    Ok(()) => return Ok((self.derivation(&arena, 0), out)),
                    Err(r) => tally.note(&r),
                }
            }
        }
        let mut reasons = tally.reasons;
        reasons.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        Err(SampleError { attempts, reasons })
    }

    /// The tree rooted at `arena[at]` as a derivation.
    fn derivation(&self, arena: &[Drawn], at: usize) -> Derivation {
        let node = &arena[at];
        let mut children = Vec::new();
        let mut c = at + 1;
        while c < node.end {
            children.push(self.derivation(arena, c));
            c = arena[c].end;
        }
        Derivation {
            symbol: Some(self.tables.names[node.sym].clone()),
            alt: Some(node.alt as u32),
            form: self.tables.rules[node.sym][node.alt].form.clone(),
            params: self.params(node).to_vec(),
            children,
        }
    }

    /// A drawn node's canonical parameters. `Listed` choices come only
    /// from an alternative whose combinations are tabulated.
    fn params<'s>(&'s self, node: &'s Drawn) -> &'s [(String, Value)] {
        match &node.params {
            Choice::Listed(i) => match &self.tables.alts[node.sym][node.alt].combos {
                Some(combos) => &combos[*i].canonical,
                None => unreachable!("a listed choice of an untabulated alternative"),
            },
            Choice::Built(p) => p,
        }
    }

    /// Expands `symbol` at the end of `arena` and returns the subtree's
    /// output state; on failure the arena is as it was.
    fn expand(
        &self,
        symbol: Option<usize>,
        input: &S::State,
        depth: usize,
        rng: &mut ChaCha8Rng,
        tally: &mut Tally,
        arena: &mut Vec<Drawn>,
    ) -> Option<S::State> {
        tally.expansions += 1;
        if tally.expansions > self.config.max_expansions {
            tally.note(&Reject::new(
                "max_expansions",
                format!(
                    "more than {} expansions in one attempt",
                    self.config.max_expansions
                ),
            ));
            return None;
        }
        let sym = symbol?;
        let name = &self.tables.names[sym];
        let alts = &self.tables.rules[sym];
        let tables = &self.tables.alts[sym];
        let room = (self.config.max_depth + 1).saturating_sub(depth);
        let mut cands: SmallVec<[(usize, f64); 16]> = alts
            .iter()
            .zip(tables)
            .enumerate()
            .filter(|(_, (_, t))| t.height <= room)
            .map(|(i, (a, _))| (i, a.weight))
            .collect();
        if cands.is_empty() {
            tally.note(&Reject::new(
                "max_depth",
                format!(
                    "`{name}` cannot finish within depth {}",
                    self.config.max_depth
                ),
            ));
            return None;
        }
        while !cands.is_empty() {
            let k = pick(&cands, rng);
            let ai = cands[k].0;
            let (alt, table) = (&alts[ai], &tables[ai]);
            let mut combos = self.admissible_combos(sym, ai, alt, table, input, rng, tally);
            while !combos.is_empty() {
                if tally.expansions > self.config.max_expansions {
                    return None;
                }
                let c = pick_weighted(&combos, |x| x.1, rng);
                let params = combos.swap_remove(c).0;
                if let Some(found) = self
                    .expand_children(sym, ai, alt, table, params, input, depth, rng, tally, arena)
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
        sym: usize,
        ai: usize,
        alt: &Alternative,
        table: &AltTable,
        params: Choice,
        input: &S::State,
        depth: usize,
        rng: &mut ChaCha8Rng,
        tally: &mut Tally,
        arena: &mut Vec<Drawn>,
    ) -> Option<S::State> {
        let at = arena.len();
        arena.push(Drawn {
            sym,
            alt: ai,
            params,
            end: at + 1,
        });
        let node = Node {
            form: &alt.form,
            params: self.params(&arena[at]),
        };
        let n = self.sem.arity(&node, alt.children.len());
        // Each child costs an expansion, so more than the budget never fills.
        let room = n.min(self.config.max_expansions);
        let mut outs: SmallVec<[S::State; 4]> = SmallVec::with_capacity(room);
        let mut failed = false;
        for i in 0..n {
            let child_sym = table.children[i.min(alt.children.len().saturating_sub(1))];
            let node = Node {
                form: &alt.form,
                params: self.params(&arena[at]),
            };
            let child_in = match self.sem.child_input(&node, input, i, n, &outs) {
                Ok(s) => s,
                Err(r) => {
                    tally.note(&r);
                    failed = true;
                    break;
                }
            };
            match self.expand(child_sym, &child_in, depth + 1, rng, tally, arena) {
                Some(out) => outs.push(out),
                None => {
                    failed = true;
                    break;
                }
            }
        }
        if !failed {
            let node = Node {
                form: &alt.form,
                params: self.params(&arena[at]),
            };
            match self.sem.output(&node, input, &outs) {
                Ok(out) => {
                    arena[at].end = arena.len();
                    return Some(out);
                }
                Err(r) => tally.note(&r),
            }
        }
        arena.truncate(at);
        None
    }

    /// Parameter assignments of `alt` the semantics admits at `input`, with
    /// their probability weights.
    #[allow(clippy::too_many_arguments)]
    fn admissible_combos(
        &self,
        sym: usize,
        ai: usize,
        alt: &Alternative,
        table: &AltTable,
        input: &S::State,
        rng: &mut ChaCha8Rng,
        tally: &mut Tally,
    ) -> Admissible {
        let total = combo_count(alt);
        let mut out = Admissible::new();
        // Choices that canonicalise alike are one choice with their weights
        // summed: the same distribution over networks, one spelling each.
        if let Some(combos) = &table.combos {
            // Where each class sits in `out`.
            let mut slot: SmallVec<[u32; 32]> = smallvec::smallvec![u32::MAX; table.classes];
            // Verdicts are pure functions of the combination and the key,
            // so a poisoned lock's map is still right.
            let mut guard = self
                .tables
                .verdicts
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let Verdicts { map, held } = &mut *guard;
            let enumerated = total <= MAX_ENUMERATED_COMBOS;
            let judge = || match enumerated {
                true => Judged::listed(self.sem, alt, combos, input),
                false => Judged::Drawn(vec![None; combos.len()]),
            };
            let mut fresh;
            let judged = match map.entry((sym, ai, self.sem.admit_key(input))) {
                Entry::Occupied(e) => e.into_mut(),
                Entry::Vacant(e) if *held + combos.len() <= MAX_KEPT_VERDICTS => {
                    *held += combos.len();
                    e.insert(judge())
                }
                Entry::Vacant(_) => {
                    fresh = judge();
                    &mut fresh
                }
            };
            let mut admit = |i: usize, w: f64, charge: &S::Charge, tally: &mut Tally| match self
                .sem
                .admit_within(charge, input)
            {
                Ok(()) => match slot[combos[i].class] {
                    u32::MAX => {
                        slot[combos[i].class] = out.len() as u32;
                        out.push((Choice::Listed(i), w));
                    }
                    at => out[at as usize].1 += w,
                },
                Err(r) => tally.note(&r),
            };
            match judged {
                Judged::Listed { admitted, refused } => {
                    for (r, n) in refused.iter() {
                        tally.note_times(r, *n);
                    }
                    for (i, charge) in admitted.iter() {
                        admit(*i, combos[*i].weight, charge, tally);
                    }
                }
                Judged::Drawn(slots) => {
                    // Too many to weigh each: a few independent draws stand
                    // in for the set (the index of the drawn combination,
                    // last parameter fastest, as the table lists them).
                    for _ in 0..64 {
                        let i = alt
                            .params
                            .iter()
                            .zip(&table.totals)
                            .fold(0, |i, ((_, c), &t)| {
                                i * c.0.len() + pick_with_total(&c.0, |x| x.1, t, rng)
                            });
                        let verdict = slots[i].get_or_insert_with(|| {
                            let node = Node {
                                form: &alt.form,
                                params: &combos[i].params,
                            };
                            self.sem.admit_charge(&node, input)
                        });
                        match verdict {
                            Ok(charge) => admit(i, 1.0, charge, tally),
                            Err(r) => tally.note(r),
                        }
                    }
                }
            }
            return out;
        }
        // Too many to list: each draw is built, canonicalised and keyed here.
        let mut index: HashMap<String, usize> = HashMap::new();
        for _ in 0..64 {
            let params: Vec<(String, Value)> = alt
                .params
                .iter()
                .map(|(name, c)| {
                    let j = pick_weighted(&c.0, |x| x.1, rng);
                    (name.clone(), c.0[j].0.clone())
                })
                .collect();
            let node = Node {
                form: &alt.form,
                params: &params,
            };
            match self.sem.admit(&node, input) {
                Ok(()) => {
                    let params = self.sem.canonical(&node);
                    match index.get(&class_key(&params)) {
                        Some(&i) => out[i].1 += 1.0,
                        None => {
                            index.insert(class_key(&params), out.len());
                            out.push((Choice::Built(params), 1.0));
                        }
                    }
                }
                Err(r) => tally.note(&r),
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
    let total = weight_total(items, &w);
    pick_with_total(items, w, total, rng)
}

/// The sum [`pick_weighted`] draws against; a total worked out ahead
/// must be this one, to the last bit, for a seed to draw the same.
fn weight_total<T>(items: &[T], w: impl Fn(&T) -> f64) -> f64 {
    items.iter().map(w).sum()
}

/// [`pick_weighted`] with the weights' sum worked out before.
fn pick_with_total<T>(
    items: &[T],
    w: impl Fn(&T) -> f64,
    total: f64,
    rng: &mut ChaCha8Rng,
) -> usize {
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
