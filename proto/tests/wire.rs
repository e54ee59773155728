//! Wire-level checks of field numbers that are easy to get wrong. Each message
//! sets exactly one field, so the encoding starts with that field's tag.
//!
//! A tag is `(field_number << 3) | wire_type` as a varint; wire type 0 is a
//! varint, 2 is length-delimited. Field numbers >= 16 need a two-byte tag.

use prost::Message;
use skiff_proto::runtime::v1::*;

/// Encoded tag bytes of `field` with `wire_type`.
fn tag(field: u32, wire_type: u32) -> Vec<u8> {
    let mut v = u64::from((field << 3) | wire_type);
    let mut out = Vec::new();
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

/// An empty embedded message in `field`: tag, then length 0.
fn empty_msg(field: u32) -> Vec<u8> {
    let mut v = tag(field, 2);
    v.push(0);
    v
}

/// A one-byte string/bytes value in `field`.
fn one_byte(field: u32, b: u8) -> Vec<u8> {
    let mut v = tag(field, 2);
    v.extend([1, b]);
    v
}

/// A small varint (< 128) in `field`.
fn varint(field: u32, value: u8) -> Vec<u8> {
    assert!(value < 0x80);
    let mut v = tag(field, 0);
    v.push(value);
    v
}

#[test]
fn tag_helper_matches_known_encodings() {
    assert_eq!(tag(1, 2), [0x0a]);
    assert_eq!(tag(15, 2), [0x7a]);
    assert_eq!(tag(16, 2), [0x82, 0x01]);
    assert_eq!(tag(18, 0), [0x90, 0x01]);
}

#[test]
fn pod_sandbox_config_fields() {
    let linux = PodSandboxConfig {
        linux: Some(LinuxPodSandboxConfig::default()),
        ..Default::default()
    };
    assert_eq!(linux.encode_to_vec(), empty_msg(8));

    let windows = PodSandboxConfig {
        windows: Some(WindowsPodSandboxConfig::default()),
        ..Default::default()
    };
    assert_eq!(windows.encode_to_vec(), empty_msg(9));

    let log_dir = PodSandboxConfig {
        log_directory: "d".into(),
        ..Default::default()
    };
    assert_eq!(log_dir.encode_to_vec(), one_byte(3, b'd'));

    let req = RunPodSandboxRequest {
        runtime_handler: "h".into(),
        ..Default::default()
    };
    assert_eq!(req.encode_to_vec(), one_byte(2, b'h'));
}

#[test]
fn sandbox_security_context_fields() {
    let m = LinuxSandboxSecurityContext {
        run_as_group: Some(Int64Value::default()),
        ..Default::default()
    };
    assert_eq!(m.encode_to_vec(), empty_msg(8));

    let m = LinuxSandboxSecurityContext {
        supplemental_groups_policy: SupplementalGroupsPolicy::Strict as i32,
        ..Default::default()
    };
    assert_eq!(m.encode_to_vec(), varint(11, 1));

    let m = LinuxSandboxSecurityContext {
        seccomp: Some(SecurityProfile::default()),
        ..Default::default()
    };
    assert_eq!(m.encode_to_vec(), empty_msg(9));

    let m = LinuxSandboxSecurityContext {
        apparmor: Some(SecurityProfile::default()),
        ..Default::default()
    };
    assert_eq!(m.encode_to_vec(), empty_msg(10));

    let m = NamespaceOption {
        userns_options: Some(UserNamespace::default()),
        ..Default::default()
    };
    assert_eq!(m.encode_to_vec(), empty_msg(5));

    let m = Namespace {
        options: Some(NamespaceOption::default()),
    };
    assert_eq!(m.encode_to_vec(), empty_msg(2));
}

#[test]
fn container_config_fields() {
    let m = ContainerConfig {
        linux: Some(LinuxContainerConfig::default()),
        ..Default::default()
    };
    assert_eq!(m.encode_to_vec(), empty_msg(15));

    let m = ContainerConfig {
        log_path: "l".into(),
        ..Default::default()
    };
    assert_eq!(m.encode_to_vec(), one_byte(11, b'l'));

    let m = ContainerConfig {
        cdi_devices: vec![CdiDevice::default()],
        ..Default::default()
    };
    assert_eq!(m.encode_to_vec(), empty_msg(17));

    let m = ContainerConfig {
        stop_signal: Signal::Sigterm as i32,
        ..Default::default()
    };
    assert_eq!(m.encode_to_vec(), varint(18, 23));

    let m = KeyValue {
        value: b"v".to_vec(),
        ..Default::default()
    };
    assert_eq!(m.encode_to_vec(), one_byte(2, b'v'));
}

#[test]
fn container_security_context_fields() {
    let cases: [(LinuxContainerSecurityContext, u32); 6] = [
        (
            LinuxContainerSecurityContext {
                run_as_group: Some(Int64Value::default()),
                ..Default::default()
            },
            12,
        ),
        (
            LinuxContainerSecurityContext {
                namespace_options: Some(NamespaceOption::default()),
                ..Default::default()
            },
            3,
        ),
        (
            LinuxContainerSecurityContext {
                seccomp: Some(SecurityProfile::default()),
                ..Default::default()
            },
            15,
        ),
        (
            LinuxContainerSecurityContext {
                apparmor: Some(SecurityProfile::default()),
                ..Default::default()
            },
            16,
        ),
        (
            LinuxContainerSecurityContext {
                capabilities: Some(Capability::default()),
                ..Default::default()
            },
            1,
        ),
        (
            LinuxContainerSecurityContext {
                selinux_options: Some(SeLinuxOption::default()),
                ..Default::default()
            },
            4,
        ),
    ];
    for (m, field) in cases {
        assert_eq!(m.encode_to_vec(), empty_msg(field), "field {field}");
    }

    let m = LinuxContainerSecurityContext {
        no_new_privs: true,
        ..Default::default()
    };
    assert_eq!(m.encode_to_vec(), varint(11, 1));

    let m = LinuxContainerSecurityContext {
        readonly_rootfs: true,
        ..Default::default()
    };
    assert_eq!(m.encode_to_vec(), varint(7, 1));

    let m = LinuxContainerSecurityContext {
        supplemental_groups_policy: SupplementalGroupsPolicy::Strict as i32,
        ..Default::default()
    };
    assert_eq!(m.encode_to_vec(), varint(17, 1));

    let m = LinuxContainerResources {
        memory_swap_limit_in_bytes: 5,
        ..Default::default()
    };
    assert_eq!(m.encode_to_vec(), varint(10, 5));

    let m = LinuxContainerResources {
        oom_score_adj: 5,
        ..Default::default()
    };
    assert_eq!(m.encode_to_vec(), varint(5, 5));
}

#[test]
fn container_status_fields() {
    let m = ContainerStatus {
        reason: "r".into(),
        ..Default::default()
    };
    assert_eq!(m.encode_to_vec(), one_byte(10, b'r'));

    let m = ContainerStatus {
        message: "m".into(),
        ..Default::default()
    };
    assert_eq!(m.encode_to_vec(), one_byte(11, b'm'));

    let m = ContainerStatus {
        log_path: "l".into(),
        ..Default::default()
    };
    assert_eq!(m.encode_to_vec(), one_byte(15, b'l'));

    let m = ContainerStatus {
        image_id: "i".into(),
        ..Default::default()
    };
    assert_eq!(m.encode_to_vec(), one_byte(17, b'i'));

    let m = ContainerStatus {
        user: Some(ContainerUser::default()),
        ..Default::default()
    };
    assert_eq!(m.encode_to_vec(), empty_msg(18));

    let m = ContainerStatus {
        stop_signal: Signal::Sigkill as i32,
        ..Default::default()
    };
    assert_eq!(m.encode_to_vec(), varint(19, 13));

    let m = ContainerStatus {
        exit_code: 3,
        ..Default::default()
    };
    assert_eq!(m.encode_to_vec(), varint(7, 3));

    let m = ContainerStatus {
        state: ContainerState::ContainerExited as i32,
        ..Default::default()
    };
    assert_eq!(m.encode_to_vec(), varint(3, 2));

    let m = Container {
        image_id: "i".into(),
        ..Default::default()
    };
    assert_eq!(m.encode_to_vec(), one_byte(10, b'i'));

    let m = PodSandboxStatusResponse {
        timestamp: 1,
        ..Default::default()
    };
    assert_eq!(m.encode_to_vec(), varint(4, 1));
}

#[test]
fn image_fields() {
    let m = ImageSpec {
        user_specified_image: "u".into(),
        ..Default::default()
    };
    assert_eq!(m.encode_to_vec(), one_byte(18, b'u'));

    let m = ImageSpec {
        runtime_handler: "h".into(),
        ..Default::default()
    };
    assert_eq!(m.encode_to_vec(), one_byte(19, b'h'));

    let m = ImageSpec {
        image_ref: "r".into(),
        ..Default::default()
    };
    assert_eq!(m.encode_to_vec(), one_byte(20, b'r'));

    let m = Image {
        pinned: true,
        ..Default::default()
    };
    assert_eq!(m.encode_to_vec(), varint(8, 1));

    let m = Image {
        uid: Some(Int64Value::default()),
        ..Default::default()
    };
    assert_eq!(m.encode_to_vec(), empty_msg(5));

    let m = ImageFsInfoResponse {
        container_filesystems: vec![FilesystemUsage::default()],
        ..Default::default()
    };
    assert_eq!(m.encode_to_vec(), empty_msg(2));

    let m = PullImageRequest {
        sandbox_config: Some(PodSandboxConfig::default()),
        ..Default::default()
    };
    assert_eq!(m.encode_to_vec(), empty_msg(3));
}

#[test]
fn mount_and_stats_fields() {
    let m = Mount {
        propagation: MountPropagation::PropagationBidirectional as i32,
        ..Default::default()
    };
    assert_eq!(m.encode_to_vec(), varint(5, 2));

    let m = Mount {
        uid_mappings: vec![IdMapping::default()],
        ..Default::default()
    };
    assert_eq!(m.encode_to_vec(), empty_msg(6));

    let m = Mount {
        recursive_read_only: true,
        ..Default::default()
    };
    assert_eq!(m.encode_to_vec(), varint(8, 1));

    let m = Mount {
        image_sub_path: "p".into(),
        ..Default::default()
    };
    assert_eq!(m.encode_to_vec(), one_byte(10, b'p'));

    let m = ContainerStats {
        swap: Some(SwapUsage::default()),
        ..Default::default()
    };
    assert_eq!(m.encode_to_vec(), empty_msg(5));

    let m = ContainerStats {
        writable_layer: Some(FilesystemUsage::default()),
        ..Default::default()
    };
    assert_eq!(m.encode_to_vec(), empty_msg(4));

    let m = LinuxPodSandboxStats {
        containers: vec![ContainerStats::default()],
        ..Default::default()
    };
    assert_eq!(m.encode_to_vec(), empty_msg(5));

    let m = MemoryUsage {
        major_page_faults: Some(UInt64Value::default()),
        ..Default::default()
    };
    assert_eq!(m.encode_to_vec(), empty_msg(7));

    let m = StatusResponse {
        features: Some(RuntimeFeatures::default()),
        ..Default::default()
    };
    assert_eq!(m.encode_to_vec(), empty_msg(4));

    let m = ContainerEventResponse {
        containers_statuses: vec![ContainerStatus::default()],
        ..Default::default()
    };
    assert_eq!(m.encode_to_vec(), empty_msg(5));
}

#[test]
fn enum_values() {
    assert_eq!(Protocol::Sctp as i32, 2);
    assert_eq!(NamespaceMode::Target as i32, 3);
    assert_eq!(ContainerState::ContainerUnknown as i32, 3);
    assert_eq!(PodSandboxState::SandboxNotready as i32, 1);
    assert_eq!(security_profile::ProfileType::Localhost as i32, 2);
    assert_eq!(ContainerEventType::ContainerDeletedEvent as i32, 3);
    assert_eq!(CgroupDriver::Cgroupfs as i32, 1);
    assert_eq!(Signal::Sigrtmax as i32, 65);
    assert_eq!(Signal::Sigrtmin as i32, 35);
    assert_eq!(MetricType::Gauge as i32, 1);
}

#[test]
fn round_trip_nested() {
    let req = CreateContainerRequest {
        pod_sandbox_id: "sb".into(),
        config: Some(ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: "c".into(),
                attempt: 2,
            }),
            envs: vec![KeyValue {
                key: "K".into(),
                value: b"V".to_vec(),
            }],
            linux: Some(LinuxContainerConfig {
                security_context: Some(LinuxContainerSecurityContext {
                    run_as_user: Some(Int64Value { value: 1000 }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        sandbox_config: Some(PodSandboxConfig {
            labels: [("a".to_string(), "b".to_string())].into(),
            ..Default::default()
        }),
    };
    let bytes = req.encode_to_vec();
    assert_eq!(
        CreateContainerRequest::decode(bytes.as_slice()).unwrap(),
        req
    );
}
