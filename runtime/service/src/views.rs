//! What the API answers with, as typed bodies: each one `Serialize` for the
//! answer and `ToSchema` for the OpenAPI document, so the document describes
//! exactly what is sent. Built from the stored records; nothing here touches
//! HTTP or storage.

use std::collections::BTreeMap;

use palisade_run::Policy;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::jobs::{rfc3339, JobView};
use crate::scheduler::Limits;
use crate::storage::{DatasetRecord, PolicyAudit, StrategyRecord};

/// An uploaded strategy: its manifest, parameter schema and what validation
/// found.
#[derive(Debug, Serialize, ToSchema)]
pub struct StrategyView {
    /// The strategy id: the module's (or the Python source's) SHA-256.
    #[schema(pattern = "^[0-9a-f]{64}$")]
    pub id: String,
    #[schema(pattern = "^[0-9a-f]{64}$")]
    pub sha256: String,
    pub name: String,
    pub version: String,
    /// `wasm` (a module of ABI v2) or `python` (source run by the Python
    /// runtime; imports, exports, functions and memory then describe nothing).
    #[schema(value_type = String, pattern = "^(wasm|python)$")]
    pub language: Value,
    /// Module (or source) size in bytes.
    pub size: i64,
    /// RFC 3339.
    pub created: String,
    /// The module's `palisade.manifest` section (for Python, what the
    /// runtime's `describe` gave: the same schema).
    #[schema(value_type = Object)]
    pub manifest: Value,
    /// The declared parameters (the manifest's `params`).
    #[schema(value_type = Vec<Object>)]
    pub parameters: Value,
    #[schema(value_type = Vec<String>)]
    pub imports: Value,
    #[schema(value_type = Vec<String>)]
    pub exports: Value,
    #[schema(value_type = u32)]
    pub functions: Value,
    #[schema(value_type = u32)]
    pub memory_min_pages: Value,
    #[schema(value_type = Option<u32>)]
    pub memory_max_pages: Value,
}

impl StrategyView {
    pub fn of(r: &StrategyRecord) -> StrategyView {
        let manifest: Value = serde_json::from_str(&r.manifest).unwrap_or(Value::Null);
        let info: Value = serde_json::from_str(&r.info).unwrap_or(Value::Null);
        let field = |v: &Value, k: &str| v.get(k).cloned().unwrap_or(Value::Null);
        StrategyView {
            id: r.sha256.clone(),
            sha256: r.sha256.clone(),
            name: r.name.clone(),
            version: r.version.clone(),
            size: r.size,
            created: rfc3339(r.created),
            parameters: field(&manifest, "params"),
            // Strategies stored before Python existed are wasm.
            language: info
                .get("language")
                .cloned()
                .unwrap_or_else(|| Value::from("wasm")),
            imports: field(&info, "imports"),
            exports: field(&info, "exports"),
            functions: field(&info, "functions"),
            memory_min_pages: field(&info, "memory_min_pages"),
            memory_max_pages: field(&info, "memory_max_pages"),
            manifest,
        }
    }
}

/// A tenant's strategies.
#[derive(Debug, Serialize, ToSchema)]
pub struct StrategyList {
    pub strategies: Vec<StrategyView>,
}

/// An uploaded dataset: the bars of one symbol.
#[derive(Debug, Serialize, ToSchema)]
pub struct DatasetView {
    /// The dataset id: 16 hex digits of the SHA-256 of its name and content.
    #[schema(pattern = "^[0-9a-f]{16}$")]
    pub id: String,
    /// The symbol.
    pub name: String,
    pub symbols: Vec<String>,
    pub bars: i64,
    /// Time of the first bar (RFC 3339).
    pub first: String,
    /// Time of the last bar (RFC 3339).
    pub last: String,
    /// SHA-256 of the CSV file.
    #[schema(pattern = "^[0-9a-f]{64}$")]
    pub sha256: String,
    pub size: i64,
    pub created: String,
}

impl DatasetView {
    pub fn of(r: &DatasetRecord) -> DatasetView {
        DatasetView {
            id: r.id.clone(),
            name: r.name.clone(),
            symbols: vec![r.name.clone()],
            bars: r.bars,
            first: rfc3339(r.first_ts.saturating_mul(1000)),
            last: rfc3339(r.last_ts.saturating_mul(1000)),
            sha256: r.sha256.clone(),
            size: r.size,
            created: rfc3339(r.created),
        }
    }
}

/// A tenant's datasets.
#[derive(Debug, Serialize, ToSchema)]
pub struct DatasetList {
    pub datasets: Vec<DatasetView>,
}

/// A page of a tenant's jobs, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobList<'a> {
    pub jobs: Vec<JobView<'a>>,
}

/// A policy's name, the hash of its text and where it comes from
/// (`builtin`, `file` or `api`).
#[derive(Debug, Serialize, ToSchema)]
pub struct PolicySummary {
    pub name: String,
    pub hash: String,
    pub source: String,
}

/// Every policy.
#[derive(Debug, Serialize, ToSchema)]
pub struct PolicyList {
    pub policies: Vec<PolicySummary>,
}

/// One replacement of a policy in its audit trail.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEntry {
    /// The policy in force after the change; empty when it was deleted.
    pub hash: String,
    pub previous_hash: Option<String>,
    /// Who made the change: shown to operators only (`null` otherwise).
    pub tenant: Option<String>,
    /// RFC 3339.
    pub at: String,
}

impl AuditEntry {
    /// The entry as a caller sees it: with who made the change when
    /// `operator`.
    pub fn of(a: &PolicyAudit, operator: bool) -> AuditEntry {
        AuditEntry {
            hash: a.hash.clone(),
            previous_hash: a.previous_hash.clone(),
            tenant: operator.then(|| a.tenant.clone()),
            at: rfc3339(a.at),
        }
    }
}

/// A policy with its values, its text and its audit trail.
#[derive(Debug, Serialize, ToSchema)]
pub struct PolicyView {
    pub name: String,
    pub hash: String,
    pub source: String,
    pub policy: Policy,
    /// The policy as TOML.
    pub toml: String,
    pub audit: Vec<AuditEntry>,
}

/// The answer to a policy replacement.
#[derive(Debug, Serialize, ToSchema)]
pub struct PolicyChange {
    pub name: String,
    pub hash: String,
    pub previous_hash: Option<String>,
    pub source: String,
}

/// Threads of the service.
#[derive(Debug, Serialize, ToSchema)]
pub struct Workers {
    pub executor_threads: usize,
    pub http_threads: usize,
}

/// Queue depths, running jobs, workers and the limits in force.
#[derive(Debug, Serialize, ToSchema)]
pub struct StatusView {
    pub version: String,
    pub uptime_seconds: f64,
    pub ready: bool,
    /// Queued jobs by priority.
    pub queued: BTreeMap<String, usize>,
    pub running: usize,
    pub running_by_tenant: BTreeMap<String, usize>,
    pub admitting: bool,
    pub workers: Workers,
    pub limits: Limits,
    pub max_instances: u32,
    pub default_policy: String,
    pub auth: String,
}
