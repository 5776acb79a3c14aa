//! Symbol path grammar (`--sympath`, `_NT_SYMBOL_PATH`, config): parsing never panics, and
//! whatever parses is printed (`Display`) in a form that parses back to the same value — the
//! property `sympath::tests::display_parse_round_trip` checks for generated values, here for
//! arbitrary text. A single `Location` (a `file.ptr` target) gets the same checks.
#![no_main]

use libfuzzer_sys::fuzz_target;
use symcascade::sympath::{Element, Location, StoreSpec, SymbolPath};

fn check_location(l: &Location) {
    let text = l.to_string();
    let back: Location = text
        .parse()
        .unwrap_or_else(|e| panic!("{l:?} printed as {text:?} does not parse: {e}"));
    assert_eq!(&back, l, "location round trip through {text:?}");
    // Splitting a file location must not panic either (used on `file.ptr` targets).
    let _ = l.split_file();
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(p) = s.parse::<SymbolPath>() {
        let text = p.to_string();
        let back: SymbolPath = text
            .parse()
            .unwrap_or_else(|e| panic!("{p:?} printed as {text:?} does not parse: {e}"));
        assert_eq!(back, p, "symbol path round trip through {text:?}");
        for e in &p.elements {
            match e {
                Element::Server { stores, .. } => {
                    assert!(!stores.is_empty(), "a chain without stores: {p:?}");
                    for st in stores {
                        if let StoreSpec::At(l) = st {
                            check_location(l);
                        }
                    }
                }
                Element::Cache { store } => {
                    if let StoreSpec::At(l) = store {
                        check_location(l);
                    }
                }
                Element::Plain { location } => check_location(location),
            }
        }
    }
    if let Ok(l) = s.parse::<Location>() {
        check_location(&l);
    }
});
