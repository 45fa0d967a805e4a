//! Links the daemon's start-up and idle functions first and together (`link/keyd.order`,
//! written by bench/symbol_order.py): the kernel maps code 64 KiB or more around each page a
//! process touches, so the same functions spread over the binary keep several times the
//! memory resident (docs/benchmarks.md). keyctl, the tests and the fuzz targets link as usual.

fn main() {
    println!("cargo:rerun-if-changed=link/keyd.order");
    println!("cargo:rerun-if-env-changed=KEYD_NO_SYMBOL_ORDER");
    let env = |k: &str| std::env::var(k).unwrap_or_default();
    // rust-lld, this target's default linker since Rust 1.90, takes the file; an older
    // compiler's default (GNU ld) or a linker chosen by hand may not, and builds as it always
    // did (so does KEYD_NO_SYMBOL_ORDER=1).
    let own_linker = env("CARGO_ENCODED_RUSTFLAGS").contains("link")
        || std::env::var_os("CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER").is_some();
    if env("TARGET") == "x86_64-unknown-linux-gnu"
        && links_with_lld_by_default()
        && !own_linker
        && std::env::var_os("KEYD_NO_SYMBOL_ORDER").is_none()
    {
        let order = format!("{}/link/keyd.order", env("CARGO_MANIFEST_DIR"));
        println!("cargo:rustc-link-arg-bin=keyd=-Wl,--symbol-ordering-file={order}");
        // A name a later build no longer has is skipped: the file ages, the build never fails.
        println!("cargo:rustc-link-arg-bin=keyd=-Wl,--no-warn-symbol-ordering");
    }
}

/// Whether the compiler building keyd is Rust 1.90 or newer (`rustc -V`: "rustc 1.95.0 (…)").
fn links_with_lld_by_default() -> bool {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let Ok(out) = std::process::Command::new(rustc).arg("-V").output() else {
        return false;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let mut version = text
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .split(['.', '-'])
        .map(|n| n.parse::<u32>().unwrap_or(0));
    let (major, minor) = (version.next().unwrap_or(0), version.next().unwrap_or(0));
    (major, minor) >= (1, 90)
}
