//! Errors that point at the place in the file a user has to change.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("unknown {kind} {name:?}; known: {}", known.join(", "))]
    NotFound {
        kind: String,
        name: String,
        known: Vec<String>,
    },
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    At(Located),
}

/// A message tied to `file:line:col` and, when known, the dotted field name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    pub field: Option<String>,
    pub message: String,
}

impl fmt::Display for Located {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file.display(), self.line, self.column)?;
        if let Some(field) = &self.field {
            write!(f, "{field}: ")?;
        }
        f.write_str(&self.message)
    }
}

impl InputError {
    /// An error at byte range `span` of `text` (the contents of `file`).
    pub(crate) fn at(
        file: &Path,
        text: &str,
        span: Option<Range<usize>>,
        field: Option<String>,
        message: impl Into<String>,
    ) -> InputError {
        let offset = span.map_or(0, |s| s.start.min(text.len()));
        let before = &text[..offset];
        let line = before.matches('\n').count() + 1;
        let column = offset - before.rfind('\n').map_or(0, |i| i + 1) + 1;
        let field = field.or_else(|| field_at(text, offset));
        InputError::At(Located {
            file: file.to_path_buf(),
            line,
            column,
            field,
            message: message.into(),
        })
    }

    /// Convert a TOML/serde error, keeping its position and naming the field.
    pub(crate) fn from_toml(file: &Path, text: &str, err: &toml::de::Error) -> InputError {
        InputError::at(
            file,
            text,
            err.span(),
            None,
            err.message().trim().to_owned(),
        )
    }

    /// The located part, for tests and callers that want the pieces.
    pub fn located(&self) -> Option<&Located> {
        match self {
            InputError::At(l) => Some(l),
            _ => None,
        }
    }
}

/// The dotted name of the key on the line holding `offset`: the nearest
/// `[table]` header above it plus the key before `=` on that line.
fn field_at(text: &str, offset: usize) -> Option<String> {
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[offset..].find('\n').map_or(text.len(), |i| offset + i);
    let line = &text[line_start..line_end];
    let key = line
        .split_once('=')
        .map(|(k, _)| k.trim().trim_matches('"'));
    let table = text[..line_start].lines().rev().find_map(|l| {
        let l = l.trim();
        (l.starts_with('[') && l.ends_with(']'))
            .then(|| l.trim_matches(|c| c == '[' || c == ']').trim().to_owned())
    });
    match (table, key) {
        (Some(t), Some(k)) if !k.is_empty() => Some(format!("{t}.{k}")),
        (None, Some(k)) if !k.is_empty() => Some(k.to_owned()),
        (Some(t), _) => Some(t),
        _ => None,
    }
}

/// Read `path` with an error that names it.
pub(crate) fn read(path: &Path) -> Result<String, InputError> {
    std::fs::read_to_string(path).map_err(|source| InputError::Io {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_names_include_the_table() {
        let text = "name = \"x\"\n[kernel]\npackage = 3\n";
        let offset = text.find('3').unwrap();
        assert_eq!(field_at(text, offset).as_deref(), Some("kernel.package"));
        assert_eq!(field_at(text, 2).as_deref(), Some("name"));
    }
}
