//! Fuzzes the shell-word expander: any word, with either escape character and every lexer
//! option, must expand or fail with an error, never panic.

#![no_main]

use std::collections::BTreeMap;

use kiln_frontend::shell::Lexer;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&opts, rest)) = data.split_first() else { return };
    let Ok(word) = std::str::from_utf8(rest) else { return };
    let mut lexer = Lexer::new(if opts & 1 == 0 { '\\' } else { '`' });
    lexer.raw_quotes = opts & 2 != 0;
    lexer.raw_escapes = opts & 4 != 0;
    lexer.skip_process_quotes = opts & 8 != 0;
    lexer.skip_unset_env = opts & 16 != 0;
    let env: BTreeMap<String, String> = [("A", "a b"), ("EMPTY", ""), ("P", "/usr/local/bin"), ("K", "한국어")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let _ = lexer.process(word, &env);
});
