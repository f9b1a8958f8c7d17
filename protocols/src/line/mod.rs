//! The `line` seller protocol: a legacy, pipelined text protocol over plain TCP.
//!
//! Every message is one line `VERB SP TAG (TAB FIELD)* LF`, UTF-8, at most
//! [`MAX_LINE`] bytes including the LF. The client picks the tag and the seller echoes it
//! in every line of the answer, in any order relative to other tags. A field never holds
//! TAB or LF: encoders replace them with spaces.
//!
//! Requests: `QUOTE`, `ORDER`, `CANCEL`.
//! Answers: `OFFER`…`END`, `ORDERED` | `SOLDOUT` | `PRICE`, `CANCELLED`, `BUSY`, `ERR`.
//! (The simulator's admin listing, `ORDERS`…`ORDERREC`…`END`, is in `crate::admin`.)
//!
//! [`LineBuffer`] frames a byte stream into lines without I/O of its own.

mod fields;
mod framing;
mod request;
mod response;

pub use self::fields::sanitize_field;
pub(crate) use self::fields::{
    bad, field, fields, head, number, parse_amount, parse_currency, shorten, split_line,
};
pub use self::framing::LineBuffer;
pub use self::request::Request;
pub use self::response::Response;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::isbn::Isbn;
    use crate::money::{Currency, Money};
    use crate::offer::{OrderRequest, QuoteQuery, SellerOffer};

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
        assert!(matches!(
            Request::decode(b"ORDERS a"),
            Err(LineError::UnknownVerb(_))
        ));
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
    fn a_tab_in_a_title_becomes_a_space() {
        // Found by the line_seller fuzz target: the title was taken whole, TABs and
        // all, so what the engine read was not what any encoder could write.
        let line =
            b"OFFER q\to-1\t9780131103627\tNEW\t1250\t399\tGBP\t3\tThe C\tProgramming\tLanguage";
        let Ok(Response::Offer { offer, .. }) = Response::decode(line) else {
            panic!("not an offer");
        };
        assert_eq!(offer.title, "The C Programming Language");
        let mut out = Vec::new();
        Response::Offer {
            tag: "q".into(),
            offer: offer.clone(),
        }
        .encode(&mut out);
        let Ok(Response::Offer { offer: again, .. }) = Response::decode(&out) else {
            panic!("not an offer");
        };
        assert_eq!(again, offer);
    }

    #[test]
    fn a_cr_inside_a_line_is_refused_and_a_title_request_is_normalized() {
        // Found by the line_seller fuzz target, as the title above.
        assert!(matches!(
            Response::decode(b"ORDERED t\to-1\r2\t100\tGBP"),
            Err(LineError::BadFields { .. })
        ));
        assert!(Response::decode(b"END t\r").is_ok());
        let Ok(Request::Quote { query, .. }) = Request::decode(b"QUOTE q\tTITLE\tLes\tMis") else {
            panic!("not a quote");
        };
        assert_eq!(query, QuoteQuery::Title("Les Mis".into()));
        let Ok(Response::Err { message, .. }) = Response::decode(b"ERR q\tE1\tno\tluck") else {
            panic!("not an error");
        };
        assert_eq!(message, "no luck");
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
