//! A running deployment: one actor task that owns everything mutable (the
//! sequencer, the bar log, the gate and its audit log, the drift tracker,
//! the journals, the simulated venue) and one task running the strategy's
//! instance, which waits in `next_bars` for the bars the actor stores.
//!
//! The order of things, per bar: the feed's message is parsed and checked
//! (rejects counted and logged), the accepted bars are appended to the bar
//! log (synced as the spec's durability says), then handed to the strategy.
//! The strategy's decision at a timestamp comes back with its orders and the
//! paper fills at that timestamp's opens; each new order becomes an intent,
//! published (scaled by the gate's size factor) or blocked by the gate. A
//! fill reported live (by the API or the simulated venue) is matched with
//! its paper fill by the drift tracker, and the gate is evaluated at once:
//! a transition is written to the audit log, synced, before it takes effect.
//!
//! Recovery: starting over an existing folder replays every stored bar
//! through a fresh instance at backtest speed before the feed resumes after
//! the last stored bar (`since`), so no bar is missed or handled twice. Orders
//! already journaled are not published again; the books are rebuilt from the
//! intents and fills journals, and the gate from the audit log.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use palisade_backtest::Dataset;
use palisade_host_api::Bar;
use palisade_live::audit::AuditLog;
use palisade_live::barlog::BarLog;
use palisade_live::schema::{self, Message};
use palisade_live::sequencer::{Accepted, Reject, RejectKind, Sequencer};
use palisade_live::webhook::{Delivery as WebhookDelivery, Webhook, WebhookSpec};
use palisade_live::ws::{run_client, ClientOptions, FeedEvent};
use palisade_live::{
    AuditEntry, Command, DriftError, DriftKind, DriftSnapshot, DriftTracker, Gate, GateError, GateState,
    Intent, LiveFill, Side, SimVenue, Transition, VenueReport,
};
use palisade_run::session::PlacedOrder;
use palisade_run::{Failure, Policy, RunOutput};
use palisade_sandbox::{CompiledModule, Sandbox};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::feed::{ChannelFeed, Decision, Delivery};
use crate::journal::{Journal, JournalError};
use crate::metrics::LiveMetrics;
use crate::spec::DeploymentSpec;
use crate::verify::{self, OrderRecord, SignalCheck};

/// How long the feed must be quiet before a timestamp that some symbol has
/// not reported is handed over without it.
pub const FLUSH_QUIET: Duration = Duration::from_secs(2);

/// How far ahead of the clock a bar's timestamp may be (a feed sending
/// milliseconds would otherwise block every later bar as out of order).
pub const MAX_FUTURE_SECS: i64 = 86_400;

/// How often an idle deployment wakes (cooldowns, fill timeouts, a quiet
/// feed's incomplete timestamp).
pub const IDLE_WAKE: Duration = Duration::from_secs(1);

/// The actor that stops the deployment when its strategy fails.
pub const RUNNER_ACTOR: &str = "runner";

/// Where a deployment's bars come from.
pub enum FeedSource {
    /// The spec's WebSocket feed.
    WebSocket,
    /// Messages given in-process (benchmarks and tests).
    Channel(mpsc::Receiver<FeedEvent>),
}

/// Everything a deployment needs to start.
pub struct Launch {
    pub spec: DeploymentSpec,
    /// The deployment's own folder: bar log, journals, audit log.
    pub dir: PathBuf,
    pub sandbox: Arc<Sandbox>,
    pub strategy: Arc<CompiledModule>,
    pub policy: Policy,
    pub metrics: LiveMetrics,
    pub feed: FeedSource,
    /// The lease it runs under, if another process may take it over:
    /// intents are published only while it is held.
    pub lease: Option<crate::Lease>,
}

/// Why a deployment cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid deployment: {0}")]
    Spec(#[from] crate::spec::SpecError),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    BarLog(#[from] palisade_live::barlog::BarLogError),
    #[error(transparent)]
    Audit(#[from] palisade_live::AuditError),
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("the stored bars do not form a valid series: {0}")]
    Bars(#[from] palisade_backtest::DataError),
}

/// A deployment's lifecycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Lifecycle {
    /// Replaying the stored bars.
    Recovering,
    /// Handling the feed's bars as they arrive.
    Live,
    /// Stopped on request.
    Stopped,
    /// The strategy failed; `failure` says why.
    Failed,
}

impl Lifecycle {
    /// The `palisade_deployments{state}` label.
    pub fn label(self) -> &'static str {
        match self {
            Lifecycle::Recovering => "recovering",
            Lifecycle::Live => "live",
            Lifecycle::Stopped => "stopped",
            Lifecycle::Failed => "failed",
        }
    }
}

/// What a deployment reports about itself.
#[derive(Clone, Debug, Serialize)]
pub struct Status {
    pub id: String,
    pub tenant: String,
    pub state: Lifecycle,
    pub failure: Option<Failure>,
    pub gate: GateState,
    /// When the gate entered its state, unix ms.
    pub gate_since_ms: i64,
    pub size_factor: f64,
    pub drift: DriftSnapshot,
    pub feed_connected: bool,
    /// Why the feed is down (the last failed connection or lost one, e.g.
    /// an untrusted certificate); `None` while connected.
    pub feed_error: Option<String>,
    /// The last failed webhook delivery (it is being retried); `None` once
    /// one succeeds, and without a webhook.
    pub webhook_error: Option<String>,
    /// Why the deployment's stored files could not be opened when the
    /// service started ([`Handle::unstartable`]); it does not run.
    pub start_error: Option<String>,
    /// Bars stored (replayed and live).
    pub bars: u64,
    pub last_bar_ts: Option<i64>,
    /// The last timestamp the strategy has handled (equal to `last_bar_ts`
    /// when it has caught up with the feed).
    pub last_decided_ts: Option<i64>,
    /// Bars replayed from the log when the deployment started, and how long
    /// until the strategy had handled them all (ms).
    pub recovered_bars: u64,
    pub recovery_ms: Option<f64>,
    pub rejected_bars: u64,
    pub gap_bars: u64,
    /// Intents published over the deployment's life (its journal's).
    pub intents_published: u64,
    /// Orders not published (gate closed, stale on recovery) since this
    /// process started the deployment.
    pub intents_blocked: u64,
    pub paper_fills: u64,
    pub live_fills: u64,
    /// A closing gate transition could not be written to the audit log:
    /// nothing is published until a write succeeds.
    pub audit_blocked: bool,
    /// A signal check is running (`POST …/verify` is refused meanwhile).
    pub signal_check_running: bool,
    /// Orders the last signal check compared, and how many differed.
    pub signal_checked_orders: u64,
    pub signal_mismatches: u64,
}

/// Why a reported live fill was refused.
#[derive(Debug, thiserror::Error)]
pub enum FillError {
    /// The tracker's verdict (unknown intent: 404; the others: 422).
    #[error(transparent)]
    Drift(#[from] DriftError),
    #[error("the fill could not be stored: {0}")]
    Io(std::io::Error),
    #[error("the deployment has stopped")]
    Gone,
}

/// Why a gate command was refused.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Gate(#[from] GateError),
    #[error("the audit entry could not be written, so the transition did not take effect: {0}")]
    Io(std::io::Error),
    #[error("the deployment has stopped")]
    Gone,
}

enum Ask {
    Gate {
        command: Command,
        actor: String,
        reason: String,
        reply: oneshot::Sender<Result<AuditEntry, CommandError>>,
    },
    Fill {
        fill: LiveFill,
        received: Instant,
        reply: oneshot::Sender<Result<DriftSnapshot, FillError>>,
    },
    Audit {
        since: u64,
        limit: usize,
        reply: oneshot::Sender<Vec<AuditEntry>>,
    },
    Verify {
        reply: oneshot::Sender<Result<SignalCheck, String>>,
    },
    Stop,
}

impl Status {
    /// A deployment's status before anything happened: recovering, the
    /// gate open at full size, every count zero.
    fn new(spec: &DeploymentSpec) -> Status {
        Status {
            id: spec.id.clone(),
            tenant: spec.tenant.clone(),
            state: Lifecycle::Recovering,
            failure: None,
            gate: GateState::Open,
            gate_since_ms: 0,
            size_factor: 1.0,
            drift: DriftSnapshot::default(),
            feed_connected: false,
            feed_error: None,
            webhook_error: None,
            start_error: None,
            bars: 0,
            last_bar_ts: None,
            last_decided_ts: None,
            recovered_bars: 0,
            recovery_ms: None,
            rejected_bars: 0,
            gap_bars: 0,
            intents_published: 0,
            intents_blocked: 0,
            paper_fills: 0,
            live_fills: 0,
            audit_blocked: false,
            signal_check_running: false,
            signal_checked_orders: 0,
            signal_mismatches: 0,
        }
    }
}

/// A handle on a running deployment; cheap to clone.
#[derive(Clone)]
pub struct Handle {
    id: String,
    tenant: String,
    asks: mpsc::UnboundedSender<Ask>,
    status: watch::Receiver<Status>,
    intents: broadcast::Sender<Intent>,
    /// An unstartable deployment's count in `palisade_deployments`, given
    /// back when its last handle goes.
    _counted: Option<Arc<Counted>>,
}

/// One count in a gauge, taken back on drop.
struct Counted(prometheus::IntGauge);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle").field("id", &self.id).finish()
    }
}

impl Handle {
    /// A deployment whose stored files could not be opened (its restart
    /// failed): listed as failed, with `error` in its status's
    /// `start_error`, counted in `palisade_deployments{state="failed"}`,
    /// answering every command as gone. Its files are left as they are.
    pub fn unstartable(spec: &DeploymentSpec, error: String, metrics: &LiveMetrics) -> Handle {
        let gauge = metrics
            .deployments
            .with_label_values(&[Lifecycle::Failed.label()]);
        gauge.inc();
        let status = Status {
            state: Lifecycle::Failed,
            gate: GateState::Suspended { manual: true },
            start_error: Some(error),
            ..Status::new(spec)
        };
        let (_, status) = watch::channel(status);
        let (asks, _) = mpsc::unbounded_channel();
        Handle {
            id: spec.id.clone(),
            tenant: spec.tenant.clone(),
            asks,
            status,
            intents: broadcast::channel(1).0,
            _counted: Some(Arc::new(Counted(gauge))),
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    /// The deployment's latest status.
    pub fn status(&self) -> Status {
        self.status.borrow().clone()
    }

    /// Waits until the status satisfies `pred` (or the deployment's actor
    /// has ended), returning the status.
    pub async fn wait_for(&self, pred: impl Fn(&Status) -> bool) -> Status {
        let mut rx = self.status.clone();
        let result = rx.wait_for(|s| pred(s)).await.map(|s| s.clone());
        result.unwrap_or_else(|_| self.status())
    }

    /// The status as it changes; `changed()` fails once the deployment's
    /// actor has ended.
    pub fn subscribe(&self) -> watch::Receiver<Status> {
        self.status.clone()
    }

    /// Published intents, from now on.
    pub fn intents(&self) -> broadcast::Receiver<Intent> {
        self.intents.subscribe()
    }

    /// Applies an operator's gate command; the audit entry is written
    /// before the transition takes effect.
    pub async fn gate(
        &self,
        command: Command,
        actor: &str,
        reason: &str,
    ) -> Result<AuditEntry, CommandError> {
        let (reply, rx) = oneshot::channel();
        let ask = Ask::Gate {
            command,
            actor: actor.to_owned(),
            reason: reason.to_owned(),
            reply,
        };
        self.asks.send(ask).map_err(|_| CommandError::Gone)?;
        rx.await.map_err(|_| CommandError::Gone)?
    }

    /// Reports a live fill of one of this deployment's intents; answered
    /// once it is stored and the gate has been evaluated.
    pub async fn fill(&self, fill: LiveFill) -> Result<DriftSnapshot, FillError> {
        let (reply, rx) = oneshot::channel();
        let ask = Ask::Fill {
            fill,
            received: Instant::now(),
            reply,
        };
        self.asks.send(ask).map_err(|_| FillError::Gone)?;
        rx.await.map_err(|_| FillError::Gone)?
    }

    /// Up to `limit` audit entries numbered after `since`.
    pub async fn audit(&self, since: u64, limit: usize) -> Vec<AuditEntry> {
        let (reply, rx) = oneshot::channel();
        if self.asks.send(Ask::Audit { since, limit, reply }).is_err() {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }

    /// Runs the signal check now: replays the stored bars offline through
    /// the same module and compares its orders with the live ones.
    pub async fn verify(&self) -> Result<SignalCheck, String> {
        let (reply, rx) = oneshot::channel();
        let gone = || "the deployment has stopped".to_owned();
        self.asks.send(Ask::Verify { reply }).map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }

    /// Stops the deployment: the feed is closed, the strategy gets its
    /// finish phase; returns when it has stopped.
    pub async fn stop(&self) {
        let _ = self.asks.send(Ask::Stop);
        self.wait_for(|s| matches!(s.state, Lifecycle::Stopped | Lifecycle::Failed))
            .await;
        self.asks.closed().await;
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn io_at(path: &Path) -> impl FnOnce(std::io::Error) -> StartError + '_ {
    move |source| StartError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Starts (or recovers) a deployment on the current tokio runtime.
pub fn start(launch: Launch) -> Result<Handle, StartError> {
    let Launch {
        spec,
        dir,
        sandbox,
        strategy,
        policy,
        metrics,
        feed,
        lease,
    } = launch;
    spec.validate()?;
    std::fs::create_dir_all(&dir).map_err(io_at(&dir))?;
    let spec_path = dir.join("spec.json");
    let spec_json = serde_json::to_vec_pretty(&spec).expect("a spec serializes");
    std::fs::write(&spec_path, spec_json).map_err(io_at(&spec_path))?;

    let (barlog, stored) = BarLog::open(&dir.join("bars.log"), &spec.symbols, spec.durability)?;
    let audit = AuditLog::open(&dir.join("audit.jsonl"))?;
    let (intents_journal, old_intents) = Journal::<Intent>::open(&dir.join("intents.jsonl"), false)?;
    let (fills_journal, old_fills) = Journal::<LiveFill>::open(&dir.join("fills.jsonl"), true)?;
    let (orders_journal, old_orders) = Journal::<OrderRecord>::open(&dir.join("orders.jsonl"), false)?;

    let mut data = Dataset::empty(spec.symbols.clone())?;
    data.push(&stored)?;
    let replay_until = stored.last().map(|b| b.ts);
    let recovered_bars = stored.len() as u64;
    drop(stored);

    let now = now_ms();
    let gate = match audit.last() {
        Some(last) => Gate::restore(spec.gate.clone(), last.to, last.at_ms),
        None => Gate::new(spec.gate.clone(), now),
    };
    let restarted_at = last_restart(&audit);
    let mut tracker = DriftTracker::new(spec.drift.clone(), spec.backtest.initial_cash);
    for intent in old_intents.iter().filter(|i| i.published_ms >= restarted_at) {
        let _ = tracker.on_intent(intent);
    }
    for fill in &old_fills {
        let _ = tracker.on_live_fill(fill);
    }
    // A gate restored while recovering holds its step again from the start
    // (fills counted before the crash do not promote it twice).
    if matches!(gate.state(), GateState::Recovering { .. }) {
        tracker.restart();
    }

    let id = spec.id.clone();
    let tenant = spec.tenant.clone();
    metrics.add(&id, spec.interval_secs);
    metrics.gate(&id, gate.state());
    let status = Status {
        gate: gate.state(),
        gate_since_ms: gate.since_ms(),
        size_factor: gate.size_factor(),
        drift: tracker.snapshot(),
        bars: recovered_bars,
        last_bar_ts: replay_until,
        recovered_bars,
        live_fills: old_fills.len() as u64,
        // Published over the deployment's life, as its journal holds them.
        intents_published: old_intents.len() as u64,
        ..Status::new(&spec)
    };
    metrics
        .deployments
        .with_label_values(&[Lifecycle::Recovering.label()])
        .inc();
    let (status_tx, status_rx) = watch::channel(status);
    // Owned by the actor alone: the status's watch closes when it ends.
    let status_tx = Arc::new(status_tx);
    let (asks_tx, asks_rx) = mpsc::unbounded_channel();
    let (intents_tx, _) = broadcast::channel(1024);
    let (bars_tx, bars_rx) = mpsc::unbounded_channel();
    let (decisions_tx, decisions_rx) = mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = watch::channel(false);
    let (checked_tx, checked_rx) = mpsc::unbounded_channel();

    let last_ts = Arc::new(AtomicI64::new(replay_until.unwrap_or(i64::MIN)));
    let feed_rx = match feed {
        FeedSource::Channel(rx) => rx,
        FeedSource::WebSocket => spawn_client(&spec, last_ts.clone(), stop_rx),
    };

    let run = spec.run_config();
    let stopping = Arc::new(AtomicBool::new(false));
    let channel_feed = ChannelFeed {
        stopping: stopping.clone(),
        bars: bars_rx,
        decisions: decisions_tx,
        latency: metrics.feed_to_strategy.clone(),
    };
    let strategy_task = {
        let (sandbox, strategy, policy) = (sandbox.clone(), strategy.clone(), policy.clone());
        let data = Arc::new(data);
        tokio::spawn(async move {
            sandbox
                .live(&strategy, data, &policy, &run, Box::new(channel_feed))
                .await
        })
    };

    let last_order = old_orders.last().map_or(0, |o| o.id);
    let webhook = match &spec.webhook {
        Some(hook) => Some(start_webhook(hook.clone(), &spec.id, Arc::downgrade(&status_tx))?),
        None => None,
    };
    let actor = Actor {
        webhook,
        lease,
        sequencer: Sequencer::new(spec.symbols.clone(), spec.interval_secs, replay_until),
        venue: spec.venue.clone().map(SimVenue::new),
        verifier: verify::Verifier {
            sandbox,
            strategy,
            policy,
            bars_path: dir.join("bars.log"),
        },
        spec,
        metrics,
        barlog,
        audit,
        gate,
        tracker,
        intents_journal,
        fills_journal,
        orders_journal,
        orders: old_orders,
        last_order,
        replay_until,
        venue_bars: VecDeque::new(),
        bars_tx: Some(bars_tx),
        intents_tx: intents_tx.clone(),
        status: status_tx,
        started: Instant::now(),
        last_ts,
        stop: stop_tx,
        decided_ts: None,
        last_message: Instant::now(),
        audit_blocked: false,
        stale: 0,
        replay_mismatches: 0,
        stopping: stopping.clone(),
        bars_since_check: 0,
        checked: checked_tx,
        ended: false,
        reject_log: HashMap::new(),
    };
    tokio::spawn(actor.run(asks_rx, feed_rx, decisions_rx, strategy_task, checked_rx));
    Ok(Handle {
        id,
        tenant,
        asks: asks_tx,
        status: status_rx,
        intents: intents_tx,
        _counted: None,
    })
}

/// Starts the webhook's delivery task, logging its failed attempts; the
/// status's `webhook_error` holds the last one until a delivery succeeds
/// (while the deployment's actor lives: the task holds no strong reference).
fn start_webhook(
    spec: WebhookSpec,
    id: &str,
    status: std::sync::Weak<watch::Sender<Status>>,
) -> Result<Webhook, StartError> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let hook = Webhook::start(spec, tx).map_err(|e| {
        StartError::Spec(crate::spec::SpecError {
            key: "webhook".to_owned(),
            problem: e,
        })
    })?;
    let id = id.to_owned();
    tokio::spawn(async move {
        while let Some(d) = rx.recv().await {
            match d {
                WebhookDelivery::Failed { intent_id, error } => {
                    tracing::warn!(deployment = %id, intent = %intent_id, %error, "webhook delivery failed; retrying");
                    let error = format!("intent {intent_id}: {error}");
                    if let Some(status) = status.upgrade() {
                        status.send_modify(|s| s.webhook_error = Some(error));
                    }
                }
                WebhookDelivery::Revoked { intent_id } => {
                    tracing::warn!(deployment = %id, intent = %intent_id, "webhook delivery revoked: the gate stopped publishing first")
                }
                WebhookDelivery::Delivered { .. } => {
                    if let Some(status) = status.upgrade().filter(|s| s.borrow().webhook_error.is_some()) {
                        status.send_modify(|s| s.webhook_error = None);
                    }
                }
            }
        }
    });
    Ok(hook)
}

/// When the gate last left a suspension to publish again (its drift
/// restarted then): older intents do not count after a recovery.
fn last_restart(audit: &AuditLog) -> i64 {
    audit
        .entries(0, usize::MAX)
        .iter()
        .rev()
        .find(|e| {
            matches!(e.from, GateState::Suspended { .. })
                && matches!(e.to, GateState::Open | GateState::Recovering { .. })
        })
        .map_or(i64::MIN, |e| e.at_ms)
}

/// Starts the WebSocket client, resuming after the last stored bar.
fn spawn_client(
    spec: &DeploymentSpec,
    last_ts: Arc<AtomicI64>,
    stop: watch::Receiver<bool>,
) -> mpsc::Receiver<FeedEvent> {
    let (tx, rx) = mpsc::channel(4096);
    let options = ClientOptions::new(spec.feed.url.clone(), spec.feed.format);
    let id = spec.id.clone();
    tokio::spawn(async move {
        let since = move || Some(last_ts.load(Ordering::Relaxed)).filter(|&t| t != i64::MIN);
        if let Err(e) = run_client(options, since, tx, stop).await {
            tracing::error!(deployment = %id, error = %e, "the feed client stopped");
        }
    });
    rx
}

struct Actor {
    spec: DeploymentSpec,
    metrics: LiveMetrics,
    sequencer: Sequencer,
    barlog: BarLog,
    audit: AuditLog,
    gate: Gate,
    tracker: DriftTracker,
    venue: Option<SimVenue>,
    webhook: Option<Webhook>,
    lease: Option<crate::Lease>,
    verifier: verify::Verifier,
    intents_journal: Journal<Intent>,
    fills_journal: Journal<LiveFill>,
    orders_journal: Journal<OrderRecord>,
    /// Every order decided live (the signal check compares them).
    orders: Vec<OrderRecord>,
    /// The last order journaled: orders up to it are not published again.
    last_order: u64,
    /// The last stored bar's timestamp when the deployment started.
    replay_until: Option<i64>,
    /// Bars the venue has not seen yet: it sees a timestamp's bars when the
    /// strategy has decided at it, so intents decided at the previous
    /// timestamp reach the venue first, as orders reach the paper broker.
    venue_bars: VecDeque<Vec<Bar>>,
    bars_tx: Option<mpsc::UnboundedSender<Delivery>>,
    intents_tx: broadcast::Sender<Intent>,
    status: Arc<watch::Sender<Status>>,
    started: Instant,
    last_ts: Arc<AtomicI64>,
    stop: watch::Sender<bool>,
    /// The last timestamp the strategy decided at.
    decided_ts: Option<i64>,
    /// When the feed last sent anything.
    last_message: Instant,
    /// Orders of a recovery's replay not published because they were stale.
    stale: u64,
    /// Orders a recovery's replay decided differently from the journal.
    replay_mismatches: u64,
    /// Set when stopping: the strategy's feed ends at once.
    stopping: Arc<AtomicBool>,
    /// A closing transition could not be audited: nothing is published
    /// until an audit write succeeds.
    audit_blocked: bool,
    bars_since_check: u64,
    checked: mpsc::UnboundedSender<Checked>,
    ended: bool,
    /// Bounds the log lines of rejected bars, per kind of rejection (every
    /// one is still counted).
    reject_log: HashMap<&'static str, LogBudget>,
}

/// Rejected bars of one kind logged one by one, at most
/// [`REJECT_LOG_LINES`] every [`REJECT_LOG_WINDOW`]; past that they are
/// counted, and the count is logged once the window is over (with the next
/// rejection, or by the actor's timer): a feed sending junk as fast as it
/// can cannot fill the disk with the service's log, nor hide the first
/// rejection of another kind.
#[derive(Debug)]
struct LogBudget {
    window_start: Instant,
    logged: u32,
    suppressed: u64,
}

/// Rejection lines logged per window, at most.
pub const REJECT_LOG_LINES: u32 = 20;
/// The window over which [`REJECT_LOG_LINES`] apply.
pub const REJECT_LOG_WINDOW: Duration = Duration::from_secs(10);

fn log_unlogged(id: &str, reason: &str, unlogged: u64) {
    tracing::warn!(deployment = %id, reason, unlogged, "bars rejected and counted but not logged one by one (more than {REJECT_LOG_LINES} in {REJECT_LOG_WINDOW:?})");
}

impl LogBudget {
    fn new(now: Instant) -> LogBudget {
        LogBudget {
            window_start: now,
            logged: 0,
            suppressed: 0,
        }
    }

    /// Whether one more line may be logged at `now`; when a window ends,
    /// first returns how many were not logged in it.
    fn take(&mut self, now: Instant) -> (bool, u64) {
        let ended = self.flush(now);
        if self.logged < REJECT_LOG_LINES {
            self.logged += 1;
            (true, ended)
        } else {
            self.suppressed += 1;
            (false, ended)
        }
    }

    /// Once the window is over at `now`: starts the next, returning how
    /// many were not logged in the one that ended.
    fn flush(&mut self, now: Instant) -> u64 {
        if now.duration_since(self.window_start) < REJECT_LOG_WINDOW {
            return 0;
        }
        self.window_start = now;
        self.logged = 0;
        std::mem::take(&mut self.suppressed)
    }
}

/// A finished signal check, back to the actor.
type Checked = (
    Result<SignalCheck, String>,
    Option<oneshot::Sender<Result<SignalCheck, String>>>,
);

impl Actor {
    async fn run(
        mut self,
        mut asks: mpsc::UnboundedReceiver<Ask>,
        mut feed: mpsc::Receiver<FeedEvent>,
        mut decisions: mpsc::UnboundedReceiver<Decision>,
        mut strategy: tokio::task::JoinHandle<RunOutput>,
        mut checked_rx: mpsc::UnboundedReceiver<Checked>,
    ) {
        if self.replay_until.is_none() {
            self.went_live();
        }
        let mut feed_open = true;
        loop {
            let wake = self.next_wake();
            tokio::select! {
                biased;
                // Requests first: a stop, a gate command or an emergency
                // stop is not held up by a replay's stream of decisions.
                ask = asks.recv() => match ask {
                    Some(Ask::Stop) | None => {
                        self.begin_stop();
                        if self.ended {
                            // A failed deployment's strategy has already ended.
                            break;
                        }
                    }
                    Some(ask) => self.on_ask(ask),
                },
                Some(decision) = decisions.recv() => self.on_decision(decision),
                Some((result, reply)) = checked_rx.recv() => self.on_checked(result, reply),
                event = feed.recv(), if feed_open && !self.ended => match event {
                    Some(event) => self.on_feed(event),
                    None => feed_open = false,
                },
                out = &mut strategy, if !self.ended => {
                    // Decisions sent before the strategy ended come first.
                    while let Ok(decision) = decisions.try_recv() {
                        self.on_decision(decision);
                    }
                    let stopping = self.bars_tx.is_none();
                    self.on_ended(out, stopping);
                    if stopping {
                        break;
                    }
                }
                () = tokio::time::sleep_until(wake) => self.on_timer(),
            }
        }
        self.metrics.remove(&self.spec.id);
        let last = self.status.borrow().state;
        self.metrics.deployments.with_label_values(&[last.label()]).dec();
        // Dropping `asks` ends `Handle::stop`'s wait.
        drop(asks);
    }

    /// Sleeps until the venue's next report, or [`IDLE_WAKE`].
    fn next_wake(&self) -> tokio::time::Instant {
        let second = tokio::time::Instant::now() + IDLE_WAKE;
        let due = self.venue.as_ref().and_then(SimVenue::next_due).map(|at| {
            let wait = u64::try_from(at - now_ms()).unwrap_or(0);
            tokio::time::Instant::now() + Duration::from_millis(wait)
        });
        due.map_or(second, |d| d.min(second))
    }

    fn update(&self, edit: impl FnOnce(&mut Status)) {
        self.status.send_modify(edit);
    }

    fn set_lifecycle(&self, to: Lifecycle) {
        let from = self.status.borrow().state;
        if from == to {
            return;
        }
        self.metrics.deployments.with_label_values(&[from.label()]).dec();
        self.metrics.deployments.with_label_values(&[to.label()]).inc();
        self.update(|s| s.state = to);
    }

    /// Compares an order the recovery's replay decided with the one
    /// journaled under its id.
    fn recheck(&mut self, order: &PlacedOrder) {
        let replayed = OrderRecord::new(order, false);
        let index = usize::try_from(order.id).ok().and_then(|i| i.checked_sub(1));
        let difference = match index.and_then(|i| self.orders.get(i)) {
            Some(live) if live.id == order.id => live.difference(&replayed),
            _ => Some(format!(
                "order {}: decided by the replay, not journaled",
                order.id
            )),
        };
        if let Some(d) = difference {
            if self.replay_mismatches == 0 {
                tracing::error!(deployment = %self.spec.id, difference = %d, "signal drift: the recovery's replay decided differently from the journal");
            }
            self.replay_mismatches += 1;
        }
    }

    fn went_live(&mut self) {
        let ms = self.started.elapsed().as_secs_f64() * 1e3;
        // Recovery time first: a watcher that sees `live` sees it too.
        self.update(|s| s.recovery_ms = Some(ms));
        self.set_lifecycle(Lifecycle::Live);
        tracing::info!(deployment = %self.spec.id, bars = self.status.borrow().recovered_bars, ms, "deployment live");
        if self.stale > 0 {
            tracing::warn!(deployment = %self.spec.id, orders = self.stale, "orders decided on stored bars the strategy had not handled before the crash were recorded, not published (stale)");
        }
        if self.replay_mismatches > 0 {
            // Another build, or a live path that diverged before the crash:
            // signal drift, as a signal check would find.
            let n = self.replay_mismatches;
            self.tracker.set_signal_mismatches(n);
            self.update(|s| s.signal_mismatches = n);
            self.evaluate(None);
        }
    }

    fn on_feed(&mut self, event: FeedEvent) {
        self.last_message = Instant::now();
        let id = self.spec.id.clone();
        match event {
            FeedEvent::Connected { url } => {
                tracing::info!(deployment = %id, %url, "feed connected");
                self.sequencer.reset_seq();
                self.metrics.feed_up.with_label_values(&[&id]).set(1);
                self.update(|s| {
                    s.feed_connected = true;
                    s.feed_error = None;
                });
            }
            FeedEvent::Disconnected(reason) => {
                tracing::warn!(deployment = %id, %reason, "feed down");
                self.metrics.feed_up.with_label_values(&[&id]).set(0);
                self.update(|s| {
                    s.feed_connected = false;
                    s.feed_error = Some(reason);
                });
            }
            FeedEvent::Message { text, received } => match schema::parse(self.spec.feed.format, &text) {
                Ok(Message::Bar(bar)) if bar.ts > now_ms() / 1000 + MAX_FUTURE_SECS => {
                    let message = format!(
                        "{}: timestamp {} is more than a day in the future (unix seconds expected)",
                        bar.symbol, bar.ts
                    );
                    self.reject(
                        &Reject {
                            kind: RejectKind::Invalid,
                            message,
                        },
                        &text,
                    );
                }
                Ok(Message::Bar(bar)) => {
                    let accepted = self.sequencer.accept(bar);
                    self.on_accepted(accepted, received);
                }
                Ok(Message::Heartbeat { .. } | Message::Ignored(_)) => {}
                Err(malformed) => self.reject(&Reject::malformed(&malformed), &text),
            },
        }
    }

    fn reject(&mut self, reject: &Reject, text: &str) {
        let id = &self.spec.id;
        let reason = reject.kind.as_str();
        self.metrics.feed_rejected.with_label_values(&[id, reason]).inc();
        let now = Instant::now();
        let budget = self
            .reject_log
            .entry(reason)
            .or_insert_with(|| LogBudget::new(now));
        let (log, unlogged) = budget.take(now);
        if unlogged > 0 {
            log_unlogged(id, reason, unlogged);
        }
        if log {
            let shown: String = text.chars().take(200).collect();
            tracing::warn!(deployment = %id, reason, problem = %reject.message, message = %shown, "bar rejected");
        }
        self.update(|s| s.rejected_bars += 1);
    }

    fn on_accepted(&mut self, accepted: Accepted, received: Instant) {
        if let Some(reject) = &accepted.rejected {
            if reject.kind != RejectKind::Malformed || accepted.ready.is_empty() {
                self.reject(reject, "");
            }
        }
        let gap = accepted.gap_bars() + accepted.missed_messages;
        if gap > 0 {
            let id = &self.spec.id;
            self.metrics.feed_gaps.with_label_values(&[id]).inc_by(gap);
            tracing::warn!(deployment = %id, missing = gap, gap = ?accepted.gap, "feed gap");
            self.update(|s| s.gap_bars += gap);
        }
        if !accepted.ready.is_empty() {
            self.deliver(accepted.ready, received);
        }
    }

    /// Stores `stamps` (one write, synced as the spec says), then hands
    /// them to the strategy.
    fn deliver(&mut self, stamps: Vec<Vec<Bar>>, received: Instant) {
        let all: Vec<Bar> = stamps.iter().flatten().copied().collect();
        if let Err(e) = self.barlog.append(&all) {
            // Not stored, so not handed over: the strategy never sees a bar
            // a replay would not.
            tracing::error!(deployment = %self.spec.id, error = %e, "cannot store bars; dropping them");
            self.metrics
                .feed_rejected
                .with_label_values(&[&self.spec.id, "invalid"])
                .inc();
            return;
        }
        let last = all.last().map(|b| b.ts);
        if let Some(ts) = last {
            self.last_ts.store(ts, Ordering::Relaxed);
        }
        let id = &self.spec.id;
        self.metrics
            .feed_bars
            .with_label_values(&[id])
            .inc_by(all.len() as u64);
        let now = now_ms();
        self.metrics
            .feed_last_bar
            .with_label_values(&[id])
            .set(now as f64 / 1e3);
        if let (Some(ts), Some(interval)) = (last, self.spec.interval_secs) {
            let lag = (now as f64 / 1e3 - (ts + interval) as f64).max(0.0);
            self.metrics.feed_lag.with_label_values(&[id]).set(lag);
        }
        self.update(|s| {
            s.bars += all.len() as u64;
            s.last_bar_ts = last;
        });
        self.bars_since_check += stamps.len() as u64;
        for stamp in stamps {
            if self.venue.is_some() {
                self.venue_bars.push_back(stamp.clone());
            }
            if let Some(tx) = &self.bars_tx {
                let _ = tx.send((stamp, Some(received)));
            }
        }
    }

    fn on_decision(&mut self, decision: Decision) {
        let arrived = Instant::now();
        let replay_until = self.replay_until.unwrap_or(i64::MIN);
        for line in &decision.logs {
            // The strategy's log lines go to this process's log (a
            // replay's again, marked as such).
            let replay = decision.ts.is_some_and(|t| t < replay_until);
            tracing::info!(deployment = %self.spec.id, level = line.level, ts = line.ts, replay, "strategy: {}", line.message);
        }
        let Some(ts) = decision.ts else {
            return;
        };
        self.decided_ts = Some(ts);

        // Replaying stored bars: the books are rebuilt, nothing is decided
        // about the gate until the deployment is live again.
        let replaying = self.replay_until.is_some_and(|r| ts < r);
        self.venue_sees(ts);
        if !replaying {
            for &(symbol, close) in &decision.closes {
                let symbol = self.spec.symbols[symbol as usize].clone();
                self.tracker.mark(&symbol, close);
            }
        }
        self.paper_fills(&decision);
        for order in &decision.orders {
            if order.id <= self.last_order {
                // A recovery's replay is an offline replay: the orders it
                // decides again must be the journaled ones, bit for bit.
                self.recheck(order);
            }
            if order.id > self.last_order {
                // Decided at an older stored bar the crash kept the
                // strategy from handling: the market has moved on, so it is
                // recorded, not sent out at today's prices.
                self.decided(order, replaying);
            }
        }

        if self.replay_until == Some(ts) {
            self.went_live();
        }
        if self.spec.verify_every > 0 && self.bars_since_check >= self.spec.verify_every && !self.checking() {
            self.bars_since_check = 0;
            self.spawn_check(None);
        }
        // A paper fill can complete a match as well as a live fill.
        if !replaying {
            self.evaluate(Some(arrived));
            self.update(|s| s.last_decided_ts = Some(ts));
        }
    }

    /// The venue sees the bars up to `ts` (see `venue_bars`), and the
    /// tracker their closes.
    fn venue_sees(&mut self, ts: i64) {
        let Some(venue) = &mut self.venue else {
            return;
        };
        let mut reports = Vec::new();
        while self.venue_bars.front().is_some_and(|s| s[0].ts <= ts) {
            let stamp = self.venue_bars.pop_front().expect("checked");
            let now = now_ms();
            for bar in &stamp {
                let symbol = &self.spec.symbols[bar.symbol as usize];
                reports.extend(venue.on_bar(symbol, bar, now));
            }
        }
        for report in reports {
            self.on_report(report);
        }
    }

    fn paper_fills(&mut self, decision: &Decision) {
        let id = self.spec.id.clone();
        for fill in &decision.fills {
            let intent_id = Intent::id_for(&id, fill.order_id as u64);
            self.metrics.fills.with_label_values(&[&id, "paper"]).inc();
            self.update(|s| s.paper_fills += 1);
            match self.tracker.on_paper_fill(&intent_id, fill.qty.abs(), fill.price) {
                Ok(()) | Err(DriftError::UnknownIntent { .. }) => {}
                Err(e) => tracing::warn!(deployment = %id, error = %e, "paper fill not tracked"),
            }
        }
    }

    /// A new order: an intent, published or blocked by the gate, journaled.
    fn decided(&mut self, order: &PlacedOrder, stale: bool) {
        let id = self.spec.id.clone();
        let factor = self.gate.size_factor();
        let intended = order.qty.abs();
        let intent = Intent {
            id: Intent::id_for(&id, order.id),
            deployment: id.clone(),
            order_id: order.id,
            decided_ts: order.ts,
            symbol: self.spec.symbols[order.symbol as usize].clone(),
            side: Side::of_qty(order.qty),
            qty: intended * factor,
            intended_qty: intended,
            kind: order.kind.name(),
            price: order.kind.price(),
            published_ms: now_ms(),
        };
        let leased = self.lease.as_ref().is_none_or(crate::Lease::held);
        if !leased {
            tracing::warn!(deployment = %id, order = order.id, "the lease has expired here: the intent is not published");
        }
        let publish = !stale && leased && self.gate.publishes() && !self.audit_blocked && intent.qty > 0.0;
        if publish {
            self.publish(&intent);
        } else {
            self.stale += u64::from(stale);
            self.metrics.intents.with_label_values(&[&id, "blocked"]).inc();
            self.update(|s| s.intents_blocked += 1);
        }
        let record = OrderRecord::new(order, publish);
        if let Err(e) = self.orders_journal.append(&record) {
            tracing::error!(deployment = %id, error = %e, "cannot journal an order");
        }
        self.orders.push(record);
        self.last_order = order.id;
    }

    fn publish(&mut self, intent: &Intent) {
        let id = self.spec.id.clone();
        if let Err(e) = self.tracker.on_intent(intent) {
            tracing::warn!(deployment = %id, error = %e, "intent not tracked");
        }
        if let Err(e) = self.intents_journal.append(intent) {
            tracing::error!(deployment = %id, error = %e, "cannot journal an intent");
        }
        let _ = self.intents_tx.send(intent.clone());
        if let Some(hook) = &self.webhook {
            if !hook.send(intent) {
                tracing::error!(deployment = %id, intent = %intent.id, "the webhook's queue is full; intent not delivered (it is in the journal)");
            }
        }
        if let Some(venue) = &mut self.venue {
            if let Err(e) = venue.submit(intent, now_ms()) {
                tracing::warn!(deployment = %id, error = %e, "the simulated venue refused an intent");
            }
        }
        self.metrics.intents.with_label_values(&[&id, "published"]).inc();
        self.update(|s| s.intents_published += 1);
    }

    /// Intents queued for the webhook are not delivered any more.
    fn revoke(&self) {
        if let Some(hook) = &self.webhook {
            hook.revoke();
        }
    }

    fn on_report(&mut self, report: VenueReport) {
        match report {
            VenueReport::Fill(fill) => {
                if let Err(e) = self.live_fill(fill, Instant::now()) {
                    tracing::warn!(deployment = %self.spec.id, error = %e, "venue fill refused");
                }
            }
            VenueReport::Reject { intent_id, .. } | VenueReport::Unfilled { intent_id, .. } => {
                let _ = self.tracker.on_done(&intent_id);
            }
        }
    }

    /// A live fill: matched, stored, then the gate evaluated at once.
    fn live_fill(&mut self, fill: LiveFill, received: Instant) -> Result<DriftSnapshot, FillError> {
        fill.validate_reported().map_err(|source| DriftError::Invalid {
            what: "live fill",
            source,
        })?;
        self.tracker.on_live_fill(&fill)?;
        self.fills_journal.append(&fill).map_err(FillError::Io)?;
        let id = &self.spec.id;
        self.metrics.fills.with_label_values(&[id, "live"]).inc();
        self.update(|s| s.live_fills += 1);
        self.evaluate(Some(received));
        Ok(self.status.borrow().drift.clone())
    }

    /// Evaluates the gate on the current drift; `trigger` is when what
    /// prompted it arrived (for the gate response time).
    fn evaluate(&mut self, trigger: Option<Instant>) {
        let snap = self.tracker.snapshot();
        self.metrics.drift(&self.spec.id, &snap);
        self.update(|s| s.drift = snap.clone());
        if let Some(mut t) = self.gate.evaluate(&snap, now_ms()) {
            // Signal drift means the live path diverged from the module:
            // no cooldown brings it back, an operator does.
            if t.to == (GateState::Suspended { manual: false }) && snap.crossed().contains(&DriftKind::Signal)
            {
                t.to = GateState::Suspended { manual: true };
                t.reason
                    .push_str("; held until an operator resumes it (signal drift)");
            }
            if let Err(e) = self.transition(&t, trigger) {
                tracing::error!(deployment = %self.spec.id, error = %e, "gate transition not taken");
            }
        }
    }

    /// Writes `t` to the audit log (synced), then makes it take effect.
    fn transition(&mut self, t: &Transition, trigger: Option<Instant>) -> Result<AuditEntry, CommandError> {
        let entry = match self.audit.record(&self.spec.id, t) {
            Ok(entry) => entry,
            Err(e) => {
                // Fail closed: a stop that cannot be audited still stops
                // publishing (it is retried at the next evaluation); an
                // opening one does not happen.
                let closing = matches!(t.to, GateState::Suspended { .. } | GateState::Stopped);
                if closing && !self.audit_blocked {
                    self.audit_blocked = true;
                    self.revoke();
                    self.update(|s| s.audit_blocked = true);
                }
                return Err(CommandError::Io(e));
            }
        };
        if self.audit_blocked {
            self.audit_blocked = false;
            self.update(|s| s.audit_blocked = false);
        }
        let was_publishing = self.gate.publishes();
        self.gate.apply(t)?;
        if t.restarts_drift() {
            self.tracker.restart();
        }
        let id = &self.spec.id;
        if was_publishing && !self.gate.publishes() {
            self.revoke();
            if let Some(at) = trigger {
                self.metrics.gate_response.observe(at.elapsed().as_secs_f64());
            }
        }
        self.metrics.gate(id, t.to);
        self.metrics
            .gate_transitions
            .with_label_values(&[id, t.from.name(), t.to.name()])
            .inc();
        tracing::info!(deployment = %id, from = %t.from, to = %t.to, reason = %t.reason, actor = %t.actor, "gate");
        let (state, since, factor) = (self.gate.state(), self.gate.since_ms(), self.gate.size_factor());
        self.update(|s| {
            s.gate = state;
            s.gate_since_ms = since;
            s.size_factor = factor;
        });
        Ok(entry)
    }

    fn on_ask(&mut self, ask: Ask) {
        match ask {
            Ask::Gate {
                command,
                actor,
                reason,
                reply,
            } => {
                let snap = self.tracker.snapshot();
                let r = self
                    .gate
                    .command(command, &actor, &reason, &snap, now_ms())
                    .map_err(CommandError::from)
                    .and_then(|t| self.transition(&t, None));
                let _ = reply.send(r);
            }
            Ask::Fill {
                fill,
                received,
                reply,
            } => {
                let _ = reply.send(self.live_fill(fill, received));
            }
            Ask::Audit { since, limit, reply } => {
                let _ = reply.send(self.audit.entries(since, limit).to_vec());
            }
            Ask::Verify { reply } => {
                if self.checking() {
                    let _ = reply.send(Err("a signal check is already running".to_owned()));
                } else {
                    self.spawn_check(Some(reply));
                }
            }
            Ask::Stop => self.begin_stop(),
        }
    }

    fn checking(&self) -> bool {
        self.status.borrow().signal_check_running
    }

    /// Starts a signal check in its own task; it reports back to the actor.
    fn spawn_check(&mut self, reply: Option<oneshot::Sender<Result<SignalCheck, String>>>) {
        self.update(|s| s.signal_check_running = true);
        let verifier = self.verifier.clone();
        let spec = self.spec.clone();
        let orders = self.orders.clone();
        let done = self.checked.clone();
        let upto = self.decided_ts.unwrap_or(i64::MIN);
        tokio::spawn(async move {
            let result = verifier.check(&spec, &orders, upto).await;
            let _ = done.send((result, reply));
        });
    }

    fn on_checked(
        &mut self,
        result: Result<SignalCheck, String>,
        reply: Option<oneshot::Sender<Result<SignalCheck, String>>>,
    ) {
        self.update(|s| s.signal_check_running = false);
        match &result {
            Ok(check) => {
                if check.mismatches > 0 {
                    tracing::error!(deployment = %self.spec.id, mismatches = check.mismatches, first = ?check.differences.first(), "signal drift: the offline replay decided differently");
                }
                self.tracker.set_signal_mismatches(check.mismatches);
                let (orders, mismatches) = (check.orders, check.mismatches);
                self.update(|s| {
                    s.signal_checked_orders = orders;
                    s.signal_mismatches = mismatches;
                });
                self.evaluate(None);
            }
            Err(e) => tracing::warn!(deployment = %self.spec.id, error = %e, "signal check failed"),
        }
        if let Some(reply) = reply {
            let _ = reply.send(result);
        }
    }

    fn on_timer(&mut self) {
        let at = Instant::now();
        for (reason, budget) in &mut self.reject_log {
            let unlogged = budget.flush(at);
            if unlogged > 0 {
                log_unlogged(&self.spec.id, reason, unlogged);
            }
        }
        let now = now_ms();
        if let Some(venue) = &mut self.venue {
            for report in venue.due(now) {
                self.on_report(report);
            }
        }
        // After a recovery, fills reported while the deployment was down
        // may still come: intents do not time out before a fill timeout
        // has passed since the restart.
        let grace = Duration::from_millis(self.spec.drift.fill_timeout_ms);
        if self.replay_until.is_none() || self.started.elapsed() >= grace {
            self.tracker.expire(now);
        }
        // A timestamp some symbol has not reported goes out incomplete once
        // the feed has been quiet for a while (its late bars are refused).
        if self.sequencer.pending_ts().is_some() && self.last_message.elapsed() >= FLUSH_QUIET && !self.ended
        {
            let bars = self.sequencer.flush();
            if !bars.is_empty() {
                tracing::warn!(deployment = %self.spec.id, ts = bars[0].ts, bars = bars.len(), "the feed went quiet: handing over an incomplete timestamp");
                self.deliver(vec![bars], Instant::now());
            }
        }
        if !self.ended && self.status.borrow().state == Lifecycle::Live {
            self.evaluate(None);
        }
    }

    /// Closes the feed and the strategy's bar channel: the strategy gets its
    /// finish phase and its task ends.
    fn begin_stop(&mut self) {
        let _ = self.stop.send(true);
        self.bars_tx = None;
        // Bars queued for the strategy are stored: it need not work through
        // them before its finish phase (a replay will).
        self.stopping.store(true, Ordering::Release);
    }

    fn on_ended(&mut self, out: Result<RunOutput, tokio::task::JoinError>, stopping: bool) {
        self.ended = true;
        // No feed to watch any more (the feed-down alert is for deployments
        // that run; a failed one has its own alert).
        let _ = self.metrics.feed_up.remove_label_values(&[&self.spec.id]);
        let failure = match out {
            Ok(out) => out.outcome.err(),
            Err(e) => Some(Failure::new(
                palisade_run::Cause::GuestTrap,
                format!("the strategy's task ended: {e}"),
            )),
        };
        match failure {
            None if stopping => {
                tracing::info!(deployment = %self.spec.id, "deployment stopped");
                self.set_lifecycle(Lifecycle::Stopped);
            }
            None => {
                let f = Failure::new(
                    palisade_run::Cause::GuestError,
                    "the strategy returned while the feed was open",
                );
                self.failed(f);
            }
            Some(f) => self.failed(f),
        }
        let _ = self.stop.send(true);
    }

    /// The strategy failed live: the gate is suspended (intents stop; an
    /// operator decides what next), the failure kept in the status.
    fn failed(&mut self, failure: Failure) {
        tracing::error!(deployment = %self.spec.id, cause = %failure.cause, message = %failure.message, "the strategy failed live");
        let reason = format!("the strategy stopped: {failure}");
        if matches!(
            self.gate.state(),
            GateState::Open | GateState::Recovering { .. } | GateState::Suspended { manual: false }
        ) {
            let snap = self.tracker.snapshot();
            match self
                .gate
                .command(Command::Suspend, RUNNER_ACTOR, &reason, &snap, now_ms())
            {
                Ok(t) => {
                    if let Err(e) = self.transition(&t, None) {
                        tracing::error!(deployment = %self.spec.id, error = %e, "cannot suspend the gate");
                    }
                }
                Err(e) => tracing::error!(deployment = %self.spec.id, error = %e, "cannot suspend the gate"),
            }
        }
        self.update(|s| s.failure = Some(failure));
        self.set_lifecycle(Lifecycle::Failed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejected_bars_are_logged_within_a_budget_and_the_rest_counted() {
        let t0 = Instant::now();
        let mut budget = LogBudget::new(t0);
        let logged = (0..1_000).filter(|_| budget.take(t0).0).count();
        assert_eq!(logged, REJECT_LOG_LINES as usize);
        // Just before the window ends: still over budget.
        let late = t0 + REJECT_LOG_WINDOW - Duration::from_millis(1);
        assert_eq!(budget.take(late), (false, 0));
        // The next window: logged again, and the last window's unlogged
        // count (1,000 - 20 + 1) reported once.
        let next = t0 + REJECT_LOG_WINDOW;
        assert_eq!(budget.take(next), (true, 981));
        assert_eq!(budget.take(next), (true, 0));
        // A flood that stops: the timer's flush reports what was not
        // logged once the window is over, and only then.
        for _ in 0..50 {
            budget.take(next);
        }
        assert_eq!(budget.flush(next + REJECT_LOG_WINDOW / 2), 0);
        assert_eq!(budget.flush(next + REJECT_LOG_WINDOW), 32);
        assert_eq!(budget.flush(next + REJECT_LOG_WINDOW * 3), 0);
    }
}
