//! Every short pattern over the matcher's special characters must parse or fail cleanly, and
//! never panic or hang; a directory that may be skipped must itself be excluded.

use kiln_frontend::dockerignore::DockerIgnore;

#[test]
fn every_short_pattern_is_handled() {
    let alphabet: Vec<char> = "*?[]^!-\\/.a\n".chars().collect();
    let paths = ["a", "a/b", "b/a/b", ".a", "a.b/ab", "é/a"];
    let n = alphabet.len();
    let mut checked = 0;
    for len in 1..=4u32 {
        for mut code in 0..n.pow(len) {
            let mut text = String::new();
            for _ in 0..len {
                text.push(alphabet[code % n]);
                code /= n;
            }
            if let Ok(m) = DockerIgnore::parse(&text, ".dockerignore") {
                for p in paths {
                    assert!(!m.can_skip_dir(p) || m.is_excluded(p), "{text:?} {p}");
                }
                checked += 1;
            }
        }
    }
    assert!(checked > 1000, "only {checked} patterns were valid");
}

#[test]
fn many_stars_against_a_long_name_stay_fast() {
    let m = DockerIgnore::parse(&"*a".repeat(20), ".dockerignore").unwrap();
    assert!(!m.is_excluded(&format!("{}b", "a".repeat(300))));
    assert!(m.is_excluded(&"a".repeat(300)));
}
