//! Without dogpile's `tokio` feature, a memoized `async fn` is one compile error per
//! function saying to enable `tokio`, not an error for each async operation the expansion
//! would call. The features of this test's build are those of the cases: run it with
//! `cargo test --no-default-features --test compile_fail_no_tokio` (with `tokio` on, as
//! under `--all-features`, it has nothing to check). Regenerate the expected output with
//! `TRYBUILD=overwrite` and review the diff.
#![cfg(not(feature = "tokio"))]

#[test]
fn an_async_fn_without_the_tokio_feature_says_to_enable_it() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui_no_tokio/*.rs");
}
