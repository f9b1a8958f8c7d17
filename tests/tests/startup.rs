//! Start-up failures say what is wrong and what to change.

use std::process::Command;

use bookbroker_tests::{bin, Engine, EngineOptions, Sim};

#[test]
fn a_port_in_use_is_reported_clearly() {
    let sim = Sim::start("slow.toml");
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = holder.local_addr().unwrap();
    let data = tempfile::tempdir().unwrap();
    let out = Command::new(bin("bookbroker"))
        .args(["serve", "--cores", "1", "--listen", &addr.to_string()])
        .arg("--data-dir")
        .arg(data.path())
        .arg("--config")
        .arg(&sim.config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already in use"), "{err}");
}

/// `ulimit -l 0` without CAP_IPC_LOCK (root bypasses RLIMIT_MEMLOCK through it, so the
/// child drops it): `sh -c '...' sh ENGINE ARGS...` runs the engine that way.
fn without_locked_memory() -> Option<Vec<std::ffi::OsString>> {
    if Command::new("setpriv").arg("--version").output().is_err() {
        eprintln!("setpriv not available; skipping");
        return None;
    }
    Some(
        [
            "sh",
            "-c",
            "ulimit -l 0 && exec setpriv --bounding-set=-ipc_lock --inh-caps=-ipc_lock \"$@\"",
            "sh",
        ]
        .iter()
        .map(Into::into)
        .collect(),
    )
}

#[test]
fn too_little_locked_memory_for_glommio_is_reported_with_the_fix() {
    let Some(wrapper) = without_locked_memory() else {
        return;
    };
    let sim = Sim::start("slow.toml");
    let port = bookbroker_tests::free_port();
    let data = tempfile::tempdir().unwrap();
    let out = Command::new(&wrapper[0])
        .args(&wrapper[1..])
        .arg(bin("bookbroker"))
        .args(["serve", "--runtime", "glommio", "--cores", "1", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(data.path())
        .arg("--config")
        .arg(&sim.config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ulimit -l"), "{err}");
    assert!(err.contains("locked-memory limit here is 0 KiB"), "{err}");
    assert!(err.contains("--runtime epoll"), "{err}");
}

#[test]
fn auto_with_too_little_locked_memory_serves_on_epoll() {
    let Some(wrapper) = without_locked_memory() else {
        return;
    };
    let sim = Sim::start("slow.toml");
    let engine = Engine::start_opts(
        &sim.config,
        1,
        &EngineOptions {
            runtime: Some("auto".into()),
            wrapper,
            ..EngineOptions::default()
        },
    );
    let log = engine.log_plain();
    assert_eq!(engine.backend().as_deref(), Some("epoll"), "{log}");
    // Either io_uring_setup itself fails (kernels that count rings as locked memory)
    // or glommio's registered buffers would not fit: either way, epoll, and why.
    assert!(
        log.contains("locked-memory limit") && log.contains("using epoll"),
        "{log}"
    );
    let q = engine.get(&format!("/v1/quotes?isbn={}", sim.isbns[0]));
    assert_eq!(q.status, 200, "{}", q.text());
}
