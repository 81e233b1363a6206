//! Shell-word processing and variable expansion, with BuildKit's rules (`frontend/dockerfile/shell`).
//!
//! A Dockerfile word such as `"${A:-x}"/b\ c` is turned into its final text: quotes are removed,
//! the escape character (`\` or `` ` ``) protects the next character, single quotes block
//! expansion, and `$V`, `${V}` and the `${V<op>…}` forms are expanded from an environment.
//! [`Lexer::process_word`] returns one string (no splitting; used by most instructions) and
//! [`Lexer::process_words`] splits the result where BuildKit splits (unquoted white space in the
//! input or in the text produced by an unquoted expansion).
//!
//! The behaviour deliberately copies BuildKit's, quirks included (for example `${V:?}` reports
//! "is not allowed to be empty", an escape at the very end of a word is dropped, and `${V//p/r}`
//! interprets `$0` in `r` as the matched text), because users judge the builder by whether it
//! reads a Dockerfile exactly as `docker build` does.

use std::collections::{BTreeMap, BTreeSet, HashMap};

/// A failed expansion: the word being processed and what was wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("failed to process {word:?}: {reason}")]
pub struct ShellError {
    /// The input word, as given to the lexer.
    pub word: String,
    /// BuildKit's wording of the failure, e.g. `syntax error: bad substitution`.
    pub reason: String,
}

/// Something variables can be looked up in.
pub trait Env {
    /// The value of `name`, or `None` when it is unset (set-but-empty is `Some("")`).
    fn lookup(&self, name: &str) -> Option<&str>;
}

impl Env for BTreeMap<String, String> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.get(name).map(String::as_str)
    }
}

impl Env for HashMap<String, String> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.get(name).map(String::as_str)
    }
}

/// An ordered list of `(name, value)` pairs; a later entry overrides an earlier one.
impl Env for [(String, String)] {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

impl Env for Vec<(String, String)> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.as_slice().lookup(name)
    }
}

/// The outcome of processing one word.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Expansion {
    /// The whole word after quote removal and expansion (what `ProcessWord` returns).
    pub word: String,
    /// The word split where BuildKit splits (what `ProcessWords` returns).
    pub words: Vec<String>,
    /// Variable names that were looked up and found (set, possibly empty).
    pub used: BTreeSet<String>,
    /// Variable names that were looked up and were unset.
    pub unset: BTreeSet<String>,
}

/// BuildKit's shell lexer: one escape character plus the options of `shell.Lex`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lexer {
    escape: char,
    /// Keep quote characters in the output instead of removing them.
    pub raw_quotes: bool,
    /// Keep escape characters in the output instead of removing them.
    pub raw_escapes: bool,
    /// Treat quotes as ordinary characters.
    pub skip_process_quotes: bool,
    /// Leave references to unset variables in the output verbatim (`$X`, `${X}`).
    pub skip_unset_env: bool,
}

impl Lexer {
    /// A lexer with default options and the given escape character (`\` or `` ` ``).
    pub fn new(escape: char) -> Self {
        Lexer { escape, raw_quotes: false, raw_escapes: false, skip_process_quotes: false, skip_unset_env: false }
    }

    /// The escape character this lexer honours.
    pub fn escape(&self) -> char {
        self.escape
    }

    /// Expands `word` against `env` and reports the single word, the split words and the
    /// variables that were looked up.
    pub fn process(&self, word: &str, env: &(impl Env + ?Sized)) -> Result<Expansion, ShellError> {
        let mut state = State {
            lex: self,
            env: &|name| env.lookup(name).map(str::to_owned),
            chars: word.chars().collect(),
            pos: 0,
            raw_escapes: self.raw_escapes,
            used: BTreeSet::new(),
            unset: BTreeSet::new(),
        };
        match state.process_stop_on(None, self.raw_escapes) {
            Ok((text, words)) => Ok(Expansion { word: text, words, used: state.used, unset: state.unset }),
            Err(reason) => Err(ShellError { word: word.to_owned(), reason }),
        }
    }

    /// BuildKit's `ProcessWord`: one string out, no word splitting.
    pub fn process_word(&self, word: &str, env: &(impl Env + ?Sized)) -> Result<String, ShellError> {
        self.process(word, env).map(|e| e.word)
    }

    /// BuildKit's `ProcessWords`: the expanded word split on unquoted white space.
    pub fn process_words(&self, word: &str, env: &(impl Env + ?Sized)) -> Result<Vec<String>, ShellError> {
        self.process(word, env).map(|e| e.words)
    }
}

/// Accumulates split words the way BuildKit's `wordsStruct` does.
#[derive(Default)]
struct Words {
    word: String,
    words: Vec<String>,
    in_word: bool,
}

impl Words {
    fn add_char(&mut self, ch: char) {
        if ch.is_whitespace() {
            if self.in_word && !self.word.is_empty() {
                self.words.push(std::mem::take(&mut self.word));
                self.in_word = false;
            }
        } else {
            self.add_raw_char(ch);
        }
    }

    fn add_raw_char(&mut self, ch: char) {
        self.word.push(ch);
        self.in_word = true;
    }

    fn add_string(&mut self, s: &str) {
        s.chars().for_each(|c| self.add_char(c));
    }

    fn add_raw_string(&mut self, s: &str) {
        self.word.push_str(s);
        self.in_word = true;
    }

    fn finish(mut self) -> Vec<String> {
        if !self.word.is_empty() {
            self.words.push(self.word);
        }
        self.words
    }
}

/// The scanner over one word plus the bookkeeping of looked-up names.
struct State<'a> {
    lex: &'a Lexer,
    env: &'a dyn Fn(&str) -> Option<String>,
    chars: Vec<char>,
    pos: usize,
    raw_escapes: bool,
    used: BTreeSet<String>,
    unset: BTreeSet<String>,
}

const MISSING_BRACE: &str = "syntax error: missing '}'";

impl State<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        if c.is_some() {
            self.pos += 1;
        }
        c
    }

    fn get_env(&mut self, name: &str) -> Option<String> {
        let value = (self.env)(name);
        if value.is_some() {
            self.used.insert(name.to_owned());
        } else {
            self.unset.insert(name.to_owned());
        }
        value
    }

    /// Processes until `stop` (consumed) or the end; `raw_escapes` applies for this call only.
    fn process_stop_on(&mut self, stop: Option<char>, raw_escapes: bool) -> Result<(String, Vec<String>), String> {
        let saved = std::mem::replace(&mut self.raw_escapes, raw_escapes);
        let r = self.stop_on_inner(stop);
        self.raw_escapes = saved;
        r
    }

    fn stop_on_inner(&mut self, stop: Option<char>) -> Result<(String, Vec<String>), String> {
        let mut result = String::new();
        let mut words = Words::default();
        let quotes = !self.lex.skip_process_quotes;
        while let Some(ch) = self.peek() {
            if Some(ch) == stop {
                self.next();
                return Ok((result, words.finish()));
            }
            if ch == '$' {
                let tmp = self.process_dollar()?;
                result.push_str(&tmp);
                words.add_string(&tmp);
            } else if quotes && (ch == '\'' || ch == '"') {
                let tmp = if ch == '\'' { self.single_quote()? } else { self.double_quote()? };
                result.push_str(&tmp);
                words.add_raw_string(&tmp);
            } else {
                self.next();
                let mut ch = ch;
                if ch == self.lex.escape {
                    if self.raw_escapes {
                        words.add_raw_char(ch);
                        result.push(ch);
                    }
                    // An escape at the very end of the word escapes nothing and is dropped.
                    match self.next() {
                        None => break,
                        Some(c) => ch = c,
                    }
                    words.add_raw_char(ch);
                } else {
                    words.add_char(ch);
                }
                result.push(ch);
            }
        }
        if let Some(stop) = stop {
            return Err(format!("unexpected end of statement while looking for matching {stop}"));
        }
        Ok((result, words.finish()))
    }

    /// Consumes an opening quote; the result starts with it only with `raw_quotes`.
    fn open_quote(&mut self) -> String {
        let open = self.next();
        if self.lex.raw_quotes { open.map(String::from).unwrap_or_default() } else { String::new() }
    }

    fn single_quote(&mut self) -> Result<String, String> {
        let mut result = self.open_quote();
        loop {
            match self.next() {
                None => return Err("unexpected end of statement while looking for matching single-quote".into()),
                Some('\'') => {
                    if self.lex.raw_quotes {
                        result.push('\'');
                    }
                    return Ok(result);
                }
                Some(c) => result.push(c),
            }
        }
    }

    fn double_quote(&mut self) -> Result<String, String> {
        let mut result = self.open_quote();
        loop {
            match self.peek() {
                None => return Err("unexpected end of statement while looking for matching double-quote".into()),
                Some('"') => {
                    self.next();
                    if self.lex.raw_quotes {
                        result.push('"');
                    }
                    return Ok(result);
                }
                Some('$') => {
                    let value = self.process_dollar()?;
                    result.push_str(&value);
                }
                Some(mut ch) => {
                    self.next();
                    if ch == self.lex.escape {
                        if self.raw_escapes {
                            result.push(ch);
                        }
                        match self.peek() {
                            // Ignore the escape at the end of the word.
                            None => continue,
                            // Only these can be escaped inside double quotes; otherwise the
                            // escape character stays as written.
                            Some(c) if c == '"' || c == '$' || c == self.lex.escape => {
                                self.next();
                                ch = c;
                            }
                            Some(_) => {}
                        }
                    }
                    result.push(ch);
                }
            }
        }
    }

    fn process_dollar(&mut self) -> Result<String, String> {
        self.next();
        if self.peek() != Some('{') {
            let name = self.process_name();
            if name.is_empty() {
                return Ok("$".into());
            }
            return Ok(match self.get_env(&name) {
                Some(v) => v,
                None if self.lex.skip_unset_env => format!("${name}"),
                None => String::new(),
            });
        }
        self.next();
        match self.peek() {
            None => return Err(MISSING_BRACE.into()),
            Some('{' | '}' | ':') => return Err("syntax error: bad substitution".into()),
            Some(_) => {}
        }
        let name = self.process_name();
        let Some(first) = self.next() else {
            return Err(MISSING_BRACE.into());
        };
        match first {
            '}' => Ok(match self.get_env(&name) {
                Some(v) => v,
                None if self.lex.skip_unset_env => format!("${{{name}}}"),
                None => String::new(),
            }),
            ':' | '+' | '-' | '?' | '#' | '%' => {
                let null_is_unset = first == ':';
                let mut modifier = first.to_string();
                let op = if null_is_unset {
                    let op = self.next();
                    modifier.extend(op);
                    op
                } else {
                    Some(first)
                };
                let raw = matches!(op, Some('#' | '%'));
                let word = self.sub_word('}', raw, MISSING_BRACE)?;
                let value = self.get_env(&name);
                if self.lex.skip_unset_env && value.is_none() {
                    return Ok(format!("${{{name}{modifier}{word}}}"));
                }
                let empty = |v: &Option<String>| v.is_none() || (null_is_unset && v.as_deref() == Some(""));
                match op {
                    Some('-') => Ok(if empty(&value) { word } else { value.unwrap_or_default() }),
                    Some('+') => Ok(if empty(&value) { String::new() } else { word }),
                    Some('?') => match value {
                        None => Err(format!("{name}: {}", or_default(word, "is not allowed to be unset"))),
                        Some(v) if null_is_unset && v.is_empty() => {
                            Err(format!("{name}: {}", or_default(word, "is not allowed to be empty")))
                        }
                        Some(v) => Ok(v),
                    },
                    Some(c @ ('%' | '#')) => {
                        let (greedy, pattern) = match word.strip_prefix(c) {
                            Some(rest) => (true, rest.to_owned()),
                            None => (false, word),
                        };
                        let value = value.unwrap_or_default();
                        if c == '%' {
                            trim_suffix(&pattern, &value, greedy)
                        } else {
                            trim_prefix(&pattern, &value, greedy)
                        }
                    }
                    _ => Err(format!("unsupported modifier ({modifier}) in substitution")),
                }
            }
            '/' => {
                let replace_all = self.peek() == Some('/');
                if replace_all {
                    self.next();
                }
                let pattern = self.sub_word('/', true, "syntax error: missing '/' in ${}")?;
                let replacement = self.sub_word('}', true, MISSING_BRACE)?;
                let value = self.get_env(&name);
                if self.lex.skip_unset_env && value.is_none() {
                    return Ok(format!("${{{name}/{pattern}/{replacement}}}"));
                }
                substitute(&pattern, value.as_deref().unwrap_or(""), &replacement, replace_all)
            }
            other => Err(format!("unsupported modifier ({other}) in substitution")),
        }
    }

    /// The text of a `${…}` operand up to `stop`; running off the end reports `at_eof`.
    fn sub_word(&mut self, stop: char, raw: bool, at_eof: &str) -> Result<String, String> {
        match self.process_stop_on(Some(stop), raw) {
            Ok((w, _)) => Ok(w),
            Err(_) if self.peek().is_none() => Err(at_eof.into()),
            Err(e) => Err(e),
        }
    }

    /// A variable name: a run of letters, digits and `_`; or all leading digits (positional
    /// parameters); or one special parameter character.
    fn process_name(&mut self) -> String {
        let mut name = String::new();
        while let Some(ch) = self.peek() {
            if name.is_empty() && ch.is_numeric() {
                while let Some(d) = self.peek().filter(|d| d.is_numeric()) {
                    self.next();
                    name.push(d);
                }
                return name;
            }
            if name.is_empty() && matches!(ch, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0') {
                self.next();
                return ch.to_string();
            }
            if !ch.is_alphabetic() && !ch.is_numeric() && ch != '_' {
                break;
            }
            self.next();
            name.push(ch);
        }
        name
    }
}

fn or_default(word: String, default: &str) -> String {
    if word.is_empty() { default.to_owned() } else { word }
}

/// One element of a `${V#pattern}`-style shell pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    /// `*`: any run of characters (Go's `.`, so not a newline).
    Star,
    /// `?`: one character other than a newline.
    Any,
    Lit(char),
}

/// Parses a substitution pattern: `*`, `?`, and `\` escaping `*`, `?`, `\` (and, silently, `}`
/// and `/`, which had to be escaped to appear in `${…}` at all). Any other escape is an error.
fn parse_pattern(pattern: &str) -> Result<Vec<Tok>, String> {
    let mut out = Vec::new();
    let mut it = pattern.chars().peekable();
    while let Some(c) = it.next() {
        match c {
            '*' => out.push(Tok::Star),
            '?' => out.push(Tok::Any),
            '\\' => match it.peek() {
                Some('}' | '/') => {}
                _ => match it.next() {
                    Some(e @ ('*' | '?' | '\\')) => out.push(Tok::Lit(e)),
                    Some(e) => {
                        return Err(format!("invalid pattern ({pattern}) in substitution: invalid escape '\\{e}'"));
                    }
                    None => return Err(format!("invalid pattern ({pattern}) in substitution: trailing backslash")),
                },
            },
            c => out.push(Tok::Lit(c)),
        }
    }
    Ok(out)
}

/// The end of the shortest (or longest) match of `toks` starting at `start`, simulating the
/// pattern as an automaton over token positions so long values stay linear per start.
fn match_at(toks: &[Tok], s: &[char], start: usize, greedy: bool) -> Option<usize> {
    let m = toks.len();
    // A star may also match nothing: let every live star pass its position on.
    let close = |set: &mut Vec<bool>| {
        for t in 0..m {
            if set[t] && toks[t] == Tok::Star {
                set[t + 1] = true;
            }
        }
    };
    let mut cur = vec![false; m + 1];
    cur[0] = true;
    close(&mut cur);
    let mut best = cur[m].then_some(start);
    if best.is_some() && !greedy {
        return best;
    }
    for (i, &c) in s.iter().enumerate().skip(start) {
        let mut next = vec![false; m + 1];
        for t in (0..m).filter(|&t| cur[t]) {
            match toks[t] {
                Tok::Star if c != '\n' => next[t] = true,
                Tok::Any if c != '\n' => next[t + 1] = true,
                Tok::Lit(l) if l == c => next[t + 1] = true,
                _ => {}
            }
        }
        close(&mut next);
        if !next.contains(&true) {
            break;
        }
        cur = next;
        if cur[m] {
            best = Some(i + 1);
            if !greedy {
                return best;
            }
        }
    }
    best
}

fn trim_prefix(pattern: &str, value: &str, greedy: bool) -> Result<String, String> {
    let toks = parse_pattern(pattern)?;
    let chars: Vec<char> = value.chars().collect();
    Ok(match match_at(&toks, &chars, 0, greedy) {
        Some(end) => chars[end..].iter().collect(),
        None => value.to_owned(),
    })
}

/// Reverses a pattern but keeps each escape in front of the character it escapes.
fn reverse_pattern(pattern: &str) -> String {
    let p: Vec<char> = pattern.chars().collect();
    let mut out = vec!['\0'; p.len()];
    let last = p.len().saturating_sub(1);
    let mut i = 0;
    while i < p.len() {
        let o = last - i;
        if p[i] == '\\' && i != last {
            out[o - 1] = p[i];
            out[o] = p[i + 1];
            i += 2;
        } else {
            out[o] = p[i];
            i += 1;
        }
    }
    out.into_iter().collect()
}

/// `${V%p}`/`${V%%p}`: a suffix search is a prefix search on the reversed value and pattern.
fn trim_suffix(pattern: &str, value: &str, greedy: bool) -> Result<String, String> {
    let reversed: String = value.chars().rev().collect();
    let trimmed = trim_prefix(&reverse_pattern(pattern), &reversed, greedy)?;
    Ok(trimmed.chars().rev().collect())
}

/// The leftmost-longest match of `toks` starting at or after `from`, as char offsets.
fn find_from(toks: &[Tok], s: &[char], from: usize) -> Option<(usize, usize)> {
    (from..=s.len()).find_map(|a| match_at(toks, s, a, true).map(|b| (a, b)))
}

/// `${V/p/r}` and `${V//p/r}`, with Go's `ReplaceAllString` rules for the latter (no empty
/// match right after a previous match; `$0`/`${0}` in the replacement is the matched text).
fn substitute(pattern: &str, value: &str, replacement: &str, all: bool) -> Result<String, String> {
    let toks = parse_pattern(pattern)?;
    let s: Vec<char> = value.chars().collect();
    if !all {
        return Ok(match find_from(&toks, &s, 0) {
            Some((a, b)) => {
                let mut out: String = s[..a].iter().collect();
                out.push_str(replacement);
                out.extend(&s[b..]);
                out
            }
            None => value.to_owned(),
        });
    }
    let mut out = String::new();
    let (mut last_end, mut search) = (0, 0);
    while search <= s.len() {
        let Some((a, b)) = find_from(&toks, &s, search) else { break };
        out.extend(&s[last_end..a]);
        if b > last_end || a == 0 {
            let matched: String = s[a..b].iter().collect();
            out.push_str(&expand_template(replacement, &matched));
        }
        last_end = b;
        search = if search + 1 > b { search + 1 } else { b };
    }
    out.extend(&s[last_end.min(s.len())..]);
    Ok(out)
}

/// Go's `Regexp.Expand` for a pattern without groups: `$$` is `$`, `$0`/`${0}` the match,
/// any other valid reference is empty, and a malformed one is kept literally.
fn expand_template(template: &str, matched: &str) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        rest = &rest[i + 1..];
        if let Some(r) = rest.strip_prefix('$') {
            out.push('$');
            rest = r;
            continue;
        }
        let is_name = |c: char| c.is_alphanumeric() || c == '_';
        let (name, after) = if let Some(r) = rest.strip_prefix('{') {
            match r.find('}') {
                Some(end) if end > 0 && r[..end].chars().all(is_name) => (&r[..end], &r[end + 1..]),
                _ => ("", rest),
            }
        } else {
            let end = rest.find(|c: char| !is_name(c)).unwrap_or(rest.len());
            (&rest[..end], &rest[end..])
        };
        if name.is_empty() {
            out.push('$');
            continue;
        }
        if name.chars().all(|c| c.is_ascii_digit()) && name.parse::<u64>().ok() == Some(0) {
            out.push_str(matched);
        }
        rest = after;
    }
    out.push_str(rest);
    out
}
