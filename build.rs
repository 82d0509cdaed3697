//! Compiles the gRPC services into Rust with a pure-Rust protobuf compiler, so a build needs
//! nothing but cargo: `proto/api.proto` (the server API) and `proto/unistream.proto` (the
//! unidirectional stream).

fn main() {
    println!("cargo:rerun-if-changed=proto/api.proto");
    println!("cargo:rerun-if-changed=proto/unistream.proto");
    let fds = protox::compile(["proto/api.proto"], ["proto"]).expect("proto/api.proto compiles");
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(true)
        .compile_fds(fds)
        .expect("generate the gRPC server code");
    // The stream's messages cross the server already encoded: no Rust types are generated for
    // them (the package maps to byte aliases) and the service uses a pass-through codec.
    let fds = protox::compile(["proto/unistream.proto"], ["proto"]).expect("proto/unistream.proto compiles");
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(true)
        .extern_path(".centrifugal.centrifugo.unistream", "crate::grpc::uni::wire")
        .codec_path("crate::grpc::uni::RawCodec")
        .compile_fds(fds)
        .expect("generate the uni_grpc server code");
}
