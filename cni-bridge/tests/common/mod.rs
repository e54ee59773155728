//! Test harness: runs the real plugin binaries the way a runtime does
//! (CNI_* environment, config on stdin) against namespaces and bridges the
//! test creates, and removes all of it in `Drop`, also when a test fails.
//!
//! Every test gets its own number `n`: bridge `skcni<n>`, subnets
//! 10.213.<n>.0/24 and fd00:213:<n>::/64, network `skcni-<n>`, namespaces
//! `skcni-<n>-<i>-<pid>`, a private lease directory.

#![allow(dead_code)]

use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Path of the skiff-bridge binary under test.
pub const BRIDGE: &str = env!("CARGO_BIN_EXE_skiff-bridge");
/// Path of the skiff-portmap binary under test.
pub const PORTMAP: &str = env!("CARGO_BIN_EXE_skiff-portmap");

/// True when we can create namespaces; tests skip (pass) otherwise.
pub fn have_root() -> bool {
    let root = nix::unistd::geteuid().is_root();
    if !root {
        eprintln!("skipping: needs root for namespaces and bridges");
    }
    root
}

/// Runs a shell command, returning its output.
pub fn sh(cmd: &str) -> Output {
    Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .output()
        .expect("run sh")
}

/// Runs a shell command that must succeed; returns stdout.
pub fn sh_ok(cmd: &str) -> String {
    let out = sh(cmd);
    assert!(
        out.status.success(),
        "{cmd} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One plugin invocation's outcome.
#[derive(Debug)]
pub struct Reply {
    /// Exit status was 0.
    pub ok: bool,
    /// Parsed stdout (Null if empty).
    pub json: Value,
    /// Raw stderr, for messages.
    pub stderr: String,
}

impl Reply {
    /// The CNI error code, if it failed.
    pub fn code(&self) -> Option<u64> {
        (!self.ok).then(|| self.json["code"].as_u64()).flatten()
    }

    /// Panics with details unless the call succeeded.
    pub fn expect_ok(self, what: &str) -> Value {
        assert!(self.ok, "{what} failed: {} {}", self.json, self.stderr);
        self.json
    }
}

/// The attachment parameters of one invocation.
#[derive(Clone, Debug)]
pub struct Call<'a> {
    /// CNI_COMMAND.
    pub command: &'a str,
    /// CNI_CONTAINERID (omitted if empty).
    pub container_id: &'a str,
    /// CNI_NETNS (omitted if empty).
    pub netns: &'a str,
    /// CNI_IFNAME (omitted if empty).
    pub ifname: &'a str,
}

/// Runs `bin` with `call`'s environment and `stdin`.
pub fn invoke(bin: &str, call: &Call, stdin: &[u8]) -> Reply {
    let mut cmd = Command::new(bin);
    cmd.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("CNI_COMMAND", call.command)
        .env("CNI_PATH", "/opt/cni/bin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, value) in [
        ("CNI_CONTAINERID", call.container_id),
        ("CNI_NETNS", call.netns),
        ("CNI_IFNAME", call.ifname),
    ] {
        if !value.is_empty() {
            cmd.env(key, value);
        }
    }
    let mut child = cmd.spawn().expect("spawn plugin");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin)
        .expect("write stdin");
    let out = child.wait_with_output().expect("wait plugin");
    let text = String::from_utf8_lossy(&out.stdout);
    Reply {
        ok: out.status.success(),
        json: if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("bad JSON {text:?}: {e}"))
        },
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A test network: bridge, subnets, lease dir, namespaces; cleaned on drop.
pub struct TestNet {
    /// The test's number.
    pub n: u8,
    /// Network name.
    pub name: String,
    /// Bridge name.
    pub bridge: String,
    /// Lease directory.
    pub data_dir: tempfile::TempDir,
    namespaces: Vec<String>,
}

impl TestNet {
    /// Sets up (and pre-cleans leftovers of a crashed run of) test `n`.
    pub fn new(n: u8) -> TestNet {
        let net = TestNet {
            n,
            name: format!("skcni-{n}"),
            bridge: format!("skcni{n}"),
            data_dir: tempfile::tempdir().expect("tempdir"),
            namespaces: Vec::new(),
        };
        net.remove_shared_state();
        net
    }

    /// IPv4 subnet of this test.
    pub fn subnet4(&self) -> String {
        format!("10.213.{}.0/24", self.n)
    }

    /// IPv6 subnet of this test.
    pub fn subnet6(&self) -> String {
        format!("fd00:213:{}::/64", self.n)
    }

    /// A skiff-bridge config (cniVersion 1.1.0, IPv4 range, gateway), with
    /// the top-level keys of `extra` merged over it.
    pub fn conf(&self, extra: Value) -> Value {
        let mut conf = json!({
            "cniVersion": "1.1.0",
            "name": self.name,
            "type": "skiff-bridge",
            "bridge": self.bridge,
            "isGateway": true,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": self.subnet4()}]],
                "dataDir": self.data_dir.path(),
            },
        });
        if let (Some(base), Some(extra)) = (conf.as_object_mut(), extra.as_object()) {
            for (k, v) in extra {
                base.insert(k.clone(), v.clone());
            }
        }
        conf
    }

    /// Creates a network namespace; returns its path.
    pub fn netns(&mut self) -> String {
        let name = format!(
            "skcni-{}-{}-{}",
            self.n,
            self.namespaces.len(),
            std::process::id()
        );
        sh_ok(&format!("ip netns add {name}"));
        self.namespaces.push(name.clone());
        format!("/run/netns/{name}")
    }

    /// Deletes a namespace created by [`TestNet::netns`] (for "netns gone" tests).
    pub fn delete_netns(&mut self, path: &str) {
        let name = path.trim_start_matches("/run/netns/").to_string();
        sh_ok(&format!("ip netns del {name}"));
        self.namespaces.retain(|n| *n != name);
    }

    /// Runs skiff-bridge with `conf`.
    pub fn bridge(&self, command: &str, id: &str, netns: &str, conf: &Value) -> Reply {
        let call = Call {
            command,
            container_id: id,
            netns,
            ifname: "eth0",
        };
        invoke(BRIDGE, &call, conf.to_string().as_bytes())
    }

    /// Leased addresses (file names in the lease directory).
    pub fn leases(&self) -> Vec<String> {
        let dir = self.data_dir.path().join(&self.name);
        let mut out: Vec<String> = std::fs::read_dir(dir)
            .map(|d| {
                d.filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out
    }

    /// Our nftables chains for this network.
    pub fn chains(&self) -> Vec<String> {
        ["masq", "hostport-dnat", "hostport-out", "hostport-snat"]
            .iter()
            .map(|c| format!("{c}-{}", self.name))
            .collect()
    }

    /// Rules (as `nft list` text lines) in our chains tagged with `tag`.
    pub fn rules_tagged(&self, tag: &str) -> usize {
        let text =
            String::from_utf8_lossy(&sh("nft list table inet skiff-cni").stdout).into_owned();
        let mut in_ours = false;
        let mut count = 0;
        for line in text.lines() {
            let line = line.trim();
            if line.starts_with("chain ") {
                in_ours = self
                    .chains()
                    .iter()
                    .any(|c| line == format!("chain {c} {{"));
            } else if in_ours && line.contains(&format!("comment \"{tag}\"")) {
                count += 1;
            }
        }
        count
    }

    /// Asserts this network left nothing in nftables: none of its chains,
    /// and no empty `skiff-cni` table. The table may remain only while other
    /// networks (tests running concurrently) have chains in it; run alone,
    /// this means the table is gone.
    pub fn assert_no_nft_leftovers(&self) {
        let out = sh("nft list table inet skiff-cni");
        if !out.status.success() {
            return;
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let chains: Vec<&str> = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("chain "))
            .map(|l| l.trim_end_matches(" {"))
            .collect();
        for ours in self.chains() {
            assert!(!chains.contains(&ours.as_str()), "{ours} left: {text}");
        }
        assert!(!chains.is_empty(), "empty table left behind: {text}");
    }

    fn remove_shared_state(&self) {
        sh(&format!("ip link del {} 2>/dev/null", self.bridge));
        let chains = self.chains();
        let names: Vec<&str> = chains.iter().map(String::as_str).collect();
        // Through the library, under its lock, so the table goes with our
        // last chain.
        let _ = skiff_cni::nft::delete_chains(&names);
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        for ns in &self.namespaces {
            sh(&format!("ip netns del {ns}"));
        }
        self.remove_shared_state();
    }
}

/// Runs a command inside a namespace (given by path).
pub fn in_netns(netns: &str, cmd: &str) -> Output {
    let name = netns.trim_start_matches("/run/netns/");
    sh(&format!("ip netns exec {name} {cmd}"))
}

/// Starts `busybox nc -l -p PORT` inside the namespace, answering `reply`.
pub fn serve_once(netns: &str, port: u16, reply: &str) -> Child {
    let name = netns.trim_start_matches("/run/netns/");
    Command::new("sh")
        .arg("-c")
        .arg(format!(
            "echo {reply} | ip netns exec {name} busybox nc -l -p {port}"
        ))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn listener")
}

/// Connects to `addr` (retrying while the listener starts) and reads all.
pub fn fetch(addr: SocketAddr) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            Ok(mut stream) => {
                stream
                    .set_read_timeout(Some(Duration::from_secs(3)))
                    .expect("timeout");
                let mut text = String::new();
                let _ = stream.read_to_string(&mut text);
                return text;
            }
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("connect {addr}: {e}"),
        }
    }
}

/// The address (without prefix) of `ips[i]` in a result.
pub fn ip_of(result: &Value, i: usize) -> String {
    let cidr = result["ips"][i]["address"].as_str().expect("address");
    cidr.split('/').next().unwrap_or_default().to_string()
}
