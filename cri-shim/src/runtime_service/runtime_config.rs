//! RuntimeConfig: tells a kubelet (1.28+) which cgroup driver to use, so its own setting cannot
//! disagree with the runtime's.

use super::Runtime;
use crate::error::CriError;
use skiff_proto::runtime::v1 as cri;

impl Runtime {
    /// skiff manages cgroups as plain directories (no systemd units): the cgroupfs driver.
    pub(super) async fn runtime_config(
        &self,
        _request: cri::RuntimeConfigRequest,
    ) -> Result<cri::RuntimeConfigResponse, CriError> {
        Ok(cri::RuntimeConfigResponse {
            linux: Some(cri::LinuxRuntimeConfiguration {
                cgroup_driver: cri::CgroupDriver::Cgroupfs as i32,
            }),
        })
    }
}
