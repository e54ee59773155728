//! The CNI runner against real plugins: skiff-bridge/skiff-portmap from the target dir, the
//! reference plugins in /usr/lib/cni, and shell-script plugins that fail or hang. Tests that
//! create namespaces and bridges need root and skip (pass) otherwise.
//!
//! Test `n` uses bridge `skshim<n>`, subnet 10.213.<n>.0/24, network `skshim-<n>`, namespaces
//! `skshim-<n>-<i>-<pid>` and a private temp dir for config, cache and leases; `Drop` removes
//! all of it, also when the test fails.

use super::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const REFERENCE_DIR: &str = "/usr/lib/cni";

fn have_root() -> bool {
    let root = nix::unistd::geteuid().is_root();
    if !root {
        eprintln!("skipping: needs root for namespaces and bridges");
    }
    root
}

/// The profile dir holding skiff-bridge and skiff-portmap (`target/debug` for
/// `target/debug/deps/<test binary>`), if they were built.
fn our_plugins() -> Option<PathBuf> {
    let dir = std::env::current_exe()
        .ok()?
        .parent()?
        .parent()?
        .to_path_buf();
    let built = ["skiff-bridge", "skiff-portmap"]
        .iter()
        .all(|p| dir.join(p).is_file());
    if !built {
        eprintln!(
            "skipping: skiff-bridge/skiff-portmap not built in {} (cargo build --workspace --bins)",
            dir.display()
        );
    }
    built.then_some(dir)
}

fn sh(cmd: &str) -> std::process::Output {
    Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .output()
        .expect("run sh")
}

/// A test's private network, namespaces and files.
struct Fixture {
    n: u8,
    dir: tempfile::TempDir,
    namespaces: Vec<String>,
}

impl Fixture {
    fn new(n: u8) -> Fixture {
        let fixture = Fixture {
            n,
            dir: tempfile::tempdir().expect("tempdir"),
            namespaces: Vec::new(),
        };
        fixture.remove_host_state();
        for sub in ["conf", "bin", "cache", "leases"] {
            std::fs::create_dir_all(fixture.path(sub)).expect("mkdir");
        }
        fixture
    }

    fn path(&self, sub: &str) -> PathBuf {
        self.dir.path().join(sub)
    }

    fn network(&self) -> String {
        format!("skshim-{}", self.n)
    }

    fn bridge(&self) -> String {
        format!("skshim{}", self.n)
    }

    fn ip(&self, host: u8) -> String {
        format!("10.213.{}.{host}", self.n)
    }

    /// An interface plugin config of `kind` (skiff-bridge or the reference bridge).
    fn bridge_plugin(&self, kind: &str) -> Value {
        json!({
            "type": kind,
            "bridge": self.bridge(),
            "isGateway": true,
            "isDefaultGateway": true,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": format!("10.213.{}.0/24", self.n)}]],
                "dataDir": self.path("leases"),
            },
        })
    }

    /// Writes the network configuration list (replacing the previous one).
    fn write_conf(&self, version: &str, plugins: Value) {
        let list = json!({"cniVersion": version, "name": self.network(), "plugins": plugins});
        std::fs::write(self.path("conf").join("10-test.conflist"), list.to_string())
            .expect("write conf");
    }

    fn cni(&self, bin_dirs: Vec<PathBuf>) -> Cni {
        Cni::new(self.path("conf"), bin_dirs, self.path("cache"))
    }

    fn netns(&mut self) -> PathBuf {
        let name = format!(
            "skshim-{}-{}-{}",
            self.n,
            self.namespaces.len(),
            std::process::id()
        );
        assert!(sh(&format!("ip netns add {name}")).status.success());
        self.namespaces.push(name.clone());
        PathBuf::from("/run/netns").join(name)
    }

    fn delete_netns(&mut self, path: &Path) {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(sh(&format!("ip netns del {name}")).status.success());
        self.namespaces.retain(|n| *n != name);
    }

    /// Leased addresses of the network (host-local's layout: one file per address).
    fn leases(&self) -> Vec<String> {
        let mut out: Vec<String> = std::fs::read_dir(self.path("leases").join(self.network()))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out
    }

    fn cached(&self, sandbox: &str) -> Option<Value> {
        let path = self.path("cache").join(format!("{sandbox}-eth0.json"));
        let text = std::fs::read(path).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// A shell plugin named `name` in the fixture's bin dir. It answers VERSION, logs every
    /// other call's environment to `<name>.log` and its stdin to `<name>.<COMMAND>.json`, then
    /// runs `behaviour`.
    fn script(&self, name: &str, behaviour: &str) {
        let log = self.path(name);
        let text = format!(
            "#!/bin/sh\n\
             if [ \"$CNI_COMMAND\" = VERSION ]; then\n\
               echo '{{\"cniVersion\":\"1.1.0\",\"supportedVersions\":[\"0.4.0\",\"1.0.0\",\"1.1.0\"]}}'\n\
               exit 0\n\
             fi\n\
             echo \"$CNI_COMMAND|$CNI_CONTAINERID|$CNI_IFNAME|$CNI_NETNS|$CNI_ARGS|$CNI_PATH\" >> {log}.log\n\
             cat > {log}.$CNI_COMMAND.json\n\
             {behaviour}\n",
            log = log.display()
        );
        let path = self.path("bin").join(name);
        std::fs::write(&path, text).expect("write script");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }

    fn script_log(&self, name: &str) -> Vec<String> {
        std::fs::read_to_string(self.path(&format!("{name}.log")))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn script_stdin(&self, name: &str, command: &str) -> Value {
        let text = std::fs::read(self.path(&format!("{name}.{command}.json"))).expect("stdin log");
        serde_json::from_slice(&text).expect("stdin JSON")
    }

    fn remove_host_state(&self) {
        sh(&format!("ip link del {} 2>/dev/null", self.bridge()));
        for chain in ["masq", "hostport-dnat", "hostport-out", "hostport-snat"] {
            sh(&format!(
                "nft delete chain inet skiff-cni {chain}-{} 2>/dev/null",
                self.network()
            ));
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        for ns in &self.namespaces {
            sh(&format!("ip netns del {ns}"));
        }
        self.remove_host_state();
    }
}

fn attachment(sandbox: &str, netns: &Path) -> Attachment {
    Attachment {
        sandbox_id: sandbox.into(),
        netns: netns.into(),
        pod_name: format!("pod-{sandbox}"),
        pod_namespace: "skiff-test".into(),
        pod_uid: format!("uid-{sandbox}"),
        port_mappings: Vec::new(),
    }
}

/// `ip -o addr` inside a namespace, through nsenter and busybox as an operator would.
fn pod_addresses(netns: &Path) -> String {
    let out = Command::new("nsenter")
        .arg(format!("--net={}", netns.display()))
        .args(["/bin/busybox", "ip", "-o", "addr"])
        .output()
        .expect("nsenter");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn hostport_rules(network: &str) -> String {
    let out = sh(&format!(
        "nft list chain inet skiff-cni hostport-dnat-{network} 2>/dev/null"
    ));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn skiff_plugins_add_check_del_gc_status() {
    if !have_root() {
        return;
    }
    let Some(target) = our_plugins() else { return };
    let mut fx = Fixture::new(160);
    fx.write_conf(
        "1.1.0",
        json!([
            fx.bridge_plugin("skiff-bridge"),
            {"type": "skiff-portmap", "capabilities": {"portMappings": true}},
        ]),
    );
    let cni = fx.cni(vec![target]);
    cni.status().await.expect("status");

    // ADD: the address is in the pod, the result is cached, the host port is mapped.
    let ns = fx.netns();
    let mut a = attachment("sb-a", &ns);
    a.port_mappings = vec![PortMapping {
        protocol: skiff_proto::runtime::v1::Protocol::Tcp as i32,
        container_port: 80,
        host_port: 18160,
        host_ip: String::new(),
    }];
    let pod = cni.add(&a).await.expect("add");
    assert_eq!(pod.ips, [fx.ip(2)]);
    assert_eq!(pod.result["cniVersion"], "1.1.0");
    let addrs = pod_addresses(&ns);
    assert!(addrs.contains(&format!("{}/24", fx.ip(2))), "{addrs}");
    let cached = fx.cached("sb-a").expect("cache entry");
    assert_eq!(cached["result"], pod.result);
    assert_eq!(
        cached["capabilityArgs"]["portMappings"][0]["hostPort"],
        18160
    );
    assert!(hostport_rules(&fx.network()).contains("18160"));
    cni.check(&a).await.expect("check");

    // DEL, twice: everything gone, including the cache entry and the port mapping.
    cni.del(&a).await.expect("del");
    cni.del(&a).await.expect("second del");
    assert!(fx.cached("sb-a").is_none());
    assert!(fx.leases().is_empty());
    assert!(!pod_addresses(&ns).contains("eth0"));
    assert!(!hostport_rules(&fx.network()).contains("18160"));
    assert!(matches!(cni.check(&a).await, Err(CniError::NotAttached(_))));

    // DEL after the namespace is gone still releases the address.
    let ns = fx.netns();
    let b = attachment("sb-b", &ns);
    cni.add(&b).await.expect("add b");
    fx.delete_netns(&ns);
    cni.del(&b).await.expect("del without netns");
    assert!(fx.leases().is_empty());
    assert!(fx.cached("sb-b").is_none());

    // GC: "stale" is cached (released by a cached DEL), "lost" lost its cache entry (released
    // by the plugins' GC), "live" stays.
    let (ns1, ns2, ns3) = (fx.netns(), fx.netns(), fx.netns());
    let live = cni.add(&attachment("live", &ns1)).await.expect("add live");
    cni.add(&attachment("stale", &ns2))
        .await
        .expect("add stale");
    cni.add(&attachment("lost", &ns3)).await.expect("add lost");
    std::fs::remove_file(fx.path("cache").join("lost-eth0.json")).unwrap();
    assert_eq!(fx.leases().len(), 3);
    cni.gc(&["live".to_string()]).await.expect("gc");
    assert_eq!(fx.leases(), live.ips);
    assert!(fx.cached("stale").is_none() && fx.cached("live").is_some());
    cni.del(&attachment("live", &ns1)).await.expect("del live");
    assert!(fx.leases().is_empty());
    cni.status().await.expect("status after all");
}

#[tokio::test]
async fn reference_plugins_and_version_negotiation() {
    if !have_root() {
        return;
    }
    if !Path::new(REFERENCE_DIR).join("bridge").is_file() {
        eprintln!("skipping: reference plugins not installed in {REFERENCE_DIR}");
        return;
    }
    let mut fx = Fixture::new(161);
    // Port mappings stay empty: the reference portmap's iptables-nft would leave `ip nat`
    // tables behind on the host. skiff-portmap covers runtimeConfig above.
    let plugins = json!([
        fx.bridge_plugin("bridge"),
        {"type": "portmap", "capabilities": {"portMappings": true}},
    ]);
    // The Debian plugins (1.1.1) speak up to 1.0.0: a 1.1.0-only config is refused clearly.
    fx.write_conf("1.1.0", plugins.clone());
    let cni = fx.cni(vec![REFERENCE_DIR.into()]);
    let err = cni.status().await.unwrap_err().to_string();
    assert!(err.contains("no common CNI version"), "{err}");
    assert!(err.contains("plugin bridge supports ["), "{err}");
    let ns = fx.netns();
    assert!(cni.add(&attachment("sb-a", &ns)).await.is_err());
    assert!(fx.leases().is_empty());

    // Offering older versions too: the highest common one (1.0.0) is used.
    let list = json!({"cniVersion": "1.1.0", "cniVersions": ["0.4.0", "1.0.0", "1.1.0"],
        "name": fx.network(), "plugins": plugins});
    std::fs::write(fx.path("conf").join("10-test.conflist"), list.to_string()).unwrap();
    cni.status().await.expect("status");
    let a = attachment("sb-a", &ns);
    let pod = cni.add(&a).await.expect("add");
    assert_eq!(pod.result["cniVersion"], "1.0.0");
    assert_eq!(pod.ips, [fx.ip(2)]);
    assert!(pod_addresses(&ns).contains(&format!("{}/24", fx.ip(2))));
    cni.check(&a).await.expect("check");
    cni.del(&a).await.expect("del");
    cni.del(&a).await.expect("second del");
    assert!(fx.leases().is_empty());

    // DEL with the namespace gone; GC of a stale cached attachment (1.0.0 has no GC verb).
    let (ns2, ns3, ns4) = (fx.netns(), fx.netns(), fx.netns());
    let b = attachment("sb-b", &ns2);
    cni.add(&b).await.expect("add b");
    fx.delete_netns(&ns2);
    cni.del(&b).await.expect("del without netns");
    assert!(fx.leases().is_empty());
    let live = cni.add(&attachment("live", &ns3)).await.expect("add live");
    cni.add(&attachment("stale", &ns4))
        .await
        .expect("add stale");
    cni.gc(&["live".to_string()]).await.expect("gc");
    assert_eq!(fx.leases(), live.ips);
    cni.del(&attachment("live", &ns3)).await.expect("del live");
    assert!(fx.leases().is_empty());
}

#[tokio::test]
async fn a_failing_plugin_error_is_surfaced_with_its_message() {
    let fx = Fixture::new(162);
    fx.script(
        "frob",
        r#"if [ "$CNI_COMMAND" = ADD ]; then
             echo '{"cniVersion":"1.1.0","code":7,"msg":"frobnication failed","details":"the frob is missing"}'
             exit 1
           fi"#,
    );
    fx.write_conf("1.1.0", json!([{"type": "frob"}]));
    let cni = fx.cni(vec![fx.path("bin")]);
    let err = cni
        .add(&attachment("sb-f", &fx.path("netns")))
        .await
        .unwrap_err();
    // The failed plugin's DEL worked, so ADD reports the error as undone.
    let CniError::RolledBack(err) = err else {
        panic!("{err:?}")
    };
    assert!(
        matches!(*err, CniError::Plugin { code: Some(7), .. }),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("plugin frob ADD failed (code 7): frobnication failed: the frob is missing"),
        "{text}"
    );

    // The environment of a CNI invocation, and the DEL undoing the failed ADD.
    let log = fx.script_log("frob");
    assert_eq!(log.len(), 2, "{log:?}");
    let netns = fx.path("netns");
    assert_eq!(
        log[0],
        format!(
            "ADD|sb-f|eth0|{}|IgnoreUnknown=1;K8S_POD_NAMESPACE=skiff-test;K8S_POD_NAME=pod-sb-f;\
             K8S_POD_INFRA_CONTAINER_ID=sb-f;K8S_POD_UID=uid-sb-f|{}",
            netns.display(),
            fx.path("bin").display()
        )
    );
    assert!(log[1].starts_with("DEL|sb-f|eth0|"), "{log:?}");
    assert!(fx.cached("sb-f").is_none());
    let add_stdin = fx.script_stdin("frob", "ADD");
    assert_eq!(
        add_stdin,
        json!({"type": "frob", "name": fx.network(), "cniVersion": "1.1.0"})
    );

    // A plugin printing no error JSON: what it printed becomes the message.
    fx.script("frob", "echo 'it broke' >&2; exit 1");
    let err = cni.status().await.unwrap_err().to_string();
    assert_eq!(err, "plugin frob STATUS failed: it broke");
}

/// True once `pid` is gone (or a zombie waiting for its reaper).
fn dead(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

#[tokio::test]
async fn a_hanging_plugin_is_killed_after_the_timeout() {
    let fx = Fixture::new(163);
    let pids = fx.path("pids");
    fx.script(
        "hang",
        &format!(
            r#"if [ "$CNI_COMMAND" = ADD ]; then
                 sleep 300 &
                 echo "$$ $!" > {}
                 wait
               fi"#,
            pids.display()
        ),
    );
    fx.write_conf("1.1.0", json!([{"type": "hang"}]));
    let cni = fx
        .cni(vec![fx.path("bin")])
        .with_timeout(Duration::from_millis(500));
    let started = Instant::now();
    let err = cni
        .add(&attachment("sb-h", &fx.path("netns")))
        .await
        .unwrap_err();
    // Only ADD hangs: the undoing DEL works, so nothing is owed.
    let CniError::RolledBack(err) = err else {
        panic!("{err:?}")
    };
    assert!(
        matches!(*err, CniError::Timeout { command: "ADD", .. }),
        "{err:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // The plugin and what it started are killed.
    let text = std::fs::read_to_string(&pids).expect("pids");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !text.split_whitespace().all(dead) {
        assert!(Instant::now() < deadline, "still running: {text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(fx.script_log("hang").len(), 2, "ADD, then the undoing DEL");
}

#[tokio::test]
async fn add_failing_in_the_second_plugin_deletes_the_first() {
    if !have_root() {
        return;
    }
    let Some(target) = our_plugins() else { return };
    let mut fx = Fixture::new(164);
    fx.script(
        "frob",
        r#"if [ "$CNI_COMMAND" = ADD ]; then
             echo '{"cniVersion":"1.1.0","code":11,"msg":"try later"}'
             exit 1
           fi"#,
    );
    fx.write_conf(
        "1.1.0",
        json!([fx.bridge_plugin("skiff-bridge"), {"type": "frob", "capabilities": {"portMappings": true}}]),
    );
    let cni = fx.cni(vec![fx.path("bin"), target]);
    let ns = fx.netns();
    let mut a = attachment("sb-c", &ns);
    a.port_mappings = vec![PortMapping {
        protocol: skiff_proto::runtime::v1::Protocol::Udp as i32,
        container_port: 53,
        host_port: 5353,
        host_ip: "127.0.0.1".into(),
    }];
    let err = cni.add(&a).await.unwrap_err().to_string();
    assert!(err.contains("try later"), "{err}");
    // The chained plugin got the first plugin's result and its declared capability.
    let stdin = fx.script_stdin("frob", "ADD");
    assert_eq!(
        stdin["prevResult"]["ips"][0]["address"],
        format!("{}/24", fx.ip(2))
    );
    assert_eq!(
        stdin["runtimeConfig"],
        json!({"portMappings": [{"hostPort": 5353, "containerPort": 53, "protocol": "udp", "hostIP": "127.0.0.1"}]})
    );
    // Undone: both got DEL, the address is released, the interface is gone, nothing cached.
    let del = fx.script_stdin("frob", "DEL");
    assert_eq!(del["prevResult"], stdin["prevResult"]);
    assert!(fx.leases().is_empty());
    assert!(!pod_addresses(&ns).contains("eth0"));
    assert!(fx.cached("sb-c").is_none());
}

#[tokio::test]
async fn the_installed_default_conflist_works() {
    if !have_root() {
        return;
    }
    let Some(target) = our_plugins() else { return };
    let mut fx = Fixture::new(165);
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../cni-bridge/10-skiff.conflist");
    let mut list: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    assert_eq!(list["name"], "skiff");
    assert_eq!(list["plugins"][0]["bridge"], "skiff0");
    assert_eq!(
        list["plugins"][0]["ipam"]["ranges"][0][0]["subnet"],
        "10.77.0.0/16"
    );
    // The same configuration on this test's bridge, subnet and lease dir.
    list["name"] = json!(fx.network());
    list["plugins"][0]["bridge"] = json!(fx.bridge());
    list["plugins"][0]["ipam"]["ranges"] = json!([[{"subnet": format!("10.213.{}.0/24", fx.n)}]]);
    list["plugins"][0]["ipam"]["dataDir"] = json!(fx.path("leases"));
    std::fs::write(fx.path("conf").join("10-skiff.conflist"), list.to_string()).unwrap();

    let cni = fx.cni(vec![target]);
    cni.status().await.expect("status");
    let ns = fx.netns();
    let mut a = attachment("sb-d", &ns);
    a.port_mappings = vec![PortMapping {
        protocol: skiff_proto::runtime::v1::Protocol::Tcp as i32,
        container_port: 80,
        host_port: 18165,
        host_ip: String::new(),
    }];
    let pod = cni.add(&a).await.expect("add");
    // cniVersions offers 1.1.0, which skiffd and the plugins share.
    assert_eq!(pod.result["cniVersion"], "1.1.0");
    let routes = Command::new("nsenter")
        .arg(format!("--net={}", ns.display()))
        .args(["/bin/busybox", "ip", "route"])
        .output()
        .expect("nsenter");
    let routes = String::from_utf8_lossy(&routes.stdout);
    assert!(
        routes.contains(&format!("default via {}", fx.ip(1))),
        "{routes}"
    );
    let masq = sh(&format!(
        "nft list chain inet skiff-cni masq-{}",
        fx.network()
    ));
    assert!(String::from_utf8_lossy(&masq.stdout).contains(&pod.ips[0]));
    assert!(hostport_rules(&fx.network()).contains("18165"));

    cni.del(&a).await.expect("del");
    assert!(fx.leases().is_empty());
    // The last rules took their chains with them.
    assert!(!sh(&format!(
        "nft list chain inet skiff-cni masq-{}",
        fx.network()
    ))
    .status
    .success());
    assert!(hostport_rules(&fx.network()).is_empty());
}

#[test]
fn sandbox_ids_must_be_cni_container_ids() {
    assert!(check_sandbox_id("0123abc_x.y-z").is_ok());
    for bad in ["", "-a", "a/b", "../x", "a b"] {
        assert!(check_sandbox_id(bad).is_err(), "{bad}");
    }
}
