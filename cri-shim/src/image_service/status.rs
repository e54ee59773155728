//! ImageStatus: an unknown image is not an error, the CRI wants an empty answer.

use super::{image_name, Images};
use crate::error::CriError;
use skiff_proto::runtime::v1 as cri;
use std::collections::HashMap;

impl Images {
    pub(super) async fn status(
        &self,
        request: cri::ImageStatusRequest,
    ) -> Result<cri::ImageStatusResponse, CriError> {
        let name = image_name(request.image.as_ref(), "image")?;
        let Some(record) = self.store.find(&name)? else {
            return Ok(cri::ImageStatusResponse::default());
        };
        let mut info = HashMap::new();
        if request.verbose {
            let verbose = serde_json::json!({
                "imageSpec": self.store.config_json(&record)?,
                "manifestDigest": record.manifest_digest,
                "layers": record.layers,
                "pulledAt": record.pulled_at,
            });
            info.insert("info".to_string(), verbose.to_string());
        }
        Ok(cri::ImageStatusResponse {
            image: Some(self.to_cri(&record)),
            info,
        })
    }
}
