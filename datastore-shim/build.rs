fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(true)
        // Values are shared between the store, watchers and responses: Bytes clones are cheap.
        .bytes(".")
        .compile_protos(&["proto/rpc.proto", "proto/mvcc.proto"], &["proto"])?;
    Ok(())
}
