//! Start-up failures say what is wrong and what to change.

use std::process::Command;

use bookbroker_tests::{bin, Sim};

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

#[test]
fn too_little_locked_memory_is_reported_with_the_fix() {
    // Root bypasses RLIMIT_MEMLOCK through CAP_IPC_LOCK, so drop it for the child.
    if Command::new("setpriv").arg("--version").output().is_err() {
        eprintln!("setpriv not available; skipping");
        return;
    }
    let sim = Sim::start("slow.toml");
    let port = bookbroker_tests::free_port();
    let data = tempfile::tempdir().unwrap();
    let script = format!(
        "ulimit -l 0 && exec setpriv --bounding-set=-ipc_lock --inh-caps=-ipc_lock {} serve --cores 1 --listen 127.0.0.1:{port} --data-dir {} --config {}",
        bin("bookbroker").display(),
        data.path().display(),
        sim.config.display()
    );
    let out = Command::new("sh").arg("-c").arg(&script).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ulimit -l"), "{err}");
    assert!(err.contains("locked-memory limit here is 0 KiB"), "{err}");
}
