//! The fuzz targets' corpus, replayed: every input the fuzzers kept (seeds,
//! finds, and any crash once fixed) runs through the same entry points on
//! every test run.

use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/seeds")
        .join(target);
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let outcome = std::panic::catch_unwind(|| run(&data));
        assert!(outcome.is_ok(), "{} panics", path.display());
        count += 1;
    }
    count
}

#[test]
fn frames() {
    assert!(replay("frame", keel::fuzzing::frame) >= 370);
}

#[test]
fn stream_entries() {
    assert!(replay("stream_entry", keel::fuzzing::stream_entry) > 10);
}

#[test]
fn configurations() {
    assert!(replay("config", keel::fuzzing::config) > 5);
}
