//! Every CPU kernel against the dfdx composition it replaces, on values
//! and on gradients.

use super::*;
use rand::{Rng, SeedableRng};

type Owned = OwnedTape<f32, Cpu>;

fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| rng.gen_range(-1.5f32..1.5)).collect()
}

fn close(what: &str, a: &[f32], b: &[f32]) {
    assert_eq!(a.len(), b.len(), "{what}");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= 1e-4 * x.abs().max(y.abs()) + 1e-5,
            "{what}[{i}]: {x} vs {y}"
        );
    }
}

type Run3 = (Vec<f32>, Vec<Vec<f32>>);

/// The fused kernel's output and gradients agree with the reference's.
fn agree(what: &str, fused: &Run3, reference: &Run3) {
    close(what, &fused.0, &reference.0);
    for (a, r) in fused.1.iter().zip(&reference.1) {
        close(&format!("d {what}"), a, r);
    }
}

/// Output and the gradients of Σ out·R for `leaves` (leaf tensors,
/// traced), running `f` on them.
fn run3(
    leaves: &[Tensor<(usize,), f32, Cpu>],
    f: impl Fn(Vec<Tensor<(usize,), f32, Cpu, Owned>>) -> T3<Cpu, Owned>,
) -> Run3 {
    let traced = leaves.iter().map(|t| t.retaped::<Owned>()).collect();
    let out = f(traced);
    let r = random(out.shape().num_elements(), 99);
    let r = out.device().tensor_from_vec(r, *out.shape());
    let value = out.with_empty_tape().as_vec();
    let mut grads = (out * r).sum::<(), _>().backward();
    let g = leaves
        .iter()
        .map(|t| {
            grads.try_alloc_for(t).unwrap();
            grads.get(t).as_vec()
        })
        .collect::<Vec<_>>();
    (value, g)
}

#[test]
fn cpu_attention_matches_the_composition() {
    let dev = Cpu::default();
    for (b, s, heads, hd, causal) in [(2, 5, 3, 4, true), (3, 7, 2, 3, false), (1, 1, 1, 2, true)] {
        let x = dev.tensor_from_vec(random(b * s * 3 * heads * hd, 1), (b * s * 3 * heads * hd,));
        // Mixture-of-heads gates: arbitrary, times a constant 0/1 choice of
        // heads (the kernel skips the unchosen heads there).
        let g = dev.tensor_from_vec(random(b * s * heads, 5), (b * s * heads,));
        let chosen: Vec<f32> = random(b * s * heads, 6)
            .into_iter()
            .map(|v| if v < -0.3 { 0.0 } else { 1.0 })
            .collect();
        assert!(chosen.contains(&0.0) || b * s * heads < 4);
        let chosen = dev.tensor_from_vec(chosen, (b, s, heads));
        let shape = (b, s, 3 * heads * hd);
        for gated in [false, true] {
            let leaves = [x.clone(), g.clone()];
            let args = |v: Vec<Tensor<(usize,), f32, Cpu, Owned>>| {
                let mut v = v.into_iter();
                let x = v.next().unwrap().reshape_like(&shape);
                let g = v.next().unwrap().reshape_like(&(b, s, heads)) * chosen.clone();
                (x, gated.then_some(g))
            };
            let fused = run3(&leaves, |v| {
                let (x, g) = args(v);
                <Cpu as Backend>::attention_core(x, g, heads, hd, causal)
            });
            let reference = run3(&leaves, |v| {
                let (x, g) = args(v);
                composite::attention_core(x, g, heads, hd, causal)
            });
            agree("attention", &fused, &reference);
        }
    }
}

#[test]
fn cpu_norms_match_the_composition() {
    let dev = Cpu::default();
    let (b, s, c) = (2, 3, 6);
    let x = dev.tensor_from_vec(random(b * s * c, 2), (b * s * c,));
    let g = dev.tensor_from_vec(random(c, 3), (c,));
    let bias = dev.tensor_from_vec(random(c, 4), (c,));
    for center in [true, false] {
        for with_bias in [true, false] {
            let leaves = [x.clone(), g.clone(), bias.clone()];
            let args = |v: Vec<Tensor<(usize,), f32, Cpu, Owned>>| {
                let mut v = v.into_iter();
                let x = v.next().unwrap().reshape_like(&(b, s, c));
                let g = v.next().unwrap();
                let bias = v.next().unwrap();
                (x, g, with_bias.then_some(bias))
            };
            let fused = run3(&leaves, |v| {
                let (x, g, bias) = args(v);
                <Cpu as Backend>::norm(x, center, g, bias)
            });
            let reference = run3(&leaves, |v| {
                let (x, g, bias) = args(v);
                composite::norm(x, center, g, bias)
            });
            agree("norm", &fused, &reference);
        }
    }
}

#[test]
fn cpu_packing_matches_the_composition() {
    let dev = Cpu::default();
    let widths = [3, 1, 4];
    let leaves: Vec<_> = widths
        .iter()
        .enumerate()
        .map(|(i, &w)| dev.tensor_from_vec(random(5 * w, 10 + i as u64), (5 * w,)))
        .collect();
    let parts = |v: Vec<Tensor<(usize,), f32, Cpu, Owned>>| {
        v.into_iter()
            .zip(widths)
            .map(|(t, w)| t.reshape_like(&(5, w)))
            .collect::<Vec<_>>()
    };
    let fused = run3(&leaves, |v| {
        <Cpu as Backend>::pack_columns(parts(v)).reshape_like(&(1, 5, 8))
    });
    let reference = run3(&leaves, |v| {
        composite::pack_columns(parts(v)).reshape_like(&(1, 5, 8))
    });
    agree("packed", &fused, &reference);
}

#[test]
fn cpu_row_gather_and_combine_match_the_composition() {
    let dev = Cpu::default();
    let d = 3;
    // x (5 × d); two parts of 3 and 2 rows gathered from it; output of
    // 4 rows: row 0 takes two picks, row 2 none.
    let leaves = vec![
        dev.tensor_from_vec(random(5 * d, 20), (5 * d,)),
        dev.tensor_from_vec(random(8, 21), (8,)),
    ];
    let picks = [
        Pick {
            out: 0,
            part: 0,
            row: 0,
            gate: 1,
        },
        Pick {
            out: 1,
            part: 0,
            row: 1,
            gate: 2,
        },
        Pick {
            out: 3,
            part: 0,
            row: 2,
            gate: 7,
        },
        Pick {
            out: 0,
            part: 1,
            row: 1,
            gate: 4,
        },
        Pick {
            out: 1,
            part: 1,
            row: 0,
            gate: 0,
        },
    ];
    for gated in [true, false] {
        let go = |cpu: bool| {
            run3(&leaves, |v| {
                let mut v = v.into_iter();
                let x = v.next().unwrap().reshape_like(&(5, d));
                let g = v.next().unwrap();
                let (a, b) = (x.with_empty_tape(), x);
                let out = if cpu {
                    let parts = vec![
                        <Cpu as Backend>::gather_rows(a, &[4, 0, 2]),
                        <Cpu as Backend>::gather_rows(b, &[1, 1]),
                    ];
                    <Cpu as Backend>::combine_rows(parts, &picks, 4, gated.then_some(g))
                } else {
                    let parts = vec![
                        composite::gather_rows(a, &[4, 0, 2]),
                        composite::gather_rows(b, &[1, 1]),
                    ];
                    composite::combine_rows(parts, &picks, 4, gated.then_some(g))
                };
                out.reshape_like(&(1, 4, d))
            })
        };
        let (fused, reference) = (go(true), go(false));
        agree("combined", &fused, &reference);
        // Output row 2 has no pick.
        assert!(fused.0[2 * d..3 * d].iter().all(|&v| v == 0.0));
    }
}

#[test]
fn cpu_cross_entropy_matches_the_composition() {
    let dev = Cpu::default();
    let (b, s, v) = (2, 3, 5);
    let leaves = [dev.tensor_from_vec(random(b * s * v, 30), (b * s * v,))];
    let mut w = vec![0.0f32; b * s * v];
    for (i, t) in [(0, 2), (1, 4), (3, 0), (5, 1)] {
        w[i * v + t] = 0.25;
    }
    let go = |cpu: bool| {
        run3(&leaves, |l| {
            let z = l.into_iter().next().unwrap().reshape_like(&(b, s, v));
            let loss = if cpu {
                <Cpu as Backend>::weighted_nll(z, w.clone())
            } else {
                composite::weighted_nll(z, w.clone())
            };
            loss.broadcast_like::<_, Axes3<0, 1, 2>>(&(1, 1, 1))
        })
    };
    let (fused, reference) = (go(true), go(false));
    agree("loss", &fused, &reference);
}

#[test]
fn cpu_mlp_matches_the_composition() {
    let dev = Cpu::default();
    let (b, r, d, h) = (2, 5, 4, 6);
    let leaves = [
        dev.tensor_from_vec(random(b * r * d, 40), (b * r * d,)),
        dev.tensor_from_vec(random(d * h, 41), (d * h,)),
        dev.tensor_from_vec(random(h * d, 42), (h * d,)),
        dev.tensor_from_vec(random(d * h, 43), (d * h,)),
    ];
    let acts = [
        Activation::Relu,
        Activation::Gelu,
        Activation::Silu,
        Activation::LeakyRelu,
    ];
    for act in acts {
        for gated in [false, true] {
            let go = |cpu: bool| {
                run3(&leaves, |v| {
                    let mut v = v.into_iter();
                    let x = v.next().unwrap().reshape_like(&(b, r, d));
                    let w1 = v.next().unwrap().reshape_like(&(d, h));
                    let w2 = v.next().unwrap().reshape_like(&(h, d));
                    let w3 = v.next().unwrap().reshape_like(&(d, h));
                    let w3 = gated.then_some(w3);
                    if cpu {
                        <Cpu as Backend>::mlp(x, w1, w2, w3, act)
                    } else {
                        composite::mlp(x, w1, w2, w3, act)
                    }
                })
            };
            let (fused, reference) = (go(true), go(false));
            agree(&format!("{act:?} mlp"), &fused, &reference);
        }
    }
}

/// Norm forward and backward and the activations split their work over a
/// pool's threads above a size; every value is the one a single thread
/// gives, whatever the thread count.
#[test]
fn rowwise_kernels_split_over_threads_give_what_one_thread_gives() {
    let (rows, cols) = (1000, 160);
    // Large enough to be split.
    assert!(rows * cols >= PARALLEL_ELEMENTS);
    let x = random(rows * cols, 7);
    let gain = random(cols, 8);
    let bias = random(cols, 9);
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let mut y = vec![0.0; rows * cols];
            let (mut xhat, mut rs) = (vec![0.0; rows * cols], vec![0.0; rows]);
            norm::forward(
                &x,
                cols,
                true,
                &gain,
                Some(&bias),
                &mut y,
                Some((&mut xhat, &mut rs)),
            );
            let mut act = vec![0.0; rows * cols];
            mlp::elementwise(&x, &mut act, |x, o| mlp::activate(Activation::Gelu, x, o));
            let mut grad = y.clone();
            mlp::elementwise(&x, &mut grad, |x, d| {
                mlp::activate_backward(Activation::Silu, x, d)
            });
            // Backward, layer norm with a bias and RMS norm without: dx
            // split by rows, the gain and bias sums by columns.
            let dy = random(rows * cols, 10);
            let (mut dx, mut dgain, mut dbias) = (x.clone(), gain.clone(), bias.clone());
            norm::backward(
                &dy,
                &xhat,
                &rs,
                cols,
                true,
                &gain,
                &mut dx,
                &mut dgain,
                Some(&mut dbias),
            );
            let (mut dx_rms, mut dgain_rms) = (x.clone(), gain.clone());
            norm::backward(
                &dy,
                &xhat,
                &rs,
                cols,
                false,
                &gain,
                &mut dx_rms,
                &mut dgain_rms,
                None,
            );
            [y, xhat, rs, act, grad, dx, dgain, dbias, dx_rms, dgain_rms]
        })
    };
    let one = run(1);
    assert!(one[2].iter().all(|&r| r > 0.0), "every row's r is written");
    assert_eq!(run(2), one);
    assert_eq!(run(3), one);
}
