//! Compiles the gRPC services into Rust with a pure-Rust protobuf compiler, so a build needs
//! nothing but cargo: `proto/api.proto` (the server API), `proto/unistream.proto` (the
//! unidirectional stream) and `proto/proxy.proto` (the client of the proxy backends).

fn main() {
    println!("cargo:rerun-if-changed=proto/api.proto");
    println!("cargo:rerun-if-changed=proto/unistream.proto");
    println!("cargo:rerun-if-changed=proto/proxy.proto");
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
    // The proxy backends' service: Gyre is its client. Payload fields are `Bytes`, so a
    // request takes the client's payload without a copy.
    let fds = protox::compile(["proto/proxy.proto"], ["proto"]).expect("proto/proxy.proto compiles");
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(false)
        // No `CentrifugoProxyClient::connect(endpoint)`: it would clash with the Connect
        // method, and the client is made on a channel anyway.
        .build_transport(false)
        .bytes(".")
        .compile_fds(fds.clone())
        .expect("generate the gRPC proxy client code");
    // A backend for the client's unit tests: the service's server side only, over the client's
    // message types, in a folder of its own (included under `cfg(test)`).
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("proxy_server");
    std::fs::create_dir_all(&out).expect("create OUT_DIR/proxy_server");
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(true)
        .generate_default_stubs(true)
        .extern_path(".centrifugal.centrifugo.proxy", "crate::proxy::grpc::pb")
        .out_dir(out)
        .compile_fds(fds)
        .expect("generate the gRPC proxy test server code");
}
