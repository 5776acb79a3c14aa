//! The composition root run in-process (`Daemon::start`, then `run(listener, shutdown)`), as
//! the console daemon and the Windows service run it: agent and front side by side over one
//! cascade, the front on a listener the test bound to port 0.

use crate::harness::*;
use std::time::{Duration, Instant};
use symcascade::layout::Form;

fn config(lab: &Lab, extra: &str) -> String {
    format!(
        "sympath = '{}'\n[agent]\nid = \"DESKTOP-4F2K9Q1\"\nrescan_interval = \"1s\"\nstate_dir = '{}'\n{extra}\n[http]\nlisten = \"127.0.0.1:0\"\n",
        lab.three_tier(),
        lab.s("state"),
    )
}

async fn get(url: &str) -> (u16, Vec<u8>) {
    let r = reqwest::get(url).await.unwrap();
    let code = r.status().as_u16();
    (code, r.bytes().await.unwrap().to_vec())
}

async fn poll(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out after {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_daemon_serves_replicates_and_stops() {
    let lab = Lab::new();
    lab.publish("main", &[PDB, DLL], Form::Plain).await;
    let d = InProcessDaemon::start(&config(&lab, ""), &lab.default_downstream()).await;
    // The front: a debugger's request is answered from main and copied down.
    let pdb = key_of(PDB);
    let rel = symcascade::layout::path_for(&pdb, symcascade::layout::Tiering::OneTier, Form::Plain);
    let (code, body) = get(&d.url(&format!("/{rel}"))).await;
    assert_eq!(code, 200);
    assert_eq!(body, std::fs::read(fixture(PDB)).unwrap());
    // The client is served from the spool while the copy-down finishes.
    let (local, branch) = (
        lab.file_in("local", &pdb, Form::Plain),
        lab.file_in("branch", &pdb, Form::Plain),
    );
    poll("the copies", Duration::from_secs(20), || {
        local.exists() && branch.exists()
    })
    .await;
    // The agent: a queued request is replicated by the same process.
    let setup = symcascade::setup::Setup::resolve(
        &symcascade::config::Config::parse(&config(&lab, "")).unwrap(),
        &lab.default_downstream(),
    )
    .await
    .unwrap();
    let dll = key_of(DLL);
    assert!(setup.request(&dll, &setup.id).await.unwrap());
    let local = lab.file_in("local", &dll, Form::Plain);
    poll("the agent's copy", Duration::from_secs(20), || {
        local.exists()
    })
    .await;
    same(&local, &fixture(DLL));
    // The front shows the agent's status from memory.
    let status: serde_json::Value =
        serde_json::from_slice(&get(&d.url("/status.json")).await.1).unwrap();
    assert_eq!(status["agent"]["agent"], "DESKTOP-4F2K9Q1", "{status}");
    assert!(setup.agent_running(), "the daemon holds agent.lock");
    d.stop().await.unwrap();
    assert!(
        !setup.agent_running(),
        "agent.lock released when run returns"
    );
}

#[tokio::test]
async fn one_daemon_per_state_folder_and_no_listener_without_http_listen() {
    let lab = Lab::new();
    // A killed agent's half-written status (soak test finding): removed at the next start.
    std::fs::create_dir_all(lab.path("state")).unwrap();
    let dead = lab.path("state/.status.6CGv78.symcascade-tmp");
    std::fs::write(&dead, b"{\"age").unwrap();
    let first = InProcessDaemon::start(&config(&lab, ""), &lab.default_downstream()).await;
    assert!(
        !dead.exists(),
        "a dead writer's temp file in the state folder is swept"
    );
    let cfg = symcascade::config::Config::parse(&config(&lab, "")).unwrap();
    let second = symcascade::daemon::Daemon::start(cfg, &lab.default_downstream()).await;
    let e = second.expect_err("a second daemon on the same state folder");
    assert!(e.to_string().contains("another agent"), "{e}");
    first.stop().await.unwrap();
    // Without `[http] listen` there is no front to give a listener to.
    let text = config(&lab, "").replace("[http]\nlisten = \"127.0.0.1:0\"\n", "");
    let cfg = symcascade::config::Config::parse(&text).unwrap();
    let d = symcascade::daemon::Daemon::start(cfg, &lab.default_downstream())
        .await
        .unwrap();
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let e = d
        .run(Some(l), async {})
        .await
        .expect_err("no front configured");
    assert!(e.to_string().contains("[http] listen"), "{e}");
}
