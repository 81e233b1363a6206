//! `COPY --chmod`: an octal mode or a symbolic mode (`u+x`, `go-w`, `a=r,u+w`, `+X`), as
//! BuildKit parses it (`strconv.ParseUint(.., 8, ..)`, else github.com/tonistiigi/dchapes-mode,
//! chmod(1) syntax without a umask).

use super::FileOpError;

/// A parsed `--chmod`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Chmod {
    /// The permission bits (and setuid/setgid/sticky) replace the source's.
    Octal(u32),
    /// Clauses applied to the source's mode.
    Symbolic(Vec<Clause>),
}

/// One `who op perms` clause of a symbolic mode; several ops may follow one `who`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Clause {
    /// The bits of u/g/o the clause touches (`a` or nothing = all), as a mask over 0o7777.
    who: u32,
    ops: Vec<(char, Perms)>,
}

/// What a clause operator sets.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Perms {
    /// `rwxXst` letters.
    Letters(String),
    /// `u`, `g` or `o`: copy that class's current bits.
    Copy(char),
}

impl Chmod {
    /// Parses `text`; errors like BuildKit's frontend for an invalid value.
    pub(crate) fn parse(text: &str) -> Result<Chmod, FileOpError> {
        let invalid = || FileOpError::InvalidChmod(text.to_owned());
        if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
            return match u32::from_str_radix(text, 8) {
                Ok(m) if m <= 0o7777 => Ok(Chmod::Octal(m)),
                _ => Err(invalid()),
            };
        }
        let mut clauses = Vec::new();
        for raw in text.split(',') {
            let who_len = raw.find(['+', '-', '=']).ok_or_else(invalid)?;
            let mut who = 0;
            for c in raw[..who_len].chars() {
                who |= match c {
                    'u' => 0o4700,
                    'g' => 0o2070,
                    'o' => 0o1007,
                    'a' => 0o7777,
                    _ => return Err(invalid()),
                };
            }
            if who == 0 {
                who = 0o7777;
            }
            let mut ops = Vec::new();
            let rest = &raw[who_len..];
            let mut i = 0;
            let bytes = rest.as_bytes();
            while i < bytes.len() {
                let op = bytes[i] as char;
                if !matches!(op, '+' | '-' | '=') {
                    return Err(invalid());
                }
                let start = i + 1;
                let mut end = start;
                while end < bytes.len() && !matches!(bytes[end], b'+' | b'-' | b'=') {
                    end += 1;
                }
                let perms = &rest[start..end];
                let perms = match perms {
                    "u" | "g" | "o" => Perms::Copy(perms.chars().next().unwrap_or('u')),
                    p if p.chars().all(|c| "rwxXst".contains(c)) => Perms::Letters(p.to_owned()),
                    _ => return Err(invalid()),
                };
                ops.push((op, perms));
                i = end;
            }
            clauses.push(Clause { who, ops });
        }
        Ok(Chmod::Symbolic(clauses))
    }

    /// The new permission bits (0o7777 part) for an entry with `mode` (its full st_mode).
    pub(crate) fn apply(&self, mode: u32, is_dir: bool) -> u32 {
        let mut bits = mode & 0o7777;
        match self {
            Chmod::Octal(m) => *m,
            Chmod::Symbolic(clauses) => {
                for clause in clauses {
                    for (op, perms) in &clause.ops {
                        let set = match perms {
                            Perms::Letters(letters) => {
                                let mut set = 0;
                                for c in letters.chars() {
                                    set |= match c {
                                        'r' => 0o444,
                                        'w' => 0o222,
                                        'x' => 0o111,
                                        'X' if is_dir || bits & 0o111 != 0 => 0o111,
                                        's' => 0o6000,
                                        't' => 0o1000,
                                        _ => 0,
                                    };
                                }
                                set
                            }
                            Perms::Copy(from) => {
                                let three = match from {
                                    'u' => (bits >> 6) & 7,
                                    'g' => (bits >> 3) & 7,
                                    _ => bits & 7,
                                };
                                three * 0o111
                            }
                        } & clause.who;
                        bits = match op {
                            '+' => bits | set,
                            '-' => bits & !set,
                            // `=` clears the who's rwx bits (and its special bits) before setting.
                            _ => (bits & !clause.who) | set,
                        };
                    }
                }
                bits
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sym(text: &str, mode: u32, dir: bool) -> u32 {
        Chmod::parse(text).unwrap().apply(mode, dir)
    }

    #[test]
    fn octal_and_symbolic() {
        assert_eq!(Chmod::parse("755").unwrap(), Chmod::Octal(0o755));
        assert_eq!(Chmod::parse("04755").unwrap().apply(0o100600, false), 0o4755);
        assert!(Chmod::parse("10000").is_err());
        assert!(Chmod::parse("64a").is_err());
        assert!(Chmod::parse("u+q").is_err());
        assert_eq!(sym("u+x", 0o644, false), 0o744);
        assert_eq!(sym("go-w", 0o666, false), 0o644);
        assert_eq!(sym("a=r", 0o755, false), 0o444);
        assert_eq!(sym("+x", 0o600, false), 0o711);
        assert_eq!(sym("a+X", 0o600, false), 0o600);
        assert_eq!(sym("a+X", 0o600, true), 0o711);
        assert_eq!(sym("u=rwx,g=rx,o=", 0o777, false), 0o750);
        assert_eq!(sym("g=u", 0o640, false), 0o660);
        assert_eq!(sym("u+s", 0o755, false), 0o4755);
        assert_eq!(sym("o+t", 0o777, true), 0o1777);
        assert_eq!(sym("u+x-w", 0o644, false), 0o544);
    }
}
