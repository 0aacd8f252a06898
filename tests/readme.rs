//! The README's grammar and space examples load as written, and its event
//! table lists exactly the events and fields archgram writes.

use archgram::arch::ArchSemantics;
use archgram::grammar::{Grammar, Source};
use archgram::space::Space;
use archgram::store::events::*;
use archgram::store::{Event, EventKind, Finalist};
use std::collections::BTreeMap;

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

/// An event's fields as a table lists them: each top-level field, with the
/// fields of the objects it holds a list of (`routing[layer, kind]`).
type Fields = BTreeMap<String, Vec<String>>;

/// Fields written as `a, b, c[d, e]`; None for a description in words.
fn parse_fields(text: &str) -> Option<Fields> {
    let text = text.trim();
    let inner = text.strip_prefix('`')?.strip_suffix('`')?;
    if inner.contains('`') {
        return None;
    }
    let mut out = Fields::new();
    let mut rest = inner;
    while !rest.trim().is_empty() {
        let rest_trim = rest.trim_start_matches([',', ' ']);
        let end = rest_trim.find([',', '[']).unwrap_or(rest_trim.len());
        let name = rest_trim[..end].trim().to_string();
        let mut nested = Vec::new();
        rest = &rest_trim[end..];
        if let Some(r) = rest.strip_prefix('[') {
            let close = r.find(']').expect("a closing ]");
            nested = r[..close]
                .split(',')
                .map(|f| f.trim().to_string())
                .collect();
            nested.sort();
            rest = &r[close + 1..];
        }
        assert!(
            out.insert(name.clone(), nested).is_none(),
            "{name} twice in {text}"
        );
    }
    Some(out)
}

/// One event of every kind, every optional field present and every list of
/// objects holding one.
fn one_of_each() -> Vec<EventKind> {
    let all = vec![
        EventKind::RunStarted(RunStarted::default()),
        EventKind::Sampled(Sampled {
            steps: Some(1),
            ..Sampled::default()
        }),
        EventKind::Duplicate(Duplicate::default()),
        EventKind::Evaluated(Evaluated {
            routing: Some(vec![RoutedLayer::default()]),
            ..Evaluated::default()
        }),
        EventKind::Failed(Failed::default()),
        EventKind::NewBest(NewBest::default()),
        EventKind::Trial(Trial::default()),
        EventKind::ConfirmStarted(ConfirmStarted::default()),
        EventKind::Confirmed(Confirmed {
            finalists: vec![Finalist::default()],
            ..Confirmed::default()
        }),
        EventKind::FidelityStarted(FidelityStarted::default()),
        EventKind::Fidelity(serde_json::Map::new()),
        EventKind::Surrogate(Surrogate::default()),
        EventKind::RunFinished(RunFinished::default()),
    ];
    // A new kind of event fails to compile here until it is added above.
    for k in &all {
        match k {
            EventKind::RunStarted(_)
            | EventKind::Sampled(_)
            | EventKind::Duplicate(_)
            | EventKind::Evaluated(_)
            | EventKind::Failed(_)
            | EventKind::NewBest(_)
            | EventKind::Trial(_)
            | EventKind::ConfirmStarted(_)
            | EventKind::Confirmed(_)
            | EventKind::FidelityStarted(_)
            | EventKind::Fidelity(_)
            | EventKind::Surrogate(_)
            | EventKind::RunFinished(_)
            | EventKind::Unknown => {}
        }
    }
    all
}

/// What each event is written with: its fields, or None for the fidelity
/// report, whose fields are the report's.
fn written() -> BTreeMap<String, Option<Fields>> {
    let mut out = BTreeMap::new();
    for kind in one_of_each() {
        let e = Event {
            t: 1.0,
            kind,
            recovered: false,
        };
        let fields = match &e.kind {
            EventKind::Fidelity(_) => None,
            _ => {
                let v = serde_json::to_value(&e).unwrap();
                let mut f = Fields::new();
                for (k, v) in v.as_object().unwrap() {
                    if k == "t" || k == "event" {
                        continue;
                    }
                    let mut nested: Vec<String> = match v.as_array().and_then(|a| a.first()) {
                        Some(serde_json::Value::Object(o)) => o.keys().cloned().collect(),
                        _ => Vec::new(),
                    };
                    nested.sort();
                    f.insert(k.clone(), nested);
                }
                Some(f)
            }
        };
        out.insert(e.name().to_string(), fields);
    }
    out
}

fn check(source: &str, listed: BTreeMap<String, String>) {
    let written = written();
    assert_eq!(
        listed.keys().collect::<Vec<_>>(),
        written.keys().collect::<Vec<_>>(),
        "{source} lists other events than archgram writes"
    );
    for (name, text) in &listed {
        match &written[name] {
            Some(fields) => assert_eq!(
                parse_fields(text).as_ref(),
                Some(fields),
                "{source}: `{name}` lists {text}"
            ),
            None => assert!(
                text.contains("`archgram fidelity --json` report"),
                "{source}: `{name}`: {text}"
            ),
        }
    }
}

#[test]
fn readme_event_table_lists_every_event_and_field_written() {
    let readme = std::fs::read_to_string("README.md").unwrap();
    let section = readme
        .split("## The event log")
        .nth(1)
        .expect("an event log section")
        .split("\n## ")
        .next()
        .unwrap();
    let mut listed = BTreeMap::new();
    for row in section.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = row.split(" | ").collect();
        let name = cells[0].trim_start_matches("| ").trim_matches('`');
        listed.insert(name.to_string(), cells[1].to_string());
    }
    check("README.md", listed);
}

#[test]
fn the_event_modules_list_matches_too() {
    let src = std::fs::read_to_string("src/store/events.rs").unwrap();
    let mut listed = BTreeMap::new();
    for line in src.lines().filter_map(|l| l.strip_prefix("//! - `")) {
        let (name, fields) = line.split_once("` ").unwrap();
        listed.insert(name.to_string(), fields.to_string());
    }
    check("src/store/events.rs", listed);
}

#[test]
fn a_field_list_parses_with_nested_objects() {
    let f = parse_fields("`id, routing[layer, kind], score`").unwrap();
    assert_eq!(f["routing"], ["kind", "layer"]);
    assert_eq!(f.keys().collect::<Vec<_>>(), ["id", "routing", "score"]);
    assert!(parse_fields("the fields of the `archgram fidelity --json` report").is_none());
}

/// The README's forms table names every form a grammar may use, and no
/// other: a form added without its row (or a row left for a removed form)
/// fails here.
#[test]
fn the_forms_table_lists_every_form() {
    let readme = std::fs::read_to_string("README.md").unwrap();
    let table = readme
        .split("| form | parameters (default) | children | meaning |")
        .nth(1)
        .expect("the forms table");
    let mut listed = std::collections::BTreeSet::new();
    for row in table.lines().skip(2).take_while(|l| l.starts_with('|')) {
        let first = row.split('|').nth(1).unwrap_or("");
        for name in first.split('`').skip(1).step_by(2) {
            listed.insert(name.to_string());
        }
    }
    let forms: std::collections::BTreeSet<String> = archgram::arch::forms::FORMS
        .iter()
        .map(|f| f.name.to_string())
        .collect();
    assert_eq!(listed, forms);
}
