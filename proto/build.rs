fn main() {
    println!("cargo:rerun-if-changed=lb.proto");
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR set by cargo"));
    let built = tonic_build::configure()
        .file_descriptor_set_path(out.join("lb_descriptor.bin"))
        .compile_protos(&["lb.proto"], &["."]);
    if let Err(e) = built {
        eprintln!("error: lb-proto: compiling lb.proto failed ({e}); on Debian 12 install protoc with: apt-get install protobuf-compiler");
        std::process::exit(1);
    }
}
