//! The deb822 control format (Debian Policy §5.1) used by `Release`,
//! `Packages` and `debian/control`: paragraphs of `Field: value` lines separated
//! by blank lines; continuation lines start with a space or tab.
//!
//! The parser borrows from the input so that a 60k-paragraph `Packages` index is
//! read without copying every value.

use std::fmt;

/// One paragraph: fields in file order, names and values borrowed from the input.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Paragraph<'a> {
    /// 1-based line number of the paragraph's first field.
    pub line: usize,
    fields: Vec<(&'a str, &'a str)>,
}

impl<'a> Paragraph<'a> {
    /// The raw value of `name` (field names compare case-insensitively, as
    /// Policy says). Multi-line values keep their embedded newlines and
    /// leading spaces; the first line is trimmed.
    pub fn get(&self, name: &str) -> Option<&'a str> {
        self.fields
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }

    /// All fields in file order.
    pub fn fields(&self) -> impl Iterator<Item = (&'a str, &'a str)> + '_ {
        self.fields.iter().copied()
    }

    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }
}

/// A syntax error with the 1-based line where it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub line: usize,
    pub message: String,
}

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for SyntaxError {}

/// Iterator over the paragraphs of a deb822 document.
pub struct Paragraphs<'a> {
    rest: &'a str,
    offset_line: usize,
}

/// Parse `text` into paragraphs lazily. Comment lines (`#` in column 0) are skipped.
pub fn paragraphs(text: &str) -> Paragraphs<'_> {
    Paragraphs {
        rest: text,
        offset_line: 0,
    }
}

impl<'a> Iterator for Paragraphs<'a> {
    type Item = Result<Paragraph<'a>, SyntaxError>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut para = Paragraph::default();
        // Start of the current field's value within `self.rest`'s original slice.
        let mut current: Option<(&'a str, usize, usize)> = None; // (name, value_start, value_end)
        let base = self.rest;
        let mut pos = 0usize;
        loop {
            if pos >= base.len() {
                break;
            }
            let line_end = base[pos..].find('\n').map_or(base.len(), |i| pos + i);
            let line = &base[pos..line_end];
            let line = line.strip_suffix('\r').unwrap_or(line);
            self.offset_line += 1;
            let next_pos = (line_end + 1).min(base.len());
            if line.trim().is_empty() {
                pos = next_pos;
                if para.is_empty() && current.is_none() {
                    continue; // blank lines before a paragraph
                }
                break;
            }
            if line.starts_with('#') {
                pos = next_pos;
                continue;
            }
            if line.starts_with(' ') || line.starts_with('\t') {
                match current.as_mut() {
                    Some((_, _, end)) => *end = pos + line.len(),
                    None => {
                        self.rest = &base[next_pos..];
                        return Some(Err(SyntaxError {
                            line: self.offset_line,
                            message: "continuation line without a field".into(),
                        }));
                    }
                }
                pos = next_pos;
                continue;
            }
            let Some(colon) = line.find(':') else {
                self.rest = &base[next_pos..];
                return Some(Err(SyntaxError {
                    line: self.offset_line,
                    message: format!("expected `Field: value`, found {line:?}"),
                }));
            };
            if let Some((name, start, end)) = current.take() {
                para.fields.push((name, base[start..end].trim()));
            }
            if para.is_empty() {
                para.line = self.offset_line;
            }
            let name = &line[..colon];
            let value_start = pos + colon + 1;
            current = Some((name, value_start, pos + line.len()));
            pos = next_pos;
        }
        if let Some((name, start, end)) = current.take() {
            para.fields.push((name, base[start..end].trim()));
        }
        self.rest = &base[pos.min(base.len())..];
        if para.is_empty() {
            None
        } else {
            Some(Ok(para))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fields_continuations_and_blank_lines() {
        let text = "\n\nPackage: a\nVersion: 1.0\nDescription: short\n long line\n .\n more\n\n\nPackage: b\r\nDepends: c (>= 1),\n d\n";
        let paras: Vec<_> = paragraphs(text).collect::<Result<_, _>>().unwrap();
        assert_eq!(paras.len(), 2);
        assert_eq!(paras[0].line, 3);
        assert_eq!(paras[0].get("package"), Some("a"));
        assert_eq!(
            paras[0].get("Description"),
            Some("short\n long line\n .\n more")
        );
        assert_eq!(paras[1].get("Package"), Some("b"));
        assert_eq!(paras[1].get("Depends"), Some("c (>= 1),\n d"));
        assert_eq!(paras[1].line, 11);
    }

    #[test]
    fn reports_line_of_bad_field() {
        let err = paragraphs("Package: a\nno colon here\n")
            .collect::<Result<Vec<_>, _>>()
            .unwrap_err();
        assert_eq!(err.line, 2);
    }

    #[test]
    fn continuation_without_field_is_an_error() {
        let err = paragraphs(" orphan\n").next().unwrap().unwrap_err();
        assert_eq!(err.line, 1);
    }
}
