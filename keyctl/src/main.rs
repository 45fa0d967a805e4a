//! `keyctl`, the keyd command line: argument parsing, one call into the `keyd` library per
//! command, and the presentation of its results. Exit codes are documented in `--help`.

mod cli;
mod compose;
mod output;

use std::process::ExitCode;

/// mimalloc rather than the system's malloc: see keyctl/Cargo.toml. Values are still zeroized
/// by their own types before their memory is freed, whichever allocator frees it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let core_dumps = keyd::secret::forbid_core_dumps();
    let args = match cli::Args::parse_command_line() {
        Ok(args) => args,
        Err(e) => {
            let failure = cli::Failure::from_clap(e);
            failure.print(true);
            return ExitCode::from(failure.code);
        }
    };
    let json = args.json();
    if let Err(e) = core_dumps {
        cli::warn(
            json,
            &format!("cannot turn off core dumps ({e}): a crash could write secrets to disk"),
        );
    }
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            failure.print(json);
            ExitCode::from(failure.code)
        }
    }
}
