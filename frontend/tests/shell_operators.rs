//! Expansion operators the upstream data corpora do not cover (`#`, `##`, `%`, `%%`, `/`, `//`,
//! `?`, `:?`), with expectations from BuildKit's documented behaviour and its `lex_test.go` tables.

use std::collections::BTreeMap;

use kiln_frontend::shell::Lexer;

/// input, environment, expected output
type Case = (&'static str, &'static [(&'static str, &'static str)], &'static str);

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn word(input: &str, pairs: &[(&str, &str)]) -> Result<String, String> {
    Lexer::new('\\').process_word(input, &env(pairs)).map_err(|e| e.to_string())
}

#[test]
fn prefix_and_suffix_removal() {
    let cases: &[Case] = &[
        (r"${FOO#()[]{\}^$.\*\?|\\}", &[("FOO", r"()[]{}^$.*?|\x")], "x"),
        (r"${FOO%%\**}", &[("FOO", "xx**")], "xx"),
        ("${FOO#*x*y}", &[("FOO", "xxyy")], "y"),
        ("${FOO#*}", &[("FOO", "xxyy")], "xxyy"),
        ("${FOO#$BAR}", &[("FOO", "xxyy"), ("BAR", "x")], "xyy"),
        ("${FOO#$BAR}", &[("FOO", "xxyy"), ("BAR", "")], "xxyy"),
        ("${FOO#}", &[("FOO", "xxyy")], "xxyy"),
        ("${FOO##*x}", &[("FOO", "xxyy")], "yy"),
        ("${FOO##}", &[("FOO", "xxyy")], "xxyy"),
        (r"${FOO#?\?}", &[("FOO", "???y")], "?y"),
        ("${ABC:-.}${FOO%x}${ABC:-.}", &[("FOO", "xxyy")], ".xxyy."),
        (r"${FOO%%\**\*}", &[("FOO", "a***yy*")], "a"),
        ("${FOO%}", &[("FOO", "xxyy")], "xxyy"),
        ("${FOO%%$BAR}", &[("FOO", "xxyy"), ("BAR", "")], "xxyy"),
        ("${FOO%.*}", &[("FOO", "archive.tar.gz")], "archive.tar"),
        ("${FOO%%.*}", &[("FOO", "archive.tar.gz")], "archive"),
        ("${FOO#*/}", &[("FOO", "a/b/c")], "b/c"),
        ("${FOO##*/}", &[("FOO", "a/b/c")], "c"),
        ("${UNSET#x}", &[], ""),
    ];
    for (input, pairs, expected) in cases {
        assert_eq!(word(input, pairs).as_deref(), Ok(*expected), "{input}");
    }
}

#[test]
fn substitution() {
    let cases: &[Case] = &[
        (
            "${FOO/$NEEDLE/.} - ${FOO//$NEEDLE/.}",
            &[("FOO", "/foo*/*/*.txt"), ("NEEDLE", r"\*/")],
            "/foo.*/*.txt - /foo..*.txt",
        ),
        (
            "${FOO/$NEEDLE/} - ${FOO//$NEEDLE/}",
            &[("FOO", "/tmp/tmp/bar.txt"), ("NEEDLE", "/tmp")],
            "/tmp/bar.txt - /bar.txt",
        ),
        (
            "${FOO/$NEEDLE/$REPLACEMENT} - ${FOO//$NEEDLE/$REPLACEMENT}",
            &[("FOO", "/a/foo/b/c.txt"), ("NEEDLE", "/?/"), ("REPLACEMENT", "/")],
            "/foo/b/c.txt - /foo/c.txt",
        ),
        (
            "${FOO/$NEEDLE/$REPLACEMENT}",
            &[("FOO", "http://google.de"), ("NEEDLE", "http://"), ("REPLACEMENT", "https://")],
            "https://google.de",
        ),
        (r"${FOO//\//\/}", &[("FOO", "/tmp/foo.txt")], r"\/tmp\/foo.txt"),
        ("${FOO/$BAR/ww}", &[("FOO", "xxyy"), ("BAR", "")], "wwxxyy"),
        ("${FOO///}", &[("FOO", "xxyy")], "xxyy"),
        ("${FOO///}", &[], ""),
        ("${FOO/x*/z}", &[("FOO", "axbxc")], "az"),
        ("${FOO//x/-}", &[("FOO", "axbxc")], "a-b-c"),
    ];
    for (input, pairs, expected) in cases {
        assert_eq!(word(input, pairs).as_deref(), Ok(*expected), "{input}");
    }
    for bad in ["${FOO//ww}", "${FOO//}", r"${FOO/\x/y}"] {
        assert!(word(bad, &[("FOO", "xxyy")]).is_err(), "{bad} must fail");
    }
}

#[test]
fn mandatory_variables() {
    let set = [("VAR", "plain"), ("ARG", "x")];
    let empty = [("VAR", ""), ("ARG", "x")];
    let unset = [("ARG", "x")];
    assert_eq!(word("${VAR:?message here$ARG}", &set).as_deref(), Ok("plain"));
    assert_eq!(
        word("${VAR:?message here$ARG}", &empty),
        Err(r#"failed to process "${VAR:?message here$ARG}": VAR: message herex"#.to_owned())
    );
    assert!(word("${VAR:?message here$ARG}", &unset).unwrap_err().ends_with("VAR: message herex"));
    assert_eq!(word("${VAR?message here$ARG}", &set).as_deref(), Ok("plain"));
    assert_eq!(word("${VAR?message here$ARG}", &empty).as_deref(), Ok(""));
    assert!(word("${VAR?message here$ARG}", &unset).unwrap_err().ends_with("VAR: message herex"));
    assert!(word("${VAR?}", &unset).unwrap_err().ends_with("VAR: is not allowed to be unset"));
    assert!(word("${VAR:?}", &empty).unwrap_err().ends_with("VAR: is not allowed to be empty"));
    for bad in ["${FOO=aaa}", "${FOO=:aaa}", "${FOO=}"] {
        assert!(word(bad, &[("FOO", "xxx")]).unwrap_err().contains("unsupported modifier (=)"), "{bad}");
    }
}

#[test]
fn defaults_alternatives_and_used_names() {
    let pairs = [("FOO", "xxx"), ("BAR", "")];
    assert_eq!(word("${FOO-aaa} ${BAR-bbb} ${BAZ-ccc}", &pairs).as_deref(), Ok("xxx  ccc"));
    assert_eq!(word("${FOO:-aaa} ${BAR:-bbb} ${BAZ:-ccc}", &pairs).as_deref(), Ok("xxx bbb ccc"));
    assert_eq!(word("${FOO+aaa} ${BAR+bbb} ${BAZ+ccc}", &pairs).as_deref(), Ok("aaa bbb "));
    assert_eq!(word("${FOO:+aaa} ${BAR:+bbb} ${BAZ:+ccc}", &pairs).as_deref(), Ok("aaa  "));
    let e = Lexer::new('\\').process("${FOO:-aaa} ${BAR:-bbb} ${BAZ:-ccc}", &env(&pairs)).unwrap();
    assert_eq!(e.used.into_iter().collect::<Vec<_>>(), ["BAR", "FOO"]);
    assert_eq!(e.unset.into_iter().collect::<Vec<_>>(), ["BAZ"]);
}

#[test]
fn backtick_escape_blocks_expansion() {
    let lex = Lexer::new('`');
    let e = env(&[("A", "1")]);
    assert_eq!(lex.process_word("`$A$A", &e).unwrap(), "$A1");
    assert_eq!(lex.process_word(r"C:\dir\$A", &e).unwrap(), r"C:\dir\1");
    assert_eq!(lex.process_words("a` b c", &e).unwrap(), ["a b", "c"]);
}

#[test]
fn skip_unset_env_and_raw_quotes_keep_text() {
    let mut lex = Lexer::new('\\');
    lex.skip_unset_env = true;
    lex.raw_quotes = true;
    let e = env(&[("A", "1")]);
    assert_eq!(lex.process_word("'$A' \"$A\" $B ${B} ${B:-x}", &e).unwrap(), "'$A' \"1\" $B ${B} ${B:-x}");
}
