//! The main job on an embedded default: the replication agent (`symcascade run`'s
//! `agent::run`) over a three-tier chain of local folders (`local ← branch ← main`) whose main
//! store is built from the real MSVC fixtures. Misses are queued on the branch, the agent
//! replicates them down the cascade (branch first, then local), then the demo stops the agent
//! and exits.
//!
//! Run: `cargo run --release --example three_tier [-- DIR]` (DIR defaults to a fresh temp dir,
//! kept so you can look at it). The main store holds one PDB compressed (as `symstore
//! /compress` writes it), the DLLs plain, and one PDB behind a `file.ptr`.

use std::path::PathBuf;
use std::time::{Duration, Instant};
use symcascade::config::Config;
use symcascade::key::{Key, PeKey};
use symcascade::layout::{Form, Tiering};
use symcascade::store::LocalStore;
use symcascade::sympath::Location;

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

    // The main office's store, from real files.
    let main_store = LocalStore::new(&main);
    std::fs::create_dir_all(&main)?;
    std::fs::write(main.join("pingme.txt"), b"")?;
    for (f, form) in [
        ("attach_amd64.dll", Form::Plain),
        ("attach_amd64.pdb", Form::Compressed),
        ("run_code_on_dllmain_x86.dll", Form::Plain),
    ] {
        symcascade::publish::publish_file(&main_store, &fixtures.join(f), Tiering::OneTier, form)
            .await?;
    }
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

    // The embedded default configuration: three local tiers, a quick rescan.
    let config = Config::parse(&format!(
        // The build drop is outside the stores: a `file.ptr` may point into it only because
        // it is listed in `file_ptr_roots`.
        "sympath = '{}'\n[cascade]\nfile_ptr_roots = ['{}']\n[agent]\nid = \"demo\"\nrescan_interval = \"2s\"\n",
        format_args!(
            "srv*{}*{}*{}",
            local.display(),
            branch.display(),
            main.display()
        ),
        drop.display()
    ))
    .map_err(anyhow::Error::msg)?;
    println!("symbol path: {}", config.sympath.as_deref().unwrap_or(""));
    let default = Location::Local {
        path: root.join("default").display().to_string(),
    };

    // Start the daemon (the same composition root as `symcascade run` and the Windows
    // service): resolve once, then run until told to stop.
    let daemon = symcascade::daemon::Daemon::start(config.clone(), &default).await?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let agent = tokio::spawn(daemon.run(None, async {
        let _ = stop_rx.await;
    }));

    // A debugger on this desktop missed the PDBs of both DLLs: queue them.
    let setup = symcascade::setup::Setup::resolve(&config, &default).await?;
    let mut wanted = Vec::new();
    for f in ["attach_amd64.dll", "run_code_on_dllmain_x86.dll"] {
        let key = Key::from_file(&fixtures.join(f), PeKey::Pdb)?;
        setup.request(&key, &setup.id).await?;
        println!("queued {key} in {}", setup.requests().describe());
        wanted.push(key);
    }

    // Wait until the agent has replicated them into the local folder.
    let start = Instant::now();
    for key in &wanted {
        let p = local.join(key.name()).join(key.index()).join(key.name());
        while !p.exists() {
            anyhow::ensure!(
                start.elapsed() < Duration::from_secs(30),
                "the agent did not replicate {key}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(2500)).await; // let status.json catch up
    if let Some(status) = setup.read_status() {
        for t in &status.recent {
            println!(
                "replicated {}\n    found in {} ({} B read), written to: {}",
                t.key,
                t.found_in,
                t.bytes_read,
                t.written.join(" then ")
            );
        }
    }
    for key in &wanted {
        println!(
            "local copy: {}",
            local
                .join(key.name())
                .join(key.index())
                .join(key.name())
                .display()
        );
    }
    let _ = stop_tx.send(());
    agent.await??;
    println!("agent stopped; stores are under {}", root.display());
    Ok(())
}
