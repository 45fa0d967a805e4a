//! `keyd`, the daemon: for now it reports its version; scheduling, rotation and the local API
//! arrive with the rotation work. Kept thin: behaviour lives in the `keyd` library.

use std::process::ExitCode;

fn main() -> ExitCode {
    match std::env::args().nth(1).as_deref() {
        Some("--version" | "-V") | None => {
            println!("keyd {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Some(_) => {
            eprintln!("keyd: the daemon is not available in this version; use keyctl");
            ExitCode::from(2)
        }
    }
}
