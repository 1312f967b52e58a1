//! The file against the schema (unknown keys, wrong types, missing keys), every mistake at once:
//! serde stops at the first, so each one found is taken out of a copy of the document and the
//! copy deserialized again, until it passes or nothing more can be taken out. Each error names
//! its field path (`vip[0].backend[1].weight`) and its place in the original file, says what
//! was expected in words, and suggests the key a misspelled one was probably meant to be.

use std::{collections::HashMap, fmt::Write as _, ops::Range};

use toml_edit::{DocumentMut, ImDocument, Item, Value};

use super::{
    errors::{ConfigError, ConfigErrors, Location, Position},
    raw,
};

/// More mistakes than this in one file are not worth listing one by one.
const MAX_ERRORS: usize = 50;

/// One step of a field path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Step {
    Key(String),
    Index(usize),
}

/// What the schema check leaves for validation.
pub struct Checked {
    /// The config as deserialized once every offending key was taken out.
    pub raw: raw::Config,
    /// The text `raw` was read from: the original with the offending keys blanked out, so
    /// every byte offset (and so every line) is still the original's.
    pub text: String,
    /// The schema errors, in file order (empty for a good file).
    pub errors: Vec<ConfigError>,
}

/// Deserializes `text` into the raw config. Schema errors come back with what could still be
/// read, so validation can report its own errors in the same run; `Err` when nothing more can
/// be read (not TOML, or a mistake that needed more than blanking out a key).
pub fn deserialize(text: &str) -> Result<Checked, ConfigErrors> {
    let Ok(original) = ImDocument::parse(text.to_owned()) else {
        // Not TOML at all: nothing further can be read. toml's own message says where.
        let e = toml::from_str::<raw::Config>(text)
            .err()
            .map(|e| ConfigError::syntax(text, &e));
        return Err(ConfigErrors::from(e.unwrap_or_else(|| {
            ConfigError::Syntax {
                at: Location::default(),
                message: "not valid TOML".into(),
            }
        })));
    };
    // Taken out by blanking while possible (offsets stay), else from a reformatted document.
    let mut current = text.to_owned();
    let mut doc: Option<DocumentMut> = None;
    let mut removed: HashMap<Vec<Step>, Vec<usize>> = HashMap::new();
    // Keys taken out for being wrong (original paths): a missing-key error about one of them
    // is their consequence, not another mistake.
    let mut taken: Vec<Vec<Step>> = Vec::new();
    let mut errors: Vec<ConfigError> = Vec::new();
    loop {
        if let Some(d) = &doc {
            current = d.to_string();
        }
        let error = match serde_path_to_error::deserialize(toml::Deserializer::new(&current)) {
            Ok(raw) if doc.is_none() => {
                errors.sort_by_key(|e| (e.position().is_none(), e.position()));
                return Ok(Checked {
                    raw,
                    text: current,
                    errors,
                });
            }
            Ok(_) => break,
            Err(e) => e,
        };
        let path = steps(error.path());
        let message = error.into_inner().message().trim().to_owned();
        let in_original = translate(&path, &removed);
        let missing = message.starts_with("missing field");
        if missing {
            let mut lacking = in_original.clone();
            lacking.extend(quoted(&message).map(|k| Step::Key(k.to_owned())));
            if taken.contains(&lacking) {
                // Without it the table cannot be read: it goes, and nothing more is said.
                let d = doc.get_or_insert_with(|| parse_mut(&current));
                if !take_out(d, &path, &mut removed) {
                    break;
                }
                continue;
            }
        }
        // A missing key is reported at the table that lacks it.
        let unknown_key = message.starts_with("unknown field");
        let span = locate(original.as_item(), &in_original, unknown_key);
        errors.push(ConfigError::Schema {
            at: Location {
                file: None,
                position: span.map(|s| Position::of(text, s.start)),
            },
            field: field_name(&in_original, missing.then(|| quoted(&message)).flatten()),
            message: explain(&message),
        });
        if !missing {
            taken.push(in_original.clone());
        }
        if errors.len() >= MAX_ERRORS {
            break;
        }
        let blanked = doc.is_none()
            && !missing
            && key_value_span(original.as_item(), &in_original)
                .is_some_and(|span| blank(&mut current, span));
        if !blanked {
            let d = doc.get_or_insert_with(|| parse_mut(&current));
            if !take_out(d, &path, &mut removed) {
                break;
            }
        }
    }
    errors.sort_by_key(|e| (e.position().is_none(), e.position()));
    Err(ConfigErrors(errors))
}

fn parse_mut(text: &str) -> DocumentMut {
    text.parse().unwrap_or_default()
}

/// From the key to the end of the value of the key-value pair at `path`.
fn key_value_span(root: &Item, path: &[Step]) -> Option<Range<usize>> {
    let (Step::Key(k), parent) = path.split_last()? else {
        return None;
    };
    let node = parent.iter().try_fold(Node::Item(root), Node::child)?;
    let (key, value) = match node {
        Node::Item(Item::Table(t)) | Node::Table(t) => (t.key(k)?.span()?, t.get(k)?.span()?),
        Node::Item(Item::Value(Value::InlineTable(t))) | Node::Value(Value::InlineTable(t)) => {
            (t.key(k)?.span()?, t.get(k)?.span()?)
        }
        _ => return None,
    };
    Some(key.start..value.end)
}

/// Replaces `span` of `text` with spaces (newlines kept, one space per byte): the pair is
/// gone and every offset after it unchanged. `false` if the span does not fit the text.
fn blank(text: &mut String, span: Range<usize>) -> bool {
    let Some(part) = text.get(span.clone()) else {
        return false;
    };
    let spaces: String = part
        .chars()
        .flat_map(|c| {
            let fill = if c == '\n' { '\n' } else { ' ' };
            std::iter::repeat_n(fill, if c == '\n' { 1 } else { c.len_utf8() })
        })
        .collect();
    text.replace_range(span, &spaces);
    true
}

/// The path `serde_path_to_error` tracked, without the private fields of `Spanned`.
fn steps(path: &serde_path_to_error::Path) -> Vec<Step> {
    path.iter()
        .filter_map(|segment| match segment {
            serde_path_to_error::Segment::Seq { index } => Some(Step::Index(*index)),
            serde_path_to_error::Segment::Map { key } if !key.starts_with("$__") => {
                Some(Step::Key(key.clone()))
            }
            _ => None,
        })
        .collect()
}

/// `vip[0].backend[1].weight`; `missing` appends the key a table lacks.
fn field_name(path: &[Step], missing: Option<&str>) -> String {
    let mut out = String::new();
    for step in path {
        match step {
            Step::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Step::Index(i) => {
                let _ = write!(out, "[{i}]");
            }
        }
    }
    if let Some(key) = missing {
        if !out.is_empty() {
            out.push('.');
        }
        out.push_str(key);
    }
    if out.is_empty() {
        "config".into()
    } else {
        out
    }
}

/// Indexes of the current document's arrays mapped back to the original's, past the elements
/// taken out so far.
fn translate(path: &[Step], removed: &HashMap<Vec<Step>, Vec<usize>>) -> Vec<Step> {
    let mut out: Vec<Step> = Vec::with_capacity(path.len());
    for step in path {
        let step = match step {
            Step::Index(i) => {
                let gone = removed.get(&out).map_or(&[][..], Vec::as_slice);
                let original = (0..).filter(|n| !gone.contains(n)).nth(*i).unwrap_or(*i);
                Step::Index(original)
            }
            key @ Step::Key(_) => key.clone(),
        };
        out.push(step);
    }
    out
}

/// A place in the original document: tables inside arrays of tables are not items.
#[derive(Clone, Copy)]
enum Node<'a> {
    Item(&'a Item),
    Table(&'a toml_edit::Table),
    Value(&'a Value),
}

impl<'a> Node<'a> {
    fn child(self, step: &Step) -> Option<Node<'a>> {
        match (self, step) {
            (Node::Item(Item::Table(t)) | Node::Table(t), Step::Key(k)) => t.get(k).map(Node::Item),
            (Node::Item(Item::ArrayOfTables(a)), Step::Index(n)) => a.get(*n).map(Node::Table),
            (Node::Item(Item::Value(v)) | Node::Value(v), step) => match (v, step) {
                (Value::InlineTable(t), Step::Key(k)) => t.get(k).map(Node::Value),
                (Value::Array(a), Step::Index(n)) => a.get(*n).map(Node::Value),
                _ => None,
            },
            _ => None,
        }
    }

    fn span(self) -> Option<Range<usize>> {
        match self {
            Node::Item(i) => i.span(),
            Node::Table(t) => t.span(),
            Node::Value(v) => v.span(),
        }
    }
}

/// The span of the value at `path` in the original document (of its key with `key`), or of
/// the nearest enclosing place that has one.
fn locate(root: &Item, path: &[Step], key: bool) -> Option<Range<usize>> {
    let mut node = Node::Item(root);
    let mut best = node.span();
    for (i, step) in path.iter().enumerate() {
        let Some(next) = node.child(step) else { break };
        let key_span = match (node, step) {
            (Node::Item(Item::Table(t)) | Node::Table(t), Step::Key(k))
                if key && i + 1 == path.len() =>
            {
                t.key(k).and_then(toml_edit::Key::span)
            }
            (
                Node::Item(Item::Value(Value::InlineTable(t))) | Node::Value(Value::InlineTable(t)),
                Step::Key(k),
            ) if key && i + 1 == path.len() => t.key(k).and_then(toml_edit::Key::span),
            _ => None,
        };
        node = next;
        best = key_span.or_else(|| node.span()).or(best);
    }
    best
}

/// Takes the offending key or list element out of `doc` (for a missing key, the table that
/// lacks it); `false` when nothing can be taken out (the document root).
fn take_out(
    doc: &mut DocumentMut,
    path: &[Step],
    removed: &mut HashMap<Vec<Step>, Vec<usize>>,
) -> bool {
    let target: Vec<Step> = path.to_vec();
    if target.is_empty() || !remove_at(doc.as_item_mut(), &target) {
        return false;
    }
    if let (Some(Step::Index(_)), Some((_, parent))) = (target.last(), target.split_last()) {
        if let Some(Step::Index(original)) = translate(&target, removed).last() {
            let key = translate(parent, removed);
            removed.entry(key).or_default().push(*original);
        }
    }
    true
}

fn remove_at(item: &mut Item, path: &[Step]) -> bool {
    let Some((first, rest)) = path.split_first() else {
        return false;
    };
    match (item, first) {
        (Item::Table(t), Step::Key(_)) => remove_in_table(t, path),
        (Item::ArrayOfTables(a), Step::Index(n)) => {
            if rest.is_empty() {
                if *n < a.len() {
                    a.remove(*n);
                    return true;
                }
                return false;
            }
            a.get_mut(*n).is_some_and(|t| remove_in_table(t, rest))
        }
        (Item::Value(v), _) => remove_in_value(v, path),
        _ => false,
    }
}

fn remove_in_table(table: &mut toml_edit::Table, path: &[Step]) -> bool {
    match path {
        [Step::Key(k)] => table.remove(k).is_some(),
        [Step::Key(k), rest @ ..] => table.get_mut(k).is_some_and(|i| remove_at(i, rest)),
        _ => false,
    }
}

fn remove_in_value(value: &mut Value, path: &[Step]) -> bool {
    match (value, path) {
        (Value::InlineTable(t), [Step::Key(k)]) => t.remove(k).is_some(),
        (Value::InlineTable(t), [Step::Key(k), rest @ ..]) => {
            t.get_mut(k).is_some_and(|v| remove_in_value(v, rest))
        }
        (Value::Array(a), [Step::Index(n)]) if *n < a.len() => {
            a.remove(*n);
            true
        }
        (Value::Array(a), [Step::Index(n), rest @ ..]) => {
            a.get_mut(*n).is_some_and(|v| remove_in_value(v, rest))
        }
        _ => false,
    }
}

/// The text between the first pair of backticks in `message`.
fn quoted(message: &str) -> Option<&str> {
    let start = message.find('`')? + 1;
    let len = message[start..].find('`')?;
    Some(&message[start..start + len])
}

/// serde's wording, turned into what an operator reads: what was expected in words, what
/// was found, and for an unknown key the nearest known one.
fn explain(message: &str) -> String {
    if let Some(rest) = message.strip_prefix("unknown field ") {
        return unknown("key", rest);
    }
    if let Some(rest) = message.strip_prefix("unknown variant ") {
        return unknown("value", rest);
    }
    if let Some(key) = message
        .strip_prefix("missing field ")
        .and_then(|_| quoted(message))
    {
        return format!("missing key `{key}`, which this table needs");
    }
    if let Some(rest) = message.strip_prefix("invalid type: ") {
        if let Some((found, expected)) = rest.split_once(", expected ") {
            return format!(
                "expected {}, found {}",
                expected_words(expected),
                found_words(found)
            );
        }
    }
    if let Some(rest) = message.strip_prefix("invalid value: ") {
        if let Some((found, expected)) = rest.split_once(", expected ") {
            return format!("expected {expected}, found {found}");
        }
    }
    message.to_owned()
}

/// `` `wieght`, expected one of `address`, `weight` `` → a suggestion and the valid keys.
fn unknown(what: &str, rest: &str) -> String {
    let Some(name) = quoted(rest) else {
        return format!("unknown {what} {rest}");
    };
    let expected: Vec<&str> = rest
        .split_once("expected")
        .map(|(_, list)| list.split('`').skip(1).step_by(2).collect())
        .unwrap_or_default();
    let best = expected
        .iter()
        .map(|e| (strsim::jaro_winkler(name, e), *e))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0));
    let mut out = format!("unknown {what} `{name}`");
    if let Some((_, e)) = best {
        let _ = write!(out, "; did you mean `{e}`?");
    }
    if !expected.is_empty() {
        let list: Vec<String> = expected.iter().map(|e| format!("`{e}`")).collect();
        let _ = write!(out, " (expected one of {})", list.join(", "));
    }
    out
}

fn expected_words(expected: &str) -> String {
    let e = expected.trim();
    match e {
        "i64" | "u64" | "u32" | "u16" | "u8" | "i32" | "usize" | "an integer" | "integer" => {
            "an integer (no quotes)".into()
        }
        "a boolean" | "bool" => "true or false (no quotes)".into(),
        "a string" | "a borrowed string" => "a string (in double quotes)".into(),
        "a sequence" => "a list, [ ... ]".into(),
        "f64" | "f32" | "a float" => "a number".into(),
        _ if e.starts_with("struct ") || e == "a map" => "a table".into(),
        _ => e.to_owned(),
    }
}

fn found_words(found: &str) -> String {
    let f = found.trim();
    if let Some(s) = f.strip_prefix("string ") {
        return format!("the string {s}");
    }
    if let Some(n) = f.strip_prefix("integer ") {
        return format!("the integer {}", n.trim_matches('`'));
    }
    match f {
        "sequence" => "a list".into(),
        "map" => "a table".into(),
        _ => f.to_owned(),
    }
}

#[cfg(test)]
mod tests;
