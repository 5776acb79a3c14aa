//! Keys computed from the real fixtures equal what SymStore writes.

use crate::harness::*;
use symcascade::key::{Key, PeKey};

/// Golden keys, checked against llvm-pdbutil / llvm-readobj (tests/fixtures/README.md).
const GOLDEN: [(&str, PeKey, &str, &str); 7] = [
    (
        BIG_PDB,
        PeKey::Image,
        "inject_dll_amd64.pdb",
        "64A5656EDA0E4DDC95E476F6BD503F5D1",
    ),
    (DLL, PeKey::Image, "attach_amd64.dll", "6AA9A872c000"),
    (
        PDB,
        PeKey::Image,
        "attach_amd64.pdb",
        "446150EEE021480999C4BCE7828E15281",
    ),
    (
        DLL,
        PeKey::Pdb,
        "attach_amd64.pdb",
        "446150EEE021480999C4BCE7828E15281",
    ),
    (
        DLL_X86,
        PeKey::Image,
        "run_code_on_dllmain_x86.dll",
        "6AA9A85B7000",
    ),
    (
        PDB_X86,
        PeKey::Image,
        "run_code_on_dllmain_x86.pdb",
        "EE1446AFE80E43AA8DA5373EFAB7A50E1",
    ),
    (
        DLL_X86,
        PeKey::Pdb,
        "run_code_on_dllmain_x86.pdb",
        "EE1446AFE80E43AA8DA5373EFAB7A50E1",
    ),
];

#[test]
fn fixture_keys_match_symstore() {
    for (file, pe, name, index) in GOLDEN {
        let k = Key::from_file(&fixture(file), pe).unwrap();
        assert_eq!((k.name(), k.index()), (name, index), "{file} {pe:?}");
    }
}

#[test]
fn non_binaries_get_a_typed_error_naming_the_file() {
    let e = Key::from_file(&fixture("README.md"), PeKey::Pdb).unwrap_err();
    assert!(e.to_string().contains("README.md"), "{e}");
    let e = Key::from_file(&fixture("missing.pdb"), PeKey::Pdb).unwrap_err();
    assert!(e.to_string().contains("missing.pdb"), "{e}");
}

/// An independent SymStore implementation (PyPI `symstore`, installed by .ci/run) lays the
/// fixtures out at exactly the paths our layout computes, plain and compressed.
// Linux-only: Debian's python3 with PyPI symstore as the oracle.
#[cfg(unix)]
#[test]
fn paths_equal_an_independent_symstore() {
    // Debian's python3 (with python3-gi + gir1.2-gcab-1.0 for `-z`), whatever PATH shims say.
    const PY: &str = "/usr/bin/python3";
    let have = std::process::Command::new(PY)
        .args(["-c", "import symstore, gi"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !have {
        assert!(!is_ci(), "CI must install PyPI symstore (see .ci/run)");
        eprintln!("skipping: PyPI `symstore` not installed (pip install symstore)");
        return;
    }
    for compress in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = std::process::Command::new(PY);
        cmd.args([
            "-c",
            "import sys; from symstore.command_line import main; sys.argv[0] = 'symstore'; sys.exit(main())",
        ]);
        if compress {
            cmd.arg("-z");
        }
        cmd.arg(dir.path()).args(ALL.map(fixture));
        run(&mut cmd);
        let mut theirs = published_files(dir.path());
        theirs.retain(|p| !p.starts_with("000Admin") && p != "pingme.txt");
        let form = if compress {
            symcascade::layout::Form::Compressed
        } else {
            symcascade::layout::Form::Plain
        };
        let mut ours: Vec<String> = ALL
            .iter()
            .map(|f| {
                symcascade::layout::path_for(&key_of(f), symcascade::layout::Tiering::OneTier, form)
                    .to_string()
            })
            .collect();
        ours.sort();
        assert_eq!(theirs, ours, "compress={compress}");
        if compress {
            // Their compressed files expand to the originals through our CAB reader.
            for f in ALL {
                let p = dir.path().join(
                    symcascade::layout::path_for(
                        &key_of(f),
                        symcascade::layout::Tiering::OneTier,
                        form,
                    )
                    .to_string(),
                );
                let mut out = Vec::new();
                symcascade::compress::expand_cab(
                    std::fs::File::open(p).unwrap(),
                    &mut out,
                    u64::MAX,
                )
                .unwrap();
                assert_eq!(out, std::fs::read(fixture(f)).unwrap(), "{f}");
            }
        }
    }
}
