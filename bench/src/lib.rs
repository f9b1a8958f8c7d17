//! Shared inputs for bookbroker's benchmarks: realistic seller answers built with the
//! protocols crate's own server-side encoders, so the decoders are measured on exactly
//! what `sellersim` sends.
#![warn(missing_docs)]

use bookbroker_protocols::{Condition, Currency, Isbn, SellerOffer};

/// The ISBN every generated offer is for (The C Programming Language, 2nd edition).
pub fn isbn() -> Isbn {
    // A literal with a correct check digit: parsing cannot fail, and a benchmark input
    // that did would be a bug worth stopping on.
    match Isbn::parse("9780131103627") {
        Ok(isbn) => isbn,
        Err(e) => panic!("benchmark ISBN literal is invalid: {e}"),
    }
}

/// `n` offers in `currency`, with realistic titles (some non-ASCII) and mixed conditions.
pub fn offers(n: usize, currency: Currency) -> Vec<SellerOffer> {
    let titles = [
        "The C Programming Language",
        "Café Society: A Novel of Müller and the Ærø Lighthouse",
        "Structure and Interpretation of Computer Programs (Second Edition)",
        "日本の本",
    ];
    (0..n)
        .map(|i| SellerOffer {
            offer_id: format!("o-{}", 1000 + i),
            isbn: isbn(),
            title: titles[i % titles.len()].to_string(),
            condition: if i % 3 == 0 {
                Condition::New
            } else {
                Condition::Used
            },
            price: 1000 + (i as i64 * 137) % 4000,
            shipping: 199 + (i as i64 * 53) % 500,
            currency,
            quantity: 1 + (i as u32 % 5),
        })
        .collect()
}
