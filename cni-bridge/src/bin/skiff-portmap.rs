//! `skiff-portmap`: host port mappings for containers, chained after
//! skiff-bridge in a conflist. See `skiff_cni::portmap`.

fn main() -> std::process::ExitCode {
    skiff_cni::plugin::main(skiff_cni::portmap::dispatch)
}
