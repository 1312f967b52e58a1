//! Reading lb-userspace's source for `module_graph`: comments and literals blanked, `use`
//! trees expanded, every path resolved to the module that defines it (through child modules
//! and the `use` declarations of each module on the way).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

pub(crate) type Mod = Vec<String>;

/// One path a module names, where it names it.
#[derive(Debug, Clone)]
pub(crate) struct Ref {
    pub(crate) from: Mod,
    pub(crate) path: Vec<String>,
    pub(crate) file: String,
    pub(crate) line: usize,
}

/// Tokens of stripped source: identifiers and single punctuation characters (`::` is one).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    Ident(String),
    Punct(&'static str),
    Other(char),
}

/// The source with comments, strings and character literals blanked (lines kept).
pub(crate) fn strip(src: &str) -> String {
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

pub(crate) fn tokens(src: &str) -> Vec<(Tok, usize)> {
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
pub(crate) fn use_tree(
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
pub(crate) struct Tree {
    pub(crate) modules: BTreeSet<Mod>,
    /// Modules declared `#[cfg(test)]`: they ship in no build.
    pub(crate) test_only: BTreeSet<Mod>,
    /// Per module: name → the absolute path it stands for.
    pub(crate) imports: BTreeMap<Mod, BTreeMap<String, Vec<String>>>,
    pub(crate) refs: Vec<Ref>,
}

/// A raw path as written, in `module`; `use_decl`: from a `use` (then it binds a name).
pub(crate) struct Raw {
    pub(crate) module: Mod,
    pub(crate) path: Vec<String>,
    pub(crate) binds: Option<String>,
    pub(crate) use_decl: bool,
    pub(crate) line: usize,
}

impl Tree {
    /// `files`: path relative to `src/` (`config/edge.rs`) → source.
    pub(crate) fn parse(files: &BTreeMap<String, String>) -> Tree {
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
    pub(crate) fn absolute(&self, module: &Mod, path: &[String]) -> Option<Vec<String>> {
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
    pub(crate) fn resolve(&self, path: &[String], hops: usize) -> Mod {
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
    pub(crate) fn edges(&self) -> impl Iterator<Item = (&Ref, Mod)> + '_ {
        self.refs.iter().map(|r| (r, self.resolve(&r.path, 0)))
    }
}

/// Every path `src` (the file of module `base`) names; its inline modules go into `modules`,
/// and the modules it declares `#[cfg(test)]` into `test_only`.
pub(crate) fn raw_paths(
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
pub(crate) fn cfg_test(toks: &[(Tok, usize)], at: usize) -> bool {
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

pub(crate) fn file_module(file: &str) -> Mod {
    let stem = file.strip_suffix(".rs").unwrap_or(file);
    if stem == "lib" {
        return Vec::new();
    }
    stem.split('/').map(str::to_owned).collect()
}

pub(crate) fn read_src(dir: &Path, rel: &str, out: &mut BTreeMap<String, String>) {
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
