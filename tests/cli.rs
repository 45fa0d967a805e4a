//! CLI snapshots: `--help` of every command and the main error messages, run against the built
//! binaries from `tests/cmd/*.trycmd`. Regenerate with
//! `TRYCMD=overwrite cargo test -p keyd-tests --test cli` and review the diff like code.

#[test]
fn cli_snapshots() {
    trycmd::TestCases::new()
        .register_bin("keyctl", keyd_tests::binary("keyctl"))
        .register_bin("keyd", keyd_tests::binary("keyd"))
        .register_bin("cp", std::path::Path::new("/bin/cp"))
        .register_bin("rm", std::path::Path::new("/bin/rm"))
        // Every case that opens a home names it with --home inside the case's sandbox. A fixed
        // width for wrapped help text.
        .env("COLUMNS", "100")
        .case("cmd/*.trycmd");
}
