//! The incremental response reader against every captured answer: split at any byte,
//! it reads what the whole-capture parser reads.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // a test: panicking is how it fails

mod common;

use bookbroker_protocols::capture::RawResponse;
use bookbroker_protocols::http1::ResponseReader;

#[test]
fn every_capture_reads_the_same_split_at_any_byte() {
    let dir = common::fixture_path("");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("http") {
            continue;
        }
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        let wire = common::fixture_bytes(&name);
        let whole = RawResponse::parse(&wire).unwrap_or_else(|| panic!("{name}: not a response"));
        for split in 0..=wire.len() {
            let mut reader = ResponseReader::new(1 << 20);
            // The first piece, then (with what was not taken) the rest.
            let taken = reader.feed(&wire[..split]).unwrap();
            let mut rest = wire[taken..].to_vec();
            let more = reader.feed(&rest).unwrap();
            rest.drain(..more);
            if !reader.is_done() {
                reader.close();
            }
            let resp = reader
                .finish()
                .unwrap_or_else(|e| panic!("{name} split at {split}: {e}"));
            assert_eq!(resp.status, whole.status, "{name}");
            assert_eq!(resp.body, whole.body, "{name} split at {split}");
            assert_eq!(
                resp.retry_after.as_deref(),
                whole.header("retry-after"),
                "{name}"
            );
        }
        seen += 1;
    }
    assert!(
        seen >= 10,
        "only {seen} captures found in {}",
        dir.display()
    );
}
