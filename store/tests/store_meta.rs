//! The metadata DB used by many handles at once: every operation opens the DB under a short
//! flock, so concurrent handles (threads here, processes in `store_processes.rs`) all succeed.

use std::time::Instant;

use kiln_store::Digest;
use kiln_store::meta::{Meta, TagRecord};

#[test]
fn handles_hammering_set_tag_and_tags_all_succeed() {
    const THREADS: usize = 4;
    const ROUNDS: usize = 50;
    let root = tempfile::tempdir().unwrap();
    let started = Instant::now();
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let root = root.path();
            s.spawn(move || {
                let meta = Meta::open(root).unwrap();
                for i in 0..ROUNDS {
                    let reference = format!("example.com/t{t}:{i}");
                    let record = TagRecord {
                        digest: Digest::of(reference.as_bytes()),
                        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                        size: i as u64,
                        tagged: 0,
                    };
                    meta.set_tag(&reference, &record).unwrap();
                    assert_eq!(meta.tag(&reference).unwrap(), Some(record));
                    let all = meta.tags().unwrap();
                    // Everything this handle tagged so far is visible, whatever the others did.
                    assert!((0..=i).all(|j| all.iter().any(|(r, _)| r == &format!("example.com/t{t}:{j}"))));
                }
            });
        }
    });
    let ops = THREADS * ROUNDS * 3;
    // A measurement for the design notes, not an assertion.
    println!("{ops} metadata operations (each: flock, open, transaction, close) in {:?}", started.elapsed());
    let meta = Meta::open(root.path()).unwrap();
    assert_eq!(meta.tags().unwrap().len(), THREADS * ROUNDS);
}
