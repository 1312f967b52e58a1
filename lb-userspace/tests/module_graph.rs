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

// A test crate's root looks for its modules beside it, so the path is given.
#[path = "module_graph/source.rs"]
mod source;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

use source::{read_src, Mod, Tree};

/// Top-level modules and everything they may import besides themselves.
const MAY_IMPORT: &[(&str, &[&str])] = &[
    // What the configuration reads into; everything else reads it.
    ("config", &[]),
    // The node's shutdown phases and the overrides of its timings.
    ("shutdown", &["config"]),
    // The listeners: their settings come from config, their phase from shutdown, and the only
    // thing they take from the dataplane is the backend table the daemon hands to
    // `edge::pool::Pool::update` (plain addresses), so they import nothing of it.
    ("edge", &["config", "shutdown"]),
    // The kernel side: the programs it embeds (`lib`), the config it writes, the phase it
    // stores, and the bpf(2) map commands aya lacks from `ffi` (the crate's one module with
    // `unsafe`, a leaf).
    ("dataplane", &["config", "shutdown", "lib", "ffi"]),
    // The BGP speaker: its settings from config, and TCP_MD5SIG from `ffi` (setsockopt that
    // neither nix nor socket2 wraps); it knows nothing of the daemon, which tells it what to
    // announce.
    ("bgp", &["config", "ffi"]),
];

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
