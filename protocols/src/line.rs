//! The `line` seller protocol: a legacy, pipelined text protocol over plain TCP.
//!
//! Every message is one line `VERB SP TAG (TAB FIELD)* LF`, UTF-8, at most
//! [`MAX_LINE`] bytes including the LF. The client picks the tag and the seller echoes it
//! in every line of the answer, in any order relative to other tags. A field never holds
//! TAB or LF: encoders replace them with spaces.
//!
//! Requests: `QUOTE`, `ORDER`, `CANCEL`, `ORDERS` (admin listing).
//! Answers: `OFFER`…`END`, `ORDERED` | `SOLDOUT` | `PRICE`, `CANCELLED`, `BUSY`, `ERR`,
//! and `ORDERREC`…`END` for `ORDERS`.
//!
//! [`LineBuffer`] frames a byte stream into lines without I/O of its own.

use crate::admin::AdminOrder;
use crate::money::Money;
use crate::offer::{OrderRequest, QuoteQuery, SellerOffer};

/// Longest line, LF included.
pub const MAX_LINE: usize = 4096;

/// Why a line is not a valid message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    /// Longer than [`MAX_LINE`].
    #[error("line longer than {MAX_LINE} bytes")]
    TooLong,
    /// Not UTF-8.
    #[error("line is not UTF-8")]
    NotUtf8,
    /// A verb this side does not know.
    #[error("unknown verb {0:?}")]
    UnknownVerb(String),
    /// Wrong number of fields or an invalid field.
    #[error("bad {verb} line: {reason}")]
    BadFields {
        /// The verb.
        verb: &'static str,
        /// What is wrong.
        reason: String,
    },
}

/// A request line, client to seller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `QUOTE tag\tISBN\t…` or `QUOTE tag\tTITLE\t…`.
    Quote {
        /// Tag.
        tag: String,
        /// What to search.
        query: QuoteQuery,
    },
    /// `ORDER tag\toffer_id\texpected_total_minor\tcurrency\tidempotency_key\tshipping_token`.
    Order {
        /// Tag.
        tag: String,
        /// The order.
        order: OrderRequest,
    },
    /// `CANCEL tag\torder_id`.
    Cancel {
        /// Tag.
        tag: String,
        /// The seller's order id.
        order_id: String,
    },
    /// `ORDERS tag`: list orders placed and cancelled (admin).
    Orders {
        /// Tag.
        tag: String,
    },
}

/// An answer line, seller to client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// `OFFER tag\toffer_id\tisbn13\tcondition\tprice_minor\tshipping_minor\tcurrency\tquantity\ttitle`.
    Offer {
        /// Tag.
        tag: String,
        /// The offer.
        offer: SellerOffer,
    },
    /// `END tag`: no more lines for this tag.
    End {
        /// Tag.
        tag: String,
    },
    /// `ORDERED tag\torder_id\ttotal_minor\tcurrency`.
    Ordered {
        /// Tag.
        tag: String,
        /// The seller's order id.
        order_id: String,
        /// Confirmed total.
        total: Money,
    },
    /// `SOLDOUT tag`.
    SoldOut {
        /// Tag.
        tag: String,
    },
    /// `PRICE tag\tnew_total_minor\tcurrency`.
    Price {
        /// Tag.
        tag: String,
        /// The new total.
        total: Money,
    },
    /// `CANCELLED tag`.
    Cancelled {
        /// Tag.
        tag: String,
    },
    /// `BUSY tag\tretry_after_ms`.
    Busy {
        /// Tag.
        tag: String,
        /// How long to wait.
        retry_after_ms: u64,
    },
    /// `ERR tag\tcode\tmessage`.
    Err {
        /// Tag.
        tag: String,
        /// Error code.
        code: String,
        /// Message.
        message: String,
    },
    /// `ORDERREC tag\torder_id\toffer_id\tisbn13\ttotal_minor\tcurrency\tstatus\tidempotency_key`
    /// (one per order, then `END tag`).
    OrderRecord {
        /// Tag.
        tag: String,
        /// The order.
        record: AdminOrder,
    },
}

impl Request {
    /// The tag.
    pub fn tag(&self) -> &str {
        match self {
            Request::Quote { tag, .. }
            | Request::Order { tag, .. }
            | Request::Cancel { tag, .. }
            | Request::Orders { tag } => tag,
        }
    }

    /// Appends the line, LF included, to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let _ = out;
        todo!()
    }

    /// Decodes one line (with or without its LF).
    pub fn decode(line: &[u8]) -> Result<Request, LineError> {
        let _ = line;
        todo!()
    }
}

impl Response {
    /// The tag.
    pub fn tag(&self) -> &str {
        match self {
            Response::Offer { tag, .. }
            | Response::End { tag }
            | Response::Ordered { tag, .. }
            | Response::SoldOut { tag }
            | Response::Price { tag, .. }
            | Response::Cancelled { tag }
            | Response::Busy { tag, .. }
            | Response::Err { tag, .. }
            | Response::OrderRecord { tag, .. } => tag,
        }
    }

    /// Appends the line, LF included, to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let _ = out;
        todo!()
    }

    /// Decodes one line (with or without its LF).
    pub fn decode(line: &[u8]) -> Result<Response, LineError> {
        let _ = line;
        todo!()
    }
}

/// Replaces TAB, CR and LF in a field with spaces.
pub fn sanitize_field(field: &str) -> std::borrow::Cow<'_, str> {
    if field.contains(['\t', '\n', '\r']) {
        std::borrow::Cow::Owned(field.replace(['\t', '\n', '\r'], " "))
    } else {
        std::borrow::Cow::Borrowed(field)
    }
}

/// Frames a byte stream into lines. Feed it what the socket gave with
/// [`LineBuffer::extend`], then take complete lines with [`LineBuffer::next_line`].
#[derive(Debug, Default)]
pub struct LineBuffer {
    buf: Vec<u8>,
    start: usize,
}

impl LineBuffer {
    /// An empty buffer.
    pub fn new() -> LineBuffer {
        LineBuffer::default()
    }

    /// Appends bytes read from the stream.
    pub fn extend(&mut self, bytes: &[u8]) {
        let _ = bytes;
        todo!()
    }

    /// The next complete line without its LF (a trailing CR is removed too), or `None`
    /// when no complete line is buffered. A line over [`MAX_LINE`] is an error, after
    /// which the stream should be closed.
    pub fn next_line(&mut self) -> Option<Result<&[u8], LineError>> {
        todo!()
    }

    /// Bytes buffered but not yet returned.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.start
    }
}
