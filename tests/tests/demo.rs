//! `make demo` as a test: the walkthrough binary runs to the end and shows each networking
//! claim answered with the expected bytes.

use skiff_tests::daemon::sibling_binary;
use std::process::Command;

#[test]
fn the_walkthrough_shows_every_claim() {
    let out = Command::new(sibling_binary("skiff-demo", "SKIFF_DEMO_BIN"))
        .output()
        .expect("run skiff-demo (built by cargo build --bins)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for expected in [
        "sidecar$ wget http://127.0.0.1:8080/ -> \"hello from the web container\"",
        "-> \"hello from the server pod\"",
        "-> \"hello through the hostPort\"",
        "pods left: 0",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
    assert!(
        stdout.contains("client-a$ ping -c 1") && stdout.contains("-> exit 0"),
        "{stdout}"
    );
}
