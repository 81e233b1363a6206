//! Source positions and the one error type every Dockerfile failure is reported with.
//!
//! Users read a failing Dockerfile in their editor, so an error names the file, the line and
//! the column, and repeats the offending source line with a caret under the column:
//!
//! ```text
//! Dockerfile:3:6: unknown flag: --form
//!  3 | COPY --form=build /a /b
//!    |      ^
//! ```
//!
//! The parser, the typed instructions and the expander all report through [`DockerfileError`];
//! [`Source`] turns a [`Pos`] into an error that carries the source line.

use std::fmt;

/// A 1-based line and column (counted in characters) in the Dockerfile text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub struct Pos {
    /// 1-based physical line number.
    pub line: usize,
    /// 1-based column, counted in Unicode scalar values of that line.
    pub column: usize,
}

impl Pos {
    /// A position at `line`, `column` (both 1-based).
    pub fn new(line: usize, column: usize) -> Self {
        Pos { line, column }
    }
}

/// The name errors use when the caller did not name the file.
pub const DEFAULT_FILE_NAME: &str = "Dockerfile";

/// A failure in a Dockerfile, located at `file:line:column`.
///
/// `Display` prints `Dockerfile:LINE:COL: message`, then the source line and a caret line
/// when the source line is known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct DockerfileError {
    /// The file name shown in the message (`Dockerfile` unless set with [`Self::with_file`]).
    pub file: String,
    /// Where the failure is.
    pub pos: Pos,
    /// What went wrong, without location.
    pub message: String,
    /// The text of line `pos.line`, when known.
    pub source_line: Option<String>,
}

impl DockerfileError {
    /// An error at `pos` with no source line attached.
    pub fn new(pos: Pos, message: impl Into<String>) -> Self {
        DockerfileError { file: DEFAULT_FILE_NAME.to_string(), pos, message: message.into(), source_line: None }
    }

    /// The same error, naming `file` instead of `Dockerfile`.
    pub fn with_file(mut self, file: impl Into<String>) -> Self {
        self.file = file.into();
        self
    }
}

impl fmt::Display for DockerfileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: {}", self.file, self.pos.line, self.pos.column, self.message)?;
        if let Some(src) = &self.source_line {
            let number = self.pos.line.to_string();
            let gutter = " ".repeat(number.len());
            // Keep tabs in the caret line so the caret lines up with the source in a terminal.
            let lead: String = src
                .chars()
                .take(self.pos.column.saturating_sub(1))
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            write!(f, "\n {number} | {src}\n {gutter} | {lead}^")?;
        }
        Ok(())
    }
}

/// The physical lines of a Dockerfile, kept to quote them in errors.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Source {
    lines: Vec<String>,
}

impl Source {
    /// Splits `text` into physical lines (line terminators and a leading BOM removed).
    pub fn new(text: &str) -> Self {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let lines = text.split('\n').map(|l| l.trim_end_matches(['\r', '\n']).to_string()).collect();
        Source { lines }
    }

    /// The text of 1-based line `line`, if the file has it.
    pub fn line(&self, line: usize) -> Option<&str> {
        line.checked_sub(1).and_then(|i| self.lines.get(i)).map(String::as_str)
    }

    /// How many physical lines there are.
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    /// Whether the text was empty.
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty() || (self.lines.len() == 1 && self.lines[0].is_empty())
    }

    /// An error at `pos` that quotes the source line.
    pub fn error(&self, pos: Pos, message: impl Into<String>) -> DockerfileError {
        let mut err = DockerfileError::new(pos, message);
        err.source_line = self.line(pos.line).map(str::to_string);
        err
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_header_source_line_and_caret() {
        let src = Source::new("FROM a\nCOPY --form=b x y\n");
        let err = src.error(Pos::new(2, 6), "unknown flag: --form");
        assert_eq!(err.to_string(), "Dockerfile:2:6: unknown flag: --form\n 2 | COPY --form=b x y\n   |      ^");
        assert_eq!(
            err.with_file("x.Dockerfile").to_string().lines().next(),
            Some("x.Dockerfile:2:6: unknown flag: --form")
        );
    }

    #[test]
    fn caret_keeps_tabs() {
        let src = Source::new("\tRUN\tx");
        let err = src.error(Pos::new(1, 6), "m");
        assert!(err.to_string().ends_with(" 1 | \tRUN\tx\n   | \t   \t^"), "{err}");
    }
}
