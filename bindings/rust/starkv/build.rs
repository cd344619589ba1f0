//! Sets an rpath to the folder of libstarkv on this crate's tests, examples and
//! binaries, so that `cargo test` / `cargo run --example` find the library without
//! LD_LIBRARY_PATH. starkv-sys reports the folder (`links = "starkv"` +
//! `cargo:libdir=`), which cargo hands to this script as DEP_STARKV_LIBDIR.
fn main() {
    println!("cargo:rerun-if-env-changed=DEP_STARKV_LIBDIR");
    println!("cargo:rerun-if-env-changed=STARKV_LIB_DIR");
    if let Ok(dir) = std::env::var("DEP_STARKV_LIBDIR") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
        // The tests and examples read this to find the C CLI (`<libdir>/starkv`).
        println!("cargo:rustc-env=STARKV_BUILT_LIB_DIR={dir}");
    }
}
