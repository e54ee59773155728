//! GC: release every lease and masquerade rule whose attachment
//! (container id, ifname) is not in `cni.dev/valid-attachments`.
//! Keeps going after an error, then reports all of them.

use std::collections::HashSet;

use crate::config::Config;
use crate::masq;
use crate::nft;
use crate::spec::{Attachment, CniError, ErrorCode};

/// Runs GC.
pub fn run(conf: &Config) -> Result<(), CniError> {
    let valid: HashSet<Attachment> = conf
        .valid_attachments
        .as_ref()
        // Without the list we cannot tell stale from live: refuse rather
        // than release everything.
        .ok_or_else(|| {
            CniError::new(
                ErrorCode::InvalidConfig,
                "invalid network configuration",
                "GC needs cni.dev/valid-attachments",
            )
        })?
        .iter()
        .cloned()
        .collect();
    let mut errors = Vec::new();

    if let Some(ipam) = &conf.ipam {
        match ipam.gc(&conf.name, &valid) {
            Ok(released) => {
                for ip in released {
                    eprintln!("skiff-bridge: GC released {ip}");
                }
            }
            Err(e) => errors.push(e.to_string()),
        }
    }

    // Rules are removed even if ipMasq was switched off since they were added.
    let valid_tags: HashSet<String> = valid
        .iter()
        .map(|a| nft::tag(&a.container_id, &a.ifname))
        .collect();
    if let Err(e) = masq::gc(conf, &valid_tags) {
        // No nft at all while ipMasq is off: nothing could have been added.
        if conf.ip_masq || nft::available() {
            errors.push(e.to_string());
        }
    }

    if errors.is_empty() {
        Ok(())
    } else {
        Err(CniError::new(
            ErrorCode::System,
            "GC partially failed",
            errors.join("; "),
        ))
    }
}
