//! Random patterns and paths must never panic or hang the matcher.

use kiln_frontend::dockerignore::DockerIgnore;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> usize {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) as usize
    }
}

#[test]
fn random_patterns_never_panic() {
    let alphabet: Vec<char> = "*?[]^!-\\/.ab#é \n".chars().collect();
    let paths = ["a", "a/b", "b/a/b", ".a", "a.b/ab", "é/a"];
    let mut rng = Rng(7);
    for _ in 0..20_000 {
        let len = rng.next() % 16;
        let text: String = (0..len).map(|_| alphabet[rng.next() % alphabet.len()]).collect();
        if let Ok(m) = DockerIgnore::parse(&text, ".dockerignore") {
            for p in paths {
                let excluded = m.is_excluded(p);
                assert!(!m.can_skip_dir(p) || excluded, "{text:?} {p}");
            }
        }
    }
}

#[test]
fn many_stars_against_a_long_name_stay_fast() {
    let m = DockerIgnore::parse(&"*a".repeat(20), ".dockerignore").unwrap();
    assert!(!m.is_excluded(&format!("{}b", "a".repeat(300))));
    assert!(m.is_excluded(&"a".repeat(300)));
}
