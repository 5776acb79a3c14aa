//! Miss-queue inputs written by other machines: SymChk `/om` manifests (`prefetch`) and the
//! JSON request records on the branch share. Parsing never panics; accepted keys re-validate
//! and give safe store paths; what parses is written back in a form that parses the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use symcascade::key::Key;
use symcascade::layout::{Form, RelPath, Tiering, path_for};
use symcascade::queue::{Record, parse_manifest};

fn check_key(k: &Key) {
    let again = Key::new(k.name(), k.index()).expect("accepted key re-validates");
    assert_eq!(again.index(), k.index(), "index not canonical");
    for tiering in [Tiering::OneTier, Tiering::TwoTier] {
        for form in [Form::Plain, Form::Compressed, Form::FilePtr] {
            let p = path_for(k, tiering, form);
            assert!(
                RelPath::checked(p.components().to_vec()).is_some(),
                "unsafe store path {p:?} for {k:?}"
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok((rec, key)) = Record::parse(data) {
        check_key(&key);
        let bytes = rec.to_bytes();
        let (rec2, key2) = Record::parse(&bytes).expect("a written record parses");
        assert_eq!((&rec2, &key2), (&rec, &key), "record round trip");
        let _ = rec.file_name();
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(keys) = parse_manifest(text) {
        for k in &keys {
            check_key(k);
        }
        let written: String = keys
            .iter()
            .map(|k| format!("{},{},1\n", k.name(), k.index()))
            .collect();
        let back = parse_manifest(&written)
            .unwrap_or_else(|e| panic!("{keys:?} written as {written:?} does not parse: {e}"));
        assert_eq!(back, keys, "manifest round trip through {written:?}");
    }
});
