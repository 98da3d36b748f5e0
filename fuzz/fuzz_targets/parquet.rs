#![no_main]
// The parquet crate panics on some malformed files; `read_parquet` catches
// that and returns an error. libFuzzer's panic hook would abort before the
// catch, so this target puts back the default hook once. A panic that
// escapes `read_parquet` is still a crash: libfuzzer-sys aborts on it.
static DEFAULT_HOOK: std::sync::Once = std::sync::Once::new();

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    DEFAULT_HOOK.call_once(|| drop(std::panic::take_hook()));
    mesh_fuzz::parquet(data)
});
