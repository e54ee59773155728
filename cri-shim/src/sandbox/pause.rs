//! The tiny init that holds a pod's shared PID namespace (`namespace_options.pid = POD`, the
//! CRI default). A PID namespace dies with its PID 1, so someone must be PID 1 for the pod's
//! whole life: this process, which only reaps children and waits to be killed.
//!
//! skiffd starts it as `skiffd pause` with `unshare(CLONE_NEWPID)` applied between fork and exec;
//! that process forks once more (its child is PID 1 of the new namespace), prints the child's
//! host PID and exits, so the init is reparented away from skiffd and survives its restarts.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

/// Starts a pause process in a new PID namespace; returns its host PID. Blocking.
pub fn spawn(skiffd: &Path) -> std::io::Result<u32> {
    let mut command = Command::new(skiffd);
    command
        .arg("pause")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    // SAFETY: between fork and exec only async-signal-safe syscalls run (unshare, setsid).
    unsafe {
        command.pre_exec(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWPID)?;
            nix::unistd::setsid()?;
            Ok(())
        });
    }
    let mut child = command.spawn()?;
    let mut out = String::new();
    if let Some(mut stdout) = child.stdout.take() {
        stdout.read_to_string(&mut out)?;
    }
    let status = child.wait()?;
    let pid = out.trim().parse::<u32>().ok().filter(|_| status.success());
    pid.ok_or_else(|| std::io::Error::other(format!("pause process failed to start ({status})")))
}

/// The body of `skiffd pause`: fork the namespace's PID 1, report its PID, exit.
pub fn run() -> ! {
    // SAFETY: this process is single-threaded (nothing but argument parsing ran before), so
    // fork is safe here.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Parent { child }) => {
            println!("{child}");
            std::process::exit(0)
        }
        Ok(nix::unistd::ForkResult::Child) => init_loop(),
        Err(e) => {
            eprintln!("fork: {e}");
            std::process::exit(1)
        }
    }
}

/// PID 1 of the pod: reap whatever exits, forever. SIGKILL from the host ends it.
fn init_loop() -> ! {
    // Keep no file descriptors of the caller open.
    for fd in 0..3 {
        let _ = nix::unistd::close(fd);
    }
    loop {
        match nix::sys::wait::wait() {
            Ok(_) => {}
            Err(_) => {
                nix::unistd::pause();
            }
        }
    }
}
