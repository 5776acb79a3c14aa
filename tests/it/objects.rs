//! Object store tiers (issue #18) against a real S3-compatible server: moto's server mode
//! (PyPI `moto[server]`, SigV4 checked once its IAM user exists), started by the harness on a
//! free loopback port, and boto3 as the independent client that checks what landed.
//!
//! Linux-only (the server and boto3 are Debian's Python); `scripts/test` installs them.

use crate::harness::*;
use crate::samba::Samba;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use symcascade::cascade::CascadeOptions;
use symcascade::layout::{Form, RelPath, Tiering};
use symcascade::store::object::{BucketStore, ObjectConfig, S3Settings};
use symcascade::store::open::Transports;
use symcascade::store::smb::{SmbClient, SmbConfig};
use symcascade::store::{PutOutcome, Store, StoreErrorKind};
use symcascade::sympath::ObjectService;

const PYTHON: &str = "/usr/bin/python3";

/// moto's S3 server with authentication on, one IAM user with every right, and a bucket
/// `symbols`. Stopped on drop.
pub struct Moto {
    child: Child,
    pub port: u16,
    pub key_id: String,
    pub secret: String,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Moto {
    pub fn start() -> Option<Moto> {
        let ok = Command::new(PYTHON)
            .args(["-c", "import moto.server, boto3"])
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            assert!(
                !is_ci(),
                "moto[server] and boto3 are missing (scripts/test installs them)"
            );
            eprintln!("skipped: moto[server] and boto3 are not installed for {PYTHON}");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("moto.log");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(PYTHON)
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            // The first 4 requests (IAM user, policy, key, bucket) are unauthenticated; every
            // later one is checked against the user's key, as on AWS.
            .env("INITIAL_NO_AUTH_ACTION_COUNT", "4")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(dir.path().join("moto.err")).unwrap())
            .spawn()
            .unwrap();
        let t = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(t.elapsed() < Duration::from_secs(30), "moto on {port}");
            std::thread::sleep(Duration::from_millis(100));
        }
        let mut m = Moto {
            child,
            port,
            key_id: String::new(),
            secret: String::new(),
            log: dir.path().join("moto.err"),
            _dir: dir,
        };
        let out = m.py(
            "import json\n\
             iam = boto3.client('iam', aws_access_key_id='x', aws_secret_access_key='y', **kw)\n\
             iam.create_user(UserName='agent')\n\
             iam.put_user_policy(UserName='agent', PolicyName='all', PolicyDocument=json.dumps(\
             {'Version': '2012-10-17', 'Statement': [{'Effect': 'Allow', 'Action': '*', 'Resource': '*'}]}))\n\
             k = iam.create_access_key(UserName='agent')['AccessKey']\n\
             boto3.client('s3', aws_access_key_id='x', aws_secret_access_key='y', **kw).create_bucket(Bucket='symbols')\n\
             print(k['AccessKeyId'], k['SecretAccessKey'])",
            false,
        );
        let mut it = out.split_whitespace();
        m.key_id = it.next().unwrap().to_string();
        m.secret = it.next().unwrap().to_string();
        Some(m)
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Settings with this server's endpoint and key (`secret` to try a wrong one).
    pub fn config(&self, secret: &str) -> ObjectConfig {
        ObjectConfig {
            s3: S3Settings {
                endpoint: Some(self.endpoint()),
                access_key_id: Some(self.key_id.clone()),
                secret_access_key: Some(secret.to_string()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    /// Runs Python with `boto3`, `kw` (endpoint, region) and, when `authed`, `s3`: a client
    /// with the user's key. Its stdout.
    pub fn py(&self, code: &str, authed: bool) -> String {
        let mut prelude = format!(
            "import boto3\nkw = dict(endpoint_url='{}', region_name='us-east-1')\n",
            self.endpoint()
        );
        if authed {
            prelude += &format!(
                "s3 = boto3.client('s3', aws_access_key_id='{}', aws_secret_access_key='{}', **kw)\n",
                self.key_id, self.secret
            );
        }
        let o = Command::new(PYTHON)
            .args(["-c", &(prelude + code)])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "boto3: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    }

    /// Every key in `bucket` with its size, sorted (boto3's listing).
    pub fn keys(&self, bucket: &str) -> Vec<(String, u64)> {
        let out = self.py(
            &format!(
                "for p in s3.get_paginator('list_objects_v2').paginate(Bucket='{bucket}'):\n  \
                 for o in p.get('Contents', []): print(o['Key'], o['Size'])"
            ),
            true,
        );
        let mut v: Vec<(String, u64)> = out
            .lines()
            .filter_map(|l| l.rsplit_once(' '))
            .map(|(k, n)| (k.to_string(), n.parse().unwrap()))
            .collect();
        v.sort();
        v
    }

    /// The object's bytes, written to `out` by boto3.
    pub fn download(&self, bucket: &str, key: &str, out: &Path) {
        self.py(
            &format!(
                "s3.download_file('{bucket}', '{key}', r'{}')",
                out.display()
            ),
            true,
        );
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn transports(objects: ObjectConfig, smb: SmbConfig) -> Arc<Transports> {
    let config = symcascade::config::Config::default();
    Arc::new(Transports {
        smb: SmbClient::new(smb),
        http: symcascade::store::http::transport_from_env(&config.http_config()),
        blackout: config.blackout(),
        objects,
    })
}

/// The store key of `key` in `form` below `prefix`, `/`-separated.
fn object_key(prefix: &str, key: &symcascade::key::Key, form: Form) -> String {
    let rel = symcascade::layout::path_for(key, Tiering::OneTier, form);
    format!("{prefix}/{}", rel.components().join("/"))
}

fn bucket_store(moto: &Moto, secret: &str, bucket: &str, prefix: &[&str]) -> BucketStore {
    let http = symcascade::store::http::HttpClient::new(&Default::default(), |_| None).unwrap();
    let prefix: Vec<String> = prefix.iter().map(|p| p.to_string()).collect();
    let shown = format!("s3://{bucket}/{}", prefix.join("/"));
    BucketStore::new(
        ObjectService::S3,
        bucket,
        &prefix,
        &shown,
        &moto.config(secret),
        &http,
    )
    .unwrap()
}

/// `local ← s3 ← \\MainOffice`: a hit on the main share lands in the bucket (compressed stays
/// compressed there, per SymSrv) and locally; with the main server stopped, a second agent
/// with `local2 ← s3` gets it from the bucket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_tier_is_filled_from_smb_main_and_serves_when_main_is_down() {
    let Some(moto) = Moto::start() else { return };
    let Some(samba) = Samba::try_start() else {
        return;
    };
    let main = LocalStoreAt(samba.share_dir("MainOffice"));
    main.publish(PDB, Form::Plain).await;
    main.publish(DLL, Form::Compressed).await;
    let lab = Lab::new();
    let smb = SmbConfig {
        default_credentials: Some(samba.credentials()),
        connect_timeout: Duration::from_secs(10),
        request_timeout: Duration::from_secs(20),
        ..SmbConfig::default()
    };
    let t = transports(moto.config(&moto.secret), smb);
    let path = format!(
        "srv*{}*s3://symbols/main*{}",
        lab.s("local"),
        samba.unc("MainOffice")
    );
    let c = lab
        .cascade_with(&path, CascadeOptions::default(), t.clone())
        .await;
    for (name, form) in [(PDB, Form::Plain), (DLL, Form::Compressed)] {
        let key = key_of(name);
        let l = c.lookup(&key).await.unwrap();
        assert!(l.skipped.is_empty(), "{:?}", l.skipped);
        let f = l.fetched.expect("hit on MainOffice");
        assert_eq!((f.tier, f.form), (2, form));
        let stores: Vec<_> = f.written.iter().map(|w| w.store.clone()).collect();
        assert_eq!(stores, ["s3://symbols/main".to_string(), lab.s("local")]);
        // boto3 finds the file under its SymStore key, byte-identical to the main share's.
        let got = lab.path(&format!("{name}.from-s3"));
        moto.download("symbols", &object_key("main", &key, form), &got);
        let rel = symcascade::layout::path_for(&key, Tiering::OneTier, form);
        same(&got, &main.file(&rel));
        same(&lab.file_in("local", &key, Form::Plain), &fixture(name));
    }
    let keys = moto.keys("symbols");
    assert_eq!(keys.len(), 2, "two objects and no upload left: {keys:?}");

    drop(samba);
    let lab2 = Lab::new();
    let smb = SmbConfig::default();
    let t2 = transports(moto.config(&moto.secret), smb);
    let c2 = lab2
        .cascade_with(
            &format!("srv*{}*s3://symbols/main", lab2.s("local")),
            CascadeOptions::default(),
            t2,
        )
        .await;
    for name in [PDB, DLL] {
        let f = c2
            .fetch(&key_of(name))
            .await
            .unwrap()
            .expect("in the bucket");
        assert_eq!(f.tier, 1, "{name} from the S3 tier");
        same(
            &lab2.file_in("local", &key_of(name), Form::Plain),
            &fixture(name),
        );
    }
}

/// A local folder store seen as files: the SMB share's folder on the server's disk.
struct LocalStoreAt(PathBuf);

impl LocalStoreAt {
    async fn publish(&self, name: &str, form: Form) {
        let s = symcascade::store::LocalStore::new(&self.0);
        symcascade::publish::publish_file(&s, &fixture(name), Tiering::OneTier, form)
            .await
            .unwrap();
    }
    fn file(&self, rel: &RelPath) -> PathBuf {
        rel.components()
            .iter()
            .fold(self.0.clone(), |p, c| p.join(c))
    }
}

/// Pseudo-random bytes, generated as read (a 100 MB source never held in memory).
struct Generated {
    left: u64,
    state: u32,
}

impl tokio::io::AsyncRead for Generated {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let n = (buf.remaining() as u64).min(self.left).min(64 << 10) as usize;
        let mut chunk = vec![0u8; n];
        for b in &mut chunk {
            self.state = self.state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            *b = (self.state >> 16) as u8;
        }
        self.left -= n as u64;
        buf.put_slice(&chunk);
        std::task::Poll::Ready(Ok(()))
    }
}

/// 100 MB goes up in parts (moto's log shows each part) to an upload key, then to its final
/// key; nothing is left under the upload prefix, and the object has every byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100_mb_file_is_uploaded_in_parts_and_published_whole() {
    let Some(moto) = Moto::start() else { return };
    let s = bucket_store(&moto, &moto.secret, "symbols", &["big"]);
    let rel = RelPath::from_safe(["big.pdb", "0123456789ABCDEF0123456789ABCDEF1", "big.pdb"]);
    const SIZE: u64 = 100_000_000;
    let mut src = Generated {
        left: SIZE,
        state: 7,
    };
    let out = s.put(&rel, &mut src, Some(SIZE)).await.unwrap();
    assert_eq!(
        out,
        PutOutcome::Written {
            bytes: SIZE,
            local_path: None
        }
    );
    let keys = moto.keys("symbols");
    assert_eq!(
        keys,
        [(format!("big/{}", rel.components().join("/")), SIZE)],
        "one whole object, no upload left"
    );
    let log = std::fs::read_to_string(&moto.log).unwrap();
    let parts = log
        .lines()
        .filter(|l| l.contains("partNumber=") && l.contains("PUT"))
        .count();
    assert!(
        parts >= 12,
        "uploaded in 8 MiB parts: {parts} part requests\n{log}"
    );
    // The bytes, read back through the store, are the generated ones.
    let mut o = s.open(&rel).await.unwrap().unwrap();
    let mut want = Generated {
        left: SIZE,
        state: 7,
    };
    assert!(same_stream(&mut o.reader, &mut want).await);
}

async fn same_stream(
    a: &mut (dyn tokio::io::AsyncRead + Unpin + Send),
    b: &mut (dyn tokio::io::AsyncRead + Unpin + Send),
) -> bool {
    use tokio::io::AsyncReadExt;
    let (mut x, mut y) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = a.read(&mut x).await.unwrap();
        if n == 0 {
            return b.read(&mut y).await.unwrap() == 0;
        }
        b.read_exact(&mut y[..n]).await.unwrap();
        if x[..n] != y[..n] {
            return false;
        }
    }
}

/// `size` generated bytes whose end waits for `gate`: a writer that has checked the key is
/// absent and streams its copy, but finishes only after another writer published it.
fn gated(size: u64, gate: Arc<tokio::sync::Notify>) -> impl tokio::io::AsyncRead + Send + Unpin {
    use tokio::io::AsyncReadExt;
    let g = Generated {
        left: size,
        state: 3,
    };
    let s = futures_util::stream::unfold((g, Some(gate)), |(mut g, gate)| async move {
        let mut buf = vec![0u8; 64 << 10];
        let n = g.read(&mut buf).await.unwrap();
        if n == 0 {
            gate?.notified().await;
            return None;
        }
        buf.truncate(n);
        Some((Ok::<_, std::io::Error>(bytes::Bytes::from(buf)), (g, gate)))
    });
    tokio_util::io::StreamReader::new(Box::pin(s))
}

/// Two agents putting the same key at once (small: one conditional PUT each; large: parts
/// and a conditional copy each) leave one complete object and no upload behind; the one that
/// finishes second is told the file is already there. The second writer's last byte waits
/// for the first writer's publish, so both have passed their "is it there?" check: only the
/// conditional write can stop the second (moto's own conditional checks are not atomic, so
/// two commits in the same instant would prove nothing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_agents_racing_for_a_key_leave_one_complete_object() {
    let Some(moto) = Moto::start() else { return };
    let a = bucket_store(&moto, &moto.secret, "symbols", &["race"]);
    let b = bucket_store(&moto, &moto.secret, "symbols", &["race"]);
    for (size, name) in [(200_000u64, "small.pdb"), (20_000_000, "large.pdb")] {
        let rel = RelPath::from_safe([name, "ABCDEF01234567890ABCDEF0123456781", name]);
        let gate = Arc::new(tokio::sync::Notify::new());
        let first = async {
            let mut src = Generated {
                left: size,
                state: 3,
            };
            let out = a.put(&rel, &mut src, Some(size)).await.unwrap();
            gate.notify_one();
            out
        };
        let second = async {
            let mut src = gated(size, gate.clone());
            b.put(&rel, &mut src, Some(size)).await.unwrap()
        };
        let (x, y) = tokio::join!(first, second);
        assert!(matches!(x, PutOutcome::Written { .. }), "{name}: {x:?}");
        assert_eq!(
            y,
            PutOutcome::AlreadyPresent { local_path: None },
            "{name}: the second writer must not replace the first one's object"
        );
        let keys = moto.keys("symbols");
        let ours: Vec<_> = keys.iter().filter(|(k, _)| k.contains(name)).collect();
        assert_eq!(ours.len(), 1, "{name}: {keys:?}");
        assert_eq!(ours[0].1, size);
        assert!(
            keys.iter().all(|(k, _)| !k.contains(".symcascade-uploads")),
            "{keys:?}"
        );
        let mut o = a.open(&rel).await.unwrap().unwrap();
        let mut want = Generated {
            left: size,
            state: 3,
        };
        assert!(same_stream(&mut o.reader, &mut want).await, "{name}");
    }
}

/// A wrong secret and a missing bucket are skips with clear reasons (never a miss, never the
/// secret), and the lookup goes on to the next store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_and_a_missing_bucket_are_skips_with_reasons() {
    let Some(moto) = Moto::start() else { return };
    let lab = Lab::new();
    lab.publish("main", &[PDB], Form::Plain).await;
    let cases = [
        (
            "s3://symbols/x",
            "WrongSecret0",
            StoreErrorKind::AuthFailed,
            "SignatureDoesNotMatch",
        ),
        (
            "s3://no-such-bucket/x",
            moto.secret.as_str(),
            StoreErrorKind::Unreachable,
            "bucket `no-such-bucket` does not exist",
        ),
    ];
    for (store, secret, kind, says) in cases {
        let t = transports(moto.config(secret), SmbConfig::default());
        let path = format!("srv*{}*{store}*{}", lab.s("local"), lab.s("main"));
        let c = lab.cascade_with(&path, CascadeOptions::default(), t).await;
        let l = c.lookup(&pdb_key()).await.unwrap();
        let f = l.fetched.as_ref().expect("found in main");
        assert_eq!(f.tier, 2);
        let skip = l
            .skipped
            .iter()
            .find(|s| s.store == store)
            .unwrap_or_else(|| panic!("{store} not skipped: {:?}", l.skipped));
        assert_eq!(skip.kind, kind, "{skip:?}");
        assert!(skip.detail.contains(says), "{store}: {}", skip.detail);
        assert!(!skip.detail.contains(&moto.secret), "{}", skip.detail);
        std::fs::remove_dir_all(lab.path("local")).unwrap();
    }
}

/// `symcascade get` of a 100 MB PDB from a local main store through an S3 tier, beside the
/// same `get` without the S3 tier: the upload runs in parts, so it adds only a few parts to
/// the process's peak memory (GNU time's maximum resident set), not the file's size; boto3
/// finds the whole object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100_mb_pdb_goes_up_with_flat_memory() {
    let Some(moto) = Moto::start() else { return };
    let lab = Lab::new();
    let key = pdb_key();
    // The real PDB with slack after its last MSF block: the key is unchanged, and the file
    // is verified like any hit before a store sees it.
    let mut bytes = std::fs::read(fixture(PDB)).unwrap();
    bytes.resize(100_000_000, 0x5a);
    let src = lab.file_in("main", &key, Form::Plain);
    std::fs::create_dir_all(src.parent().unwrap()).unwrap();
    std::fs::write(&src, &bytes).unwrap();
    drop(bytes);
    let cfg = lab.path("symcascade.toml");
    std::fs::write(
        &cfg,
        format!(
            "[s3]\nendpoint = \"{}\"\naccess_key_id = \"{}\"\nsecret_access_key = \"{}\"\n",
            moto.endpoint(),
            moto.key_id,
            moto.secret
        ),
    )
    .unwrap();
    let peak = |tiers: String| {
        let rss = lab.path("rss");
        let out = Command::new("/usr/bin/time")
            .arg("-o")
            .arg(&rss)
            .args(["-f", "%M"])
            .arg(env!("CARGO_BIN_EXE_symcascade"))
            .arg("get")
            .arg("--config")
            .arg(&cfg)
            .arg("--sympath")
            .arg(format!("srv*{tiers}*{}", lab.s("main")))
            .arg(fixture(PDB))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let text = std::fs::read_to_string(&rss).unwrap();
        text.lines().last().unwrap().trim().parse::<u64>().unwrap() / 1024
    };
    let without = peak(lab.s("local-only"));
    let with = peak(format!("{}*s3://symbols/big", lab.s("local")));
    eprintln!(
        "peak resident set of `get` of 100 MB: {without} MiB local only, {with} MiB with the S3 upload"
    );
    // Parts in flight, the one filling and the request bodies: about 5 parts of 8 MiB (40
    // MiB measured); a whole-file buffer would add 95 MiB or more.
    assert!(
        with < without + 56,
        "the upload added {} MiB (of a 100 MB file)",
        with.saturating_sub(without)
    );
    assert_eq!(
        moto.keys("symbols"),
        [(object_key("big", &key, Form::Plain), 100_000_000)]
    );
    same(&lab.file_in("local", &key, Form::Plain), &src);
}
