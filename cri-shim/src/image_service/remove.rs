//! RemoveImage: idempotent, as the CRI requires; removes every tag and digest of the image.

use super::{image_name, Images};
use crate::error::CriError;
use skiff_proto::runtime::v1 as cri;

impl Images {
    pub(super) async fn remove(
        &self,
        request: cri::RemoveImageRequest,
    ) -> Result<cri::RemoveImageResponse, CriError> {
        let name = image_name(request.image.as_ref(), "image")?;
        if !self.store.remove(&name).await? {
            tracing::debug!(image = %name, "RemoveImage: no such image, nothing to do");
        }
        Ok(cri::RemoveImageResponse {})
    }
}
