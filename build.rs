//! Compiles `proto/api.proto` (the gRPC server API) into Rust with a pure-Rust protobuf
//! compiler, so a build needs nothing but cargo.

fn main() {
    println!("cargo:rerun-if-changed=proto/api.proto");
    let fds = protox::compile(["proto/api.proto"], ["proto"]).expect("proto/api.proto compiles");
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(true)
        .compile_fds(fds)
        .expect("generate the gRPC server code");
}
