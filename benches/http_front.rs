//! HTTP front benchmark: warm-hit requests/s and p50/p99 latency at 64 concurrent clients,
//! the HTTP front of `symcascade run` (release build) side by side with Debian's nginx serving
//! the same store folder statically, in the same run, with the same load generator (wrk).
//!
//! Run: `cargo bench --bench http_front` (Debian's nginx and wrk installed: `./scripts/test`
//! installs them). Env: `BENCH_SECS` (seconds per row, default 10), `BENCH_CONNS` (default 64).
//! Under `cargo test` (debug build) it runs a 1-second smoke version that checks both servers
//! answer every request with 200 and prints the table.
//!
//! Both servers use every core (nginx `worker_processes auto`, the agent's multi-threaded
//! runtime); wrk runs 2 threads on the same machine, so absolute numbers are a lower bound;
//! the comparison is what matters. The table is printed as Markdown for BENCHMARKS.md.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use symcascade::layout::{Form, Tiering};

fn is_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_listening(port: u16) {
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(start.elapsed() < Duration::from_secs(20), "port {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One wrk run: requests/s, p50 and p99 in ms, non-2xx answers.
struct Load {
    rps: f64,
    p50: f64,
    p99: f64,
    errors: u64,
}

fn ms(v: &str) -> f64 {
    let (num, unit) = v.split_at(v.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(v.len()));
    let n: f64 = num.parse().unwrap_or(f64::NAN);
    match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        _ => f64::NAN,
    }
}

fn wrk(url: &str, conns: u32, secs: u32) -> Load {
    let o = Command::new("wrk")
        .args([
            "-t2",
            &format!("-c{conns}"),
            &format!("-d{secs}s"),
            "--latency",
        ])
        .arg(url)
        .output()
        .expect("wrk runs (Debian package wrk)");
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{text}");
    let field = |prefix: &str| {
        text.lines()
            .map(str::trim)
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap_or_else(|| panic!("no {prefix} in wrk output:\n{text}"))
            .to_string()
    };
    let errors = text
        .lines()
        .find(|l| l.contains("Non-2xx or 3xx responses:"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Load {
        rps: field("Requests/sec:").parse().unwrap(),
        p50: ms(&field("50%")),
        p99: ms(&field("99%")),
        errors,
    }
}

fn start_front(dir: &Path, store: &Path) -> (Killed, u16) {
    let port = free_port();
    // A chain whose upstream is an empty folder: every request here is a warm hit.
    let cfg = dir.join("front.toml");
    std::fs::create_dir_all(dir.join("upstream")).unwrap();
    std::fs::write(
        &cfg,
        format!(
            "sympath = 'srv*{}*{}'\n[agent]\nqueue = false\n[http]\nlisten = \"127.0.0.1:{port}\"\n[log]\nlevel = \"warn\"\n",
            store.display(),
            dir.join("upstream").display()
        ),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_symcascade"))
        .arg("--config")
        .arg(&cfg)
        .arg("run")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_listening(port);
    (Killed(child), port)
}

fn start_nginx(dir: &Path, store: &Path) -> (Killed, u16) {
    let port = free_port();
    let conf = dir.join("nginx.conf");
    // A plain static-file configuration, as one would serve a symbol store with nginx.
    std::fs::write(
        &conf,
        format!(
            "daemon off;\nuser root;\nworker_processes auto;\npid {d}/nginx.pid;\nerror_log {d}/nginx-error.log;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n  access_log off;\n  sendfile on;\n  tcp_nopush on;\n  keepalive_requests 100000;\n\
               client_body_temp_path {d}/b; proxy_temp_path {d}/p; fastcgi_temp_path {d}/f;\n\
               uwsgi_temp_path {d}/u; scgi_temp_path {d}/s;\n\
               default_type application/octet-stream;\n\
               server {{ listen 127.0.0.1:{port}; root {root}; }}\n}}\n",
            d = dir.display(),
            root = store.display()
        ),
    )
    .unwrap();
    let child = Command::new("/usr/sbin/nginx")
        .arg("-c")
        .arg(&conf)
        .arg("-p")
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nginx runs (Debian package nginx)");
    wait_listening(port);
    (Killed(child), port)
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test` runs this binary in its debug build.
    let smoke = cfg!(debug_assertions);
    let have = |p: &str| {
        Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {p}"))
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !(have("wrk") && Path::new("/usr/sbin/nginx").exists()) {
        assert!(!is_ci(), "CI must install nginx and wrk (scripts/test)");
        eprintln!("http_front bench skipped: install Debian's nginx and wrk");
        return;
    }
    let secs: u32 = std::env::var("BENCH_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if smoke { 1 } else { 10 });
    let conns: u32 = std::env::var("BENCH_CONNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let files = ["attach_amd64.dll", "attach_amd64.pdb"];
    let mut paths = Vec::new();
    rt.block_on(async {
        let s = symcascade::store::LocalStore::new(&store);
        for f in files {
            let p = fixtures.join(f);
            symcascade::publish::publish_file(&s, &p, Tiering::OneTier, Form::Plain)
                .await
                .unwrap();
            let key = symcascade::key::Key::from_file(&p, symcascade::key::PeKey::Image).unwrap();
            paths.push((
                f,
                std::fs::metadata(&p).unwrap().len(),
                symcascade::layout::path_for(&key, Tiering::OneTier, Form::Plain).to_string(),
            ));
        }
    });
    let (_front, fport) = start_front(dir.path(), &store);
    let (_nginx, nport) = start_nginx(dir.path(), &store);
    println!(
        "\nWarm hits, {conns} concurrent connections, {secs} s per row, wrk -t2 (same machine)\n"
    );
    println!("| file | size | server | requests/s | p50 ms | p99 ms |");
    println!("|---|---:|---|---:|---:|---:|");
    for (name, size, rel) in &paths {
        for (server, port) in [("symcascade front", fport), ("nginx 1.22 (static)", nport)] {
            let url = format!("http://127.0.0.1:{port}/{rel}");
            let l = wrk(&url, conns, secs);
            assert_eq!(l.errors, 0, "{server} answered non-2xx for {url}");
            assert!(l.rps > 0.0, "{server}: no requests completed");
            println!(
                "| {name} | {} KiB | {server} | {:.0} | {:.2} | {:.2} |",
                size / 1024,
                l.rps,
                l.p50,
                l.p99
            );
        }
    }
}
