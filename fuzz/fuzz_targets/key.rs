//! Keying untrusted binaries (`symcascade add`/`get --image`, files handed to the agent): PE
//! images (through `object`), Windows PDBs (MSF, through `pdb2`) and portable PDBs. Never
//! panics; an accepted key re-validates and gives safe store paths (a PE's CodeView record
//! names the PDB, so that name is untrusted too).
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::io::Cursor;
use symcascade::key::{Key, PeKey};
use symcascade::layout::{Form, RelPath, Tiering, path_for};

fuzz_target!(|data: &[u8]| {
    // The name only matters for the index's canonical case (`.pdb` or not).
    let name = if data.starts_with(b"MZ") {
        "fuzz.dll"
    } else {
        "fuzz.pdb"
    };
    for pe in [PeKey::Pdb, PeKey::Image] {
        let Ok(k) = Key::from_reader(Cursor::new(data), name, pe) else {
            continue;
        };
        let again = Key::new(k.name(), k.index()).expect("accepted key re-validates");
        assert_eq!(again.index(), k.index(), "index not canonical");
        for tiering in [Tiering::OneTier, Tiering::TwoTier] {
            for form in [Form::Plain, Form::Compressed, Form::FilePtr] {
                let p = path_for(&k, tiering, form);
                assert!(
                    RelPath::checked(p.components().to_vec()).is_some(),
                    "unsafe store path {p:?} for {k:?}"
                );
            }
        }
        if !data.starts_with(b"MZ") {
            break; // PeKey only matters for PE images
        }
    }
});
