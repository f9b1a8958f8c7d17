//! Answer lines, seller to client: a seller encodes them, the engine decodes them.

use super::fields::{
    bad, field, fields, head, last_field, number, parse_amount, parse_currency, parse_digits,
    parse_signed_amount, sanitize_field, shorten, split_line,
};
use super::LineError;
use crate::isbn::Isbn;
use crate::money::Money;
use crate::offer::{Condition, SellerOffer};

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
            | Response::Err { tag, .. } => tag,
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
                // The title is last and taken whole, so a stray TAB in it costs nothing;
                // it becomes a space, as an encoder would have written it, so a title
                // never holds TAB, CR or LF whoever sent it.
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
                        title: sanitize_field(title).into_owned(),
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
                    // Taken whole, like a title: a stray TAB becomes a space.
                    message: sanitize_field(message).into_owned(),
                })
            }
            other => Err(LineError::UnknownVerb(shorten(other))),
        }
    }

    /// Whether this line ends the answer for its tag (`END`, and every single-line
    /// answer: `ORDERED`, `SOLDOUT`, `PRICE`, `CANCELLED`, `BUSY`, `ERR`).
    pub fn is_final(&self) -> bool {
        !matches!(self, Response::Offer { .. })
    }
}
