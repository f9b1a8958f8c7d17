//! Deterministic catalogue generation: the books of a scenario and each seller's offers.

use std::collections::HashSet;

use bookbroker_protocols::{Condition, Currency, Isbn, SellerOffer};

use super::rng::{fnv1a, mix, unit_of, SplitMix64};
use super::scenario::{PriceBounds, Protocol};

/// A book of the shared catalogue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Book {
    pub isbn: Isbn,
    pub title: String,
}

const ADJECTIVES: &[&str] = &[
    "Quiet",
    "Silent",
    "Last",
    "Hidden",
    "Crimson",
    "Northern",
    "Little",
    "Golden",
    "Broken",
    "Endless",
    "Midnight",
    "Wandering",
    "Forgotten",
    "Bitter",
    "Gentle",
    "Distant",
    "Secret",
    "Salty",
    "Paper",
    "Glass",
];
const NOUNS: &[&str] = &[
    "Harbor",
    "Garden",
    "River",
    "Library",
    "Orchard",
    "Lighthouse",
    "Kingdom",
    "Voyage",
    "Winter",
    "Mirror",
    "Compass",
    "Letter",
    "Station",
    "Bridge",
    "Café",
    "Atlas",
    "Clockmaker",
    "Island",
    "Archive",
    "Fjord",
    "Summer",
    "Night Train",
    "Cartographer",
    "Bakery",
];
const PLACES: &[&str] = &[
    "Ærø",
    "Montréal",
    "Köln",
    "Zürich",
    "São Paulo",
    "Kraków",
    "Lisbon",
    "Kyoto",
    "Dublin",
    "Oslo",
    "Reykjavík",
    "Málaga",
    "Edinburgh",
    "Nîmes",
    "Tromsø",
    "Prague",
];
const NAMES: &[&str] = &[
    "Müller", "Hélène", "Søren", "José", "Zoë", "Ana", "Ingrid", "Tomás", "Chloé", "Björn",
    "Margaret", "Kenji", "Amélie", "Dvořák", "Nuño", "Clara",
];
const SUFFIXES: &[&str] = &[
    "",
    "",
    "",
    ": A Novel",
    " (Second Edition)",
    ", Volume II",
    ": Stories",
];

fn pick<'a>(rng: &mut SplitMix64, words: &[&'a str]) -> &'a str {
    let i = rng.below(words.len() as u64) as usize;
    words.get(i).copied().unwrap_or("")
}

fn title(rng: &mut SplitMix64) -> String {
    let suffix = pick(rng, SUFFIXES);
    let body = match rng.below(6) {
        0 => format!("The {} {}", pick(rng, ADJECTIVES), pick(rng, NOUNS)),
        1 => format!("The {} of {}", pick(rng, NOUNS), pick(rng, PLACES)),
        2 => format!("{}'s {}", pick(rng, NAMES), pick(rng, NOUNS)),
        3 => format!("A {} in {}", pick(rng, NOUNS), pick(rng, PLACES)),
        4 => format!(
            "{} {} and the {}",
            pick(rng, ADJECTIVES),
            pick(rng, NOUNS),
            pick(rng, NOUNS)
        ),
        _ => format!("Letters from {}", pick(rng, PLACES)),
    };
    format!("{body}{suffix}")
}

/// `count` distinct books from `seed`, always in the same order.
pub(crate) fn books(seed: u64, count: u32) -> Vec<Book> {
    let mut rng = SplitMix64::new(mix(seed, 0xB00C));
    let mut seen = HashSet::with_capacity(count as usize);
    let mut out = Vec::with_capacity(count as usize);
    while out.len() < count as usize {
        // Mostly 978; 979 without the 9790 (music) block.
        let prefix = if rng.below(5) == 0 {
            format!("979{}", 1 + rng.below(8))
        } else {
            "978".to_string()
        };
        let rest_len = 12 - prefix.len();
        let mut digits = prefix;
        for _ in 0..rest_len {
            digits.push(char::from(b'0' + rng.below(10) as u8));
        }
        let Some(isbn) = Isbn::from_prefix12(&digits) else {
            continue;
        };
        if !seen.insert(isbn) {
            continue;
        }
        out.push(Book {
            isbn,
            title: title(&mut rng),
        });
    }
    out
}

/// What the catalogue of one seller depends on.
pub(crate) struct SellerCatalogueSpec<'a> {
    pub seed: u64,
    pub name: &'a str,
    pub protocol: Protocol,
    pub currency: Currency,
    pub stock_share: f64,
    pub offers_per_isbn: u32,
    pub bounds: PriceBounds,
    pub stock: u32,
}

/// The offers of one seller, deterministic from the scenario seed and the seller's name.
pub(crate) fn seller_offers(books: &[Book], spec: &SellerCatalogueSpec<'_>) -> Vec<SellerOffer> {
    let key = mix(spec.seed, fnv1a(spec.name.as_bytes()));
    let mut rng = SplitMix64::new(key);
    let mut out = Vec::new();
    let mut n: u64 = 0;
    for book in books {
        // Decided per book from its ISBN alone, so the subset depends on nothing but the
        // seed, the seller's name and its share (a larger share stocks a superset).
        let stocked = unit_of(key, book.isbn.as_str().as_bytes()) < spec.stock_share;
        if !stocked {
            continue;
        }
        for k in 0..spec.offers_per_isbn {
            n += 1;
            let condition = match (spec.offers_per_isbn, k) {
                (1, _) | (_, 2..) => {
                    if rng.below(2) == 0 {
                        Condition::New
                    } else {
                        Condition::Used
                    }
                }
                (_, 0) => Condition::New,
                (_, 1) => Condition::Used,
            };
            let b = spec.bounds;
            let price = rng.between(b.price_min, b.price_max);
            let shipping = rng.between(b.shipping_min, b.shipping_max);
            let offer_id = match spec.protocol {
                Protocol::Json => format!("o-{n}"),
                Protocol::Xml => format!("b-{n}"),
                Protocol::Line => format!("L{n}"),
            };
            out.push(SellerOffer {
                offer_id,
                isbn: book.isbn,
                title: book.title.clone(),
                condition,
                price,
                shipping,
                currency: spec.currency,
                quantity: spec.stock,
            });
        }
    }
    out
}
