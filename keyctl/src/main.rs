//! `keyctl`, the keyd command line: argument parsing, one call into the `keyd` library per
//! command, and the presentation of its results. Exit codes are documented in `--help`.

mod cli;
mod compose;
mod output;

use std::process::ExitCode;

use clap::Parser as _;

/// mimalloc rather than the system's malloc: see keyctl/Cargo.toml. Values are still zeroized
/// by their own types before their memory is freed, whichever allocator frees it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    if let Err(e) = keyd::secret::forbid_core_dumps() {
        eprintln!(
            "keyctl: warning: cannot turn off core dumps ({e}): a crash could write secrets to disk"
        );
    }
    let args = cli::Args::parse();
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) if failure.message.is_empty() => ExitCode::from(failure.code),
        Err(failure) => {
            eprintln!("keyctl: {}", failure.message);
            if let Some(hint) = &failure.hint {
                eprintln!("hint: {hint}");
            }
            ExitCode::from(failure.code)
        }
    }
}
