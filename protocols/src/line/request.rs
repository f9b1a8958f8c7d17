//! Request lines, client to seller: the engine encodes them, a seller decodes them.

use super::fields::{
    bad, field, fields, head, last_field, number, parse_amount, parse_currency, sanitize_field,
    shorten, split_line,
};
use super::LineError;
use crate::isbn::Isbn;
use crate::money::Money;
use crate::offer::{OrderRequest, QuoteQuery};

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
}

impl Request {
    /// The tag.
    pub fn tag(&self) -> &str {
        match self {
            Request::Quote { tag, .. }
            | Request::Order { tag, .. }
            | Request::Cancel { tag, .. } => tag,
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
                    // Taken whole; a stray TAB becomes the space an encoder writes.
                    "TITLE" => QuoteQuery::Title(sanitize_field(value).into_owned()),
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
            other => Err(LineError::UnknownVerb(shorten(other))),
        }
    }
}
