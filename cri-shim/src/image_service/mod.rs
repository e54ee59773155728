//! The CRI ImageService: a thin layer over [`skiff_runtime::image::ImageStore`], one file per RPC.

mod fs_info;
mod list;
mod pull;
mod remove;
mod status;

use crate::instrument::rpc;
use skiff_proto::runtime::v1 as cri;
use skiff_proto::runtime::v1::image_service_server::ImageService;
use skiff_runtime::image::{ImageRecord, ImageStore};
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// Serves ImageService RPCs from one image store.
#[derive(Debug, Clone)]
pub struct Images {
    store: Arc<ImageStore>,
}

impl Images {
    /// Wraps the store.
    pub fn new(store: Arc<ImageStore>) -> Self {
        Images { store }
    }

    /// The CRI view of a recorded image (uid/username from the image's USER).
    fn to_cri(&self, image: &ImageRecord) -> cri::Image {
        let user = self.store.config(image).ok().and_then(|c| c.user());
        let (uid, username) = match user {
            Some(skiff_runtime::image::config::ImageUser::Uid(uid)) => {
                (Some(cri::Int64Value { value: uid }), String::new())
            }
            Some(skiff_runtime::image::config::ImageUser::Name(name)) => (None, name),
            None => (None, String::new()),
        };
        cri::Image {
            id: image.id.clone(),
            repo_tags: image.repo_tags.clone(),
            repo_digests: image.repo_digests.clone(),
            size: image.size,
            uid,
            username,
            spec: Some(cri::ImageSpec {
                image: image.id.clone(),
                annotations: HashMap::new(),
                ..Default::default()
            }),
            pinned: false,
        }
    }
}

/// The image name in an optional `ImageSpec`, or an INVALID_ARGUMENT error naming the field.
fn image_name(
    spec: Option<&cri::ImageSpec>,
    field: &str,
) -> Result<String, crate::error::CriError> {
    match spec.map(|s| s.image.trim()) {
        Some(name) if !name.is_empty() => Ok(name.to_string()),
        _ => Err(crate::error::CriError::InvalidArgument(format!(
            "{field}.image must name an image"
        ))),
    }
}

type ImageStream =
    Pin<Box<dyn futures::Stream<Item = Result<cri::StreamImagesResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ImageService for Images {
    async fn list_images(
        &self,
        request: Request<cri::ListImagesRequest>,
    ) -> Result<Response<cri::ListImagesResponse>, Status> {
        rpc("ListImages", self.list(request.into_inner())).await
    }

    type StreamImagesStream = ImageStream;

    async fn stream_images(
        &self,
        _request: Request<cri::StreamImagesRequest>,
    ) -> Result<Response<Self::StreamImagesStream>, Status> {
        rpc("StreamImages", async {
            Err(crate::error::CriError::Unimplemented("StreamImages"))
        })
        .await
    }

    async fn image_status(
        &self,
        request: Request<cri::ImageStatusRequest>,
    ) -> Result<Response<cri::ImageStatusResponse>, Status> {
        rpc("ImageStatus", self.status(request.into_inner())).await
    }

    async fn pull_image(
        &self,
        request: Request<cri::PullImageRequest>,
    ) -> Result<Response<cri::PullImageResponse>, Status> {
        rpc("PullImage", self.pull(request.into_inner())).await
    }

    async fn remove_image(
        &self,
        request: Request<cri::RemoveImageRequest>,
    ) -> Result<Response<cri::RemoveImageResponse>, Status> {
        rpc("RemoveImage", self.remove(request.into_inner())).await
    }

    async fn image_fs_info(
        &self,
        _request: Request<cri::ImageFsInfoRequest>,
    ) -> Result<Response<cri::ImageFsInfoResponse>, Status> {
        rpc("ImageFsInfo", self.fs_info()).await
    }
}
