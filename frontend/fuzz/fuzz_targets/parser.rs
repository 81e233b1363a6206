//! Fuzzes the Dockerfile parser and the typed-instruction layer on arbitrary bytes: they must
//! return a value or a located error, never panic, and what they return must be consistent.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let df = match kiln_frontend::parse(data) {
        Ok(df) => df,
        Err(e) => {
            assert!(e.pos.line >= 1 && e.pos.column >= 1, "error without a position: {e:?}");
            let _ = e.to_string();
            return;
        }
    };
    assert!(!df.instructions.is_empty());
    let _ = df.dump();
    let mut last_end = 0;
    for node in &df.instructions {
        assert!(node.start_line > last_end && node.start_line <= node.end_line, "line order: {node:?}");
        assert_eq!(node.flags.len(), node.flag_pos.len());
        last_end = node.end_line;
    }
    if let Err(e) = kiln_frontend::instructions::parse_instructions(&df) {
        assert!(e.pos.line >= 1 && e.pos.column >= 1, "error without a position: {e:?}");
        let _ = e.to_string();
    }
});
