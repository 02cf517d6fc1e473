//! Compiles the protos with protox, so building needs no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/weft/discovery/v1/discovery.proto",
        "proto/weft/control/v1/admin.proto",
        "proto/istio/v1/auth/ca.proto",
    ];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let descriptors = protox::compile(protos, ["proto"])?;
    tonic_prost_build::configure()
        .bytes(".weft.discovery.v1.Resource.json")
        .compile_fds(descriptors)?;
    Ok(())
}
