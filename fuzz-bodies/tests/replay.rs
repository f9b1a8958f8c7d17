//! Replays the committed fuzz corpora and every crash input found so far through the
//! fuzz targets' checks, on stable: what libFuzzer once found cannot come back unseen.
//!
//! `fuzz/corpus/<target>/` holds the minimized corpora (seeded from the protocol
//! fixtures), `fuzz/regressions/<target>/` the inputs that once crashed a target.

use std::path::{Path, PathBuf};

use bookbroker_fuzz_bodies::TARGETS;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

fn inputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

#[test]
fn every_corpus_and_crash_input_passes() {
    let mut replayed = 0;
    for (name, check) in TARGETS {
        let corpus = inputs(&fuzz_dir().join("corpus").join(name));
        assert!(!corpus.is_empty(), "fuzz/corpus/{name} is empty");
        for file in corpus
            .iter()
            .chain(&inputs(&fuzz_dir().join("regressions").join(name)))
        {
            let data = std::fs::read(file).unwrap();
            eprintln!("replaying {}", file.display());
            check(&data);
            replayed += 1;
        }
    }
    eprintln!("replayed {replayed} inputs");
}

#[test]
fn every_target_has_a_fuzz_binary() {
    for (name, _) in TARGETS {
        let target = fuzz_dir().join("fuzz_targets").join(format!("{name}.rs"));
        assert!(target.is_file(), "{} is missing", target.display());
    }
}
