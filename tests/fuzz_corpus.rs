//! The fuzz targets' corpus, replayed: the seeds (`fuzz/seeds/TARGET/`, among
//! them the inputs that once crashed) and what the fuzzers found, minimized
//! (`fuzz/found/TARGET.bin.gz`, written by `fuzz/pack`), run through the same
//! entry points on every test run.

use std::path::{Path, PathBuf};
use std::process::Command;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// Every input of `target`: the seed files, then the packed corpus.
fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = fuzz_dir().join("seeds").join(target);
    let mut all = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        all.push((path.display().to_string(), std::fs::read(&path).unwrap()));
    }
    let packed = fuzz_dir().join("found").join(format!("{target}.bin.gz"));
    let output = Command::new("gzip")
        .arg("-dc")
        .arg(&packed)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", packed.display());
    let mut rest = output.stdout.as_slice();
    while !rest.is_empty() {
        let (len, tail) = rest.split_at(4);
        let len = u32::from_le_bytes(len.try_into().unwrap()) as usize;
        let (data, tail) = tail.split_at(len);
        all.push((
            format!("{} #{}", packed.display(), all.len()),
            data.to_vec(),
        ));
        rest = tail;
    }
    all
}

fn replay(target: &str, run: fn(&[u8])) -> usize {
    let inputs = inputs(target);
    for (name, data) in &inputs {
        let outcome = std::panic::catch_unwind(|| run(data));
        assert!(outcome.is_ok(), "{name} panics");
    }
    inputs.len()
}

#[test]
fn frames() {
    assert!(replay("frame", keel::fuzzing::frame) > 3000);
}

#[test]
fn stream_entries() {
    assert!(replay("stream_entry", keel::fuzzing::stream_entry) > 2000);
}

#[test]
fn configurations() {
    assert!(replay("config", keel::fuzzing::config) > 3000);
}
