//! The dependency rule, read from the source: `main/cli/startup` -> `http` -> `service`
//! -> {`oauth`, `store`} -> `domain` -> {`crypto`, `clock`}, with `config` imported by
//! anyone and importing nothing of ours. No module may use a module of a layer above
//! its own, and no files may import each other, directly or in a loop.
//!
//! An import is a `use crate::...` / `use super::...` line or a `crate::a::b` path in
//! the code, resolved to the file that defines it. A `mod x;` declaration is not an
//! import; a `pub use` re-export in a `mod.rs` is (the re-exporting file then depends
//! on the file it re-exports).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layer of each top-level module: a module may use modules of lower layers only
/// (its own module too). Modules sharing a layer may not use each other.
fn layer(module: &str) -> Option<u8> {
    Some(match module {
        "config" => 0,
        "crypto" | "clock" => 1,
        "domain" => 2,
        "oauth" | "store" => 3,
        "service" => 4,
        "http" => 5,
        "main" | "cli" | "startup" | "telemetry" | "lib" => 6,
        _ => return None,
    })
}

/// `src/service/obo.rs` -> `["service", "obo"]`; `src/service/mod.rs` -> `["service"]`.
fn module_path(file: &Path, src: &Path) -> Vec<String> {
    let relative = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = relative
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

/// The code of a file without comments and string literals (doc comments mention
/// paths that are not imports), and without `#[cfg(test)]` modules (tests may reach
/// anywhere).
fn code_of(text: &str) -> String {
    let text = &without_test_modules(text);
    let mut out = String::with_capacity(text.len());
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if text[i..].starts_with("//") {
            while i < bytes.len() && bytes[i] != b'\n' {
                i += 1;
            }
        } else if bytes[i] == b'"' {
            i += 1;
            while i < bytes.len() && bytes[i] != b'"' {
                if bytes[i] == b'\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
        } else if text[i..].starts_with("r\"") || text[i..].starts_with("r#\"") {
            let hashes = text[i + 1..].chars().take_while(|c| *c == '#').count();
            let close = format!("\"{}", "#".repeat(hashes));
            let start = i + 2 + hashes;
            i = text[start..]
                .find(&close)
                .map_or(bytes.len(), |j| start + j + close.len());
            out.push_str("\"\"");
        } else {
            let c = text[i..].chars().next().unwrap();
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// `text` without its `#[cfg(test)] mod tests { ... }` blocks.
fn without_test_modules(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("#[cfg(test)]\nmod tests {") {
        out.push_str(&rest[..start]);
        let body = &rest[start..];
        let open = body.find('{').unwrap();
        let mut depth = 0;
        let mut end = body.len();
        for (i, c) in body[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = open + i + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        rest = &body[end..];
    }
    out.push_str(rest);
    out
}

/// Every path this code names from `crate::` or `super::`, as module segments
/// relative to the crate root. `use a::{b, c::{d}}` groups are expanded.
fn referenced_paths(code: &str, own: &[String], children: &[String]) -> Vec<Vec<String>> {
    let mut paths = Vec::new();
    let mut i = 0;
    while let Some(offset) = code[i..].find(|c: char| c.is_ascii_lowercase()) {
        let at = i + offset;
        let preceded_by_ident = code[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':');
        let rest = &code[at..];
        let child = children
            .iter()
            .find(|c| rest.starts_with(c.as_str()) && rest[c.len()..].starts_with("::"));
        let root = if child.is_some() {
            // `child::x` in a module names its submodule `child` (`self::` too).
            Some((own.to_vec(), 0))
        } else if rest.starts_with("self::") {
            Some((own.to_vec(), "self::".len()))
        } else if rest.starts_with("crate::") {
            Some((Vec::new(), "crate::".len()))
        } else if rest.starts_with("super::") {
            // `super` of `a/b.rs` (module a::b) is `a`, and so is that of `a/b/mod.rs`.
            let mut base = own.to_vec();
            base.pop();
            Some((base, "super::".len()))
        } else {
            None
        };
        match root {
            Some((base, skip)) if !preceded_by_ident => {
                let (tails, consumed) = expand(&rest[skip..]);
                for tail in tails {
                    let mut full = base.clone();
                    full.extend(tail);
                    paths.push(full);
                }
                i = at + skip + consumed.max(1);
            }
            _ => i = at + 1,
        }
    }
    paths
}

/// Reads `a::b::{c, d::e}` (after the root) into `[[a,b,c],[a,b,d,e]]`.
fn expand(text: &str) -> (Vec<Vec<String>>, usize) {
    let mut prefix = Vec::new();
    let mut i = 0;
    let bytes = text.as_bytes();
    loop {
        let start = i;
        while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
            i += 1;
        }
        if i > start {
            prefix.push(text[start..i].to_owned());
        }
        let group = if text[i..].starts_with("::{") {
            Some(3)
        } else if i == 0 && text.starts_with('{') {
            Some(1)
        } else {
            None
        };
        if let Some(open) = group {
            i += open;
            let mut depth = 1;
            let inner_start = i;
            while i < bytes.len() && depth > 0 {
                match bytes[i] {
                    b'{' => depth += 1,
                    b'}' => depth -= 1,
                    _ => {}
                }
                i += 1;
            }
            let inner = &text[inner_start..i - 1];
            let mut out = Vec::new();
            for item in split_top_level(inner) {
                let (tails, _) = expand(item.trim());
                for tail in tails {
                    let mut full = prefix.clone();
                    full.extend(tail);
                    out.push(full);
                }
            }
            return (out, i);
        } else if text[i..].starts_with("::") {
            i += 2;
        } else {
            return (vec![prefix], i);
        }
    }
}

fn split_top_level(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts.into_iter().filter(|p| !p.trim().is_empty()).collect()
}

/// The file that defines the longest module prefix of `path`.
fn resolve(path: &[String], files: &BTreeMap<Vec<String>, PathBuf>) -> Option<PathBuf> {
    (1..=path.len())
        .rev()
        .find_map(|n| files.get(&path[..n]).cloned())
}

struct Crate {
    src: PathBuf,
    /// Module path -> file.
    files: BTreeMap<Vec<String>, PathBuf>,
    /// File -> files it imports.
    imports: BTreeMap<PathBuf, BTreeSet<PathBuf>>,
    /// File -> (imported module path, line of code) for the layer check.
    references: BTreeMap<PathBuf, Vec<Vec<String>>>,
}

fn read_crate() -> Crate {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut all = Vec::new();
    rust_files(&src, &mut all);
    let files: BTreeMap<Vec<String>, PathBuf> = all
        .iter()
        .map(|f| (module_path(f, &src), f.clone()))
        .collect();
    let mut imports = BTreeMap::new();
    let mut references = BTreeMap::new();
    for file in &all {
        let own = module_path(file, &src);
        let children: Vec<String> = files
            .keys()
            .filter(|m| m.len() == own.len() + 1 && m.starts_with(&own))
            .map(|m| m.last().unwrap().clone())
            .collect();
        let code = code_of(&std::fs::read_to_string(file).unwrap());
        let paths = referenced_paths(&code, &own, &children);
        let targets: BTreeSet<PathBuf> = paths
            .iter()
            .filter_map(|p| resolve(p, &files))
            .filter(|target| target != file)
            .collect();
        imports.insert(file.clone(), targets);
        references.insert(file.clone(), paths);
    }
    Crate {
        src,
        files,
        imports,
        references,
    }
}

fn top_module(file: &Path, src: &Path) -> String {
    module_path(file, src)
        .first()
        .cloned()
        .unwrap_or_else(|| "lib".into())
}

#[test]
fn no_module_uses_a_module_of_a_layer_above_it_or_beside_it() {
    let krate = read_crate();
    let mut violations = Vec::new();
    for (file, paths) in &krate.references {
        let from = top_module(file, &krate.src);
        let from_layer = layer(&from).unwrap_or_else(|| panic!("{from} has no layer"));
        for path in paths {
            let Some(to) = path.first() else { continue };
            if *to == from || !krate.files.contains_key(&vec![to.clone()]) {
                continue;
            }
            let to_layer = layer(to).unwrap_or_else(|| panic!("{to} has no layer"));
            let allowed = to_layer < from_layer || (from_layer == 6 && to_layer == 6);
            if !allowed {
                violations.push(format!(
                    "{} uses crate::{} ({from} is layer {from_layer}, {to} is layer {to_layer})",
                    file.strip_prefix(&krate.src).unwrap().display(),
                    path.join("::")
                ));
            }
        }
    }
    violations.sort();
    violations.dedup();
    assert!(
        violations.is_empty(),
        "imports against the dependency rule:\n{}",
        violations.join("\n")
    );
}

#[test]
fn config_imports_nothing_of_ours() {
    let krate = read_crate();
    let config = krate.src.join("config.rs");
    assert_eq!(
        krate.references[&config],
        Vec::<Vec<String>>::new(),
        "config.rs must be a leaf"
    );
}

#[test]
fn http_appears_nowhere_below_it() {
    let krate = read_crate();
    for (file, paths) in &krate.references {
        let module = top_module(file, &krate.src);
        if ["service", "store", "oauth", "domain"].contains(&module.as_str()) {
            assert!(
                !paths.iter().any(|p| p.first().is_some_and(|m| m == "http")),
                "{} imports crate::http",
                file.display()
            );
        }
    }
}

#[test]
fn no_files_import_each_other_directly_or_in_a_loop() {
    let krate = read_crate();
    // Tarjan's strongly connected components: any component of more than one file is a loop.
    struct Search<'a> {
        graph: &'a BTreeMap<PathBuf, BTreeSet<PathBuf>>,
        index: BTreeMap<&'a PathBuf, usize>,
        low: BTreeMap<&'a PathBuf, usize>,
        stack: Vec<&'a PathBuf>,
        on_stack: BTreeSet<&'a PathBuf>,
        loops: Vec<Vec<&'a PathBuf>>,
    }
    impl<'a> Search<'a> {
        fn visit(&mut self, v: &'a PathBuf) {
            let n = self.index.len();
            self.index.insert(v, n);
            self.low.insert(v, n);
            self.stack.push(v);
            self.on_stack.insert(v);
            for w in &self.graph[v] {
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let low = self.low[v].min(self.low[w]);
                    self.low.insert(v, low);
                } else if self.on_stack.contains(w) {
                    let low = self.low[v].min(self.index[w]);
                    self.low.insert(v, low);
                }
            }
            if self.low[v] == self.index[v] {
                let mut component = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    component.push(w);
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    self.loops.push(component);
                }
            }
        }
    }
    let mut search = Search {
        graph: &krate.imports,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        loops: Vec::new(),
    };
    for file in krate.imports.keys() {
        if !search.index.contains_key(file) {
            search.visit(file);
        }
    }
    let described: Vec<String> = search
        .loops
        .iter()
        .map(|component| {
            let mut names: Vec<String> = component
                .iter()
                .map(|f| f.strip_prefix(&krate.src).unwrap().display().to_string())
                .collect();
            names.sort();
            names.join(" <-> ")
        })
        .collect();
    assert!(
        described.is_empty(),
        "files that import each other:\n{}",
        described.join("\n")
    );
}

#[test]
fn the_reader_finds_imports_in_groups_and_paths() {
    let code = code_of(
        "use crate::domain::{Caller, ConnectionName};\n\
         use super::{refresh::with_lease, Broker};\n\
         // crate::http::nothing in a comment\n\
         let s = \"crate::http::nothing in a string\";\n\
         let x = crate::store::StoreError::Stale;\n\
         let y = in_process::OboToken::new();\n",
    );
    let own = vec!["service".to_owned(), "obo".to_owned()];
    let paths: Vec<String> = referenced_paths(&code, &own, &["in_process".to_owned()])
        .into_iter()
        .map(|p| p.join("::"))
        .collect();
    assert_eq!(
        paths,
        [
            "domain::Caller",
            "domain::ConnectionName",
            "service::refresh::with_lease",
            "service::Broker",
            "store::StoreError::Stale",
            "service::obo::in_process::OboToken::new",
        ]
    );
}
