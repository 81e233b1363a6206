//! The generic syntax tree the parser produces, and BuildKit's `Node.Dump` rendering of it.
//!
//! A [`Dockerfile`] is a list of [`Node`]s, one per instruction, in source order. A node keeps
//! the words exactly as BuildKit's parser leaves them: no variable expansion, no quote removal
//! (except in flags and JSON arrays, where BuildKit removes them too). The typed layer
//! ([`crate::instructions`]) gives them meaning.
//!
//! [`Dockerfile::dump`] renders the tree in the format of BuildKit's parser tests
//! (`(copy ["--from=a"] "x" "/y")`, one line per instruction), which `kiln debug dump-ast`
//! prints and the conformance tests compare byte for byte.

use crate::error::{DockerfileError, Pos, Source};

/// A parsed Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dockerfile {
    /// Parser directives (`# syntax=…`, `# escape=…`, `# check=…`) from the top of the file.
    pub directives: Vec<Directive>,
    /// The escape character in force: `\` or `` ` ``.
    pub escape: char,
    /// The instructions, in source order.
    pub instructions: Vec<Node>,
    /// Non-fatal findings (empty continuation lines), in source order.
    pub warnings: Vec<Warning>,
    /// The physical lines, for quoting them in errors.
    pub source: Source,
}

impl Dockerfile {
    /// The line of the first instruction (1-based).
    pub fn start_line(&self) -> usize {
        self.instructions.first().map_or(0, |n| n.start_line)
    }

    /// The last line used by the last instruction (1-based, inclusive).
    pub fn end_line(&self) -> usize {
        self.instructions.last().map_or(0, |n| n.end_line)
    }

    /// The value of directive `name` (lower-case: `syntax`, `escape` or `check`), if given.
    pub fn directive(&self, name: &str) -> Option<&str> {
        self.directives.iter().find(|d| d.name == name).map(|d| d.value.as_str())
    }

    /// An error at `pos` quoting this file's source line.
    pub fn error(&self, pos: Pos, message: impl Into<String>) -> DockerfileError {
        self.source.error(pos, message)
    }

    /// BuildKit's `Node.Dump()` of the root: one `(instruction)` per line, trimmed, without a
    /// final newline (BuildKit's tests compare it plus one `"\n"` with the `result` files).
    pub fn dump(&self) -> String {
        let mut out = String::new();
        for node in &self.instructions {
            out.push('(');
            out.push_str(&node.dump());
            out.push_str(")\n");
        }
        go_trim_space(&out).to_string()
    }
}

/// A parser directive from the top of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    /// The key, lower-cased (`syntax`, `escape` or `check`).
    pub name: String,
    /// The value as written, trimmed.
    pub value: String,
    /// The 1-based line it is on.
    pub line: usize,
}

/// A non-fatal finding of the parser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// BuildKit's wording, e.g. `Empty continuation line found in: RUN a b`.
    pub message: String,
    /// The line the instruction ends on.
    pub line: usize,
}

/// One here-document attached to an instruction (`RUN <<EOF`, `COPY <<A <<B /dst/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heredoc {
    /// The delimiter word with quotes removed: `EOF` for `<<"EOF"`.
    pub name: String,
    /// The file descriptor written before `<<` (`3<<EOF`), 0 when none.
    pub fd: u64,
    /// False when any part of the delimiter was quoted: the body is then taken literally.
    pub expand: bool,
    /// True for `<<-`: leading tabs are stripped from body lines (see [`Self::chomped`]).
    pub chomp: bool,
    /// The body exactly as in the file, line terminators included, tabs not yet stripped.
    pub content: String,
}

impl Heredoc {
    /// The body with leading tabs removed from every line when `chomp` is set (BuildKit's
    /// `ChompHeredocContent`), else the body unchanged.
    pub fn chomped(&self) -> String {
        if !self.chomp {
            return self.content.clone();
        }
        self.content.split_inclusive('\n').map(|l| l.trim_start_matches('\t')).collect()
    }
}

/// One instruction as parsed, before any interpretation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The keyword as written (`RuN`); see [`Self::name`] for the lower-case form.
    pub keyword: String,
    /// The leading `--name[=value]` words, quotes removed, in order, repeats kept.
    pub flags: Vec<String>,
    /// The arguments (see the table in the conformance FORMAT.md): JSON elements, whitespace-
    /// separated words, the whole rest, or key/value/separator triples for ENV and LABEL.
    pub args: Vec<String>,
    /// Whether the arguments came from a JSON array (exec form).
    pub json: bool,
    /// ONBUILD's trigger instruction, parsed like a top-level one.
    pub sub: Option<Box<Node>>,
    /// Here-documents opened on this line, in order.
    pub heredocs: Vec<Heredoc>,
    /// The logical line (continuations joined), as BuildKit's `Node.Original`.
    pub original: String,
    /// The physical line where the instruction starts (1-based).
    pub start_line: usize,
    /// The last physical line it uses, continuation and heredoc lines included.
    pub end_line: usize,
    /// The comment lines directly above it (text after `#`, trimmed).
    pub comments: Vec<String>,
    /// Where the keyword is.
    pub keyword_pos: Pos,
    /// Where each flag starts, parallel to `flags`.
    pub flag_pos: Vec<Pos>,
    /// Where the arguments start (after the flags); the end of the line when there are none.
    pub args_pos: Pos,
}

impl Node {
    /// The keyword lower-cased the way Go's `strings.ToLower` does it (`RuN` → `run`).
    pub fn name(&self) -> String {
        go_to_lower(&self.keyword)
    }

    /// BuildKit's `Node.Dump()` of this instruction, without the surrounding parentheses.
    pub fn dump(&self) -> String {
        // ONBUILD can nest thousands deep; build the text without recursion.
        let mut chain = vec![self];
        while let Some(sub) = &chain[chain.len() - 1].sub {
            chain.push(sub);
        }
        let mut text = String::new();
        for node in chain.iter().rev() {
            let mut s = node.name();
            if !node.flags.is_empty() {
                s.push_str(" [");
                for (i, f) in node.flags.iter().enumerate() {
                    if i > 0 {
                        s.push(' ');
                    }
                    s.push_str(&go_quote(f));
                }
                s.push(']');
            }
            if node.sub.is_some() {
                s.push_str(" (");
                s.push_str(&text);
                s.push(')');
            }
            for a in &node.args {
                s.push(' ');
                s.push_str(&go_quote(a));
            }
            text = go_trim_space(&s).to_string();
        }
        text
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // Unlink the ONBUILD chain iteratively so a deep nest cannot overflow the stack.
        let mut next = self.sub.take();
        while let Some(mut n) = next {
            next = n.sub.take();
        }
    }
}

/// Go's `strings.TrimSpace`: trims Unicode white space from both ends.
pub(crate) fn go_trim_space(s: &str) -> &str {
    s.trim_matches(char::is_whitespace)
}

/// Go's `strings.ToLower`: per-character simple lower-casing.
pub(crate) fn go_to_lower(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            // The only character whose full lower-case mapping differs from Go's simple one.
            '\u{130}' => 'i',
            c => c.to_lowercase().next().unwrap_or(c),
        })
        .collect()
}

/// Go's `strconv.Quote`.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if go_is_print(c) => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{7f}' => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if (c as u32) <= 0xffff => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push_str(&format!("\\U{:08x}", c as u32)),
        }
    }
    out.push('"');
    out
}

/// Go's `strconv.IsPrint`: ASCII space through `~`, and outside ASCII the Unicode categories
/// L, M, N, P and S.
fn go_is_print(c: char) -> bool {
    use unicode_general_category::{GeneralCategory as G, get_general_category};
    if c.is_ascii() {
        return (' '..='~').contains(&c);
    }
    !matches!(
        get_general_category(c),
        G::Control
            | G::Format
            | G::Surrogate
            | G::PrivateUse
            | G::Unassigned
            | G::SpaceSeparator
            | G::LineSeparator
            | G::ParagraphSeparator
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_like_go() {
        assert_eq!(go_quote("a \"b\" \\c"), r#""a \"b\" \\c""#);
        assert_eq!(go_quote("\u{0}\u{7}\t\u{1b}\u{7f}"), r#""\x00\a\t\x1b\x7f""#);
        assert_eq!(go_quote("é☥\u{a0}\u{2028}\u{e000}\u{10ffff}"), r#""é☥\u00a0\u2028\ue000\U0010ffff""#);
    }

    #[test]
    fn lowercases_like_go() {
        assert_eq!(go_to_lower("RuN"), "run");
        assert_eq!(go_to_lower("İΣ"), "iσ");
    }

    #[test]
    fn chomp_strips_leading_tabs_per_line() {
        let h = Heredoc { name: "E".into(), fd: 0, expand: true, chomp: true, content: "\t\ta\n\tb\t\n c\n".into() };
        assert_eq!(h.chomped(), "a\nb\t\n c\n");
    }
}
