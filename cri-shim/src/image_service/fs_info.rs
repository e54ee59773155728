//! ImageFsInfo: what the image store really uses on disk.

use super::Images;
use crate::error::CriError;
use skiff_proto::runtime::v1 as cri;

impl Images {
    pub(super) async fn fs_info(&self) -> Result<cri::ImageFsInfoResponse, CriError> {
        let store = self.store.clone();
        // Walking the store touches every file: keep it off the async workers.
        let usage = tokio::task::spawn_blocking(move || store.usage())
            .await
            .map_err(|e| CriError::Internal(format!("usage task failed: {e}")))??;
        let timestamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as i64)
            .unwrap_or(0);
        let filesystem = cri::FilesystemUsage {
            timestamp,
            fs_id: Some(cri::FilesystemIdentifier {
                mountpoint: self.store.root().display().to_string(),
            }),
            used_bytes: Some(cri::UInt64Value { value: usage.bytes }),
            inodes_used: Some(cri::UInt64Value {
                value: usage.inodes,
            }),
        };
        Ok(cri::ImageFsInfoResponse {
            image_filesystems: vec![filesystem],
            container_filesystems: vec![],
        })
    }
}
