//! Fuzzes the network configuration a CNI runtime writes to a plugin's stdin, as skiff-bridge
//! ([`Config::load`], with its `ipam` ranges and `prevResult`) and skiff-portmap
//! ([`PortmapConfig::load`], with `runtimeConfig.portMappings`) decode it.
//!
//! Must hold: no panic on any input; every address the IPAM would try lies inside its range
//! and is never the gateway; a `prevResult` written back in the 1.1.0 shape reads back equal.

#![no_main]

use libfuzzer_sys::fuzz_target;
use skiff_cni::config::Config;
use skiff_cni::portmap::PortmapConfig;
use skiff_cni::spec::{CniResult, CniVersion};

/// Candidates walked per range set: enough to cross range ends and gateways, cheap per run.
const CANDIDATES: usize = 512;

fuzz_target!(|data: &[u8]| {
    if let Ok(config) = Config::load(data) {
        if let Some(ipam) = &config.ipam {
            for set in &ipam.range_sets {
                let capacity = set.capacity();
                let mut seen = 0u128;
                let mut last = None;
                for (ip, range) in set.candidates(None).take(CANDIDATES) {
                    assert!(range.contains(ip), "{ip} is outside {range}");
                    assert_ne!(ip, range.gateway, "the gateway {ip} was offered");
                    assert!(set.range_for(ip).is_some(), "{ip} has no range in {set}");
                    seen += 1;
                    last = Some(ip);
                }
                assert!(
                    seen <= capacity,
                    "{seen} candidates but capacity {capacity}"
                );
                // Resuming after the last address handed out, as a later ADD does.
                for (ip, range) in set.candidates(last).take(CANDIDATES) {
                    assert!(range.contains(ip), "{ip} is outside {range}");
                }
            }
        }
        if let Some(prev) = &config.prev_result {
            round_trip(prev);
        }
    }
    if let Ok(portmap) = PortmapConfig::load(data) {
        for m in &portmap.mappings {
            assert!(m.host_port != 0 && m.container_port != 0, "{m:?}");
            assert!(
                matches!(m.protocol.as_str(), "tcp" | "udp" | "sctp"),
                "{m:?}"
            );
        }
        if let Some(prev) = &portmap.prev_result {
            round_trip(prev);
        }
    }
});

/// A result a plugin prints becomes the next plugin's `prevResult`: nothing may change on the way.
fn round_trip(result: &CniResult) {
    for version in [
        CniVersion::V0_3_0,
        CniVersion::V0_3_1,
        CniVersion::V0_4_0,
        CniVersion::V1_0_0,
        CniVersion::V1_1_0,
    ] {
        let json = result.to_json(version);
        let back = CniResult::from_value(&json)
            .unwrap_or_else(|e| panic!("{version:?} output does not read back: {e}\n{json}"));
        if version == CniVersion::V1_1_0 {
            assert_eq!(&back, result, "1.1.0 round trip changed the result");
        }
    }
}
