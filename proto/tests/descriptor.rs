//! Checks the compiled descriptor against the upstream CRI v1 service surface.

use prost::Message;
use prost_types::FileDescriptorSet;

/// RPCs of `runtime.v1.RuntimeService` upstream, in declaration order, with
/// whether the server streams its responses.
const RUNTIME_SERVICE: &[(&str, bool)] = &[
    ("Version", false),
    ("RunPodSandbox", false),
    ("StopPodSandbox", false),
    ("RemovePodSandbox", false),
    ("PodSandboxStatus", false),
    ("ListPodSandbox", false),
    ("StreamPodSandboxes", true),
    ("CreateContainer", false),
    ("StartContainer", false),
    ("StopContainer", false),
    ("RemoveContainer", false),
    ("ListContainers", false),
    ("StreamContainers", true),
    ("ContainerStatus", false),
    ("UpdateContainerResources", false),
    ("ReopenContainerLog", false),
    ("ExecSync", false),
    ("Exec", false),
    ("Attach", false),
    ("PortForward", false),
    ("ContainerStats", false),
    ("ListContainerStats", false),
    ("StreamContainerStats", true),
    ("PodSandboxStats", false),
    ("ListPodSandboxStats", false),
    ("StreamPodSandboxStats", true),
    ("UpdateRuntimeConfig", false),
    ("Status", false),
    ("CheckpointContainer", false),
    ("CheckpointPod", false),
    ("RestorePod", false),
    ("GetContainerEvents", true),
    ("ListMetricDescriptors", false),
    ("ListPodSandboxMetrics", false),
    ("StreamPodSandboxMetrics", true),
    ("RuntimeConfig", false),
    ("UpdatePodSandboxResources", false),
];

/// RPCs of `runtime.v1.ImageService` upstream.
const IMAGE_SERVICE: &[(&str, bool)] = &[
    ("ListImages", false),
    ("StreamImages", true),
    ("ImageStatus", false),
    ("PullImage", false),
    ("RemoveImage", false),
    ("ImageFsInfo", false),
];

fn file() -> prost_types::FileDescriptorProto {
    let fds = FileDescriptorSet::decode(skiff_proto::FILE_DESCRIPTOR_SET).unwrap();
    let mut files: Vec<_> = fds
        .file
        .into_iter()
        .filter(|f| f.package() == "runtime.v1")
        .collect();
    assert_eq!(files.len(), 1);
    files.remove(0)
}

fn methods(name: &str) -> Vec<(String, bool)> {
    let f = file();
    let svc = f
        .service
        .iter()
        .find(|s| s.name() == name)
        .unwrap_or_else(|| panic!("service {name} missing"));
    svc.method
        .iter()
        .map(|m| {
            assert!(!m.client_streaming(), "{} is client streaming", m.name());
            (m.name().to_string(), m.server_streaming())
        })
        .collect()
}

fn expected(list: &[(&str, bool)]) -> Vec<(String, bool)> {
    list.iter().map(|(n, s)| (n.to_string(), *s)).collect()
}

#[test]
fn runtime_service_methods_match_upstream() {
    assert_eq!(methods("RuntimeService"), expected(RUNTIME_SERVICE));
}

#[test]
fn image_service_methods_match_upstream() {
    assert_eq!(methods("ImageService"), expected(IMAGE_SERVICE));
}

#[test]
fn only_the_two_services() {
    let names: Vec<_> = file()
        .service
        .iter()
        .map(|s| s.name().to_string())
        .collect();
    assert_eq!(names, ["RuntimeService", "ImageService"]);
}

#[test]
fn type_counts_match_upstream() {
    let f = file();
    assert_eq!(f.message_type.len(), 175);
    assert_eq!(f.enum_type.len(), 10);
    assert!(f.dependency.is_empty(), "no imports expected");
}

#[test]
fn generated_service_paths() {
    use skiff_proto::runtime::v1::{image_service_server, runtime_service_server};
    assert_eq!(
        runtime_service_server::SERVICE_NAME,
        "runtime.v1.RuntimeService"
    );
    assert_eq!(
        image_service_server::SERVICE_NAME,
        "runtime.v1.ImageService"
    );
}
