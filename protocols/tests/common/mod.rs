//! Test helper: reads the fixture files, captured responses as they appear on the wire,
//! through `bookbroker_protocols::capture`.

#![allow(dead_code)]

use std::path::PathBuf;

pub use bookbroker_protocols::capture::RawResponse;

/// Reads and parses `tests/fixtures/<name>`; a fixture that does not parse is a test bug.
pub fn fixture(name: &str) -> RawResponse {
    parse(&fixture_bytes(name))
}

/// Parses a response that must be complete and well framed.
pub fn parse(raw: &[u8]) -> RawResponse {
    RawResponse::parse(raw).expect("a complete, well-framed response")
}

pub fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("fixtures")
        .join(name)
}

pub fn fixture_bytes(name: &str) -> Vec<u8> {
    let path = fixture_path(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
