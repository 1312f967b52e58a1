//! The shape of lb-userspace's module tree, read from its source (`src/**/*.rs`, the library;
//! `main.rs` is the binary and is left out), so that a change that tangles it fails here.
//!
//! **What counts as a dependency.** Every path a file names, in a `use` declaration or inline,
//! that starts with `crate`, `super`, `self`, a child module's name or a name the module
//! imported, resolved to the module that defines it: down through child modules, and through
//! the `use` declarations of each module on the way (a facade's `pub use child::Thing`, a
//! parent's import reached as `super::Thing`). Comments, doc links and string literals are not
//! read. Inline modules (`mod tests { .. }`) are modules of their own.
//!
//! **The rule for cycles.** At every level of the tree the children of a module are the nodes,
//! each standing for itself and everything below it (its `tests` included); there is an edge
//! A → B when a file under A names something under B. Every such graph must be acyclic. The
//! parent itself is not a node: its file is the facade that declares and re-exports its
//! children, and a child may use the parent's own items (`super::Config`). So `config` and
//! `edge` may not depend on each other (level: the crate), nor `dataplane::gateway` and
//! `dataplane::node` (level: `dataplane`), nor `config::edge` and `config::vip`.
//!
//! **What a module may import.** [`MAY_IMPORT`] lists, for some top-level modules, every other
//! top-level module they may name (`lib` is the crate root's own items, such as the embedded
//! eBPF object). `config` is a leaf: it knows no listener, map or task. A module declared
//! `#[cfg(test)]` (shared test helpers) ships in no build, so naming it is no import here (it
//! still counts for cycles).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

/// Top-level modules and everything they may import besides themselves.
const MAY_IMPORT: &[(&str, &[&str])] = &[
    // What the configuration reads into; everything else reads it.
    ("config", &[]),
    // The node's shutdown phases and the overrides of its timings.
    ("shutdown", &["config"]),
    // The listeners: their settings come from config, their phase from shutdown, and the only
    // thing they take from the dataplane is the backend table the daemon hands to
    // `edge::pool::Pool::update` (plain addresses), so they import nothing of it.
    ("edge", &["config", "shutdown", "error_chain"]),
    // The kernel side: the programs it embeds (`lib`), the config it writes, the phase it
    // stores.
    ("dataplane", &["config", "shutdown", "lib", "error_chain"]),
];

type Mod = Vec<String>;

/// One path a module names, where it names it.
#[derive(Debug, Clone)]
struct Ref {
    from: Mod,
    path: Vec<String>,
    file: String,
    line: usize,
}

/// Tokens of stripped source: identifiers and single punctuation characters (`::` is one).
#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Punct(&'static str),
    Other(char),
}

/// The source with comments, strings and character literals blanked (lines kept).
fn strip(src: &str) -> String {
    let b: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let blank = |out: &mut String, c: char| out.push(if c == '\n' { '\n' } else { ' ' });
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < b.len() && b[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == '/' && b.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if b[i] == '*' && b.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    blank(&mut out, b[i]);
                    i += 1;
                }
            }
        } else if c == 'r'
            && (next == Some('"') || next == Some('#'))
            && (i == 0 || !(b[i - 1].is_alphanumeric() || b[i - 1] == '_'))
        {
            // A raw string: r"..", r#".."#, br#".."#.
            let mut j = i + 1;
            let mut hashes = 0;
            while b.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            j += 1;
            loop {
                if j >= b.len() {
                    break;
                }
                if b[j] == '"' && (0..hashes).all(|k| b.get(j + 1 + k) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                blank(&mut out, b[j]);
                j += 1;
            }
            out.push(' ');
            i = j;
        } else if c == '"' {
            i += 1;
            while i < b.len() && b[i] != '"' {
                if b[i] == '\\' {
                    i += 1;
                }
                if i < b.len() {
                    blank(&mut out, b[i]);
                }
                i += 1;
            }
            out.push(' ');
            i += 1;
        } else if c == '\'' {
            // A character literal ('x', '\n', '\u{1F600}') or a lifetime ('a).
            if next == Some('\\') {
                let mut j = i + 2;
                while j < b.len() && b[j] != '\'' {
                    j += 1;
                }
                out.push(' ');
                i = j + 1;
            } else if b.get(i + 2) == Some(&'\'') {
                out.push(' ');
                i += 3;
            } else {
                out.push(c);
                i += 1;
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

fn tokens(src: &str) -> Vec<(Tok, usize)> {
    let b: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut line = 1;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c.is_whitespace() {
            i += 1;
        } else if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < b.len() && (b[i].is_alphanumeric() || b[i] == '_') {
                i += 1;
            }
            let word: String = b[start..i].iter().collect();
            let word = word.strip_prefix("r#").map_or(word.clone(), str::to_owned);
            out.push((Tok::Ident(word), line));
        } else if c == ':' && b.get(i + 1) == Some(&':') {
            out.push((Tok::Punct("::"), line));
            i += 2;
        } else {
            let p = match c {
                '{' => Tok::Punct("{"),
                '}' => Tok::Punct("}"),
                ';' => Tok::Punct(";"),
                ',' => Tok::Punct(","),
                '*' => Tok::Punct("*"),
                _ => Tok::Other(c),
            };
            out.push((p, line));
            i += 1;
        }
    }
    out
}

/// One `use` tree, expanded: (path, the name it binds; `None` for a glob).
fn use_tree(
    toks: &[(Tok, usize)],
    i: &mut usize,
    prefix: &[String],
) -> Vec<(Vec<String>, Option<String>)> {
    let mut path = prefix.to_vec();
    // `{self, ..}`: the prefix itself.
    let mut took_self = false;
    let mut out = Vec::new();
    loop {
        match toks.get(*i).map(|t| &t.0) {
            Some(Tok::Ident(w)) if w == "as" => {
                *i += 1;
                if let Some((Tok::Ident(alias), _)) = toks.get(*i) {
                    *i += 1;
                    out.push((path.clone(), Some(alias.clone())));
                }
                return out;
            }
            Some(Tok::Ident(w)) => {
                if w == "self" && !path.is_empty() {
                    took_self = true;
                } else {
                    path.push(w.clone());
                }
                *i += 1;
            }
            Some(Tok::Punct("::")) => *i += 1,
            Some(Tok::Punct("*")) => {
                *i += 1;
                out.push((path.clone(), None));
                return out;
            }
            Some(Tok::Punct("{")) => {
                *i += 1;
                loop {
                    match toks.get(*i).map(|t| &t.0) {
                        Some(Tok::Punct("}")) | None => {
                            *i += 1;
                            return out;
                        }
                        Some(Tok::Punct(",")) => *i += 1,
                        _ => out.extend(use_tree(toks, i, &path)),
                    }
                }
            }
            _ => {
                let name = path.last().cloned();
                if path.len() > prefix.len() || took_self {
                    out.push((path, name));
                }
                return out;
            }
        }
    }
}

/// The source tree: its modules, what each imports, every path named.
#[derive(Default)]
struct Tree {
    modules: BTreeSet<Mod>,
    /// Modules declared `#[cfg(test)]`: they ship in no build.
    test_only: BTreeSet<Mod>,
    /// Per module: name → the absolute path it stands for.
    imports: BTreeMap<Mod, BTreeMap<String, Vec<String>>>,
    refs: Vec<Ref>,
}

/// A raw path as written, in `module`; `use_decl`: from a `use` (then it binds a name).
struct Raw {
    module: Mod,
    path: Vec<String>,
    binds: Option<String>,
    use_decl: bool,
    line: usize,
}

impl Tree {
    /// `files`: path relative to `src/` (`config/edge.rs`) → source.
    fn parse(files: &BTreeMap<String, String>) -> Tree {
        let mut tree = Tree::default();
        let mut raws: Vec<(String, Raw)> = Vec::new();
        for (file, src) in files {
            let base = file_module(file);
            tree.modules.insert(base.clone());
            for raw in raw_paths(&base, src, &mut tree.modules, &mut tree.test_only) {
                raws.push((file.clone(), raw));
            }
        }
        // Imports first (they resolve names in the paths), then every path.
        for (_, raw) in raws.iter().filter(|(_, r)| r.use_decl) {
            if let (Some(name), Some(abs)) = (&raw.binds, tree.absolute(&raw.module, &raw.path)) {
                tree.imports
                    .entry(raw.module.clone())
                    .or_default()
                    .insert(name.clone(), abs);
            }
        }
        for (file, raw) in raws {
            if let Some(path) = tree.absolute(&raw.module, &raw.path) {
                tree.refs.push(Ref {
                    from: raw.module,
                    path,
                    file: format!("src/{file}"),
                    line: raw.line,
                });
            }
        }
        tree
    }

    /// `path` as written in `module`, from the crate root; `None` for another crate's.
    fn absolute(&self, module: &Mod, path: &[String]) -> Option<Vec<String>> {
        let (first, rest) = path.split_first()?;
        let mut base: Vec<String> = match first.as_str() {
            "crate" => Vec::new(),
            "self" => module.clone(),
            "super" => module[..module.len().checked_sub(1)?].to_vec(),
            name => {
                let mut child = module.clone();
                child.push(name.to_owned());
                if self.modules.contains(&child) {
                    child
                } else {
                    let imported = self.imports.get(module).and_then(|m| m.get(name))?;
                    let mut out = imported.clone();
                    out.extend(rest.iter().cloned());
                    return Some(out);
                }
            }
        };
        let mut rest = rest;
        while let Some(("super", tail)) = rest.split_first().map(|(h, t)| (h.as_str(), t)) {
            base.pop()?;
            rest = tail;
        }
        base.extend(rest.iter().cloned());
        Some(base)
    }

    /// The module that defines what `path` (absolute) names.
    fn resolve(&self, path: &[String], hops: usize) -> Mod {
        let mut at: Mod = Vec::new();
        for (i, seg) in path.iter().enumerate() {
            let mut child = at.clone();
            child.push(seg.clone());
            if self.modules.contains(&child) {
                at = child;
                continue;
            }
            if hops < 8 {
                if let Some(target) = self.imports.get(&at).and_then(|m| m.get(seg)) {
                    if !target.starts_with(&child) {
                        let mut next = target.clone();
                        next.extend(path[i + 1..].iter().cloned());
                        return self.resolve(&next, hops + 1);
                    }
                }
            }
            break;
        }
        at
    }

    /// Every reference with the module it resolves to.
    fn edges(&self) -> impl Iterator<Item = (&Ref, Mod)> + '_ {
        self.refs.iter().map(|r| (r, self.resolve(&r.path, 0)))
    }
}

/// Every path `src` (the file of module `base`) names; its inline modules go into `modules`,
/// and the modules it declares `#[cfg(test)]` into `test_only`.
fn raw_paths(
    base: &Mod,
    src: &str,
    modules: &mut BTreeSet<Mod>,
    test_only: &mut BTreeSet<Mod>,
) -> Vec<Raw> {
    let toks = tokens(&strip(src));
    let mut out = Vec::new();
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    let current = |inline: &[(String, usize)]| {
        let mut m = base.clone();
        m.extend(inline.iter().map(|(n, _)| n.clone()));
        m
    };
    while i < toks.len() {
        match &toks[i].0 {
            Tok::Punct("{") => {
                depth += 1;
                i += 1;
            }
            Tok::Punct("}") => {
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
                depth = depth.saturating_sub(1);
                i += 1;
            }
            Tok::Ident(w) if w == "mod" => {
                if let (Some((Tok::Ident(name), _)), true) = (toks.get(i + 1), cfg_test(&toks, i)) {
                    let mut m = current(&inline);
                    m.push(name.clone());
                    test_only.insert(m);
                }
                if let (Some((Tok::Ident(name), _)), Some((Tok::Punct("{"), _))) =
                    (toks.get(i + 1), toks.get(i + 2))
                {
                    depth += 1;
                    inline.push((name.clone(), depth));
                    modules.insert(current(&inline));
                    i += 3;
                } else {
                    i += 1;
                }
            }
            Tok::Ident(w) if w == "use" && (i == 0 || toks[i - 1].0 != Tok::Punct("::")) => {
                let line = toks[i].1;
                i += 1;
                let module = current(&inline);
                while i < toks.len() && toks[i].0 != Tok::Punct(";") {
                    for (path, binds) in use_tree(&toks, &mut i, &[]) {
                        out.push(Raw {
                            module: module.clone(),
                            path,
                            binds,
                            use_decl: true,
                            line,
                        });
                    }
                    if toks.get(i).is_some_and(|t| t.0 == Tok::Punct(",")) {
                        i += 1;
                    }
                }
                i += 1;
            }
            Tok::Ident(w)
                if toks.get(i + 1).is_some_and(|t| t.0 == Tok::Punct("::"))
                    && (i == 0 || toks[i - 1].0 != Tok::Punct("::")) =>
            {
                let line = toks[i].1;
                let mut path = vec![w.clone()];
                i += 1;
                while let (Some((Tok::Punct("::"), _)), Some((Tok::Ident(next), _))) =
                    (toks.get(i), toks.get(i + 1))
                {
                    path.push(next.clone());
                    i += 2;
                }
                out.push(Raw {
                    module: current(&inline),
                    path,
                    binds: None,
                    use_decl: false,
                    line,
                });
            }
            _ => i += 1,
        }
    }
    out
}

/// Whether the `mod` at `toks[at]` is declared `#[cfg(test)]` (a visibility may come between).
fn cfg_test(toks: &[(Tok, usize)], at: usize) -> bool {
    let mut i = at;
    while i > 0
        && matches!(&toks[i - 1].0, Tok::Ident(w) if ["pub", "crate", "super"].contains(&w.as_str()))
            | matches!(toks[i - 1].0, Tok::Other('(' | ')'))
    {
        i -= 1;
    }
    let attr = [
        Tok::Other('#'),
        Tok::Other('['),
        Tok::Ident("cfg".to_owned()),
        Tok::Other('('),
        Tok::Ident("test".to_owned()),
        Tok::Other(')'),
        Tok::Other(']'),
    ];
    i >= attr.len() && toks[i - attr.len()..i].iter().map(|t| &t.0).eq(attr.iter())
}

fn file_module(file: &str) -> Mod {
    let stem = file.strip_suffix(".rs").unwrap_or(file);
    if stem == "lib" {
        return Vec::new();
    }
    stem.split('/').map(str::to_owned).collect()
}

fn name(m: &[String]) -> String {
    if m.is_empty() {
        "lib".to_owned()
    } else {
        m.join("::")
    }
}

/// Level (the parent module) → child → child it depends on → where.
type Levels = BTreeMap<Mod, BTreeMap<String, BTreeMap<String, Vec<String>>>>;

/// The sibling graphs of the rule in the module doc.
fn levels(tree: &Tree) -> Levels {
    let mut out = Levels::new();
    for (r, target) in tree.edges() {
        let common = r
            .from
            .iter()
            .zip(&target)
            .take_while(|(a, b)| a == b)
            .count();
        if common == r.from.len() || common == target.len() {
            continue;
        }
        out.entry(r.from[..common].to_vec())
            .or_default()
            .entry(r.from[common].clone())
            .or_default()
            .entry(target[common].clone())
            .or_default()
            .push(format!(
                "{}:{} names crate::{}",
                r.file,
                r.line,
                r.path.join("::")
            ));
    }
    out
}

/// Every cycle found, described with where each of its edges comes from.
fn cycles(tree: &Tree) -> Vec<String> {
    let mut found = Vec::new();
    for (level, graph) in levels(tree) {
        let mut done: BTreeSet<&String> = BTreeSet::new();
        for start in graph.keys() {
            let mut stack: Vec<&String> = Vec::new();
            // One cycle per level: once it is broken, the next shows.
            if let Some(cycle) = dfs(&graph, start, &mut stack, &mut done) {
                let mut text = format!("cycle among the children of {}:", name(&level));
                for pair in cycle.windows(2) {
                    let why = &graph[pair[0]][pair[1]];
                    let _ = write!(text, "\n  {} -> {} ({})", pair[0], pair[1], why[0]);
                }
                found.push(text);
                break;
            }
        }
    }
    found
}

fn dfs<'a>(
    graph: &'a BTreeMap<String, BTreeMap<String, Vec<String>>>,
    at: &'a String,
    stack: &mut Vec<&'a String>,
    done: &mut BTreeSet<&'a String>,
) -> Option<Vec<&'a String>> {
    if let Some(pos) = stack.iter().position(|m| *m == at) {
        let mut cycle = stack[pos..].to_vec();
        cycle.push(at);
        return Some(cycle);
    }
    if done.contains(at) {
        return None;
    }
    stack.push(at);
    for next in graph.get(at).into_iter().flat_map(BTreeMap::keys) {
        if let Some(c) = dfs(graph, next, stack, done) {
            return Some(c);
        }
    }
    stack.pop();
    done.insert(at);
    None
}

/// Imports of the modules in [`MAY_IMPORT`] that it does not list.
fn forbidden(tree: &Tree) -> Vec<String> {
    let mut out = Vec::new();
    for (r, target) in tree.edges() {
        let Some(top) = r.from.first() else { continue };
        let Some((_, allowed)) = MAY_IMPORT.iter().find(|(m, _)| m == top) else {
            continue;
        };
        if tree.test_only.iter().any(|m| target.starts_with(m)) {
            continue;
        }
        let to = target.first().map_or("lib", String::as_str);
        if to != top && !allowed.contains(&to) {
            out.push(format!(
                "{}:{}: {top} may not import {to} (crate::{})",
                r.file,
                r.line,
                r.path.join("::")
            ));
        }
    }
    out
}

fn read_src(dir: &Path, rel: &str, out: &mut BTreeMap<String, String>) {
    let entries = std::fs::read_dir(dir.join(rel)).expect("read src");
    for entry in entries {
        let entry = entry.expect("entry");
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = if rel.is_empty() {
            name.clone()
        } else {
            format!("{rel}/{name}")
        };
        if entry.file_type().expect("type").is_dir() {
            read_src(dir, &path, out);
        } else if Path::new(&name).extension().is_some_and(|e| e == "rs") && path != "main.rs" {
            let text = std::fs::read_to_string(entry.path()).expect("read");
            out.insert(path, text);
        }
    }
}

fn source() -> Tree {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = BTreeMap::new();
    read_src(&src, "", &mut files);
    Tree::parse(&files)
}

#[test]
fn no_module_depends_on_itself_through_others() {
    let tree = source();
    let found = cycles(&tree);
    assert!(found.is_empty(), "{}", found.join("\n"));
}

#[test]
fn modules_import_only_what_they_may() {
    let tree = source();
    let found = forbidden(&tree);
    assert!(found.is_empty(), "{}", found.join("\n"));
}

/// The checks above see what they should: known dependencies of today's tree are found, so
/// an empty result means a clean tree rather than a blind parser.
#[test]
fn the_reader_sees_real_dependencies() {
    let tree = source();
    let levels = levels(&tree);
    let crate_level = &levels[&Vec::new()];
    let depends = |level: &BTreeMap<String, BTreeMap<String, Vec<String>>>, a: &str, b: &str| {
        level.get(a).is_some_and(|deps| deps.contains_key(b))
    };
    for (a, b) in [
        ("edge", "config"),
        ("edge", "shutdown"),
        ("daemon", "dataplane"),
        ("daemon", "edge"),
        ("dataplane", "config"),
        ("shutdown", "config"),
    ] {
        assert!(depends(crate_level, a, b), "{a} -> {b} not seen");
    }
    let dataplane = &levels[&vec!["dataplane".to_owned()]];
    // Through the facade's `pub use error::DataplaneError`.
    assert!(depends(dataplane, "gateway", "error"));
    assert!(depends(dataplane, "writes", "gateway"));
    assert!(depends(dataplane, "gateway", "node"));
}

fn synthetic(files: &[(&str, &str)]) -> Tree {
    let files = files
        .iter()
        .map(|(p, s)| ((*p).to_owned(), (*s).to_owned()))
        .collect();
    Tree::parse(&files)
}

/// What the two checks report for the shapes this crate had before: config importing edge's
/// types, and two dataplane files importing each other through the facade.
#[test]
fn the_checks_catch_the_old_tangles() {
    let tree = synthetic(&[
        (
            "lib.rs",
            "pub mod config;\npub mod edge;\npub mod dataplane;\n#[cfg(test)]\nmod test_support;\n",
        ),
        ("test_support.rs", "pub struct Scratch;\n"),
        (
            "config.rs",
            "//! uses crate::dataplane in a comment only\nmod edge;\npub struct Edge { \
             pub formats: Vec<crate::edge::client_cert::Format> }\n",
        ),
        (
            "config/edge.rs",
            "use super::Edge;\nconst S: &str = \"crate::dataplane::X\";\n#[cfg(test)]\nmod tests \
             {\n    use crate::test_support::Scratch;\n}\n",
        ),
        ("edge.rs", "pub mod client_cert;\n"),
        (
            "edge/client_cert.rs",
            "use crate::config::Edge;\npub enum Format { A }\n",
        ),
        (
            "dataplane.rs",
            "mod gateway;\nmod node;\npub use gateway::Dataplane;\npub use node::NodeState;\n",
        ),
        (
            "dataplane/gateway.rs",
            "use super::NodeState;\npub struct Dataplane;\n#[cfg(test)]\nmod tests {\n    \
             use super::*;\n}\n",
        ),
        (
            "dataplane/node.rs",
            "pub enum NodeState { A }\nimpl super::Dataplane { fn f(&self) {} }\n",
        ),
    ]);
    let found = cycles(&tree);
    assert_eq!(found.len(), 2, "{found:#?}");
    assert!(
        found[0].starts_with("cycle among the children of lib:"),
        "{}",
        found[0]
    );
    assert!(
        found[0]
            .contains("config -> edge (src/config.rs:3 names crate::edge::client_cert::Format)"),
        "{}",
        found[0]
    );
    assert!(
        found[1].starts_with("cycle among the children of dataplane:"),
        "{}",
        found[1]
    );
    assert!(found[1].contains("gateway -> node"), "{}", found[1]);
    assert!(found[1].contains("node -> gateway"), "{}", found[1]);
    let forbidden = forbidden(&tree);
    assert_eq!(
        forbidden,
        ["src/config.rs:3: config may not import edge (crate::edge::client_cert::Format)"]
    );
}
