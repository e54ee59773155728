//! ListImages, optionally filtered by one image reference.

use super::Images;
use crate::error::CriError;
use skiff_proto::runtime::v1 as cri;

impl Images {
    pub(super) async fn list(
        &self,
        request: cri::ListImagesRequest,
    ) -> Result<cri::ListImagesResponse, CriError> {
        let wanted = request
            .filter
            .and_then(|f| f.image)
            .map(|spec| spec.image)
            .filter(|name| !name.is_empty());
        let records = match wanted {
            Some(name) => self.store.find(&name)?.into_iter().collect(),
            None => self.store.list()?,
        };
        Ok(cri::ListImagesResponse {
            images: records.iter().map(|r| self.to_cri(r)).collect(),
        })
    }
}
