//! Splitting a logical line: keyword, leading flags, and the word splitters the per-keyword
//! argument parsers use. Each mirrors a BuildKit function, quirks included, because the
//! resulting words are what users see in `docker build` behaviour.

/// BuildKit's `[\t\v\f\r ]+`, the separator between keyword and rest and between plain words.
pub(crate) fn is_token_space(c: char) -> bool {
    matches!(c, '\t' | '\u{b}' | '\u{c}' | '\r' | ' ')
}

/// Go's `regexp.Split(s, -1)` with `[\t\v\f\r ]+`, for a non-empty `s`; each word with its
/// byte offset in `s`.
pub(crate) fn ws_split(s: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut iter = s.char_indices().peekable();
    while let Some((i, c)) = iter.next() {
        if is_token_space(c) {
            out.push((start, s[start..i].to_string()));
            let mut end = i + c.len_utf8();
            while let Some(&(j, d)) = iter.peek() {
                if !is_token_space(d) {
                    break;
                }
                end = j + d.len_utf8();
                iter.next();
            }
            start = end;
        }
    }
    out.push((start, s[start..].to_string()));
    out
}

/// Splits `s` once at the first run of `[\t\v\f\r ]+`: the part before, and the byte offset
/// and text of the part after.
pub(crate) fn split_once_ws(s: &str) -> (&str, Option<(usize, &str)>) {
    match s.find(is_token_space) {
        None => (s, None),
        Some(i) => {
            let after = s[i..].find(|c| !is_token_space(c)).map_or(s.len(), |j| i + j);
            (&s[..i], Some((after, &s[after..])))
        }
    }
}

/// BuildKit's `extractBuilderFlags`: reads `--flag[=value]` words from the front of `line`.
/// Returns the flags with their byte offsets and the offset where the rest starts
/// (`line.len()` when nothing follows the flags).
///
/// Like BuildKit it works byte by byte, widening each byte to a character: a non-ASCII byte in
/// a flag comes out as the Latin-1 character of that byte, and bytes 0x85 and 0xA0 count as
/// white space.
pub(crate) fn extract_flags(line: &str, escape: char) -> (Vec<(usize, String)>, usize) {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    let b = line.as_bytes();
    let esc = escape as u32 as u8;
    let mut flags: Vec<(usize, String)> = Vec::new();
    let mut phase = Phase::Spaces;
    let mut word = String::new();
    let mut word_start = 0;
    let mut quote = 0u8;
    let mut blank_ok = false;
    let is_space = |c: u8| (c as char).is_whitespace();
    let mut pos = 0;
    while pos <= b.len() {
        let ch = if pos < b.len() { b[pos] } else { 0 };
        if phase == Phase::Spaces {
            if pos == b.len() {
                break;
            }
            if is_space(ch) {
                pos += 1;
                continue;
            }
            if ch != b'-' || pos + 1 == b.len() || b[pos + 1] != b'-' {
                return (flags, pos);
            }
            phase = Phase::Word;
            word_start = pos;
        }
        if pos == b.len() {
            if word != "--" && (blank_ok || !word.is_empty()) {
                flags.push((word_start, word));
            }
            break;
        }
        if phase == Phase::Word {
            if is_space(ch) {
                phase = Phase::Spaces;
                if word == "--" {
                    return (flags, pos);
                }
                if blank_ok || !word.is_empty() {
                    flags.push((word_start, std::mem::take(&mut word)));
                }
                word.clear();
                blank_ok = false;
                pos += 1;
                continue;
            }
            if ch == b'\'' || ch == b'"' {
                quote = ch;
                blank_ok = true;
                phase = Phase::Quote;
                pos += 1;
                continue;
            }
            let mut c = ch;
            if ch == esc {
                if pos + 1 == b.len() {
                    pos += 1;
                    continue;
                }
                pos += 1;
                c = b[pos];
            }
            word.push(c as char);
            pos += 1;
            continue;
        }
        // Phase::Quote
        if ch == quote {
            phase = Phase::Word;
            pos += 1;
            continue;
        }
        let mut c = ch;
        if ch == esc {
            if pos + 1 == b.len() {
                phase = Phase::Word;
                pos += 1;
                continue;
            }
            pos += 1;
            c = b[pos];
        }
        word.push(c as char);
        pos += 1;
    }
    (flags, b.len())
}

/// BuildKit's `parseWords` (ARG, ENV, LABEL): splits at unquoted white space, keeping quotes
/// and escapes in the words. Each word with its byte offset in `rest`.
pub(crate) fn parse_words(rest: &str, escape: char) -> Vec<(usize, String)> {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    let chars: Vec<(usize, char)> = rest.char_indices().collect();
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut quote = '\0';
    let mut blank_ok = false;
    let mut word = String::new();
    let mut start = 0;
    let mut i = 0;
    while i <= chars.len() {
        let at_end = i == chars.len();
        let ch = if at_end { '\0' } else { chars[i].1 };
        if phase == Phase::Spaces {
            if at_end {
                break;
            }
            if ch.is_whitespace() {
                i += 1;
                continue;
            }
            phase = Phase::Word;
            start = chars[i].0;
        }
        if at_end {
            if blank_ok || !word.is_empty() {
                words.push((start, std::mem::take(&mut word)));
            }
            break;
        }
        if phase == Phase::Word {
            if ch.is_whitespace() {
                phase = Phase::Spaces;
                if blank_ok || !word.is_empty() {
                    words.push((start, std::mem::take(&mut word)));
                }
                word.clear();
                blank_ok = false;
                i += 1;
                continue;
            }
            if ch == '\'' || ch == '"' {
                quote = ch;
                blank_ok = true;
                phase = Phase::Quote;
            }
            let mut c = ch;
            if ch == escape {
                if i + 1 == chars.len() {
                    i += 1;
                    continue;
                }
                word.push(ch);
                i += 1;
                c = chars[i].1;
            }
            word.push(c);
            i += 1;
            continue;
        }
        // Phase::Quote
        if ch == quote {
            phase = Phase::Word;
        }
        let mut c = ch;
        if ch == escape && quote != '\'' {
            if i + 1 == chars.len() {
                phase = Phase::Word;
                i += 1;
                continue;
            }
            word.push(ch);
            i += 1;
            c = chars[i].1;
        }
        word.push(c);
        i += 1;
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(line: &str) -> (Vec<String>, String) {
        let (f, rest) = extract_flags(line, '\\');
        (f.into_iter().map(|(_, s)| s).collect(), line[rest..].to_string())
    }

    fn words(rest: &str) -> Vec<String> {
        parse_words(rest, '\\').into_iter().map(|(_, w)| w).collect()
    }

    #[test]
    fn flags_are_read_until_the_first_plain_word() {
        assert_eq!(flags("--a=1 --b x --c"), (vec!["--a=1".into(), "--b".into()], "x --c".into()));
        assert_eq!(flags("--a=1 -- --b"), (vec!["--a=1".into()], " --b".into()));
        assert_eq!(flags(r#"--m="a b" --n='c'\ d x"#), (vec!["--m=a b".into(), "--n=c d".into()], "x".into()));
        assert_eq!(flags("--x=é y"), (vec!["--x=Ã©".into()], "y".into()));
        assert_eq!(flags("--a --"), (vec!["--a".into()], "".into()));
    }

    #[test]
    fn words_keep_quotes_and_escapes() {
        assert_eq!(words(r#"a="x y" b=c\ d  'e f'"#), vec![r#"a="x y""#, r"b=c\ d", "'e f'"]);
        assert_eq!(words(r"name='a\'b'"), vec![r"name='a\'b'"]);
        assert_eq!(words(r"x\"), vec!["x"]);
        assert_eq!(words(r#""""#), vec![r#""""#]);
    }

    #[test]
    fn ws_split_keeps_offsets() {
        assert_eq!(ws_split("a \t b"), vec![(0, "a".to_string()), (4, "b".to_string())]);
        assert_eq!(split_once_ws("RUN  x y"), ("RUN", Some((5, "x y"))));
    }
}
