//! `skiff-bridge`: a CNI plugin attaching containers to a Linux bridge, with
//! bundled host-local compatible IPAM. See the crate docs.

fn main() -> std::process::ExitCode {
    skiff_cni::plugin::main(skiff_cni::plugin::bridge)
}
