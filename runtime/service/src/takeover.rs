//! The worker's and the API node's sides of live deployments in the
//! distributed mode, as methods of [`Service`]: renewing and claiming
//! leases every heartbeat, taking deployments over (restore, start,
//! compaction), shipping while they run, acknowledging only what is
//! shipped, letting leases go on a drain, choosing a worker for a new
//! deployment and asking every worker to apply the emergency stops. The
//! leases, shipments and the forwarding client themselves are
//! [`crate::fleet`]'s.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, Method};
use palisade_deployment::Lease;
use sqlx::postgres::PgPool;

use crate::fleet::{
    claim, compact, failed_start, insert, mark_stopped, release, remove, renew, restore, started_ok,
    DeploymentRow, ShipError, Shipped, Shipper, TakeoverError, COMPACT_EVERY, MAX_FAILED_STARTS, SHIP_TICK,
};
use crate::lock;

use crate::deployments::DeploymentError;
use crate::service::{Service, ServiceError};
use crate::worker::Role;

/// Where this process takes a lease asked for at `asked` to end: a tenth
/// short of its life, for the clocks' drift (Postgres ends it at the
/// earliest a full life after `asked`).
fn lease_end(asked: Instant, ttl: Duration) -> Instant {
    asked + ttl - ttl / 10
}

fn unavailable(e: impl std::fmt::Display) -> ServiceError {
    ServiceError::StoreUnavailable(format!("the shared store: {e}"))
}

impl Service {
    fn shared_pool(&self) -> Option<&PgPool> {
        self.store.postgres()
    }

    /// Whether this node runs deployments under leases (a worker).
    fn leases_deployments(&self) -> bool {
        self.role == Role::Worker && self.shared_pool().is_some()
    }

    /// A worker, once it listens at `url`: takes deployments from now on.
    /// Every heartbeat it renews its leases (stopping the deployments whose
    /// lease it lost), applies the emergency stops in force, and takes over
    /// deployments whose lease expired.
    pub fn serve_deployments(self: &Arc<Self>, url: String) {
        if !self.leases_deployments() || self.leases.url.set(url).is_err() {
            return;
        }
        let first = self.clone();
        tokio::spawn(async move {
            // Beat now: API nodes learn where to reach this worker.
            if let Err(e) = first
                .redis()
                .beat(&first.worker_info(), first.config.heartbeat_ttl())
                .await
            {
                tracing::warn!(error = %e, "cannot write the heartbeat");
            }
        });
        self.every(self.config.heartbeat_interval(), |s| async move {
            s.tend_deployments().await
        });
    }

    async fn tend_deployments(self: &Arc<Self>) {
        let Some(pool) = self.shared_pool().cloned() else {
            return;
        };
        let me = self.worker_info().id;
        let ttl = self.config.heartbeat_ttl();
        let ids = self.leases.ids();
        let asked = Instant::now();
        match renew(&pool, &me, &ids, ttl).await {
            Ok(held) => {
                *lock(&self.leases.renewed) = Some(asked);
                for id in ids {
                    let shipper = self.leases.get(&id);
                    if held.get(&id).copied() == shipper.as_ref().map(|s| s.epoch) {
                        if let Some(s) = shipper {
                            s.lease.extend(lease_end(asked, ttl));
                        }
                    } else {
                        tracing::warn!(deployment = %id, "lease lost; stopping the deployment here");
                        self.lose(&id).await;
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot renew the deployments' leases");
                // Fence ourselves before the leases can have expired: past
                // their life, another worker may hold them.
                let renewed = *lock(&self.leases.renewed);
                let margin = self.config.heartbeat_interval();
                if renewed.is_none_or(|t| t.elapsed() + margin >= ttl) {
                    for id in self.leases.ids() {
                        tracing::warn!(deployment = %id, "lease not renewed in time; stopping the deployment here");
                        self.lose(&id).await;
                    }
                }
                return;
            }
        }
        if let Err(e) = self.deployments.sync_stops().await {
            tracing::warn!(error = %e, "cannot read the emergency stops");
            return;
        }
        if self.worker_state().draining.load(Ordering::Acquire) || self.is_stopped() {
            return;
        }
        let Some(url) = self.leases.url.get().cloned() else {
            return;
        };
        // Room counts the leases held, started or not.
        let room = self.deployments.max().saturating_sub(self.leases.count());
        let asked = Instant::now();
        let rows = match claim(&pool, &me, &url, room, ttl).await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(error = %e, "cannot claim deployments");
                return;
            }
        };
        if rows.is_empty() {
            return;
        }
        // Held from the claim on: renewed by the next heartbeats, answered
        // 503 until started; started one after another off this loop, so
        // a long batch does not hold up the renewals.
        let mut claimed = Vec::new();
        for row in rows {
            if let Some(old) = self.leases.remove(&row.id) {
                // Our own copy from an expired lease: it publishes no more.
                old.lease.lose();
            }
            let dir = self.deployments.folder(&row.id);
            let lease = Lease::until(lease_end(asked, ttl));
            let shipper = Arc::new(Shipper::new(
                &row.id,
                &me,
                row.epoch,
                &dir,
                pool.clone(),
                Shipped::default(),
                lease,
            ));
            self.leases.insert(shipper.clone());
            lock(&self.leases.unavailable).insert(row.id.clone(), None);
            claimed.push((row, shipper));
        }
        let s = self.clone();
        tokio::spawn(async move {
            for (row, shipper) in claimed {
                s.take_over(&pool, row, shipper).await;
            }
        });
    }

    /// Stops deployment `id` here without marking it stopped: its lease is
    /// someone else's, or about to be.
    async fn lose(&self, id: &str) {
        if let Some(s) = self.leases.remove(id) {
            s.lease.lose();
            self.metrics.leases_lost.inc();
        }
        lock(&self.leases.unavailable).insert(id.to_owned(), Some(Instant::now()));
        self.deployments.abandon(id).await;
    }

    /// Runs a deployment whose lease this worker claimed: its files as
    /// shipped, then recovery by replay as after any restart. A takeover
    /// that fails lets the lease go, for another worker to try.
    async fn take_over(self: &Arc<Self>, pool: &PgPool, row: DeploymentRow, shipper: Arc<Shipper>) {
        let id = row.id.clone();
        if !self.leases.is_current(&shipper) {
            // Lost (and perhaps claimed again, by a later batch) meanwhile.
            return;
        }
        // A copy of ours from an earlier lease stops first.
        self.deployments.abandon(&id).await;
        let started = Instant::now();
        match self.start_taken(pool, &row, &shipper).await {
            Ok(()) => {
                self.metrics.takeovers.inc();
                tracing::info!(
                    deployment = %id,
                    epoch = row.epoch,
                    took_ms = started.elapsed().as_millis() as u64,
                    "took over a deployment; recovering by replay"
                );
                lock(&self.leases.unavailable).remove(&id);
                if let Err(e) = started_ok(pool, &id, &shipper.owner, row.epoch).await {
                    tracing::warn!(deployment = %id, error = %e, "cannot clear the deployment's failed takeovers");
                }
                self.ship_while_running(shipper);
            }
            Err(failure) => {
                if !self.leases.is_current(&shipper) {
                    // Lost meanwhile: whatever started is not ours to run.
                    if self.leases.get(&id).is_none_or(|s| s.epoch <= shipper.epoch) {
                        self.deployments.abandon(&id).await;
                    }
                    tracing::warn!(deployment = %id, error = %failure.message(), "a deployment taken over was lost before it ran");
                    return;
                }
                self.deployments.abandon(&id).await;
                self.leases.remove(&id);
                shipper.lease.lose();
                lock(&self.leases.unavailable).insert(id.clone(), Some(Instant::now()));
                let lasting = matches!(failure, TakeoverError::Lasting(_));
                match failed_start(pool, &id, &shipper.owner, row.epoch, failure.message(), lasting).await {
                    Ok(true) => tracing::error!(
                        deployment = %id,
                        error = %failure.message(),
                        "a deployment failed to start {MAX_FAILED_STARTS} times in a row on taking over; stopped for good (its files stay in the shared store)"
                    ),
                    Ok(false) => {
                        tracing::error!(deployment = %id, error = %failure.message(), "a deployment taken over did not start; letting its lease go")
                    }
                    Err(e) => {
                        tracing::warn!(deployment = %id, error = %e, "cannot let the lease go; it expires")
                    }
                }
            }
        }
    }

    async fn start_taken(
        self: &Arc<Self>,
        pool: &PgPool,
        row: &DeploymentRow,
        shipper: &Arc<Shipper>,
    ) -> Result<(), TakeoverError> {
        let still_ours = || {
            if self.leases.is_current(shipper) && shipper.lease.held() && !self.is_stopped() {
                Ok(())
            } else {
                Err(TakeoverError::Passing(
                    "its lease was lost (or this worker stops) before it started".to_owned(),
                ))
            }
        };
        still_ours()?;
        let spec: palisade_deployment::DeploymentSpec = serde_json::from_str(&row.spec)
            .map_err(|e| TakeoverError::Lasting(format!("its spec does not parse: {e}")))?;
        let dir = self.deployments.folder(&row.id);
        let (shipped, compaction) = restore(pool, &row.id, &dir)
            .await
            .map_err(TakeoverError::Passing)?;
        shipper.restored(shipped).await;
        still_ours()?;
        self.deploy_leased(
            &row.tenant,
            &row.strategy,
            &row.policy,
            spec,
            None,
            Some(shipper.lease.clone()),
        )
        .await
        .map_err(|e| match e {
            ServiceError::StoreUnavailable(_) | ServiceError::Refused(_) => {
                TakeoverError::Passing(e.to_string())
            }
            e => TakeoverError::Lasting(e.to_string()),
        })?;
        // Lost while it started: it stops here (it published nothing: its
        // lease clock had run out, or it is lost).
        still_ours()?;
        if let Some(c) = compaction {
            // Once it runs: the next takeover reads one write per file.
            let (pool, id, owner, epoch) = (pool.clone(), row.id.clone(), shipper.owner.clone(), row.epoch);
            tokio::spawn(async move {
                if let Err(e) = compact(&pool, &id, &owner, epoch, &c).await {
                    tracing::warn!(deployment = %id, error = %e, "cannot compact the shipped writes; the next takeover reads them all");
                }
            });
        }
        // An emergency stop lifted while it moved: no worker held it then.
        self.deployments.release_if_lifted(&row.id).await;
        Ok(())
    }

    /// A new deployment's row, before it starts (a worker): its lease is
    /// this worker's. Its folder here is emptied: the shared store is the
    /// record.
    pub(crate) async fn lease_new(
        &self,
        spec: &palisade_deployment::DeploymentSpec,
        strategy: &str,
        policy: &str,
    ) -> Result<(), ServiceError> {
        let Some(pool) = self.shared_pool().filter(|_| self.leases_deployments()) else {
            return Ok(());
        };
        let me = self.worker_info().id;
        let url = self.leases.url.get().cloned().unwrap_or_default();
        let body = serde_json::to_string(spec).expect("a spec serializes");
        let ttl = self.config.heartbeat_ttl();
        let lease = Lease::until(lease_end(Instant::now(), ttl));
        if !insert(
            pool,
            &spec.id,
            &spec.tenant,
            &body,
            strategy,
            policy,
            &me,
            &url,
            ttl,
        )
        .await
        .map_err(unavailable)?
        {
            return Err(ServiceError::Conflict(format!(
                "deployment {} exists; choose another id",
                spec.id
            )));
        }
        let dir = self.deployments.folder(&spec.id);
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                self.forget(pool, &spec.id, &me).await;
                return Err(ServiceError::Internal(format!("{}: {e}", dir.display())));
            }
        }
        self.leases.insert(Arc::new(
            Shipper::new(&spec.id, &me, 1, &dir, pool.clone(), Shipped::default(), lease).fresh(),
        ));
        Ok(())
    }

    /// Forgets the row of a deployment that did not start; if that fails,
    /// marks it stopped, so that no worker starts what the client was told
    /// failed.
    async fn forget(&self, pool: &PgPool, id: &str, owner: &str) {
        if let Err(e) = remove(pool, id, owner).await {
            tracing::warn!(deployment = %id, error = %e, "cannot forget a deployment that did not start; marking it stopped");
            if let Err(e) = mark_stopped(pool, id).await {
                tracing::error!(deployment = %id, error = %e, "cannot mark a deployment that did not start stopped; a worker may start it when its lease expires");
            }
        }
    }

    /// After a new deployment started (`ok`) or did not: ships from now on,
    /// or forgets its row.
    pub(crate) async fn leased_started(self: &Arc<Self>, id: &str, ok: bool) {
        let Some(shipper) = self.leases.get(id) else {
            return;
        };
        if ok {
            self.ship_while_running(shipper);
        } else {
            self.leases.remove(id);
            shipper.lease.lose();
            if let Some(pool) = self.shared_pool() {
                self.forget(pool, id, &shipper.owner).await;
            }
        }
    }

    /// Ships a deployment's files whenever its status changes (a bar, an
    /// intent, a fill, a transition), and at least every second, until
    /// its actor ends; a lost lease stops it here.
    fn ship_while_running(self: &Arc<Self>, shipper: Arc<Shipper>) {
        let Ok(handle) = self.deployments.get("", true, &shipper.id) else {
            return;
        };
        let mut status = handle.subscribe();
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let ended = matches!(
                    tokio::time::timeout(SHIP_TICK, status.changed()).await,
                    Ok(Err(_))
                );
                let result = shipper.ship().await;
                let Some(s) = me.upgrade() else { break };
                match result {
                    Ok(()) if shipper.since_compaction() >= COMPACT_EVERY => {
                        match shipper.compact_log().await {
                            Ok(_) => {}
                            Err(ShipError::Lost(_)) => {}
                            Err(e) => {
                                tracing::warn!(error = %e, "cannot compact the shipped writes; trying again later")
                            }
                        }
                    }
                    Ok(()) => {}
                    Err(ShipError::Lost(_)) => {
                        tracing::warn!(deployment = %shipper.id, "lease lost; stopping the deployment here");
                        if s.leases.is_current(&shipper) {
                            s.lose(&shipper.id).await;
                        }
                        break;
                    }
                    Err(e) => {
                        s.metrics.ship_failures.inc();
                        tracing::warn!(error = %e, "cannot ship a deployment's files; trying again");
                    }
                }
                if ended || !s.leases.is_current(&shipper) {
                    break;
                }
            }
        });
    }

    /// Returns once the shared store holds everything deployment `id` wrote
    /// so far (a worker; at once elsewhere): called before acknowledging a
    /// fill, a gate command or a stop.
    pub(crate) async fn shipped(&self, id: &str) -> Result<(), ServiceError> {
        if !self.leases_deployments() {
            return Ok(());
        }
        let moving = || {
            ServiceError::StoreUnavailable(format!(
                "deployment {id} is moving to another worker and this was not stored with it; send it again in a few seconds"
            ))
        };
        let Some(shipper) = self.leases.get(id) else {
            return Err(moving());
        };
        shipper.ship().await.map_err(|e| match e {
            ShipError::Lost(_) => moving(),
            e => {
                self.metrics.ship_failures.inc();
                unavailable(e)
            }
        })
    }

    /// A deployment stopped through the API: its last writes shipped and
    /// its row marked stopped, so no worker takes it over.
    pub(crate) async fn leased_stopped(&self, id: &str) -> Result<(), ServiceError> {
        let Some(pool) = self.shared_pool().filter(|_| self.leases_deployments()) else {
            return Ok(());
        };
        let shipped = self.shipped(id).await;
        // The lease is kept (renewed) until the row says stopped: a DELETE
        // answered 503 here is sent again, and finds it here.
        mark_stopped(pool, id).await.map_err(unavailable)?;
        if let Some(s) = self.leases.remove(id) {
            s.lease.lose();
        }
        shipped
    }

    /// A worker shutting down: its deployments' last writes shipped and
    /// their leases let go, so that other workers take them over at once.
    pub(crate) async fn release_leases(&self) {
        let Some(pool) = self.shared_pool().filter(|_| self.leases_deployments()) else {
            return;
        };
        let ids = self.leases.ids();
        if ids.is_empty() {
            return;
        }
        for id in &ids {
            // Whatever started meanwhile (a takeover, a create) stops too:
            // once the leases go, another worker runs these.
            self.deployments.abandon(id).await;
            if let Some(s) = self.leases.get(id) {
                if let Err(e) = s.ship().await {
                    tracing::warn!(error = %e, "cannot ship a deployment's last writes");
                }
                s.lease.lose();
            }
        }
        match release(pool, &self.worker_info().id, &ids).await {
            Ok(()) => tracing::info!(deployments = ids.len(), "let the deployments' leases go"),
            Err(e) => tracing::warn!(error = %e, "cannot let the deployments' leases go; they expire"),
        }
    }

    /// An API node: the live worker that should take a new deployment (the
    /// one running fewest, with room).
    pub(crate) async fn worker_for_deployment(&self) -> Result<String, String> {
        let workers = self.workers().await.map_err(|e| e.to_string())?;
        workers
            .into_iter()
            .filter(|w| matches!(w.status.as_str(), "idle" | "busy"))
            .filter(|w| w.url.is_some() && w.deployments < w.max_deployments)
            .min_by_key(|w| w.deployments)
            .and_then(|w| w.url)
            .ok_or_else(|| {
                "no worker can take a deployment now (none is up, or every one runs its max_deployments); try again later"
                    .to_owned()
            })
    }

    /// An API node: asks every live worker to apply the emergency stops in
    /// force now; returns the ids they stopped and released.
    pub(crate) async fn apply_stops_everywhere(
        &self,
        headers: &HeaderMap,
        scope: &crate::deployments::Scope,
    ) -> StopsApplied {
        let body = axum::body::Bytes::from(serde_json::to_vec(scope).expect("a scope serializes"));
        let mut out = StopsApplied::default();
        let workers = match self.workers().await {
            Ok(w) => w,
            Err(e) => {
                out.unreached.push(format!("the workers' list: {e}"));
                return out;
            }
        };
        for (worker, url) in workers
            .into_iter()
            .filter(|w| w.status != "down")
            .filter_map(|w| w.url.map(|u| (w.id, u)))
        {
            match self
                .forwarder
                .send(&url, Method::POST, "/internal/stops/apply", headers, body.clone())
                .await
            {
                Ok(a) if a.status.is_success() => {
                    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&a.body) {
                        for (key, into) in [("stopped", &mut out.stopped), ("released", &mut out.released)] {
                            if let Some(list) = v.get(key).and_then(|l| l.as_array()) {
                                into.extend(list.iter().filter_map(|x| x.as_str().map(str::to_owned)));
                            }
                        }
                    }
                }
                Ok(a) => {
                    tracing::warn!(worker = %url, status = %a.status, "a worker did not apply the emergency stops; it will within a heartbeat");
                    out.unreached.push(worker);
                }
                Err(e) => {
                    tracing::warn!(worker = %url, error = %e, "a worker did not apply the emergency stops; it will within a heartbeat");
                    out.unreached.push(worker);
                }
            }
        }
        out.stopped.sort();
        out.released.sort();
        out
    }
}

/// What the workers did with the emergency stops an API node asked them to
/// apply; `unreached` names the workers that did not answer (they apply
/// them within a heartbeat).
#[derive(Debug, Default)]
pub struct StopsApplied {
    pub stopped: Vec<String>,
    pub released: Vec<String>,
    pub unreached: Vec<String>,
}

impl From<DeploymentError> for ServiceError {
    fn from(e: DeploymentError) -> Self {
        match e {
            DeploymentError::Invalid(m) => ServiceError::InvalidJob(m),
            DeploymentError::Conflict(m) => ServiceError::Conflict(m),
            DeploymentError::NotFound(id) => ServiceError::NotFound {
                what: "deployment",
                id,
            },
            DeploymentError::Unavailable(m) => ServiceError::StoreUnavailable(m),
            other => ServiceError::Internal(other.to_string()),
        }
    }
}
