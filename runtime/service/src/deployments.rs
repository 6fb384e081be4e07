//! The service's live deployments: the running ones by id, started from API
//! requests and restarted (recovered by replay) when the service starts.
//! Each deployment keeps its files in `<data_dir>/deployments/<id>/`: the
//! spec, a `service.json` naming its module and policy and whether it was
//! stopped, the bar log, journals and audit log (see `palisade-deployment`).
//!
//! Emergency stops are gate commands sent to every deployment in scope (one,
//! a tenant's, all); a scope stays in force for deployments started later,
//! until it is released.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use palisade_deployment::{
    spec::check_id, start, CommandError, DeploymentSpec, FeedSource, FillError, Handle, Launch, Lifecycle,
    LiveMetrics, SignalCheck, Status,
};
use palisade_live::{AuditEntry, Command, DriftError, DriftSnapshot, LiveFill};
use serde::{Deserialize, Serialize};

use crate::intent_log::IntentLog;
use crate::lock;
use crate::registry::{Compiled, PolicyEntry};

/// The hosts deployments' feeds and webhooks may reach (`live_hosts`):
/// `host`, `host:port` or `*.domain` (any subdomain of `domain`, not
/// `domain` itself), compared without case. A deployment naming another
/// host is refused at its start, so tenants cannot point the service at
/// the operator's internal addresses.
#[derive(Clone, Debug, Default)]
pub struct AllowedHosts(Vec<(String, Option<u16>)>);

impl AllowedHosts {
    /// The list of `live_hosts`; an empty text allows nothing but is
    /// refused (leave the key out to allow any host).
    pub fn parse(text: &str) -> Result<AllowedHosts, String> {
        let mut out = Vec::new();
        for entry in text.split(',').map(str::trim) {
            if entry.is_empty() {
                return Err(format!(
                    "{text:?}: an empty entry (a list is `host`, `host:port` or `*.domain`, comma-separated)"
                ));
            }
            let (host, port) = match entry.rsplit_once(':') {
                Some((h, p)) if !h.contains(':') || h.ends_with(']') => {
                    let port = p
                        .parse::<u16>()
                        .map_err(|_| format!("{entry:?}: the port {p:?} is not a number from 0 to 65535"))?;
                    (h, Some(port))
                }
                _ => (entry, None),
            };
            let name = host.strip_prefix("*.").unwrap_or(host);
            let ok = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '[' | ']' | ':'));
            if !ok {
                return Err(format!("{entry:?}: not a host name, an address or `*.domain`"));
            }
            out.push((host.to_ascii_lowercase(), port));
        }
        Ok(AllowedHosts(out))
    }

    /// Whether `url` (ws://, wss://, http:// or https://) names an allowed host; the error
    /// names the host.
    pub fn check(&self, what: &str, url: &str) -> Result<(), String> {
        let uri: axum::http::Uri = url
            .parse()
            .map_err(|_| format!("{what} {:?} is not a URL", palisade_live::clipped(url)))?;
        let authority = uri.authority().map_or("", |a| a.as_str());
        if authority.contains('@') {
            return Err(format!(
                "{what}: a user name in the URL is not allowed (live_hosts compares hosts)"
            ));
        }
        if palisade_live::port_unreadable(authority, uri.port_u16()) {
            return Err(format!(
                "{what}: {:?} has no valid port",
                palisade_live::clipped(authority)
            ));
        }
        let host = uri.host().unwrap_or_default().to_ascii_lowercase();
        let port = uri.port_u16().or(match uri.scheme_str() {
            Some("ws" | "http") => Some(80),
            Some("wss" | "https") => Some(443),
            _ => None,
        });
        let allowed = self.0.iter().any(|(pattern, p)| {
            let name = match pattern.strip_prefix("*.") {
                Some(domain) => host.len() > domain.len() + 1 && host.ends_with(&format!(".{domain}")),
                None => host == *pattern,
            };
            name && p.is_none_or(|p| Some(p) == port)
        });
        if allowed {
            Ok(())
        } else {
            Err(format!(
                "{what} host {}{} is not one this service may reach (live_hosts)",
                palisade_live::clipped(&host),
                port.map(|p| format!(":{p}")).unwrap_or_default()
            ))
        }
    }
}

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
    #[error("{0}")]
    Forbidden(String),
    /// A fill the tracker refused: unknown intent (404) or invalid (422).
    #[error(transparent)]
    Fill(DriftError),
    #[error("{0}")]
    Internal(String),
    /// The shared store cannot be reached (503).
    #[error("{0}")]
    Unavailable(String),
}

impl From<CommandError> for DeploymentError {
    fn from(e: CommandError) -> Self {
        match e {
            // A missing reason is the request's fault, not the gate's state.
            CommandError::Gate(g @ palisade_live::GateError::MissingReason { .. }) => {
                DeploymentError::Invalid(g.to_string())
            }
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

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scope::Deployment { deployment } => write!(f, "deployment {deployment}"),
            Scope::Tenant { tenant } => write!(f, "tenant {tenant}"),
            Scope::All => f.write_str("every deployment"),
        }
    }
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

/// Who imposed an emergency stop, and why.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Imposed {
    pub tenant: String,
    pub operator: bool,
    /// The reason given (audited with each transition the stop causes).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

impl Imposed {
    /// The actor the stop's transitions are audited as.
    pub fn actor(&self) -> String {
        format!(
            "{}:{}",
            if self.operator { "operator" } else { "tenant" },
            self.tenant
        )
    }
}

/// One emergency stop in force, as listed and stored.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StopInForce {
    #[serde(flatten)]
    pub scope: Scope,
    pub imposed_by: Imposed,
}

const STOPS_FILE: &str = "emergency-stops.json";

fn load_stops(dir: &Path) -> HashMap<Scope, Imposed> {
    let path = dir.join(STOPS_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => match serde_json::from_slice::<Vec<StopInForce>>(&bytes) {
            Ok(list) => list.into_iter().map(|s| (s.scope, s.imposed_by)).collect(),
            Err(e) => {
                // Fail closed: an unreadable list stops everything.
                tracing::error!(path = %path.display(), error = %e, "emergency stops unreadable; stopping every deployment");
                let ops = Imposed {
                    tenant: "unreadable emergency-stops.json".to_owned(),
                    operator: true,
                    reason: String::new(),
                };
                HashMap::from([(Scope::All, ops)])
            }
        },
        Err(_) => HashMap::new(),
    }
}

/// The live deployments of this service.
pub struct Deployments {
    dir: PathBuf,
    pub metrics: LiveMetrics,
    running: Mutex<BTreeMap<String, Handle>>,
    /// The emergency stops in force, with who imposed them; kept in
    /// `emergency-stops.json` so they survive a restart.
    stops: Mutex<HashMap<Scope, Imposed>>,
    /// Most deployments running at once (`max_deployments`).
    max: usize,
    /// Held while a deployment starts: two requests for one id (or for the
    /// last free place) cannot both pass the checks.
    starting: Mutex<()>,
    /// The shared store (distributed mode): the emergency stops are its
    /// table `emergency_stops`, not a file.
    shared: Option<sqlx::PgPool>,
    /// Distributed mode (a worker): the stops as [`Deployments::sync_stops`]
    /// last applied them, to find the ones lifted since (whatever read the
    /// stops meanwhile).
    applied: Mutex<HashMap<Scope, Imposed>>,
    /// The intent journals' indexes, for reading intents back.
    intent_log: std::sync::Arc<IntentLog>,
}

impl std::fmt::Debug for Deployments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deployments").field("dir", &self.dir).finish()
    }
}

impl Deployments {
    /// The deployments of a service with its files in `data_dir`; with
    /// `shared`, the emergency stops are read from the shared store
    /// ([`Deployments::reload_stops`]).
    pub fn new(
        data_dir: &Path,
        registry: &prometheus::Registry,
        max: usize,
        shared: Option<sqlx::PgPool>,
    ) -> Deployments {
        let stops = if shared.is_some() {
            HashMap::new()
        } else {
            load_stops(&data_dir.join("deployments"))
        };
        let d = Deployments {
            dir: data_dir.join("deployments"),
            metrics: LiveMetrics::new(registry),
            running: Mutex::new(BTreeMap::new()),
            stops: Mutex::new(stops),
            max,
            starting: Mutex::new(()),
            shared,
            applied: Mutex::new(HashMap::new()),
            intent_log: std::sync::Arc::new(IntentLog::new()),
        };
        d.publish_stops();
        d
    }

    /// Most deployments this process runs at once.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Deployments running in this process.
    pub fn running(&self) -> usize {
        lock(&self.running).len()
    }

    pub fn folder(&self, id: &str) -> PathBuf {
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
        lease: Option<palisade_deployment::Lease>,
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
        let created = !dir.exists();
        std::fs::create_dir_all(&dir)
            .map_err(|e| DeploymentError::Internal(format!("{}: {e}", dir.display())))?;
        let recorded = Recorded {
            strategy: compiled.sha.clone(),
            policy: policy_name.to_owned(),
            stopped: false,
        };
        let launch = |dir: PathBuf| {
            write_recorded(&dir, &recorded)?;
            start(Launch {
                spec,
                dir,
                sandbox: compiled.sandbox.clone(),
                strategy: compiled.strategy.clone(),
                policy: (*policy.policy).clone(),
                metrics: self.metrics.clone(),
                feed: FeedSource::WebSocket,
                lease,
            })
            .map_err(|e| DeploymentError::Invalid(e.to_string()))
        };
        let handle = match launch(dir.clone()) {
            Ok(h) => h,
            Err(e) => {
                // A new deployment that did not start leaves nothing behind
                // (its id stays free); a restarted one keeps its files.
                if fresh && created {
                    let _ = std::fs::remove_dir_all(&dir);
                }
                return Err(e);
            }
        };
        let status = handle.status();
        lock(&self.running).insert(handle.id().to_owned(), handle.clone());
        Ok(status)
    }

    /// The emergency stop in force that covers `handle`, if any.
    fn covering(&self, handle: &Handle) -> Option<(Scope, Imposed)> {
        lock(&self.stops)
            .iter()
            .find(|(s, _)| s.covers(handle))
            .map(|(s, i)| (s.clone(), i.clone()))
    }

    /// Applies the emergency stops in force to a deployment just started,
    /// before the service answers for it (its gate was open at most until
    /// its actor took this first command, before any bar).
    pub async fn enforce_stops(&self, id: &str) {
        let Some(handle) = lock(&self.running).get(id).cloned() else {
            return;
        };
        let Some((scope, by)) = self.covering(&handle) else {
            return;
        };
        apply_stop(&handle, &scope, &by).await;
    }

    /// Distributed mode: reads the emergency stops from the shared store.
    /// Unreadable stops stop everything (fail closed).
    pub async fn reload_stops(&self) -> Result<HashMap<Scope, Imposed>, DeploymentError> {
        let Some(pool) = &self.shared else {
            return Ok(lock(&self.stops).clone());
        };
        let rows: Vec<String> = sqlx::query_scalar("SELECT stop FROM emergency_stops ORDER BY key")
            .fetch_all(pool)
            .await
            .map_err(|e| DeploymentError::Unavailable(format!("the shared store: {e}")))?;
        let mut stops = HashMap::new();
        for row in rows {
            match serde_json::from_str::<StopInForce>(&row) {
                Ok(s) => {
                    stops.insert(s.scope, s.imposed_by);
                }
                Err(e) => {
                    tracing::error!(error = %e, "an emergency stop is unreadable; stopping every deployment");
                    stops.insert(
                        Scope::All,
                        Imposed {
                            tenant: "unreadable emergency_stops row".to_owned(),
                            operator: true,
                            reason: String::new(),
                        },
                    );
                }
            }
        }
        *lock(&self.stops) = stops.clone();
        self.publish_stops();
        Ok(stops)
    }

    /// Distributed mode (a worker): brings the stops in force up to date
    /// with the shared store and applies what changed to the deployments
    /// running here: newly covered ones stop, ones no stop covers any more
    /// are released. Returns the ids stopped and released.
    pub async fn sync_stops(&self) -> Result<(Vec<String>, Vec<String>), DeploymentError> {
        let before = lock(&self.applied).clone();
        let now = self.reload_stops().await?;
        *lock(&self.applied) = now.clone();
        let handles: Vec<Handle> = lock(&self.running).values().cloned().collect();
        let (mut stopped, mut released) = (Vec::new(), Vec::new());
        for h in handles {
            let gate = h.status().gate;
            if let Some((scope, by)) = now.iter().find(|(s, _)| s.covers(&h)) {
                if gate != palisade_live::GateState::Stopped && apply_stop(&h, scope, by).await {
                    stopped.push(h.id().to_owned());
                }
            } else if gate == palisade_live::GateState::Stopped {
                if let Some((scope, _)) = before.iter().find(|(s, _)| s.covers(&h)) {
                    let reason = format!("the emergency stop ({}) was lifted", scope.label());
                    if h.gate(Command::Release, "operator:emergency-stop", &reason)
                        .await
                        .is_ok()
                    {
                        released.push(h.id().to_owned());
                    }
                }
            }
        }
        Ok((stopped, released))
    }

    /// A deployment just taken over whose gate an emergency stop stopped
    /// (its last transition says so) while no stop covers it any more: the
    /// stop was lifted while no worker held it, so it is released now, as
    /// it would have been where it ran.
    pub async fn release_if_lifted(&self, id: &str) {
        let Some(handle) = lock(&self.running).get(id).cloned() else {
            return;
        };
        if handle.status().gate != palisade_live::GateState::Stopped || self.covering(&handle).is_some() {
            return;
        }
        let entries = handle.audit(0, usize::MAX).await;
        let by_scope = entries.last().is_some_and(|e| {
            e.to == palisade_live::GateState::Stopped && e.reason.starts_with("an emergency stop (")
        });
        if by_scope {
            let reason = "the emergency stop was lifted while the deployment moved between workers";
            if let Err(e) = handle
                .gate(Command::Release, "operator:emergency-stop", reason)
                .await
            {
                tracing::warn!(deployment = %id, error = %e, "cannot release a lifted emergency stop");
            }
        }
    }

    /// The running deployments `scope` covers whose gate is stopped.
    pub fn stopped_in(&self, scope: &Scope) -> Vec<String> {
        let mut ids: Vec<String> = lock(&self.running)
            .values()
            .filter(|h| scope.covers(h) && h.status().gate == palisade_live::GateState::Stopped)
            .map(|h| h.id().to_owned())
            .collect();
        ids.sort();
        ids
    }

    /// Stops running deployment `id` in this process only (its lease was
    /// lost, or the worker drains): it is not marked stopped, and another
    /// worker takes it over.
    pub async fn abandon(&self, id: &str) {
        let handle = lock(&self.running).remove(id);
        if let Some(h) = handle {
            h.stop().await;
        }
    }

    fn save_stops(&self, stops: &HashMap<Scope, Imposed>) -> Result<(), DeploymentError> {
        let list: Vec<StopInForce> = stops
            .iter()
            .map(|(scope, by)| StopInForce {
                scope: scope.clone(),
                imposed_by: by.clone(),
            })
            .collect();
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| DeploymentError::Internal(format!("{}: {e}", self.dir.display())))?;
        let path = self.dir.join(STOPS_FILE);
        let tmp = self.dir.join(format!("{STOPS_FILE}.tmp"));
        let bytes = serde_json::to_vec_pretty(&list).expect("serializes");
        std::fs::write(&tmp, bytes)
            .and_then(|()| std::fs::File::open(&tmp)?.sync_all())
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|e| DeploymentError::Internal(format!("{}: {e}", path.display())))
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

    /// Lists a deployment that did not restart as failed, with `error`
    /// ([`Handle::unstartable`]); `DELETE` stops it for good as any other.
    pub fn unstartable(&self, spec: &DeploymentSpec, error: String) {
        let handle = Handle::unstartable(spec, error, &self.metrics);
        lock(&self.running).entry(spec.id.clone()).or_insert(handle);
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
        if matches!(command, Command::Release | Command::Resume | Command::ForceOpen) {
            if let Some((scope, _)) = self.covering(&handle) {
                return Err(DeploymentError::Conflict(format!(
                    "an emergency stop ({}) covers deployment {id}; lift it first (POST /v1/emergency-stop/release)",
                    scope.label()
                )));
            }
        }
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
    pub async fn emergency_stop(
        &self,
        scope: Scope,
        by: Imposed,
        actor: &str,
        reason: &str,
    ) -> Result<Vec<String>, DeploymentError> {
        // In force (and stored) first, so a deployment starting meanwhile
        // is covered by `enforce_stops`.
        if let Some(pool) = &self.shared {
            let key = serde_json::to_string(&scope).expect("a scope serializes");
            let stop = StopInForce {
                scope: scope.clone(),
                imposed_by: by,
            };
            // An operator's stop takes over a tenant's on the same scope (so
            // the tenant can no longer lift it); any other repeat changes
            // nothing.
            sqlx::query(
                "INSERT INTO emergency_stops (key, stop) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE \
                 SET stop = excluded.stop \
                 WHERE (excluded.stop::jsonb -> 'imposed_by' ->> 'operator')::boolean \
                 AND NOT coalesce((emergency_stops.stop::jsonb -> 'imposed_by' ->> 'operator')::boolean, false)",
            )
            .bind(&key)
            .bind(serde_json::to_string(&stop).expect("a stop serializes"))
            .execute(pool)
            .await
            .map_err(|e| DeploymentError::Unavailable(format!("the shared store: {e}")))?;
            self.reload_stops().await?;
        } else {
            let mut stops = lock(&self.stops);
            let takes_over = by.operator && stops.get(&scope).is_some_and(|held| !held.operator);
            if !stops.contains_key(&scope) || takes_over {
                let mut next = stops.clone();
                next.insert(scope.clone(), by);
                self.save_stops(&next)?;
                *stops = next;
                drop(stops);
                self.publish_stops();
            }
        }
        let handles: Vec<Handle> = lock(&self.running)
            .values()
            .filter(|h| scope.covers(h))
            .cloned()
            .collect();
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
        Ok(stopped)
    }

    /// Lifts an emergency stop's scope: deployments it stopped move to
    /// suspended (manual), from where an operator resumes them.
    pub async fn release(
        &self,
        scope: Scope,
        caller: &Imposed,
        actor: &str,
        reason: &str,
    ) -> Result<Vec<String>, DeploymentError> {
        if let Some(pool) = &self.shared {
            let stops = self.reload_stops().await?;
            let Some(by) = stops.get(&scope) else {
                return Err(DeploymentError::NotFound(format!("emergency stop over {scope}")));
            };
            check_release(by, caller)?;
            let key = serde_json::to_string(&scope).expect("a scope serializes");
            // A tenant deletes only a tenant's stop: an operator's that took
            // it over since it was read stays.
            let deleted = sqlx::query(
                "DELETE FROM emergency_stops WHERE key = $1 \
                 AND ($2 OR NOT coalesce((stop::jsonb -> 'imposed_by' ->> 'operator')::boolean, false))",
            )
            .bind(&key)
            .bind(caller.operator)
            .execute(pool)
            .await
            .map_err(|e| DeploymentError::Unavailable(format!("the shared store: {e}")))?
            .rows_affected();
            let stops = self.reload_stops().await?;
            if deleted == 0 {
                return match stops.get(&scope) {
                    Some(by) => check_release(by, caller).map(|()| Vec::new()),
                    None => Err(DeploymentError::NotFound(format!("emergency stop over {scope}"))),
                };
            }
        } else {
            let mut stops = lock(&self.stops);
            let Some(by) = stops.get(&scope) else {
                return Err(DeploymentError::NotFound(format!("emergency stop over {scope}")));
            };
            check_release(by, caller)?;
            let mut next = stops.clone();
            next.remove(&scope);
            self.save_stops(&next)?;
            *stops = next;
            drop(stops);
            self.publish_stops();
        }
        let handles: Vec<Handle> = lock(&self.running)
            .values()
            .filter(|h| scope.covers(h))
            .cloned()
            .collect();
        let mut released = Vec::new();
        for h in handles {
            let still = self.covering(&h).is_some();
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
    /// journal (at most 1,000; see [`IntentLog`]).
    pub async fn intents_after(&self, id: &str, after: u64) -> Result<Vec<palisade_live::Intent>, String> {
        let path = self.folder(id).join("intents.jsonl");
        let log = self.intent_log.clone();
        let read = tokio::task::spawn_blocking(move || {
            log.after(&path, after)
                .map_err(|e| format!("{}: {e}", path.display()))
        });
        read.await.map_err(|e| format!("reading intents: {e}"))?
    }

    /// The emergency stops in force.
    pub fn stops(&self) -> Vec<StopInForce> {
        self.stops_seen_by("", true, |_| true)
    }

    /// The emergency stops in force that `tenant` may see: every one for
    /// an operator; else those over everything, over the tenant, over one
    /// of its deployments, or imposed by it (another tenant's stops, and
    /// their reasons, stay that tenant's).
    pub fn stops_for(&self, tenant: &str, operator: bool) -> Vec<StopInForce> {
        self.stops_seen_by(tenant, operator, |d| self.get(tenant, false, d).is_ok())
    }

    /// [`Deployments::stops_for`], with `owns` telling the tenant's
    /// deployments (an API node knows them from the shared store).
    pub fn stops_seen_by(
        &self,
        tenant: &str,
        operator: bool,
        owns: impl Fn(&str) -> bool,
    ) -> Vec<StopInForce> {
        let visible = |scope: &Scope, by: &Imposed| {
            operator
                || by.tenant == tenant && !by.operator
                || match scope {
                    Scope::All => true,
                    Scope::Tenant { tenant: t } => t == tenant,
                    Scope::Deployment { deployment } => owns(deployment),
                }
        };
        let stops = lock(&self.stops).clone();
        stops
            .into_iter()
            .filter(|(scope, by)| visible(scope, by))
            .map(|(scope, imposed_by)| StopInForce { scope, imposed_by })
            .collect()
    }

    /// Sets `palisade_emergency_stops` from the stops in force.
    pub fn publish_stops(&self) {
        let stops = lock(&self.stops);
        for label in ["deployment", "tenant", "all"] {
            let n = stops.keys().filter(|s| s.label() == label).count();
            self.metrics
                .emergency_stops
                .with_label_values(&[label])
                .set(n as i64);
        }
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

/// Whether `caller` may lift a stop imposed `by`.
fn check_release(by: &Imposed, caller: &Imposed) -> Result<(), DeploymentError> {
    if by.operator && !caller.operator {
        return Err(DeploymentError::Forbidden(
            "an operator imposed this emergency stop; only an operator may lift it".to_owned(),
        ));
    }
    if !caller.operator && by.tenant != caller.tenant {
        return Err(DeploymentError::Forbidden(
            "another tenant imposed this emergency stop".to_owned(),
        ));
    }
    Ok(())
}

/// Sends an emergency stop in force to one deployment; true if applied.
async fn apply_stop(handle: &Handle, scope: &Scope, by: &Imposed) -> bool {
    if handle.status().gate == palisade_live::GateState::Stopped {
        return false;
    }
    let mut reason = format!("an emergency stop ({}) is in force", scope.label());
    if !by.reason.is_empty() {
        reason = format!("{reason}: {}", by.reason);
    }
    match handle.gate(Command::EmergencyStop, &by.actor(), &reason).await {
        Ok(_) => true,
        Err(e) => {
            tracing::error!(deployment = %handle.id(), error = %e, "emergency stop not applied");
            false
        }
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

#[cfg(test)]
mod tests {
    use super::{AllowedHosts, Deployments, Imposed, Scope};

    fn by(tenant: &str, operator: bool, reason: &str) -> Imposed {
        Imposed {
            tenant: tenant.into(),
            operator,
            reason: reason.into(),
        }
    }

    /// An operator's stop takes over a tenant's on the same scope, in the
    /// embedded mode's file and in the distributed mode's shared table; a
    /// tenant's repeat takes nothing back; stops are seen by whom they
    /// concern.
    async fn an_operators_stop_takes_over(d: &Deployments) {
        let scope = Scope::Tenant {
            tenant: "alice".into(),
        };
        let imposer = |d: &Deployments| d.stops()[0].imposed_by.clone();
        d.emergency_stop(
            scope.clone(),
            by("alice", false, "drill"),
            "tenant:alice",
            "drill",
        )
        .await
        .unwrap();
        assert!(!imposer(d).operator);
        assert_eq!(d.stops_for("alice", false).len(), 1);
        assert!(
            d.stops_for("bob", false).is_empty(),
            "alice's stop is not bob's to see"
        );
        d.emergency_stop(scope.clone(), by("ops", true, "hold"), "operator:ops", "hold")
            .await
            .unwrap();
        assert!(imposer(d).operator && imposer(d).reason == "hold");
        d.emergency_stop(
            scope.clone(),
            by("alice", false, "again"),
            "tenant:alice",
            "again",
        )
        .await
        .unwrap();
        assert!(imposer(d).operator, "a tenant's repeat took the stop back");
        let alice = by("alice", false, "");
        let refused = d
            .release(scope.clone(), &alice, "tenant:alice", "")
            .await
            .unwrap_err();
        assert!(refused.to_string().contains("only an operator"), "{refused}");
        d.release(scope, &by("ops", true, ""), "operator:ops", "")
            .await
            .unwrap();
        assert!(d.stops().is_empty());
        // Everything: seen by every tenant.
        d.emergency_stop(Scope::All, by("ops", true, "all"), "operator:ops", "all")
            .await
            .unwrap();
        assert_eq!(d.stops_for("bob", false).len(), 1);
    }

    #[tokio::test]
    async fn an_operators_stop_takes_over_a_tenants_in_the_embedded_mode() {
        let dir = tempfile::tempdir().unwrap();
        let registry = prometheus::Registry::new();
        let d = Deployments::new(dir.path(), &registry, 10, None);
        an_operators_stop_takes_over(&d).await;
        // Stored so: a restart reads the operator's stop.
        let again = Deployments::new(dir.path(), &prometheus::Registry::new(), 10, None);
        assert!(again.stops()[0].imposed_by.operator);
    }

    #[test]
    fn an_operators_stop_takes_over_a_tenants_in_the_shared_store() {
        crate::storage::with_postgres(|pool, tmp| async move {
            let d = Deployments::new(&tmp, &prometheus::Registry::new(), 10, Some(pool));
            an_operators_stop_takes_over(&d).await;
        });
    }

    #[test]
    fn allowed_hosts_match_name_port_and_subdomains_only() {
        let a = AllowedHosts::parse("feeds.example.com:9443, *.binance.com,127.0.0.1 , hooks.example.com")
            .unwrap();
        for ok in [
            "ws://feeds.example.com:9443/",
            "ws://FEEDS.example.com:9443/x?y=1",
            "ws://stream.binance.com:9443/ws",
            "ws://a.b.binance.com/",
            "ws://127.0.0.1:8765/",
            "http://hooks.example.com/intents",
            "http://hooks.example.com:8080/intents",
        ] {
            assert!(a.check("feed.url", ok).is_ok(), "{ok}");
        }
        for (bad, named) in [
            ("ws://feeds.example.com/", "feeds.example.com:80"),
            ("ws://feeds.example.com:9444/", "feeds.example.com:9444"),
            ("ws://binance.com/", "binance.com:80"),
            ("ws://evilbinance.com/", "evilbinance.com:80"),
            ("ws://binance.com.evil.org/", "binance.com.evil.org:80"),
            ("ws://127.0.0.2:8765/", "127.0.0.2:8765"),
            ("http://169.254.169.254/latest/meta-data", "169.254.169.254:80"),
            ("ws://localhost:8765/", "localhost:8765"),
        ] {
            let e = a.check("feed.url", bad).unwrap_err();
            assert!(
                e.contains(named) && e.contains("live_hosts") && e.starts_with("feed.url"),
                "{bad}: {e}"
            );
        }
        for (bad, why) in [
            ("ws://allowed@evil.org/", "user name"),
            ("ws://127.0.0.1@evil.org/", "user name"),
            ("ws://127.0.0.1:65536/", "no valid port"),
        ] {
            let e = a.check("feed.url", bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        assert!(AllowedHosts::parse("[::1]:8765")
            .unwrap()
            .check("f", "ws://[::1]:8765/")
            .is_ok());
        for bad in ["", "a,,b", "host:port", "host:70000", "ho st", "*.", "a/b"] {
            assert!(AllowedHosts::parse(bad).is_err(), "{bad:?}");
        }
    }
}
