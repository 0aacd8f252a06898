//! Diagnostics about user input files (grammars, spaces, hardware files,
//! architecture texts): a position, an error located at file:line:col,
//! RON errors turned into located ones, and maps that refuse a repeated
//! key. Shared by every module that reads such a file; imports nothing
//! from the rest of the crate.

mod unique;

pub use unique::unique_keys;

use std::fmt;
use std::path::{Path, PathBuf};

/// A 1-based line and column in a source file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

impl Pos {
    /// Position of byte offset `at` in `src`.
    pub fn of_offset(src: &str, at: usize) -> Pos {
        let at = at.min(src.len());
        let before = &src[..at];
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        Pos { line, col }
    }
}

/// A problem in a grammar, space or architecture text, with where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceError {
    pub file: Option<PathBuf>,
    pub pos: Option<Pos>,
    pub message: String,
}

impl SourceError {
    pub fn new(message: impl Into<String>) -> Self {
        SourceError {
            file: None,
            pos: None,
            message: message.into(),
        }
    }

    pub fn at(mut self, pos: Pos) -> Self {
        self.pos = Some(pos);
        self
    }

    pub fn in_file(mut self, file: &Path) -> Self {
        if self.file.is_none() {
            self.file = Some(file.to_path_buf());
        }
        self
    }
}

impl fmt::Display for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.file, self.pos) {
            (Some(file), Some(p)) => write!(f, "{}:{}:{}: ", file.display(), p.line, p.col)?,
            (Some(file), None) => write!(f, "{}: ", file.display())?,
            (None, Some(p)) => write!(f, "{}:{}: ", p.line, p.col)?,
            (None, None) => {}
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for SourceError {}

/// The text of a user's file; a file that cannot be read is an error
/// located in that file.
pub fn read_text(path: &Path) -> Result<String, SourceError> {
    std::fs::read_to_string(path)
        .map_err(|e| SourceError::new(format!("cannot read file: {e}")).in_file(path))
}

/// Turns a RON parse error into a located error, quoting the line at fault
/// (RON's messages, such as "Expected integer", do not name the field).
pub fn from_ron(err: ron::error::SpannedError, file: &Path, text: &str) -> SourceError {
    let mut message = match err.code {
        // RON's own text advises raising the limit, which a user cannot.
        ron::Error::ExceededRecursionLimit => {
            "nested more than 128 levels deep, the most archgram reads".to_string()
        }
        ref code => code.to_string(),
    };
    if let Some(line) = text.lines().nth(err.position.line.saturating_sub(1)) {
        let line = line.trim();
        if !line.is_empty() {
            let short: String = line.chars().take(80).collect();
            message.push_str(&format!(" (in `{short}`)"));
        }
    }
    SourceError::new(message)
        .at(Pos {
            line: err.position.line,
            col: err.position.col,
        })
        .in_file(file)
}

/// Byte offset of the first `needle` outside `//` comments.
pub fn find_in_code(text: &str, needle: &str) -> Option<usize> {
    let mut line_start = 0;
    for line in text.split_inclusive('\n') {
        let code = line.find("//").map_or(line, |c| &line[..c]);
        if let Some(i) = code.find(needle) {
            return Some(line_start + i);
        }
        line_start += line.len();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_become_one_based_lines_and_columns_in_characters() {
        let text = "ab\ncé\nxyz";
        assert_eq!(Pos::of_offset(text, 0), Pos { line: 1, col: 1 });
        assert_eq!(Pos::of_offset(text, 3), Pos { line: 2, col: 1 });
        // `é` is two bytes but one column.
        assert_eq!(Pos::of_offset(text, 6), Pos { line: 2, col: 3 });
        assert_eq!(Pos::of_offset(text, 999), Pos { line: 3, col: 4 });
    }

    #[test]
    fn needles_in_comments_are_not_found() {
        let text = "// width: 3\nwidth: 4 // width\n";
        assert_eq!(find_in_code(text, "width"), Some(12));
        assert_eq!(find_in_code(text, "depth"), None);
    }

    #[test]
    fn ron_errors_are_located_and_quote_their_line() {
        let text = "(\n  a: 1,\n  b: [,\n)";
        let err = ron::from_str::<ron::Value>(text).unwrap_err();
        let e = from_ron(err, Path::new("x.ron"), text);
        assert_eq!(e.pos.map(|p| p.line), Some(3), "{e}");
        let shown = e.to_string();
        assert!(shown.starts_with("x.ron:3:"), "{shown}");
        assert!(shown.contains("(in `b: [,`)"), "{shown}");
        assert_eq!(SourceError::new("m").to_string(), "m");
        let missing = read_text(Path::new("/nonexistent/archgram.ron")).unwrap_err();
        assert!(missing
            .to_string()
            .starts_with("/nonexistent/archgram.ron: cannot read file"));
    }
}
