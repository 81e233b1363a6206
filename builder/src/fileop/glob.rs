//! Go's `filepath.Match` for one path component: the wildcard syntax of COPY/ADD sources.
//!
//! `*` matches any run of characters, `?` one character, `[...]` a class (`^` negates, ranges
//! `a-z`, `\x` escapes), and `\x` outside a class matches `x`. BuildKit ignores
//! `filepath.ErrBadPattern` when matching (`resolveWildcards`), so a malformed pattern simply
//! matches nothing here.

/// Whether `name` (one component, no `/`) matches `pattern` (one component).
pub(crate) fn matches(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let s: Vec<char> = name.chars().collect();
    match_from(&p, &s).unwrap_or(false)
}

/// Whether a source component contains wildcards, as fsutil's `containsWildcards` decides
/// (a `\` escapes the next character).
pub(crate) fn has_wildcards(component: &str) -> bool {
    let mut chars = component.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                chars.next();
            }
            '*' | '?' | '[' => return true,
            _ => {}
        }
    }
    false
}

/// `None` for a malformed pattern.
fn match_from(p: &[char], s: &[char]) -> Option<bool> {
    let Some(&first) = p.first() else {
        return Some(s.is_empty());
    };
    match first {
        '*' => {
            let rest = &p[p.iter().take_while(|c| **c == '*').count()..];
            for i in 0..=s.len() {
                if match_from(rest, &s[i..])? {
                    return Some(true);
                }
            }
            Some(false)
        }
        '?' => Some(!s.is_empty() && match_from(&p[1..], &s[1..])?),
        '[' => {
            let (hit, used) = class(&p[1..], s.first().copied())?;
            Some(hit && match_from(&p[1 + used..], &s[1..])?)
        }
        '\\' => {
            let lit = *p.get(1)?;
            Some(s.first() == Some(&lit) && match_from(&p[2..], &s[1..])?)
        }
        c => Some(s.first() == Some(&c) && match_from(&p[1..], &s[1..])?),
    }
}

/// Parses a class after its `[`; returns whether `c` is in it and how many pattern characters
/// the class used (through its `]`).
fn class(p: &[char], c: Option<char>) -> Option<(bool, usize)> {
    let mut i = 0;
    let negated = p.first() == Some(&'^');
    if negated {
        i += 1;
    }
    let take = |i: &mut usize| -> Option<char> {
        let ch = *p.get(*i)?;
        if ch == '-' || ch == ']' {
            return None;
        }
        *i += 1;
        if ch == '\\' {
            let e = *p.get(*i)?;
            *i += 1;
            return Some(e);
        }
        Some(ch)
    };
    let mut hit = false;
    let mut first = true;
    loop {
        if !first && p.get(i) == Some(&']') {
            i += 1;
            break;
        }
        first = false;
        let lo = take(&mut i)?;
        let hi = if p.get(i) == Some(&'-') {
            i += 1;
            take(&mut i)?
        } else {
            lo
        };
        if c.is_some_and(|c| lo <= c && c <= hi) {
            hit = true;
        }
    }
    // An empty name never matches a class (it needs one character).
    Some((c.is_some() && hit != negated, i))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_filepath_match_cases() {
        // Cases from Go's path/filepath match_test.go (single component).
        let cases = [
            ("abc", "abc", true),
            ("*", "abc", true),
            ("*c", "abc", true),
            ("a*", "a", true),
            ("a*", "abc", true),
            ("a*b*c*d*e*", "axbxcxdxexxx", true),
            ("ab[c]", "abc", true),
            ("ab[b-d]", "abc", true),
            ("ab[e-g]", "abc", false),
            ("ab[^c]", "abc", false),
            ("ab[^b-d]", "abc", false),
            ("ab[^e-g]", "abc", true),
            ("a\\*b", "a*b", true),
            ("a\\*b", "ab", false),
            ("a?b", "a☺b", true),
            ("a[^a]b", "a☺b", true),
            ("a???b", "a☺b", false),
            ("[a-ζ]*", "α", true),
            ("*[a-ζ]", "A", false),
            ("[\\-]", "-", true),
            ("[x\\-]", "z", false),
            ("[", "a", false),
            ("[^", "a", false),
            ("a[", "a", false),
            ("*x", "xxx", true),
            (".*", ".hidden", true),
            ("*", ".hidden", true),
        ];
        for (p, s, want) in cases {
            assert_eq!(matches(p, s), want, "{p:?} vs {s:?}");
        }
        assert!(has_wildcards("f*.go") && has_wildcards("[ab]") && !has_wildcards("a\\*b") && !has_wildcards("plain"));
    }
}
