//! The `xml` seller protocol (HTTP/1.1, modelled on AbeBooks' search service).
//!
//! Client side (the engine): [`encode_quote`], [`decode_quote`], [`encode_order`],
//! [`decode_order`], [`encode_cancel`], [`decode_cancel`].
//! Server side (`sellersim`): the [`server`] module. Whitespace around element text is
//! trimmed and entities are decoded.

use crate::error::DecodeError;
use crate::http::{encode_query_value, HttpRequest, Reply};
use crate::isbn::Isbn;
use crate::money::{Currency, Money};
use crate::offer::{CancelOutcome, Condition, OrderOutcome, OrderRequest, QuoteQuery, SellerOffer};
use crate::wire::{shorten, unexpected_status};

use tree::Element;

/// `GET /search?isbn=…` or `?title=…`.
pub fn encode_quote(query: &QuoteQuery) -> HttpRequest {
    let path_and_query = match query {
        QuoteQuery::Isbn(isbn) => format!("/search?isbn={isbn}"),
        QuoteQuery::Title(title) => format!("/search?title={}", encode_query_value(title)),
    };
    HttpRequest {
        method: "GET",
        path_and_query,
        headers: vec![("accept", "application/xml".to_string())],
        body: Vec::new(),
    }
}

fn malformed(msg: impl Into<String>) -> DecodeError {
    DecodeError::Malformed(msg.into())
}

/// Parses a body whose root element must be `root`.
fn parse_root(body: &[u8], root: &str) -> Result<Element, DecodeError> {
    let doc = tree::parse(body).map_err(DecodeError::Malformed)?;
    if !doc.name.eq_ignore_ascii_case(root) {
        return Err(malformed(format!(
            "expected <{root}>, found <{}>",
            shorten(&doc.name)
        )));
    }
    Ok(doc)
}

fn required<'e>(parent: &'e Element, name: &str) -> Result<&'e Element, DecodeError> {
    parent
        .child(name)
        .ok_or_else(|| malformed(format!("<{}> without <{name}>", parent.name)))
}

/// An amount element such as `<total currency="EUR">15.50</total>`; the attribute wins
/// over `fallback`.
fn amount(el: &Element, fallback: Option<Currency>) -> Result<Money, String> {
    let currency = match el.attr("currency") {
        Some(code) => Currency::parse(code.trim()).map_err(|e| e.to_string())?,
        None => fallback.ok_or_else(|| format!("<{}> without currency", el.name))?,
    };
    Money::parse_decimal(&el.text, currency).map_err(|e| format!("<{}>: {e}", el.name))
}

fn book(el: &Element) -> Result<SellerOffer, DecodeError> {
    let offer_id = required(el, "bookId")?.text.clone();
    let isbn_el = el
        .child("isbn13")
        .or_else(|| el.child("isbn"))
        .ok_or_else(|| malformed(format!("book {:?} without <isbn13>", shorten(&offer_id))))?;
    let isbn = Isbn::parse(&isbn_el.text)
        .map_err(|e| malformed(format!("book {:?}: {e}", shorten(&offer_id))))?;
    let title = el
        .child("title")
        .map(|t| t.text.clone())
        .unwrap_or_default();
    let condition = Condition::from_seller(
        el.child("itemCondition")
            .map(|c| c.text.as_str())
            .unwrap_or(""),
    );
    let quantity = match el.child("quantity") {
        Some(q) => q
            .text
            .parse::<u32>()
            .map_err(|_| malformed(format!("book {:?}: bad quantity", shorten(&offer_id))))?,
        None => 1,
    };
    let vendor_currency = match el.child("vendorCurrency") {
        Some(c) => Some(
            Currency::parse(&c.text)
                .map_err(|e| malformed(format!("book {:?}: {e}", shorten(&offer_id))))?,
        ),
        None => None,
    };
    let price = amount(required(el, "listingPrice")?, vendor_currency)
        .map_err(|e| malformed(format!("book {:?}: {e}", shorten(&offer_id))))?;
    let shipping = match el.child("firstBookShipCost") {
        Some(s) => amount(s, Some(price.currency))
            .map_err(|e| malformed(format!("book {:?}: {e}", shorten(&offer_id))))?,
        None => Money::new(0, price.currency),
    };
    if shipping.currency != price.currency {
        return Err(malformed(format!(
            "book {:?}: price in {} but shipping in {}",
            shorten(&offer_id),
            price.currency,
            shipping.currency
        )));
    }
    if price.minor < 0 || shipping.minor < 0 {
        return Err(malformed(format!(
            "book {:?}: negative amount",
            shorten(&offer_id)
        )));
    }
    Ok(SellerOffer {
        offer_id,
        isbn,
        title,
        condition,
        price: price.minor,
        shipping: shipping.minor,
        currency: price.currency,
        quantity,
    })
}

/// Decodes `<searchResults>…<Book>…</Book></searchResults>`; `503` is
/// [`DecodeError::Busy`].
pub fn decode_quote(reply: Reply<'_>) -> Result<Vec<SellerOffer>, DecodeError> {
    if reply.status != 200 {
        return Err(unexpected_status(&reply));
    }
    let doc = parse_root(reply.body, "searchResults")?;
    // `resultCount` is advisory: the Book elements are what counts.
    doc.children_named("Book").map(book).collect()
}

/// `POST /order` with an `<order>` body (the idempotency key is `requestId`).
pub fn encode_order(order: &OrderRequest) -> HttpRequest {
    let body = format!(
        "<order><bookId>{}</bookId><expectedTotal currency=\"{}\">{}</expectedTotal>\
         <requestId>{}</requestId><shipTo>{}</shipTo></order>",
        tree::escape(&order.offer_id),
        order.expected_total.currency,
        order.expected_total.to_decimal(),
        tree::escape(&order.idempotency_key),
        tree::escape(&order.shipping_token),
    );
    HttpRequest {
        method: "POST",
        path_and_query: "/order".to_string(),
        headers: vec![("content-type", "application/xml".to_string())],
        body: body.into_bytes(),
    }
}

/// Decodes `<orderResult>` with status `ok`, `soldOut` or `priceChanged`; `inProgress`
/// (the seller still works on this `requestId`) is [`DecodeError::InProgress`], and an
/// `ok` with an order id but an unreadable total is [`DecodeError::Unconfirmed`].
pub fn decode_order(reply: Reply<'_>) -> Result<OrderOutcome, DecodeError> {
    if reply.status != 200 && reply.status != 201 {
        return Err(unexpected_status(&reply));
    }
    let doc = parse_root(reply.body, "orderResult")?;
    let status = required(&doc, "status")?.text.as_str();
    let total = || -> Result<Money, DecodeError> {
        amount(required(&doc, "total")?, None).map_err(DecodeError::Malformed)
    };
    if status.eq_ignore_ascii_case("ok") {
        let order_id = required(&doc, "orderId")?.text.clone();
        if order_id.is_empty() {
            return Err(malformed("empty <orderId>"));
        }
        match total() {
            Ok(total) => Ok(OrderOutcome::Ordered { order_id, total }),
            Err(e) => Err(DecodeError::Unconfirmed {
                order_id,
                reason: e.to_string(),
            }),
        }
    } else if status.eq_ignore_ascii_case("inProgress") {
        Err(DecodeError::InProgress {
            retry_after_ms: crate::http::retry_after_ms(reply.retry_after),
        })
    } else if status.eq_ignore_ascii_case("soldOut") {
        Ok(OrderOutcome::SoldOut)
    } else if status.eq_ignore_ascii_case("priceChanged") {
        Ok(OrderOutcome::PriceChanged { total: total()? })
    } else {
        Err(DecodeError::Remote {
            code: shorten(status),
            message: doc
                .child("message")
                .map(|m| shorten(&m.text))
                .unwrap_or_default(),
        })
    }
}

/// `POST /order/cancel` with `<cancel><orderId>…</orderId></cancel>`.
pub fn encode_cancel(order_id: &str) -> HttpRequest {
    HttpRequest {
        method: "POST",
        path_and_query: "/order/cancel".to_string(),
        headers: vec![("content-type", "application/xml".to_string())],
        body: format!(
            "<cancel><orderId>{}</orderId></cancel>",
            tree::escape(order_id)
        )
        .into_bytes(),
    }
}

/// Decodes `<cancelResult><status>ok</status></cancelResult>`.
pub fn decode_cancel(reply: Reply<'_>) -> Result<CancelOutcome, DecodeError> {
    if reply.status != 200 {
        return Err(unexpected_status(&reply));
    }
    let doc = parse_root(reply.body, "cancelResult")?;
    let status = required(&doc, "status")?.text.as_str();
    if status.eq_ignore_ascii_case("ok") || status.eq_ignore_ascii_case("cancelled") {
        Ok(CancelOutcome::Cancelled)
    } else {
        Err(DecodeError::Remote {
            code: shorten(status),
            message: doc
                .child("message")
                .map(|m| shorten(&m.text))
                .unwrap_or_default(),
        })
    }
}

/// A minimal element tree over quick-xml events, built without recursion.
mod tree {
    use quick_xml::events::{BytesStart, Event};
    use quick_xml::Reader;

    /// Deepest nesting accepted; real answers are three levels deep.
    const MAX_DEPTH: usize = 32;

    /// An element: name (namespace prefix dropped), attributes, trimmed text, children.
    #[derive(Debug, Default)]
    pub(super) struct Element {
        pub name: String,
        pub attrs: Vec<(String, String)>,
        pub text: String,
        pub children: Vec<Element>,
    }

    impl Element {
        pub fn child(&self, name: &str) -> Option<&Element> {
            self.children
                .iter()
                .find(|c| c.name.eq_ignore_ascii_case(name))
        }

        pub fn children_named<'s>(
            &'s self,
            name: &'s str,
        ) -> impl Iterator<Item = &'s Element> + 's {
            self.children
                .iter()
                .filter(move |c| c.name.eq_ignore_ascii_case(name))
        }

        pub fn attr(&self, name: &str) -> Option<&str> {
            self.attrs
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }
    }

    fn open(start: &BytesStart<'_>) -> Result<Element, String> {
        let name = std::str::from_utf8(start.local_name().as_ref())
            .map_err(|_| "element name is not UTF-8".to_string())?
            .to_string();
        let mut attrs = Vec::new();
        for attr in start.attributes() {
            let attr = attr.map_err(|e| format!("bad attribute: {e}"))?;
            let key = std::str::from_utf8(attr.key.local_name().as_ref())
                .map_err(|_| "attribute name is not UTF-8".to_string())?
                .to_string();
            let value = attr
                .unescape_value()
                .map_err(|e| format!("bad attribute value: {e}"))?
                .into_owned();
            attrs.push((key, value));
        }
        Ok(Element {
            name,
            attrs,
            text: String::new(),
            children: Vec::new(),
        })
    }

    /// Closes the innermost open element into its parent, or makes it the root.
    fn close(stack: &mut Vec<Element>, root: &mut Option<Element>) -> Result<(), String> {
        let mut el = stack.pop().ok_or("unbalanced end tag")?;
        // A seller that sends a raw NUL (or another character XML 1.0 cannot carry) gets
        // a space for it, as our own encoder writes it: what we read is always text an
        // XML document could hold.
        if el.text.contains(|c| !carriable(c)) {
            el.text = el
                .text
                .chars()
                .map(|c| if carriable(c) { c } else { ' ' })
                .collect();
        }
        let trimmed = el.text.trim();
        if trimmed.len() != el.text.len() {
            el.text = trimmed.to_string();
        }
        match stack.last_mut() {
            Some(parent) => parent.children.push(el),
            None if root.is_none() => *root = Some(el),
            None => return Err("more than one root element".to_string()),
        }
        Ok(())
    }

    /// Parses a whole document into its root element.
    pub(super) fn parse(body: &[u8]) -> Result<Element, String> {
        let mut reader = Reader::from_reader(body);
        reader.config_mut().check_end_names = true;
        let mut stack: Vec<Element> = Vec::new();
        let mut root: Option<Element> = None;
        loop {
            let event = reader
                .read_event()
                .map_err(|e| format!("invalid XML at byte {}: {e}", reader.error_position()))?;
            match event {
                Event::Start(start) => {
                    if stack.len() >= MAX_DEPTH {
                        return Err("XML nested too deeply".to_string());
                    }
                    if root.is_some() {
                        return Err("more than one root element".to_string());
                    }
                    stack.push(open(&start)?);
                }
                Event::Empty(start) => {
                    if root.is_some() && stack.is_empty() {
                        return Err("more than one root element".to_string());
                    }
                    stack.push(open(&start)?);
                    close(&mut stack, &mut root)?;
                }
                Event::End(_) => close(&mut stack, &mut root)?,
                Event::Text(text) => {
                    let text = text.unescape().map_err(|e| format!("bad text: {e}"))?;
                    match stack.last_mut() {
                        Some(el) => el.text.push_str(&text),
                        None if text.trim().is_empty() => {}
                        None => return Err("text outside the root element".to_string()),
                    }
                }
                Event::CData(cdata) => {
                    let bytes = cdata.into_inner();
                    let text = std::str::from_utf8(&bytes)
                        .map_err(|_| "CDATA is not UTF-8".to_string())?;
                    match stack.last_mut() {
                        Some(el) => el.text.push_str(text),
                        None => return Err("CDATA outside the root element".to_string()),
                    }
                }
                Event::Decl(_) | Event::PI(_) | Event::Comment(_) | Event::DocType(_) => {}
                Event::Eof => break,
            }
        }
        if !stack.is_empty() {
            return Err("unclosed element".to_string());
        }
        root.ok_or_else(|| "no root element".to_string())
    }

    /// Whether XML 1.0 can carry `c`: not a control character other than TAB, CR and LF,
    /// and not U+FFFE or U+FFFF.
    pub(crate) fn carriable(c: char) -> bool {
        matches!(c, '\t' | '\n' | '\r') || !(c.is_control() || c == '\u{FFFE}' || c == '\u{FFFF}')
    }

    /// Escapes text or an attribute value, and replaces characters XML 1.0 cannot carry
    /// (control characters other than TAB, CR, LF) with spaces.
    pub(crate) fn escape(text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        for c in text.chars() {
            match c {
                '&' => out.push_str("&amp;"),
                '<' => out.push_str("&lt;"),
                '>' => out.push_str("&gt;"),
                '"' => out.push_str("&quot;"),
                '\'' => out.push_str("&apos;"),
                c if carriable(c) => out.push(c),
                _ => out.push(' '),
            }
        }
        out
    }
}

/// The server side, for simulated sellers.
pub mod server {
    use super::tree::{self, escape, Element};
    use crate::error::RequestError;
    use crate::http::HttpResponse;
    use crate::money::{Currency, Money};
    use crate::offer::{OrderOutcome, OrderRequest, QuoteQuery, SellerOffer};

    /// A request an xml seller understands.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum Route {
        /// `GET /search`.
        Quote,
        /// `POST /order`.
        Order,
        /// `POST /order/cancel`.
        Cancel,
        /// `GET /admin/orders`.
        AdminOrders,
        /// Anything else.
        NotFound,
    }

    /// Routes a request by method and path (without query).
    pub fn route(method: &str, path: &str) -> Route {
        let path = path.split_once('?').map_or(path, |(p, _)| p);
        match (method, path) {
            ("GET", "/search") => Route::Quote,
            ("POST", "/order") => Route::Order,
            ("POST", "/order/cancel") => Route::Cancel,
            ("GET", "/admin/orders") => Route::AdminOrders,
            _ => Route::NotFound,
        }
    }

    /// Reads the query of `GET /search` (`isbn=` or `title=`).
    pub fn decode_quote(query: &str) -> Result<QuoteQuery, RequestError> {
        crate::wire::decode_search_query(query, "title", "isbn or title")
    }

    fn xml_response(status: u16, body: String) -> HttpResponse {
        HttpResponse {
            status,
            content_type: "application/xml",
            headers: Vec::new(),
            body: body.into_bytes(),
        }
    }

    /// `200 <searchResults>` (text escaped).
    pub fn encode_quote(offers: &[SellerOffer]) -> HttpResponse {
        use std::fmt::Write;
        let mut body = String::with_capacity(64 + offers.len() * 320);
        let _ = write!(
            body,
            "<searchResults><resultCount>{}</resultCount>",
            offers.len()
        );
        for o in offers {
            let _ = write!(
                body,
                "<Book><bookId>{}</bookId><isbn13>{}</isbn13><title>{}</title>\
                 <itemCondition>{}</itemCondition><quantity>{}</quantity>\
                 <vendorCurrency>{}</vendorCurrency><listingPrice>{}</listingPrice>\
                 <firstBookShipCost>{}</firstBookShipCost></Book>",
                escape(&o.offer_id),
                o.isbn,
                escape(&o.title),
                match o.condition {
                    crate::offer::Condition::New => "New",
                    crate::offer::Condition::Used => "Used",
                },
                o.quantity,
                o.currency,
                Money::new(o.price, o.currency).to_decimal(),
                Money::new(o.shipping, o.currency).to_decimal(),
            );
        }
        body.push_str("</searchResults>");
        xml_response(200, body)
    }

    fn parse_request(body: &[u8], root: &str) -> Result<Element, RequestError> {
        let doc = tree::parse(body).map_err(RequestError::Malformed)?;
        if !doc.name.eq_ignore_ascii_case(root) {
            return Err(RequestError::Malformed(format!("expected <{root}>")));
        }
        Ok(doc)
    }

    fn required_text<'e>(doc: &'e Element, name: &'static str) -> Result<&'e str, RequestError> {
        match doc.child(name) {
            Some(el) if !el.text.is_empty() => Ok(&el.text),
            _ => Err(RequestError::Missing(name)),
        }
    }

    /// Reads an `<order>` body. `currency` is the seller's own, used when the
    /// `expectedTotal` element has no `currency` attribute.
    pub fn decode_order(body: &[u8], currency: Currency) -> Result<OrderRequest, RequestError> {
        let doc = parse_request(body, "order")?;
        let offer_id = required_text(&doc, "bookId")?.to_string();
        let total_el = doc
            .child("expectedTotal")
            .ok_or(RequestError::Missing("expectedTotal"))?;
        let expected_total =
            super::amount(total_el, Some(currency)).map_err(|reason| RequestError::Invalid {
                field: "expectedTotal",
                reason,
            })?;
        let idempotency_key = required_text(&doc, "requestId")?.to_string();
        let shipping_token = doc
            .child("shipTo")
            .map(|s| s.text.clone())
            .unwrap_or_default();
        Ok(OrderRequest {
            offer_id,
            expected_total,
            idempotency_key,
            shipping_token,
        })
    }

    /// `200 <orderResult>`.
    pub fn encode_order(outcome: &OrderOutcome) -> HttpResponse {
        let body = match outcome {
            OrderOutcome::Ordered { order_id, total } => format!(
                "<orderResult><status>ok</status><orderId>{}</orderId>\
                 <total currency=\"{}\">{}</total></orderResult>",
                escape(order_id),
                total.currency,
                total.to_decimal()
            ),
            OrderOutcome::SoldOut => {
                "<orderResult><status>soldOut</status></orderResult>".to_string()
            }
            OrderOutcome::PriceChanged { total } => format!(
                "<orderResult><status>priceChanged</status>\
                 <total currency=\"{}\">{}</total></orderResult>",
                total.currency,
                total.to_decimal()
            ),
        };
        xml_response(200, body)
    }

    /// Reads a `<cancel>` body, giving the order id.
    pub fn decode_cancel(body: &[u8]) -> Result<String, RequestError> {
        let doc = parse_request(body, "cancel")?;
        Ok(required_text(&doc, "orderId")?.to_string())
    }

    /// `200 <cancelResult><status>ok</status></cancelResult>`.
    pub fn encode_cancel() -> HttpResponse {
        xml_response(
            200,
            "<cancelResult><status>ok</status></cancelResult>".to_string(),
        )
    }

    /// `503` with `Retry-After` (overload), or another status with a short XML error.
    pub fn encode_error(status: u16, error: &str, retry_after_s: Option<u64>) -> HttpResponse {
        let mut resp = xml_response(status, format!("<error>{}</error>", escape(error)));
        if let Some(s) = retry_after_s {
            resp.headers.push(("retry-after", s.to_string()));
        }
        resp
    }

    /// `200 <orderResult><status>inProgress</status></orderResult>`: an order with this
    /// `requestId` is still being worked on (design section 3, "Keys in progress"). The
    /// outcome is unknown, not refused: the client asks again with the same key.
    pub fn encode_in_progress() -> HttpResponse {
        xml_response(
            200,
            "<orderResult><status>inProgress</status></orderResult>".to_string(),
        )
    }

    #[cfg(test)]
    mod tests {
        use super::encode_in_progress;

        #[test]
        fn in_progress_is_an_order_result_with_status_in_progress() {
            let r = encode_in_progress();
            assert_eq!(r.status, 200);
            assert_eq!(r.content_type, "application/xml");
            let doc = super::tree::parse(&r.body).unwrap();
            assert_eq!(doc.name, "orderResult");
            assert_eq!(
                doc.child("status").map(|s| s.text.as_str()),
                Some("inProgress")
            );
            assert!(doc.child("orderId").is_none() && doc.child("total").is_none());
        }

        #[test]
        fn characters_xml_cannot_carry_are_read_as_spaces() {
            // Found by the xml_seller fuzz target: a raw NUL in a title was read as is,
            // though no XML document (ours included) can carry it.
            let doc = super::tree::parse(b"<a><title>C\0\x08Lang\0</title></a>").unwrap();
            assert_eq!(doc.child("title").map(|t| t.text.as_str()), Some("C  Lang"));
        }
    }
}
