//! What can be wrong with a config, and where: every error carries the line and column of the
//! offending value when known, so an operator can jump straight to it.

use std::{fmt, ops::Range, path::Path};

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// The file could not be read at all.
    #[error("cannot read config {path}: {error}")]
    Read { path: String, error: String },
    /// Not TOML, or keys and types that do not fit the schema (unknown, missing, wrong type).
    #[error("{at}{message}")]
    Syntax { at: Location, message: String },
    /// Well-formed TOML whose keys or types do not fit the schema (unknown, missing, wrong
    /// type); `field` is the dotted path, `message` what was expected.
    #[error("{at}{field}: {message}")]
    Schema {
        at: Location,
        field: String,
        message: String,
    },
    /// Well-formed, but a value is unusable; `field` is its dotted path, `message` the fix.
    #[error("{at}{field}: {message}")]
    Invalid {
        at: Location,
        field: String,
        message: String,
    },
}

/// A 1-based line and column (in characters) in the config text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

/// Where an error is; displayed as the prefix of its message (`FILE:LINE:COL: `, `line LINE,
/// column COL: `, `FILE: ` or nothing).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Location {
    pub file: Option<String>,
    pub position: Option<Position>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.file, self.position) {
            (Some(file), Some(p)) => write!(f, "{file}:{}:{}: ", p.line, p.column),
            (Some(file), None) => write!(f, "{file}: "),
            (None, Some(p)) => write!(f, "line {}, column {}: ", p.line, p.column),
            (None, None) => Ok(()),
        }
    }
}

impl Position {
    /// The position of byte `offset` in `text` (clamped to the text).
    pub fn of(text: &str, offset: usize) -> Position {
        let mut end = offset.min(text.len());
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let before = &text[..end];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Position {
            line: before.matches('\n').count() + 1,
            column: before[line_start..].chars().count() + 1,
        }
    }
}

impl ConfigError {
    pub(super) fn read(path: &Path, e: &std::io::Error) -> ConfigError {
        ConfigError::Read {
            path: path.display().to_string(),
            error: e.to_string(),
        }
    }

    /// A TOML or schema error, on one line (toml's own messages may span several).
    pub(super) fn syntax(text: &str, e: &toml::de::Error) -> ConfigError {
        let message = e
            .message()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(": ");
        ConfigError::Syntax {
            at: Location {
                file: None,
                position: e.span().map(|s| Position::of(text, s.start)),
            },
            message,
        }
    }

    pub(super) fn in_file(mut self, path: &Path) -> ConfigError {
        if let ConfigError::Syntax { at, .. }
        | ConfigError::Schema { at, .. }
        | ConfigError::Invalid { at, .. } = &mut self
        {
            at.file = Some(path.display().to_string());
        }
        self
    }

    /// Line and column of the offending value, when known.
    pub fn position(&self) -> Option<Position> {
        match self {
            ConfigError::Read { .. } => None,
            ConfigError::Syntax { at, .. }
            | ConfigError::Schema { at, .. }
            | ConfigError::Invalid { at, .. } => at.position,
        }
    }

    /// The line of the offending value, when known.
    pub fn line(&self) -> Option<usize> {
        self.position().map(|p| p.line)
    }
}

/// Every error found in one config, one per line when displayed.
#[derive(Debug, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl From<ConfigError> for ConfigErrors {
    fn from(e: ConfigError) -> Self {
        ConfigErrors(vec![e])
    }
}

impl ConfigErrors {
    pub(super) fn in_file(self, path: &Path) -> ConfigErrors {
        ConfigErrors(self.0.into_iter().map(|e| e.in_file(path)).collect())
    }
}

/// Collects validation errors while every field is checked, so one run reports them all.
pub(super) struct Report<'a> {
    text: &'a str,
    errors: Vec<ConfigError>,
}

impl<'a> Report<'a> {
    pub fn new(text: &'a str) -> Self {
        Report {
            text,
            errors: Vec::new(),
        }
    }

    /// Adds errors found before validation (the schema's).
    pub fn extend(&mut self, errors: Vec<ConfigError>) {
        self.errors.extend(errors);
    }

    /// Records that the value at `span` is unusable; an empty span (a default) has no position.
    pub fn invalid(
        &mut self,
        span: Range<usize>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) {
        let position = (!span.is_empty()).then(|| Position::of(self.text, span.start));
        self.errors.push(ConfigError::Invalid {
            at: Location {
                file: None,
                position,
            },
            field: field.into(),
            message: message.into(),
        });
    }

    /// The validated value, or every error in file order.
    pub fn finish<T>(self, value: Option<T>) -> Result<T, ConfigErrors> {
        let mut errors = self.errors;
        match value {
            Some(value) if errors.is_empty() => Ok(value),
            _ if errors.is_empty() => Err(ConfigErrors::from(ConfigError::Invalid {
                at: Location::default(),
                field: "config".into(),
                message: "rejected without a reason (a sluice bug; please report it)".into(),
            })),
            _ => {
                // Errors without a position sort last: they name no place to jump to.
                errors.sort_by_key(|e| (e.position().is_none(), e.position()));
                Err(ConfigErrors(errors))
            }
        }
    }
}

/// `span` if the value was written, else `fallback` (the enclosing table, usually).
pub(super) fn written_or(span: Range<usize>, fallback: Range<usize>) -> Range<usize> {
    if span.is_empty() {
        fallback
    } else {
        span
    }
}
