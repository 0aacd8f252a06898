//! Functional hash: run the graph in f64 on fixed Gaussian probes at
//! several input scales, with weights keyed to canonical positions,
//! quantise each output row on a grid scaled by that row's RMS, hash.
//! Equal hashes mean equal outputs on every probe for a generic weight
//! draw. A merge needs evidence that holds away from saturation: the
//! small-scale probes keep softmaxes and products out of their saturated
//! range, and a network whose every probe has a blind spot (`watch`: a
//! mostly one-hot softmax, a term of a sum or concatenation below the grid
//! of another, a curved activation acting as relu) is degenerate and never
//! merged, as are non-finite, zero and input-independent outputs.
//!
//! Nodes whose weights would be drawn alike but for a rank (identical
//! siblings) are ranked by the values they read on the first probe, which
//! rewrites that keep the function cannot change; siblings reading equal
//! values (whose order only their consumers could tell) are tried in every
//! order, up to [`MAX_ORDERINGS`], and the smallest hash is kept.

use super::interp::{Mat, Plan, Weights};
use super::keys::weight_keys;
use super::structural::h;
use super::watch::{rms, Watch};
use crate::arch::Arch;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use xxhash_rust::xxh3::xxh3_128;

/// Bumped whenever the functional recipe changes, so stored hashes from
/// another recipe never match. 3: weight keys from labels in the explicit
/// encoding (`encode`) instead of the ops' `Debug` text.
pub const FUNCTIONAL_RECIPE_VERSION: u32 = 3;

/// Input scale of each probe (one probe per scale). At scale 1 probes look
/// like the embeddings training starts from; at 1/8 and 1/64 softmaxes of
/// unscaled products and chains of products are far from saturation.
pub const SCALES: [f64; 3] = [1.0, 0.125, 0.015625];
/// Bits kept per output value, below the power of two under its row's RMS.
/// Classes of the exhaustively enumerated space of `tests/hash.rs` (3,470
/// candidates, none degenerate; `cargo test --release --test hash
/// probe_and_grid_sweep -- --ignored --nocapture`), by probes used (the
/// first n scales):
///
/// | bits kept | 1 probe | 2 probes | 3 probes |
/// |---|---|---|---|
/// | 8  | 755 | 757 | 757 |
/// | 16 | 757 | 757 | 757 |
/// | 24 | 757 | 757 | 757 |
/// | 40 | 757 | 757 | 757 |
///
/// Classes plateau from 16 to 40 bits; 24 bits sits in the middle, far
/// from splitting equivalents on f64 reordering noise. That space has no
/// products or softmaxes: the small scales are there for the spaces that
/// do (see the generated classes in the same file).
pub const GRID_BITS: i32 = 24;
/// Weight orderings of identical siblings tried at most; beyond, they are
/// ranked by structure (a possible missed merge, never a wrong one).
pub const MAX_ORDERINGS: usize = 8;
const PROBE_SEED: u64 = 0x9e37_79b9_7f4a_7c15;

/// What the functional stage says about one network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Functional {
    Hash(u128),
    /// Never merged, and why.
    Degenerate(String),
}

/// Probe inputs of the graph's input shape, one per scale.
pub fn probes(arch: &Arch, scales: &[f64], salt: u64) -> Vec<Mat> {
    let s = arch.input_shape();
    let mut rng = ChaCha8Rng::seed_from_u64(PROBE_SEED ^ salt);
    scales
        .iter()
        .map(|&scale| Mat {
            rows: s.rows.size,
            cols: s.cols.size,
            v: (0..s.elements())
                .map(|_| scale * Distribution::<f64>::sample(&StandardNormal, &mut rng))
                .collect(),
        })
        .collect()
}

/// Outputs of `arch` on probes at `scales` (probes and weights under
/// `salt`), identical siblings in the order that gives the smallest hash:
/// equivalent networks give equal outputs.
pub fn outputs(arch: &Arch, scales: &[f64], salt: u64) -> Vec<Mat> {
    examine(arch, scales, GRID_BITS, salt).outs
}

/// Appends `m` quantised row by row: each row on a grid of `bits` bits
/// below the power of two under its RMS (zero rows as a marker).
fn quantise(buf: &mut Vec<u8>, m: &Mat, bits: i32) {
    buf.extend_from_slice(&(m.rows as u32).to_le_bytes());
    buf.extend_from_slice(&(m.cols as u32).to_le_bytes());
    for row in m.v.chunks(m.cols.max(1)) {
        let r = rms(row);
        if r == 0.0 {
            buf.extend_from_slice(&i32::MIN.to_le_bytes());
            continue;
        }
        let e = r.log2().floor() as i32;
        buf.extend_from_slice(&e.to_le_bytes());
        let scale = 2f64.powi(bits - e);
        for v in row {
            buf.extend_from_slice(&((v * scale).round() as i64).to_le_bytes());
        }
    }
}

/// Identical-sibling subgroups met while ranking, by size, and the
/// orderings to apply to them in turn.
struct Orderings<'c> {
    choice: &'c [usize],
    sizes: Vec<usize>,
}

/// k!, or `None` past what a `usize` holds (k > 20 on 64 bits).
fn factorial(k: usize) -> Option<usize> {
    (1..=k).try_fold(1usize, |a, x| a.checked_mul(x))
}

/// The `index`-th permutation of `items` (Lehmer code).
fn permute<T: Copy>(items: &[T], mut index: usize) -> Vec<T> {
    let mut pool = items.to_vec();
    let mut out = Vec::with_capacity(items.len());
    for k in (1..=items.len()).rev() {
        let f: usize = (1..k).product();
        out.push(pool.remove(index / f));
        index %= f;
    }
    out
}

/// One run of every probe under one ordering of the identical siblings:
/// the hash input bytes, and each probe's blind spot.
fn run_once(
    plan: &Plan,
    xs: &[Mat],
    w: &Weights,
    bits: i32,
    order: &mut Orderings,
) -> (Vec<Mat>, Vec<Watch>) {
    let c = &plan.canon;
    let n = c.nodes.len();
    let mut first = vec![None; n];
    let mut watch0 = Watch::default();
    let keys = weight_keys(c, &mut |group, partial| {
        // Rank by what each member reads on the first probe.
        let mut sig: Vec<(u128, usize)> = group
            .iter()
            .enumerate()
            .map(|(pos, &m)| {
                let mut buf = Vec::new();
                for &j in &c.inputs[m] {
                    plan.eval(j, &xs[0], w, b"", partial, &mut first, &mut watch0);
                    quantise(&mut buf, first[j].as_ref().expect("evaluated"), bits);
                }
                (xxh3_128(&buf), pos)
            })
            .collect();
        sig.sort();
        let mut ranked = Vec::with_capacity(group.len());
        let mut at = 0;
        while at < sig.len() {
            let end = at + sig[at..].iter().take_while(|s| s.0 == sig[at].0).count();
            let run: Vec<usize> = sig[at..end].iter().map(|s| group[s.1]).collect();
            // Members with equal colours are (as far as refinement can
            // tell) interchangeable: any order gives the same function.
            let symmetric = run.iter().all(|&m| c.colour[m] == c.colour[run[0]]);
            if run.len() > 1 && !symmetric {
                let k = order.sizes.len();
                order.sizes.push(run.len());
                // Index 0 is the order found; other indices come only from
                // `examine`, which enumerates them when the count is small.
                match order.choice.get(k).copied().unwrap_or(0) {
                    0 => ranked.extend(run),
                    index => ranked.extend(permute(&run, index)),
                }
            } else {
                ranked.extend(run);
            }
            at = end;
        }
        ranked
    });
    let mut outs = Vec::with_capacity(xs.len());
    let mut watches = Vec::with_capacity(xs.len());
    for (p, x) in xs.iter().enumerate() {
        let (mut vals, mut watch) = if p == 0 {
            (std::mem::take(&mut first), std::mem::take(&mut watch0))
        } else {
            (vec![None; n], Watch::default())
        };
        plan.eval(c.output, x, w, b"", &keys, &mut vals, &mut watch);
        outs.push(vals[c.output].take().expect("output computed"));
        watches.push(watch);
    }
    (outs, watches)
}

/// Why outputs cannot be merged on, if they cannot.
fn degenerate(outs: &[Mat], watches: &[Watch], scales: &[f64]) -> Option<String> {
    let all: Vec<f64> = outs.iter().flat_map(|m| m.v.iter().copied()).collect();
    if all.is_empty() || all.iter().any(|v| !v.is_finite()) {
        return Some("non-finite outputs".into());
    }
    let scale = rms(&all);
    if scale < 1e-12 {
        return Some("the output is zero".into());
    }
    if outs.len() > 1 {
        let spread = outs[1..]
            .iter()
            .flat_map(|m| m.v.iter().zip(&outs[0].v).map(|(a, b)| (a - b).abs()))
            .fold(0.0f64, f64::max);
        if spread < 1e-9 * scale {
            return Some("the output does not depend on the input".into());
        }
    }
    if watches.iter().all(|w| w.blind.is_some()) {
        let each: Vec<String> = watches
            .iter()
            .zip(scales)
            .map(|(w, &s)| {
                let scale = if s < 1.0 {
                    format!("1/{}", (1.0 / s).round())
                } else {
                    format!("{s}")
                };
                format!(
                    "at input scale {scale}, {}",
                    w.blind.as_deref().unwrap_or("")
                )
            })
            .collect();
        return Some(format!("a blind spot on every probe: {}", each.join("; ")));
    }
    None
}

fn hash_of(outs: &[Mat], scales: &[f64], bits: i32) -> u128 {
    let mut buf = Vec::new();
    buf.extend_from_slice(b"functional");
    buf.extend_from_slice(&FUNCTIONAL_RECIPE_VERSION.to_le_bytes());
    buf.extend_from_slice(&bits.to_le_bytes());
    for s in scales {
        buf.extend_from_slice(&s.to_le_bytes());
    }
    for m in outs {
        quantise(&mut buf, m, bits);
    }
    h(&[&buf])
}

/// Outputs under the ordering of identical siblings with the smallest
/// hash, that hash, and why they cannot be merged on, if so.
struct Examined {
    outs: Vec<Mat>,
    hash: u128,
    degenerate: Option<String>,
}

fn examine(arch: &Arch, scales: &[f64], bits: i32, salt: u64) -> Examined {
    let plan = Plan::new(arch);
    let xs = probes(arch, scales, salt);
    let w = Weights::new(salt);
    let mut order = Orderings {
        choice: &[],
        sizes: Vec::new(),
    };
    let (outs, watches) = run_once(&plan, &xs, &w, bits, &mut order);
    let mut best = Examined {
        hash: hash_of(&outs, scales, bits),
        degenerate: degenerate(&outs, &watches, scales),
        outs,
    };
    if best.degenerate.is_some() {
        return best;
    }
    let sizes = order.sizes;
    let total = sizes
        .iter()
        .try_fold(1usize, |a, &k| a.checked_mul(factorial(k)?))
        .unwrap_or(usize::MAX);
    if total <= MAX_ORDERINGS {
        for index in 1..total {
            // Mixed radix: one permutation index per subgroup.
            let mut rest = index;
            let choice: Vec<usize> = sizes
                .iter()
                .map(|&k| {
                    let f: usize = (1..=k).product();
                    let c = rest % f;
                    rest /= f;
                    c
                })
                .collect();
            let mut order = Orderings {
                choice: &choice,
                sizes: Vec::new(),
            };
            let (outs, _) = run_once(&plan, &xs, &w, bits, &mut order);
            let hash = hash_of(&outs, scales, bits);
            if hash < best.hash {
                best.hash = hash;
                best.outs = outs;
            }
        }
    }
    best
}

/// The functional verdict with explicit probe scales, grid and weight salt.
pub fn functional_with(arch: &Arch, scales: &[f64], bits: i32, salt: u64) -> Functional {
    let e = examine(arch, scales, bits, salt);
    match e.degenerate {
        Some(why) => Functional::Degenerate(why),
        None => Functional::Hash(e.hash),
    }
}

/// The functional verdict of `arch` (see the module doc).
pub fn functional(arch: &Arch) -> Functional {
    functional_with(arch, &SCALES, GRID_BITS, 0)
}

/// The functional hash; `None` for degenerate outputs, never merged.
pub fn functional_hash(arch: &Arch) -> Option<u128> {
    match functional(arch) {
        Functional::Hash(h) => Some(h),
        Functional::Degenerate(_) => None,
    }
}
