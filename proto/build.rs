fn main() {
    println!("cargo:rerun-if-changed=lb.proto");
    if let Err(e) = tonic_build::configure().compile_protos(&["lb.proto"], &["."]) {
        eprintln!("error: lb-proto: compiling lb.proto failed ({e}); on Debian 12 install protoc with: apt-get install protobuf-compiler");
        std::process::exit(1);
    }
}
