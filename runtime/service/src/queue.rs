//! The distributed job queue on Redis (`--queue redis://…`): one stream per
//! priority with one consumer group of workers, the workers' heartbeats, and
//! cancellation flags. It works on a single Redis and on a Redis Cluster
//! (found out at connect time): every key carries the hash tag
//! `{palisade}`, so all of them live in one slot and the enqueue script,
//! which touches two keys, runs on one node; the client follows MOVED and
//! ASK and finds a failed-over master by itself.
//!
//! Redis is not the record of anything: Postgres is. A stream entry only
//! names a job; a worker takes a job by moving its row from `queued` to
//! `running` in Postgres (see `crate::distributed`), so an entry delivered
//! twice, or re-added by the reconciler after Redis lost it, runs the job
//! at most once at a time. The set `{palisade}:enqueued` holds the ids of
//! jobs that have an entry, so the reconciler can tell which queued jobs
//! Redis has lost (a master killed before its replica got the last writes,
//! an API node killed between its commit and its enqueue).
//!
//! Keys:
//! - `{palisade}:jobs:<priority>`: streams of `job <id>` entries, group
//!   `workers`, one consumer per worker (its id);
//! - `{palisade}:enqueued`: set of job ids with an entry;
//! - `{palisade}:worker:<id>`: a worker's last heartbeat (JSON), expiring
//!   after the heartbeat TTL;
//! - `{palisade}:workers`: sorted set of worker ids by last beat (ms), to
//!   list workers that stopped beating as `down` for a while;
//! - `{palisade}:cancel:<job id>`: a cancellation request for a running job.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};
use serde::{Deserialize, Serialize};

use crate::jobs::{Delivery, Priority};
use crate::storage::redact_url;

/// The consumer group of workers on every stream.
const GROUP: &str = "workers";
/// A worker listed as `down` for this long after its last beat, then dropped
/// from `GET /v1/workers`.
const FORGET_DOWN_AFTER_MS: i64 = 600_000;
/// A cancellation request outlives any job's deadline.
const CANCEL_TTL_SECS: u64 = 86_400;
/// Longest wait for one Redis reply: a call to a dead master fails after
/// this instead of hanging the caller.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(3);

/// Why the queue failed.
#[derive(Debug, thiserror::Error)]
#[error("Redis at {address}: {source}")]
pub struct QueueError {
    pub address: String,
    #[source]
    pub source: redis::RedisError,
}

/// A connection to a single Redis or to a cluster; cheap to clone (both are
/// multiplexed and reconnect by themselves).
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// What a worker says about itself in each heartbeat.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WorkerInfo {
    /// Unique per process (host, pid and a random part).
    pub id: String,
    /// The operator's name for it (`worker_name`), else the host name.
    pub name: String,
    /// `idle`, `busy`, `draining`, or (listed by the API) `down` when its
    /// heartbeat has expired.
    pub status: String,
    /// Ids of the jobs it is running.
    pub current_jobs: Vec<String>,
    /// Jobs it ended (any state) since it started.
    pub jobs_done: u64,
    /// Of those, jobs that ended `failed` or `timed_out`.
    pub jobs_failed: u64,
    /// When it started (RFC 3339).
    pub started: String,
    /// Seconds since it started.
    pub uptime_seconds: u64,
    /// Jobs it runs at once.
    pub capacity: u64,
    /// The wasmtime build and settings it compiles for (artifact key).
    pub build: String,
    /// When it last beat (milliseconds since the Unix epoch).
    pub last_beat_ms: i64,
    /// Where API nodes reach it (its deployments' requests), once it
    /// listens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Live deployments it runs, and most it takes (`max_deployments`).
    #[serde(default)]
    pub deployments: u64,
    #[serde(default)]
    pub max_deployments: u64,
}

impl WorkerInfo {
    /// The worker's metric label: its id (unique; the name may repeat).
    pub fn name_label(&self) -> String {
        self.id.chars().take(64).collect()
    }
}

/// The queue: a connection and the address it came from.
#[derive(Clone)]
pub struct Queue {
    conn: Conn,
    address: String,
    cluster: bool,
    /// The URL it was opened with, for [`Queue::dedicated`].
    url: Arc<str>,
    timeout: Duration,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("address", &self.address)
            .field("cluster", &self.cluster)
            .finish_non_exhaustive()
    }
}

fn stream(p: Priority) -> String {
    format!("{{palisade}}:jobs:{}", p.as_str())
}

fn heartbeat_key(worker: &str) -> String {
    format!("{{palisade}}:worker:{worker}")
}

fn cancel_key(job: &str) -> String {
    format!("{{palisade}}:cancel:{job}")
}

const ENQUEUED: &str = "{palisade}:enqueued";
const WORKERS: &str = "{palisade}:workers";
/// Every listed worker's last heartbeat, kept after it expires so a `down`
/// worker is shown with its name and counts.
const LAST_BEATS: &str = "{palisade}:worker-last";

/// Adds the entry and records the job as enqueued, atomically (both keys
/// are in the `{palisade}` slot).
const ENQUEUE_SCRIPT: &str = r"
redis.call('XADD', KEYS[1], '*', 'job', ARGV[1])
redis.call('SADD', KEYS[2], ARGV[1])
return 1
";

/// Takes one token from a tenant's bucket, refilled at `ARGV[1]` per second
/// up to `ARGV[2]`, on Redis's clock (API nodes' clocks may differ): 0, or
/// the milliseconds until a token is there.
const BUCKET_SCRIPT: &str = r"
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local b = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(b[1]) or burst
local at = tonumber(b[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate / 1000)
if tokens < 1 then
  return math.ceil((1 - tokens) * 1000 / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tokens - 1, 'at', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(burst * 1000 / rate) + 1000)
return 0
";

/// Moves an entry one priority up (a fresh entry at the back of the higher
/// stream) if it is still where it was: several workers may try at once.
const RAISE_SCRIPT: &str = r"
if redis.call('XDEL', KEYS[1], ARGV[1]) == 1 then
  redis.call('XADD', KEYS[2], '*', 'job', ARGV[2])
  return 1
end
return 0
";

impl Queue {
    /// Connects to the Redis at `url` (a single node, or any node of a
    /// cluster), and makes the consumer group on every stream. Gives up
    /// after `timeout` with an error naming the address.
    pub async fn connect(url: &str, timeout: Duration) -> Result<Queue, QueueError> {
        let address = redact_url(url);
        let fail = |source: redis::RedisError| QueueError {
            address: address.clone(),
            source,
        };
        let client = redis::Client::open(url).map_err(fail)?;
        let probe = async {
            let mut c = client.get_multiplexed_async_connection().await?;
            let info: String = redis::cmd("INFO").arg("cluster").query_async(&mut c).await?;
            Ok::<bool, redis::RedisError>(info.contains("cluster_enabled:1"))
        };
        let cluster = match tokio::time::timeout(timeout, probe).await {
            Ok(r) => r.map_err(fail)?,
            Err(_) => {
                return Err(fail(redis::RedisError::from((
                    redis::ErrorKind::Io,
                    "no answer",
                    format!("nothing answered within {} ms", timeout.as_millis()),
                ))))
            }
        };
        let conn = if cluster {
            let client = redis::cluster::ClusterClientBuilder::new(vec![url])
                .connection_timeout(timeout)
                .response_timeout(RESPONSE_TIMEOUT)
                .retries(6)
                .build()
                .map_err(fail)?;
            Conn::Cluster(client.get_async_connection().await.map_err(fail)?)
        } else {
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(timeout))
                .set_response_timeout(Some(RESPONSE_TIMEOUT))
                .set_number_of_retries(2)
                .set_max_delay(Duration::from_secs(1));
            Conn::Single(
                ConnectionManager::new_with_config(client, config)
                    .await
                    .map_err(fail)?,
            )
        };
        let queue = Queue {
            conn,
            address,
            cluster,
            url: Arc::from(url),
            timeout,
        };
        queue.make_groups().await?;
        Ok(queue)
    }

    /// The address (without password).
    pub fn address(&self) -> &str {
        &self.address
    }

    /// True when the queue is a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        self.cluster
    }

    fn err(&self, source: redis::RedisError) -> QueueError {
        QueueError {
            address: self.address.clone(),
            source,
        }
    }

    async fn query<T: redis::FromRedisValue>(&self, cmd: &Cmd) -> Result<T, QueueError> {
        let mut conn = self.conn.clone();
        cmd.query_async(&mut conn).await.map_err(|e| self.err(e))
    }

    /// Makes the consumer group of every stream (and the streams), if
    /// missing: after a start on an empty Redis, or after Redis lost them.
    pub async fn make_groups(&self) -> Result<(), QueueError> {
        for &p in Priority::ALL {
            let made: Result<(), QueueError> = self
                .query(
                    redis::cmd("XGROUP")
                        .arg("CREATE")
                        .arg(stream(p))
                        .arg(GROUP)
                        .arg("0")
                        .arg("MKSTREAM"),
                )
                .await;
            match made {
                Ok(()) => {}
                Err(e) if e.source.code() == Some("BUSYGROUP") => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// True when Redis answers.
    pub async fn ping(&self) -> Result<(), QueueError> {
        let _: String = self.query(&redis::cmd("PING")).await?;
        Ok(())
    }

    /// Adds an entry for `job` to its priority's stream and records it as
    /// enqueued.
    pub async fn enqueue(&self, job: &str, priority: Priority) -> Result<(), QueueError> {
        let mut conn = self.conn.clone();
        redis::Script::new(ENQUEUE_SCRIPT)
            .key(stream(priority))
            .key(ENQUEUED)
            .arg(job)
            .invoke_async::<i64>(&mut conn)
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// The next entry for `consumer`, highest priority first; `None` when
    /// every stream is empty. Recreates the groups when Redis lost them.
    pub async fn next(&self, consumer: &str) -> Result<Option<Delivery>, QueueError> {
        for &p in Priority::ALL {
            let read: Result<Value, QueueError> = self
                .query(
                    redis::cmd("XREADGROUP")
                        .arg("GROUP")
                        .arg(GROUP)
                        .arg(consumer)
                        .arg("COUNT")
                        .arg(1)
                        .arg("STREAMS")
                        .arg(stream(p))
                        .arg(">"),
                )
                .await;
            let value = match read {
                Ok(v) => v,
                Err(e) if e.source.code() == Some("NOGROUP") => {
                    self.make_groups().await?;
                    continue;
                }
                Err(e) => return Err(e),
            };
            if let Some((entry, job)) = first_entry(&value) {
                return Ok(Some(Delivery {
                    job,
                    priority: p,
                    entry,
                }));
            }
        }
        Ok(None)
    }

    /// A second connection to the same Redis, for blocking reads
    /// ([`Queue::wait_next`]): a blocked connection answers nothing else, so
    /// the heartbeats keep their own.
    pub async fn dedicated(&self) -> Result<Queue, QueueError> {
        Queue::connect(&self.url, self.timeout).await
    }

    /// Waits up to `block` for entries for `consumer` on every stream at
    /// once; what came, highest priority first (at most one per stream).
    /// Use on a [`Queue::dedicated`] connection.
    pub async fn wait_next(&self, consumer: &str, block: Duration) -> Result<Vec<Delivery>, QueueError> {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(GROUP)
            .arg(consumer)
            .arg("COUNT")
            .arg(1)
            .arg("BLOCK")
            .arg(block.as_millis() as u64)
            .arg("STREAMS");
        for &p in Priority::ALL {
            cmd.arg(stream(p));
        }
        for _ in Priority::ALL {
            cmd.arg(">");
        }
        let value: Value = match self.query(&cmd).await {
            Ok(v) => v,
            Err(e) if e.source.code() == Some("NOGROUP") => {
                self.make_groups().await?;
                return Ok(Vec::new());
            }
            Err(e) => return Err(e),
        };
        let mut out = Vec::new();
        if let Value::Array(streams) = &value {
            for s in streams {
                let Value::Array(pair) = s else { continue };
                let (Some(name), Some(Value::Array(entries))) = (pair.first().and_then(text), pair.get(1))
                else {
                    continue;
                };
                let Some(&priority) = Priority::ALL.iter().find(|&&p| stream(p) == name) else {
                    continue;
                };
                for (entry, job) in entries.iter().filter_map(entry_of) {
                    out.push(Delivery { job, priority, entry });
                }
            }
        }
        out.sort_by_key(|d| d.priority.index());
        Ok(out)
    }

    /// Acknowledges and deletes a delivered entry: its job is taken (or
    /// cannot be).
    pub async fn done(&self, d: &Delivery) -> Result<(), QueueError> {
        let mut pipe = redis::pipe();
        pipe.cmd("XACK")
            .arg(stream(d.priority))
            .arg(GROUP)
            .arg(&d.entry)
            .ignore()
            .cmd("XDEL")
            .arg(stream(d.priority))
            .arg(&d.entry)
            .ignore()
            .cmd("SREM")
            .arg(ENQUEUED)
            .arg(&d.job)
            .ignore();
        let mut conn = self.conn.clone();
        pipe.query_async::<()>(&mut conn).await.map_err(|e| self.err(e))
    }

    /// Which of `jobs` have an entry.
    pub async fn enqueued(&self, jobs: &[String]) -> Result<Vec<bool>, QueueError> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let flags: Vec<i64> = self
            .query(redis::cmd("SMISMEMBER").arg(ENQUEUED).arg(jobs))
            .await?;
        Ok(flags.into_iter().map(|f| f == 1).collect())
    }

    /// Takes a submission token from `tenant`'s bucket, shared by every API
    /// node: `None`, or how long until there is one.
    pub async fn take_token(
        &self,
        tenant: &str,
        rate: f64,
        burst: u32,
    ) -> Result<Option<Duration>, QueueError> {
        let mut conn = self.conn.clone();
        let wait: i64 = redis::Script::new(BUCKET_SCRIPT)
            .key(format!("{{palisade}}:bucket:{tenant}"))
            .arg(rate)
            .arg(burst)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.err(e))?;
        Ok((wait > 0).then(|| Duration::from_millis(wait as u64)))
    }

    /// Aging: entries not yet delivered that have waited longer than
    /// `aging` in the normal or low stream move one priority up (to the back
    /// of the higher stream, so they rise one level per `aging` waited, as
    /// in the embedded scheduler). Returns how many moved.
    pub async fn raise_aged(&self, aging: Duration) -> Result<usize, QueueError> {
        let now_ms = {
            let t: (String, String) = self.query(&redis::cmd("TIME")).await?;
            t.0.parse::<i64>().unwrap_or(0) * 1000 + t.1.parse::<i64>().unwrap_or(0) / 1000
        };
        let before = now_ms - aging.as_millis() as i64;
        let mut moved = 0;
        for pair in Priority::ALL.windows(2) {
            let (higher, lower) = (pair[0], pair[1]);
            // Entries after the group's last delivered one were never read.
            let groups: Value = self
                .query(redis::cmd("XINFO").arg("GROUPS").arg(stream(lower)))
                .await?;
            let last = match &groups {
                Value::Array(gs) => gs
                    .iter()
                    .map(map_of)
                    .find(|g| g.iter().any(|(k, v)| k == "name" && v == GROUP))
                    .and_then(|g| {
                        g.into_iter()
                            .find(|(k, _)| k == "last-delivered-id")
                            .map(|(_, v)| v)
                    }),
                _ => None,
            }
            .unwrap_or_else(|| "0-0".into());
            let old: Value = self
                .query(
                    redis::cmd("XRANGE")
                        .arg(stream(lower))
                        .arg(format!("({last}"))
                        .arg(before.max(0))
                        .arg("COUNT")
                        .arg(500),
                )
                .await?;
            let Value::Array(entries) = old else { continue };
            for (entry, job) in entries.iter().filter_map(entry_of) {
                let mut conn = self.conn.clone();
                let n: i64 = redis::Script::new(RAISE_SCRIPT)
                    .key(stream(lower))
                    .key(stream(higher))
                    .arg(&entry)
                    .arg(&job)
                    .invoke_async(&mut conn)
                    .await
                    .map_err(|e| self.err(e))?;
                moved += n as usize;
            }
        }
        Ok(moved)
    }

    /// Asks whichever worker runs `job` to stop it.
    pub async fn request_cancel(&self, job: &str) -> Result<(), QueueError> {
        self.query(
            redis::cmd("SET")
                .arg(cancel_key(job))
                .arg(1)
                .arg("EX")
                .arg(CANCEL_TTL_SECS),
        )
        .await
    }

    /// Which of `jobs` were asked to stop.
    pub async fn cancel_requested(&self, jobs: &[String]) -> Result<Vec<bool>, QueueError> {
        let mut out = Vec::with_capacity(jobs.len());
        // One EXISTS per key: keys of one slot, but MGET on a cluster wants
        // them in one slot anyway, which they are; EXISTS keeps it simple.
        for job in jobs {
            let n: i64 = self.query(redis::cmd("EXISTS").arg(cancel_key(job))).await?;
            out.push(n == 1);
        }
        Ok(out)
    }

    /// Writes a worker's heartbeat, alive for `ttl`.
    pub async fn beat(&self, info: &WorkerInfo, ttl: Duration) -> Result<(), QueueError> {
        let json = serde_json::to_string(info).unwrap_or_default();
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(heartbeat_key(&info.id))
            .arg(json)
            .arg("PX")
            .arg(ttl.as_millis() as u64)
            .ignore()
            .cmd("ZADD")
            .arg(WORKERS)
            .arg(info.last_beat_ms)
            .arg(&info.id)
            .ignore()
            .cmd("HSET")
            .arg(LAST_BEATS)
            .arg(&info.id)
            .arg(serde_json::to_string(info).unwrap_or_default())
            .ignore();
        let mut conn = self.conn.clone();
        pipe.query_async::<()>(&mut conn).await.map_err(|e| self.err(e))
    }

    /// A worker leaving for good (a drained stop): its heartbeat and its
    /// place in the list go. Its consumer stays: the other workers' reapers
    /// take over whatever entries it still holds (one read as it stopped),
    /// then drop it.
    pub async fn leave(&self, worker: &str) -> Result<(), QueueError> {
        let _: () = self.query(redis::cmd("DEL").arg(heartbeat_key(worker))).await?;
        let _: () = self.query(redis::cmd("ZREM").arg(WORKERS).arg(worker)).await?;
        let _: () = self.query(redis::cmd("HDEL").arg(LAST_BEATS).arg(worker)).await?;
        Ok(())
    }

    /// Every worker that beat in the last ten minutes, with its last
    /// heartbeat; one whose heartbeat expired is `down`.
    pub async fn workers(&self, now_ms: i64) -> Result<Vec<WorkerInfo>, QueueError> {
        let gone: Vec<String> = self
            .query(
                redis::cmd("ZRANGEBYSCORE")
                    .arg(WORKERS)
                    .arg("-inf")
                    .arg(now_ms - FORGET_DOWN_AFTER_MS),
            )
            .await?;
        for id in gone {
            let _: () = self.query(redis::cmd("ZREM").arg(WORKERS).arg(&id)).await?;
            let _: () = self.query(redis::cmd("HDEL").arg(LAST_BEATS).arg(&id)).await?;
        }
        let ids: Vec<(String, f64)> = self
            .query(redis::cmd("ZRANGE").arg(WORKERS).arg(0).arg(-1).arg("WITHSCORES"))
            .await?;
        let mut out = Vec::with_capacity(ids.len());
        for (id, last) in ids {
            let beat: Option<String> = self.query(redis::cmd("GET").arg(heartbeat_key(&id))).await?;
            let info = beat.and_then(|b| serde_json::from_str::<WorkerInfo>(&b).ok());
            let last_info = match &info {
                Some(_) => None,
                None => self
                    .query::<Option<String>>(redis::cmd("HGET").arg(LAST_BEATS).arg(&id))
                    .await?
                    .and_then(|b| serde_json::from_str::<WorkerInfo>(&b).ok()),
            };
            out.push(match (info, last_info) {
                (Some(info), _) => info,
                (None, Some(last)) => WorkerInfo {
                    status: "down".into(),
                    current_jobs: Vec::new(),
                    ..last
                },
                (None, None) => WorkerInfo {
                    id: id.clone(),
                    name: id,
                    status: "down".into(),
                    current_jobs: Vec::new(),
                    jobs_done: 0,
                    jobs_failed: 0,
                    started: String::new(),
                    uptime_seconds: 0,
                    capacity: 0,
                    build: String::new(),
                    last_beat_ms: last as i64,
                    url: None,
                    deployments: 0,
                    max_deployments: 0,
                },
            });
        }
        Ok(out)
    }

    /// The ids of workers whose heartbeat has not expired.
    pub async fn live_workers(&self, now_ms: i64) -> Result<HashSet<String>, QueueError> {
        Ok(self
            .workers(now_ms)
            .await?
            .into_iter()
            .filter(|w| w.status != "down")
            .map(|w| w.id)
            .collect())
    }

    /// Drops a dead worker's consumer from every stream's group, with the
    /// entries it held (its jobs are re-queued from Postgres).
    pub async fn forget_consumer(&self, worker: &str) -> Result<(), QueueError> {
        for &p in Priority::ALL {
            let dropped: Result<i64, QueueError> = self
                .query(
                    redis::cmd("XGROUP")
                        .arg("DELCONSUMER")
                        .arg(stream(p))
                        .arg(GROUP)
                        .arg(worker),
                )
                .await;
            match dropped {
                Ok(_) => {}
                Err(e) if e.source.code() == Some("NOGROUP") => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Takes over the entries a dead worker's consumer holds (delivered to
    /// it, never acknowledged): they become `me`'s, to be dealt with like
    /// any delivery. Without this, a job whose entry a worker read and died
    /// before claiming would have no entry left once the consumer is
    /// dropped, while still counted as enqueued.
    pub async fn take_over(&self, dead: &str, me: &str) -> Result<Vec<Delivery>, QueueError> {
        let mut out = Vec::new();
        for &p in Priority::ALL {
            let pending: Value = match self
                .query(
                    redis::cmd("XPENDING")
                        .arg(stream(p))
                        .arg(GROUP)
                        .arg("-")
                        .arg("+")
                        .arg(1000)
                        .arg(dead),
                )
                .await
            {
                Ok(v) => v,
                Err(e) if e.source.code() == Some("NOGROUP") => continue,
                Err(e) => return Err(e),
            };
            let Value::Array(rows) = pending else { continue };
            let ids: Vec<String> = rows
                .iter()
                .filter_map(|r| match r {
                    Value::Array(fields) => fields.first().and_then(text),
                    _ => None,
                })
                .collect();
            if ids.is_empty() {
                continue;
            }
            let claimed: Value = self
                .query(
                    redis::cmd("XCLAIM")
                        .arg(stream(p))
                        .arg(GROUP)
                        .arg(me)
                        .arg(0)
                        .arg(&ids),
                )
                .await?;
            let Value::Array(entries) = claimed else { continue };
            for entry in &entries {
                if let Some((entry, job)) = entry_of(entry) {
                    out.push(Delivery {
                        job,
                        priority: p,
                        entry,
                    });
                }
            }
        }
        Ok(out)
    }

    /// Takes over, for `me`, the entries any consumer (live ones and `me`
    /// included) has held unacknowledged for longer than `idle`: an entry
    /// whose `done` failed, or that a worker read as it stopped. A live
    /// worker running the entry's job loses nothing: the job is its own by
    /// its row, not by the entry.
    pub async fn take_over_stale(&self, me: &str, idle: Duration) -> Result<Vec<Delivery>, QueueError> {
        let mut out = Vec::new();
        for &p in Priority::ALL {
            let reply: Value = match self
                .query(
                    redis::cmd("XAUTOCLAIM")
                        .arg(stream(p))
                        .arg(GROUP)
                        .arg(me)
                        .arg(idle.as_millis() as u64)
                        .arg("0-0")
                        .arg("COUNT")
                        .arg(500),
                )
                .await
            {
                Ok(v) => v,
                Err(e) if e.source.code() == Some("NOGROUP") => continue,
                Err(e) => return Err(e),
            };
            // [next cursor, [[id, fields], …], [deleted ids]]
            let Value::Array(parts) = reply else { continue };
            let Some(Value::Array(entries)) = parts.get(1) else {
                continue;
            };
            for (entry, job) in entries.iter().filter_map(entry_of) {
                out.push(Delivery {
                    job,
                    priority: p,
                    entry,
                });
            }
        }
        Ok(out)
    }

    /// The consumers of the streams' group: `(worker id, entries held)`.
    pub async fn consumers(&self) -> Result<Vec<(String, i64)>, QueueError> {
        let mut out: Vec<(String, i64)> = Vec::new();
        for &p in Priority::ALL {
            let v: Value = match self
                .query(redis::cmd("XINFO").arg("CONSUMERS").arg(stream(p)).arg(GROUP))
                .await
            {
                Ok(v) => v,
                Err(e) if e.source.code() == Some("NOGROUP") => continue,
                Err(e) => return Err(e),
            };
            let Value::Array(consumers) = v else { continue };
            for c in consumers {
                let fields = map_of(&c);
                let name = fields.iter().find(|(k, _)| k == "name").map(|(_, v)| v.clone());
                let pending = fields
                    .iter()
                    .find(|(k, _)| k == "pending")
                    .and_then(|(_, v)| v.parse::<i64>().ok())
                    .unwrap_or(0);
                if let Some(name) = name {
                    match out.iter_mut().find(|(n, _)| *n == name) {
                        Some(slot) => slot.1 += pending,
                        None => out.push((name, pending)),
                    }
                }
            }
        }
        Ok(out)
    }

    /// Entries waiting in the streams (not yet delivered or not acknowledged).
    pub async fn depth(&self) -> Result<i64, QueueError> {
        let mut n = 0;
        for &p in Priority::ALL {
            let len: i64 = self.query(redis::cmd("XLEN").arg(stream(p))).await?;
            n += len;
        }
        Ok(n)
    }
}

/// The id and job of the first entry of an XREADGROUP reply.
fn first_entry(v: &Value) -> Option<(String, String)> {
    // RESP2: [[stream, [[id, [field, value, …]], …]]]; RESP3 may send a map.
    let streams = match v {
        Value::Array(a) => a.iter().filter_map(|s| match s {
            Value::Array(pair) if pair.len() == 2 => Some(&pair[1]),
            _ => None,
        }),
        Value::Nil => return None,
        _ => return None,
    };
    for entries in streams {
        let Value::Array(entries) = entries else { continue };
        if let Some(found) = entries.iter().find_map(entry_of) {
            return Some(found);
        }
    }
    None
}

/// The id and job of one stream entry, `[id, [field, value, …]]`.
fn entry_of(entry: &Value) -> Option<(String, String)> {
    let Value::Array(parts) = entry else { return None };
    let (Some(id), Some(Value::Array(fields))) = (parts.first(), parts.get(1)) else {
        return None;
    };
    let id = text(id)?;
    let mut it = fields.iter();
    while let (Some(k), Some(val)) = (it.next(), it.next()) {
        if text(k).as_deref() == Some("job") {
            return Some((id, text(val)?));
        }
    }
    None
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

/// A flat `[key, value, …]` array (or a map) as pairs of text.
fn map_of(v: &Value) -> Vec<(String, String)> {
    match v {
        Value::Array(a) => a
            .chunks(2)
            .filter_map(|kv| Some((text(&kv[0])?, text(kv.get(1)?)?)))
            .collect(),
        Value::Map(m) => m.iter().filter_map(|(k, v)| Some((text(k)?, text(v)?))).collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_xreadgroup_reply_gives_its_first_entry() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let reply = Value::Array(vec![Value::Array(vec![
            bulk("{palisade}:jobs:high"),
            Value::Array(vec![Value::Array(vec![
                bulk("1-0"),
                Value::Array(vec![bulk("job"), bulk("j-1")]),
            ])]),
        ])]);
        assert_eq!(first_entry(&reply), Some(("1-0".into(), "j-1".into())));
        assert_eq!(first_entry(&Value::Nil), None);
        assert_eq!(first_entry(&Value::Array(vec![])), None);
        // An entry without a job field names nothing.
        let odd = Value::Array(vec![Value::Array(vec![
            bulk("s"),
            Value::Array(vec![Value::Array(vec![
                bulk("2-0"),
                Value::Array(vec![bulk("other"), bulk("x")]),
            ])]),
        ])]);
        assert_eq!(first_entry(&odd), None);
    }
}
