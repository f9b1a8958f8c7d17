//! `no-io-uring PROGRAM [ARGS...]`: runs PROGRAM where io_uring is refused the way
//! Docker's default seccomp profile refuses it: `io_uring_setup`, `io_uring_enter` and
//! `io_uring_register` fail with `EPERM`, everything else is allowed. The filter is
//! installed in this process and then PROGRAM replaces it (`exec`), so PROGRAM and every
//! thread it starts run under it.

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode};

use seccompiler::{BpfProgram, SeccompAction, SeccompFilter};

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let Some(program) = args.next() else {
        eprintln!("usage: no-io-uring PROGRAM [ARGS...]");
        return ExitCode::from(2);
    };
    if let Err(e) = refuse_io_uring() {
        eprintln!("no-io-uring: cannot install the seccomp filter: {e}");
        return ExitCode::from(2);
    }
    let err = Command::new(&program).args(args).exec();
    eprintln!(
        "no-io-uring: cannot run {}: {err}",
        program.to_string_lossy()
    );
    ExitCode::from(2)
}

fn refuse_io_uring() -> Result<(), String> {
    let arch = std::env::consts::ARCH
        .try_into()
        .map_err(|e| format!("{e:?}"))?;
    // An empty rule list matches the syscall whatever its arguments.
    let rules: BTreeMap<i64, Vec<seccompiler::SeccompRule>> = [
        libc::SYS_io_uring_setup,
        libc::SYS_io_uring_enter,
        libc::SYS_io_uring_register,
    ]
    .into_iter()
    .map(|nr| (nr, Vec::new()))
    .collect();
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )
    .map_err(|e| e.to_string())?;
    let program: BpfProgram = filter
        .try_into()
        .map_err(|e: seccompiler::BackendError| e.to_string())?;
    seccompiler::apply_filter(&program).map_err(|e| e.to_string())
}
