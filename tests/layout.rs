//! The shape of the code, checked: which crate may depend on which, no
//! import circle between the modules of a crate, a thin binary. These are
//! the rules of `docs/connector.md`; a change that breaks one fails here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The workspace's crates: name → (manifest directory, carehub dependencies).
fn workspace() -> BTreeMap<String, (PathBuf, BTreeSet<String>)> {
    let out = std::process::Command::new(env!("CARGO"))
        .args(["metadata", "--no-deps", "--format-version", "1", "--offline"])
        .current_dir(root())
        .output()
        .expect("cargo metadata");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("metadata json");
    let mut crates = BTreeMap::new();
    for p in meta["packages"].as_array().expect("packages") {
        let name = p["name"].as_str().expect("name").to_owned();
        let dir = Path::new(p["manifest_path"].as_str().expect("manifest"))
            .parent()
            .expect("dir")
            .to_path_buf();
        let deps = p["dependencies"]
            .as_array()
            .expect("dependencies")
            .iter()
            // Normal dependencies only: tests and benches may use anything.
            .filter(|d| d["kind"].is_null())
            .filter_map(|d| d["name"].as_str())
            .filter(|d| d.starts_with("carehub"))
            .map(str::to_owned)
            .collect();
        crates.insert(name, (dir, deps));
    }
    crates
}

/// What a crate is, from where it lives. `connectors/core` is the base of
/// every crate (secrets, internal events, health), not a connector.
fn kind(dir: &Path) -> &'static str {
    let rel = dir.strip_prefix(root()).unwrap_or(dir);
    if rel == Path::new("connectors/core") {
        return "base";
    }
    match rel.components().next().and_then(|c| c.as_os_str().to_str()) {
        Some("connectors") => "connector",
        Some("pipelines") => "pipeline",
        Some("schemas") => "schema",
        _ => "other",
    }
}

/// Pipeline crates every pipeline may use: the engine and the pure
/// translation library.
const SHARED_PIPELINE_CRATES: &[&str] = &["carehub-pipeline", "carehub-hl7-fhir"];

#[test]
fn connectors_do_not_depend_on_pipelines_nor_pipelines_on_each_other() {
    let crates = workspace();
    let kinds: BTreeMap<&str, &str> = crates.iter().map(|(n, (d, _))| (n.as_str(), kind(d))).collect();
    let mut broken = Vec::new();
    for (name, (dir, deps)) in &crates {
        for dep in deps {
            let dep_kind = kinds.get(dep.as_str()).copied().unwrap_or("other");
            let allowed = match (kind(dir), dep_kind) {
                ("connector", "pipeline") => false,
                ("pipeline", "pipeline") => SHARED_PIPELINE_CRATES.contains(&dep.as_str()),
                ("schema", "connector" | "pipeline") => false,
                _ => true,
            };
            if !allowed {
                broken.push(format!("{name} → {dep}"));
            }
        }
    }
    assert!(kinds.values().filter(|k| **k == "connector").count() >= 4, "{kinds:?}");
    assert!(kinds.values().filter(|k| **k == "pipeline").count() >= 4, "{kinds:?}");
    assert!(broken.is_empty(), "dependencies against the data flow: {broken:?}");
}

/// A module's path (`["server"]`, `["codec", "er7"]`) from its file.
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).expect("under src");
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    let last = parts.pop().expect("file name");
    let stem = last.trim_end_matches(".rs");
    if !matches!(stem, "mod" | "lib" | "main") {
        parts.push(stem.to_owned());
    }
    parts
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let path = e.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

/// The paths a file names with `crate::` or `super::`, `use` groups
/// expanded one level (`crate::{a, b::c}` names `a` and `b::c`).
fn referenced_paths(text: &str, module: &[String]) -> Vec<Vec<String>> {
    let code: String = text
        .lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let mut out = Vec::new();
    for (anchor, base) in [
        ("crate::", Vec::new()),
        ("super::", module[..module.len().saturating_sub(1)].to_vec()),
    ] {
        let mut rest = code.as_str();
        while let Some(i) = rest.find(anchor) {
            let before = rest[..i].chars().last();
            rest = &rest[i + anchor.len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue;
            }
            if let Some(group) = rest.strip_prefix('{') {
                let end = group.find('}').unwrap_or(group.len());
                for item in group[..end].split(',') {
                    out.push(join(&base, item));
                }
            } else {
                out.push(join(&base, rest));
            }
        }
    }
    out
}

fn join(base: &[String], path: &str) -> Vec<String> {
    let mut full = base.to_vec();
    for seg in path.trim().split("::") {
        let ident: String = seg
            .trim()
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if ident.is_empty() || ident == "self" {
            break;
        }
        full.push(ident);
    }
    full
}

/// Import circles between the modules of the crate in `src`: edges from a
/// module to the modules it names, ancestors and descendants left out (a
/// parent re-exporting its child, a child using its parent's items, is
/// nesting, not a circle).
fn circles(src: &Path) -> Vec<Vec<String>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let modules: BTreeSet<Vec<String>> = files.iter().map(|f| module_of(src, f)).collect();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let from = module_of(src, file);
        let text = std::fs::read_to_string(file).expect("read");
        for path in referenced_paths(&text, &from) {
            // The longest module the path names.
            let Some(to) = (1..=path.len())
                .rev()
                .map(|n| path[..n].to_vec())
                .find(|p| modules.contains(p))
            else {
                continue;
            };
            let nested = to.starts_with(&from) || from.starts_with(&to);
            if !nested {
                edges.entry(from.join("::")).or_default().insert(to.join("::"));
            }
        }
    }
    // Strongly connected components (Tarjan), the ones of more than one module.
    struct State<'a> {
        edges: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<String, usize>,
        low: BTreeMap<String, usize>,
        stack: Vec<String>,
        on_stack: BTreeSet<String>,
        out: Vec<Vec<String>>,
    }
    fn visit(s: &mut State<'_>, v: &str) {
        let i = s.index.len();
        s.index.insert(v.to_owned(), i);
        s.low.insert(v.to_owned(), i);
        s.stack.push(v.to_owned());
        s.on_stack.insert(v.to_owned());
        let next: Vec<String> = s.edges.get(v).map(|e| e.iter().cloned().collect()).unwrap_or_default();
        for w in next {
            if !s.index.contains_key(&w) {
                visit(s, &w);
                let lw = s.low[&w];
                let lv = s.low.get_mut(v).expect("low");
                *lv = (*lv).min(lw);
            } else if s.on_stack.contains(&w) {
                let iw = s.index[&w];
                let lv = s.low.get_mut(v).expect("low");
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(&w);
                let done = w == v;
                component.push(w);
                if done {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.out.push(component);
            }
        }
    }
    let mut state = State {
        edges: &edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    let nodes: Vec<String> = edges.keys().cloned().collect();
    for v in nodes {
        if !state.index.contains_key(&v) {
            visit(&mut state, &v);
        }
    }
    state.out
}

#[test]
fn the_circle_check_finds_a_circle() {
    let dir = std::env::temp_dir().join(format!("carehub-layout-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("b")).expect("dir");
    std::fs::write(dir.join("lib.rs"), "mod a; mod b;").expect("write");
    std::fs::write(dir.join("a.rs"), "use crate::b::c::Thing;").expect("write");
    std::fs::write(dir.join("b/mod.rs"), "pub mod c;").expect("write");
    std::fs::write(dir.join("b/c.rs"), "use crate::{a::Other, b};\nuse super::super::a;").expect("write");
    let found = circles(&dir);
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(found, vec![vec!["a".to_owned(), "b::c".to_owned()]]);
}

#[test]
fn no_crate_has_an_import_circle_between_its_modules() {
    let mut found = Vec::new();
    for (name, (dir, _)) in workspace() {
        for c in circles(&dir.join("src")) {
            found.push(format!("{name}: {}", c.join(" ↔ ")));
        }
    }
    assert!(found.is_empty(), "import circles: {found:#?}");
}

/// Code lines of a file, comments left out.
fn code_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| l.split("//").next().unwrap_or("").to_owned())
        .filter(|l| !l.trim().is_empty())
        .collect()
}

#[test]
fn serve_and_the_commands_name_no_connector() {
    // A new connector is its crate, one line in src/registry.rs and one
    // feature: what starts, which topics exist and who replays a dead
    // letter come from the registry.
    let names = [
        "hl7", "mllp", "fhir", "ehr", "lab", "intake", "dicom", "stripe", "payment", "shipping", "carrier",
    ];
    let mut found = Vec::new();
    for file in ["src/serve.rs", "src/commands.rs"] {
        for line in &code_lines(&root().join(file)) {
            let lower = line.to_ascii_lowercase();
            for name in names {
                if lower.contains(name) {
                    found.push(format!("{file}: {name}: {}", line.trim()));
                }
            }
        }
    }
    assert!(found.is_empty(), "connector names outside the registry: {found:#?}");
}

#[test]
fn the_binary_only_wires() {
    let mut files = Vec::new();
    rust_files(&root().join("src"), &mut files);
    let lines: usize = files
        .iter()
        .map(|f| std::fs::read_to_string(f).expect("read").lines().count())
        .sum();
    assert!(
        lines <= 2000,
        "src/ holds {lines} lines of Rust (at most 2,000: runtime code belongs in its crate)"
    );
}

#[test]
fn no_file_holds_more_than_800_lines() {
    // Past that a file is several things: split it along its seams.
    let mut long = Vec::new();
    for (_, (dir, _)) in workspace() {
        for sub in ["src", "tests", "benches"] {
            let mut files = Vec::new();
            rust_files(&dir.join(sub), &mut files);
            for f in files {
                if dir == root() && f.starts_with(root().join("fuzz")) {
                    continue;
                }
                let n = std::fs::read_to_string(&f).expect("read").lines().count();
                if n > 800 {
                    long.push(format!("{} ({n} lines)", f.display()));
                }
            }
        }
    }
    assert!(long.is_empty(), "files over 800 lines: {long:#?}");
}
