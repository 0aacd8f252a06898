//! Hand-written text forms of well-known blocks parse, match the shipped
//! grammars, lower to the expected ops and cost what the formulas say.

use archgram::arch::ops::{Attention, Dot, LayerScale, Linear, Mod, Moe, Softmax};
use archgram::arch::{Axis, DotMask, Network, Op, RouterKind};
use archgram::space::{ArchError, Space};
use rand::SeedableRng;
use std::path::Path;

fn space(name: &str) -> Space {
    Space::load(Path::new(&format!("spaces/{name}.ron"))).unwrap_or_else(|e| panic!("{e}"))
}

fn ops(n: &Network) -> Vec<Op> {
    n.arch
        .topo()
        .into_iter()
        .map(|i| n.arch.node(i).op.clone())
        .collect()
}

fn kinds(n: &Network) -> Vec<&'static str> {
    ops(n).iter().map(Op::kind).collect()
}

const PRE_LN: &str = "repeat(n=1, seq(block(norm=pre, norm_kind=layer, attention(head_dim=auto, heads=4)), block(norm=pre, norm_kind=layer, mlp(act=gelu, gated=false, ratio=4))))";

#[test]
fn pre_ln_transformer_block() {
    let s = space("quickstart");
    let n = s.parse_arch(PRE_LN).unwrap();
    assert_eq!(
        kinds(&n),
        [
            "input",
            "norm",
            "attention",
            "add",
            "norm",
            "mlp",
            "add",
            "output"
        ]
    );
    // The residual adds read the block input (port 0) and the sublayer (port 1).
    let ctx = s.ctx();
    let (d, v, t) = (ctx.width as f64, ctx.vocab as f64, ctx.seq_len as f64);
    let attn = 4.0 * d * d;
    let mlp = 2.0 * d * 4.0 * d;
    let params = v * d + attn + mlp + 2.0 * 2.0 * d + (d * v + v);
    assert_eq!(n.cost.params, params);
    assert_eq!(n.cost.active_params, params);
    // Per token: 2 FLOPs per weight, attention scores and values over the
    // (t+1)/2 keys a causal query sees, norms, residual adds, head.
    let flops =
        2.0 * (attn + mlp) + 4.0 * d * (t + 1.0) / 2.0 + 2.0 * 5.0 * d + 2.0 * d + 2.0 * d * v;
    assert!(
        (n.cost.flops - flops).abs() < 1e-6,
        "{} vs {flops}",
        n.cost.flops
    );
    assert!(matches!(
        ops(&n)[2],
        Op::Attention(Attention {
            heads: 4,
            head_dim: 8,
            causal: true
        })
    ));
    assert_eq!(n.text(), PRE_LN);
}

#[test]
fn switch_top1_moe_block() {
    let s = space("moe-heavy");
    let layer = "seq(block(norm=pre, norm_kind=layer, attention(head_dim=auto, heads=4)), block(norm=pre, norm_kind=layer, moe(balance=aux_loss, capacity=1.25, experts=8, router=token_choice, shared=0, top_k=1, top_p=0.5, mlp(act=gelu, gated=false, ratio=2))))";
    let n = s
        .parse_arch(&format!("repeat(n=2, {layer}, {layer})"))
        .unwrap();
    let moes: Vec<Op> = ops(&n).into_iter().filter(|o| o.kind() == "moe").collect();
    assert_eq!(moes.len(), 2);
    let Op::Moe(Moe { spec, expert }) = &moes[0] else {
        unreachable!()
    };
    assert_eq!((spec.experts, spec.top_k, spec.shared), (8, 1, 0));
    assert_eq!(spec.router, RouterKind::TokenChoice);
    assert_eq!(spec.capacity, 1.25);
    assert_eq!(
        expert
            .topo()
            .iter()
            .map(|&i| expert.node(i).op.kind())
            .collect::<Vec<_>>(),
        ["input", "mlp", "output"]
    );
    // Parameters: all 8 experts; active: the router and one expert.
    let d = s.ctx().width as f64;
    let one_expert = 2.0 * d * 2.0 * d;
    let router = d * 8.0;
    assert_eq!(n.cost.params - n.cost.active_params, 2.0 * 7.0 * one_expert);
    let moe_only = expert.cost().params * 8.0 + router;
    assert_eq!(moe_only, 8.0 * one_expert + router);
}

#[test]
fn mixture_of_depths_block() {
    let s = space("quickstart");
    let text = "repeat(n=1, seq(mod(capacity=0.125, causal=true, block(norm=pre, norm_kind=layer, residual=false, attention(heads=2))), block(norm=pre, norm_kind=layer, mlp(act=gelu, gated=false, ratio=2))))";
    let n = s.parse_arch(text).unwrap();
    let Op::Mod(Mod {
        capacity,
        causal,
        body,
    }) = &ops(&n)[1]
    else {
        panic!("{:?}", kinds(&n))
    };
    assert_eq!((*capacity, *causal), (0.125, true));
    // The top-k router is not allowed in this causal task by default.
    let Err(e) = s.parse_arch(&text.replace("causal=true", "causal=false")) else {
        panic!("a top-k mixture-of-depths router is refused")
    };
    assert!(
        e.to_string().contains("does not allow it in a causal task"),
        "{e}"
    );
    assert_eq!(
        body.topo()
            .iter()
            .map(|&i| body.node(i).op.kind())
            .collect::<Vec<_>>(),
        ["input", "norm", "attention", "output"]
    );
    // The router is paid by every token; the body by the ⌈S/8⌉ routed ones,
    // whose attention sees only each other: its score and value terms fall
    // with ρ² (docs/routing.md#costs-of-routed-blocks).
    let d = s.ctx().width as f64;
    let seq = s.ctx().seq_len as f64;
    let routed = (0.125 * seq).ceil();
    let Some(&Op::Attention(Attention {
        heads,
        head_dim,
        causal: true,
    })) = body.topo().iter().map(|&i| &body.node(i).op).nth(2)
    else {
        panic!("a causal attention body")
    };
    let inner = (heads * head_dim) as f64;
    let norm = 5.0 * d;
    let attention_at = |tokens: f64| 8.0 * d * inner + 4.0 * (tokens + 1.0) / 2.0 * inner;
    let dense = s
        .parse_arch(&text.replace("mod(capacity=0.125, causal=true, block(norm=pre, norm_kind=layer, residual=false, attention(heads=2)))", "block(norm=pre, norm_kind=layer, attention(head_dim=auto, heads=2))"))
        .unwrap();
    let rest = dense.cost.flops - (norm + attention_at(seq) + d/* residual add */);
    let expected = rest + 2.0 * d + routed / seq * (norm + attention_at(routed));
    assert!(
        (n.cost.flops - expected).abs() < 1e-6 * expected,
        "{} vs {expected}",
        n.cost.flops
    );
    // A causal router is not flagged.
    assert!(!n.flags().iter().any(|f| f.contains("non-causal")));
}

#[test]
fn mlp_mixer_token_mixer_is_causal_in_a_decoder_space() {
    let s = space("einspace");
    let n = s
        .parse_arch("route(post=transpose, pre=transpose, linear(width=same))")
        .unwrap();
    let o = ops(&n);
    assert_eq!(
        kinds(&n),
        ["input", "transpose", "linear", "transpose", "output"]
    );
    let seq = s.ctx().seq_len;
    assert!(
        matches!(o[2], Op::Linear(Linear { out, token_mixing: true, causal: true, .. }) if out == seq)
    );
    let mid = n.arch.node(n.arch.topo()[2]).shape;
    assert_eq!((mid.rows.axis, mid.cols.axis), (Axis::Feat, Axis::Tok));
}

#[test]
fn mlp_mixer_token_mixer_is_dense_in_an_encoder_space() {
    let dir = tempfile::tempdir().unwrap();
    let g = std::fs::canonicalize("grammars/einspace.ron").unwrap();
    let p = dir.path().join("enc.ron");
    std::fs::write(
        &p,
        format!(
            r#"Space(grammar: "{}", task: (name: "selective_copying"), width: 32, limits: (max_depth: 10))"#,
            g.display()
        ),
    )
    .unwrap();
    let s = Space::load(&p).unwrap();
    let n = s
        .parse_arch("route(post=transpose, pre=transpose, linear(width=same))")
        .unwrap();
    assert!(matches!(
        ops(&n)[2],
        Op::Linear(Linear {
            token_mixing: true,
            causal: false,
            ..
        })
    ));
}

#[test]
fn self_attention_from_fundamental_ops() {
    let s = space("einspace");
    // clone → (Q, Kᵀ) → scaled dot → softmax → dot with V.
    let text = "branch(factor=2, merge=dot, split=clone, seq(branch(factor=2, merge=scaled_dot, split=clone, linear(width=32), route(post=transpose, pre=identity, linear(width=32))), softmax), linear(width=model))";
    let n = s.parse_arch(text).unwrap();
    let o = ops(&n);
    let dots: Vec<&Op> = o.iter().filter(|x| x.kind() == "dot").collect();
    assert!(matches!(
        dots[0],
        Op::Dot(Dot {
            scaled: true,
            mask: DotMask::Output
        })
    ));
    assert!(matches!(
        dots[1],
        Op::Dot(Dot {
            scaled: false,
            mask: DotMask::Left
        })
    ));
    assert!(o
        .iter()
        .any(|x| matches!(x, Op::Softmax(Softmax { causal: true }))));
    assert!(n.arch.output_shape().is_seq());
}

#[test]
fn causality_violations_are_refused() {
    let s = space("einspace");
    // A norm over the token axis lets position t see later positions.
    let e = s
        .parse_arch("route(post=transpose, pre=transpose, norm(kind=layer))")
        .unwrap_err();
    assert!(
        matches!(e, ArchError::Invalid(ref m) if m.contains("causality")),
        "{e}"
    );
    // Contracting over tokens with a (features × tokens) operand: KᵀV.
    let e = s
        .parse_arch("branch(factor=2, merge=dot, split=clone, route(post=transpose, pre=identity, identity), identity)")
        .unwrap_err();
    assert!(e.to_string().contains("causality"), "{e}");
}

#[test]
fn terms_outside_the_grammar_say_where() {
    let s = space("quickstart");
    let e = s
        .parse_arch("repeat(n=1, seq(block(norm=pre, norm_kind=layer, conv(k=3))))")
        .unwrap_err();
    assert!(e.to_string().contains("conv"), "{e}");
    let e = s.parse_arch("repeat(n=1, seq(block(norm=pre, norm_kind=layer, mlp(act=gelu, gated=false, ratio=3))))").unwrap_err();
    assert!(e.to_string().contains("ratio"), "{e}");
    let e = s.parse_arch("repeat(n=1, seq(block(norm=pre").unwrap_err();
    assert!(matches!(e, ArchError::Syntax(_)), "{e}");
}

/// Depth-routed bodies run on the routed tokens alone, so they may not use
/// positions; a layer-skip body runs once per group of sequences, so no
/// routed layer nests in it. Mixture-of-depths may hold an MoE.
#[test]
fn routed_bodies_reject_positional_ops_and_skip_bodies_reject_nesting() {
    let s = space("moe-heavy");
    let bad = [
        (
            "mod(capacity=0.5, causal=true, seq(posenc, block(mlp(ratio=2))))",
            "posenc",
        ),
        (
            "mod(capacity=0.5, causal=true, route(pre=transpose, post=transpose, linear(width=same)))",
            "transpose",
        ),
        (
            "layer_skip(capacity=0.5, block(moe(experts=4, mlp(ratio=1))))",
            "layer-skip",
        ),
        (
            "layer_skip(capacity=0.5, block(moh(heads=4, active=1)))",
            "layer-skip",
        ),
    ];
    for (text, why) in bad {
        let e = Network::build(archgram::grammar::Derivation::parse(text).unwrap(), s.ctx())
            .err()
            .unwrap_or_else(|| panic!("{text} was accepted"));
        assert!(e.to_string().contains(why), "{text}: {e}");
    }
    let ok = "mod(capacity=0.5, causal=true, block(moe(experts=4, mlp(ratio=1))))";
    Network::build(archgram::grammar::Derivation::parse(ok).unwrap(), s.ctx())
        .unwrap_or_else(|e| panic!("{ok}: {e}"));
}

/// The deepest architecture archgram reads (60 levels) goes through every
/// walk that recurses over it — parsing, matching against the grammar,
/// replay, lowering, hashing, printing, sampling at that depth, mutation,
/// and the store's JSON round trip — on a thread with the 2 MiB stack that
/// search workers get.
#[test]
fn the_deepest_readable_architecture_passes_every_walk() {
    use archgram::grammar::MAX_HEIGHT;
    use archgram::store::{CandidateRecord, SledStore, Store};
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("deep.ron"),
        r#"Grammar(start: "net", rules: {
            "net": [Alt(form: "seq", children: ["s"])],
            "s": [Alt(weight: 50.0, form: "seq", children: ["s"]), Alt(form: "mlp", params: {"ratio": 2})],
        })"#,
    )
    .unwrap();
    let sp = dir.path().join("deep_space.ron");
    std::fs::write(
        &sp,
        format!(
            r#"Space(grammar: "deep.ron", task: (name: "in_context_recall"), width: 16, limits: (max_depth: {MAX_HEIGHT}))"#
        ),
    )
    .unwrap();
    let store_dir = dir.path().join("store");
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || {
            let space = Space::load(&sp).unwrap_or_else(|e| panic!("{e}"));
            let text = format!(
                "{}mlp(ratio=2){}",
                "seq(".repeat(MAX_HEIGHT - 1),
                ")".repeat(MAX_HEIGHT - 1)
            );
            let n = space.parse_arch(&text).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(n.term.height(), MAX_HEIGHT);
            assert_eq!(n.text(), text);
            assert_eq!(n.tree().lines().count(), MAX_HEIGHT);
            assert!(n.listing().contains("mlp"));
            let hashes = archgram::hash::Hashes::of(&n.arch);
            let mut rng = archgram::seed::rng(1, "deep", 0);
            let drawn = space.sample(&mut rng).unwrap();
            assert!(drawn.term.height() <= MAX_HEIGHT);
            let _ = space.mutate(&n.term, &mut rng);
            let store = SledStore::open(&store_dir).unwrap();
            let record = CandidateRecord {
                id: 0,
                derivation: n.term.clone(),
                text: n.text(),
                hashes,
                parent: None,
                origin: "sample".into(),
                duplicate_of: None,
                params: n.cost.params,
                active_params: n.cost.active_params,
                flops: n.cost.flops,
                steps: 1,
            };
            store.put_candidate(&record).unwrap();
            assert_eq!(store.candidate(0).unwrap(), Some(record));
            // One level more is refused where it is read.
            let deeper = format!("seq({text})");
            assert!(space.parse_arch(&deeper).is_err());
        })
        .unwrap()
        .join()
        .unwrap();
}

/// A CaiT-style attention branch ending in LayerScale and a ResMLP-style
/// channel branch (`affine` in place of a norm), from a grammar that
/// offers both: they parse, sample, cost one vector per learned gain or
/// bias, and print back as written.
#[test]
fn layer_scale_and_affine_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let grammar = dir.path().join("cait.ron");
    std::fs::write(
        &grammar,
        r#"Grammar(start: "network", rules: {
            "network": [Alt(form: "repeat", params: {"n": [1, 2]}, children: ["layer"])],
            "layer": [Alt(form: "seq", children: ["mixer", "channel"])],
            "mixer": [Alt(form: "block", params: {"norm": "pre"}, children: ["scaled_attention"])],
            "scaled_attention": [Alt(form: "seq", children: ["attn", "scale"])],
            "attn": [Alt(form: "attention", params: {"heads": 2})],
            "scale": [Alt(form: "layer_scale", params: {"init": [0.1, 0.00001]})],
            "channel": [Alt(form: "block", params: {"norm": "none"}, children: ["affine_mlp"])],
            "affine_mlp": [Alt(form: "seq", children: ["aff", "mlp", "scale"])],
            "aff": [Alt(form: "affine")],
            "mlp": [Alt(form: "mlp", params: {"ratio": 2})],
        })"#,
    )
    .unwrap();
    let space = dir.path().join("cait-space.ron");
    std::fs::write(
        &space,
        format!(
            r#"Space(grammar: "{}", task: (name: "in_context_recall", params: {{"vocab": 16, "seq_len": 16}}), width: 16, limits: (max_depth: 10))"#,
            grammar.display()
        ),
    )
    .unwrap();
    let s = Space::load(&space).unwrap_or_else(|e| panic!("{e}"));
    let text = "repeat(n=1, seq(block(norm=pre, seq(attention(heads=2), layer_scale(init=0.1))), block(norm=none, seq(affine, mlp(ratio=2), layer_scale(init=0.00001)))))";
    let n = s.parse_arch(text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        kinds(&n),
        [
            "input",
            "norm",
            "attention",
            "layer_scale",
            "add",
            "affine",
            "mlp",
            "layer_scale",
            "add",
            "output"
        ]
    );
    let o = ops(&n);
    assert!(matches!(o[3], Op::LayerScale(LayerScale { init }) if init == 0.1));
    assert!(matches!(o[7], Op::LayerScale(LayerScale { init }) if init == 1e-5));
    let (d, v) = (16.0, 16.0);
    let (attn, mlp) = (4.0 * d * d, 2.0 * d * 2.0 * d);
    // Embedding, norm (gain, bias), attention, a gain, affine (gain and
    // bias), MLP, a gain, head.
    let params = v * d + 2.0 * d + attn + d + 2.0 * d + mlp + d + (d * v + v);
    assert_eq!(n.cost.params, params);
    assert_eq!(n.text(), text);
    // Every sample holds both kinds; a gain needs features on the last axis.
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    for _ in 0..10 {
        let k = kinds(&s.sample(&mut rng).unwrap());
        assert!(k.contains(&"layer_scale") && k.contains(&"affine"), "{k:?}");
    }
    let over_tokens = archgram::grammar::Derivation::parse(
        "route(pre=transpose, post=transpose, layer_scale(init=0.1))",
    )
    .unwrap();
    let e = Network::build(over_tokens, s.ctx()).unwrap_err();
    assert!(e.to_string().contains("layer_scale"), "{e}");
}
