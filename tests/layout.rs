//! The layout's promises, checked on the source tree: no import cycles between modules (each
//! file a node; `crate::a::b` and `super::b` are its edges), src/main.rs small, no file in src/
//! over 700 lines, and the tools (cli, tools) never imported by the core.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// "gpu::model" for src/gpu/model.rs, "gpu" for src/gpu/mod.rs, "lib" for src/lib.rs.
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel.iter().map(|s| s.to_string_lossy().into_owned()).collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts.join("::")
}

/// The modules a file names: `crate::a::b::Item` -> the longest known module prefix.
fn imports(text: &str, me: &str, known: &BTreeSet<String>) -> BTreeSet<String> {
    let parent = me.rsplit_once("::").map_or("", |(p, _)| p).to_string();
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        for (prefix, base) in [("crate::", String::new()), ("super::", parent.clone())] {
            let mut rest = code;
            while let Some(i) = rest.find(prefix) {
                let before_ok = i == 0 || !rest.as_bytes()[i - 1].is_ascii_alphanumeric();
                rest = &rest[i + prefix.len()..];
                if !before_ok {
                    continue;
                }
                let path: Vec<&str> = rest
                    .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                    .next()
                    .unwrap_or("")
                    .split("::")
                    .filter(|s| !s.is_empty())
                    .collect();
                let mut best = None;
                for n in 1..=path.len() {
                    let mut name = path[..n].join("::");
                    if !base.is_empty() {
                        name = format!("{base}::{name}");
                    }
                    if known.contains(&name) {
                        best = Some(name);
                    }
                }
                if let Some(m) = best.filter(|m| m != me && !me.starts_with(&format!("{m}::"))) {
                    out.insert(m);
                }
            }
        }
    }
    out
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = vec![];
    rust_files(&src, &mut files);
    let known: BTreeSet<String> = files.iter().map(|f| module_of(&src, f)).collect();
    files
        .iter()
        .map(|f| {
            let me = module_of(&src, f);
            let deps = imports(&std::fs::read_to_string(f).unwrap(), &me, &known);
            (me, deps)
        })
        .collect()
}

#[test]
fn module_imports_have_no_cycles() {
    let g = graph();
    assert!(g.len() > 10, "the source tree was not found: {:?}", g.keys());
    // Depth-first search; a grey node met again closes a cycle.
    fn visit(
        n: &str,
        g: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match state.get(n) {
            Some(1) => {
                let i = stack.iter().position(|s| s == n).unwrap();
                let mut cycle = stack[i..].to_vec();
                cycle.push(n.to_string());
                return Some(cycle);
            }
            Some(2) => return None,
            _ => {}
        }
        state.insert(n.to_string(), 1);
        stack.push(n.to_string());
        for d in g.get(n).into_iter().flatten() {
            if let Some(c) = visit(d, g, state, stack) {
                return Some(c);
            }
        }
        stack.pop();
        state.insert(n.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for n in g.keys() {
        if n == "lib" || n == "main" {
            continue; // module lists, not imports
        }
        if let Some(c) = visit(n, &g, &mut state, &mut vec![]) {
            panic!("import cycle: {}", c.join(" -> "));
        }
    }
}

#[test]
fn the_core_never_imports_the_tools() {
    for (m, deps) in graph() {
        let tool = |s: &str| {
            ["tools", "cli", "serve"]
                .iter()
                .any(|t| s == *t || s.starts_with(&format!("{t}::")))
        };
        if tool(&m) || m == "lib" || m == "main" {
            continue;
        }
        let bad: Vec<&String> = deps.iter().filter(|d| tool(d)).collect();
        assert!(bad.is_empty(), "core module {m} imports tools {bad:?}");
    }
}

#[test]
fn files_stay_small() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = vec![];
    rust_files(&src, &mut files);
    let lines = |f: &Path| std::fs::read_to_string(f).unwrap().lines().count();
    let main = lines(&src.join("main.rs"));
    assert!(
        main <= 150,
        "src/main.rs has {main} lines (at most 150: parse, dispatch, exit codes)"
    );
    let big: Vec<String> = files
        .iter()
        .filter(|f| lines(f) > 700)
        .map(|f| format!("{} ({} lines)", f.display(), lines(f)))
        .collect();
    assert!(big.is_empty(), "files over 700 lines: {big:?}");
}

#[test]
fn the_cycle_finder_finds_cycles() {
    // The checks above pass on a good tree; this shows the parser sees both kinds of edge.
    let known: BTreeSet<String> = ["a", "b", "gpu", "gpu::x", "gpu::y"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let deps = imports(
        "use crate::b::Thing;\nuse super::y::{Z};\n// crate::a ignored",
        "gpu::x",
        &known,
    );
    assert_eq!(deps, ["b", "gpu::y"].iter().map(|s| s.to_string()).collect());
}
