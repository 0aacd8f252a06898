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
            "10% below",
        ] {
            assert!(out.contains(key), "{s}: missing {key} in\n{out}");
        }
        assert_eq!(out.lines().last(), Some("ok"), "{s}:\n{out}");
        assert!(out.contains("50 drawn, 0 failed"), "{s}:\n{out}");
        // The largest sample is within the space's parameter limit.
        let space = archgram::space::Space::load(Path::new(&format!("spaces/{s}.ron"))).unwrap();
        let params = out.lines().find(|l| l.starts_with("params")).unwrap();
        let max = params
            .split("max ")
            .nth(1)
            .unwrap()
            .split(';')
            .next()
            .unwrap();
        let max: f64 = match max.split_at(max.len() - 1) {
            (k, "k") => k.parse::<f64>().unwrap() * 1e3,
            (m, "M") => m.parse::<f64>().unwrap() * 1e6,
            _ => max.parse().unwrap(),
        };
        if let Some(limit) = space.file.limits.max_params {
            // The printed figure is rounded to three digits.
            assert!(max <= limit * 1.005, "{s}: {params} over {limit}");
        }
        // One line per baseline the space names.
        let baselines = out.lines().filter(|l| l.starts_with("baseline")).count();
        assert_eq!(baselines, space.file.baselines.len(), "{s}:\n{out}");
        // How many samples cannot beat chance by construction.
        let trivial = out
            .lines()
            .find(|l| l.starts_with("trivial"))
            .unwrap_or_else(|| panic!("{s}: no trivial line in\n{out}"));
        let pct: f64 = trivial
            .split_whitespace()
            .nth(1)
            .unwrap()
            .trim_end_matches('%')
            .parse()
            .unwrap();
        assert!(pct <= 25.0, "{s}: {trivial}");
        if s == "einspace" {
            // Its grammar alone draws mostly networks that mix no tokens;
            // the space rejects them and says so.
            let raw = out
                .lines()
                .find(|l| l.contains("without it"))
                .unwrap_or_else(|| panic!("no raw rate in\n{out}"));
            let pct: f64 = raw
                .split("without it ")
                .nth(1)
                .and_then(|r| r.split('%').next())
                .unwrap()
                .parse()
                .unwrap();
            assert!(pct > 50.0, "{raw}");
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

/// Every subcommand clap knows (so a new one is covered without editing
/// this list) has help with an example that runs that command.
#[test]
fn every_command_has_help_with_an_example() {
    use clap::CommandFactory;
    let cli = archgram::cli::Cli::command();
    let names: Vec<String> = cli
        .get_subcommands()
        .map(|c| c.get_name().to_string())
        .filter(|n| n != "help")
        .collect();
    assert!(names.len() >= 13, "{names:?}");
    for cmd in &names {
        let o = archgram(&[cmd, "--help"]);
        assert!(o.status.success(), "{cmd}: {}", stderr(&o));
        let help = stdout(&o);
        let example = help
            .split_once("Example")
            .unwrap_or_else(|| panic!("`{cmd} --help` has no example:\n{help}"))
            .1;
        assert!(
            example.contains(&format!("archgram {cmd}")),
            "`{cmd} --help`'s example does not run `archgram {cmd}`:\n{help}"
        );
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

/// Exit `code`, `fragment` in the message, and nothing a user should not
/// see: no panic, no Rust debug formatting of an error.
fn assert_fails(o: &Output, code: i32, what: &str, fragment: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(code), "{what}: {err}");
    assert!(!err.contains("panicked"), "{what}: {err}");
    for debug in ["Os {", "Custom {", "Kind(", "Error {", "SpannedError"] {
        assert!(!err.contains(debug), "{what}: debug output in: {err}");
    }
    assert!(
        err.contains(fragment),
        "{what}: expected `{fragment}` in: {err}"
    );
}

fn assert_bad_input(o: &Output, file: &str, fragment: &str) {
    assert_fails(o, 2, file, fragment);
    let err = stderr(o);
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

/// Every file in `tests/bad/` fails `sample` and `check` alike: exit 2,
/// the expected message, located in the file at fault.
#[test]
fn malformed_grammar_and_space_files_exit_2_with_a_located_message() {
    let dir = tempfile::tempdir().unwrap();
    let files = corpus();
    assert!(files.len() >= 58, "{} corpus files", files.len());
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
        let sample = archgram(&["sample", "--space", space.to_str().unwrap(), "-n", "3"]);
        let check = archgram(&[
            "check",
            "--space",
            space.to_str().unwrap(),
            "--samples",
            "20",
        ]);
        for o in [sample, check] {
            assert_bad_input(&o, &name, &fragment);
            if name.starts_with("grammar_") {
                assert!(
                    stderr(&o).contains(&name),
                    "{name}: the message must name the grammar file"
                );
            }
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
    let out = &v["outcome"];
    assert_eq!(out["status"], "ok");
    assert_eq!(out["steps"], 20);
    // Scored by the space's rule: accuracy, or the likelihood exp(−loss)
    // of the held-out targets; both in (0, 1].
    let score = out["score"].as_f64().unwrap();
    assert!(score > 0.0 && score <= 1.0, "{score}");
    let metric = out["metric"].as_str().unwrap();
    match metric {
        "likelihood" => {
            let loss = out["test_loss"].as_f64().unwrap();
            assert!(
                (score - (-loss).exp()).abs() < 1e-9,
                "{score} vs loss {loss}"
            );
        }
        "accuracy" => assert_eq!(out["score"], out["accuracy"]),
        other => panic!("unknown metric {other}"),
    }
    assert!(out["scored"].as_u64().unwrap() > 0);
    // Twenty steps of training lower the loss from where it started.
    let curve = out["loss_curve"].as_array().unwrap();
    let first = curve[0][1].as_f64().unwrap();
    let last = out["final_loss"].as_f64().unwrap();
    assert!(last < first, "loss went from {first} to {last}");
    assert_eq!(curve.last().unwrap()[0], 19);
    let text = archgram(&[
        "eval",
        "--space",
        "spaces/quickstart.ron",
        "--sample",
        "3",
        "--steps",
        "20",
    ]);
    // Training is deterministic: the plain report shows the same score.
    assert!(
        stdout(&text).contains(&format!("{metric} {score:.4}")),
        "{}",
        stdout(&text)
    );
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
    // search and worker ask before anything starts: no run folder, no
    // database connection (the address below leads nowhere).
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    for args in [
        vec![
            "search",
            "--space",
            "spaces/quickstart.ron",
            "--budget",
            "1",
            "--no-tui",
            "--runs",
            runs.to_str().unwrap(),
            "--device",
            "cuda:1",
        ],
        vec![
            "worker",
            "--db",
            "postgres://archgram@nowhere.invalid/archgram",
            "--device",
            "cuda",
        ],
    ] {
        let o = archgram(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(
            stderr(&o).starts_with("error: --device cuda"),
            "{}",
            stderr(&o)
        );
        assert!(stderr(&o).contains("--features cuda"), "{}", stderr(&o));
    }
    assert!(!runs.exists());
}

/// `--device` takes cpu, cuda or cuda:N; anything else is exit 2 with the
/// three forms, before any work.
#[test]
fn a_device_that_is_not_one_is_exit_2() {
    for bad in ["gpu", "cuda:", "cuda:x", "cuda:-1", "cuda:70000"] {
        for cmd in ["eval", "search"] {
            let mut args = vec![cmd, "--space", "spaces/quickstart.ron", "--device", bad];
            if cmd == "eval" {
                args.extend(["--sample", "1"]);
            }
            let o = archgram(&args);
            assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
            assert_eq!(
                stderr(&o).trim(),
                format!("error: --device `{bad}`: use cpu, cuda (GPU 0) or cuda:N (GPU N, from 0 to 65535)"),
                "{args:?}"
            );
        }
    }
}

/// Two different spellings of one network (`top_p` has no effect under a
/// token-choice router, so it takes its canonical value) hash alike; a
/// different network does not.
#[test]
fn hash_prints_both_hashes_and_equal_spellings_agree() {
    let moe = |experts: u32, top_p: &str| {
        format!("repeat(n=1, seq(block(norm=pre, norm_kind=layer, moe(balance=aux_loss, capacity=1.25, experts={experts}, router=token_choice, shared=0, top_k=1{top_p}, mlp(act=gelu, gated=false, ratio=1)))))")
    };
    let (a, b, c) = (moe(4, ""), moe(4, ", top_p=0.3"), moe(8, ""));
    let (a, b, c) = (a.as_str(), b.as_str(), c.as_str());
    let o = archgram(&["hash", a, b, c]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 6, "{out}");
    let hex = |l: &str, field: &str| -> String {
        let at = l.find(field).unwrap_or_else(|| panic!("no {field} in {l}")) + field.len();
        l[at..]
            .trim_start()
            .chars()
            .take_while(|c| c.is_ascii_hexdigit())
            .collect()
    };
    for l in &lines[..3] {
        assert_eq!(hex(l, "structural").len(), 32, "{l}");
        assert_eq!(hex(l, "functional").len(), 32, "{l}");
    }
    assert_eq!(lines[0], lines[1]);
    assert_ne!(hex(lines[0], "structural"), hex(lines[2], "structural"));
    assert_ne!(hex(lines[0], "functional"), hex(lines[2], "functional"));
    assert_eq!(
        lines[3],
        "#1 and #2: merged at the structural stage (the same graph)"
    );
    assert!(lines[4].starts_with("#1 and #3: not merged"), "{out}");
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

/// Bad command lines: each exits 2 with a message that names the problem.
#[test]
fn bad_flags_exit_2_with_the_rule() {
    let q = "spaces/quickstart.ron";
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let too_many = (cores + 1).to_string();
    let cases: &[(&[&str], &str)] = &[
        (&["search", "--space", q, "--workers", "0"], "--workers"),
        (
            &["search", "--space", q, "--workers", "100000"],
            "the cores this machine has",
        ),
        (
            &["search", "--space", q, "--workers", &too_many],
            "the cores this machine has",
        ),
        (&["search", "--space", q, "--budget", "0"], "--budget"),
        (&["search", "--space", q, "--steps", "0"], "--steps"),
        (
            &["eval", "--space", q, "--sample", "1", "--steps", "0"],
            "--steps",
        ),
        (&["check", "--space", q, "--samples", "0"], "--samples"),
        (&["export", "runs/none", "--top", "0"], "--top"),
        (
            &["search", "--space", q, "--time", "soon"],
            "'soon' for '--time",
        ),
        (
            &["search", "--space", q, "--time", "1e30h"],
            "'1e30h' for '--time",
        ),
        (
            &["search", "--space", q, "--time", "0s"],
            "longer than zero",
        ),
        (
            &["search", "--space", q, "--time", "99999999999999999999h"],
            "for '--time",
        ),
        (
            &["resume", "runs/none", "--time", "1e30h"],
            "'1e30h' for '--time",
        ),
    ];
    for (args, fragment) in cases {
        let o = archgram(args);
        assert_fails(&o, 2, &args.join(" "), fragment);
    }
}

/// A run name is one folder inside the runs folder: the rule is in the
/// message, and nothing is written outside (or over) the runs folder.
#[test]
fn bad_run_names_are_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    std::fs::create_dir(&runs).unwrap();
    let abs = dir.path().join("elsewhere");
    for name in [
        "",
        ".",
        "..",
        "../x",
        "a/b",
        abs.to_str().unwrap(),
        "a\nb",
        "tab\there",
    ] {
        let o = archgram(&[
            "search",
            "--space",
            "spaces/quickstart.ron",
            "--budget",
            "1",
            "--steps",
            "1",
            "--no-tui",
            "--runs",
            runs.to_str().unwrap(),
            "--name",
            name,
        ]);
        assert_fails(&o, 2, &format!("--name {name:?}"), "one folder name");
    }
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(left.len(), 1, "only the runs folder: {left:?}");
    assert_eq!(std::fs::read_dir(&runs).unwrap().count(), 0);
    // A space whose name is not a folder name needs --name.
    let space = dir.path().join("slash.ron");
    std::fs::write(
        &space,
        std::fs::read_to_string("spaces/quickstart.ron")
            .unwrap()
            .replacen("name: \"quickstart\"", "name: \"a/b\"", 1)
            .replace(
                "../grammars/",
                &format!("{}/grammars/", env!("CARGO_MANIFEST_DIR")),
            ),
    )
    .unwrap();
    let o = archgram(&[
        "search",
        "--space",
        space.to_str().unwrap(),
        "--budget",
        "1",
        "--no-tui",
        "--runs",
        runs.to_str().unwrap(),
    ]);
    assert_fails(&o, 2, "space name a/b", "--name");
}

/// An argument that is a path (no `(`; a `.`, `/`, `\\` or `~`, or an
/// existing file) is read as a file everywhere an architecture is taken,
/// so a missing one is a missing file, not a syntax error at `.`.
#[test]
fn a_missing_architecture_file_is_named_as_such() {
    let moe = "spaces/moe-heavy.ron";
    for (args, what) in [
        (vec!["show", "./missing.txt"], "show"),
        (vec!["show", "best.txt"], "show"),
        (vec!["hash", "./missing.txt"], "hash"),
        (
            vec![
                "eval",
                "--space",
                "spaces/quickstart.ron",
                "--arch",
                "runs/x/best",
            ],
            "eval",
        ),
        (
            vec!["simulate", "--arch", "~/best.txt", "--space", moe],
            "simulate",
        ),
    ] {
        let o = archgram(&args);
        assert_fails(&o, 2, what, "cannot read the architecture file");
        assert!(
            !stderr(&o).contains("expected a name"),
            "{what}: {}",
            stderr(&o)
        );
    }
    // A bare form name is still a text form.
    let o = archgram(&["show", "identity"]);
    assert_fails(&o, 2, "show identity", "not derivable");
}

fn nested(levels: usize) -> String {
    format!(
        "{}mlp(act=gelu, gated=false, ratio=4){}",
        "seq(".repeat(levels - 1),
        ")".repeat(levels - 1)
    )
}

/// Architecture text nested far past the limit (30,000 levels once
/// overflowed the stack: abort, exit 134) is refused where it is read, by
/// every command that reads one; 60 levels, the limit, is read and then
/// judged against the grammar.
#[test]
fn deeply_nested_architectures_are_refused_not_overflowed() {
    let dir = tempfile::tempdir().unwrap();
    let deep = dir.path().join("deep.txt");
    std::fs::write(&deep, nested(30_000)).unwrap();
    let deep = deep.to_str().unwrap();
    let at_limit = dir.path().join("sixty.txt");
    std::fs::write(&at_limit, nested(60)).unwrap();
    let at_limit = at_limit.to_str().unwrap();
    let commands: [Vec<&str>; 4] = [
        vec!["show"],
        vec!["hash"],
        vec![
            "eval",
            "--space",
            "spaces/quickstart.ron",
            "--steps",
            "1",
            "--arch",
        ],
        vec!["simulate", "--space", "spaces/moe-heavy.ron", "--arch"],
    ];
    for cmd in &commands {
        let mut args = cmd.clone();
        args.push(deep);
        let o = archgram(&args);
        assert_fails(&o, 2, cmd[0], "deeper than 60 levels");
        let mut args = cmd.clone();
        args.push(at_limit);
        let o = archgram(&args);
        assert_fails(&o, 2, cmd[0], "not derivable");
    }
}

/// Every argument of every command says what it is in `--help`, and the
/// help says what the build does.
#[test]
fn every_argument_is_documented() {
    use clap::CommandFactory;
    let cli = archgram::cli::Cli::command();
    for sub in cli.get_subcommands() {
        for arg in sub.get_arguments() {
            let id = arg.get_id().as_str();
            if id == "help" || id == "version" {
                continue;
            }
            assert!(
                arg.get_help().is_some(),
                "`archgram {} --help` does not document {id}",
                sub.get_name()
            );
        }
    }
    let search = stdout(&archgram(&["search", "--help"]));
    assert!(!search.contains("not built yet"), "{search}");
    assert!(search.contains("dashboard"), "{search}");
    let resume = stdout(&archgram(&["resume", "--help"]));
    for arg in ["RUN", "--time", "--no-tui"] {
        assert!(resume.contains(arg), "{resume}");
    }
}

/// A space nothing can be drawn from fails `check` as it fails `sample`
/// (`check` once printed "ok" with every sample failed).
#[test]
fn check_fails_when_no_sample_can_be_drawn() {
    let dir = tempfile::tempdir().unwrap();
    let space = dir.path().join("tight.ron");
    std::fs::write(
        &space,
        format!(
            r#"Space(grammar: "{}/grammars/blocks.ron", task: (name: "in_context_recall"), width: 32, limits: (max_depth: 8, max_params: 1100))"#,
            env!("CARGO_MANIFEST_DIR")
        ),
    )
    .unwrap();
    let o = archgram(&[
        "check",
        "--space",
        space.to_str().unwrap(),
        "--samples",
        "5",
    ]);
    assert_fails(&o, 2, "check", "no sample could be drawn (5 tried)");
    assert!(!stdout(&o).contains("\nok"), "{}", stdout(&o));
    assert!(stderr(&o).contains("tight.ron:1:"), "{}", stderr(&o));
}

/// `eval` of a candidate that cannot train prints its outcome and exits 1
/// (it once printed FAILED and exited 0).
#[test]
fn eval_of_a_candidate_that_cannot_train_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("wide.ron"),
        r#"Grammar(start: "net", rules: {"net": [Alt(form: "seq", children: ["m"])], "m": [Alt(form: "mlp", params: {"ratio": 64})]})"#,
    )
    .unwrap();
    let space = dir.path().join("wide_space.ron");
    std::fs::write(
        &space,
        r#"Space(grammar: "wide.ron", task: (name: "in_context_recall"), width: 4096, limits: (max_depth: 4))"#,
    )
    .unwrap();
    let o = archgram(&[
        "eval",
        "--space",
        space.to_str().unwrap(),
        "--arch",
        "seq(mlp(ratio=64))",
        "--steps",
        "1",
    ]);
    assert_fails(&o, 1, "eval", "did not train");
    assert!(stderr(&o).contains("MiB"), "{}", stderr(&o));
    assert!(stdout(&o).contains("seq(mlp("), "{}", stdout(&o));
}

/// A reader that goes away (`archgram sample … | head -1`) ends the command
/// quietly with success: the broken pipe is told by its kind, not its text.
#[test]
fn a_closed_stdout_pipe_exits_quietly() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_archgram"))
        .args(["sample", "--space", "spaces/quickstart.ron", "-n", "100000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run archgram");
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.starts_with("params="), "{first}");
    // The reader is dropped here: the pipe is closed.
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stderr(&o), "");
}

/// A missing architecture file is bad input (exit 2) that names the path
/// and says why it could not be read.
#[test]
fn a_missing_architecture_file_exits_2_with_its_path_and_cause() {
    let o = archgram(&[
        "show",
        "./no-such-arch.txt",
        "--space",
        "spaces/quickstart.ron",
    ]);
    assert_fails(
        &o,
        2,
        "show ./no-such-arch.txt",
        "./no-such-arch.txt: cannot read the architecture file: ",
    );
    assert!(stderr(&o).contains("No such file"), "{}", stderr(&o));
}

/// `--db` (and `ARCHGRAM_DB`) on the commands that read a run: an address
/// that cannot be read, or a server that cannot be reached, exits 2 with
/// what was wrong, never showing the password, and without a wait.
#[test]
fn a_bad_or_unreachable_database_exits_2_without_the_password() {
    let run = |args: &[&str], env: Option<&str>| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_archgram"));
        c.args(args).env_remove("ARCHGRAM_DB");
        if let Some(url) = env {
            c.env("ARCHGRAM_DB", url);
        }
        c.output().expect("run archgram")
    };
    let unreadable = "host=db1 password=s3cret-pw port=notaport";
    // Port 1 on the loopback: nothing listens, so the refusal is at once.
    let unreachable = "postgres://ann:s3cret-pw@127.0.0.1:1/runs";
    for cmd in ["status", "watch", "export", "fidelity"] {
        let o = run(&[cmd, "r1", "--db", unreadable], None);
        assert_fails(&o, 2, cmd, "--db: cannot read the database address");
        let o = run(&[cmd, "r1", "--db", unreachable], None);
        assert_fails(
            &o,
            2,
            cmd,
            "--db: cannot connect to PostgreSQL at postgres://ann@127.0.0.1:1/runs",
        );
        assert!(!stderr(&o).contains("s3cret"), "{}", stderr(&o));
    }
    // The commands that write a database run report the same exit code.
    for args in [
        &["worker", "--db", unreachable][..],
        &["resume", "r1", "--db", unreachable],
        &[
            "search",
            "--space",
            "spaces/quickstart.ron",
            "--db",
            unreachable,
        ],
    ] {
        let o = run(args, None);
        assert_fails(
            &o,
            2,
            args[0],
            "cannot connect to PostgreSQL at postgres://ann@127.0.0.1:1/runs",
        );
        assert!(!stderr(&o).contains("s3cret"), "{}", stderr(&o));
    }
    let o = run(&["status", "r1"], Some(unreachable));
    assert_fails(&o, 2, "status", "ARCHGRAM_DB: cannot connect to PostgreSQL");
    assert!(!stderr(&o).contains("s3cret"), "{}", stderr(&o));
    // The commands that write a database run read ARCHGRAM_DB too
    // (`search` only when told `--db` without a URL).
    for args in [
        &["worker"][..],
        &["resume", "r1"],
        &["search", "--space", "spaces/quickstart.ron", "--db"],
    ] {
        let o = run(args, Some(unreachable));
        assert_fails(
            &o,
            2,
            args[0],
            "cannot connect to PostgreSQL at postgres://ann@127.0.0.1:1/runs",
        );
        assert!(!stderr(&o).contains("s3cret"), "{}", stderr(&o));
    }
    let o = run(&["worker"], None);
    assert_fails(&o, 2, "worker", "worker needs a database");
    let o = run(
        &["search", "--space", "spaces/quickstart.ron", "--db"],
        None,
    );
    assert_fails(&o, 2, "search", "search --db needs a database");
    // Without either, RUN is a folder as before.
    let o = run(&["status", "no-such-run"], None);
    assert_fails(&o, 2, "status", "is not a run folder");
}

/// The CUDA build's environment script knows two CUDA versions; any other
/// is refused with exit 2 before anything is downloaded.
#[test]
fn the_cuda_script_refuses_a_version_it_does_not_know() {
    let o = Command::new("bash")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/cuda.sh"))
        .env("ARCHGRAM_CUDA_VERSION", "11.8")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("ARCHGRAM_CUDA_VERSION must be 12.2 or 13.0, not '11.8'"),
        "{}",
        stderr(&o)
    );
    assert!(o.stdout.is_empty(), "no environment is printed");
}
