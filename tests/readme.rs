//! The README's grammar and space examples load as written.

use archgram::arch::ArchSemantics;
use archgram::grammar::{Grammar, Source};
use archgram::space::Space;

fn ron_blocks(readme: &str) -> Vec<String> {
    readme
        .split("```ron\n")
        .skip(1)
        .map(|b| b.split("```").next().unwrap().to_string())
        .collect()
}

#[test]
fn readme_examples_load() {
    let readme = std::fs::read_to_string("README.md").unwrap();
    let blocks = ron_blocks(&readme);
    let grammar = blocks
        .iter()
        .find(|b| b.starts_with("Grammar("))
        .expect("grammar example");
    let space_text = blocks
        .iter()
        .find(|b| b.starts_with("Space("))
        .expect("space example");
    let dir = tempfile::tempdir().unwrap();
    // The space example points at ../grammars/blocks.ron; mirror that layout.
    std::fs::create_dir_all(dir.path().join("grammars")).unwrap();
    std::fs::create_dir_all(dir.path().join("spaces")).unwrap();
    std::fs::copy(
        "grammars/blocks.ron",
        dir.path().join("grammars/blocks.ron"),
    )
    .unwrap();
    let sp = dir.path().join("spaces/example.ron");
    std::fs::write(&sp, space_text).unwrap();
    let space = Space::load(&sp).unwrap_or_else(|e| panic!("{e}"));
    let gp = dir.path().join("grammars/example.ron");
    std::fs::write(&gp, grammar).unwrap();
    let sem: &ArchSemantics = &space.sem;
    let src = Source::read(&gp).unwrap();
    let (g, warnings) = Grammar::from_source(&src, sem).unwrap_or_else(|e| panic!("{e}"));
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(g.rules.len(), 7);
}
