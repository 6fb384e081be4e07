//! Real servers for tests, started from the machine's packages on loopback
//! ports in temporary directories: a single Redis ([`Redis`]), a 6-node Redis
//! Cluster with 3 masters and 3 replicas ([`RedisCluster`]) and a Postgres
//! ([`Postgres`]). Each can be crashed and brought back (`kill -9`, Postgres's
//! immediate stop) so tests can see what a client does when its server goes
//! away, and each is stopped and its directory removed on drop, also when the
//! test panics.
//!
//! The servers come from Debian's `redis-server` and `postgresql`, which
//! `scripts/install-servers.sh` installs; a missing one is a test failure
//! that says so ([`Redis::require`], [`Postgres::require`]), never a silent
//! skip. Every wait is bounded and panics with the server's log; nothing is
//! printed otherwise. Ports come from the kernel ([`free_port`]) and a start
//! that loses its port to another process in the meantime is retried on
//! fresh ones.
//!
//! What it deliberately does not do: speak the servers' protocols (tests
//! bring their own client; [`redis_cli`] and [`Postgres::psql`] are for
//! setting up and looking), tune the servers beyond what a quick test needs,
//! or stop a server that is never dropped (do not keep one in a `static`).

use std::fs::{self, OpenOptions};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// How long a server may take to start, stop or (for the cluster) become
/// healthy before the test panics. On a 2-core machine a Redis starts in
/// 30 ms, a cluster in 3 s, a Postgres in 1.5 s (`initdb` included), and a
/// cluster fails a killed master over in about 4 s.
pub const WAIT: Duration = Duration::from_secs(20);

/// The cluster nodes' `cluster-node-timeout`: a master that does not answer
/// for this long is failed over to its replica. Redis's default (15 s) would
/// make every failover test take that long.
pub const CLUSTER_NODE_TIMEOUT_MS: u32 = 2000;

/// How many fresh ports a start tries when another process takes its port
/// between [`free_port`] and the server's bind.
const PORT_ATTEMPTS: usize = 5;

/// What a server (or the kernel) says when its port is taken.
const ADDRESS_IN_USE: &str = "Address already in use";

/// How many lines of a server's log a panic message shows.
const LOG_TAIL_LINES: usize = 60;

/// The hint every "not installed" panic ends with.
const INSTALL_HINT: &str = "run scripts/install-servers.sh";

/// A port on 127.0.0.1 that was free a moment ago (the kernel's choice for
/// port 0). Another process may take it before the caller binds it: the
/// starts in this module retry on a fresh port when that happens.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0")
        .unwrap_or_else(|e| panic!("cannot bind a free port on 127.0.0.1: {e}"));
    listener
        .local_addr()
        .unwrap_or_else(|e| panic!("cannot read the address of a bound listener: {e}"))
        .port()
}

/// Runs `redis-cli -h 127.0.0.1 -p PORT ARGS...` and returns its standard
/// output without its trailing newlines. Replies that are Redis errors (such
/// as `MOVED` without `-c`) are output like any other; only a failure of
/// redis-cli itself (for instance, nothing listening) panics, with its
/// output. Put `-c` first in `args` to follow cluster redirections.
pub fn redis_cli(port: u16, args: &[&str]) -> String {
    try_redis_cli(port, args).unwrap_or_else(|e| panic!("{e}"))
}

/// [`redis_cli`] that returns the failure as text instead of panicking.
fn try_redis_cli(port: u16, args: &[&str]) -> Result<String, String> {
    let mut cmd = Command::new("redis-cli");
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string()]).args(args);
    let out = output(&mut cmd)?;
    if !out.status.success() {
        return Err(format!("{cmd:?} failed ({}): {}", out.status, both(&out)));
    }
    Ok(stdout_text(&out))
}

/// A single `redis-server` on a loopback port, in a temporary directory,
/// without persistence (`--save '' --appendonly no`): a restart starts empty.
/// It runs as this process's child and is killed on drop.
pub struct Redis {
    node: RedisNode,
    _dir: TempDir,
}

impl Redis {
    /// Whether `redis-server` and `redis-cli` are on `PATH`.
    pub fn available() -> bool {
        on_path("redis-server") && on_path("redis-cli")
    }

    /// Panics, saying how to install them, unless [`Redis::available`].
    pub fn require() {
        for program in ["redis-server", "redis-cli"] {
            if !on_path(program) {
                panic!("{program} is not installed: {INSTALL_HINT}");
            }
        }
    }

    /// Starts a server and waits until it answers.
    pub fn start() -> Redis {
        Redis::require();
        let dir = TempDir::new("redis");
        let node = RedisNode::start(
            dir.path().to_owned(),
            &["--save", "", "--appendonly", "no"],
            false,
        );
        Redis { node, _dir: dir }
    }

    /// `redis://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        self.node.url()
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.node.port
    }

    /// Kills the server with SIGKILL (a crash) and waits until it is gone.
    pub fn kill9(&mut self) {
        self.node.kill9();
    }

    /// Starts the server again on the same port and directory, after killing
    /// it with SIGKILL if it is running. Panics if another process took the
    /// port in the meantime.
    pub fn restart(&mut self) {
        self.node.kill9();
        self.node.launch().unwrap_or_else(|e| panic!("{e}"));
    }
}

/// Six `redis-server`s in cluster mode on loopback ports, each in its own
/// directory with an append-only file: 3 masters sharing the 16,384 slots and
/// one replica for each, made by `redis-cli --cluster create`. A master that
/// is killed is failed over to its replica after [`CLUSTER_NODE_TIMEOUT_MS`]
/// and a little more. The nodes are killed on drop.
pub struct RedisCluster {
    nodes: Vec<RedisNode>,
    dir: TempDir,
}

impl RedisCluster {
    /// How many nodes the cluster has: 3 masters and 3 replicas.
    pub const NODES: usize = 6;

    /// Starts the six nodes, creates the cluster and waits until it is ok
    /// ([`RedisCluster::wait_ok`]): every node reports `cluster_state:ok`
    /// and every replica is in sync with its master.
    pub fn start() -> RedisCluster {
        Redis::require();
        let dir = TempDir::new("redis-cluster");
        let timeout = CLUSTER_NODE_TIMEOUT_MS.to_string();
        let args = [
            "--save",
            "",
            "--appendonly",
            "yes",
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            &timeout,
            // A master waits this long for more replicas before it streams a
            // full sync to one (5 s by default), which would make every
            // cluster start and every rejoin take 5 s more.
            "--repl-diskless-sync-delay",
            "0",
        ];
        let mut cluster = RedisCluster {
            nodes: Vec::with_capacity(Self::NODES),
            dir,
        };
        for i in 0..Self::NODES {
            let node_dir = cluster.dir.path().join(format!("node{i}"));
            fs::create_dir(&node_dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", node_dir.display()));
            // The cluster bus gets its own free port (`--cluster-port`):
            // Redis's default, port + 10000, is past 65535 for half of the
            // kernel's ephemeral ports.
            let node = RedisNode::start(node_dir, &args, true);
            cluster.nodes.push(node);
        }
        let mut create = Command::new("redis-cli");
        create.args(["--cluster", "create"]);
        for node in &cluster.nodes {
            create.arg(format!("127.0.0.1:{}", node.port));
        }
        create.args(["--cluster-replicas", "1", "--cluster-yes"]);
        let out = output(&mut create).unwrap_or_else(|e| panic!("{e}\n{}", cluster.logs()));
        if !out.status.success() || !String::from_utf8_lossy(&out.stdout).contains("slots covered") {
            panic!(
                "{create:?} failed ({}): {}\n{}",
                out.status,
                both(&out),
                cluster.logs()
            );
        }
        cluster.wait_ok(WAIT);
        cluster
    }

    /// Every node's `redis://127.0.0.1:PORT/`, killed ones included.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisNode::url).collect()
    }

    /// Every node's port, killed ones included.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port).collect()
    }

    /// The ports of the nodes that are masters now, in increasing order, as
    /// `CLUSTER NODES` on a running node says (without nodes it flags as
    /// failing). Right after a kill, before the cluster notices, the killed
    /// master is still listed: call [`RedisCluster::wait_ok`] first.
    pub fn masters(&self) -> Vec<u16> {
        let view = self.view_from(self.any_running());
        let mut ports: Vec<u16> = view
            .iter()
            .filter(|n| n.is_master() && !n.failing())
            .map(|n| n.port)
            .collect();
        ports.sort_unstable();
        ports
    }

    /// Kills the master that serves `slot` (0 to 16383, see `CLUSTER KEYSLOT`)
    /// with SIGKILL and returns its port.
    pub fn kill9_master_of_slot(&mut self, slot: u16) -> u16 {
        let view = self.view_from(self.any_running());
        let Some(master) = view
            .iter()
            .find(|n| n.is_master() && !n.failing() && n.serves(slot))
        else {
            panic!("no master serves slot {slot}; CLUSTER NODES:\n{view:#?}");
        };
        let port = master.port;
        self.kill9(port);
        port
    }

    /// Kills the node on `port` with SIGKILL (a crash) and waits until it is
    /// gone.
    pub fn kill9(&mut self, port: u16) {
        self.node_mut(port).kill9();
    }

    /// Starts the node on `port` again, on the same ports and directory, after
    /// killing it if it is running. It rejoins the cluster from its
    /// `nodes.conf` and its append-only file; a master that was failed over
    /// comes back as a replica of its successor.
    pub fn restart(&mut self, port: u16) {
        let node = self.node_mut(port);
        node.kill9();
        node.launch().unwrap_or_else(|e| panic!("{e}"));
    }

    /// Waits until the cluster is healthy and settled as seen from every
    /// running node: `cluster_state:ok`, every slot served by a master that is
    /// running, no running node flagged as failing, the same roles in every
    /// node's `CLUSTER NODES`, and every running replica's link to its master
    /// up. After a master is killed this returns once its replica has taken
    /// over and every node knows it (at least [`CLUSTER_NODE_TIMEOUT_MS`]
    /// later; about 4 s in all here). Panics after `timeout` with what was
    /// still wrong and every node's log.
    ///
    /// Replication is asynchronous: a write acknowledged by a master just
    /// before it is killed may be missing on its successor. A test that needs
    /// it to survive sends `WAIT 1 <ms>` on the same connection first.
    pub fn wait_ok(&self, timeout: Duration) {
        wait_until(
            "the Redis cluster to be ok",
            timeout,
            Duration::from_millis(50),
            || self.check_ok(),
            || self.logs(),
        );
    }

    fn check_ok(&self) -> Result<(), String> {
        let running: Vec<u16> = self
            .nodes
            .iter()
            .filter(|n| n.running())
            .map(|n| n.port)
            .collect();
        // Each running node's view of the running nodes' roles; all must agree.
        let mut agreed: Option<(u16, Vec<(u16, bool)>)> = None;
        for &port in &running {
            let info = try_redis_cli(port, &["cluster", "info"])?;
            if !info.lines().any(|l| l.trim() == "cluster_state:ok") {
                return Err(format!("node {port} says:\n{info}"));
            }
            let text = try_redis_cli(port, &["cluster", "nodes"])?;
            let view = parse_cluster_nodes(&text);
            for n in &view {
                let up = running.contains(&n.port);
                if n.is_master() && !n.slots.is_empty() && (!up || n.failing()) {
                    return Err(format!(
                        "node {port} sees slots on master {} which is down:\n{text}",
                        n.port
                    ));
                }
                if up && n.failing() {
                    return Err(format!("node {port} sees node {} failing:\n{text}", n.port));
                }
            }
            let mut roles: Vec<(u16, bool)> = view
                .iter()
                .filter(|n| running.contains(&n.port))
                .map(|n| (n.port, n.is_master()))
                .collect();
            roles.sort_unstable();
            match &agreed {
                None => agreed = Some((port, roles)),
                Some((first, first_roles)) if *first_roles != roles => {
                    return Err(format!(
                        "nodes {first} and {port} disagree on who is master: {first_roles:?} and {roles:?}"
                    ));
                }
                Some(_) => {}
            }
            let replication = try_redis_cli(port, &["info", "replication"])?;
            let field = |name: &str| {
                replication
                    .lines()
                    .find_map(|l| l.trim().strip_prefix(name)?.strip_prefix(':'))
                    .unwrap_or("")
                    .to_owned()
            };
            if field("role") == "slave" && field("master_link_status") != "up" {
                return Err(format!("replica {port} is not in sync:\n{replication}"));
            }
        }
        Ok(())
    }

    /// `CLUSTER NODES` as the node on `port` sees it.
    fn view_from(&self, port: u16) -> Vec<ClusterNode> {
        let text =
            try_redis_cli(port, &["cluster", "nodes"]).unwrap_or_else(|e| panic!("{e}\n{}", self.logs()));
        parse_cluster_nodes(&text)
    }

    fn any_running(&self) -> u16 {
        match self.nodes.iter().find(|n| n.running()) {
            Some(n) => n.port,
            None => panic!("every node of the Redis cluster is down"),
        }
    }

    fn node_mut(&mut self, port: u16) -> &mut RedisNode {
        let ports = self.ports();
        match self.nodes.iter_mut().find(|n| n.port == port) {
            Some(n) => n,
            None => panic!("no node of the Redis cluster has port {port} (its ports: {ports:?})"),
        }
    }

    fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(RedisNode::log)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// One line of `CLUSTER NODES`: `<id> <ip:port@cport> <flags> <master>
/// <ping-sent> <pong-recv> <config-epoch> <link-state> <slot> <slot>...`.
#[derive(Debug)]
struct ClusterNode {
    port: u16,
    flags: Vec<String>,
    /// Inclusive slot ranges (a single slot is `(s, s)`).
    slots: Vec<(u16, u16)>,
}

impl ClusterNode {
    fn is_master(&self) -> bool {
        self.flags.iter().any(|f| f == "master")
    }

    /// Flagged as failing by the node that answered (`fail`) or suspected by
    /// it (`fail?`).
    fn failing(&self) -> bool {
        self.flags.iter().any(|f| f == "fail" || f == "fail?")
    }

    fn serves(&self, slot: u16) -> bool {
        self.slots.iter().any(|&(lo, hi)| (lo..=hi).contains(&slot))
    }
}

fn parse_cluster_nodes(text: &str) -> Vec<ClusterNode> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(parse_cluster_node)
        .collect()
}

fn parse_cluster_node(line: &str) -> ClusterNode {
    fn bad<T>(line: &str) -> T {
        panic!("unexpected CLUSTER NODES line: {line:?}")
    }
    let fields: Vec<&str> = line.split_whitespace().collect();
    let [_id, addr, flags, _master, _ping, _pong, _epoch, _link, ref slots @ ..] = fields[..] else {
        return bad(line);
    };
    // 127.0.0.1:7000@17000 (Redis 7 may add ",hostname").
    let port = addr
        .split('@')
        .next()
        .and_then(|a| a.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| bad(line));
    let flags = flags.split(',').map(str::to_owned).collect();
    // Slots being imported or migrated are written `[...]`: not served.
    let slots = slots
        .iter()
        .filter(|s| !s.starts_with('['))
        .map(|s| {
            let (lo, hi) = s.split_once('-').unwrap_or((s, s));
            match (lo.parse(), hi.parse()) {
                (Ok(lo), Ok(hi)) => (lo, hi),
                _ => bad(line),
            }
        })
        .collect();
    ClusterNode { port, flags, slots }
}

/// One `redis-server` child process: its directory (which holds its log),
/// its ports and its arguments, kept to start it again the same way.
struct RedisNode {
    dir: PathBuf,
    port: u16,
    /// The cluster bus port, for cluster nodes.
    bus_port: Option<u16>,
    args: Vec<String>,
    child: Option<Child>,
}

/// Why a node did not start.
enum LaunchError {
    /// Another process had its port: worth another try on fresh ports.
    PortTaken(String),
    Failed(String),
}

impl std::fmt::Display for LaunchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LaunchError::PortTaken(s) | LaunchError::Failed(s) => f.write_str(s),
        }
    }
}

impl RedisNode {
    /// Starts a node in `dir` with `args` on a free port (and, for a
    /// `cluster` node, a free cluster bus port), on fresh ports again when
    /// another process takes one first.
    fn start(dir: PathBuf, args: &[&str], cluster: bool) -> RedisNode {
        let mut node = RedisNode {
            dir,
            port: 0,
            bus_port: None,
            args: args.iter().map(|&a| a.to_owned()).collect(),
            child: None,
        };
        for attempt in 1..=PORT_ATTEMPTS {
            node.port = free_port();
            node.bus_port = cluster.then(free_port);
            match node.launch() {
                Ok(()) => return node,
                Err(LaunchError::PortTaken(_)) if attempt < PORT_ATTEMPTS => continue,
                Err(e) => panic!("{e}"),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// Starts the server on its ports and waits until it answers as itself
    /// (the `process_id` in `INFO server` is its child's, not that of another
    /// server that took the port).
    fn launch(&mut self) -> Result<(), LaunchError> {
        // What this start writes to the log, from here on, says why it failed.
        let from = log_len(&self.log_path());
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", self.log_path().display()));
        let log2 = log
            .try_clone()
            .unwrap_or_else(|e| panic!("cannot clone the handle of {}: {e}", self.log_path().display()));
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--dir"])
            .arg(&self.dir)
            .args(&self.args);
        if let Some(bus) = self.bus_port {
            cmd.args(["--cluster-port", &bus.to_string()]);
        }
        // No `--logfile`: the server logs to its standard output, which goes
        // to the log file with anything it says before reading its options.
        cmd.current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2));
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let pid = child.id();
        self.child = Some(child);
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                self.child = None;
                let message = format!(
                    "{cmd:?} exited ({status}) before it answered\n{}",
                    self.log_from(from)
                );
                return Err(if message.contains(ADDRESS_IN_USE) {
                    LaunchError::PortTaken(message)
                } else {
                    LaunchError::Failed(message)
                });
            }
            let info = try_redis_cli(self.port, &["info", "server"]).unwrap_or_default();
            if info.lines().any(|l| l.trim() == format!("process_id:{pid}")) {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.kill9();
                return Err(LaunchError::Failed(format!(
                    "{cmd:?} did not answer on port {} within {WAIT:?}\n{}",
                    self.port,
                    self.log_from(from)
                )));
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    fn running(&self) -> bool {
        self.child.is_some()
    }

    fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGKILL, then reap it: once `wait` returns, its ports are closed.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("log")
    }

    fn log(&self) -> String {
        self.log_from(0)
    }

    fn log_from(&self, from: u64) -> String {
        log_tail(
            &format!("redis-server on port {}", self.port),
            &self.log_path(),
            from,
        )
    }
}

impl Drop for RedisNode {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A Postgres server on a loopback port, in a temporary directory, with one
/// superuser `palisade` trusted without a password: connect to
/// [`Postgres::url`]. It runs with `fsync=off`, which loses nothing when the
/// server crashes (only when the machine does) and makes it quicker.
///
/// Postgres refuses to run as root: when the tests run as root, `initdb` and
/// `pg_ctl` run as the `postgres` user (which Debian's package creates) on a
/// directory it owns; otherwise as the current user. On drop the server is
/// stopped (immediate mode) and the directory removed.
pub struct Postgres {
    bin: PathBuf,
    port: u16,
    /// The uid and gid to run as, when not the current user's.
    user: Option<(u32, u32)>,
    running: bool,
    dir: TempDir,
}

impl Postgres {
    /// The superuser (trusted, without a password) [`Postgres::url`] connects as.
    pub const USER: &'static str = "palisade";

    /// Whether Debian's `postgresql` is installed (an
    /// `/usr/lib/postgresql/<version>/bin` with `initdb`, `pg_ctl`, `postgres`
    /// and `psql`).
    pub fn available() -> bool {
        bin_dir().is_some()
    }

    /// Panics, saying how to install it, unless [`Postgres::available`].
    pub fn require() {
        if !Postgres::available() {
            panic!("postgresql is not installed (no /usr/lib/postgresql/*/bin/initdb): {INSTALL_HINT}");
        }
    }

    /// Creates a database cluster (`initdb`), starts the server and waits
    /// until it accepts connections (`pg_ctl -w`).
    pub fn start() -> Postgres {
        Postgres::require();
        let bin = bin_dir().unwrap_or_else(|| unreachable!("checked by require"));
        let dir = TempDir::new("postgres");
        let user = if is_root() {
            let ids = (id_of("-u"), id_of("-g"));
            std::os::unix::fs::chown(dir.path(), Some(ids.0), Some(ids.1))
                .unwrap_or_else(|e| panic!("cannot give {} to the postgres user: {e}", dir.path().display()));
            Some(ids)
        } else {
            None
        };
        let mut pg = Postgres {
            bin,
            port: 0,
            user,
            running: false,
            dir,
        };
        let data = pg.data_dir();
        let mut initdb = pg.command("initdb");
        initdb.arg("-D").arg(&data).args([
            "-A",
            "trust",
            "-U",
            Postgres::USER,
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ]);
        pg.run(initdb);
        for attempt in 1..=PORT_ATTEMPTS {
            pg.port = free_port();
            match pg.pg_ctl_start() {
                Ok(()) => return pg,
                Err(e) if attempt < PORT_ATTEMPTS && e.contains(ADDRESS_IN_USE) => continue,
                Err(e) => panic!("{e}"),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// `postgres://palisade@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://{}@127.0.0.1:{}/postgres", Postgres::USER, self.port)
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server in immediate mode (`pg_ctl -m immediate stop`): no
    /// checkpoint, connections cut; the next start recovers from the WAL as
    /// after a crash.
    pub fn stop_immediate(&mut self) {
        self.stop("immediate");
    }

    /// Starts the server again on the same port and data, after
    /// [`Postgres::stop_immediate`]. Panics if it is running, or if another
    /// process took its port in the meantime.
    pub fn start_again(&mut self) {
        if self.running {
            panic!("Postgres on port {} is already running", self.port);
        }
        self.pg_ctl_start().unwrap_or_else(|e| panic!("{e}"));
    }

    /// A clean restart: stops the server in fast mode (a checkpoint, then
    /// exit) if it is running, and starts it again on the same port.
    pub fn restart(&mut self) {
        if self.running {
            self.stop("fast");
        }
        self.start_again();
    }

    /// Runs `sql` with `psql` as [`Postgres::USER`] (unaligned, tuples only,
    /// stopping at the first error) and returns its output without its
    /// trailing newlines; panics with psql's messages if it fails.
    pub fn psql(&self, sql: &str) -> String {
        let mut cmd = Command::new(self.bin.join("psql"));
        cmd.args([
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
            "-p",
        ])
        .arg(self.port.to_string())
        .args(["-U", Postgres::USER, "-d", "postgres", "-c", sql]);
        let out = output(&mut cmd).unwrap_or_else(|e| panic!("{e}"));
        if !out.status.success() {
            panic!("{cmd:?} failed ({}): {}", out.status, both(&out));
        }
        stdout_text(&out)
    }

    fn pg_ctl_start(&mut self) -> Result<(), String> {
        // `-o` goes through pg_ctl's shell: quote the socket directory.
        let socket_dir = self.dir.path().display().to_string();
        assert!(
            !socket_dir.contains('\''),
            "a temporary directory with a quote: {socket_dir}"
        );
        let options = format!(
            "-p {} -k '{socket_dir}' -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port
        );
        // What this start writes to the log, from here on, says why it failed.
        let from = log_len(&self.log_path());
        let mut cmd = self.command("pg_ctl");
        cmd.arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(self.log_path())
            .args(["-o", &options, "-w", "-t", &WAIT.as_secs().to_string(), "start"]);
        let out = output(&mut cmd)?;
        if out.status.success() {
            self.running = true;
            return Ok(());
        }
        Err(format!(
            "{cmd:?} failed ({}): {}\n{}",
            out.status,
            both(&out),
            self.log_from(from)
        ))
    }

    fn stop(&mut self, mode: &str) {
        let out = self.pg_ctl_stop(mode).unwrap_or_else(|e| panic!("{e}"));
        if !out.status.success() {
            panic!(
                "pg_ctl -m {mode} stop failed ({}): {}\n{}",
                out.status,
                both(&out),
                self.log()
            );
        }
        self.running = false;
    }

    fn pg_ctl_stop(&self, mode: &str) -> Result<Output, String> {
        let mut cmd = self.command("pg_ctl");
        cmd.arg("-D").arg(self.data_dir()).args([
            "-m",
            mode,
            "-w",
            "-t",
            &WAIT.as_secs().to_string(),
            "stop",
        ]);
        output(&mut cmd)
    }

    /// A command for the program `name` of Postgres's bin directory, run as
    /// the postgres user when we are root, in the server's directory (a
    /// directory it can enter).
    fn command(&self, name: &str) -> Command {
        let mut cmd = Command::new(self.bin.join(name));
        cmd.current_dir(self.dir.path());
        if let Some((uid, gid)) = self.user {
            use std::os::unix::process::CommandExt;
            // std drops root's supplementary groups before setuid.
            cmd.uid(uid).gid(gid);
        }
        cmd
    }

    fn run(&self, mut cmd: Command) {
        let out = output(&mut cmd).unwrap_or_else(|e| panic!("{e}"));
        if !out.status.success() {
            panic!("{cmd:?} failed ({}): {}", out.status, both(&out));
        }
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("log")
    }

    fn log(&self) -> String {
        self.log_from(0)
    }

    fn log_from(&self, from: u64) -> String {
        log_tail(&format!("postgres on port {}", self.port), &self.log_path(), from)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if !self.running {
            return;
        }
        // Never panic here (a panic while unwinding aborts the tests): when
        // pg_ctl cannot stop it, kill the postmaster; its children exit
        // when they see it gone.
        let stopped = self.pg_ctl_stop("immediate").is_ok_and(|o| o.status.success());
        if !stopped {
            let pid = fs::read_to_string(self.data_dir().join("postmaster.pid")).unwrap_or_default();
            if let Some(pid) = pid.lines().next().and_then(|l| l.trim().parse::<i32>().ok()) {
                // SAFETY: kill takes no pointers; the pid is the postmaster's,
                // read from its lock file in our own directory.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
    }
}

/// The newest `/usr/lib/postgresql/<version>/bin` with the programs we run.
fn bin_dir() -> Option<PathBuf> {
    let entries = fs::read_dir("/usr/lib/postgresql").ok()?;
    let mut found: Vec<(u32, PathBuf)> = entries
        .filter_map(|e| {
            let e = e.ok()?;
            let version: u32 = e.file_name().to_str()?.split('.').next()?.parse().ok()?;
            let bin = e.path().join("bin");
            let complete = ["initdb", "pg_ctl", "postgres", "psql"]
                .iter()
                .all(|p| is_executable(&bin.join(p)));
            complete.then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

fn is_root() -> bool {
    // SAFETY: geteuid takes no arguments, cannot fail and touches no memory.
    unsafe { libc::geteuid() == 0 }
}

/// The postgres user's uid (`-u`) or gid (`-g`), from `id`.
fn id_of(which: &str) -> u32 {
    let mut cmd = Command::new("id");
    cmd.args([which, "postgres"]);
    let out = output(&mut cmd).unwrap_or_else(|e| panic!("{e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    match text.trim().parse() {
        Ok(id) if out.status.success() => id,
        _ => panic!(
            "running as root, Postgres needs the postgres user, and {cmd:?} says: {}; {INSTALL_HINT}",
            both(&out)
        ),
    }
}

/// Whether an executable `program` is in one of `PATH`'s directories.
fn on_path(program: &str) -> bool {
    let Some(path) = std::env::var_os("PATH") else {
        return false;
    };
    std::env::split_paths(&path).any(|dir| is_executable(&dir.join(program)))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Runs `cmd` to completion with its output captured; the error says which
/// command could not be run.
fn output(cmd: &mut Command) -> Result<Output, String> {
    cmd.stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))
}

/// How long a log is now: what a start writes comes after.
fn log_len(path: &Path) -> u64 {
    fs::metadata(path).map_or(0, |m| m.len())
}

/// A command's standard output as text, without its trailing newlines.
fn stdout_text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout)
        .trim_end_matches('\n')
        .to_owned()
}

/// A command's standard output and error, for a message.
fn both(out: &Output) -> String {
    format!(
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout).trim_end(),
        String::from_utf8_lossy(&out.stderr).trim_end()
    )
}

/// The last [`LOG_TAIL_LINES`] lines of a log written after its first
/// `from` bytes, headed by what wrote it.
fn log_tail(what: &str, path: &Path, from: u64) -> String {
    let text = match fs::read(path) {
        Ok(bytes) => {
            let from = usize::try_from(from).unwrap_or(usize::MAX).min(bytes.len());
            String::from_utf8_lossy(&bytes[from..]).into_owned()
        }
        Err(e) => return format!("--- log of {what}: cannot read {}: {e}", path.display()),
    };
    let lines: Vec<&str> = text.lines().collect();
    let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
    format!("--- log of {what} ({}):\n{}", path.display(), tail.join("\n"))
}

/// Calls `check` every `every` until it succeeds; after `timeout`, panics
/// with its last complaint and `logs()`.
fn wait_until(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut check: impl FnMut() -> Result<(), String>,
    logs: impl Fn() -> String,
) {
    let deadline = Instant::now() + timeout;
    loop {
        let complaint = match check() {
            Ok(()) => return,
            Err(complaint) => complaint,
        };
        if Instant::now() > deadline {
            panic!(
                "timed out after {timeout:?} waiting for {what}; last: {complaint}\n{}",
                logs()
            );
        }
        thread::sleep(every);
    }
}

/// A directory of its own under the system's temporary directory, removed
/// with everything in it on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(kind: &str) -> TempDir {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let base = std::env::temp_dir();
        loop {
            let n = COUNT.fetch_add(1, Ordering::Relaxed);
            let path = base.join(format!("palisade-{kind}-{}-{n}", std::process::id()));
            // create_dir, not create_dir_all: a leftover of an earlier process
            // with the same pid is not ours; take the next name.
            match fs::create_dir(&path) {
                Ok(()) => return TempDir(path),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => panic!("cannot create {}: {e}", path.display()),
            }
        }
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_nodes_lines_parse() {
        let text = "\
07c37dfeb235213a872192d90877d0cd55635b91 127.0.0.1:30004@31004,host replica e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 0 1426238317239 4 connected
67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1 127.0.0.1:30002@31002 master - 0 1426238316232 2 connected 5461-10922
e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 127.0.0.1:30001@31001 myself,master - 0 0 1 connected 0-5460 [5461->-67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1]
6ec23923021cf3ffec47632106199cb7f496ce01 127.0.0.1:30005@31005 master,fail - 1426238316232 0 5 disconnected 10923 10925-16383
";
        let nodes = parse_cluster_nodes(text);
        let ports: Vec<u16> = nodes.iter().map(|n| n.port).collect();
        assert_eq!(ports, [30004, 30002, 30001, 30005]);
        assert!(!nodes[0].is_master() && nodes[0].slots.is_empty());
        assert!(nodes[1].is_master() && nodes[1].serves(5461) && !nodes[1].serves(5460));
        assert!(nodes[2].is_master() && nodes[2].serves(0) && !nodes[2].serves(5461));
        assert!(nodes[3].failing() && nodes[3].serves(10923) && !nodes[3].serves(10924));
    }
}
