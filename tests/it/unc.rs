//! Windows: a share whose host the config gives no credentials for is reached through the
//! operating system's own SMB client — the UNC path through the file system, as the process's
//! identity — as SymSrv does (`store::open::smb_route`). Under Wine, `\\host\share` is the
//! prefix's `dosdevices/unc/host/share` folder, so the test builds its share there; on real
//! Windows it needs `SYMCASCADE_TEST_UNC_ROOT` (a folder that is `\\<host>\<share>`).
#![cfg(windows)]

use crate::harness::*;
use std::path::PathBuf;
use std::sync::Arc;
use symcascade::layout::{Form, Tiering};
use symcascade::store::Transport;

/// The folder behind `\\MainOffice\<share>` and the UNC path, or `None` (skipped) where no
/// share can be made.
fn os_share(share: &str) -> Option<(PathBuf, String)> {
    let unc = format!(r"\\MainOffice\{share}");
    if let Ok(p) = std::env::var("WINEPREFIX") {
        // A Unix path: reachable from the Windows side through drive Z:.
        let dir = PathBuf::from(format!("Z:{}", p.replace('/', "\\")))
            .join("dosdevices")
            .join("unc")
            .join("mainoffice")
            .join(share.to_ascii_lowercase());
        std::fs::create_dir_all(&dir).unwrap();
        return Some((dir, unc));
    }
    assert!(
        !is_ci(),
        "CI=true on Windows without Wine: set SYMCASCADE_TEST_UNC_ROOT to a share's folder"
    );
    eprintln!("skipping: no Wine prefix and no SYMCASCADE_TEST_UNC_ROOT");
    None
}

#[tokio::test]
async fn a_share_without_credentials_goes_through_the_os_client() {
    let share = format!("Symbols{}", std::process::id());
    let Some((dir, unc)) = os_share(&share) else {
        return;
    };
    let s = symcascade::store::LocalStore::new(&dir);
    symcascade::publish::publish_file(&s, &fixture(PDB), Tiering::OneTier, Form::Plain)
        .await
        .unwrap();
    let lab = Lab::new();
    let config = symcascade::config::Config::default();
    let smb = symcascade::store::smb::SmbConfig {
        default_credentials: None,
        ..Default::default()
    };
    let opener = Arc::new(symcascade::store::open::Transports {
        smb: symcascade::store::smb::SmbClient::new(smb),
        http: symcascade::store::http::transport_from_env(&config.http_config()),
        blackout: config.blackout(),
        objects: Default::default(),
    });
    let sympath = format!("srv*{}*{unc}", lab.s("local"));
    let c = lab.cascade_with(&sympath, Default::default(), opener).await;
    let upstream = c.chains()[0].tiers[1].store().describe();
    assert_eq!(upstream.transport, Transport::OsSmb, "{upstream:?}");
    let f = c
        .fetch(&key_of(PDB))
        .await
        .unwrap()
        .expect("found on the share");
    assert_eq!(f.found_in, unc);
    same(
        &lab.file_in("local", &key_of(PDB), Form::Plain),
        &fixture(PDB),
    );
    let _ = std::fs::remove_dir_all(&dir);
}
