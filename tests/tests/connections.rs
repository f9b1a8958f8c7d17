//! Sequential quotes reuse the engine's pooled connections instead of opening new ones.

use bookbroker_tests::{Engine, Sim, KEY};

#[test]
fn a_thousand_sequential_quotes_open_a_handful_of_connections_per_seller() {
    let sim = Sim::start("three_protocols.toml");
    let cores = 2;
    let engine = Engine::start(&sim.config, cores);
    let mut client = engine.client();
    for i in 0..1000 {
        let isbn = &sim.isbns[i % sim.isbns.len()];
        let q = client.get(&format!("/v1/quotes?isbn={isbn}"), Some(KEY));
        assert_eq!(q.status, 200);
    }
    let stats = sim.stats();
    let sellers = stats["sellers"].as_array().unwrap();
    assert_eq!(sellers.len(), 4);
    for s in sellers {
        let opened = s["connections_accepted"].as_u64().unwrap();
        let quotes = s["requests"]["quote"].as_u64().unwrap();
        assert!(quotes >= 1000, "{s}");
        // At most a handful per core: the line client keeps two per endpoint, and a
        // hedge may open one more HTTP connection now and then.
        assert!(
            opened <= 4 * cores as u64,
            "{} opened {opened} connections",
            s["name"]
        );
    }
}
