//! Parameters with no effect for the chosen variant are canonical: one
//! network has one derivation, one text form and one set of hashes, from a
//! sample, a mutation, a hand-written term or an older run's record, and
//! neither the sampler nor mutation spends a draw on them.

use archgram::arch::ops::Moe;
use archgram::arch::{Arch, Network, Op};
use archgram::grammar::Derivation;
use archgram::hash::{structural_hash, Hashes};
use archgram::space::Space;
use std::collections::HashMap;
use std::path::Path;

/// A shipped space with non-causal routers allowed, as a space file may
/// allow them: expert choice has settings to canonicalise too.
fn space(name: &str) -> Space {
    let mut s = Space::load(Path::new(&format!("spaces/{name}.ron"))).unwrap();
    s.sem.ctx.allow_noncausal_routing = true;
    s
}

/// A moe block of `settings` with the router as written, not canonicalised.
fn moe_as_written(spec: archgram::arch::MoeSpec, space: &Space) -> Arch {
    let term = Derivation::parse("block(moe(experts=4, mlp(ratio=1)))").unwrap();
    let mut a = Network::build(term, space.ctx()).unwrap().arch;
    for n in a.graph.node_weights_mut() {
        if let Op::Moe(Moe { spec: s, .. }) = &mut n.op {
            *s = spec;
        }
    }
    a
}

/// Ground truth for the canonical router settings: training a router as
/// written and its canonical form gives bit-identical losses and scores.
#[test]
fn moe_settings_with_no_effect_train_identically() {
    use archgram::arch::{Balance, MoeSpec, RouterKind};
    let space = archgram::space::Space::load(std::path::Path::new("spaces/moe-heavy.ron")).unwrap();
    let task = space.build_task(space.file.seed).unwrap();
    let mut cfg = archgram::search::train_config(&space, 1, 8, archgram::eval::DeviceKind::Cpu);
    cfg.train.batch_size = 8;
    let spec = |router, top_k, capacity, top_p, balance| MoeSpec {
        experts: 4,
        top_k,
        shared: 0,
        router,
        capacity,
        top_p,
        balance,
    };
    let cases = [
        spec(RouterKind::TokenChoice, 1, 1.25, 0.7, Balance::AuxLoss),
        spec(RouterKind::TokenChoice, 4, 2.0, 0.5, Balance::Bias),
        spec(RouterKind::TokenChoice, 2, 4.0, 0.5, Balance::AuxLoss),
        spec(RouterKind::TokenChoice, 4, 1.0, 0.5, Balance::AuxLoss),
        spec(RouterKind::TokenChoice, 4, 0.5, 0.5, Balance::Bias),
        spec(RouterKind::TopP, 1, 1.25, 0.9, Balance::Bias),
        spec(RouterKind::ExpertChoice, 2, 8.0, 0.7, Balance::AuxLoss),
        spec(RouterKind::ExpertChoice, 3, 1.25, 0.5, Balance::Bias),
    ];
    for raw in cases {
        assert_ne!(raw, raw.canonical(), "{raw:?} is canonical already");
        let (a, b) = (
            moe_as_written(raw, &space),
            moe_as_written(raw.canonical(), &space),
        );
        let (x, y) = (
            archgram::eval::evaluate(&a, task.as_ref(), &cfg),
            archgram::eval::evaluate(&b, task.as_ref(), &cfg),
        );
        assert!(x.final_loss.is_finite(), "{raw:?}: {:?}", x.status);
        assert_eq!(x.score, y.score, "{raw:?}");
        // Where nothing is left to balance, the Switch loss is the constant
        // α (every expert takes an equal share): it shifts the reported
        // training loss and moves no weight.
        let shift = if raw.balance == Balance::AuxLoss && raw.canonical().balance == Balance::None {
            cfg.train.routing.aux_alpha
        } else {
            0.0
        };
        for ((s, p), (t, q)) in x.loss_curve.iter().zip(&y.loss_curve) {
            assert_eq!(s, t);
            if shift == 0.0 {
                assert_eq!(p, q, "{raw:?} at step {s}");
            } else {
                assert!(
                    (p - q - shift).abs() < 1e-5,
                    "{raw:?} at step {s}: {p} vs {q}"
                );
            }
        }
    }
}

/// Every moe router on a grid of settings: settings that canonicalise alike
/// are one network (one text form, merged at the structural stage) and
/// route every probability table alike, with or without a selection bias
/// where `balance` was dropped; settings that do not are other networks.
#[test]
fn moe_settings_with_no_effect_are_one_network() {
    use archgram::arch::{Balance, MoeSpec, RouterKind};
    use archgram::routing::{route_tokens, route_with, RouteOptions};
    use rand::{Rng, SeedableRng};
    let space = space("moe-heavy");
    let ctx = space.ctx();
    let mut groups: HashMap<String, Vec<(MoeSpec, u128)>> = HashMap::new();
    for experts in [2usize, 4] {
        for top_k in [1, 2, 4].into_iter().filter(|&k| k <= experts) {
            for router in ["token_choice", "expert_choice", "top_p"] {
                for capacity in [0.5, 1.0, 1.25, 2.0, 4.0] {
                    for top_p in [0.5, 0.7] {
                        for balance in ["aux_loss", "bias", "none"] {
                            let text = format!(
                                "block(moe(balance={balance}, capacity={capacity:?}, experts={experts}, router={router}, top_k={top_k}, top_p={top_p:?}, mlp(ratio=1)))"
                            );
                            let net = Network::build(Derivation::parse(&text).unwrap(), ctx)
                                .unwrap_or_else(|e| panic!("{text}: {e}"));
                            let spec = MoeSpec {
                                experts,
                                top_k,
                                shared: 0,
                                router: RouterKind::parse(router).unwrap(),
                                capacity,
                                top_p,
                                balance: Balance::parse(balance).unwrap(),
                            };
                            groups
                                .entry(net.text())
                                .or_default()
                                .push((spec, structural_hash(&net.arch)));
                        }
                    }
                }
            }
        }
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(18);
    let mut by_hash: HashMap<u128, &str> = HashMap::new();
    let mut merged = 0;
    for (text, members) in &groups {
        let (first, hash) = members[0];
        assert!(
            by_hash.insert(hash, text).is_none(),
            "two networks share a structural hash: {text}"
        );
        for &(spec, h) in &members[1..] {
            merged += 1;
            assert_eq!(h, hash, "{spec:?} and {first:?}: {text}");
            // Ground truth from the routing rules themselves.
            for seq in [3usize, 8, 48] {
                let probs: Vec<f32> = (0..2 * seq)
                    .flat_map(|_| {
                        let raw: Vec<f32> = (0..spec.experts)
                            .map(|_| rng.gen::<f32>().powi(3))
                            .collect();
                        let sum: f32 = raw.iter().sum();
                        raw.into_iter().map(move |p| p / sum)
                    })
                    .collect();
                let r = route_tokens(&probs, 2, seq, &spec);
                assert_eq!(
                    r,
                    route_tokens(&probs, 2, seq, &first),
                    "{spec:?} vs {first:?}"
                );
                if spec.balance != first.balance {
                    let bias: Vec<f32> = (0..spec.experts).map(|_| rng.gen::<f32>()).collect();
                    let opts = RouteOptions {
                        bias: Some(&bias),
                        ..RouteOptions::default()
                    };
                    assert_eq!(route_with(&probs, 2, seq, &spec, opts).select, r.select);
                    for b in 0..2 {
                        let load = |x: usize| {
                            (0..seq)
                                .map(|t| r.select[(b * seq + t) * spec.experts + x])
                                .sum::<f32>()
                        };
                        assert!((1..spec.experts).all(|x| load(x) == load(0)), "{spec:?}");
                    }
                }
            }
        }
    }
    assert!(merged > 100, "only {merged} settings had no effect");
}

/// A run-store record written before parameters with no effect were
/// canonicalised (expert choice with top_k=2 and an auxiliary loss; token
/// choice sending every token to all 4 experts with capacity 2.0 and a
/// selection bias) still loads, lowers, mutates and reads back from its
/// text, as the canonical network.
#[test]
fn a_stored_record_of_the_old_form_still_loads_as_the_canonical_network() {
    use archgram::store::{CandidateRecord, SledStore, Store};
    let json = include_str!("fixtures/record_before_canonical_params.json");
    let old: CandidateRecord = serde_json::from_str(json).unwrap();
    assert!(old
        .text
        .contains("router=expert_choice, shared=0, top_k=2, top_p=0.7"));
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(&dir.path().join("store")).unwrap();
    store.put_candidate(&old).unwrap();
    let back = store.candidate(old.id).unwrap().unwrap();
    let space = space("moe-heavy");
    let from_tree = space.network(back.derivation.clone()).unwrap();
    let from_text = space.parse_arch(&back.text).unwrap();
    let text = from_tree.text();
    assert_eq!(text, from_text.text());
    assert!(
        text.contains("balance=none, capacity=1.25, experts=8, router=expert_choice, shared=0, top_k=1, top_p=0.5"),
        "{text}"
    );
    assert!(
        text.contains("balance=none, capacity=1.0, experts=4, router=token_choice, shared=0, top_k=4, top_p=0.5"),
        "{text}"
    );
    assert_eq!(Hashes::of(&from_tree.arch), Hashes::of(&from_text.arch));
    // The canonical text reads back as itself.
    assert_eq!(space.parse_arch(&text).unwrap().text(), text);
    let mut rng = archgram::seed::rng(1, "mutate", 0);
    assert!(space.mutate(&back.derivation, &mut rng).is_ok());
}

/// A canonical value the grammar never offers (quickstart's moe offers
/// `top_p` 0.6 only, and no `balance=none`) still reads back.
#[test]
fn canonical_values_outside_the_grammars_choices_read_back() {
    let space = space("quickstart");
    for router in ["token_choice", "expert_choice"] {
        let written = format!("repeat(n=1, seq(block(norm=pre, norm_kind=layer, attention(head_dim=auto, heads=2)), block(norm=pre, norm_kind=layer, moe(balance=aux_loss, capacity=1.25, experts=4, router={router}, shared=0, top_k=2, top_p=0.6, mlp(act=gelu, gated=false, ratio=1)))))");
        let net = space.parse_arch(&written).unwrap();
        let text = net.text();
        assert!(text.contains("top_p=0.5"), "{text}");
        let back = space
            .parse_arch(&text)
            .unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(back.text(), text);
        assert_eq!(Hashes::of(&back.arch), Hashes::of(&net.arch));
    }
}

/// The sampler draws canonical derivations (choices that make one network
/// are one choice), and a mutant is never its parent's network again: no
/// draw goes to a parameter with no effect.
#[test]
fn samples_are_canonical_and_no_mutant_is_its_parent_again() {
    use archgram::grammar::{canonicalise, Derivation};
    let canonical = |sem: &archgram::arch::ArchSemantics, d: &Derivation| {
        let mut d = d.clone();
        canonicalise(sem, &mut d);
        d
    };
    for name in ["quickstart", "moe-heavy", "einspace"] {
        let space = space(name);
        let (sampler, start) = (space.sampler(), space.sem.start());
        let mut router_retunes = 0;
        for i in 0..300u64 {
            let (parent, _) = sampler
                .sample(&start, &mut archgram::seed::rng(18, "parent", i))
                .unwrap();
            assert_eq!(canonical(&space.sem, &parent), parent, "{name}: {parent}");
            let Ok((child, m)) =
                sampler.mutate(&parent, &start, &mut archgram::seed::rng(18, "mutate", i))
            else {
                continue;
            };
            assert_eq!(canonical(&space.sem, &child), child, "{name}: {}", m.detail);
            assert_ne!(child, parent, "{name}: {}", m.detail);
            if ["top_k:", "top_p:", "capacity:", "balance:", "router:"]
                .iter()
                .any(|p| m.detail.starts_with(p))
            {
                router_retunes += 1;
            }
        }
        if name == "moe-heavy" {
            assert!(router_retunes >= 10, "{router_retunes} router retunes");
        }
    }
}
