//! The file parsers against damaged input: a shipped grammar or space with
//! random edits (bytes cut, spliced in or repeated, numbers swapped for
//! extreme ones) loads or is refused with an error that names the file;
//! it never panics, overflows or hangs.

use archgram::grammar::{Derivation, Grammar, Source};
use archgram::space::Space;
use proptest::prelude::*;
use std::path::Path;

/// Things a person or a broken disk could leave in a file.
fn splice() -> impl Strategy<Value = String> {
    prop_oneof![
        "[\\[\\](){}:,\"0-9a-z_. -]{0,8}",
        Just("1e308".to_string()),
        Just("-1".to_string()),
        Just("NaN".to_string()),
        Just("4000000000".to_string()),
        Just("[".repeat(300)),
        Just("seq(".repeat(100)),
        // Once past the stack's end: the parser recursed once per level.
        Just("seq(".repeat(40_000)),
        Just("\"network\": [Alt(form: \"mlp\", params: {\"ratio\": 2})],".to_string()),
    ]
}

/// `text` with `cut` bytes removed at `at` (a fraction of its length) and
/// `insert` put in their place, on a character boundary.
fn edit(text: &str, at: f64, cut: usize, insert: &str) -> String {
    let mut i = ((text.len() as f64) * at) as usize;
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    let mut j = (i + cut).min(text.len());
    while !text.is_char_boundary(j) {
        j -= 1;
    }
    format!("{}{insert}{}", &text[..i], &text[j..])
}

fn blocks() -> String {
    std::fs::read_to_string("grammars/blocks.ron").unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn damaged_grammars_load_or_fail_located(at in 0.0f64..1.0, cut in 0usize..40, insert in splice()) {
        let space = Space::load(Path::new("spaces/quickstart.ron")).unwrap();
        let text = edit(&blocks(), at, cut, &insert);
        let src = Source { path: "damaged.ron".into(), text };
        if let Err(e) = Grammar::from_source(&src, &space.sem) {
            prop_assert!(e.file.is_some(), "{}", e);
            prop_assert!(!e.message.is_empty());
        }
    }

    #[test]
    fn damaged_spaces_load_or_fail_located(at in 0.0f64..1.0, cut in 0usize..40, insert in splice()) {
        let dir = tempfile::tempdir().unwrap();
        let grammar = std::fs::canonicalize("grammars/blocks.ron").unwrap();
        let text = std::fs::read_to_string("spaces/quickstart.ron")
            .unwrap()
            .replace("../grammars/blocks.ron", grammar.to_str().unwrap());
        let p = dir.path().join("damaged.ron");
        std::fs::write(&p, edit(&text, at, cut, &insert)).unwrap();
        if let Err(e) = Space::load(&p) {
            prop_assert!(e.to_string().contains("damaged.ron") || e.to_string().contains("blocks.ron"), "{}", e);
        }
    }

    /// A baseline architecture with random edits parses and matches, or is
    /// refused; never a panic or an overflow.
    #[test]
    fn damaged_architectures_parse_or_fail(at in 0.0f64..1.0, cut in 0usize..20, insert in splice()) {
        let space = Space::load(Path::new("spaces/quickstart.ron")).unwrap();
        let text = edit(&space.file.baselines["transformer"], at, cut, &insert);
        if let Err(e) = Derivation::parse(&text) {
            prop_assert!(e.pos.is_some(), "{}", e);
        }
        let _ = space.parse_arch(&text);
    }
}
