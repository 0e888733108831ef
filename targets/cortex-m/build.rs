//! Copies the board's memory map to OUT_DIR as `memory.x` (cortex-m-rt's `link.x`
//! includes it) and passes `-Tlink.x`, so that no `.cargo/config.toml` is needed and the
//! build works from any directory (`--manifest-path`).
//!
//! Board by target: thumbv6m-none-eabi -> microbit (nRF51, 16 KiB SRAM);
//! thumbv7m-none-eabi -> lm3s6965evb (64 KiB SRAM), or mps2-an385 with feature `mps2`.
use std::{env, fs, path::PathBuf};

fn main() {
    let target = env::var("TARGET").unwrap();
    let mps2 = env::var_os("CARGO_FEATURE_MPS2").is_some();
    let board = if target.starts_with("thumbv6m") {
        "microbit"
    } else if mps2 {
        "mps2-an385"
    } else {
        "lm3s6965evb"
    };
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    let src = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap())
        .join("memory")
        .join(format!("{board}.x"));
    fs::copy(&src, out.join("memory.x")).unwrap();
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rustc-link-arg-bins=-Tlink.x");
    println!("cargo:rustc-cfg=board=\"{board}\"");
    println!(
        "cargo::rustc-check-cfg=cfg(board, values(\"microbit\", \"mps2-an385\", \"lm3s6965evb\"))"
    );
    println!("cargo:rerun-if-changed=memory");
    println!("cargo:rerun-if-changed=build.rs");
}
