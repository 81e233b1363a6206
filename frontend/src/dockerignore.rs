//! `.dockerignore` files with moby/patternmatcher semantics.
//!
//! Patterns are anchored at the context root (unlike `.gitignore`), `**` spans directories,
//! `!` re-includes, the last matching line wins, and a pattern that matches a directory
//! excludes everything below it. Reading follows `ignorefile.ReadAll` (BOM, `#` comments in
//! column 0, trimming, `filepath.Clean`, one leading `/` dropped) and matching follows
//! `PatternMatcher.MatchesOrParentMatches`. [`find_ignore_file`] picks
//! `<Dockerfile>.dockerignore` over the context's `.dockerignore`, as BuildKit does.

use std::path::{Path, PathBuf};

/// A `.dockerignore` that cannot be used; the build must fail.
#[derive(Debug, thiserror::Error)]
pub enum IgnoreError {
    /// A pattern line is malformed (Go's `filepath.ErrBadPattern` and friends).
    #[error("{file}: invalid pattern {pattern:?}: {reason}")]
    BadPattern {
        /// The ignore file the pattern came from (or `.dockerignore` for in-memory text).
        file: String,
        /// The pattern as cleaned.
        pattern: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The ignore file exists but could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file that failed.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// One element of a compiled pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    /// A literal character.
    Lit(char),
    /// `?`: one character other than `/`.
    One,
    /// `*`: a run of characters other than `/`.
    Star,
    /// `**/` not at the end: zero or more whole components, i.e. `(.*/)?`.
    AnyDirs,
    /// `**` at the end: anything (Go's `.*`, so no newline).
    Rest,
    /// `[...]`: a character class; `negated` classes can match `/`.
    Class { negated: bool, ranges: Vec<(char, char)> },
}

/// How a pattern is tested against a path, mirroring patternmatcher's short cuts.
#[derive(Debug, Clone)]
enum Matcher {
    Exact,
    Prefix(String),
    Suffix(String),
    Tokens(Vec<Tok>),
}

/// One cleaned pattern line.
#[derive(Debug, Clone)]
struct Pattern {
    text: String,
    exception: bool,
    matcher: Matcher,
}

/// A compiled `.dockerignore`: decides which context paths COPY/ADD cannot see.
#[derive(Debug, Clone, Default)]
pub struct DockerIgnore {
    patterns: Vec<Pattern>,
}

impl DockerIgnore {
    /// Parses the text of an ignore file; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Self, IgnoreError> {
        Self::from_patterns(read_lines(text), file)
    }

    /// Compiles already-read patterns (`!` prefix for exceptions), like `patternmatcher.New`.
    pub fn from_patterns<I, S>(patterns: I, file: &str) -> Result<Self, IgnoreError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut out = Vec::new();
        for p in patterns {
            let p = p.as_ref().trim();
            if p.is_empty() {
                continue;
            }
            let p = clean(p);
            let bad = |pattern: &str, reason: &str| IgnoreError::BadPattern {
                file: file.to_owned(),
                pattern: pattern.to_owned(),
                reason: reason.to_owned(),
            };
            let (exception, text) = match p.strip_prefix('!') {
                Some("") => return Err(bad("!", "illegal exclusion pattern: \"!\"")),
                Some(rest) => (true, rest.to_owned()),
                None => (false, p),
            };
            validate_glob(&text).map_err(|r| bad(&text, r))?;
            let matcher = compile(&text).map_err(|r| bad(&text, r))?;
            out.push(Pattern { text, exception, matcher });
        }
        Ok(DockerIgnore { patterns: out })
    }

    /// True when the file holds no pattern at all.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// The cleaned patterns, `!` included for exceptions, in file order.
    pub fn patterns(&self) -> impl Iterator<Item = String> + '_ {
        self.patterns.iter().map(|p| if p.exception { format!("!{}", p.text) } else { p.text.clone() })
    }

    /// Whether `rel_path` (relative to the context root, `/`-separated) is hidden from COPY/ADD.
    /// The root itself (`""` or `.`) is never excluded.
    pub fn is_excluded(&self, rel_path: &str) -> bool {
        let path = clean(rel_path.trim_start_matches('/'));
        if path == "." || path == "/" {
            return false;
        }
        let ancestors: Vec<&str> = path.match_indices('/').map(|(i, _)| &path[..i]).collect();
        let mut excluded = false;
        for p in &self.patterns {
            if p.exception != excluded {
                continue;
            }
            if p.matches(&path) || ancestors.iter().any(|a| p.matches(a)) {
                excluded = !p.exception;
            }
        }
        excluded
    }

    /// Whether a walker may skip directory `rel_dir` entirely: it is excluded and no exception
    /// can re-include anything below it. Sound but conservative for wildcard exceptions.
    pub fn can_skip_dir(&self, rel_dir: &str) -> bool {
        if !self.is_excluded(rel_dir) {
            return false;
        }
        let dir = clean(rel_dir.trim_start_matches('/'));
        let under = format!("{dir}/");
        // Every path a pattern matches starts with its literal prefix, so an exception whose
        // prefix is incompatible with `dir/` can never match something below `dir`.
        !self.patterns.iter().filter(|p| p.exception).any(|p| {
            let prefix = literal_prefix(&p.text);
            prefix.starts_with(&under) || under.starts_with(&prefix)
        })
    }
}

impl Pattern {
    fn matches(&self, path: &str) -> bool {
        match &self.matcher {
            Matcher::Exact => path == self.text,
            Matcher::Prefix(p) => path.starts_with(p.as_str()),
            Matcher::Suffix(s) => path.ends_with(s.as_str()) || s.strip_prefix('/') == Some(path),
            Matcher::Tokens(toks) => {
                let chars: Vec<char> = path.chars().collect();
                match_tokens(toks, &chars)
            }
        }
    }
}

/// The characters before the first wildcard, with escapes resolved.
fn literal_prefix(pattern: &str) -> String {
    let mut out = String::new();
    let mut it = pattern.chars();
    while let Some(c) = it.next() {
        match c {
            '*' | '?' | '[' => break,
            '\\' => match it.next() {
                Some(e) => out.push(e),
                None => break,
            },
            c => out.push(c),
        }
    }
    out
}

/// `ignorefile.ReadAll`: the pattern lines of a file, BOM, comments and blanks removed.
fn read_lines(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = if i == 0 { line.strip_prefix('\u{feff}').unwrap_or(line) } else { line };
        // Only a `#` in the first column makes a comment.
        if line.starts_with('#') {
            continue;
        }
        let mut p = line.trim();
        if p.is_empty() {
            continue;
        }
        let exception = p.starts_with('!');
        if exception {
            p = p[1..].trim();
        }
        let mut p = if p.is_empty() { String::new() } else { clean(p) };
        if p.len() > 1 && p.starts_with('/') {
            p.remove(0);
        }
        out.push(if exception { format!("!{p}") } else { p });
    }
    out
}

/// Go's `filepath.Clean` for `/`-separated paths.
pub fn clean(path: &str) -> String {
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for comp in path.split('/') {
        match comp {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|p| *p != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            c => parts.push(c),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_owned(),
        (false, false) => joined,
    }
}

/// The syntax checks of Go's `filepath.Match`: classes must be closed and non-empty, ranges
/// well-formed, and no trailing `\`.
fn validate_glob(pattern: &str) -> Result<(), &'static str> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut i = 0;
    let esc = |i: &mut usize| -> Result<char, &'static str> {
        match chars.get(*i) {
            None | Some('-' | ']') => Err("syntax error in pattern"),
            Some('\\') => {
                *i += 1;
                let c = chars.get(*i).copied().ok_or("syntax error in pattern")?;
                *i += 1;
                Ok(c)
            }
            Some(c) => {
                *i += 1;
                Ok(*c)
            }
        }
    };
    while i < chars.len() {
        match chars[i] {
            '\\' => {
                if i + 1 >= chars.len() {
                    return Err("syntax error in pattern (trailing backslash)");
                }
                i += 2;
            }
            '[' => {
                i += 1;
                if chars.get(i) == Some(&'^') {
                    i += 1;
                }
                let mut first = true;
                loop {
                    if !first && chars.get(i) == Some(&']') {
                        i += 1;
                        break;
                    }
                    first = false;
                    esc(&mut i)?;
                    if chars.get(i) == Some(&'-') {
                        i += 1;
                        esc(&mut i)?;
                    }
                }
            }
            _ => i += 1,
        }
    }
    Ok(())
}

/// Compiles a cleaned pattern the way patternmatcher's `compile` does, short cuts included.
fn compile(pattern: &str) -> Result<Matcher, &'static str> {
    #[derive(PartialEq)]
    enum Kind {
        Exact,
        Prefix,
        Suffix,
        Regexp,
    }
    let chars: Vec<char> = pattern.chars().collect();
    let mut toks = Vec::new();
    let mut kind = Kind::Exact;
    let mut i = 0;
    let mut step = 0;
    while i < chars.len() {
        let ch = chars[i];
        i += 1;
        match ch {
            '*' if chars.get(i) == Some(&'*') => {
                i += 1;
                if chars.get(i) == Some(&'/') {
                    i += 1;
                }
                if i >= chars.len() {
                    if kind == Kind::Exact {
                        kind = Kind::Prefix;
                    } else {
                        toks.push(Tok::Rest);
                        kind = Kind::Regexp;
                    }
                } else {
                    toks.push(Tok::AnyDirs);
                    kind = Kind::Regexp;
                }
                if step == 0 {
                    kind = Kind::Suffix;
                }
            }
            '*' => {
                toks.push(Tok::Star);
                kind = Kind::Regexp;
            }
            '?' => {
                toks.push(Tok::One);
                kind = Kind::Regexp;
            }
            '\\' => match chars.get(i) {
                Some(&c) => {
                    i += 1;
                    toks.push(Tok::Lit(c));
                    kind = Kind::Regexp;
                }
                None => toks.push(Tok::Lit('\\')),
            },
            '[' => {
                let (class, end) = parse_class(&chars, i)?;
                toks.push(class);
                i = end;
                kind = Kind::Regexp;
            }
            ']' => {
                toks.push(Tok::Lit(']'));
                kind = Kind::Regexp;
            }
            c => toks.push(Tok::Lit(c)),
        }
        step += 1;
    }
    Ok(match kind {
        Kind::Exact => Matcher::Exact,
        Kind::Prefix => Matcher::Prefix(pattern[..pattern.len() - 2].to_owned()),
        Kind::Suffix => Matcher::Suffix(pattern[2..].to_owned()),
        Kind::Regexp => Matcher::Tokens(toks),
    })
}

/// Parses a class starting after `[` with Go regexp rules (`^` negates, `!` is literal, a `]`
/// first is literal, `\x` is `x`); returns it and the index after the closing `]`.
fn parse_class(chars: &[char], mut i: usize) -> Result<(Tok, usize), &'static str> {
    let negated = chars.get(i) == Some(&'^');
    if negated {
        i += 1;
    }
    let mut ranges = Vec::new();
    let take = |i: &mut usize| -> Option<char> {
        let c = *chars.get(*i)?;
        *i += 1;
        if c == '\\' {
            let e = *chars.get(*i)?;
            *i += 1;
            return Some(e);
        }
        Some(c)
    };
    let mut first = true;
    loop {
        match chars.get(i) {
            None => return Err("missing closing ]"),
            Some(']') if !first => return Ok((Tok::Class { negated, ranges }, i + 1)),
            _ => {}
        }
        first = false;
        let lo = take(&mut i).ok_or("missing closing ]")?;
        let hi = if chars.get(i) == Some(&'-') && chars.get(i + 1).is_some_and(|c| *c != ']') {
            i += 1;
            take(&mut i).ok_or("missing closing ]")?
        } else {
            lo
        };
        if hi < lo {
            return Err("invalid character class range");
        }
        ranges.push((lo, hi));
    }
}

/// Whether `toks` matches the whole of `s`. Dynamic programming over (token, position), so a
/// pattern with many stars cannot make matching exponential.
fn match_tokens(toks: &[Tok], s: &[char]) -> bool {
    let n = s.len();
    // `next[i]`: the tokens after the current one match `s[i..]`.
    let mut next: Vec<bool> = (0..=n).map(|i| i == n).collect();
    for tok in toks.iter().rev() {
        let mut cur = vec![false; n + 1];
        for i in (0..=n).rev() {
            let c = s.get(i).copied();
            cur[i] = match tok {
                Tok::Lit(l) => c == Some(*l) && next[i + 1],
                Tok::One => c.is_some_and(|c| c != '/') && next[i + 1],
                Tok::Class { negated, ranges } => {
                    c.is_some_and(|c| ranges.iter().any(|(lo, hi)| *lo <= c && c <= *hi) != *negated) && next[i + 1]
                }
                // Zero characters, or one more (not `/`) and still in the star.
                Tok::Star => next[i] || (c.is_some_and(|c| c != '/') && cur[i + 1]),
                // Go's `.*`: anything but a newline.
                Tok::Rest => next[i] || (c.is_some_and(|c| c != '\n') && cur[i + 1]),
                // `(.*/)?`: nothing, or a run without newline that ends in `/`.
                Tok::AnyDirs => next[i] || any_dirs(s, i, &next),
            };
        }
        next = cur;
    }
    next[0]
}

/// Whether some `j >= i` has `s[j] == '/'`, no newline in `s[i..j]`, and `after[j + 1]`.
fn any_dirs(s: &[char], i: usize, after: &[bool]) -> bool {
    s[i..].iter().take_while(|c| **c != '\n').enumerate().any(|(k, c)| *c == '/' && after[i + k + 1])
}

/// Finds and reads the ignore file BuildKit would use: `<dockerfile>.dockerignore` next to the
/// Dockerfile if it exists, else `.dockerignore` at the context root. `dockerfile` is `None`
/// for a Dockerfile read from standard input, which has no file beside it. Returns the file
/// used, or `None` (nothing ignored) when neither exists.
pub fn find_ignore_file(
    context_dir: &Path,
    dockerfile: Option<&Path>,
) -> Result<Option<(PathBuf, DockerIgnore)>, IgnoreError> {
    let specific = dockerfile.map(|d| {
        let mut name = d.as_os_str().to_owned();
        name.push(".dockerignore");
        PathBuf::from(name)
    });
    for candidate in specific.into_iter().chain([context_dir.join(".dockerignore")]) {
        match std::fs::read_to_string(&candidate) {
            Ok(text) => {
                let ignore = DockerIgnore::parse(&text, &candidate.display().to_string())?;
                return Ok(Some((candidate, ignore)));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => return Err(IgnoreError::Read { path: candidate, source }),
        }
    }
    Ok(None)
}
