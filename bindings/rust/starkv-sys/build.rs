//! Generates the bindings from the public header and links the shared library.
//!
//! Environment:
//! - `STARKV_INCLUDE_DIR`: folder holding `starkv/starkv.h` (default: the crate's
//!   `include/`, which in the repository is a link to `<repo>/include/starkv/starkv.h`
//!   and in the packaged crate the header itself, so the .crate builds on its own).
//! - `STARKV_LIB_DIR`: folder holding `libstarkv.so` (default: `<repo>/build`; from
//!   the packaged crate there is no default: set it, e.g. to an install's `lib/`).
//!
//! The library folder is passed on as `cargo:libdir=` (dependent crates read it as
//! `DEP_STARKV_LIBDIR`, e.g. to set an rpath on their tests and binaries).

use std::env;
use std::path::PathBuf;

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    // bindings/rust/starkv-sys -> the repository root (meaningless in the packaged crate)
    let repo = manifest.join("../../..");

    println!("cargo:rerun-if-env-changed=STARKV_INCLUDE_DIR");
    println!("cargo:rerun-if-env-changed=STARKV_LIB_DIR");

    let include_dir = env::var_os("STARKV_INCLUDE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest.join("include"));
    let header = include_dir.join("starkv").join("starkv.h");
    if !header.is_file() {
        panic!(
            "starkv-sys: {} not found; set STARKV_INCLUDE_DIR to the folder holding starkv/starkv.h",
            header.display()
        );
    }
    println!("cargo:rerun-if-changed={}", header.display());

    let lib_dir = env::var_os("STARKV_LIB_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo.join("build"));
    let lib_dir = lib_dir.canonicalize().unwrap_or(lib_dir);
    if !lib_dir.join("libstarkv.so").exists() && !lib_dir.join("libstarkv.dylib").exists() {
        println!(
            "cargo:warning=libstarkv not found in {}; build the C library first or set STARKV_LIB_DIR",
            lib_dir.display()
        );
    }
    println!("cargo:rustc-link-search=native={}", lib_dir.display());
    println!("cargo:rustc-link-lib=dylib=starkv");
    // Reaches only this crate's own tests; dependents use DEP_STARKV_LIBDIR.
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib_dir.display());
    println!("cargo:libdir={}", lib_dir.display());
    println!("cargo:include={}", include_dir.display());

    let bindings = bindgen::Builder::default()
        .header(header.to_string_lossy())
        .clang_arg(format!("-I{}", include_dir.display()))
        .allowlist_function("starkv_.*")
        .allowlist_type("starkv_.*")
        .allowlist_var("STARKV_.*")
        // Enums stay integer typedefs with constants (a library newer than the
        // header may return values the Rust side does not know).
        .prepend_enum_name(false)
        .size_t_is_usize(true)
        .derive_default(true)
        .rustfmt_bindings(false)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks))
        .generate()
        .expect("starkv-sys: bindgen failed on starkv.h");
    let out = PathBuf::from(env::var("OUT_DIR").unwrap()).join("bindings.rs");
    bindings
        .write_to_file(&out)
        .expect("starkv-sys: cannot write bindings.rs");
}
