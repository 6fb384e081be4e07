//! The service's live deployments: the running ones by id, started from API
//! requests and restarted (recovered by replay) when the service starts.
//! Each deployment keeps its files in `<data_dir>/deployments/<id>/`: the
//! spec, a `service.json` naming its module and policy and whether it was
//! stopped, the bar log, journals and audit log (see `palisade-deployment`).
//!
//! Emergency stops are gate commands sent to every deployment in scope (one,
//! a tenant's, all); a scope stays in force for deployments started later,
//! until it is released.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use palisade_deployment::{
    spec::check_id, start, CommandError, DeploymentSpec, FeedSource, FillError, Handle, Launch, Lifecycle,
    LiveMetrics, SignalCheck, Status,
};
use palisade_live::{AuditEntry, Command, DriftError, DriftSnapshot, LiveFill};
use serde::{Deserialize, Serialize};

use crate::registry::{Compiled, PolicyEntry};

/// What the service remembers about a deployment besides its spec.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Recorded {
    /// The strategy (module SHA-256) it runs.
    pub strategy: String,
    pub policy: String,
    /// Stopped through the API: not restarted with the service.
    pub stopped: bool,
}

/// Why a deployment request failed.
#[derive(Debug, thiserror::Error)]
pub enum DeploymentError {
    #[error("unknown deployment {0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Conflict(String),
    /// A fill the tracker refused: unknown intent (404) or invalid (422).
    #[error(transparent)]
    Fill(DriftError),
    #[error("{0}")]
    Internal(String),
}

impl From<CommandError> for DeploymentError {
    fn from(e: CommandError) -> Self {
        match e {
            CommandError::Gate(g) => DeploymentError::Conflict(g.to_string()),
            CommandError::Gone => DeploymentError::Conflict(e.to_string()),
            CommandError::Io(_) => DeploymentError::Internal(e.to_string()),
        }
    }
}

/// An emergency stop's scope.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "scope", rename_all = "snake_case")]
pub enum Scope {
    Deployment { deployment: String },
    Tenant { tenant: String },
    All,
}

impl Scope {
    fn label(&self) -> &'static str {
        match self {
            Scope::Deployment { .. } => "deployment",
            Scope::Tenant { .. } => "tenant",
            Scope::All => "all",
        }
    }

    fn covers(&self, h: &Handle) -> bool {
        match self {
            Scope::Deployment { deployment } => deployment == h.id(),
            Scope::Tenant { tenant } => tenant == h.tenant(),
            Scope::All => true,
        }
    }
}

/// The live deployments of this service.
pub struct Deployments {
    dir: PathBuf,
    pub metrics: LiveMetrics,
    running: Mutex<BTreeMap<String, Handle>>,
    stops: Mutex<HashSet<Scope>>,
    /// Most deployments running at once (`max_deployments`).
    max: usize,
    /// Held while a deployment starts: two requests for one id (or for the
    /// last free place) cannot both pass the checks.
    starting: Mutex<()>,
}

impl std::fmt::Debug for Deployments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deployments").field("dir", &self.dir).finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Deployments {
    pub fn new(data_dir: &Path, registry: &prometheus::Registry, max: usize) -> Deployments {
        Deployments {
            dir: data_dir.join("deployments"),
            metrics: LiveMetrics::new(registry),
            running: Mutex::new(BTreeMap::new()),
            stops: Mutex::new(HashSet::new()),
            max,
            starting: Mutex::new(()),
        }
    }

    fn folder(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    /// The deployments to restart: every folder with a spec that was not
    /// stopped through the API.
    pub fn recorded(&self) -> Vec<(DeploymentSpec, Recorded)> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let dir = entry.path();
            let read = |name: &str| std::fs::read(dir.join(name));
            let (Ok(spec), Ok(rec)) = (read("spec.json"), read("service.json")) else {
                continue;
            };
            match (
                serde_json::from_slice::<DeploymentSpec>(&spec),
                serde_json::from_slice::<Recorded>(&rec),
            ) {
                (Ok(spec), Ok(rec)) if !rec.stopped => out.push((spec, rec)),
                (Ok(_), Ok(_)) => {}
                _ => {
                    tracing::error!(dir = %dir.display(), "a deployment's files do not parse; not restarted")
                }
            }
        }
        out.sort_by(|a, b| a.0.id.cmp(&b.0.id));
        out
    }

    /// Starts (or recovers) a deployment of `compiled` under `policy`.
    pub fn start(
        &self,
        spec: DeploymentSpec,
        compiled: &Compiled,
        policy: &PolicyEntry,
        policy_name: &str,
        fresh: bool,
    ) -> Result<Status, DeploymentError> {
        check_id(&spec.id).map_err(|e| DeploymentError::Invalid(e.to_string()))?;
        spec.validate()
            .map_err(|e| DeploymentError::Invalid(e.to_string()))?;
        let dir = self.folder(&spec.id);
        let _starting = lock(&self.starting);
        {
            let running = lock(&self.running);
            if running.contains_key(&spec.id) {
                return Err(DeploymentError::Conflict(format!(
                    "deployment {} is running",
                    spec.id
                )));
            }
            if running.len() >= self.max {
                return Err(DeploymentError::Conflict(format!(
                    "this service runs its limit of {} deployments (max_deployments); stop one first",
                    self.max
                )));
            }
        }
        if fresh && dir.join("spec.json").exists() {
            return Err(DeploymentError::Conflict(format!(
                "deployment {} exists (stopped); choose another id",
                spec.id
            )));
        }
        std::fs::create_dir_all(&dir)
            .map_err(|e| DeploymentError::Internal(format!("{}: {e}", dir.display())))?;
        let recorded = Recorded {
            strategy: compiled.sha.clone(),
            policy: policy_name.to_owned(),
            stopped: false,
        };
        write_recorded(&dir, &recorded)?;
        let handle = start(Launch {
            spec,
            dir,
            sandbox: compiled.sandbox.clone(),
            strategy: compiled.strategy.clone(),
            policy: (*policy.policy).clone(),
            metrics: self.metrics.clone(),
            feed: FeedSource::WebSocket,
        })
        .map_err(|e| DeploymentError::Invalid(e.to_string()))?;
        let status = handle.status();
        lock(&self.running).insert(handle.id().to_owned(), handle.clone());
        self.apply_stops(&handle);
        Ok(status)
    }

    /// Emergency stops in force that cover a deployment just started.
    fn apply_stops(&self, handle: &Handle) {
        let covered = lock(&self.stops).iter().any(|s| s.covers(handle));
        if covered {
            let h = handle.clone();
            tokio::spawn(async move {
                let _ = h
                    .gate(
                        Command::EmergencyStop,
                        "emergency-stop",
                        "an emergency stop in force covers it",
                    )
                    .await;
            });
        }
    }

    /// The deployment `id` of `tenant` (any tenant's for an operator).
    pub fn get(&self, tenant: &str, operator: bool, id: &str) -> Result<Handle, DeploymentError> {
        lock(&self.running)
            .get(id)
            .filter(|h| operator || h.tenant() == tenant)
            .cloned()
            .ok_or_else(|| DeploymentError::NotFound(id.to_owned()))
    }

    /// The statuses of `tenant`'s deployments (everyone's for an operator).
    pub fn list(&self, tenant: &str, operator: bool) -> Vec<Status> {
        lock(&self.running)
            .values()
            .filter(|h| operator || h.tenant() == tenant)
            .map(Handle::status)
            .collect()
    }

    /// Stops a deployment for good (it is not restarted with the service).
    pub async fn stop(&self, tenant: &str, operator: bool, id: &str) -> Result<Status, DeploymentError> {
        let handle = self.get(tenant, operator, id)?;
        let dir = self.folder(id);
        let mut recorded: Recorded = std::fs::read(dir.join("service.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| {
                DeploymentError::Internal(format!("{}: service.json unreadable", dir.display()))
            })?;
        recorded.stopped = true;
        write_recorded(&dir, &recorded)?;
        handle.stop().await;
        lock(&self.running).remove(id);
        Ok(handle.status())
    }

    /// A gate command from `actor`.
    pub async fn gate(
        &self,
        tenant: &str,
        operator: bool,
        id: &str,
        command: Command,
        actor: &str,
        reason: &str,
    ) -> Result<AuditEntry, DeploymentError> {
        let handle = self.get(tenant, operator, id)?;
        Ok(handle.gate(command, actor, reason).await?)
    }

    /// A live fill reported by the organisation's execution system.
    pub async fn fill(
        &self,
        tenant: &str,
        id: &str,
        fill: LiveFill,
    ) -> Result<DriftSnapshot, DeploymentError> {
        let handle = self.get(tenant, false, id)?;
        handle.fill(fill).await.map_err(|e| match e {
            FillError::Drift(d) => DeploymentError::Fill(d),
            FillError::Gone => DeploymentError::Conflict(e.to_string()),
            FillError::Io(_) => DeploymentError::Internal(e.to_string()),
        })
    }

    pub async fn audit(
        &self,
        tenant: &str,
        operator: bool,
        id: &str,
        since: u64,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, DeploymentError> {
        Ok(self.get(tenant, operator, id)?.audit(since, limit).await)
    }

    pub async fn verify(
        &self,
        tenant: &str,
        operator: bool,
        id: &str,
    ) -> Result<SignalCheck, DeploymentError> {
        self.get(tenant, operator, id)?
            .verify()
            .await
            .map_err(DeploymentError::Conflict)
    }

    /// Emergency stop: every deployment in `scope` goes to `stopped` (each
    /// transition audited before it takes effect); the scope stays in force
    /// for deployments started later. Returns the deployments stopped now.
    pub async fn emergency_stop(&self, scope: Scope, actor: &str, reason: &str) -> Vec<String> {
        let handles: Vec<Handle> = lock(&self.running)
            .values()
            .filter(|h| scope.covers(h))
            .cloned()
            .collect();
        if lock(&self.stops).insert(scope.clone()) {
            self.metrics
                .emergency_stops
                .with_label_values(&[scope.label()])
                .inc();
        }
        let mut stopped = Vec::new();
        for h in handles {
            if h.status().gate == palisade_live::GateState::Stopped {
                continue;
            }
            match h.gate(Command::EmergencyStop, actor, reason).await {
                Ok(_) => stopped.push(h.id().to_owned()),
                Err(e) => tracing::error!(deployment = %h.id(), error = %e, "emergency stop not applied"),
            }
        }
        stopped
    }

    /// Lifts an emergency stop's scope: deployments it stopped move to
    /// suspended (manual), from where an operator resumes them.
    pub async fn release(
        &self,
        scope: Scope,
        actor: &str,
        reason: &str,
    ) -> Result<Vec<String>, DeploymentError> {
        if !lock(&self.stops).remove(&scope) {
            return Err(DeploymentError::NotFound(format!("emergency stop {scope:?}")));
        }
        self.metrics
            .emergency_stops
            .with_label_values(&[scope.label()])
            .dec();
        let handles: Vec<Handle> = lock(&self.running)
            .values()
            .filter(|h| scope.covers(h))
            .cloned()
            .collect();
        let mut released = Vec::new();
        for h in handles {
            let still = lock(&self.stops).iter().any(|s| s.covers(&h));
            if still || h.status().gate != palisade_live::GateState::Stopped {
                continue;
            }
            if h.gate(Command::Release, actor, reason).await.is_ok() {
                released.push(h.id().to_owned());
            }
        }
        Ok(released)
    }

    /// The intents `id` published for orders after `after`, from its
    /// journal (at most 1,000).
    pub fn intents_after(&self, id: &str, after: u64) -> Result<Vec<palisade_live::Intent>, String> {
        let path = self.folder(id).join("intents.jsonl");
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        // A last line being written is skipped: it is not whole yet.
        Ok(text
            .lines()
            .filter_map(|l| serde_json::from_str::<palisade_live::Intent>(l).ok())
            .filter(|i| i.order_id > after)
            .take(1_000)
            .collect())
    }

    /// The emergency stops in force.
    pub fn stops(&self) -> Vec<Scope> {
        lock(&self.stops).iter().cloned().collect()
    }

    /// Stops every running deployment (the service is shutting down); they
    /// are restarted, recovered by replay, when it starts again.
    pub async fn shutdown(&self) {
        let handles: Vec<Handle> = std::mem::take(&mut *lock(&self.running)).into_values().collect();
        for h in handles {
            h.stop().await;
        }
    }

    /// Running deployments by lifecycle, for `/v1/status`.
    pub fn count(&self) -> usize {
        lock(&self.running)
            .values()
            .filter(|h| h.status().state == Lifecycle::Live)
            .count()
    }
}

fn write_recorded(dir: &Path, recorded: &Recorded) -> Result<(), DeploymentError> {
    let path = dir.join("service.json");
    let tmp = dir.join("service.json.tmp");
    let bytes = serde_json::to_vec_pretty(recorded).expect("serializes");
    std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|e| DeploymentError::Internal(format!("{}: {e}", path.display())))
}
