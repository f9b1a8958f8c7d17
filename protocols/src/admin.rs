//! The admin listing of a simulated seller's orders (`GET /admin/orders` for json and
//! xml sellers, `ORDERS` for line sellers), used by tests to check that nothing was
//! ordered twice.

use serde::{Deserialize, Serialize};

use crate::error::DecodeError;
use crate::http::{HttpRequest, HttpResponse, Reply};
use crate::line::{
    bad, field, fields, head, number, parse_amount, parse_currency, shorten, split_line, LineError,
};
use crate::wire::{decode_json, json_response, unexpected_status};

/// Whether an order still stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdminOrderStatus {
    /// Placed and not cancelled.
    Placed,
    /// Cancelled.
    Cancelled,
}

/// One order as the seller recorded it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminOrder {
    /// The seller's order id.
    pub order_id: String,
    /// The offer ordered.
    pub offer_id: String,
    /// The book (ISBN-13).
    pub isbn: String,
    /// Confirmed total, minor units.
    pub total_minor: i64,
    /// The seller's currency.
    pub currency: String,
    /// Placed or cancelled.
    pub status: AdminOrderStatus,
    /// The idempotency key the order came with.
    pub idempotency_key: String,
}

/// `GET /admin/orders` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminOrders {
    /// The seller's name.
    pub seller: String,
    /// Every order, oldest first.
    pub orders: Vec<AdminOrder>,
}

/// `GET /admin/orders` (json and xml sellers alike answer in JSON).
pub fn encode_request() -> HttpRequest {
    HttpRequest {
        method: "GET",
        path_and_query: "/admin/orders".to_string(),
        headers: vec![("accept", "application/json".to_string())],
        body: Vec::new(),
    }
}

/// Decodes `200` with an [`AdminOrders`] body.
pub fn decode_response(reply: Reply<'_>) -> Result<AdminOrders, DecodeError> {
    if reply.status != 200 {
        return Err(unexpected_status(&reply));
    }
    decode_json(reply.body)
}

/// `200` with the listing, as JSON.
pub fn encode_response(orders: &AdminOrders) -> HttpResponse {
    json_response(200, orders)
}

/// `ORDERS tag`: the admin listing request on a `line` seller, LF included.
pub fn encode_line_request(tag: &str, out: &mut Vec<u8>) {
    head(out, "ORDERS", tag);
    out.push(b'\n');
}

/// The tag of an `ORDERS` line, or `None` when the line is not one (a product request,
/// for `line::Request::decode`).
pub fn decode_line_request(line: &[u8]) -> Option<Result<String, LineError>> {
    let (verb, tag, rest) = split_line(line).ok()?;
    if verb != "ORDERS" {
        return None;
    }
    Some(fields::<0>("ORDERS", rest).map(|[]| tag.to_string()))
}

/// One line of the admin listing's answer on a `line` seller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineListing {
    /// `ORDERREC tag\torder_id\toffer_id\tisbn13\ttotal_minor\tcurrency\tstatus\tidempotency_key`.
    Record(AdminOrder),
    /// `END tag`: the listing is complete.
    End,
}

/// The listing as line-protocol answers: one `ORDERREC` per order, then `END`.
pub fn encode_line(tag: &str, orders: &[AdminOrder], out: &mut Vec<u8>) {
    for record in orders {
        encode_record(tag, record, out);
    }
    crate::line::Response::End {
        tag: tag.to_string(),
    }
    .encode(out);
}

fn encode_record(tag: &str, record: &AdminOrder, out: &mut Vec<u8>) {
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
    out.push(b'\n');
}

/// Decodes one line of the listing's answer.
pub fn decode_line(line: &[u8]) -> Result<LineListing, LineError> {
    let (verb, _tag, rest) = split_line(line)?;
    match verb {
        "END" => {
            fields::<0>("END", rest)?;
            Ok(LineListing::End)
        }
        "ORDERREC" => {
            const V: &str = "ORDERREC";
            let [order_id, offer_id, isbn, total, currency, status, key] = fields::<7>(V, rest)?;
            let status = match status {
                "placed" => AdminOrderStatus::Placed,
                "cancelled" => AdminOrderStatus::Cancelled,
                _ => return Err(bad(V, "status must be placed or cancelled")),
            };
            Ok(LineListing::Record(AdminOrder {
                order_id: order_id.to_string(),
                offer_id: offer_id.to_string(),
                isbn: isbn.to_string(),
                total_minor: parse_amount(V, "total_minor", total)?,
                currency: parse_currency(V, currency)?.code().to_string(),
                status,
                idempotency_key: key.to_string(),
            }))
        }
        other => Err(LineError::UnknownVerb(shorten(other))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_listing_round_trips() {
        let mut out = Vec::new();
        encode_line_request("a", &mut out);
        assert_eq!(out, b"ORDERS a\n");
        assert_eq!(decode_line_request(&out), Some(Ok("a".to_string())));
        assert_eq!(decode_line_request(b"QUOTE a\tISBN\t9780131103627"), None);
        assert!(matches!(decode_line_request(b"ORDERS a\tx"), Some(Err(_))));

        let record = AdminOrder {
            order_id: "so-1".into(),
            offer_id: "o-1".into(),
            isbn: "9780131103627".into(),
            total_minor: 4398,
            currency: "USD".into(),
            status: AdminOrderStatus::Cancelled,
            idempotency_key: "key-1".into(),
        };
        let mut out = Vec::new();
        encode_line("a", std::slice::from_ref(&record), &mut out);
        assert_eq!(
            String::from_utf8_lossy(&out),
            "ORDERREC a\tso-1\to-1\t9780131103627\t4398\tUSD\tcancelled\tkey-1\nEND a\n"
        );
        let lines: Vec<LineListing> = out
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| decode_line(l).unwrap())
            .collect();
        assert_eq!(lines, vec![LineListing::Record(record), LineListing::End]);
        assert!(matches!(
            decode_line(b"ORDERREC a\tso-1\to-1\t978\t1\tUSD\tlost\tk"),
            Err(LineError::BadFields { .. })
        ));
    }
}
