//! Finding here-documents on an instruction line, the way BuildKit's parser does it.
//!
//! BuildKit splits the whole logical line into words with its shell lexer (escape `\`, an
//! empty environment, unset variables left as written, quotes and escapes kept), and every word
//! of the form `[digits]<<[-]NAME` opens a heredoc. The delimiter is then lexed twice, with and
//! without quote removal: when the two disagree on the number of quote characters, part of
//! the delimiter was quoted and the body is not expanded. Only that empty-environment subset
//! of the lexer is needed here, so it lives here rather than in the expander.

use crate::ast::Heredoc;
use crate::shell::Lexer;

/// The empty environment heredoc detection lexes against.
const NO_ENV: [(String, String); 0] = [];

/// The heredocs opened on `line`, in order. The error is the lexer's message.
pub(crate) fn heredocs_from_line(line: &str) -> Result<Vec<Heredoc>, String> {
    // Like BuildKit, a line the lexer rejects opens no heredoc at all.
    let words = lex_words(line, true, true).unwrap_or_default();
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
    let words = lex_words(rest, false, false)?;
    if words.len() != 1 {
        return Ok(None);
    }
    let raw = lex_words(rest, true, false)?;
    if raw.len() != 1 {
        return Err(format!("internal lexing of heredoc produced inconsistent results: {rest}"));
    }
    let quotes = |s: &str| s.chars().filter(|&c| c == '\'' || c == '"').count();
    let name = words.into_iter().next().unwrap_or_default();
    let expand = quotes(&name) == quotes(&raw[0]);
    Ok(Some(Heredoc { name, fd, expand, chomp, content: String::new() }))
}

/// Splits `input` with BuildKit's shell lexer (escape `\`, every variable unset and left as
/// written), optionally keeping quotes and escapes in the words.
fn lex_words(input: &str, raw_quotes: bool, raw_escapes: bool) -> Result<Vec<String>, String> {
    let mut lexer = Lexer::new('\\');
    lexer.raw_quotes = raw_quotes;
    lexer.raw_escapes = raw_escapes;
    lexer.skip_unset_env = true;
    lexer.process_words(input, &NO_ENV[..]).map_err(|e| e.to_string())
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
