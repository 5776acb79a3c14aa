//! Compressed store files (`*.pd_`, read from upstream stores) through `compress::expand_cab`
//! (the `cab` crate: MSZIP, LZX via `lzxd`): never panics, never writes past the cap, and a
//! success reports exactly the bytes written.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::io::{Cursor, Write};
use symcascade::compress::expand_cab;

/// Small enough for fast executions; announced sizes above it are refused before decoding.
const CAP: u64 = 1 << 20;

/// A sink that counts bytes.
struct Count(u64);

impl Write for Count {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let mut out = Count(0);
    let result = expand_cab(Cursor::new(data), &mut out, CAP);
    assert!(out.0 <= CAP + 1, "wrote {} bytes past the cap {CAP}", out.0);
    if let Ok((_, n)) = result {
        assert_eq!(n, out.0, "reported size differs from bytes written");
        assert!(n <= CAP);
    }
});
