//! Links the kernel with the linker script of targets/x86_64-qemu (only for the bare-metal
//! target: a host build of this package is just a message).
fn main() {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../targets/x86_64-qemu/linker.ld")
        .canonicalize()
        .expect("targets/x86_64-qemu/linker.ld");
    println!("cargo:rerun-if-changed={}", script.display());
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("none") {
        println!("cargo:rustc-link-arg-bins=-T{}", script.display());
        println!("cargo:rustc-link-arg-bins=--no-dynamic-linker");
    }
}
