//! Every RPC goes through [`rpc`]: it logs the method, duration and outcome, and turns
//! [`CriError`] into a gRPC status.

use crate::error::CriError;
use std::future::Future;
use std::time::Instant;
use tonic::{Response, Status};

/// RPCs that kubelets poll all the time: logged at debug level when they succeed.
const QUIET: &[&str] = &[
    "Version",
    "Status",
    "ListImages",
    "ImageStatus",
    "ImageFsInfo",
    "ListPodSandbox",
    "PodSandboxStatus",
    "ListContainers",
    "ContainerStatus",
    "ListContainerStats",
    "ListPodSandboxStats",
];

/// Runs one RPC handler and records what happened.
pub async fn rpc<T>(
    method: &'static str,
    handler: impl Future<Output = Result<T, CriError>>,
) -> Result<Response<T>, Status> {
    let start = Instant::now();
    let result = handler.await;
    let micros = start.elapsed().as_micros() as u64;
    match result {
        Ok(reply) => {
            if QUIET.contains(&method) {
                tracing::debug!(rpc = method, micros, "ok");
            } else {
                tracing::info!(rpc = method, micros, "ok");
            }
            Ok(Response::new(reply))
        }
        Err(e) => {
            let status = Status::from(e);
            tracing::warn!(rpc = method, micros, code = ?status.code(), error = status.message(), "failed");
            Err(status)
        }
    }
}
