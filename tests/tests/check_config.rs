//! `bookbroker check-config` names every broken field and accepts a good config.

use std::process::Command;

use bookbroker_tests::{bin, Sim};

#[test]
fn check_config_accepts_the_emitted_config() {
    let sim = Sim::start("three_protocols.toml");
    let out = Command::new(bin("bookbroker"))
        .arg("check-config")
        .arg(&sim.config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn check_config_names_every_broken_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.toml");
    std::fs::write(
        &path,
        r#"
[fx]
base = "USD"
rates = { EUR = 1.08 }

[[sellers]]
name = "a"
protocol = "json"
endpoints = ["http://127.0.0.1:9001"]
currency = "USD"

[[sellers]]
name = "a"
protocol = "line"
endpoints = ["ftp://127.0.0.1:9002"]
currency = "XYZ"

[[customers]]
id = "c"
api_key_sha256 = "not-hex"
"#,
    )
    .unwrap();
    let out = Command::new(bin("bookbroker"))
        .arg("check-config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for field in [
        "sellers[1].name",
        "sellers[1].endpoints[0]",
        "sellers[1].currency",
        "customers[0].api_key_sha256",
    ] {
        assert!(err.contains(field), "{field} not named in:\n{err}");
    }

    std::fs::write(&path, "[server]\nlisten = 8080\n").unwrap();
    let out = Command::new(bin("bookbroker"))
        .arg("check-config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("listen"));

    let out = Command::new(bin("bookbroker"))
        .args(["serve", "--config"])
        .arg(dir.path().join("missing.toml"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.toml"));
}

#[test]
fn check_config_knows_the_runtime_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    for good in ["auto", "io_uring", "epoll", "glommio"] {
        std::fs::write(&path, format!("[server]\nruntime = \"{good}\"\n")).unwrap();
        let out = Command::new(bin("bookbroker"))
            .arg("check-config")
            .arg(&path)
            .output()
            .unwrap();
        // No sellers, so not a whole config; but nothing about the runtime.
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("sellers") && !err.contains("runtime"),
            "{good}: {err}"
        );
    }
    std::fs::write(&path, "[server]\nruntime = \"uring\"\n").unwrap();
    let out = Command::new(bin("bookbroker"))
        .arg("check-config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("runtime") && err.contains("epoll"), "{err}");
}

#[test]
fn check_config_knows_the_cluster_section() {
    let sim = Sim::start("three_protocols.toml");
    let check = |section: &str| {
        let path = sim.config_with(|c| format!("{c}\n[cluster]\n{section}\n"));
        Command::new(bin("bookbroker"))
            .arg("check-config")
            .arg(&path)
            .output()
            .unwrap()
    };
    let out = check("nodes = [\"10.0.0.1:8080\", \"10.0.0.2:8080\", \"10.0.0.3:8080\"]\nnode = 1");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("node 1 of a cluster of 3"), "{said}");

    let out = check("nodes = [\"10.0.0.1:8080\", \"10.0.0.1:8080\", \"nowhere\"]\nnode = 3");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for field in ["cluster.nodes[1]", "cluster.nodes[2]", "cluster.node"] {
        assert!(err.contains(field), "{field} not named in:\n{err}");
    }

    // haproxy-config refuses a config with problems, and writes one for a good cluster.
    let path =
        sim.config_with(|c| format!("{c}\n[cluster]\nnodes = [\"a:1\", \"b:1\"]\nnode = 0\n"));
    let out = Command::new(bin("bookbroker"))
        .args(["haproxy-config", "--listen", "127.0.0.1:8080", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cfg = String::from_utf8_lossy(&out.stdout);
    assert!(
        cfg.contains("crc32,mod(2)") && cfg.contains("backend p1"),
        "{cfg}"
    );
    let out = Command::new(bin("bookbroker"))
        .args(["haproxy-config", "--listen", "nowhere", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--listen"));
}
