//! The line-oriented Dockerfile parser: bytes in, [`Dockerfile`] (generic [`Node`]s) out.
//!
//! It follows BuildKit's `parser.Parse` step by step (see the conformance `parser/FORMAT.md`):
//! physical lines, parser directives at the top, comments, line continuation with the escape
//! character, keyword and flag splitting, the per-keyword argument parsers, and heredoc bodies
//! read from the lines after the instruction. Positions of keywords, flags and arguments are
//! recorded so later stages can point at them.
//!
//! Differences from BuildKit, on purpose: the text must be UTF-8 (BuildKit passes other bytes
//! through); error lines are the real line of the failure (BuildKit is off by one for
//! directive errors).

mod heredoc;
mod json;
mod split;

use heredoc::parse_heredoc;

use crate::ast::{Directive, Dockerfile, Heredoc, Node, Warning, go_quote, go_to_lower, go_trim_space};
use crate::error::{DockerfileError, Pos, Source};
use json::{JsonArray, parse_json_array};
use split::{extract_flags, parse_words, split_once_ws, ws_split};

/// Longest physical line BuildKit's scanner accepts (its buffer is 64 KiB, newline included).
const MAX_LINE: usize = 65_535;

/// Parses Dockerfile bytes. Errors carry the line and column and quote the source line.
pub fn parse(input: &[u8]) -> Result<Dockerfile, DockerfileError> {
    let input = input.strip_prefix(b"\xef\xbb\xbf").unwrap_or(input);
    let text = match std::str::from_utf8(input) {
        Ok(t) => t,
        Err(e) => {
            let before = &input[..e.valid_up_to()];
            let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
            let line_start = before.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            let column = String::from_utf8_lossy(&before[line_start..]).chars().count() + 1;
            let source = Source::new(&String::from_utf8_lossy(input));
            return Err(source.error(Pos::new(line, column), "the Dockerfile is not valid UTF-8"));
        }
    };
    Parser::new(text).run()
}

/// Parses Dockerfile text (see [`parse`]).
pub fn parse_str(text: &str) -> Result<Dockerfile, DockerfileError> {
    parse(text.as_bytes())
}

/// State of the parser-directive reader (BuildKit's `DirectiveParser`).
struct Directives {
    done: bool,
    found: Vec<Directive>,
    escape: char,
}

impl Directives {
    /// Looks at one processed line; returns whether it was a directive.
    fn read(&mut self, line: &str, line_no: usize) -> Result<bool, String> {
        if self.done {
            return Ok(false);
        }
        let Some(after) = line.strip_prefix('#') else {
            self.done = true;
            return Ok(false);
        };
        let Some((key, value)) = match_directive(after.trim_start_matches(char::is_whitespace)) else {
            self.done = true;
            return Ok(false);
        };
        let key = key.to_ascii_lowercase();
        if !matches!(key.as_str(), "syntax" | "escape" | "check") {
            self.done = true;
            return Ok(false);
        }
        if self.found.iter().any(|d| d.name == key) {
            return Err(format!("only one {key} parser directive can be used"));
        }
        if key == "escape" {
            self.escape = match value {
                "\\" => '\\',
                "`" => '`',
                v => return Err(format!("invalid escape token '{v}' does not match ` or \\")),
            };
        }
        self.found.push(Directive { name: key, value: value.to_string(), line: line_no });
        Ok(true)
    }
}

/// Go's `\s`.
fn is_go_re_space(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\u{c}' | '\r' | ' ')
}

/// `^([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$` with RE2's choice of submatches.
fn match_directive(s: &str) -> Option<(&str, &str)> {
    let key_len = s.bytes().take_while(u8::is_ascii_alphanumeric).count();
    if key_len == 0 || !s.as_bytes()[0].is_ascii_alphabetic() {
        return None;
    }
    let (key, rest) = s.split_at(key_len);
    let rest = rest.trim_start_matches(is_go_re_space).strip_prefix('=')?;
    if rest.contains('\n') {
        return None;
    }
    let trimmed = rest.trim_start_matches(is_go_re_space);
    let value = if trimmed.is_empty() {
        // The value must be one character at least; the greedy `\s*` leaves it the last one.
        let c = rest.chars().last()?;
        &rest[rest.len() - c.len_utf8()..]
    } else {
        trimmed.trim_end_matches(is_go_re_space)
    };
    Some((key, value))
}

/// Where the pieces of a logical line came from, to turn offsets back into positions.
#[derive(Default)]
struct LineMap {
    /// (offset in the logical line, 1-based physical line, byte offset in that line)
    segments: Vec<(usize, usize, usize)>,
}

struct Parser<'a> {
    /// Physical lines, each with its terminator.
    lines: Vec<&'a str>,
    next: usize,
    source: Source,
    directives: Directives,
}

/// Go's `isComment`: the first non-white-space character is `#`.
fn is_comment(line: &str) -> bool {
    line.trim_start_matches(char::is_whitespace).starts_with('#')
}

fn trim_newline(line: &str) -> &str {
    line.trim_end_matches(['\r', '\n'])
}

impl<'a> Parser<'a> {
    fn new(text: &'a str) -> Self {
        let lines = text.split_inclusive('\n').collect();
        Parser {
            lines,
            next: 0,
            source: Source::new(text),
            directives: Directives { done: false, found: Vec::new(), escape: '\\' },
        }
    }

    /// The next physical line, or an error when it is longer than BuildKit accepts.
    fn scan(&mut self) -> Result<Option<&'a str>, DockerfileError> {
        let Some(line) = self.lines.get(self.next).copied() else { return Ok(None) };
        self.next += 1;
        if line.strip_suffix('\n').unwrap_or(line).len() > MAX_LINE {
            return Err(self.source.error(
                Pos::new(self.next, 1),
                format!("dockerfile line greater than max allowed size of {MAX_LINE}"),
            ));
        }
        Ok(Some(line))
    }

    /// BuildKit's `processLine`: strips the terminator (and on an instruction's first line
    /// the leading white space), feeds the directive reader, and blanks comment lines.
    /// Returns the text, the byte offset it starts at in the line, and whether it was a
    /// directive.
    fn process(
        &mut self,
        raw: &'a str,
        strip_left: bool,
        line_no: usize,
    ) -> Result<(&'a str, usize, bool), DockerfileError> {
        let mut t = trim_newline(raw);
        let mut offset = 0;
        if strip_left {
            let trimmed = t.trim_start_matches(char::is_whitespace);
            offset = t.len() - trimmed.len();
            t = trimmed;
        }
        let directive = self.directives.read(t, line_no).map_err(|m| self.source.error(Pos::new(line_no, 1), m))?;
        if is_comment(t) {
            return Ok(("", offset, directive));
        }
        Ok((t, offset, directive))
    }

    /// BuildKit's `trimContinuationCharacter`: `(text, ends_here)`.
    fn trim_continuation(&self, line: &'a str) -> (&'a str, bool) {
        let e = self.directives.escape;
        let t = line.trim_end_matches([' ', '\t']);
        match t.strip_suffix(e) {
            Some(before) if before.is_empty() || !before.ends_with(e) => (before, false),
            _ => (line, true),
        }
    }

    fn run(mut self) -> Result<Dockerfile, DockerfileError> {
        let mut current = 0usize;
        let mut instructions = Vec::new();
        let mut warnings = Vec::new();
        let mut comments: Vec<String> = Vec::new();

        while let Some(raw) = self.scan()? {
            if is_comment(raw) {
                // BuildKit drops the first byte, whatever it is.
                let c = go_trim_space(&String::from_utf8_lossy(&raw.as_bytes()[1..])).to_string();
                if c.is_empty() {
                    comments.clear();
                } else {
                    comments.push(c);
                }
            }
            let (first, offset, directive) = self.process(raw, true, current + 1)?;
            if directive {
                comments.pop();
            }
            current += 1;
            let start = current;
            let (text, mut ends) = self.trim_continuation(first);
            if ends && text.is_empty() {
                continue;
            }
            let mut logical = String::from(text);
            let mut map = LineMap::default();
            map.segments.push((0, current, offset));
            let mut empty_continuation = false;
            while !ends {
                let Some(raw) = self.scan()? else { break };
                let (t, _, _) = self.process(raw, false, current + 1)?;
                current += 1;
                if is_comment(raw) {
                    continue;
                }
                if t.trim_start_matches(char::is_whitespace).is_empty() {
                    empty_continuation = true;
                    continue;
                }
                let (t, e) = self.trim_continuation(t);
                ends = e;
                map.segments.push((logical.len(), current, 0));
                logical.push_str(t);
            }
            if empty_continuation {
                warnings
                    .push(Warning { message: format!("Empty continuation line found in: {logical}"), line: current });
            }

            let mut node = self.node_from_line(&logical, 0, &map, start, current)?;
            if can_contain_heredoc(&node) && logical.contains("<<") {
                let docs = heredoc::heredocs_from_line(&logical).map_err(|m| self.source.error(node.keyword_pos, m))?;
                for mut doc in docs {
                    let mut terminated = false;
                    while let Some(raw) = self.scan()? {
                        current += 1;
                        let mut candidate = trim_newline(raw);
                        if doc.chomp {
                            candidate = candidate.trim_start_matches('\t');
                        }
                        if candidate == doc.name {
                            terminated = true;
                            break;
                        }
                        doc.content.push_str(raw);
                    }
                    if !terminated {
                        return Err(self.source.error(
                            node.keyword_pos,
                            format!("unterminated heredoc: no line {} ends it", go_quote(&doc.name)),
                        ));
                    }
                    node.heredocs.push(doc);
                }
            }
            node.start_line = start;
            node.end_line = current;
            node.comments = std::mem::take(&mut comments);
            instructions.push(node);
        }

        if instructions.is_empty() {
            return Err(self.source.error(Pos::new(current.max(1), 1), "file with no instructions"));
        }
        Ok(Dockerfile {
            directives: self.directives.found,
            escape: self.directives.escape,
            instructions,
            warnings,
            source: self.source,
        })
    }

    /// The position of byte `offset` of the logical line.
    fn pos(&self, map: &LineMap, offset: usize) -> Pos {
        let seg = map.segments.iter().rev().find(|s| s.0 <= offset).copied().unwrap_or((0, 1, 0));
        let (seg_start, line, line_offset) = seg;
        let text = self.source.line(line).unwrap_or("");
        let mut byte = (line_offset + offset - seg_start).min(text.len());
        while !text.is_char_boundary(byte) {
            byte -= 1;
        }
        Pos::new(line, text[..byte].chars().count() + 1)
    }

    /// BuildKit's `newNodeFromLine` for the logical line `line`, which starts at byte `base`
    /// of the mapped logical line (ONBUILD parses its rest this way). Iterative over ONBUILD
    /// chains so a deep nest cannot overflow the stack.
    fn node_from_line(
        &self,
        line: &str,
        base: usize,
        map: &LineMap,
        start: usize,
        end: usize,
    ) -> Result<Node, DockerfileError> {
        let mut chain: Vec<Node> = Vec::new();
        let mut line = line.to_string();
        let mut base = base;
        loop {
            let lead = line.len() - line.trim_start_matches(char::is_whitespace).len();
            let trimmed = go_trim_space(&line);
            let (keyword, after) = split_once_ws(trimmed);
            let keyword_pos = self.pos(map, base + lead);
            let mut node = Node {
                keyword: keyword.to_string(),
                flags: Vec::new(),
                args: Vec::new(),
                json: false,
                sub: None,
                heredocs: Vec::new(),
                original: line.clone(),
                start_line: start,
                end_line: end,
                comments: Vec::new(),
                keyword_pos,
                flag_pos: Vec::new(),
                args_pos: self.pos(map, base + lead + trimmed.len()),
            };
            // `rest` and its offset in the mapped logical line.
            let mut rest = String::new();
            let mut rest_at = base + lead + trimmed.len();
            if let Some((after_at, after)) = after {
                let after_base = base + lead + after_at;
                let (flags, rest_start) = extract_flags(after, self.directives.escape);
                for (at, f) in flags {
                    node.flag_pos.push(self.pos(map, after_base + at));
                    node.flags.push(f);
                }
                let tail = match after.get(rest_start..) {
                    Some(t) => t.to_string(),
                    // BuildKit's byte-wise flag reader can stop inside a character.
                    None => String::from_utf8_lossy(&after.as_bytes()[rest_start..]).into_owned(),
                };
                let tail_lead = tail.len() - tail.trim_start_matches(char::is_whitespace).len();
                rest = go_trim_space(&tail).to_string();
                rest_at = after_base + rest_start + tail_lead;
                node.args_pos = self.pos(map, rest_at);
            }
            let args_pos = node.args_pos;
            let err = |m: String| self.source.error(args_pos, m);
            let name = go_to_lower(keyword);
            match name.as_str() {
                "onbuild" if !rest.is_empty() => {
                    chain.push(node);
                    line = rest;
                    base = rest_at;
                    continue;
                }
                "onbuild" => {}
                "add" | "copy" | "volume" => match parse_json_array(&rest) {
                    JsonArray::Strings(v) => {
                        node.args = v;
                        node.json = true;
                    }
                    JsonArray::NotStrings => return Err(err(NOT_STRINGS.into())),
                    JsonArray::NotJson if rest.is_empty() => {}
                    JsonArray::NotJson => node.args = ws_split(&rest).into_iter().map(|(_, w)| w).collect(),
                },
                "run" | "cmd" | "entrypoint" | "shell" => {
                    maybe_json(&rest, &mut node).map_err(err)?;
                }
                "arg" => node.args = parse_words(&rest, self.directives.escape).into_iter().map(|(_, w)| w).collect(),
                "env" => node.args = self.name_val(&rest, "ENV").map_err(err)?,
                "label" => node.args = self.name_val(&rest, "LABEL").map_err(err)?,
                "expose" | "from" if !rest.is_empty() => {
                    node.args = ws_split(&rest).into_iter().map(|(_, w)| w).collect()
                }
                "expose" | "from" => {}
                "maintainer" | "stopsignal" | "user" | "workdir" if !rest.is_empty() => node.args = vec![rest],
                "maintainer" | "stopsignal" | "user" | "workdir" => {}
                "healthcheck" => health_config(&rest, &mut node).map_err(err)?,
                _ => node.args = vec![String::new()],
            }
            // Fold the ONBUILD chain: each ONBUILD holds the node parsed from its rest.
            while let Some(mut parent) = chain.pop() {
                parent.sub = Some(Box::new(node));
                node = parent;
            }
            return Ok(node);
        }
    }

    /// BuildKit's `parseNameVal` (ENV, LABEL): old `KEY value` or new `k=v …` form, as
    /// key/value/separator triples.
    fn name_val(&self, rest: &str, keyword: &str) -> Result<Vec<String>, String> {
        let words = parse_words(rest, self.directives.escape);
        let Some((_, first)) = words.first() else { return Ok(Vec::new()) };
        if !first.contains('=') {
            let (key, value) = split_once_ws(rest);
            let Some((_, value)) = value else { return Err(format!("{keyword} must have two arguments")) };
            return Ok(vec![key.to_string(), value.to_string(), String::new()]);
        }
        let mut args = Vec::new();
        for (_, w) in words {
            let Some((k, v)) = w.split_once('=') else {
                return Err(format!(
                    "Syntax error - can't find = in {}. Must be of the form: name=value",
                    go_quote(&w)
                ));
            };
            args.extend([k.to_string(), v.to_string(), "=".to_string()]);
        }
        Ok(args)
    }
}

const NOT_STRINGS: &str = "when using JSON array syntax, arrays must be comprised of strings only";

/// BuildKit's `parseMaybeJSON`: a JSON string array, or the whole rest as one argument.
fn maybe_json(rest: &str, node: &mut Node) -> Result<(), String> {
    if rest.is_empty() {
        return Ok(());
    }
    match parse_json_array(rest) {
        JsonArray::Strings(v) => {
            node.args.extend(v);
            node.json = true;
        }
        JsonArray::NotStrings => return Err(NOT_STRINGS.into()),
        JsonArray::NotJson => node.args.push(rest.to_string()),
    }
    Ok(())
}

/// BuildKit's `parseHealthConfig`: the type word, then the rest like CMD. Byte-wise like
/// BuildKit (so bytes 0x85 and 0xA0 end the type word).
fn health_config(rest: &str, node: &mut Node) -> Result<(), String> {
    let b = rest.as_bytes();
    let is_space = |c: u8| (c as char).is_whitespace();
    let sep = b.iter().position(|&c| is_space(c)).unwrap_or(b.len());
    let next = b[sep..].iter().position(|&c| !is_space(c)).map_or(b.len(), |i| sep + i);
    if sep == 0 {
        return Ok(());
    }
    node.args.push(String::from_utf8_lossy(&b[..sep]).into_owned());
    let cmd = String::from_utf8_lossy(&b[next..]);
    maybe_json(&cmd, node)
}

/// BuildKit's `canContainHeredoc`: RUN, COPY and ADD in shell form, also as ONBUILD triggers.
fn can_contain_heredoc(node: &Node) -> bool {
    let mut n = node;
    if n.name() == "onbuild" {
        if let Some(sub) = &n.sub {
            n = sub;
        }
    }
    matches!(n.name().as_str(), "run" | "copy" | "add") && !n.json
}

/// The heredoc a RUN/COPY/ADD argument such as `<<-"EOF"` opens (BuildKit's
/// `MustParseHeredoc`), body empty: `None` for ordinary words and for words the lexer rejects.
pub fn heredoc_word(word: &str) -> Option<Heredoc> {
    parse_heredoc(word).ok().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directive_values_follow_re2() {
        assert_eq!(match_directive("escape = `"), Some(("escape", "`")));
        assert_eq!(match_directive("ESCAPE=\\  "), Some(("ESCAPE", "\\")));
        assert_eq!(match_directive("escape=  "), Some(("escape", " ")));
        assert_eq!(match_directive("syntax=docker/dockerfile:1 x "), Some(("syntax", "docker/dockerfile:1 x")));
        assert_eq!(match_directive("1x=y"), None);
        assert_eq!(match_directive("x"), None);
        assert_eq!(match_directive("x="), None);
    }
}
