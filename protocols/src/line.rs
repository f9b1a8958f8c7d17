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

use crate::admin::{AdminOrder, AdminOrderStatus};
use crate::isbn::Isbn;
use crate::money::{Currency, Money};
use crate::offer::{Condition, OrderRequest, QuoteQuery, SellerOffer};

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
    /// `ORDERED tag\torder_id\ttotal_minor\tcurrency`. The total is read as the seller
    /// states it, sign included: judging it is the engine's business.
    Ordered {
        /// Tag.
        tag: String,
        /// The seller's order id.
        order_id: String,
        /// Confirmed total.
        total: Money,
    },
    /// An `ORDERED` line whose total or currency cannot be read. The order exists (it has
    /// an id) and must be undone; the fields are kept as the seller sent them.
    OrderedUnreadable {
        /// Tag.
        tag: String,
        /// The seller's order id.
        order_id: String,
        /// The `total_minor` field as sent.
        total: String,
        /// The `currency` field as sent.
        currency: String,
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

    /// Appends the line, LF included, to `out`. Fields are sanitized (TAB, CR, LF become
    /// spaces); a title too long for [`MAX_LINE`] is cut at a character boundary.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let line_start = out.len();
        match self {
            Request::Quote { tag, query } => {
                head(out, "QUOTE", tag);
                match query {
                    QuoteQuery::Isbn(isbn) => {
                        field(out, "ISBN");
                        field(out, isbn.as_str());
                    }
                    QuoteQuery::Title(title) => {
                        field(out, "TITLE");
                        last_field(out, line_start, title);
                    }
                }
            }
            Request::Order { tag, order } => {
                head(out, "ORDER", tag);
                field(out, &order.offer_id);
                number(out, order.expected_total.minor);
                field(out, order.expected_total.currency.code());
                field(out, &order.idempotency_key);
                field(out, &order.shipping_token);
            }
            Request::Cancel { tag, order_id } => {
                head(out, "CANCEL", tag);
                field(out, order_id);
            }
            Request::Orders { tag } => head(out, "ORDERS", tag),
        }
        out.push(b'\n');
    }

    /// Decodes one line (with or without its LF).
    pub fn decode(line: &[u8]) -> Result<Request, LineError> {
        let (verb, tag, rest) = split_line(line)?;
        let tag = tag.to_string();
        match verb {
            "QUOTE" => {
                const V: &str = "QUOTE";
                let (kind, value) = rest
                    .and_then(|r| r.split_once('\t'))
                    .ok_or_else(|| bad(V, "expected ISBN or TITLE and a value"))?;
                let query = match kind {
                    "ISBN" => QuoteQuery::Isbn(
                        Isbn::parse(value).map_err(|e| bad(V, format!("isbn: {e}")))?,
                    ),
                    "TITLE" => QuoteQuery::Title(value.to_string()),
                    _ => return Err(bad(V, "expected ISBN or TITLE")),
                };
                Ok(Request::Quote { tag, query })
            }
            "ORDER" => {
                const V: &str = "ORDER";
                let [offer_id, total, currency, key, shipping] = fields::<5>(V, rest)?;
                let currency = parse_currency(V, currency)?;
                let total = parse_amount(V, "expected_total_minor", total)?;
                Ok(Request::Order {
                    tag,
                    order: OrderRequest {
                        offer_id: offer_id.to_string(),
                        expected_total: Money::new(total, currency),
                        idempotency_key: key.to_string(),
                        shipping_token: shipping.to_string(),
                    },
                })
            }
            "CANCEL" => {
                let [order_id] = fields::<1>("CANCEL", rest)?;
                Ok(Request::Cancel {
                    tag,
                    order_id: order_id.to_string(),
                })
            }
            "ORDERS" => {
                fields::<0>("ORDERS", rest)?;
                Ok(Request::Orders { tag })
            }
            other => Err(LineError::UnknownVerb(shorten(other))),
        }
    }
}

impl Response {
    /// The tag.
    pub fn tag(&self) -> &str {
        match self {
            Response::Offer { tag, .. }
            | Response::End { tag }
            | Response::Ordered { tag, .. }
            | Response::OrderedUnreadable { tag, .. }
            | Response::SoldOut { tag }
            | Response::Price { tag, .. }
            | Response::Cancelled { tag }
            | Response::Busy { tag, .. }
            | Response::Err { tag, .. }
            | Response::OrderRecord { tag, .. } => tag,
        }
    }

    /// Appends the line, LF included, to `out`. Fields are sanitized like
    /// [`Request::encode`]; a title or message too long for [`MAX_LINE`] is cut.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let line_start = out.len();
        match self {
            Response::Offer { tag, offer } => {
                head(out, "OFFER", tag);
                field(out, &offer.offer_id);
                field(out, offer.isbn.as_str());
                field(out, offer.condition.as_str());
                number(out, offer.price);
                number(out, offer.shipping);
                field(out, offer.currency.code());
                number(out, i64::from(offer.quantity));
                last_field(out, line_start, &offer.title);
            }
            Response::End { tag } => head(out, "END", tag),
            Response::Ordered {
                tag,
                order_id,
                total,
            } => {
                head(out, "ORDERED", tag);
                field(out, order_id);
                number(out, total.minor);
                field(out, total.currency.code());
            }
            Response::OrderedUnreadable {
                tag,
                order_id,
                total,
                currency,
            } => {
                head(out, "ORDERED", tag);
                field(out, order_id);
                field(out, total);
                field(out, currency);
            }
            Response::SoldOut { tag } => head(out, "SOLDOUT", tag),
            Response::Price { tag, total } => {
                head(out, "PRICE", tag);
                number(out, total.minor);
                field(out, total.currency.code());
            }
            Response::Cancelled { tag } => head(out, "CANCELLED", tag),
            Response::Busy {
                tag,
                retry_after_ms,
            } => {
                head(out, "BUSY", tag);
                out.push(b'\t');
                out.extend_from_slice(retry_after_ms.to_string().as_bytes());
            }
            Response::Err { tag, code, message } => {
                head(out, "ERR", tag);
                field(out, code);
                last_field(out, line_start, message);
            }
            Response::OrderRecord { tag, record } => {
                head(out, "ORDERREC", tag);
                field(out, &record.order_id);
                field(out, &record.offer_id);
                field(out, &record.isbn);
                number(out, record.total_minor);
                field(out, &record.currency);
                field(
                    out,
                    match record.status {
                        AdminOrderStatus::Placed => "placed",
                        AdminOrderStatus::Cancelled => "cancelled",
                    },
                );
                field(out, &record.idempotency_key);
            }
        }
        out.push(b'\n');
    }

    /// Decodes one line (with or without its LF).
    pub fn decode(line: &[u8]) -> Result<Response, LineError> {
        let (verb, tag, rest) = split_line(line)?;
        let tag = tag.to_string();
        match verb {
            "OFFER" => {
                const V: &str = "OFFER";
                // The title is last and taken whole, so a stray TAB in it costs nothing.
                let mut it = rest
                    .ok_or_else(|| bad(V, "missing fields"))?
                    .splitn(8, '\t');
                let mut next =
                    |name: &str| it.next().ok_or_else(|| bad(V, format!("missing {name}")));
                let offer_id = next("offer_id")?;
                let isbn = next("isbn13")?;
                let condition = next("condition")?;
                let price = next("price_minor")?;
                let shipping = next("shipping_minor")?;
                let currency = next("currency")?;
                let quantity = next("quantity")?;
                let title = next("title")?;
                let isbn = Isbn::parse(isbn).map_err(|e| bad(V, format!("isbn: {e}")))?;
                let quantity = parse_digits(quantity)
                    .and_then(|q| u32::try_from(q).ok())
                    .ok_or_else(|| bad(V, "invalid quantity"))?;
                Ok(Response::Offer {
                    tag,
                    offer: SellerOffer {
                        offer_id: offer_id.to_string(),
                        isbn,
                        title: title.to_string(),
                        condition: Condition::from_seller(condition),
                        price: parse_amount(V, "price_minor", price)?,
                        shipping: parse_amount(V, "shipping_minor", shipping)?,
                        currency: parse_currency(V, currency)?,
                        quantity,
                    },
                })
            }
            "END" => {
                fields::<0>("END", rest)?;
                Ok(Response::End { tag })
            }
            "ORDERED" => {
                const V: &str = "ORDERED";
                let [order_id, total, currency] = fields::<3>(V, rest)?;
                match (
                    parse_signed_amount(V, "total_minor", total),
                    parse_currency(V, currency),
                ) {
                    (Ok(minor), Ok(currency)) => Ok(Response::Ordered {
                        tag,
                        order_id: order_id.to_string(),
                        total: Money::new(minor, currency),
                    }),
                    _ => Ok(Response::OrderedUnreadable {
                        tag,
                        order_id: order_id.to_string(),
                        total: total.chars().take(64).collect(),
                        currency: currency.chars().take(16).collect(),
                    }),
                }
            }
            "SOLDOUT" => {
                fields::<0>("SOLDOUT", rest)?;
                Ok(Response::SoldOut { tag })
            }
            "PRICE" => {
                const V: &str = "PRICE";
                let [total, currency] = fields::<2>(V, rest)?;
                Ok(Response::Price {
                    tag,
                    total: Money::new(
                        parse_signed_amount(V, "new_total_minor", total)?,
                        parse_currency(V, currency)?,
                    ),
                })
            }
            "CANCELLED" => {
                fields::<0>("CANCELLED", rest)?;
                Ok(Response::Cancelled { tag })
            }
            "BUSY" => {
                const V: &str = "BUSY";
                let [ms] = fields::<1>(V, rest)?;
                let retry_after_ms =
                    parse_digits(ms).ok_or_else(|| bad(V, "invalid retry_after_ms"))?;
                Ok(Response::Busy {
                    tag,
                    retry_after_ms,
                })
            }
            "ERR" => {
                const V: &str = "ERR";
                let (code, message) = rest
                    .and_then(|r| r.split_once('\t'))
                    .ok_or_else(|| bad(V, "expected code and message"))?;
                Ok(Response::Err {
                    tag,
                    code: code.to_string(),
                    message: message.to_string(),
                })
            }
            "ORDERREC" => {
                const V: &str = "ORDERREC";
                let [order_id, offer_id, isbn, total, currency, status, key] =
                    fields::<7>(V, rest)?;
                let status = match status {
                    "placed" => AdminOrderStatus::Placed,
                    "cancelled" => AdminOrderStatus::Cancelled,
                    _ => return Err(bad(V, "status must be placed or cancelled")),
                };
                Ok(Response::OrderRecord {
                    tag,
                    record: AdminOrder {
                        order_id: order_id.to_string(),
                        offer_id: offer_id.to_string(),
                        isbn: isbn.to_string(),
                        total_minor: parse_amount(V, "total_minor", total)?,
                        currency: parse_currency(V, currency)?.code().to_string(),
                        status,
                        idempotency_key: key.to_string(),
                    },
                })
            }
            other => Err(LineError::UnknownVerb(shorten(other))),
        }
    }

    /// Whether this line ends the answer for its tag (`END`, and every single-line
    /// answer: `ORDERED`, `SOLDOUT`, `PRICE`, `CANCELLED`, `BUSY`, `ERR`).
    pub fn is_final(&self) -> bool {
        !matches!(self, Response::Offer { .. } | Response::OrderRecord { .. })
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

fn head(out: &mut Vec<u8>, verb: &str, tag: &str) {
    out.extend_from_slice(verb.as_bytes());
    out.push(b' ');
    out.extend_from_slice(sanitize_field(tag).as_bytes());
}

fn field(out: &mut Vec<u8>, value: &str) {
    out.push(b'\t');
    out.extend_from_slice(sanitize_field(value).as_bytes());
}

fn number(out: &mut Vec<u8>, value: i64) {
    out.push(b'\t');
    out.extend_from_slice(value.to_string().as_bytes());
}

/// The last field of a line, cut at a character boundary so the whole line (from
/// `line_start`, LF included) stays within [`MAX_LINE`].
fn last_field(out: &mut Vec<u8>, line_start: usize, value: &str) {
    out.push(b'\t');
    let used = out.len().saturating_sub(line_start) + 1;
    let room = MAX_LINE.saturating_sub(used);
    let value = sanitize_field(value);
    let mut cut = value.len().min(room);
    while !value.is_char_boundary(cut) {
        cut -= 1;
    }
    out.extend_from_slice(value.get(..cut).unwrap_or("").as_bytes());
}

fn bad(verb: &'static str, reason: impl Into<String>) -> LineError {
    LineError::BadFields {
        verb,
        reason: reason.into(),
    }
}

fn shorten(text: &str) -> String {
    text.chars().take(32).collect()
}

/// Splits `VERB SP TAG [TAB rest]`, after dropping a final LF (or CRLF).
fn split_line(line: &[u8]) -> Result<(&str, &str, Option<&str>), LineError> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.len() >= MAX_LINE {
        return Err(LineError::TooLong);
    }
    let line = std::str::from_utf8(line).map_err(|_| LineError::NotUtf8)?;
    let (head, rest) = match line.split_once('\t') {
        Some((h, r)) => (h, Some(r)),
        None => (line, None),
    };
    let (verb, tag) = head
        .split_once(' ')
        .ok_or_else(|| LineError::UnknownVerb(shorten(head)))?;
    Ok((verb, tag, rest))
}

/// Exactly `N` TAB-separated fields.
fn fields<'a, const N: usize>(
    verb: &'static str,
    rest: Option<&'a str>,
) -> Result<[&'a str; N], LineError> {
    let mut out = [""; N];
    let mut it = rest.map(|r| r.split('\t'));
    let mut count = 0usize;
    if let Some(it) = it.as_mut() {
        for f in it {
            if let Some(slot) = out.get_mut(count) {
                *slot = f;
            }
            count += 1;
        }
    }
    if count != N {
        return Err(bad(verb, format!("expected {N} fields, found {count}")));
    }
    Ok(out)
}

/// A non-negative decimal integer: ASCII digits only, no sign.
fn parse_digits(text: &str) -> Option<u64> {
    if text.is_empty() || text.len() > 20 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse::<u64>().ok()
}

fn parse_amount(verb: &'static str, name: &str, text: &str) -> Result<i64, LineError> {
    parse_digits(text)
        .and_then(|v| i64::try_from(v).ok())
        .ok_or_else(|| bad(verb, format!("invalid {name}")))
}

/// A total as a seller states it: digits with an optional leading `-`.
fn parse_signed_amount(verb: &'static str, name: &str, text: &str) -> Result<i64, LineError> {
    match text.strip_prefix('-') {
        Some(digits) => parse_amount(verb, name, digits).map(|v| -v),
        None => parse_amount(verb, name, text),
    }
}

fn parse_currency(verb: &'static str, text: &str) -> Result<Currency, LineError> {
    Currency::parse(text).map_err(|e| bad(verb, e.to_string()))
}

/// Frames a byte stream into lines. Feed it what the socket gave with
/// [`LineBuffer::extend`], then take complete lines with [`LineBuffer::next_line`].
#[derive(Debug, Default)]
pub struct LineBuffer {
    buf: Vec<u8>,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::Currency;

    fn isbn() -> Isbn {
        Isbn::parse("9780131103627").unwrap()
    }

    fn enc_req(r: &Request) -> String {
        let mut out = Vec::new();
        r.encode(&mut out);
        String::from_utf8(out).unwrap()
    }

    fn enc_resp(r: &Response) -> String {
        let mut out = Vec::new();
        r.encode(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn request_lines() {
        let q = Request::Quote {
            tag: "t1".into(),
            query: QuoteQuery::Isbn(isbn()),
        };
        assert_eq!(enc_req(&q), "QUOTE t1\tISBN\t9780131103627\n");
        assert_eq!(
            Request::decode(b"QUOTE t1\tISBN\t0-13-110362-8\r\n").unwrap(),
            q
        );
        let t = Request::Quote {
            tag: "t2".into(),
            query: QuoteQuery::Title("C\tprogramming\nlanguage".into()),
        };
        assert_eq!(enc_req(&t), "QUOTE t2\tTITLE\tC programming language\n");
        let o = Request::Order {
            tag: "7".into(),
            order: OrderRequest {
                offer_id: "o-1".into(),
                expected_total: Money::new(4398, Currency::USD),
                idempotency_key: "k\t1".into(),
                shipping_token: "ship_home".into(),
            },
        };
        assert_eq!(enc_req(&o), "ORDER 7\to-1\t4398\tUSD\tk 1\tship_home\n");
        let c = Request::Cancel {
            tag: "x".into(),
            order_id: "so-1".into(),
        };
        assert_eq!(enc_req(&c), "CANCEL x\tso-1\n");
        assert_eq!(Request::decode(b"CANCEL x\tso-1").unwrap(), c);
        assert_eq!(
            Request::decode(b"ORDERS a").unwrap(),
            Request::Orders { tag: "a".into() }
        );
        assert_eq!(
            Request::decode(b"QUOTE t\tTITLE\t").unwrap(),
            Request::Quote {
                tag: "t".into(),
                query: QuoteQuery::Title(String::new())
            }
        );
    }

    #[test]
    fn bad_request_lines() {
        assert_eq!(
            Request::decode(b"HELLO t"),
            Err(LineError::UnknownVerb("HELLO".into()))
        );
        assert!(matches!(
            Request::decode(b"QUOTE"),
            Err(LineError::UnknownVerb(_))
        ));
        assert!(matches!(
            Request::decode(b"END t"),
            Err(LineError::UnknownVerb(_))
        ));
        assert!(matches!(
            Request::decode(b"quote t\tISBN\t9780131103627"),
            Err(LineError::UnknownVerb(_))
        ));
        assert!(matches!(
            Request::decode(b"QUOTE t\tISBN\t9780131103628"),
            Err(LineError::BadFields { verb: "QUOTE", .. })
        ));
        assert!(matches!(
            Request::decode(b"QUOTE t\tAUTHOR\tx"),
            Err(LineError::BadFields { .. })
        ));
        assert!(matches!(
            Request::decode(b"QUOTE t"),
            Err(LineError::BadFields { .. })
        ));
        assert!(matches!(
            Request::decode(b"ORDER t\to\t+12\tUSD\tk\ts"),
            Err(LineError::BadFields { .. })
        ));
        assert!(matches!(
            Request::decode(b"ORDER t\to\t12\tusd\tk\ts"),
            Err(LineError::BadFields { .. })
        ));
        assert!(matches!(
            Request::decode(b"ORDER t\to\t12\tUSD\tk"),
            Err(LineError::BadFields { .. })
        ));
        assert!(matches!(
            Request::decode(b"ORDER t\to\t12\tUSD\tk\ts\textra"),
            Err(LineError::BadFields { .. })
        ));
        assert!(matches!(
            Request::decode(b"ORDERS t\tx"),
            Err(LineError::BadFields { .. })
        ));
        assert_eq!(Request::decode(b"CANCEL \xff\tx"), Err(LineError::NotUtf8));
        let long = format!("CANCEL t\t{}", "x".repeat(MAX_LINE));
        assert_eq!(Request::decode(long.as_bytes()), Err(LineError::TooLong));
    }

    #[test]
    fn response_lines() {
        let offer = SellerOffer {
            offer_id: "o-1".into(),
            isbn: isbn(),
            title: "Über\tC".into(),
            condition: crate::offer::Condition::New,
            price: 3999,
            shipping: 399,
            currency: Currency::USD,
            quantity: 3,
        };
        let r = Response::Offer {
            tag: "q1".into(),
            offer: offer.clone(),
        };
        assert_eq!(
            enc_resp(&r),
            "OFFER q1\to-1\t9780131103627\tnew\t3999\t399\tUSD\t3\tÜber C\n"
        );
        let back = Response::decode(
            b"OFFER q1\to-1\t9780131103627\tNEW\t3999\t399\tUSD\t3\t\xc3\x9cber C",
        )
        .unwrap();
        assert_eq!(
            back,
            Response::Offer {
                tag: "q1".into(),
                offer: SellerOffer {
                    title: "Über C".into(),
                    ..offer.clone()
                }
            }
        );
        // Empty title, and "Very Good" counts as used.
        let used =
            Response::decode(b"OFFER q\to\t9780131103627\tVery Good\t1\t0\tGBP\t0\t").unwrap();
        match used {
            Response::Offer { offer, .. } => {
                assert_eq!(offer.condition, crate::offer::Condition::Used);
                assert_eq!(offer.title, "");
                assert_eq!(offer.quantity, 0);
            }
            other => panic!("{other:?}"),
        }
        for (line, expected) in [
            ("END q1\n", Response::End { tag: "q1".into() }),
            ("SOLDOUT a\n", Response::SoldOut { tag: "a".into() }),
            ("CANCELLED a\n", Response::Cancelled { tag: "a".into() }),
            (
                "BUSY a\t250\n",
                Response::Busy {
                    tag: "a".into(),
                    retry_after_ms: 250,
                },
            ),
            (
                "ERR a\tbad_request\tno such verb\n",
                Response::Err {
                    tag: "a".into(),
                    code: "bad_request".into(),
                    message: "no such verb".into(),
                },
            ),
            (
                "ERR a\tinternal\t\n",
                Response::Err {
                    tag: "a".into(),
                    code: "internal".into(),
                    message: String::new(),
                },
            ),
            (
                "ORDERED a\tso-1\t4398\tUSD\n",
                Response::Ordered {
                    tag: "a".into(),
                    order_id: "so-1".into(),
                    total: Money::new(4398, Currency::USD),
                },
            ),
            (
                "PRICE a\t4500\tJPY\n",
                Response::Price {
                    tag: "a".into(),
                    total: Money::new(4500, Currency::JPY),
                },
            ),
            (
                "ORDERREC a\tso-1\to-1\t9780131103627\t4398\tUSD\tcancelled\tkey-1\n",
                Response::OrderRecord {
                    tag: "a".into(),
                    record: AdminOrder {
                        order_id: "so-1".into(),
                        offer_id: "o-1".into(),
                        isbn: "9780131103627".into(),
                        total_minor: 4398,
                        currency: "USD".into(),
                        status: AdminOrderStatus::Cancelled,
                        idempotency_key: "key-1".into(),
                    },
                },
            ),
        ] {
            assert_eq!(
                Response::decode(line.as_bytes()).unwrap(),
                expected,
                "{line}"
            );
            assert_eq!(enc_resp(&expected), line);
        }
        assert!(Response::End { tag: "a".into() }.is_final());
        assert!(!r.is_final());
    }

    #[test]
    fn bad_response_lines() {
        for bad in [
            &b"OFFER q\to\t9780131103627\tnew\t-1\t0\tUSD\t1\tt"[..],
            b"OFFER q\to\t9780131103627\tnew\t1\t0\tUSD\t4294967296\tt",
            b"OFFER q\to\t9780131103627\tnew\t1\t0\tUSD\t1",
            b"OFFER q\to\t123\tnew\t1\t0\tUSD\t1\tt",
            b"OFFER q\to\t9780131103627\tnew\t1.5\t0\tUSD\t1\tt",
            b"ORDERED a\tso\t1",
            b"BUSY a\tsoon",
            b"BUSY a",
            b"END a\tx",
            b"ERR a",
            b"ORDERREC a\tso-1\to-1\t978\t1\tUSD\tlost\tk",
            b"PRICE a\t99999999999999999999\tUSD",
        ] {
            assert!(
                matches!(Response::decode(bad), Err(LineError::BadFields { .. })),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(matches!(
            Response::decode(b"QUOTE t\tISBN\t9780131103627"),
            Err(LineError::UnknownVerb(_))
        ));
        assert!(matches!(
            Response::decode(b""),
            Err(LineError::UnknownVerb(_))
        ));
    }

    #[test]
    fn long_titles_are_cut_to_fit() {
        let offer = SellerOffer {
            offer_id: "o".into(),
            isbn: isbn(),
            title: "é".repeat(MAX_LINE),
            condition: crate::offer::Condition::Used,
            price: 1,
            shipping: 2,
            currency: Currency::EUR,
            quantity: 1,
        };
        let mut out = Vec::new();
        Response::Offer {
            tag: "t".into(),
            offer,
        }
        .encode(&mut out);
        assert!(out.len() <= MAX_LINE && out.len() >= MAX_LINE - 1);
        assert!(Response::decode(&out).is_ok());
    }

    #[test]
    fn line_buffer_frames() {
        let mut b = LineBuffer::new();
        assert!(b.next_line().is_none());
        b.extend(b"END a\nEND");
        assert_eq!(b.next_line().unwrap().unwrap(), b"END a");
        assert!(b.next_line().is_none());
        b.extend(b" b\r\n\nEND c\n");
        assert_eq!(b.next_line().unwrap().unwrap(), b"END b");
        assert_eq!(b.next_line().unwrap().unwrap(), b"");
        assert_eq!(b.next_line().unwrap().unwrap(), b"END c");
        assert!(b.next_line().is_none());
        assert_eq!(b.pending(), 0);
        b.extend(b"par");
        assert_eq!(b.pending(), 3);
    }

    #[test]
    fn line_buffer_limits() {
        // Exactly MAX_LINE bytes including the LF is fine.
        let mut b = LineBuffer::new();
        let mut line = vec![b'x'; MAX_LINE - 1];
        line.push(b'\n');
        b.extend(&line);
        assert_eq!(b.next_line().unwrap().unwrap().len(), MAX_LINE - 1);

        // One more byte is too long, whether the LF has arrived or not.
        let mut b = LineBuffer::new();
        let mut line = vec![b'x'; MAX_LINE];
        line.push(b'\n');
        b.extend(&line);
        assert_eq!(b.next_line().unwrap(), Err(LineError::TooLong));
        assert_eq!(b.next_line().unwrap(), Err(LineError::TooLong));

        let mut b = LineBuffer::new();
        for _ in 0..MAX_LINE - 1 {
            b.extend(b"y");
            assert!(b.next_line().is_none());
        }
        b.extend(b"y");
        assert_eq!(b.next_line().unwrap(), Err(LineError::TooLong));
    }

    #[test]
    fn line_buffer_is_linear() {
        // A million one-byte reads of short lines must neither rescan nor keep memory.
        let mut b = LineBuffer::new();
        let mut lines = 0;
        for _ in 0..100_000 {
            for &byte in b"END tag-1\n" {
                b.extend(&[byte]);
                while let Some(line) = b.next_line() {
                    assert_eq!(line.unwrap(), b"END tag-1");
                    lines += 1;
                }
            }
        }
        assert_eq!(lines, 100_000);
        assert!(
            b.buf.capacity() < 1024,
            "buffer grew to {}",
            b.buf.capacity()
        );
    }
}
