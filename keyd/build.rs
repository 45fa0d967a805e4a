//! Links the daemon's start-up and idle functions first and together (`link/keyd.order`,
//! written by bench/symbol_order.py): the kernel maps code 64 KiB or more around each page a
//! process touches, so the same functions spread over the binary keep several times the
//! memory resident (docs/benchmarks.md). keyctl, the tests and the fuzz targets link as usual.

fn main() {
    println!("cargo:rerun-if-changed=link/keyd.order");
    println!("cargo:rerun-if-env-changed=KEYD_NO_SYMBOL_ORDER");
    let env = |k: &str| std::env::var(k).unwrap_or_default();
    // rust-lld, this target's default linker since Rust 1.90, takes the file; a linker chosen
    // by hand may not, and builds as it always did (so does KEYD_NO_SYMBOL_ORDER=1).
    let own_linker = env("CARGO_ENCODED_RUSTFLAGS").contains("link")
        || std::env::var_os("CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER").is_some();
    if env("TARGET") == "x86_64-unknown-linux-gnu"
        && !own_linker
        && std::env::var_os("KEYD_NO_SYMBOL_ORDER").is_none()
    {
        let order = format!("{}/link/keyd.order", env("CARGO_MANIFEST_DIR"));
        println!("cargo:rustc-link-arg-bin=keyd=-Wl,--symbol-ordering-file={order}");
        // A name a later build no longer has is skipped: the file ages, the build never fails.
        println!("cargo:rustc-link-arg-bin=keyd=-Wl,--no-warn-symbol-ordering");
    }
}
