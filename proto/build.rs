fn main() {
    println!("cargo:rerun-if-changed=lb.proto");
    git_revision();
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR set by cargo"));
    let built = tonic_build::configure()
        .file_descriptor_set_path(out.join("lb_descriptor.bin"))
        .compile_protos(&["lb.proto"], &["."]);
    if let Err(e) = built {
        eprintln!("error: lb-proto: compiling lb.proto failed ({e}); on Debian 12 install protoc with: apt-get install protobuf-compiler");
        std::process::exit(1);
    }
}

/// `LB_GIT_REV` for `lbd --version` and `lbctl --version`: the environment's
/// (a package built outside git sets it), else `git describe`, else "unknown".
fn git_revision() {
    println!("cargo:rerun-if-env-changed=LB_GIT_REV");
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let rev = std::env::var("LB_GIT_REV")
        .ok()
        .filter(|r| !r.is_empty())
        .or_else(|| git(&["describe", "--always", "--dirty", "--abbrev=12"]))
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=LB_GIT_REV={rev}");
    // A new commit (HEAD or the branch it names moves) rebuilds this.
    if let Some(dir) = git(&["rev-parse", "--absolute-git-dir"]) {
        println!("cargo:rerun-if-changed={dir}/HEAD");
        // Where the branch's ref really is (a worktree keeps its refs in
        // the common git dir); a path that does not exist would rebuild
        // every time.
        if let Some(r) = git(&["symbolic-ref", "-q", "HEAD"])
            .and_then(|r| git(&["rev-parse", "--path-format=absolute", "--git-path", &r]))
            .filter(|p| std::path::Path::new(p).exists())
        {
            println!("cargo:rerun-if-changed={r}");
        }
        println!("cargo:rerun-if-changed={dir}/index");
    }
}
