//! The crate's folders form a stack (see `src/lib.rs` and ARCHITECTURE.md, "Modules"): a module
//! may use the folders below its own, never one above it or beside it. This reads every source
//! file's paths into the crate (`crate::x`, `crate::{x, y}`, `super::super::x`; comments are
//! skipped, code in strings and attributes is not) and fails on any that points up or sideways,
//! which also rules out cycles between folders.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Top to bottom. A folder's rank is its index from the bottom.
const LAYERS: &[&str] = &[
    "cli",
    "node",
    "fuse",
    "cluster",
    "rpc",
    "fs",
    "namespace",
    "block",
    "net",
    "admission",
    "identity",
    "util",
];

/// Modules outside the stack that may use anything: test hooks compiled for the fuzzers.
const UNLAYERED: &[&str] = &["fuzzing"];

fn rank(folder: &str) -> Option<usize> {
    LAYERS.iter().rev().position(|l| *l == folder)
}

/// The module path of a source file: `src/a/b.rs` -> [a, b], `src/a/mod.rs` -> [a].
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a file without its comments (line comments, doc comments, block comments).
fn strip_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let bytes = text.as_bytes();
    let mut i = 0;
    let mut in_string = false;
    while i < bytes.len() {
        let rest = &text[i..];
        if in_string {
            if rest.starts_with("\\\"") || rest.starts_with("\\\\") {
                out.push_str(&rest[..2]);
                i += 2;
                continue;
            }
            if bytes[i] == b'"' {
                in_string = false;
            }
        } else if rest.starts_with("//") {
            i += rest.find('\n').unwrap_or(rest.len());
            continue;
        } else if rest.starts_with("/*") {
            i += rest.find("*/").map_or(rest.len(), |e| e + 2);
            continue;
        } else if bytes[i] == b'"' && !text[..i].ends_with('\'') {
            in_string = true;
        }
        let c = rest.chars().next().unwrap();
        out.push(c);
        i += c.len_utf8();
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The first identifier at the start of `s`.
fn ident(s: &str) -> &str {
    &s[..s.find(|c: char| !is_ident(c)).unwrap_or(s.len())]
}

/// The top-level folders of the crate that `code` (of the module at `module`) names.
fn folders_used(code: &str, module: &[String]) -> BTreeSet<String> {
    let mut used = BTreeSet::new();
    let starts_path = |i: usize| i == 0 || !is_ident(code[..i].chars().next_back().unwrap());
    for (i, _) in code.match_indices("crate::") {
        if !starts_path(i) || code[..i].ends_with("$") {
            continue;
        }
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // `crate::{a::b, c}`: the first identifier of each top-level item.
            let mut depth = 0;
            let mut item_start = true;
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if item_start && is_ident(c) => {
                        used.insert(ident(&group[j..]).to_string());
                        item_start = false;
                    }
                    _ => {}
                }
            }
        } else {
            used.insert(ident(rest).to_string());
        }
    }
    for (i, _) in code.match_indices("super::") {
        if !starts_path(i) {
            continue;
        }
        let mut rest = &code[i..];
        let mut up = 0;
        while let Some(r) = rest.strip_prefix("super::") {
            up += 1;
            rest = r;
        }
        // `super` from `a::b` is `a`; past the crate's top, the named module is the folder.
        if up >= module.len() {
            used.insert(ident(rest).to_string());
        }
    }
    used.retain(|u| !u.is_empty() && u != "self");
    used
}

/// Every path into the crate that breaks the stack, as "file: uses `x` (layer) from `y` (layer)".
fn violations(src: &Path) -> Vec<String> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    files.sort();
    let mut found = Vec::new();
    for file in &files {
        let module = module_path(src, file);
        let Some(own) = module.first() else { continue };
        // The binaries and the crate root sit above every layer.
        if own == "bin" || own == "lib" || UNLAYERED.contains(&own.as_str()) {
            continue;
        }
        let Some(own_rank) = rank(own) else {
            found.push(format!(
                "{}: folder `{own}` is not in the layer list (tests/layers.rs, src/lib.rs)",
                file.display()
            ));
            continue;
        };
        let code = strip_comments(&std::fs::read_to_string(file).unwrap());
        for used in folders_used(&code, &module) {
            if used == *own {
                continue;
            }
            match rank(&used) {
                Some(r) if r < own_rank => {}
                Some(_) => found.push(format!(
                    "{}: `{own}` uses `{used}`, which is not below it",
                    file.display()
                )),
                None if UNLAYERED.contains(&used.as_str()) => found.push(format!(
                    "{}: `{own}` uses `{used}`, a test hook outside the stack",
                    file.display()
                )),
                None => found.push(format!(
                    "{}: `{own}` uses `{used}`, which is not in the layer list",
                    file.display()
                )),
            }
        }
    }
    found
}

#[test]
fn layers_every_folder_uses_only_the_folders_below_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let found = violations(&src);
    assert!(
        found.is_empty(),
        "imports against the layer order (top to bottom: {}):\n{}",
        LAYERS.join(" > "),
        found.join("\n")
    );
}

#[test]
fn layers_every_top_level_module_is_placed() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    for line in strip_comments(&lib).lines() {
        if let Some(rest) = line.trim().strip_prefix("pub mod ") {
            let name = ident(rest);
            assert!(
                rank(name).is_some() || UNLAYERED.contains(&name),
                "src/lib.rs declares `{name}`, which tests/layers.rs does not place in a layer"
            );
        }
    }
}

/// The checker itself: an upward use, a sideways group import and a climb through `super` are
/// caught; comments and a folder's own paths are not.
#[test]
fn layers_checker_catches_upward_grouped_and_super_paths() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    for (path, text) in [
        (
            "block/mod.rs",
            "// crate::node is only named here\nuse crate::block::x;\n",
        ),
        ("block/store.rs", "use crate::{util::a, cluster::b};\n"),
        ("fs/file.rs", "fn f() { super::super::rpc::call(); }\n"),
        ("net/mod.rs", "use crate::util::a;\n/* crate::fs */\n"),
    ] {
        let p = src.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    let found = violations(src);
    assert_eq!(found.len(), 2, "{found:#?}");
    assert!(found[0].contains("block/store.rs") && found[0].contains("`cluster`"));
    assert!(found[1].contains("fs/file.rs") && found[1].contains("`rpc`"));
}
