//! Generates the prost messages and tonic services from `proto/*.proto`, using the vendored
//! protoc so that a fresh machine needs no system protobuf compiler.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    std::env::set_var("PROTOC", protoc);
    println!("cargo:rerun-if-changed=proto");
    tonic_prost_build::configure().compile_protos(&["proto/meridian.proto"], &["proto"])?;
    Ok(())
}
