//! Finding here-documents on an instruction line, the way BuildKit's parser does it.
//!
//! BuildKit splits the whole logical line into words with its shell lexer (escape `\`, an
//! empty environment, unset variables left as written, quotes and escapes kept), and every word
//! of the form `[digits]<<[-]NAME` opens a heredoc. The delimiter is then lexed twice, with and
//! without quote removal: when the two disagree on the number of quote characters, part of
//! the delimiter was quoted and the body is not expanded. Only that empty-environment subset
//! of the lexer is needed here, so it lives here rather than in the expander.

use unicode_general_category::{GeneralCategory as G, get_general_category};

use crate::ast::Heredoc;

/// The heredocs opened on `line`, in order. The error is the lexer's message.
pub(crate) fn heredocs_from_line(line: &str) -> Result<Vec<Heredoc>, String> {
    // Like BuildKit, a line the lexer rejects opens no heredoc at all.
    let words = Lexer::words(line, true, true).unwrap_or_default();
    let mut docs = Vec::new();
    for word in words {
        if let Some(doc) = parse_heredoc(&word)? {
            docs.push(doc);
        }
    }
    Ok(docs)
}

/// BuildKit's `ParseHeredoc`: the heredoc a word such as `<<-"EOF"` opens, if it opens one.
pub(crate) fn parse_heredoc(word: &str) -> Result<Option<Heredoc>, String> {
    let digits = word.bytes().take_while(u8::is_ascii_digit).count();
    let Some(after) = word[digits..].strip_prefix("<<") else { return Ok(None) };
    let (chomp, rest) = match after.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, after),
    };
    if rest.is_empty() || rest.contains('<') {
        return Ok(None);
    }
    // Go ignores the parse error; an out-of-range descriptor saturates like ParseUint's result.
    let fd = if digits == 0 { 0 } else { word[..digits].parse::<u64>().unwrap_or(u64::MAX) };
    let words = Lexer::words(rest, false, false)?;
    if words.len() != 1 {
        return Ok(None);
    }
    let raw = Lexer::words(rest, true, false)?;
    if raw.len() != 1 {
        return Err(format!("internal lexing of heredoc produced inconsistent results: {rest}"));
    }
    let quotes = |s: &str| s.chars().filter(|&c| c == '\'' || c == '"').count();
    let name = words.into_iter().next().unwrap_or_default();
    let expand = quotes(&name) == quotes(&raw[0]);
    Ok(Some(Heredoc { name, fd, expand, chomp, content: String::new() }))
}

/// BuildKit's word collector: spaces end words unless the text came from quotes or escapes.
#[derive(Default)]
struct Words {
    word: String,
    words: Vec<String>,
    in_word: bool,
}

impl Words {
    fn add_char(&mut self, c: char) {
        if c.is_whitespace() {
            if self.in_word && !self.word.is_empty() {
                self.words.push(std::mem::take(&mut self.word));
                self.in_word = false;
            }
        } else {
            self.add_raw_char(c);
        }
    }

    fn add_raw_char(&mut self, c: char) {
        self.word.push(c);
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

/// The empty-environment, skip-unset subset of BuildKit's shell lexer, escape `\`.
struct Lexer {
    chars: Vec<char>,
    i: usize,
    raw_quotes: bool,
}

const ESCAPE: char = '\\';

impl Lexer {
    fn words(input: &str, raw_quotes: bool, raw_escapes: bool) -> Result<Vec<String>, String> {
        // Go's text/scanner skips a byte-order mark at the very start.
        let input = input.strip_prefix('\u{feff}').unwrap_or(input);
        let mut lx = Lexer { chars: input.chars().collect(), i: 0, raw_quotes };
        lx.stop_on(None, raw_escapes)
            .map(|(_, w)| w)
            .map_err(|e| format!("failed to process {}: {e}", crate::ast::go_quote(input)))
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.i).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        if c.is_some() {
            self.i += 1;
        }
        c
    }

    fn stop_on(&mut self, stop: Option<char>, raw_escapes: bool) -> Result<(String, Vec<String>), String> {
        let mut result = String::new();
        let mut words = Words::default();
        while let Some(c) = self.peek() {
            if stop == Some(c) {
                self.i += 1;
                return Ok((result, words.finish()));
            }
            match c {
                '$' => {
                    let t = self.dollar()?;
                    result.push_str(&t);
                    words.add_string(&t);
                }
                '\'' => {
                    let t = self.single_quote()?;
                    result.push_str(&t);
                    words.add_raw_string(&t);
                }
                '"' => {
                    let t = self.double_quote(raw_escapes)?;
                    result.push_str(&t);
                    words.add_raw_string(&t);
                }
                _ => {
                    self.i += 1;
                    let mut c = c;
                    if c == ESCAPE {
                        if raw_escapes {
                            words.add_raw_char(c);
                            result.push(c);
                        }
                        match self.next() {
                            Some(n) => c = n,
                            None => break,
                        }
                        words.add_raw_char(c);
                    } else {
                        words.add_char(c);
                    }
                    result.push(c);
                }
            }
        }
        match stop {
            Some(s) => Err(format!("unexpected end of statement while looking for matching {s}")),
            None => Ok((result, words.finish())),
        }
    }

    fn single_quote(&mut self) -> Result<String, String> {
        let mut out = String::new();
        let q = self.next().unwrap_or('\'');
        if self.raw_quotes {
            out.push(q);
        }
        loop {
            match self.next() {
                None => return Err("unexpected end of statement while looking for matching single-quote".into()),
                Some('\'') => {
                    if self.raw_quotes {
                        out.push('\'');
                    }
                    return Ok(out);
                }
                Some(c) => out.push(c),
            }
        }
    }

    fn double_quote(&mut self, raw_escapes: bool) -> Result<String, String> {
        let mut out = String::new();
        let q = self.next().unwrap_or('"');
        if self.raw_quotes {
            out.push(q);
        }
        loop {
            match self.peek() {
                None => return Err("unexpected end of statement while looking for matching double-quote".into()),
                Some('"') => {
                    self.i += 1;
                    if self.raw_quotes {
                        out.push('"');
                    }
                    return Ok(out);
                }
                Some('$') => {
                    let v = self.dollar()?;
                    out.push_str(&v);
                }
                Some(mut c) => {
                    self.i += 1;
                    if c == ESCAPE {
                        if raw_escapes {
                            out.push(c);
                        }
                        match self.peek() {
                            None => continue,
                            Some(n @ ('"' | '$' | ESCAPE)) => {
                                self.i += 1;
                                c = n;
                            }
                            Some(_) => {}
                        }
                    }
                    out.push(c);
                }
            }
        }
    }

    /// `$…` with every variable unset: the reference is kept as written (SkipUnsetEnv).
    fn dollar(&mut self) -> Result<String, String> {
        self.i += 1; // '$'
        if self.peek() != Some('{') {
            let name = self.name();
            return Ok(format!("${name}"));
        }
        self.i += 1;
        match self.peek() {
            None => return Err("syntax error: missing '}'".into()),
            Some('{' | '}' | ':') => return Err("syntax error: bad substitution".into()),
            Some(_) => {}
        }
        let name = self.name();
        let c = self.next();
        // Go's scanner yields EOF (-1), which string(rune) renders as U+FFFD.
        let mut chs = c.unwrap_or('\u{fffd}').to_string();
        match c {
            Some('}') => Ok(format!("${{{name}}}")),
            Some(':' | '+' | '-' | '?' | '#' | '%') => {
                let mut m = c;
                if c == Some(':') {
                    m = self.next();
                    chs.push(m.unwrap_or('\u{fffd}'));
                }
                let raw = matches!(m, Some('#' | '%'));
                let (word, _) = self.stop_on(Some('}'), raw).map_err(|e| self.missing_brace(e))?;
                Ok(format!("${{{name}{chs}{word}}}"))
            }
            Some('/') => {
                if self.peek() == Some('/') {
                    self.i += 1;
                }
                let (pattern, _) = self.stop_on(Some('/'), true).map_err(|e| {
                    if self.peek().is_none() { "syntax error: missing '/' in ${}".to_string() } else { e }
                })?;
                let (replacement, _) = self.stop_on(Some('}'), true).map_err(|e| self.missing_brace(e))?;
                Ok(format!("${{{name}/{pattern}/{replacement}}}"))
            }
            _ => Err(format!("unsupported modifier ({chs}) in substitution")),
        }
    }

    fn missing_brace(&self, e: String) -> String {
        if self.peek().is_none() { "syntax error: missing '}'".to_string() } else { e }
    }

    fn name(&mut self) -> String {
        let mut name = String::new();
        while let Some(c) = self.peek() {
            if name.is_empty() && is_digit(c) {
                while let Some(d) = self.peek().filter(|&d| is_digit(d)) {
                    self.i += 1;
                    name.push(d);
                }
                return name;
            }
            if name.is_empty() && matches!(c, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0') {
                self.i += 1;
                return c.to_string();
            }
            if !is_letter(c) && !is_digit(c) && c != '_' {
                break;
            }
            self.i += 1;
            name.push(c);
        }
        name
    }
}

/// Go's `unicode.IsDigit`: category Nd.
fn is_digit(c: char) -> bool {
    c.is_ascii_digit() || (!c.is_ascii() && get_general_category(c) == G::DecimalNumber)
}

/// Go's `unicode.IsLetter`: categories Lu, Ll, Lt, Lm, Lo.
fn is_letter(c: char) -> bool {
    c.is_ascii_alphabetic()
        || (!c.is_ascii()
            && matches!(
                get_general_category(c),
                G::UppercaseLetter | G::LowercaseLetter | G::TitlecaseLetter | G::ModifierLetter | G::OtherLetter
            ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(line: &str) -> Vec<(String, bool, bool)> {
        heredocs_from_line(line).unwrap().into_iter().map(|h| (h.name, h.expand, h.chomp)).collect()
    }

    #[test]
    fn finds_heredocs_like_buildkit() {
        assert_eq!(names("RUN <<EOF"), vec![("EOF".into(), true, false)]);
        assert_eq!(names("RUN python3 <<-'EOF' > x"), vec![("EOF".into(), false, true)]);
        assert_eq!(names(r#"COPY <<A <<"B" /dst/"#), vec![("A".into(), true, false), ("B".into(), false, false)]);
        assert_eq!(names("RUN 3<<E'O'F cat"), vec![("EOF".into(), false, false)]);
        // An escaped delimiter still expands in BuildKit (only quotes count).
        assert_eq!(names(r"RUN <<\EOF"), vec![("EOF".into(), true, false)]);
        assert_eq!(names("RUN echo a<<b"), vec![]);
        assert_eq!(names("RUN <<''"), vec![]);
        assert_eq!(names("RUN echo \"<<EOF"), vec![]);
        assert_eq!(names("RUN <<$X"), vec![("$X".into(), true, false)]);
        assert_eq!(names("RUN <<${X}"), vec![("${X}".into(), true, false)]);
        assert_eq!(names("RUN <<E<F"), vec![]);
    }

    #[test]
    fn lexer_errors_in_the_delimiter_fail_the_line() {
        let err = heredocs_from_line("RUN <<${x:-a b}").unwrap_err();
        assert!(err.contains("missing '}'"), "{err}");
    }

    #[test]
    fn fd_is_kept() {
        assert_eq!(heredocs_from_line("RUN 3<<E").unwrap()[0].fd, 3);
    }
}
