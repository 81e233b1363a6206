//! Random words built from the lexer's special characters must never panic or hang, and
//! `process_word` and `process_words` must agree on whether a word is valid.

use std::collections::BTreeMap;

use kiln_frontend::shell::Lexer;

/// A small deterministic generator (64-bit LCG), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> usize {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) as usize
    }
}

#[test]
fn random_words_never_panic() {
    let alphabet: Vec<char> = "${}:-+?#%/\\'\"` \tabAB_01*\n.é".chars().collect();
    let env: BTreeMap<String, String> = [("a", "x*y/z"), ("A", ""), ("b", "a b  c"), ("_", "\\*")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut rng = Rng(42);
    for escape in ['\\', '`'] {
        let lex = Lexer::new(escape);
        for _ in 0..100_000 {
            let len = rng.next() % 24;
            let word: String = (0..len).map(|_| alphabet[rng.next() % alphabet.len()]).collect();
            let one = lex.process_word(&word, &env);
            let many = lex.process_words(&word, &env);
            assert_eq!(one.is_ok(), many.is_ok(), "{word:?}");
        }
    }
}

#[test]
fn long_values_stay_fast() {
    let value = "ab".repeat(5_000);
    let env: BTreeMap<String, String> = [("V".to_string(), value.clone())].into();
    let lex = Lexer::new('\\');
    assert_eq!(lex.process_word("${V##*a}", &env).unwrap(), "b");
    assert_eq!(lex.process_word("${V%%b*}", &env).unwrap(), "a");
    assert_eq!(lex.process_word("${V//ab/}", &env).unwrap(), "");
}
