//! The binary end to end: output is reproducible, bad input exits 2 with a
//! located message, nothing panics.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn archgram(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_archgram"))
        .args(args)
        .output()
        .expect("run archgram")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn sample_prints_1000_valid_architectures_and_the_same_bytes_again() {
    let args = [
        "sample",
        "--space",
        "spaces/quickstart.ron",
        "-n",
        "1000",
        "--seed",
        "7",
    ];
    let a = archgram(&args);
    assert!(a.status.success(), "{}", stderr(&a));
    let b = archgram(&args);
    assert_eq!(a.stdout, b.stdout);
    let text = stdout(&a);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1000);
    // Every line parses back through `show` (a sample of them, to keep it quick).
    for line in lines.iter().step_by(97) {
        let arch = line
            .split_once(" nodes=")
            .unwrap()
            .1
            .split_once(' ')
            .unwrap()
            .1;
        let o = archgram(&["show", arch, "--space", "spaces/quickstart.ron", "--json"]);
        assert!(o.status.success(), "{arch}: {}", stderr(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["arch"], arch);
    }
    let other = archgram(&[
        "sample",
        "--space",
        "spaces/quickstart.ron",
        "-n",
        "1000",
        "--seed",
        "8",
    ]);
    assert_ne!(other.stdout, a.stdout);
}

#[test]
fn jsonl_has_the_numbers() {
    let o = archgram(&[
        "sample",
        "--space",
        "spaces/moe-heavy.ron",
        "-n",
        "5",
        "--format",
        "jsonl",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    for line in stdout(&o).lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(v["params"].as_f64().unwrap() >= v["active_params"].as_f64().unwrap());
        assert!(v["arch"].as_str().unwrap().contains("moe("));
    }
}

#[test]
fn check_summarises_each_space() {
    for s in ["quickstart", "moe-heavy", "einspace"] {
        let o = archgram(&[
            "check",
            "--space",
            &format!("spaces/{s}.ron"),
            "--samples",
            "50",
        ]);
        assert!(o.status.success(), "{s}: {}", stderr(&o));
        let out = stdout(&o);
        for key in [
            "symbols",
            "alternatives",
            "height",
            "unconstrained draws meet them",
            "ok",
        ] {
            assert!(out.contains(key), "{s}: missing {key} in\n{out}");
        }
    }
}

#[test]
fn show_prints_tree_graph_and_numbers() {
    let arch = "repeat(n=1, seq(block(norm=pre, norm_kind=layer, attention(head_dim=auto, heads=4)), block(norm=pre, norm_kind=layer, mlp(act=gelu, gated=false, ratio=4))))";
    let o = archgram(&["show", arch]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("attention(heads=4, head_dim=8, causal)"),
        "{out}"
    );
    assert!(out.contains("parameters 13456"), "{out}");
    // From a file, too.
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("best.txt");
    std::fs::write(&f, format!("// my baseline\n{arch}\n")).unwrap();
    let o2 = archgram(&["show", f.to_str().unwrap()]);
    assert_eq!(o2.stdout, o.stdout);
}

#[test]
fn tasks_lists_the_catalogue() {
    let o = archgram(&["tasks"]);
    assert!(o.status.success());
    let out = stdout(&o);
    for t in [
        "in_context_recall",
        "mqar",
        "moe_mixture",
        "char_lm",
        "selective_copying",
    ] {
        assert!(out.contains(t), "{t}");
    }
}

#[test]
fn every_command_has_help_with_an_example() {
    for cmd in ["sample", "check", "show", "tasks", "eval", "hash"] {
        let o = archgram(&[cmd, "--help"]);
        assert!(o.status.success());
        assert!(stdout(&o).contains("Example"), "{cmd}");
    }
}

/// The first line of a corpus file: `// expect: <fragment of the message>`.
fn expected(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .next()
        .and_then(|l| l.strip_prefix("// expect: "))
        .unwrap_or_else(|| panic!("{} lacks an expect line", path.display()))
        .to_string()
}

fn corpus() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir("tests/bad")
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "ron"))
        .collect();
    v.sort();
    v
}

fn assert_bad_input(o: &Output, file: &str, fragment: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(2), "{file}: {err}");
    assert!(!err.contains("panicked"), "{file}: {err}");
    assert!(
        err.contains(fragment),
        "{file}: expected `{fragment}` in: {err}"
    );
    // file:line:col
    let located = err.split_whitespace().any(|w| {
        w.contains(".ron:")
            && w.trim_end_matches(':')
                .rsplit(':')
                .take(2)
                .all(|n| n.parse::<usize>().is_ok())
    });
    assert!(located, "{file}: no file:line:col in: {err}");
}

#[test]
fn malformed_grammar_and_space_files_exit_2_with_a_located_message() {
    let dir = tempfile::tempdir().unwrap();
    let files = corpus();
    assert!(files.len() >= 20);
    for path in files {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let fragment = expected(&path);
        let space = if name.starts_with("grammar_") {
            let abs = std::fs::canonicalize(&path).unwrap();
            let s = dir.path().join(format!("uses_{name}"));
            std::fs::write(
                &s,
                format!(
                    r#"Space(grammar: "{}", task: (name: "in_context_recall"), width: 32, limits: (max_depth: 8))"#,
                    abs.display()
                ),
            )
            .unwrap();
            s
        } else {
            path.clone()
        };
        let o = archgram(&["sample", "--space", space.to_str().unwrap(), "-n", "3"]);
        assert_bad_input(&o, &name, &fragment);
        if name.starts_with("grammar_") {
            assert!(
                stderr(&o).contains(&name),
                "{name}: the message must name the grammar file"
            );
        }
    }
}

#[test]
fn bad_architectures_and_flags_exit_2() {
    let o = archgram(&["show", "repeat(n=1, seq(block(norm=pre"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("unclosed"), "{}", stderr(&o));
    let o = archgram(&[
        "show",
        "repeat(n=1, seq(block(norm=pre, norm_kind=layer, conv(k=3))))",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("conv"));
    let o = archgram(&["sample", "--space", "spaces/nope.ron"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("nope.ron"));
    let o = archgram(&["sample", "--space", "spaces/quickstart.ron", "-n", "many"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn eval_trains_one_candidate_and_reports() {
    let o = archgram(&[
        "eval",
        "--space",
        "spaces/quickstart.ron",
        "--sample",
        "3",
        "--steps",
        "20",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["outcome"]["status"], "ok");
    assert_eq!(v["outcome"]["steps"], 20);
    assert!(v["outcome"]["score"].as_f64().unwrap() >= 0.0);
    let text = archgram(&[
        "eval",
        "--space",
        "spaces/quickstart.ron",
        "--sample",
        "3",
        "--steps",
        "20",
    ]);
    assert!(stdout(&text).contains("accuracy"), "{}", stdout(&text));
}

#[test]
fn cuda_without_the_feature_is_a_clear_error() {
    if cfg!(feature = "cuda") {
        return;
    }
    let o = archgram(&[
        "eval",
        "--space",
        "spaces/quickstart.ron",
        "--sample",
        "1",
        "--device",
        "cuda",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--features cuda"), "{}", stderr(&o));
}

#[test]
fn hash_prints_both_hashes_and_equal_spellings_agree() {
    let a =
        "repeat(n=1, seq(block(norm=pre, norm_kind=layer, mlp(act=gelu, gated=false, ratio=4))))";
    let o = archgram(&["hash", a, a]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3);
    assert!(lines[0].starts_with("structural "));
    assert!(lines[0].contains("functional "));
    assert_eq!(lines[0], lines[1]);
    assert_eq!(
        lines[2],
        "#1 and #2: merged at the structural stage (the same graph)"
    );
}

#[test]
fn hash_says_for_each_pair_how_it_would_be_merged_or_why_not() {
    // Run from outside the repository, without --space: the default space
    // is found beside the executable's tree.
    let dir = tempfile::tempdir().unwrap();
    let einspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("spaces/einspace.ron");
    let transposed = "seq(route(pre=transpose, post=identity, act(fn=gelu)), route(pre=transpose, post=identity, linear(width=model)))";
    let plain = "seq(act(fn=gelu), linear(width=model))";
    let other = "seq(act(fn=relu), linear(width=model))";
    let saturated = "seq(norm(kind=layer), seq(linear(width=128), branch(split=clone, factor=2, merge=dot, seq(branch(split=clone, factor=2, merge=dot, identity, route(pre=identity, post=transpose, identity)), softmax), identity)))";
    let o = Command::new(env!("CARGO_BIN_EXE_archgram"))
        .current_dir(dir.path())
        .args(["hash", "--space"])
        .arg(&einspace)
        .args([transposed, plain, other, saturated])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let line = |p: &str| {
        out.lines()
            .find(|l| l.starts_with(p))
            .unwrap_or_else(|| panic!("no `{p}` in\n{out}"))
            .to_string()
    };
    assert!(
        line("#1 and #2:").contains("merged at the functional stage"),
        "{out}"
    );
    assert!(
        line("#2 and #3:").contains(
            "not merged: first difference at child path 0: `act(fn=gelu)` vs `act(fn=relu)`; their outputs differ"
        ),
        "{out}"
    );
    assert!(line("#4:").contains("degenerate, never merged"), "{out}");
    assert!(line("#4:").contains("one-hot"), "{out}");
    assert!(line("#1 and #4:").contains("#4 is degenerate"), "{out}");

    let o = Command::new(env!("CARGO_BIN_EXE_archgram"))
        .current_dir(dir.path())
        .args([
            "hash",
            "repeat(n=1, seq(block(norm=pre, norm_kind=layer, mlp(act=gelu, gated=false, ratio=4))))",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
}
