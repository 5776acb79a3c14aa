//! HTTP front request paths (`/<name>/<index>/<file>`, two-tier `/<na>/<name>/<index>/<file>`):
//! parsing never panics; an accepted request names a store path with only safe components
//! (no `..`, separators, drive colons, NULs) in both layouts, and printing that path back
//! (percent-encoded) parses to the same request.
#![no_main]

use libfuzzer_sys::fuzz_target;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use symcascade::key::Key;
use symcascade::layout::{RelPath, Tiering, parse_request_path, path_for};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(req) = parse_request_path(s) else {
        return;
    };
    // The key is one that Key::new accepts as is.
    let again = Key::new(req.key.name(), req.key.index()).expect("accepted key re-validates");
    assert_eq!(again.index(), req.key.index(), "index not canonical");
    for tiering in [Tiering::OneTier, Tiering::TwoTier] {
        let p = path_for(&req.key, tiering, req.form);
        assert!(
            RelPath::checked(p.components().to_vec()).is_some(),
            "unsafe store path {p:?} from request {s:?}"
        );
    }
    let p = path_for(&req.key, req.tiering, req.form);
    let encoded: Vec<String> = p
        .components()
        .iter()
        .map(|c| utf8_percent_encode(c, NON_ALPHANUMERIC).to_string())
        .collect();
    let text = format!("/{}", encoded.join("/"));
    if text.len() <= symcascade::layout::MAX_REQUEST_PATH {
        let back = parse_request_path(&text)
            .unwrap_or_else(|e| panic!("{req:?} printed as {text:?} does not parse: {e}"));
        assert_eq!(back, req, "request round trip through {text:?}");
    }
});
