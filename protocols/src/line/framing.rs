//! Framing: a byte stream cut into lines, without I/O of its own.

use super::{LineError, MAX_LINE};

/// Frames a byte stream into lines. Feed it what the socket gave with
/// [`LineBuffer::extend`], then take complete lines with [`LineBuffer::next_line`].
#[derive(Debug, Default)]
pub struct LineBuffer {
    pub(super) buf: Vec<u8>,
    /// Where the next line begins.
    start: usize,
    /// Bytes after `start` already known to hold no LF, so each byte is scanned once.
    scanned: usize,
    /// A line was too long; the stream is beyond repair.
    failed: bool,
}

impl LineBuffer {
    /// An empty buffer.
    pub fn new() -> LineBuffer {
        LineBuffer::default()
    }

    /// Appends bytes read from the stream.
    pub fn extend(&mut self, bytes: &[u8]) {
        if self.failed {
            return;
        }
        // Drop consumed lines once they are at least half the buffer, so the copy is
        // paid for by the lines returned since the last one (amortized linear).
        if self.start > 0 && self.start >= self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete line without its LF (a trailing CR is removed too), or `None`
    /// when no complete line is buffered. A line over [`MAX_LINE`] is an error, after
    /// which the stream should be closed.
    pub fn next_line(&mut self) -> Option<Result<&[u8], LineError>> {
        if self.failed {
            return Some(Err(LineError::TooLong));
        }
        let from = self.start + self.scanned;
        let unscanned = self.buf.get(from..).unwrap_or(&[]);
        match unscanned.iter().position(|&b| b == b'\n') {
            Some(offset) => {
                let end = from + offset; // index of the LF
                let line_start = self.start;
                self.start = end + 1;
                self.scanned = 0;
                if end + 1 - line_start > MAX_LINE {
                    self.failed = true;
                    return Some(Err(LineError::TooLong));
                }
                let line = self.buf.get(line_start..end).unwrap_or(&[]);
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                Some(Ok(line))
            }
            None => {
                self.scanned += unscanned.len();
                // Even if the LF came next, the line would not fit.
                if self.scanned >= MAX_LINE {
                    self.failed = true;
                    return Some(Err(LineError::TooLong));
                }
                None
            }
        }
    }

    /// Bytes buffered but not yet returned.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.start
    }
}
