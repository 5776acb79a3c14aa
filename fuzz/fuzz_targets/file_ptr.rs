//! `file.ptr` contents (read from upstream stores): parsing never panics; what parses is
//! written back by `format_file_ptr` in a form that parses to the same value whenever that form
//! still fits the size limit; a `PATH:` target parsed as a location never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use symcascade::layout::{FilePtr, MAX_FILE_PTR_LEN, format_file_ptr, parse_file_ptr};
use symcascade::sympath::Location;

fuzz_target!(|data: &[u8]| {
    let Ok(ptr) = parse_file_ptr(data) else {
        return;
    };
    let text = format_file_ptr(&ptr);
    if text.len() <= MAX_FILE_PTR_LEN {
        let back = parse_file_ptr(text.as_bytes())
            .unwrap_or_else(|e| panic!("{ptr:?} written as {text:?} does not parse: {e}"));
        assert_eq!(back, ptr, "file.ptr round trip through {text:?}");
    }
    if let FilePtr::Path(target) = &ptr
        && let Ok(l) = target.parse::<Location>()
    {
        let _ = l.split_file();
    }
});
