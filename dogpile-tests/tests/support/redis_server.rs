//! Real redis servers for the tests: a standalone server, a three-master Redis Cluster and
//! a Sentinel setup, each on free loopback ports with its own temporary directory.
//!
//! A server that cannot be started fails the test with a message saying so; nothing is
//! skipped. Servers owned by a test are killed when dropped; the shared ones (one per test
//! binary) are killed, and their directories removed, when the test process exits.
#![allow(dead_code)]

use std::fs;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use super::ports::free_port;

/// How long a server may take to answer PING (or a cluster to become ready).
const STARTUP: Duration = Duration::from_secs(20);

/// A `redis-server` process on 127.0.0.1.
pub struct RedisServer {
    port: u16,
    dir: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
    /// Serves TLS only (on `port`), with certificates made for the test in `dir`.
    tls: bool,
}

/// Whether a TLS server asks clients for a certificate.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum ClientCerts {
    /// Clients may connect without one.
    Optional,
    /// Clients must present one signed by the test CA.
    Required,
}

fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run openssl to make test certificates: {e}"));
    assert!(
        output.status.success(),
        "openssl {args:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Makes, in `dir`, a test CA (`ca.crt`), a server certificate for 127.0.0.1 and
/// localhost (`server.crt`, `server.key`) and a client certificate (`client.crt`,
/// `client.key`), both signed by the CA; and `other-ca.crt`, a CA that signed nothing.
fn make_certificates(dir: &Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    for (name, cn) in [("ca", "dogpile test CA"), ("other-ca", "another CA")] {
        let (key, crt, subj) = (
            format!("{name}.key"),
            format!("{name}.crt"),
            format!("/CN={cn}"),
        );
        let mut args = vec!["req", "-x509"];
        args.extend(ec);
        args.extend(["-keyout", &key, "-out", &crt, "-days", "2", "-subj", &subj]);
        openssl(dir, &args);
    }
    for (name, ext) in [
        (
            "server",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
        ),
        ("client", "extendedKeyUsage=clientAuth\n"),
    ] {
        let (key, csr, crt, extfile) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.crt"),
            format!("{name}.ext"),
        );
        fs::write(dir.join(&extfile), ext).expect("write an openssl extension file");
        let subj = format!("/CN=dogpile test {name}");
        let mut args = vec!["req"];
        args.extend(ec);
        args.extend(["-keyout", &key, "-out", &csr, "-subj", &subj]);
        openssl(dir, &args);
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &crt,
                "-days",
                "2",
                "-extfile",
                &extfile,
            ],
        );
    }
}

/// The path of file `name` in `dir`, as a string.
fn path_in(dir: &Path, name: &str) -> String {
    dir.join(name).to_str().expect("UTF-8 temp path").to_owned()
}

fn temp_dir(what: &str) -> PathBuf {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "dogpile-{what}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    fs::create_dir_all(&dir)
        .unwrap_or_else(|e| panic!("cannot create the test directory {}: {e}", dir.display()));
    dir
}

impl RedisServer {
    /// A standalone server, owned by the caller.
    pub fn start() -> RedisServer {
        RedisServer::start_with(free_port(), &[])
    }

    /// A server on `port` with extra `redis-server` arguments (`--cluster-enabled yes`, ...).
    pub fn start_with(port: u16, args: &[&str]) -> RedisServer {
        let mut server = RedisServer {
            port,
            dir: temp_dir("redis"),
            args: args.iter().map(|a| a.to_string()).collect(),
            child: None,
            tls: false,
        };
        server.launch();
        server
    }

    /// A server that speaks TLS only (`--port 0 --tls-port PORT`), with a certificate for
    /// 127.0.0.1 signed by a CA made for it ([`RedisServer::tls_file`]).
    pub fn start_tls(client_certs: ClientCerts) -> RedisServer {
        RedisServer::start_tls_with(free_port(), None, client_certs, &[])
    }

    /// A TLS-only server on `port` with the certificates in `certs` (made for it in its
    /// own directory if `None`) and extra `redis-server` arguments.
    fn start_tls_with(
        port: u16,
        certs: Option<&Path>,
        client_certs: ClientCerts,
        extra: &[&str],
    ) -> RedisServer {
        let dir = temp_dir("redis-tls");
        let certs = match certs {
            Some(certs) => certs.to_owned(),
            None => {
                make_certificates(&dir);
                dir.clone()
            }
        };
        let file = |name: &str| path_in(&certs, name);
        let auth = match client_certs {
            ClientCerts::Optional => "optional",
            ClientCerts::Required => "yes",
        };
        let mut args = vec![
            "--tls-cert-file".to_owned(),
            file("server.crt"),
            "--tls-key-file".to_owned(),
            file("server.key"),
            "--tls-ca-cert-file".to_owned(),
            file("ca.crt"),
            "--tls-auth-clients".to_owned(),
            auth.to_owned(),
            // Its own connections (the cluster bus, replication) show the client
            // certificate: the server's is for servers only.
            "--tls-client-cert-file".to_owned(),
            file("client.crt"),
            "--tls-client-key-file".to_owned(),
            file("client.key"),
        ];
        args.extend(extra.iter().map(|arg| arg.to_string()));
        let mut server = RedisServer {
            port,
            dir,
            args,
            child: None,
            tls: true,
        };
        server.launch();
        server
    }

    /// One TLS server (client certificates optional) shared by every test of this binary.
    pub fn shared_tls() -> &'static RedisServer {
        static SHARED: OnceLock<RedisServer> = OnceLock::new();
        SHARED.get_or_init(|| {
            let server = RedisServer::start_tls(ClientCerts::Optional);
            keep_until_exit(&server);
            server
        })
    }

    /// The path of a certificate file of a TLS server: `ca.crt`, `client.crt`,
    /// `client.key`, `other-ca.crt`, ...
    pub fn tls_file(&self, name: &str) -> String {
        path_in(&self.dir, name)
    }

    /// One server shared by every test of this binary; stopped when the process exits.
    pub fn shared() -> &'static RedisServer {
        static SHARED: OnceLock<RedisServer> = OnceLock::new();
        SHARED.get_or_init(|| {
            let server = RedisServer::start();
            keep_until_exit(&server);
            server
        })
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join(format!("redis-{}.log", self.port))
    }

    fn launch(&mut self) {
        let log = fs::File::create(self.log_path())
            .unwrap_or_else(|e| panic!("cannot create the redis-server log file: {e}"));
        let (plain_port, tls_port) = match self.tls {
            true => (
                "0".to_owned(),
                vec!["--tls-port".to_owned(), self.port.to_string()],
            ),
            false => (self.port.to_string(), vec![]),
        };
        let child = Command::new("redis-server")
            .args(["--port", &plain_port])
            .args(&tls_port)
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start redis-server (is it installed? scripts/test.sh installs it): {e}"
                )
            });
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let started = Instant::now();
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!(
                        "redis-server on port {} exited at startup ({status}); its log:\n{}",
                        self.port,
                        fs::read_to_string(self.log_path()).unwrap_or_default()
                    );
                }
            }
            if self.ping().is_ok() {
                return;
            }
            if started.elapsed() > STARTUP {
                panic!(
                    "redis-server on port {} did not answer PING within {STARTUP:?}; its log:\n{}",
                    self.port,
                    fs::read_to_string(self.log_path()).unwrap_or_default()
                );
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    fn ping(&self) -> redis::RedisResult<()> {
        if self.tls {
            // Listening is enough: the tests' own TLS handshakes are what they test.
            std::net::TcpStream::connect(self.addr())?;
            return Ok(());
        }
        let mut conn = redis::Client::open(self.url())?
            .get_connection_with_timeout(Duration::from_millis(500))?;
        redis::cmd("PING").query(&mut conn)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `redis://127.0.0.1:PORT` (`rediss://` for a TLS server)
    pub fn url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// The process id of the running server.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// A bare connection (no dogpile), to look at or tamper with what is stored.
    pub fn client(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(5)))
            .unwrap_or_else(|e| panic!("cannot connect to the test redis at {}: {e}", self.addr()))
    }

    /// Kills the server (SIGKILL) and waits until it is gone.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes (SIGSTOP) or thaws (SIGCONT) the server: a frozen server accepts
    /// connections but answers nothing, as a hung server does.
    pub fn freeze(&self, frozen: bool) {
        let pid = self.pid().expect("the server is running") as libc::pid_t;
        let signal = if frozen { libc::SIGSTOP } else { libc::SIGCONT };
        // SAFETY: kill(2) on our own child process.
        let sent = unsafe { libc::kill(pid, signal) };
        assert_eq!(sent, 0, "cannot signal redis-server {pid}");
    }

    /// Starts the server again on the same port (it comes back empty).
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Processes and directories to clean up when the test process exits.
static AT_EXIT: Mutex<Vec<(u32, PathBuf)>> = Mutex::new(Vec::new());

extern "C" fn clean_up_at_exit() {
    let kept = std::mem::take(&mut *AT_EXIT.lock().unwrap_or_else(|p| p.into_inner()));
    for (pid, dir) in kept {
        // SAFETY: kill(2) and waitpid(2) on a child process we spawned and never waited
        // for.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGKILL);
            libc::waitpid(pid as libc::pid_t, std::ptr::null_mut(), 0);
        }
        let _ = fs::remove_dir_all(dir);
    }
}

/// Kills `server` and removes its directory when the process exits (statics are never
/// dropped).
fn keep_until_exit(server: &RedisServer) {
    static REGISTERED: OnceLock<()> = OnceLock::new();
    REGISTERED.get_or_init(|| {
        // SAFETY: registers a plain `extern "C" fn` with atexit(3).
        unsafe {
            libc::atexit(clean_up_at_exit);
        }
    });
    if let Some(pid) = server.pid() {
        AT_EXIT
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((pid, server.dir.clone()));
    }
}

/// A loopback port whose cluster bus port (port + 10000) is free as well.
fn free_cluster_port() -> u16 {
    loop {
        let port = free_port();
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port + 10000)).is_ok() {
            return port;
        }
    }
}

fn redis_cli(args: &[String], what: &str) -> String {
    let output = Command::new("redis-cli")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run redis-cli (is it installed? scripts/test.sh installs it): {e}")
        });
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        panic!("redis-cli failed to {what} ({}):\n{text}", output.status);
    }
    text
}

/// A Redis Cluster of three masters (no replicas) on loopback.
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
    /// A TLS cluster (`--tls-cluster yes`): `redis-cli` options to reach it.
    tls: Option<Vec<String>>,
}

impl RedisCluster {
    /// Starts three cluster-enabled servers, creates the cluster and waits for
    /// `cluster_state:ok` on every node.
    pub fn start() -> RedisCluster {
        RedisCluster::start_nodes(false)
    }

    /// A cluster that speaks TLS only, clients and cluster bus alike (`--tls-cluster
    /// yes`), with certificates made for it ([`RedisCluster::tls_file`]).
    pub fn start_tls() -> RedisCluster {
        RedisCluster::start_nodes(true)
    }

    fn start_nodes(tls: bool) -> RedisCluster {
        let mut nodes: Vec<RedisServer> = Vec::new();
        for _ in 0..3 {
            let port = free_cluster_port();
            // The config file is relative to the server's own directory (`--dir`).
            let conf = format!("nodes-{port}.conf");
            let args = [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                &conf,
                "--cluster-node-timeout",
                "5000",
            ];
            let node = match tls {
                false => RedisServer::start_with(port, &args),
                true => {
                    let mut args = args.to_vec();
                    // With `--port 0` the bus port would be 0 + 10000 on every node.
                    let bus = (port + 10000).to_string();
                    args.extend(["--tls-cluster", "yes", "--cluster-port", &bus]);
                    // The first node's certificates serve them all.
                    let certs = nodes.first().map(|first| first.dir().to_owned());
                    RedisServer::start_tls_with(
                        port,
                        certs.as_deref(),
                        ClientCerts::Optional,
                        &args,
                    )
                }
            };
            nodes.push(node);
        }
        let tls = tls.then(|| {
            vec![
                "--tls".to_owned(),
                "--cacert".to_owned(),
                nodes[0].tls_file("ca.crt"),
            ]
        });
        let mut args: Vec<String> = tls.clone().unwrap_or_default();
        args.extend(["--cluster".into(), "create".into()]);
        args.extend(nodes.iter().map(RedisServer::addr));
        args.extend(["--cluster-replicas", "0", "--cluster-yes"].map(String::from));
        redis_cli(&args, "create the test cluster");
        let cluster = RedisCluster { nodes, tls };
        cluster.wait_ok();
        cluster
    }

    /// One TLS cluster shared by every test of this binary; stopped when the process
    /// exits.
    pub fn shared_tls() -> &'static RedisCluster {
        static SHARED: OnceLock<RedisCluster> = OnceLock::new();
        SHARED.get_or_init(|| {
            let cluster = RedisCluster::start_tls();
            // The first node's directory (its certificates) is removed last.
            for node in cluster.nodes.iter().rev() {
                keep_until_exit(node);
            }
            cluster
        })
    }

    /// The path of a certificate file of a TLS cluster (`ca.crt`, `other-ca.crt`, ...).
    pub fn tls_file(&self, name: &str) -> String {
        self.nodes[0].tls_file(name)
    }

    /// One cluster shared by every test of this binary; stopped when the process exits.
    pub fn shared() -> &'static RedisCluster {
        static SHARED: OnceLock<RedisCluster> = OnceLock::new();
        SHARED.get_or_init(|| {
            let cluster = RedisCluster::start();
            for node in &cluster.nodes {
                keep_until_exit(node);
            }
            cluster
        })
    }

    fn wait_ok(&self) {
        let started = Instant::now();
        loop {
            let ready = self.nodes.iter().all(|node| {
                let info: redis::RedisResult<String> = match &self.tls {
                    None => redis::Client::open(node.url())
                        .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(1)))
                        .and_then(|mut conn| redis::cmd("CLUSTER").arg("INFO").query(&mut conn)),
                    Some(tls) => {
                        let mut args = tls.clone();
                        args.extend(["-p".to_owned(), node.port().to_string()]);
                        args.extend(["CLUSTER".to_owned(), "INFO".to_owned()]);
                        Ok(redis_cli(&args, "ask a TLS cluster node for CLUSTER INFO"))
                    }
                };
                info.is_ok_and(|info| {
                    info.contains("cluster_state:ok") && info.contains("cluster_known_nodes:3")
                })
            });
            if ready {
                return;
            }
            if started.elapsed() > STARTUP {
                panic!("the test cluster did not reach cluster_state:ok within {STARTUP:?}");
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The nodes.
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// `redis://127.0.0.1:P1,redis://127.0.0.1:P2,redis://127.0.0.1:P3` (`rediss://` for
    /// a TLS cluster)
    pub fn url(&self) -> String {
        self.nodes
            .iter()
            .map(RedisServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The port of the master serving `key`'s slot.
    pub fn master_port_of(&self, key: &str) -> u16 {
        let mut conn = self.nodes[0].client();
        let slot: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut conn)
            .expect("CLUSTER KEYSLOT");
        let slots: Vec<redis::Value> = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query(&mut conn)
            .expect("CLUSTER SLOTS");
        for range in slots {
            let redis::Value::Array(range) = range else {
                continue;
            };
            let (Some(redis::Value::Int(start)), Some(redis::Value::Int(end))) =
                (range.first(), range.get(1))
            else {
                continue;
            };
            if (*start..=*end).contains(&i64::from(slot)) {
                if let Some(redis::Value::Array(master)) = range.get(2) {
                    if let Some(redis::Value::Int(port)) = master.get(1) {
                        return *port as u16;
                    }
                }
            }
        }
        panic!("no master serves slot {slot} of key {key:?}");
    }

    /// A bare connection to the node on `port`.
    pub fn node_client(&self, port: u16) -> redis::Connection {
        self.nodes
            .iter()
            .find(|n| n.port() == port)
            .unwrap_or_else(|| panic!("no cluster node on port {port}"))
            .client()
    }
}

/// A master, one replica and one Sentinel monitoring them as `mymaster`.
pub struct RedisSentinel {
    pub master: RedisServer,
    pub replica: RedisServer,
    pub sentinel: RedisServer,
}

impl RedisSentinel {
    /// Starts the three processes and waits until the Sentinel knows the master and the
    /// replica is in sync.
    pub fn start() -> RedisSentinel {
        // No 5 s wait before a diskless sync to the replica.
        let master = RedisServer::start_with(free_port(), &["--repl-diskless-sync-delay", "0"]);
        let master_port = master.port().to_string();
        let replica =
            RedisServer::start_with(free_port(), &["--replicaof", "127.0.0.1", &master_port]);
        let sentinel = sentinel_of(master.port(), None);
        let setup = RedisSentinel {
            master,
            replica,
            sentinel,
        };
        setup.wait_replica_known();
        setup
    }

    /// One setup shared by every test of this binary; stopped when the process exits.
    pub fn shared() -> &'static RedisSentinel {
        static SHARED: OnceLock<RedisSentinel> = OnceLock::new();
        SHARED.get_or_init(|| {
            let setup = RedisSentinel::start();
            for server in [&setup.master, &setup.replica, &setup.sentinel] {
                keep_until_exit(server);
            }
            setup
        })
    }

    /// Another Sentinel monitoring the same master, owned by the caller.
    pub fn add_sentinel(&self) -> RedisServer {
        sentinel_of(self.master.port(), None)
    }

    /// `127.0.0.1:PORT` of the Sentinel.
    pub fn sentinel_addr(&self) -> String {
        self.sentinel.addr()
    }

    /// The master's port as the Sentinel reports it.
    pub fn master_port(&self) -> Option<u16> {
        let mut conn = self.sentinel.client();
        let addr: Option<(String, u16)> = redis::cmd("SENTINEL")
            .arg("GET-MASTER-ADDR-BY-NAME")
            .arg("mymaster")
            .query(&mut conn)
            .ok()?;
        addr.map(|(_, port)| port)
    }

    fn wait_replica_known(&self) {
        let started = Instant::now();
        loop {
            let mut conn = self.sentinel.client();
            let replicas: redis::RedisResult<Vec<Vec<String>>> = redis::cmd("SENTINEL")
                .arg("REPLICAS")
                .arg("mymaster")
                .query(&mut conn);
            let known = replicas.is_ok_and(|replicas| {
                replicas.iter().any(|fields| {
                    fields
                        .windows(2)
                        .any(|kv| kv[0] == "flags" && kv[1] == "slave")
                        && fields
                            .windows(2)
                            .any(|kv| kv[0] == "master-link-status" && kv[1] == "ok")
                })
            });
            if known && self.master_port() == Some(self.master.port()) {
                return;
            }
            if started.elapsed() > STARTUP {
                panic!(
                    "the test Sentinel did not see the master and its replica within {STARTUP:?}"
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A Sentinel monitoring the master on `master_port` as `mymaster`; over TLS only, with
/// the certificates in `tls` (a TLS master's directory), when given.
fn sentinel_of(master_port: u16, tls: Option<&Path>) -> RedisServer {
    let dir = temp_dir("redis-sentinel-conf");
    let conf = dir.join("sentinel.conf");
    let mut text = format!(
        "sentinel monitor mymaster 127.0.0.1 {master_port} 1\n\
         sentinel down-after-milliseconds mymaster 2000\n\
         sentinel failover-timeout mymaster 10000\n"
    );
    if let Some(certs) = tls {
        let file = |name: &str| path_in(certs, name);
        text += &format!(
            "tls-cert-file {}\ntls-key-file {}\ntls-ca-cert-file {}\n\
             tls-auth-clients optional\ntls-replication yes\n",
            file("server.crt"),
            file("server.key"),
            file("ca.crt"),
        );
    }
    fs::write(&conf, text).expect("write sentinel.conf");
    let conf = conf.to_str().expect("temp paths are UTF-8").to_owned();
    let mut sentinel = RedisServer {
        port: free_port(),
        dir,
        args: vec![],
        child: None,
        tls: tls.is_some(),
    };
    sentinel.launch_sentinel(&conf);
    sentinel
}

/// A TLS master and a TLS Sentinel monitoring it as `mymaster` (no replica); the
/// certificates are the master's ([`RedisServer::tls_file`]).
pub struct TlsSentinel {
    pub master: RedisServer,
    pub sentinel: RedisServer,
}

impl TlsSentinel {
    /// Starts both, each serving TLS only.
    pub fn start() -> TlsSentinel {
        let master = RedisServer::start_tls(ClientCerts::Optional);
        let sentinel = sentinel_of(master.port(), Some(master.dir()));
        TlsSentinel { master, sentinel }
    }

    /// One setup shared by every test of this binary; stopped when the process exits.
    pub fn shared() -> &'static TlsSentinel {
        static SHARED: OnceLock<TlsSentinel> = OnceLock::new();
        SHARED.get_or_init(|| {
            let setup = TlsSentinel::start();
            keep_until_exit(&setup.master);
            keep_until_exit(&setup.sentinel);
            setup
        })
    }

    /// `rediss://127.0.0.1:PORT` of the Sentinel.
    pub fn sentinel_url(&self) -> String {
        self.sentinel.url()
    }
}

impl RedisServer {
    fn launch_sentinel(&mut self, conf: &str) {
        let log = fs::File::create(self.log_path())
            .unwrap_or_else(|e| panic!("cannot create the redis-sentinel log file: {e}"));
        let ports = match self.tls {
            true => [
                "--port".to_owned(),
                "0".to_owned(),
                "--tls-port".to_owned(),
                self.port.to_string(),
            ],
            false => [
                "--port".to_owned(),
                self.port.to_string(),
                String::new(),
                String::new(),
            ],
        };
        let child = Command::new("redis-server")
            .arg(conf)
            .arg("--sentinel")
            .args(ports.iter().filter(|arg| !arg.is_empty()))
            .args(["--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start redis-server --sentinel: {e}"));
        self.child = Some(child);
        self.wait_ready();
    }

    /// The directory the server runs in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}
