//! The repository keeps its own map: every module imports only what
//! ARCHITECTURE.md's dependency table allows, files inside a module form no
//! cycle beyond the exceptions that page lists, and every Markdown file a
//! comment or page names exists (with the heading its `#anchor` names).
//!
//! Reads the sources as text: `crate::` paths (in `use` lines and inline)
//! outside comments, strings and `#[cfg(test)]` code, and `super::` paths
//! between the files of one module.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Files under `dir` ending in `ext`, sorted.
fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let p = entry.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == ext) {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Rust source split into code (comments and string contents blanked) and
/// comment text.
fn split_rust(src: &str) -> (String, String) {
    let b = src.as_bytes();
    let (mut code, mut comments) = (String::new(), String::new());
    let mut i = 0;
    while i < b.len() {
        let rest = &src[i..];
        if rest.starts_with("//") {
            let end = rest.find('\n').map_or(src.len(), |e| i + e);
            comments.push_str(&src[i..end]);
            comments.push('\n');
            code.push('\n');
            i = end + 1;
        } else if rest.starts_with("/*") {
            let end = rest.find("*/").map_or(src.len(), |e| i + e + 2);
            comments.push_str(&src[i..end]);
            comments.push('\n');
            i = end;
        } else if rest.starts_with("r\"") || rest.starts_with("r#\"") {
            let hashes = rest[1..].chars().take_while(|&c| c == '#').count();
            let close = format!("\"{}", "#".repeat(hashes));
            let body = i + 2 + hashes;
            let end = src[body..]
                .find(&close)
                .map_or(src.len(), |e| body + e + close.len());
            code.push_str("\"\"");
            i = end;
        } else if b[i] == b'"' {
            let mut j = i + 1;
            while j < b.len() && b[j] != b'"' {
                j += if b[j] == b'\\' { 2 } else { 1 };
            }
            code.push_str("\"\"");
            i = j + 1;
        } else if b[i] == b'\''
            && rest.len() > 3
            && (rest.as_bytes()[2] == b'\'' || b[i + 1] == b'\\')
        {
            // A char literal ('"', '\'' …), not a lifetime.
            let end = rest[1..].find('\'').map_or(src.len(), |e| i + 2 + e);
            let end = if b[i + 1] == b'\\' && b[i + 2] == b'\'' {
                i + 4
            } else {
                end
            };
            code.push_str("' '");
            i = end;
        } else {
            let c = rest.chars().next().unwrap();
            code.push(c);
            i += c.len_utf8();
        }
    }
    (code, comments)
}

/// Code without `#[cfg(test)]` items: the item after the attribute (a
/// `mod x;` line or a braced block) is cut.
fn without_tests(code: &str) -> String {
    let mut out = String::new();
    let mut rest = code;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let after = &rest[at..];
        let semi = after.find(';');
        let brace = after.find('{');
        let end = match (semi, brace) {
            (Some(s), Some(b)) if s < b => s + 1,
            (_, Some(b)) => {
                let mut depth = 0;
                let mut end = after.len();
                for (k, c) in after[b..].char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                end = b + k + 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                end
            }
            (Some(s), None) => s + 1,
            (None, None) => after.len(),
        };
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

fn ident_at(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// The first path segment of every path that follows `prefix` (`prefix`
/// then `name` or `{a::b, c}`).
fn heads_after(code: &str, prefix: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut from = 0;
    while let Some(i) = code[from..].find(prefix) {
        let at = from + i;
        from = at + prefix.len();
        // Only a path's first segment: not `x_crate::`, not `super::super::`'s second.
        let before = code[..at].chars().next_back();
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        let rest = &code[from..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 1;
            let mut start = 0;
            for (k, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 1 => {
                        out.insert(ident_at(group[start..k].trim()).to_string());
                        start = k + 1;
                        continue;
                    }
                    _ => {}
                }
                if depth == 0 {
                    out.insert(ident_at(group[start..k].trim()).to_string());
                    break;
                }
            }
        } else {
            out.insert(ident_at(rest).to_string());
        }
    }
    out.retain(|s| !s.is_empty() && s != "self");
    out
}

/// Rows of the Markdown table whose header row starts with `header`: the
/// cells of each body row, backticks removed.
fn table(md: &str, header: &str) -> Vec<Vec<String>> {
    let mut lines = md.lines().skip_while(|l| !l.starts_with(header));
    assert!(
        lines.next().is_some(),
        "ARCHITECTURE.md has no table `{header}`"
    );
    lines
        .skip(1)
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            l.trim()
                .trim_matches('|')
                .split('|')
                .map(|c| c.trim().replace('`', ""))
                .collect()
        })
        .collect()
}

fn names(cell: &str) -> BTreeSet<String> {
    cell.split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty() && s != "—")
        .collect()
}

/// A source file's module: its first folder under `src/`, or its stem.
fn module_of(path: &Path) -> String {
    let rel = path.strip_prefix("src").unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

/// Files that `path` declares as `#[cfg(test)]` modules (`mod x;`, or with
/// a `#[path = "…"]`), which hold test code only.
fn test_files(path: &Path, src: &str) -> Vec<PathBuf> {
    let dir = if path.ends_with("mod.rs") || path.ends_with("lib.rs") {
        path.parent().unwrap().to_path_buf()
    } else {
        path.with_extension("")
    };
    let mut out = Vec::new();
    for (at, _) in src.match_indices("#[cfg(test)]") {
        let rest = &src[at..];
        let end = rest.find([';', '{']).unwrap_or(rest.len());
        // Only `mod x;` names another file; `mod x { … }` is inline.
        if !rest[end..].starts_with(';') {
            continue;
        }
        let item = &rest[..end];
        let Some(m) = item.rfind("mod ") else {
            continue;
        };
        if let Some(p) = item.split("#[path = \"").nth(1) {
            let file = p.split('"').next().unwrap();
            out.push(path.parent().unwrap().join(file));
        } else {
            out.push(dir.join(format!("{}.rs", item[m + 4..].trim())));
        }
    }
    out
}

/// The library's files with their production code (tests cut); test-only
/// files and the binary (`main.rs`, which sits above every module) left out.
fn sources() -> Vec<(PathBuf, String)> {
    let all = files(Path::new("src"), "rs");
    let tests: BTreeSet<PathBuf> = all.iter().flat_map(|p| test_files(p, &read(p))).collect();
    all.into_iter()
        .filter(|p| p != Path::new("src/main.rs") && p != Path::new("src/lib.rs"))
        .filter(|p| !tests.contains(p))
        .map(|p| {
            let code = without_tests(&split_rust(&read(&p)).0);
            (p, code)
        })
        .collect()
}

#[test]
fn modules_import_only_what_the_map_allows() {
    let md = read(Path::new("ARCHITECTURE.md"));
    let allowed: BTreeMap<String, BTreeSet<String>> = table(&md, "| module | may import")
        .into_iter()
        .map(|row| (row[0].clone(), names(&row[1])))
        .collect();
    let mut wrong = Vec::new();
    for (path, code) in sources() {
        let module = module_of(&path);
        let Some(ok) = allowed.get(&module) else {
            wrong.push(format!(
                "{}: module `{module}` is not in the map",
                path.display()
            ));
            continue;
        };
        let mut used = heads_after(&code, "crate::");
        // In a file at the crate root, `super::x` is `crate::x`.
        if path.parent() == Some(Path::new("src")) {
            used.extend(heads_after(&code, "super::"));
        }
        for dep in used {
            if dep == module || !allowed.contains_key(&dep) {
                continue; // itself, or not a module (a macro, a re-export)
            }
            if !ok.contains(&dep) {
                wrong.push(format!("{}: `{module}` imports `{dep}`", path.display()));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against ARCHITECTURE.md's map (move the code, or change the map there):\n{}",
        wrong.join("\n")
    );
    // The map itself has no cycle: the allowed arrows order the modules.
    let mut order: Vec<&String> = Vec::new();
    let mut left: Vec<&String> = allowed.keys().collect();
    while !left.is_empty() {
        let ready: Vec<&String> = left
            .iter()
            .copied()
            .filter(|m| allowed[*m].iter().all(|d| order.contains(&d)))
            .collect();
        assert!(!ready.is_empty(), "the map has a cycle among {left:?}");
        order.extend(&ready);
        left.retain(|m| !ready.contains(m));
    }
}

/// Strongly connected components with more than one member.
fn cycles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<BTreeSet<String>> {
    let reach = |from: &String| {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.clone()];
        while let Some(n) = stack.pop() {
            for m in edges.get(&n).into_iter().flatten() {
                if seen.insert(m.clone()) {
                    stack.push(m.clone());
                }
            }
        }
        seen
    };
    let reaches: BTreeMap<&String, BTreeSet<String>> =
        edges.keys().map(|n| (n, reach(n))).collect();
    let mut out: Vec<BTreeSet<String>> = Vec::new();
    for (n, r) in &reaches {
        let scc: BTreeSet<String> = r
            .iter()
            .filter(|m| reaches.get(m).is_some_and(|rm| rm.contains(*n)))
            .cloned()
            .chain([(*n).clone()])
            .collect();
        if scc.len() > 1 && !out.contains(&scc) {
            out.push(scc);
        }
    }
    out
}

#[test]
fn files_of_a_module_form_no_cycle_beyond_the_listed_ones() {
    let md = read(Path::new("ARCHITECTURE.md"));
    let listed: BTreeSet<BTreeSet<String>> = table(&md, "| file cycle")
        .into_iter()
        .map(|row| names(&row[0]))
        .collect();
    // Per module folder: file (or sub-folder) → siblings it names.
    let mut edges: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for (path, code) in sources() {
        let rel = path.strip_prefix("src").unwrap();
        let parts: Vec<String> = rel
            .components()
            .map(|c| {
                c.as_os_str()
                    .to_string_lossy()
                    .trim_end_matches(".rs")
                    .to_string()
            })
            .collect();
        if parts.len() < 2 || parts[1] == "mod" {
            continue; // crate-root files; a module's own mod.rs declares the rest
        }
        let (module, unit) = (&parts[0], &parts[1]);
        let siblings: BTreeSet<String> = fs::read_dir(Path::new("src").join(module))
            .unwrap()
            .map(|e| {
                let n = e.unwrap().file_name().to_string_lossy().to_string();
                n.trim_end_matches(".rs").to_string()
            })
            .filter(|n| n != "mod")
            .collect();
        // From a sub-folder's files, `super::super::x` reaches the siblings.
        let prefix = if parts.len() > 2 && parts.last().unwrap() != "mod" {
            "super::super::"
        } else {
            "super::"
        };
        let mut used = heads_after(&code, prefix);
        used.extend(heads_after(&code, &format!("crate::{module}::")));
        let out = edges
            .entry(module.clone())
            .or_default()
            .entry(format!("{module}/{unit}"))
            .or_default();
        for u in used {
            if siblings.contains(&u) && &u != unit {
                out.insert(format!("{module}/{u}"));
            }
        }
    }
    let found: BTreeSet<BTreeSet<String>> = edges.values().flat_map(cycles).collect();
    let new: Vec<_> = found.difference(&listed).collect();
    assert!(
        new.is_empty(),
        "files that import each other (move what both need into a file of its own): {new:?}"
    );
    let stale: Vec<_> = listed.difference(&found).collect();
    assert!(
        stale.is_empty(),
        "file cycles listed in ARCHITECTURE.md that no longer occur (remove them): {stale:?}"
    );
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces
/// as hyphens.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn anchors(md: &str) -> BTreeSet<String> {
    let mut in_code = false;
    let mut out = BTreeSet::new();
    for line in md.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
        } else if !in_code && line.starts_with('#') {
            out.insert(slug(line.trim_start_matches('#')));
        }
    }
    out
}

/// Every Markdown file name in `text`, with the `#anchor` after it if any.
fn md_refs(text: &str) -> Vec<(String, Option<String>)> {
    let ok = |c: char| c.is_ascii_alphanumeric() || "_-./".contains(c);
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(i) = text[from..].find(".md") {
        let at = from + i;
        from = at + 3;
        let after = text[from..].chars().next();
        if after.is_some_and(|c| c.is_ascii_alphanumeric()) {
            continue; // `.mdx` and the like
        }
        let start = text[..at]
            .char_indices()
            .rev()
            .take_while(|&(_, c)| ok(c))
            .last()
            .map_or(at, |(k, _)| k);
        let name = text[start..at + 3].to_string();
        if name == ".md" {
            continue;
        }
        let anchor = text[from..].strip_prefix('#').map(|r| {
            r.chars()
                .take_while(|&c| c.is_alphanumeric() || c == '-' || c == '_')
                .collect::<String>()
        });
        out.push((name, anchor));
    }
    out
}

#[test]
fn every_markdown_file_named_in_comments_and_pages_exists() {
    // Code comments name files from the repository root; a page names them
    // from its own folder (a link) or from the root.
    let mut texts: Vec<(PathBuf, String)> = Vec::new();
    for dir in ["src", "tests", "benches"] {
        for p in files(Path::new(dir), "rs") {
            let comments = split_rust(&read(&p)).1;
            texts.push((p, comments));
        }
    }
    let mut pages = vec![PathBuf::from("README.md"), PathBuf::from("ARCHITECTURE.md")];
    pages.extend(files(Path::new("docs"), "md"));
    for p in &pages {
        texts.push((p.clone(), read(p)));
    }
    let mut missing = Vec::new();
    let mut seen = 0;
    for (path, text) in &texts {
        for (name, anchor) in md_refs(text) {
            seen += 1;
            let here = path.parent().unwrap_or(Path::new("")).join(&name);
            let target = [here, PathBuf::from(&name)]
                .into_iter()
                .find(|p| p.is_file());
            let Some(target) = target else {
                missing.push(format!(
                    "{}: `{name}` is not in the repository",
                    path.display()
                ));
                continue;
            };
            if let Some(a) = anchor.filter(|a| !a.is_empty()) {
                if !anchors(&read(&target)).contains(&a) {
                    missing.push(format!(
                        "{}: `{name}` has no heading for `#{a}`",
                        path.display()
                    ));
                }
            }
        }
    }
    assert!(missing.is_empty(), "{}", missing.join("\n"));
    assert!(
        seen > 10,
        "found only {seen} references: is the scan broken?"
    );
}

#[test]
fn the_scanners_see_what_they_must() {
    let src = "use crate::a::{b, c};\n// crate::hidden and notes/x.md\nlet s = \"crate::quoted\";\nfn f() { crate::{d::e, f::{g}}::h(); super::super::k(); }\n#[cfg(test)]\nmod tests { use crate::t; }\n";
    let (code, comments) = split_rust(src);
    let code = without_tests(&code);
    let heads = heads_after(&code, "crate::");
    assert_eq!(
        heads,
        ["a", "d", "f"]
            .iter()
            .map(|s| s.to_string())
            .collect::<BTreeSet<_>>()
    );
    assert_eq!(
        heads_after(&code, "super::"),
        ["super"].iter().map(|s| s.to_string()).collect()
    );
    assert_eq!(md_refs(&comments), vec![("notes/x.md".to_string(), None)]);
    assert_eq!(
        md_refs("see [x](docs/routing.md#costs-of-routed-blocks)."),
        vec![(
            "docs/routing.md".to_string(),
            Some("costs-of-routed-blocks".to_string())
        )]
    );
    assert_eq!(
        slug(" 3. Costs of routed blocks (§9)"),
        "3-costs-of-routed-blocks-9"
    );
    assert_eq!(
        cycles(&BTreeMap::from([
            ("a".into(), BTreeSet::from(["b".to_string()])),
            ("b".into(), BTreeSet::from(["a".to_string()])),
            ("c".into(), BTreeSet::from(["a".to_string()])),
        ])),
        vec![BTreeSet::from(["a".to_string(), "b".to_string()])]
    );
}
