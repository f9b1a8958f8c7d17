//! Where io_uring is refused the way Docker's default seccomp profile refuses it
//! (`io_uring_setup`, `io_uring_enter` and `io_uring_register` fail with `EPERM`; the
//! `no-io-uring` helper installs that filter and execs the engine): `auto` falls back to
//! epoll, says so, and serves; an explicit io_uring backend fails at once, clearly.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bookbroker_tests::{
    bin, free_port, purchase_body, purchase_until_final, reconcile, statuses, Engine,
    EngineOptions, Sim, KEY,
};

#[test]
fn auto_falls_back_to_epoll_says_why_and_serves_quotes_and_purchases() {
    let sim = Sim::start("purchases.toml");
    let engine = Engine::start_opts(
        &sim.config,
        2,
        &EngineOptions {
            runtime: Some("auto".into()),
            wrapper: vec![bin("no-io-uring").into()],
            ..EngineOptions::default()
        },
    );
    let log = engine.log_plain();
    assert_eq!(engine.backend().as_deref(), Some("epoll"), "{log}");
    let chosen: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("executor backend:"))
        .collect();
    assert_eq!(
        chosen.len(),
        1,
        "one line says which backend and why: {log}"
    );
    assert!(
        chosen[0].contains("io_uring refused by the kernel")
            && chosen[0].contains("EPERM")
            && chosen[0].contains("using epoll"),
        "{log}"
    );

    let q = engine.get(&format!("/v1/quotes?isbn={}&currency=USD", sim.isbns[0]));
    assert_eq!(q.status, 200, "{}", q.text());
    let v = q.json();
    assert_eq!(v["complete"], true, "{v}");
    assert!(statuses(&v).values().all(|s| s == "ok"), "{v}");

    let body = purchase_body(&sim.isbns[2], 100_000, "USD", "tok_ok_4242", "ship_home");
    let r = purchase_until_final(
        engine.addr,
        KEY,
        "no-io-uring-1",
        &body,
        &[],
        Duration::from_secs(60),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let problems = reconcile(&[r.json()], &sim.ledger(), &sim.orders());
    assert!(problems.is_empty(), "{problems:#?}");
}

/// Runs the engine under the filter with `--runtime runtime` and returns its exit
/// status, its stderr and how long it took; kills it after 10 s.
fn serve_refused(sim: &Sim, runtime: &str) -> (std::process::ExitStatus, String, Duration) {
    let data = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let mut child = Command::new(bin("no-io-uring"))
        .arg(bin("bookbroker"))
        .args(["serve", "--cores", "2", "--runtime", runtime, "--listen"])
        .arg(format!("127.0.0.1:{}", free_port()))
        .arg("--data-dir")
        .arg(data.path())
        .arg("--config")
        .arg(&sim.config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            let err = bookbroker_tests::strip_ansi(&String::from_utf8_lossy(&out.stderr));
            return (status, err, started.elapsed());
        }
        if started.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("--runtime {runtime} under the filter still running after 10 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn an_explicit_io_uring_backend_fails_fast_with_a_clear_message() {
    let sim = Sim::start("slow.toml");
    for runtime in ["glommio", "io_uring"] {
        let (status, err, took) = serve_refused(&sim, runtime);
        assert!(!status.success(), "{runtime}: {err}");
        assert!(took < Duration::from_secs(5), "{runtime} took {took:?}");
        assert!(!err.contains("panicked"), "{runtime}: {err}");
        assert!(
            err.contains(&format!("the {runtime} runtime needs io_uring"))
                && err.contains("EPERM")
                && err.contains("--runtime epoll"),
            "{runtime}: {err}"
        );
    }
}
