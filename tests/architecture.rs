//! Rules about the shape of the code that a reviewer should not have to
//! check by hand:
//!
//! * no file of `src/` uses a file that uses it back, directly or round a
//!   loop of files (a `crate::`, `super::` or child-module path names the
//!   file it resolves to; a parent declaring a child module is not a use);
//! * the core stays sans-IO: no sockets, no tokio, no clock reads, no
//!   unseeded randomness (its module doc promises so).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable source tree") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a file under `src/` (`src/server/outbox/mod.rs` is
/// `["server", "outbox"]`; `src/lib.rs` is `[]`).
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).expect("under src");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().expect("a file name");
    let stem = last.trim_end_matches(".rs");
    if stem != "mod" && stem != "lib" && stem != "main" {
        parts.push(stem.to_owned());
    }
    parts
}

/// The code of a file without comments and string literals, so that a path
/// in a doc comment or a message is not taken for a use.
fn code_only(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            '"' => {
                let mut escaped = false;
                for c in chars.by_ref() {
                    if escaped {
                        escaped = false;
                    } else if c == '\\' {
                        escaped = true;
                    } else if c == '"' {
                        break;
                    }
                }
                out.push_str("\"\"");
            }
            _ => out.push(c),
        }
    }
    out
}

/// The module paths a file names with `crate::…`, `super::…` or
/// `child::…` for a child module it declares (brace groups expanded one
/// level), resolved from `module`.
fn paths_used(code: &str, module: &[String]) -> Vec<Vec<String>> {
    // Child modules declared here: `child::…` names them.
    let children: Vec<String> = code
        .lines()
        .filter_map(|l| {
            let l = l
                .trim()
                .trim_start_matches("pub ")
                .trim_start_matches("pub(crate) ");
            l.strip_prefix("mod ")?.strip_suffix(';').map(str::to_owned)
        })
        .collect();
    let mut found = Vec::new();
    let bytes = code.as_bytes();
    let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut i = 0;
    while i < bytes.len() {
        let starts = |kw: &str| {
            code[i..].starts_with(kw) && (i == 0 || !(ident(bytes[i - 1]) || bytes[i - 1] == b':'))
        };
        let child = children.iter().find(|c| starts(&format!("{c}::")));
        if !(starts("crate::") || starts("super::") || child.is_some()) {
            i += 1;
            continue;
        }
        // Read a path: segments and `::`, then maybe one brace group.
        let start = i;
        while i < bytes.len() && (ident(bytes[i]) || bytes[i] == b':') {
            i += 1;
        }
        let prefix = code[start..i].trim_end_matches(':').to_owned();
        let mut tails = vec![String::new()];
        if code[start..i].ends_with("::") && bytes.get(i) == Some(&b'{') {
            let end = code[i..].find('}').map_or(code.len(), |e| i + e);
            tails = code[i + 1..end]
                .split(',')
                .map(|s| s.split_whitespace().next().unwrap_or("").to_owned())
                .filter(|s| !s.is_empty() && s != "self")
                .map(|s| format!("::{s}"))
                .collect();
            tails.push(String::new());
            i = end;
        }
        for tail in tails {
            let full = format!("{prefix}{tail}");
            let mut segments = full.split("::").filter(|s| !s.is_empty());
            let mut resolved: Vec<String> = match segments.next() {
                Some("crate") => Vec::new(),
                Some(c) if children.iter().any(|x| x == c) => {
                    let mut m = module.to_vec();
                    m.push(c.to_owned());
                    m
                }
                // `super` of `a::b` (in `a/b.rs` or `a/b/mod.rs`) is `a`.
                _ => module[..module.len().saturating_sub(1)].to_vec(),
            };
            for s in segments {
                if s == "super" {
                    resolved.pop();
                } else {
                    resolved.push(s.to_owned());
                }
            }
            found.push(resolved);
        }
    }
    found
}

type Module = Vec<String>;

/// One loop through each set of files that reach each other by uses (a
/// depth-first search from every file, in order; a loop is reported from
/// its smallest file, once).
fn cycles(uses: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<Vec<Module>> {
    fn walk(
        at: &Module,
        uses: &BTreeMap<Module, BTreeSet<Module>>,
        path: &mut Vec<Module>,
        done: &mut BTreeSet<Module>,
        found: &mut Vec<Vec<Module>>,
    ) {
        if let Some(i) = path.iter().position(|m| m == at) {
            let mut cycle = path[i..].to_vec();
            let start = (0..cycle.len()).min_by_key(|&k| &cycle[k]).unwrap_or(0);
            cycle.rotate_left(start);
            cycle.push(cycle[0].clone());
            if !found.contains(&cycle) {
                found.push(cycle);
            }
            return;
        }
        if done.contains(at) {
            return;
        }
        path.push(at.clone());
        for next in uses.get(at).into_iter().flatten() {
            walk(next, uses, path, done, found);
        }
        path.pop();
        done.insert(at.clone());
    }
    let mut found = Vec::new();
    let mut done = BTreeSet::new();
    for start in uses.keys() {
        walk(start, uses, &mut Vec::new(), &mut done, &mut found);
    }
    found
}

#[test]
fn no_file_uses_a_file_that_uses_it_back() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let modules: BTreeMap<Vec<String>, PathBuf> = files
        .iter()
        .map(|f| (module_of(&src, f), f.clone()))
        .collect();
    // The file a path resolves to: its longest prefix that is a module file.
    let file_of = |path: &[String]| -> Option<Vec<String>> {
        (0..=path.len())
            .rev()
            .map(|n| path[..n].to_vec())
            .find(|p| modules.contains_key(p))
    };
    let mut uses: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for (module, file) in &modules {
        let text = std::fs::read_to_string(file).expect("readable");
        // A file's own test module (at its end) is not part of its shape,
        // and its `super` is the file itself.
        let text = match text.find("#[cfg(test)]\nmod ") {
            Some(at) => &text[..at],
            None => &text,
        };
        for path in paths_used(&code_only(text), module) {
            if let Some(target) = file_of(&path)
                && &target != module
            {
                uses.entry(module.clone()).or_default().insert(target);
            }
        }
    }
    let cycles = cycles(&uses);
    assert!(
        cycles.is_empty(),
        "files that use each other, directly or round a loop:\n{}",
        cycles
            .iter()
            .map(|c| c
                .iter()
                .map(|m| m.join("::"))
                .collect::<Vec<_>>()
                .join(" -> "))
            .collect::<Vec<_>>()
            .join("\n")
    );
    // The check sees uses at all (a parser that found nothing would pass).
    assert!(
        uses.get(&vec!["server".to_owned(), "driver".to_owned()])
            .is_some_and(|t| t.contains(&vec!["core".to_owned()])),
        "the driver's use of the core was not seen: {uses:#?}"
    );
}

#[test]
fn the_core_does_no_io_and_reads_no_clock() {
    let core = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/core");
    let mut files = Vec::new();
    rust_files(&core, &mut files);
    assert!(!files.is_empty());
    let forbidden = [
        "tokio",
        "std::net",
        "std::fs",
        "std::time::SystemTime",
        "std::time::Instant",
        "Instant::now",
        "SystemTime::now",
        "thread_rng",
        "rand::",
        "std::thread",
    ];
    let mut found = Vec::new();
    for file in &files {
        let code = code_only(&std::fs::read_to_string(file).expect("readable"));
        for word in forbidden {
            if code.contains(word) {
                found.push(format!("{}: {word}", file.display()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "the core must stay sans-IO:\n{}",
        found.join("\n")
    );
}
