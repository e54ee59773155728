//! Prints the effective uid it runs with, as `Effective uid: N`: the program of critest's
//! `nonewprivs` image (see `skiff_tests::critest_images`), which installs it setuid root.
//!
//! Started by uid 1000, it prints 0 when the kernel honoured its setuid bit, and 1000 when the
//! container's `no_new_privs` flag stopped the exec from gaining privileges.

fn main() {
    println!("Effective uid: {}", nix::unistd::geteuid());
}
