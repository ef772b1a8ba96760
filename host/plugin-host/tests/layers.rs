//! The plugin host's modules form layers: no file imports one that imports
//! it back, directly or through others. Read from the sources: every
//! `crate::a::b`, `super::x`, `self::x` or `child::x` path (a `child` that
//! the file declares with `mod child;`) is an edge to the deepest file that
//! defines that module; test modules and comments are left out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Module = Vec<String>;

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `src/a/b.rs` and `src/a/b/mod.rs` are module `a::b`; `src/lib.rs` is the root.
fn module_of(src: &Path, file: &Path) -> Module {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut m: Module = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if m.last().is_some_and(|l| l == "mod" || l == "lib") {
        m.pop();
    }
    m
}

/// The text a file imports with: without comments and its `mod tests`.
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    };
    text.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every `head::seg::seg...` path in `text`, as (head, segments).
fn paths(text: &str) -> Vec<(String, Vec<String>)> {
    let word = |c: char| c.is_alphanumeric() || c == '_' || c == '$';
    let mut out = Vec::new();
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let preceded = i > 0 && (word(chars[i - 1]) || chars[i - 1] == ':');
        if word(chars[i]) && !preceded {
            let mut segs = Vec::new();
            let mut j = i;
            loop {
                let start = j;
                while j < chars.len() && word(chars[j]) {
                    j += 1;
                }
                segs.push(chars[start..j].iter().collect::<String>());
                let colons = chars.get(j) == Some(&':') && chars.get(j + 1) == Some(&':');
                if colons && chars.get(j + 2).is_some_and(|&c| word(c)) {
                    j += 2;
                    continue;
                }
                // `a::{b, c}` imports from `a` too.
                if colons {
                    segs.push(String::new());
                }
                break;
            }
            if segs.len() > 1 {
                let head = segs.remove(0);
                out.push((head, segs));
            }
            i = j.max(i + 1);
        } else {
            i += 1;
        }
    }
    out
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let modules: BTreeSet<Module> = files.iter().map(|f| module_of(&src, f)).collect();
    let deepest = |path: &[String]| -> Module {
        (0..=path.len())
            .rev()
            .map(|n| path[..n].to_vec())
            .find(|m| modules.contains(m))
            .unwrap_or_default()
    };
    let mut edges: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for file in &files {
        let me = module_of(&src, file);
        let text = code(&std::fs::read_to_string(file).unwrap());
        let children: BTreeSet<String> = text
            .lines()
            .filter_map(|l| l.trim().rsplit_once("mod ").map(|(_, r)| r))
            .filter_map(|r| r.strip_suffix(';'))
            .map(str::to_string)
            .collect();
        for (head, rest) in paths(&text) {
            let mut path: Vec<String> = match head.as_str() {
                "crate" | "$crate" => Vec::new(),
                "super" => me[..me.len().saturating_sub(1)].to_vec(),
                "self" => me.clone(),
                h if children.contains(h) => [me.clone(), vec![h.to_string()]].concat(),
                _ => continue,
            };
            path.extend(rest.into_iter().filter(|s| !s.is_empty()));
            let target = deepest(&path);
            if target != me {
                edges.entry(me.clone()).or_default().insert(target);
            }
        }
    }
    // Depth-first search; a module met again while on the stack closes a cycle.
    fn visit(
        m: &Module,
        edges: &BTreeMap<Module, BTreeSet<Module>>,
        stack: &mut Vec<Module>,
        done: &mut BTreeSet<Module>,
    ) -> Option<Vec<Module>> {
        if let Some(at) = stack.iter().position(|s| s == m) {
            return Some([&stack[at..], std::slice::from_ref(m)].concat());
        }
        if !done.insert(m.clone()) {
            return None;
        }
        stack.push(m.clone());
        for next in edges.get(m).into_iter().flatten() {
            if let Some(cycle) = visit(next, edges, stack, done) {
                return Some(cycle);
            }
        }
        stack.pop();
        None
    }
    let name = |m: &Module| {
        if m.is_empty() {
            "lib".to_string()
        } else {
            m.join("/")
        }
    };
    let mut done = BTreeSet::new();
    for m in &modules {
        if let Some(cycle) = visit(m, &edges, &mut Vec::new(), &mut done) {
            let cycle: Vec<String> = cycle.iter().map(name).collect();
            panic!("import cycle: {}", cycle.join(" -> "));
        }
    }
    let linked = edges.values().map(BTreeSet::len).sum::<usize>();
    assert!(
        modules.len() > 10 && linked > 20,
        "{} modules, {linked} imports read",
        modules.len()
    );
}
