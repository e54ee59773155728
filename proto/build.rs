//! Compiles `cri/api.proto` with protox (pure Rust, no system `protoc`) and
//! generates prost messages plus tonic clients and servers for both services.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=cri/api.proto");
    println!("cargo:rerun-if-changed=build.rs");

    let mut compiler = protox::Compiler::new(["cri"])?;
    compiler
        .include_source_info(true)
        .include_imports(true)
        .open_files(["cri/api.proto"])?;

    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("cri_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;

    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .emit_rerun_if_changed(false)
        .compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}
