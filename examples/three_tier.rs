//! The main job on an embedded default: a three-tier chain of local folders
//! (`local ← branch ← main`) whose main store is built from the real MSVC fixtures, then every
//! fixture's symbol file fetched through the cascade, as a debugger on a branch-office desktop
//! would.
//!
//! Run: `cargo run --release --example three_tier [-- DIR]` (DIR defaults to a fresh temp
//! dir, kept so you can look at it). The main store holds the PDBs compressed (as `symstore
//! /compress` writes them) and the DLLs plain; one PDB is reached through a `file.ptr`.

use std::path::PathBuf;
use std::sync::Arc;
use symcascade::cascade::{Cascade, CascadeOptions};
use symcascade::key::{Key, PeKey};
use symcascade::layout::{Form, Tiering};
use symcascade::store::{LocalOnly, LocalStore};
use symcascade::sympath::{Location, SymbolPath};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let root = match std::env::args().nth(1) {
        Some(d) => PathBuf::from(d),
        None => tempfile::Builder::new()
            .prefix("symcascade-demo.")
            .tempdir()?
            .keep(),
    };
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let (local, branch, main, drop) = (
        root.join("local"),
        root.join("branch"),
        root.join("main"),
        root.join("builds"),
    );

    // Build the main office's store from real files.
    let main_store = LocalStore::new(&main);
    std::fs::create_dir_all(&main)?;
    std::fs::write(main.join("pingme.txt"), b"")?;
    let add = |f: &str, form| {
        let (s, p) = (&main_store, fixtures.join(f));
        async move { symcascade::publish::publish_file(s, &p, Tiering::OneTier, form).await }
    };
    add("attach_amd64.dll", Form::Plain).await?;
    add("attach_amd64.pdb", Form::Compressed).await?;
    add("run_code_on_dllmain_x86.dll", Form::Plain).await?;
    // One PDB lives on a build share, reached through file.ptr.
    std::fs::create_dir_all(&drop)?;
    std::fs::copy(
        fixtures.join("run_code_on_dllmain_x86.pdb"),
        drop.join("run_code_on_dllmain_x86.pdb"),
    )?;
    symcascade::publish::publish_file(
        &main_store,
        &drop.join("run_code_on_dllmain_x86.pdb"),
        Tiering::OneTier,
        Form::FilePtr,
    )
    .await?;

    let sympath = format!(
        "srv*{}*{}*{}",
        local.display(),
        branch.display(),
        main.display()
    );
    println!("symbol path: {sympath}\n");
    let path: SymbolPath = sympath.parse()?;
    let default = Location::Local {
        path: root.join("default").display().to_string(),
    };
    let cascade = Cascade::resolve(
        &path,
        Arc::new(LocalOnly),
        &default,
        CascadeOptions::default(),
    )
    .await;

    for f in ["attach_amd64.dll", "run_code_on_dllmain_x86.dll"] {
        let bin = fixtures.join(f);
        for (what, key) in [
            ("image", Key::from_file(&bin, PeKey::Image)?),
            ("its PDB", Key::from_file(&bin, PeKey::Pdb)?),
        ] {
            for round in ["first", "again"] {
                let l = cascade.lookup(&key).await?;
                match &l.fetched {
                    Some(h) => {
                        println!(
                            "{round:>5}: {f} {what} {key}\n       found in {} as {:?}{}, read {} B, {} ms",
                            h.found_in,
                            h.form,
                            h.via_file_ptr
                                .as_ref()
                                .map(|t| format!(" -> {t}"))
                                .unwrap_or_default(),
                            h.bytes_read,
                            l.elapsed_ms
                        );
                        for w in &h.written {
                            println!(
                                "       copied {:?} into {} ({} B)",
                                w.form, w.store, w.bytes
                            );
                        }
                        println!("       local path: {}", h.location);
                    }
                    None => println!("{round:>5}: {f} {what} {key}: not found"),
                }
            }
        }
    }
    println!("\nstores are under {}", root.display());
    Ok(())
}
