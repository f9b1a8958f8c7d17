//! `bookbroker demo`: the embedded default. Starts the simulated sellers and payment
//! provider of the simulator's demo scenario (`sellersim/scenarios/demo.toml`, compiled
//! into the simulator crate) in-process on loopback, writes the engine config they imply
//! into a temporary directory, and serves it. Only built with the `demo` feature, so the
//! engine library never depends on the simulator.

use std::path::PathBuf;

use bookbroker_engine::config::Config;
use bookbroker_sellersim::{RunningSim, Scenario, DEMO_API_KEY, DEMO_SCENARIO};

/// A running demo: the simulator and the config to serve.
pub struct Demo {
    /// The simulator (stops when dropped or with [`RunningSim::stop`]).
    pub sim: RunningSim,
    /// The engine config pointing at it.
    pub config: Config,
    /// Where the config and certificates were written.
    pub dir: PathBuf,
}

/// Why the demo could not start.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The simulator failed.
    #[error("simulated sellers: {0}")]
    Sim(String),
    /// Writing the config failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The generated config is invalid (a bug).
    #[error("generated config: {0}")]
    Config(String),
}

impl Demo {
    /// Starts the simulator and prepares the config; `listen` overrides the address.
    pub fn start(listen: &str) -> Result<Demo, DemoError> {
        let scenario =
            Scenario::from_toml_str(DEMO_SCENARIO).map_err(|e| DemoError::Sim(e.to_string()))?;
        let sim = RunningSim::start(scenario, std::net::Ipv4Addr::LOCALHOST.into())
            .map_err(|e| DemoError::Sim(e.to_string()))?;
        let dir = std::env::temp_dir().join(format!("bookbroker-demo-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let ca = dir.join("ca.pem");
        let text = sim
            .engine_config(&ca)
            .map_err(|e| DemoError::Sim(e.to_string()))?;
        let path = dir.join("bookbroker.toml");
        std::fs::write(&path, text)?;
        let mut config = Config::load_valid(&path).map_err(|e| DemoError::Config(e.to_string()))?;
        config.server.listen = listen.to_string();
        config.server.data_dir = dir.join("data");
        Ok(Demo { sim, config, dir })
    }

    /// Ready-to-paste commands for the user.
    pub fn instructions(&self, listen: &str) -> String {
        let base = format!("http://{listen}");
        // An ISBN every seller stocks, so the first command shows offers from all of them.
        let isbn = self
            .sim
            .isbns_stocked_by_all()
            .first()
            .cloned()
            .or_else(|| self.sim.isbns().into_iter().next())
            .unwrap_or_else(|| "9780131103627".into());
        let sellers: Vec<&str> = self
            .config
            .sellers
            .iter()
            .map(|s| s.name.as_str())
            .collect();
        format!(
            "bookbroker demo: {n} simulated sellers ({names}) and a payment provider on loopback\n\
             config: {cfg}\n\
             API key of customer \"demo\": {key}\n\n\
             Try:\n\
             curl -s -H 'Authorization: Bearer {key}' '{base}/v1/quotes?isbn={isbn}&currency=USD'\n\
             curl -s -H 'Authorization: Bearer {key}' '{base}/v1/quotes?isbn={isbn}&currency=EUR&condition=new'\n\
             curl -s -H 'Authorization: Bearer {key}' '{base}/v1/quotes?title=the&currency=GBP'\n\
             \nBuy it (at most 100.00 USD); run the same command again and the answer is the same,\n\
             because the Idempotency-Key is the same:\n\
             curl -s -X POST -H 'Authorization: Bearer {key}' -H 'Content-Type: application/json' \\\n  \
             -H 'Idempotency-Key: demo-order-1' '{base}/v1/purchases' \\\n  \
             -d '{{\"isbn\":\"{isbn}\",\"max_price\":10000,\"currency\":\"USD\",\"payment_token\":\"tok_ok_4242\",\"shipping_token\":\"ship_home\"}}'\n\
             curl -s -H 'Authorization: Bearer {key}' '{base}/v1/purchases/<id from the answer>'\n\n\
             curl -s '{base}/metrics'\n\n\
             Press Ctrl-C to stop.",
            n = sellers.len(),
            names = sellers.join(", "),
            cfg = self.dir.join("bookbroker.toml").display(),
            key = DEMO_API_KEY,
        )
    }
}
