//! Object store tiers (issue #18) against real servers started by the harness on free
//! loopback ports: moto's S3 server (PyPI `moto[server]`, SigV4 checked once its IAM user
//! exists) with boto3 as the independent client, and Azurite (npm `azurite`, shared-key
//! signatures checked) with Microsoft's `azure-storage-blob` as the independent client. Every
//! test runs against both through [`Server`].
//!
//! Linux-only (the servers and clients are Linux programs); `scripts/test` installs them.

use crate::harness::*;
use crate::samba::Samba;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use symcascade::cascade::CascadeOptions;
use symcascade::layout::{Form, RelPath, Tiering};
use symcascade::store::object::{AzureSettings, BucketStore, ObjectConfig, S3Settings};
use symcascade::store::open::Transports;
use symcascade::store::smb::{SmbClient, SmbConfig};
use symcascade::store::{PutOutcome, Store, StoreErrorKind};

const PYTHON: &str = "/usr/bin/python3";

/// What the tests need of an object store server.
pub trait Server: Send + Sync {
    /// The container's location: `s3://symbols` or `az://devstoreaccount1/symbols`.
    fn root(&self) -> String;
    /// The settings that reach it with `secret` (a wrong one to test refusals).
    fn config(&self, secret: &str) -> ObjectConfig;
    /// The right secret.
    fn secret(&self) -> String;
    /// A wrong secret of the right form.
    fn wrong_secret(&self) -> String;
    /// The config file's section for it.
    fn toml(&self) -> String;
    /// Every object in the container with its size, sorted (the independent client's view).
    fn keys(&self) -> Vec<(String, u64)>;
    /// The object `key`'s bytes into `out` (the independent client).
    fn download(&self, key: &str, out: &Path);
    /// Part (S3) or block (Azure) uploads the server has logged.
    fn part_requests(&self) -> usize;
    /// A location in a container that does not exist, and what its skip must say.
    fn missing(&self) -> (String, &'static str);
    /// What a refused secret's skip must say.
    fn refused(&self) -> &'static str;
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_listening(what: &str, port: u16) {
    let t = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(t.elapsed() < Duration::from_secs(30), "{what} on {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs Python `code` after `prelude`; its stdout.
fn python(prelude: &str, code: &str) -> String {
    let o = Command::new(PYTHON)
        .args(["-c", &format!("{prelude}\n{code}")])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "python: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// `name size` lines, parsed and sorted.
fn parse_keys(out: &str) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = out
        .lines()
        .filter_map(|l| l.rsplit_once(' '))
        .map(|(k, n)| (k.to_string(), n.parse().unwrap()))
        .collect();
    v.sort();
    v
}

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
        Moto::start_checking(true)
    }

    /// `authenticate == false`: signatures are not checked. moto 5.2.1 rejects the valid
    /// signature of any request whose query holds a `/` (a listing with a prefix — boto3's own
    /// fails the same way), so only the listing test runs without checks.
    pub fn start_checking(authenticate: bool) -> Option<Moto> {
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
        let port = free_port();
        let mut cmd = Command::new(PYTHON);
        cmd.args([
            "-m",
            "moto.server",
            "-H",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ]);
        if authenticate {
            // The first 4 requests (IAM user, policy, key, bucket) are unauthenticated; every
            // later one is checked against the user's key, as on AWS.
            cmd.env("INITIAL_NO_AUTH_ACTION_COUNT", "4");
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(dir.path().join("moto.err")).unwrap())
            .spawn()
            .unwrap();
        wait_listening("moto", port);
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
        python(&prelude, code)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server for Moto {
    fn root(&self) -> String {
        "s3://symbols".into()
    }
    fn config(&self, secret: &str) -> ObjectConfig {
        Moto::config(self, secret)
    }
    fn secret(&self) -> String {
        self.secret.clone()
    }
    fn wrong_secret(&self) -> String {
        "WrongSecret0".into()
    }
    fn toml(&self) -> String {
        format!(
            "[s3]\nendpoint = \"{}\"\naccess_key_id = \"{}\"\nsecret_access_key = \"{}\"\n",
            self.endpoint(),
            self.key_id,
            self.secret
        )
    }
    fn keys(&self) -> Vec<(String, u64)> {
        parse_keys(&self.py(
            "for p in s3.get_paginator('list_objects_v2').paginate(Bucket='symbols'):\n  \
             for o in p.get('Contents', []): print(o['Key'], o['Size'])",
            true,
        ))
    }
    fn download(&self, key: &str, out: &Path) {
        self.py(
            &format!("s3.download_file('symbols', '{key}', r'{}')", out.display()),
            true,
        );
    }
    fn part_requests(&self) -> usize {
        let log = std::fs::read_to_string(&self.log).unwrap();
        log.lines()
            .filter(|l| l.contains("partNumber=") && l.contains("PUT"))
            .count()
    }
    fn missing(&self) -> (String, &'static str) {
        (
            "s3://no-such-bucket/x".into(),
            "bucket `no-such-bucket` does not exist",
        )
    }
    fn refused(&self) -> &'static str {
        "SignatureDoesNotMatch"
    }
}

/// The emulator's well-known account and key (public, in Microsoft's Azurite docs).
const AZURITE_ACCOUNT: &str = "devstoreaccount1";
const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// Azurite's Blob service with a container `symbols`, its debug log on (it logs each
/// request). Stopped on drop.
pub struct Azurite {
    child: Child,
    port: u16,
    debug: PathBuf,
    _dir: tempfile::TempDir,
}

impl Azurite {
    pub fn start() -> Option<Azurite> {
        // On PATH (`npm install -g` puts it beside node).
        let bin = "azurite-blob";
        let found = Command::new(bin)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        let sdk = Command::new(PYTHON)
            .args(["-c", "import azure.storage.blob"])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found || !sdk {
            assert!(
                !is_ci(),
                "azurite or azure-storage-blob is missing (scripts/test installs them)"
            );
            eprintln!("skipped: azurite-blob (npm) or azure-storage-blob (PyPI) not installed");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let debug = dir.path().join("debug.log");
        let child = Command::new(bin)
            .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
            .arg("--location")
            .arg(dir.path().join("data"))
            .arg("--debug")
            .arg(&debug)
            .args(["--silent", "--skipApiVersionCheck"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("azurite.err")).unwrap())
            .spawn()
            .unwrap();
        wait_listening("azurite", port);
        let a = Azurite {
            child,
            port,
            debug,
            _dir: dir,
        };
        a.py("s.create_container('symbols')");
        Some(a)
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/{AZURITE_ACCOUNT}", self.port)
    }

    /// Python with `s` (a service client with the account key) and `c` (the container).
    fn py(&self, code: &str) -> String {
        let prelude = format!(
            "from azure.storage.blob import BlobServiceClient\n\
             s = BlobServiceClient.from_connection_string('DefaultEndpointsProtocol=http;\
             AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};BlobEndpoint={}/;')\n\
             c = s.get_container_client('symbols')",
            self.endpoint()
        );
        python(&prelude, code)
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server for Azurite {
    fn root(&self) -> String {
        format!("az://{AZURITE_ACCOUNT}/symbols")
    }
    fn config(&self, secret: &str) -> ObjectConfig {
        ObjectConfig {
            azure: AzureSettings {
                endpoint: Some(self.endpoint()),
                access_key: Some(secret.to_string()),
                ..Default::default()
            },
            ..Default::default()
        }
    }
    fn secret(&self) -> String {
        AZURITE_KEY.into()
    }
    fn wrong_secret(&self) -> String {
        // Valid base64 of the right length, another key.
        "A".repeat(86) + "=="
    }
    fn toml(&self) -> String {
        format!(
            "[azure]\nendpoint = \"{}\"\naccess_key = \"{AZURITE_KEY}\"\n",
            self.endpoint()
        )
    }
    fn keys(&self) -> Vec<(String, u64)> {
        parse_keys(&self.py("for b in c.list_blobs(): print(b.name, b.size)"))
    }
    fn download(&self, key: &str, out: &Path) {
        self.py(&format!(
            "open(r'{}', 'wb').write(c.download_blob('{key}').readall())",
            out.display()
        ));
    }
    fn part_requests(&self) -> usize {
        let log = std::fs::read_to_string(&self.debug).unwrap_or_default();
        log.lines()
            .filter(|l| l.contains("comp=block&") && l.contains("PUT"))
            .count()
    }
    fn missing(&self) -> (String, &'static str) {
        (
            format!("az://{AZURITE_ACCOUNT}/no-such-container/x"),
            "container `devstoreaccount1/no-such-container` does not exist",
        )
    }
    fn refused(&self) -> &'static str {
        "failed to authenticate"
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

/// A store at `<root>/<prefix>` opened directly (not through a cascade).
fn bucket_store(server: &dyn Server, prefix: &str) -> BucketStore {
    let http = symcascade::store::http::HttpClient::new(&Default::default(), |_| None).unwrap();
    let shown = format!("{}/{prefix}", server.root());
    let Ok(symcascade::sympath::Location::Object {
        service,
        container,
        prefix,
    }) = shown.parse()
    else {
        panic!("{shown}")
    };
    BucketStore::new(
        service,
        &container,
        &prefix,
        &shown,
        &server.config(&server.secret()),
        &http,
    )
    .unwrap()
}

/// One test per service: `$name` runs `$body(&server)` against moto and against Azurite.
macro_rules! both {
    ($s3:ident, $azure:ident, $body:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $s3() {
            let Some(server) = Moto::start() else { return };
            $body(&server).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $azure() {
            let Some(server) = Azurite::start() else {
                return;
            };
            $body(&server).await;
        }
    };
}

/// `local ← bucket ← \\MainOffice`: a hit on the main share lands in the bucket (compressed
/// stays compressed there, per SymSrv) and locally; with the main server stopped, a second
/// agent with `local2 ← bucket` gets it from the bucket.
async fn tier_filled_from_smb_main_serves_when_main_is_down(server: &dyn Server) {
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
    let t = transports(server.config(&server.secret()), smb);
    let tier = format!("{}/main", server.root());
    let path = format!("srv*{}*{tier}*{}", lab.s("local"), samba.unc("MainOffice"));
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
        assert_eq!(stores, [tier.clone(), lab.s("local")]);
        // The independent client finds the file under its SymStore key, byte-identical to
        // the main share's.
        let got = lab.path(&format!("{name}.from-bucket"));
        server.download(&object_key("main", &key, form), &got);
        let rel = symcascade::layout::path_for(&key, Tiering::OneTier, form);
        same(&got, &main.file(&rel));
        same(&lab.file_in("local", &key, Form::Plain), &fixture(name));
    }
    let keys = server.keys();
    assert_eq!(keys.len(), 2, "two objects and no upload left: {keys:?}");

    drop(samba);
    let lab2 = Lab::new();
    let t2 = transports(server.config(&server.secret()), SmbConfig::default());
    let c2 = lab2
        .cascade_with(
            &format!("srv*{}*{tier}", lab2.s("local")),
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
        assert_eq!(f.tier, 1, "{name} from the bucket");
        same(
            &lab2.file_in("local", &key_of(name), Form::Plain),
            &fixture(name),
        );
    }
}

both!(
    an_s3_tier_is_filled_from_smb_main_and_serves_when_main_is_down,
    an_azure_tier_is_filled_from_smb_main_and_serves_when_main_is_down,
    tier_filled_from_smb_main_serves_when_main_is_down
);

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

/// 100 MB goes up in parts (the server's log shows each part or block) to an upload key, then
/// to its final key; nothing is left under the upload prefix, and the object has every byte.
async fn uploaded_in_parts_published_whole(server: &dyn Server) {
    let s = bucket_store(server, "big");
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
    let keys = server.keys();
    assert_eq!(
        keys,
        [(format!("big/{}", rel.components().join("/")), SIZE)],
        "one whole object, no upload left"
    );
    let parts = server.part_requests();
    assert!(
        parts >= 12,
        "uploaded in 8 MiB parts: {parts} part requests"
    );
    // A source of unknown length, below and above one part; a name with `~` (8.3 names)
    // keeps it in the key, as other SymStore tools write and read it.
    for (size, name) in [(1_000_000u64, "small.pdb"), (9_000_000, "nine~1.pdb")] {
        let r = RelPath::from_safe([name, "0123456789ABCDEF0123456789ABCDEF1", name]);
        let mut src = Generated {
            left: size,
            state: 9,
        };
        let out = s.put(&r, &mut src, None).await.unwrap();
        assert_eq!(
            out,
            PutOutcome::Written {
                bytes: size,
                local_path: None
            },
            "{name}"
        );
    }
    let keys = server.keys();
    assert_eq!(keys.len(), 3, "{keys:?}");
    assert!(
        keys.iter()
            .any(|(k, _)| k.starts_with("big/nine~1.pdb/") && k.ends_with("/nine~1.pdb")),
        "the key as written: {keys:?}"
    );
    // The bytes, read back through the store, are the generated ones.
    let mut o = s.open(&rel).await.unwrap().unwrap();
    let mut want = Generated {
        left: SIZE,
        state: 7,
    };
    assert!(same_stream(&mut o.reader, &mut want).await);
}

both!(
    a_100_mb_file_is_uploaded_to_s3_in_parts_and_published_whole,
    a_100_mb_file_is_uploaded_to_azure_in_blocks_and_published_whole,
    uploaded_in_parts_published_whole
);

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

/// The points at which a [`gated`] source waits or tells.
#[derive(Default, Clone)]
struct Gates {
    /// Waited for before the first byte.
    wait_first: Option<Arc<tokio::sync::Notify>>,
    /// Told when the first byte is asked for (the writer has passed its "is it there?").
    tell_first: Option<Arc<tokio::sync::Notify>>,
    /// Waited for before the end of the stream.
    wait_end: Option<Arc<tokio::sync::Notify>>,
}

/// `size` generated bytes that wait and tell at the [`Gates`].
fn gated(size: u64, gates: Gates) -> impl tokio::io::AsyncRead + Send + Unpin {
    use tokio::io::AsyncReadExt;
    let g = Generated {
        left: size,
        state: 3,
    };
    let s = futures_util::stream::unfold((g, gates, true), |(mut g, gates, first)| async move {
        if first {
            if let Some(t) = &gates.tell_first {
                t.notify_one();
            }
            if let Some(w) = &gates.wait_first {
                w.notified().await;
            }
        }
        let mut buf = vec![0u8; 64 << 10];
        let n = g.read(&mut buf).await.unwrap();
        if n == 0 {
            if let Some(w) = &gates.wait_end {
                w.notified().await;
            }
            return None;
        }
        buf.truncate(n);
        Some((
            Ok::<_, std::io::Error>(bytes::Bytes::from(buf)),
            (g, gates, false),
        ))
    });
    tokio_util::io::StreamReader::new(Box::pin(s))
}

/// Two agents putting the same key at once (small: one conditional PUT each; large: parts
/// and a conditional copy each) leave one complete object and no upload behind; the one that
/// finishes second is told the file is already there. The first writer's first byte waits
/// until the second has passed its "is it there?" check, and the second writer's last byte
/// waits for the first writer's publish: only the conditional write can stop the second
/// (moto's own conditional checks are not atomic, so two commits in the same instant would
/// prove nothing).
async fn racing_writers_leave_one_object(server: &dyn Server) {
    let a = bucket_store(server, "race");
    let b = bucket_store(server, "race");
    for (size, name) in [(200_000u64, "small.pdb"), (20_000_000, "large.pdb")] {
        let rel = RelPath::from_safe([name, "ABCDEF01234567890ABCDEF0123456781", name]);
        let (b_checked, a_published) = (
            Arc::new(tokio::sync::Notify::new()),
            Arc::new(tokio::sync::Notify::new()),
        );
        let first = async {
            let mut src = gated(
                size,
                Gates {
                    wait_first: Some(b_checked.clone()),
                    ..Default::default()
                },
            );
            let out = a.put(&rel, &mut src, Some(size)).await.unwrap();
            a_published.notify_one();
            out
        };
        let second = async {
            let mut src = gated(
                size,
                Gates {
                    tell_first: Some(b_checked.clone()),
                    wait_end: Some(a_published.clone()),
                    ..Default::default()
                },
            );
            b.put(&rel, &mut src, Some(size)).await.unwrap()
        };
        let (x, y) = tokio::join!(first, second);
        assert!(matches!(x, PutOutcome::Written { .. }), "{name}: {x:?}");
        assert_eq!(
            y,
            PutOutcome::AlreadyPresent { local_path: None },
            "{name}: the second writer must not replace the first one's object"
        );
        let keys = server.keys();
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

both!(
    two_agents_racing_for_an_s3_key_leave_one_complete_object,
    two_agents_racing_for_an_azure_key_leave_one_complete_object,
    racing_writers_leave_one_object
);

/// A wrong secret and a missing bucket are skips with clear reasons (never a miss, never the
/// secret), and the lookup goes on to the next store.
async fn refusals_are_skips_with_reasons(server: &dyn Server) {
    let lab = Lab::new();
    lab.publish("main", &[PDB], Form::Plain).await;
    let (missing, missing_says) = server.missing();
    let cases = [
        (
            format!("{}/x", server.root()),
            server.wrong_secret(),
            StoreErrorKind::AuthFailed,
            server.refused(),
        ),
        (
            missing,
            server.secret(),
            StoreErrorKind::Unreachable,
            missing_says,
        ),
    ];
    for (store, secret, kind, says) in cases {
        let t = transports(server.config(&secret), SmbConfig::default());
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
        assert!(!skip.detail.contains(&secret), "{}", skip.detail);
        std::fs::remove_dir_all(lab.path("local")).unwrap();
    }
}

both!(
    a_wrong_s3_secret_and_a_missing_bucket_are_skips_with_reasons,
    a_wrong_azure_key_and_a_missing_container_are_skips_with_reasons,
    refusals_are_skips_with_reasons
);

/// `symcascade get` of a 100 MB PDB from a local main store through a bucket tier, beside
/// the same `get` without it: the upload runs in parts, so it adds only a few parts to
/// the process's peak memory (GNU time's maximum resident set), not the file's size; the
/// independent client finds the whole object.
async fn flat_memory(server: &dyn Server) {
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
    std::fs::write(&cfg, server.toml()).unwrap();
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
    let with = peak(format!("{}*{}/big", lab.s("local"), server.root()));
    eprintln!(
        "peak resident set of `get` of 100 MB: {without} MiB local only, {with} MiB with the upload to {}",
        server.root()
    );
    // Parts in flight, the one filling and the request bodies: about 5 parts of 8 MiB (40
    // MiB measured); a whole-file buffer would add 95 MiB or more.
    assert!(
        with < without + 56,
        "the upload added {} MiB (of a 100 MB file)",
        with.saturating_sub(without)
    );
    assert_eq!(
        server.keys(),
        [(object_key("big", &key, Form::Plain), 100_000_000)]
    );
    same(&lab.file_in("local", &key, Form::Plain), &src);
}

both!(
    a_100_mb_pdb_goes_up_to_s3_with_flat_memory,
    a_100_mb_pdb_goes_up_to_azure_with_flat_memory,
    flat_memory
);

/// A cut transfer continues with a `Range` request while the object's ETag is unchanged; a
/// replaced object (another ETag) is read again from byte 0, never mixed.
async fn resume_from_an_offset(server: &dyn Server) {
    use tokio::io::AsyncReadExt;
    let s = bucket_store(server, "resume");
    let key = key_of(BIG_PDB);
    let rel = symcascade::layout::path_for(&key, Tiering::OneTier, Form::Plain);
    let bytes = std::fs::read(fixture(BIG_PDB)).unwrap();
    s.put(&rel, &mut bytes.as_slice(), Some(bytes.len() as u64))
        .await
        .unwrap();
    let first = s.open(&rel).await.unwrap().unwrap();
    let version = first.version.clone().expect("an ETag");
    assert_eq!(first.len, Some(bytes.len() as u64));
    let cut = 1_000_000u64;
    let mut o = s.open_from(&rel, cut, &version).await.unwrap().unwrap();
    assert_eq!(o.offset, cut, "continued at the cut");
    let mut rest = Vec::new();
    o.reader.read_to_end(&mut rest).await.unwrap();
    assert_eq!(rest, bytes[cut as usize..], "the rest, byte for byte");
    // Another version of the object: from 0.
    let other = std::fs::read(fixture(PDB)).unwrap();
    s.replace(&rel, &mut other.as_slice(), Some(other.len() as u64))
        .await
        .unwrap();
    let mut o = s.open_from(&rel, cut, &version).await.unwrap().unwrap();
    assert_eq!(o.offset, 0, "a changed object starts over");
    let mut all = Vec::new();
    o.reader.read_to_end(&mut all).await.unwrap();
    assert_eq!(all, other);
}

both!(
    a_cut_s3_transfer_resumes_with_a_range_unless_the_object_changed,
    a_cut_azure_transfer_resumes_with_a_range_unless_the_blob_changed,
    resume_from_an_offset
);

/// Object keys are case-sensitive, SymStore writes any case: a store written as
/// `ATTACH_AMD64.PDB/<INDEX>/ATTACH_AMD64.PDB` (by another tool, with the independent client)
/// answers the lower-case request a debugger sends, through the cascade.
async fn any_case_is_found(server: &dyn Server) {
    let key = pdb_key();
    let rel = symcascade::layout::path_for(&key, Tiering::OneTier, Form::Plain);
    let upper = rel.components().join("/").to_ascii_uppercase();
    let s = bucket_store(server, "cased");
    let upper_rel = RelPath::from_safe(upper.split('/'));
    let bytes = std::fs::read(fixture(PDB)).unwrap();
    s.put(&upper_rel, &mut bytes.as_slice(), Some(bytes.len() as u64))
        .await
        .unwrap();
    assert_eq!(
        server.keys(),
        [(format!("cased/{upper}"), bytes.len() as u64)]
    );
    let lab = Lab::new();
    let t = transports(server.config(&server.secret()), SmbConfig::default());
    let path = format!("srv*{}*{}/cased", lab.s("local"), server.root());
    let c = lab.cascade_with(&path, CascadeOptions::default(), t).await;
    let lower = symcascade::key::Key::new(
        &key.name().to_ascii_lowercase(),
        &key.index().to_ascii_lowercase(),
    )
    .unwrap();
    let f = c.fetch(&lower).await.unwrap().expect("found in upper case");
    assert_eq!(f.tier, 1);
    same(&lab.file_in("local", &key, Form::Plain), &fixture(PDB));
}

both!(
    an_upper_case_s3_store_answers_lower_case_requests,
    an_upper_case_azure_store_answers_lower_case_requests,
    any_case_is_found
);

/// The HTTP front serves a debugger from a bucket upstream (SymProxy over an object store),
/// and `doctor` says how the bucket is reached, without its secret.
async fn front_over_a_bucket(server: &dyn Server) {
    let s = bucket_store(server, "main");
    for name in [PDB, DLL] {
        let rel = symcascade::layout::path_for(&key_of(name), Tiering::OneTier, Form::Plain);
        let bytes = std::fs::read(fixture(name)).unwrap();
        s.put(&rel, &mut bytes.as_slice(), Some(bytes.len() as u64))
            .await
            .unwrap();
    }
    let lab = Lab::new();
    let config = format!(
        "sympath = 'srv*{}*{}/main'\n{}[agent]\nqueue = false\nstate_dir = '{}'\n[http]\nlisten = \"127.0.0.1:0\"\n",
        lab.s("local"),
        server.root(),
        server.toml(),
        lab.s("state")
    );
    let d = InProcessDaemon::start(&config, &lab.default_downstream()).await;
    for name in [PDB, DLL] {
        let rel = symcascade::layout::path_for(&key_of(name), Tiering::OneTier, Form::Plain);
        let resp = reqwest::get(d.url(&format!("/{}", rel.components().join("/"))))
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{name}");
        let body = resp.bytes().await.unwrap();
        assert_eq!(
            body.as_ref(),
            std::fs::read(fixture(name)).unwrap(),
            "{name}"
        );
    }
    d.stop().await.unwrap();
    let cfg = lab.path("symcascade.toml");
    std::fs::write(&cfg, &config).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_symcascade"))
        .arg("--config")
        .arg(&cfg)
        .arg("doctor")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let client = match server.root().starts_with("s3") {
        true => "S3 client at http://127.0.0.1",
        false => "Azure Blob client at http://127.0.0.1",
    };
    assert!(text.contains(client), "{text}");
    assert!(!text.contains(&server.secret()), "{text}");
}

both!(
    the_front_serves_debuggers_from_an_s3_upstream,
    the_front_serves_debuggers_from_an_azure_upstream,
    front_over_a_bucket
);

/// An upload left by a writer killed between its upload and its copy (put here by the
/// independent client's stand-in: the store itself, under the upload prefix) is deleted by the
/// next health check once it is old enough; a fresh one, and every store file, stay.
async fn leftover_uploads_are_swept(server: &dyn Server) {
    let s = bucket_store(server, "sweep");
    let bytes = std::fs::read(fixture(PDB)).unwrap();
    let rel = symcascade::layout::path_for(&pdb_key(), Tiering::OneTier, Form::Plain);
    s.put(&rel, &mut bytes.as_slice(), Some(bytes.len() as u64))
        .await
        .unwrap();
    let leftover = RelPath::from_safe([".symcascade-uploads", "attach_amd64.pdb.0123456789abcdef"]);
    s.replace(&leftover, &mut bytes.as_slice(), Some(bytes.len() as u64))
        .await
        .unwrap();
    assert_eq!(server.keys().len(), 2);
    // Young: kept.
    s.capabilities().await.unwrap();
    assert_eq!(server.keys().len(), 2, "a young upload may still be copied");
    // Old (a maximum age of 0 s): deleted, the store file kept.
    let old = bucket_store(server, "sweep").with_upload_max_age(Duration::ZERO);
    assert_eq!(old.sweep_uploads().await, 1);
    assert_eq!(
        server.keys(),
        [(
            format!("sweep/{}", rel.components().join("/")),
            bytes.len() as u64
        )]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_uploads_left_by_a_dead_writer_are_swept() {
    // The sweep lists a prefix: see `Moto::start_checking`.
    let Some(server) = Moto::start_checking(false) else {
        return;
    };
    leftover_uploads_are_swept(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_uploads_left_by_a_dead_writer_are_swept() {
    let Some(server) = Azurite::start() else {
        return;
    };
    leftover_uploads_are_swept(&server).await;
}

/// The key from a profile of the AWS shared credentials file (`AWS_PROFILE`,
/// `AWS_SHARED_CREDENTIALS_FILE`), as the AWS CLI finds it: the config names only the endpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_keys_come_from_an_aws_profile() {
    let Some(moto) = Moto::start() else { return };
    let lab = Lab::new();
    lab.publish("main", &[PDB], Form::Plain).await;
    let creds = lab.path("aws-credentials");
    std::fs::write(
        &creds,
        format!(
            "[default]\naws_access_key_id = AKIAWRONG\naws_secret_access_key = wrong\n\n\
             [symbols]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
            moto.key_id, moto.secret
        ),
    )
    .unwrap();
    let cfg = lab.path("symcascade.toml");
    std::fs::write(&cfg, format!("[s3]\nendpoint = \"{}\"\n", moto.endpoint())).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_symcascade"))
        .arg("--config")
        .arg(&cfg)
        .arg("get")
        .arg("--sympath")
        .arg(format!(
            "srv*{}*s3://symbols/viaprofile*{}",
            lab.s("local"),
            lab.s("main")
        ))
        .arg(fixture(PDB))
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env("AWS_SHARED_CREDENTIALS_FILE", &creds)
        .env("AWS_CONFIG_FILE", lab.path("no-such-config"))
        .env("AWS_PROFILE", "symbols")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(!text.contains(&moto.secret), "{text}");
    assert_eq!(
        moto.keys(),
        [(
            object_key("viaprofile", &pdb_key(), Form::Plain),
            std::fs::metadata(fixture(PDB)).unwrap().len()
        )],
        "written with the profile's key: {text}"
    );
}

/// A read-only SAS token (Azure's usual way to hand out access): reads work; a write is a
/// reported skip; the token's signature appears in no message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_azure_read_only_sas_reads_and_its_refused_writes_never_show_the_token() {
    let Some(az) = Azurite::start() else { return };
    let rel = symcascade::layout::path_for(&pdb_key(), Tiering::OneTier, Form::Plain);
    az.py(&format!(
        "c.upload_blob('sas/{}', open(r'{}', 'rb').read())",
        rel.components().join("/"),
        fixture(PDB).display()
    ));
    let sas = az
        .py(&format!(
            "from azure.storage.blob import generate_container_sas, ContainerSasPermissions\n\
             import datetime\n\
             print(generate_container_sas(account_name='{AZURITE_ACCOUNT}', container_name='symbols', \
             account_key='{AZURITE_KEY}', permission=ContainerSasPermissions(read=True, list=True), \
             expiry=datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)))"
        ))
        .trim()
        .to_string();
    let sig = sas
        .split('&')
        .find_map(|p| p.strip_prefix("sig="))
        .expect("a signature")
        .to_string();
    let config = ObjectConfig {
        azure: AzureSettings {
            endpoint: Some(az.endpoint()),
            sas: Some(sas.clone()),
            ..Default::default()
        },
        ..Default::default()
    };
    let lab = Lab::new();
    lab.publish("main", &[DLL], Form::Plain).await;
    let tier = format!("{}/sas", az.root());
    let path = format!("srv*{}*{tier}*{}", lab.s("local"), lab.s("main"));
    let c = lab
        .cascade_with(
            &path,
            CascadeOptions::default(),
            transports(config, SmbConfig::default()),
        )
        .await;
    let l = c.lookup(&pdb_key()).await.unwrap();
    assert!(l.skipped.is_empty(), "{:?}", l.skipped);
    assert_eq!(l.fetched.expect("read with the SAS").tier, 1);
    let l = c.lookup(&key_of(DLL)).await.unwrap();
    assert_eq!(l.fetched.as_ref().expect("from main").tier, 2);
    let skip = l
        .skipped
        .iter()
        .find(|s| s.store == tier)
        .unwrap_or_else(|| panic!("the write is skipped: {:?}", l.skipped));
    assert!(
        matches!(
            skip.kind,
            StoreErrorKind::PermissionDenied | StoreErrorKind::AuthFailed
        ),
        "{skip:?}"
    );
    assert!(
        !skip.detail.contains(&sig) && !skip.detail.contains(&sas),
        "{}",
        skip.detail
    );
    assert_eq!(az.keys().len(), 1, "nothing written: {:?}", az.keys());
}
