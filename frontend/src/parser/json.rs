//! The exec-form test: is the rest of a line a JSON array of strings, by Go's `encoding/json`?
//!
//! BuildKit unmarshals into `[]any`, so the decision has three outcomes that a generic JSON
//! library does not reproduce: syntax Go rejects (and numbers out of `float64` range, which Go
//! reports as an unmarshal error) fall back to the shell form; a valid array with a non-string
//! element is an error; otherwise the decoded strings (lone surrogates become U+FFFD, as in Go).

/// Go's `encoding/json` nesting limit; deeper input is a syntax error there.
const MAX_DEPTH: usize = 10_000;

/// What the rest of a line is, as far as the exec form is concerned.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum JsonArray {
    /// Not JSON (or not an array): use the shell form.
    NotJson,
    /// A JSON array with an element that is not a string.
    NotStrings,
    /// A JSON array of strings.
    Strings(Vec<String>),
}

/// Classifies `rest` (leading Unicode white space ignored, like BuildKit's `parseJSON`).
pub(crate) fn parse_json_array(rest: &str) -> JsonArray {
    let rest = rest.trim_start_matches(char::is_whitespace);
    if !rest.starts_with('[') {
        return JsonArray::NotJson;
    }
    let mut p = Parser { s: rest.as_bytes(), i: 0 };
    match p.document() {
        Some(Some(strings)) => JsonArray::Strings(strings),
        Some(None) => JsonArray::NotStrings,
        None => JsonArray::NotJson,
    }
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

/// A container being parsed.
#[derive(Clone, Copy, PartialEq)]
enum Frame {
    Array,
    Object,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    /// The whole input: `None` when it is not valid JSON for Go, `Some(None)` when a top-level
    /// element is not a string, else the strings.
    fn document(&mut self) -> Option<Option<Vec<String>>> {
        // The top-level array is tracked here; anything nested is only validated.
        self.i += 1; // '['
        let mut strings = Some(Vec::new());
        self.ws();
        if !self.eat(b']') {
            loop {
                self.ws();
                if self.peek() == Some(b'"') {
                    let s = self.string()?;
                    if let Some(v) = strings.as_mut() {
                        v.push(s);
                    }
                } else {
                    self.value()?;
                    strings = None;
                }
                self.ws();
                if self.eat(b',') {
                    continue;
                }
                if self.eat(b']') {
                    break;
                }
                return None;
            }
        }
        self.ws();
        if self.i != self.s.len() {
            return None;
        }
        Some(strings)
    }

    /// Validates one value of any kind, iteratively so deep nesting cannot overflow the stack.
    fn value(&mut self) -> Option<()> {
        let mut stack: Vec<Frame> = Vec::new();
        loop {
            // Expect a value.
            self.ws();
            match self.peek()? {
                b'[' | b'{' => {
                    let frame = if self.peek() == Some(b'[') { Frame::Array } else { Frame::Object };
                    self.i += 1;
                    // One more level than Go's limit counts the top-level array too.
                    if stack.len() + 2 > MAX_DEPTH {
                        return None;
                    }
                    stack.push(frame);
                    self.ws();
                    let close = if frame == Frame::Array { b']' } else { b'}' };
                    if self.eat(close) {
                        stack.pop();
                    } else {
                        if frame == Frame::Object {
                            self.key()?;
                        }
                        continue;
                    }
                }
                b'"' => {
                    self.string()?;
                }
                b't' => self.literal(b"true")?,
                b'f' => self.literal(b"false")?,
                b'n' => self.literal(b"null")?,
                _ => self.number()?,
            }
            // After a value: close containers or move to the next element.
            loop {
                let Some(&frame) = stack.last() else { return Some(()) };
                self.ws();
                if self.eat(b',') {
                    if frame == Frame::Object {
                        self.ws();
                        self.key()?;
                    }
                    break;
                }
                let close = if frame == Frame::Array { b']' } else { b'}' };
                if !self.eat(close) {
                    return None;
                }
                stack.pop();
            }
        }
    }

    fn key(&mut self) -> Option<()> {
        if self.peek() != Some(b'"') {
            return None;
        }
        self.string()?;
        self.ws();
        self.eat(b':').then_some(())
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        if self.s[self.i..].starts_with(word) {
            self.i += word.len();
            Some(())
        } else {
            None
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.i;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.i += 1;
        }
        self.i - start
    }

    fn number(&mut self) -> Option<()> {
        let start = self.i;
        self.eat(b'-');
        match self.peek()? {
            b'0' => self.i += 1,
            b'1'..=b'9' => {
                self.digits();
            }
            _ => return None,
        }
        if self.eat(b'.') && self.digits() == 0 {
            return None;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            if !self.eat(b'+') {
                self.eat(b'-');
            }
            if self.digits() == 0 {
                return None;
            }
        }
        // Go decodes numbers into float64 and fails (falling back to shell form) on overflow.
        let text = std::str::from_utf8(&self.s[start..self.i]).ok()?;
        let v: f64 = text.parse().ok()?;
        v.is_finite().then_some(())
    }

    fn hex4(&mut self) -> Option<u32> {
        let h = self.s.get(self.i..self.i + 4)?;
        let h = std::str::from_utf8(h).ok()?;
        if !h.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        self.i += 4;
        u32::from_str_radix(h, 16).ok()
    }

    fn string(&mut self) -> Option<String> {
        self.i += 1; // '"'
        let mut out = String::new();
        loop {
            let start = self.i;
            while let Some(b) = self.peek() {
                if b == b'"' || b == b'\\' || b < 0x20 {
                    break;
                }
                self.i += 1;
            }
            out.push_str(std::str::from_utf8(&self.s[start..self.i]).ok()?);
            match self.peek()? {
                b'"' => {
                    self.i += 1;
                    return Some(out);
                }
                b'\\' => {
                    self.i += 1;
                    let e = self.peek()?;
                    self.i += 1;
                    match e {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => {
                            let u = self.hex4()?;
                            out.push(self.surrogate_aware(u));
                        }
                        _ => return None,
                    }
                }
                _ => return None, // control character
            }
        }
    }

    /// Combines a UTF-16 surrogate pair like Go; a lone surrogate becomes U+FFFD.
    fn surrogate_aware(&mut self, u: u32) -> char {
        if (0xd800..0xdc00).contains(&u) && self.s[self.i..].starts_with(b"\\u") {
            let save = self.i;
            self.i += 2;
            if let Some(lo) = self.hex4() {
                if (0xdc00..0xe000).contains(&lo) {
                    let c = 0x10000 + ((u - 0xd800) << 10) + (lo - 0xdc00);
                    return char::from_u32(c).unwrap_or('\u{fffd}');
                }
            }
            // Go consumes only the first escape here; the second is decoded on its own.
            self.i = save;
        }
        char::from_u32(u).unwrap_or('\u{fffd}')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> JsonArray {
        JsonArray::Strings(v.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn classifies_like_go() {
        assert_eq!(parse_json_array(r#"[ "a", "b" ]"#), strings(&["a", "b"]));
        assert_eq!(parse_json_array(" [ ]"), strings(&[]));
        assert_eq!(
            parse_json_array(r#"["\/x\u0000", "\ud800", "\ud83d\ude00"]"#),
            strings(&["/x\0", "\u{fffd}", "😀"])
        );
        assert_eq!(parse_json_array(r#"["a", 1]"#), JsonArray::NotStrings);
        assert_eq!(parse_json_array(r#"["a", ["b"]]"#), JsonArray::NotStrings);
        assert_eq!(parse_json_array(r#"["a", {"k": [null, true]}]"#), JsonArray::NotStrings);
        assert_eq!(parse_json_array(r#"["a", 1e400]"#), JsonArray::NotJson);
        assert_eq!(parse_json_array(r#"['a']"#), JsonArray::NotJson);
        assert_eq!(parse_json_array(r#"["a",]"#), JsonArray::NotJson);
        assert_eq!(parse_json_array(r#"["a"] x"#), JsonArray::NotJson);
        assert_eq!(parse_json_array(r#"["a"#), JsonArray::NotJson);
        assert_eq!(parse_json_array("[\"a\tb\"]"), JsonArray::NotJson);
        assert_eq!(parse_json_array(r#"[01]"#), JsonArray::NotJson);
        assert_eq!(parse_json_array(r#"[{"a" 1}]"#), JsonArray::NotJson);
        assert_eq!(parse_json_array("x"), JsonArray::NotJson);
    }

    #[test]
    fn deep_nesting_neither_overflows_nor_passes_go_limit() {
        let deep = format!("[{}{}]", "[".repeat(20_000), "]".repeat(20_000));
        assert_eq!(parse_json_array(&deep), JsonArray::NotJson);
        let ok = format!("[{}{}]", "[".repeat(100), "]".repeat(100));
        assert_eq!(parse_json_array(&ok), JsonArray::NotStrings);
    }
}
