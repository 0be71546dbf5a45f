//! Keeps the `pow` that `src/main.rs` defines inside the `powerpool` binary: without a version
//! script, the executable exports it, and every library loaded into the process (one that
//! `LD_PRELOAD` names, say) would call it instead of the C library's, which sets `errno`.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=src/local.map");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
        println!("cargo:rustc-link-arg-bin=powerpool=-Wl,--version-script={dir}/src/local.map");
    }
}
