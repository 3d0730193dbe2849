//! Misuse of `#[cache_on_arguments]` and `#[cache_multi_on_arguments]` is a compile error
//! that points at the offending token and says what to write: one case per message in
//! `tests/ui/`, each with its expected output in a `.stderr` file (regenerate with
//! `TRYBUILD=overwrite cargo test --test compile_fail`, then review the diff).
//!
//! Cases that call the generated functions show that a failed expansion still declares
//! them: the user sees the macro's error once, not once per call site.

#[test]
fn misuse_is_a_compile_error_with_a_helpful_message() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/*.rs");
}
