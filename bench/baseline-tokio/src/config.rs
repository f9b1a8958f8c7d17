//! The part of the engine's config file (contract section 4) that a quote aggregator
//! needs: `[quotes] deadline_ms`, `[fx]` and `[[sellers]]`. Every other section and key
//! is ignored, so the same file that `sellersim --emit-config` writes for the engine
//! drives the baseline too.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use bookbroker_protocols::{Currency, FxTable};
use serde::Deserialize;

/// The config, as far as quotes go.
#[derive(Debug, Deserialize)]
pub struct Config {
    /// `[quotes]`.
    #[serde(default)]
    pub quotes: Quotes,
    /// `[fx]`.
    #[serde(default)]
    pub fx: Fx,
    /// `[[sellers]]`.
    #[serde(default)]
    pub sellers: Vec<SellerConfig>,
}

/// `[quotes]`.
#[derive(Debug, Deserialize)]
pub struct Quotes {
    /// One deadline for the whole fan-out.
    #[serde(default = "default_deadline_ms")]
    pub deadline_ms: u64,
}

impl Default for Quotes {
    fn default() -> Self {
        Quotes {
            deadline_ms: default_deadline_ms(),
        }
    }
}

fn default_deadline_ms() -> u64 {
    200
}

/// `[fx]`: the base currency and the value of one unit of each other currency in it.
#[derive(Debug, Deserialize)]
pub struct Fx {
    /// The base currency.
    #[serde(default = "default_base")]
    pub base: String,
    /// Rates, as the config author wrote them.
    #[serde(default)]
    pub rates: BTreeMap<String, f64>,
}

impl Default for Fx {
    fn default() -> Self {
        Fx {
            base: default_base(),
            rates: BTreeMap::new(),
        }
    }
}

fn default_base() -> String {
    "USD".to_string()
}

/// A seller protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// JSON over HTTP/1.1.
    Json,
    /// XML over HTTP/1.1.
    Xml,
    /// The tagged line protocol over TCP.
    Line,
}

/// `[[sellers]]`.
#[derive(Debug, Deserialize)]
pub struct SellerConfig {
    /// Name shown to customers.
    pub name: String,
    /// Protocol.
    pub protocol: Protocol,
    /// `http://host:port` for json/xml, `tcp://host:port` for line.
    pub endpoints: Vec<String>,
    /// Timeout of one request.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_timeout_ms() -> u64 {
    150
}

impl SellerConfig {
    /// The per-request timeout.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

impl Config {
    /// Reads and parses the file.
    pub fn load(path: &Path) -> Result<Config, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let config: Config =
            toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        if config.sellers.is_empty() {
            return Err(format!("{}: no [[sellers]]", path.display()));
        }
        Ok(config)
    }

    /// The FX table of `[fx]`, rates kept exactly as written (no float arithmetic).
    pub fn fx_table(&self) -> Result<FxTable, String> {
        let base = Currency::parse(&self.fx.base).map_err(|e| format!("fx.base: {e}"))?;
        let mut rates = Vec::with_capacity(self.fx.rates.len());
        for (code, rate) in &self.fx.rates {
            let currency = Currency::parse(code).map_err(|e| format!("fx.rates.{code}: {e}"))?;
            rates.push((currency, FxTable::rate_text_from_f64(*rate)));
        }
        let pairs: Vec<(Currency, &str)> = rates.iter().map(|(c, t)| (*c, t.as_str())).collect();
        FxTable::new(base, &pairs).map_err(|e| format!("fx.rates: {e}"))
    }
}
