//! The OpenAPI 3.1 document served at `/v1/openapi.json`, generated from one
//! table of routes ([`ROUTES`]) so that it cannot drift from the router: a
//! test sends every documented method and path to the router and checks it
//! is routed, and the router's routes are listed next to the table.
//!
//! Schemas are written by hand below, field for field with the serde types
//! of `jobs` and the views of `api`.

use serde_json::{json, Map, Value};

use crate::problem::PROBLEM_TYPES;

/// One documented route.
#[derive(Debug)]
pub struct RouteDoc {
    pub method: &'static str,
    /// Path template, `{name}` for a parameter.
    pub path: &'static str,
    pub summary: &'static str,
    /// Needs a bearer token (when tokens are configured).
    pub auth: bool,
    /// Request body: content type and schema name.
    pub body: Option<(&'static str, &'static str)>,
    /// Query parameters: name, type, description.
    pub query: &'static [(&'static str, &'static str, &'static str)],
    /// Success responses: status, content type, schema name (or "" for none).
    pub ok: &'static [(u16, &'static str, &'static str)],
    /// Error statuses (answered as problem+json).
    pub errors: &'static [u16],
}

const JSON: &str = "application/json";

/// Every route of the API.
pub const ROUTES: &[RouteDoc] = &[
    RouteDoc {
        method: "get",
        path: "/healthz",
        summary: "Liveness: 200 while the HTTP runtime answers",
        auth: false,
        body: None,
        query: &[],
        ok: &[(200, "text/plain", "")],
        errors: &[],
    },
    RouteDoc {
        method: "get",
        path: "/readyz",
        summary: "Readiness: 200 once recovery is done, 503 while starting or shutting down",
        auth: false,
        body: None,
        query: &[],
        ok: &[(200, "text/plain", "")],
        errors: &[503],
    },
    RouteDoc {
        method: "get",
        path: "/metrics",
        summary: "Prometheus metrics (text exposition format)",
        auth: false,
        body: None,
        query: &[],
        ok: &[(200, "text/plain", "")],
        errors: &[],
    },
    RouteDoc {
        method: "get",
        path: "/v1/openapi.json",
        summary: "This document",
        auth: false,
        body: None,
        query: &[],
        ok: &[(200, JSON, "")],
        errors: &[],
    },
    RouteDoc {
        method: "get",
        path: "/v1/status",
        summary: "Queue depths, running jobs, workers and the limits in force",
        auth: true,
        body: None,
        query: &[],
        ok: &[(200, JSON, "Status")],
        errors: &[401],
    },
    RouteDoc {
        method: "post",
        path: "/v1/strategies",
        summary: "Upload a module (raw body or multipart); validated and compiled once. 201 when new, 200 when the tenant already has it",
        auth: true,
        body: Some(("application/wasm", "Module")),
        query: &[],
        ok: &[(201, JSON, "Strategy"), (200, JSON, "Strategy")],
        errors: &[400, 401, 413, 422],
    },
    RouteDoc {
        method: "get",
        path: "/v1/strategies",
        summary: "The tenant's strategies",
        auth: true,
        body: None,
        query: &[],
        ok: &[(200, JSON, "StrategyList")],
        errors: &[401],
    },
    RouteDoc {
        method: "get",
        path: "/v1/strategies/{id}",
        summary: "A strategy: manifest, parameter schema, imports, exports, size, hash",
        auth: true,
        body: None,
        query: &[],
        ok: &[(200, JSON, "Strategy")],
        errors: &[401, 404],
    },
    RouteDoc {
        method: "delete",
        path: "/v1/strategies/{id}",
        summary: "Delete a strategy (jobs already submitted still run)",
        auth: true,
        body: None,
        query: &[],
        ok: &[(204, "", "")],
        errors: &[401, 404],
    },
    RouteDoc {
        method: "post",
        path: "/v1/datasets",
        summary: "Upload the CSV bars of one symbol; errors name the line. 201 when new, 200 when the tenant already has it",
        auth: true,
        body: Some(("text/csv", "Csv")),
        query: &[("name", "string", "the symbol (required)")],
        ok: &[(201, JSON, "Dataset"), (200, JSON, "Dataset")],
        errors: &[400, 401, 413, 422],
    },
    RouteDoc {
        method: "get",
        path: "/v1/datasets",
        summary: "The tenant's datasets",
        auth: true,
        body: None,
        query: &[],
        ok: &[(200, JSON, "DatasetList")],
        errors: &[401],
    },
    RouteDoc {
        method: "get",
        path: "/v1/datasets/{id}",
        summary: "A dataset",
        auth: true,
        body: None,
        query: &[],
        ok: &[(200, JSON, "Dataset")],
        errors: &[401, 404],
    },
    RouteDoc {
        method: "delete",
        path: "/v1/datasets/{id}",
        summary: "Delete a dataset (jobs already submitted still run)",
        auth: true,
        body: None,
        query: &[],
        ok: &[(204, "", "")],
        errors: &[401, 404],
    },
    RouteDoc {
        method: "post",
        path: "/v1/jobs",
        summary: "Submit a job; acknowledged once durably recorded. With wait, answered once it ended (its result document under \"output\") or the wait is over",
        auth: true,
        body: Some((JSON, "JobRequest")),
        query: &[("wait", "integer", "milliseconds to wait for the job to end (at most 60000)")],
        ok: &[(201, JSON, "Job")],
        errors: &[400, 401, 404, 413, 422, 429, 503],
    },
    RouteDoc {
        method: "get",
        path: "/v1/jobs",
        summary: "The tenant's jobs, newest first",
        auth: true,
        body: None,
        query: &[
            ("state", "string", "queued, running, succeeded, failed, cancelled or timed_out"),
            ("kind", "string", "backtest, optimize, walk_forward or monte_carlo"),
            ("strategy", "string", "strategy id"),
            ("before", "string", "only jobs submitted before this job id"),
            ("limit", "integer", "1 to 1000 (default 100)"),
        ],
        ok: &[(200, JSON, "JobList")],
        errors: &[400, 401],
    },
    RouteDoc {
        method: "get",
        path: "/v1/jobs/{id}",
        summary: "A job's status and progress",
        auth: true,
        body: None,
        query: &[],
        ok: &[(200, JSON, "Job")],
        errors: &[401, 404],
    },
    RouteDoc {
        method: "delete",
        path: "/v1/jobs/{id}",
        summary: "Cancel a job: 200 when it was queued (now cancelled), 202 when running (stops within a few ms)",
        auth: true,
        body: None,
        query: &[],
        ok: &[(200, JSON, "Job"), (202, JSON, "Job")],
        errors: &[401, 404, 409],
    },
    RouteDoc {
        method: "get",
        path: "/v1/jobs/{id}/result",
        summary: "A job's result document (200), or its status while queued or running (202)",
        auth: true,
        body: None,
        query: &[("wait", "integer", "milliseconds to wait for the job to end (at most 60000)")],
        ok: &[(200, JSON, "Result"), (202, JSON, "Job")],
        errors: &[400, 401, 404, 409],
    },
    RouteDoc {
        method: "get",
        path: "/v1/policies",
        summary: "Every policy: name, hash, source (builtin, file, api)",
        auth: true,
        body: None,
        query: &[],
        ok: &[(200, JSON, "PolicyList")],
        errors: &[401],
    },
    RouteDoc {
        method: "get",
        path: "/v1/policies/{name}",
        summary: "A policy's values, canonical TOML and audit trail",
        auth: true,
        body: None,
        query: &[],
        ok: &[(200, JSON, "Policy")],
        errors: &[401, 404],
    },
    RouteDoc {
        method: "put",
        path: "/v1/policies/{name}",
        summary: "Replace or create a policy (TOML body) for new jobs; operators only; audited",
        auth: true,
        body: Some(("application/toml", "PolicyToml")),
        query: &[],
        ok: &[(200, JSON, "PolicyChange")],
        errors: &[400, 401, 403, 413, 422],
    },
];

fn schemas() -> Value {
    let string = json!({ "type": "string" });
    let number = json!({ "type": "number" });
    let integer = json!({ "type": "integer" });
    json!({
        "Problem": {
            "type": "object",
            "required": ["type", "title", "status", "detail"],
            "properties": {
                "type": { "type": "string", "enum": PROBLEM_TYPES.iter().map(|t| format!("urn:palisade:problem:{t}")).collect::<Vec<_>>() },
                "title": string, "status": integer, "detail": string,
                "cause": { "type": "string", "description": "invalid-module only: the classified cause, e.g. forbidden_import" }
            }
        },
        "Module": { "type": "string", "format": "binary" },
        "Csv": { "type": "string", "description": "timestamp,open,high,low,close,volume" },
        "PolicyToml": { "type": "string", "description": "a policy file, see policies/README.md" },
        "Strategy": {
            "type": "object",
            "properties": {
                "id": string, "sha256": string, "name": string, "version": string, "size": integer,
                "created": { "type": "string", "format": "date-time" },
                "manifest": { "type": "object" }, "parameters": { "type": "array" },
                "imports": { "type": "array", "items": string }, "exports": { "type": "array", "items": string },
                "functions": integer, "memory_min_pages": integer, "memory_max_pages": { "type": ["integer", "null"] }
            }
        },
        "StrategyList": { "type": "object", "properties": { "strategies": { "type": "array", "items": { "$ref": "#/components/schemas/Strategy" } } } },
        "Dataset": {
            "type": "object",
            "properties": {
                "id": string, "name": string, "symbols": { "type": "array", "items": string }, "bars": integer,
                "first": { "type": "string", "format": "date-time" }, "last": { "type": "string", "format": "date-time" },
                "sha256": string, "size": integer, "created": { "type": "string", "format": "date-time" }
            }
        },
        "DatasetList": { "type": "object", "properties": { "datasets": { "type": "array", "items": { "$ref": "#/components/schemas/Dataset" } } } },
        "JobRequest": {
            "type": "object",
            "required": ["strategy", "dataset"],
            "additionalProperties": false,
            "properties": {
                "strategy": string,
                "dataset": { "oneOf": [string, { "type": "array", "items": string }] },
                "kind": { "type": "string", "enum": ["backtest", "optimize", "walk_forward", "monte_carlo"], "default": "backtest" },
                "params": { "type": "object", "additionalProperties": { "type": ["number", "boolean", "string"] } },
                "priority": { "type": "string", "enum": ["high", "normal", "low"], "default": "normal" },
                "policy": string, "seed": integer,
                "cash": number, "commission": number, "commission_per_fill": number, "slippage": number, "periods_per_year": number,
                "equity_curve": { "type": "boolean", "description": "backtest" },
                "grid": { "type": "array", "items": string, "description": "optimize, walk_forward: `fast=5:20:5`, `slow=20,30`, or a bare name" },
                "objective": { "type": "string", "description": "optimize, walk_forward" },
                "top": { "type": "integer", "description": "optimize" },
                "samples": { "type": "integer", "description": "optimize, walk_forward" },
                "windows": { "type": "integer", "description": "walk_forward" },
                "in_sample": { "type": "number", "description": "walk_forward" },
                "mode": { "type": "string", "enum": ["rolling", "anchored"], "description": "walk_forward" },
                "runs": { "type": "integer", "description": "monte_carlo" },
                "method": { "type": "string", "enum": ["bootstrap", "permutation"], "description": "monte_carlo" },
                "ruin": { "type": "number", "description": "monte_carlo" }
            }
        },
        "Job": {
            "type": "object",
            "properties": {
                "id": string, "kind": string,
                "state": { "type": "string", "enum": ["queued", "running", "succeeded", "failed", "cancelled", "timed_out"] },
                "progress": number, "priority": string, "strategy": string,
                "dataset": { "type": "array", "items": string },
                "policy": { "type": "object", "properties": { "name": string, "hash": string } },
                "created": string, "started": { "type": ["string", "null"] }, "finished": { "type": ["string", "null"] },
                "attempts": integer,
                "error": { "type": ["object", "null"], "properties": { "cause": string, "message": string } },
                "result": string
            }
        },
        "JobList": { "type": "object", "properties": { "jobs": { "type": "array", "items": { "$ref": "#/components/schemas/Job" } } } },
        "Result": { "type": "object", "description": "backtest: the document of `palisade backtest --json` (strategy.module is the strategy id); studies: kind, strategy, params, policy, seed and the study's report" },
        "PolicyList": { "type": "object", "properties": { "policies": { "type": "array", "items": { "type": "object", "properties": { "name": string, "hash": string, "source": string } } } } },
        "Policy": { "type": "object", "properties": { "name": string, "hash": string, "source": string, "policy": { "type": "object" }, "toml": string, "audit": { "type": "array" } } },
        "PolicyChange": { "type": "object", "properties": { "name": string, "hash": string, "previous_hash": { "type": ["string", "null"] }, "source": string } },
        "Status": { "type": "object" }
    })
}

fn reason(status: u16) -> &'static str {
    axum::http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error")
}

/// The whole document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for r in ROUTES {
        let mut op = Map::new();
        op.insert("summary".into(), json!(r.summary));
        if !r.auth {
            op.insert("security".into(), json!([]));
        }
        let mut parameters: Vec<Value> = Vec::new();
        let mut rest = r.path;
        while let Some(start) = rest.find('{') {
            let end = rest[start..].find('}').map_or(rest.len(), |e| start + e);
            parameters.push(json!({ "name": &rest[start + 1..end], "in": "path", "required": true, "schema": { "type": "string" } }));
            rest = &rest[end..];
        }
        for (name, ty, description) in r.query {
            parameters.push(json!({ "name": name, "in": "query", "required": *name == "name", "description": description, "schema": { "type": ty } }));
        }
        if !parameters.is_empty() {
            op.insert("parameters".into(), Value::Array(parameters));
        }
        if let Some((content, schema)) = r.body {
            op.insert(
                "requestBody".into(),
                json!({ "required": true, "content": { content: { "schema": { "$ref": format!("#/components/schemas/{schema}") } } } }),
            );
        }
        let mut responses = Map::new();
        for (status, content, schema) in r.ok {
            let mut resp = json!({ "description": reason(*status) });
            if !content.is_empty() {
                let schema = if schema.is_empty() {
                    json!({})
                } else {
                    json!({ "$ref": format!("#/components/schemas/{schema}") })
                };
                resp["content"] = json!({ *content: { "schema": schema } });
            }
            responses.insert(status.to_string(), resp);
        }
        for status in r.errors {
            responses.insert(
                status.to_string(),
                json!({ "description": reason(*status), "content": { "application/problem+json": { "schema": { "$ref": "#/components/schemas/Problem" } } } }),
            );
        }
        op.insert("responses".into(), Value::Object(responses));
        let entry = paths.entry(r.path.to_owned()).or_insert_with(|| json!({}));
        entry[r.method] = Value::Object(op);
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Palisade",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Sandboxed WebAssembly trading strategies: uploads, jobs, policies. Errors are application/problem+json."
        },
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "schemas": schemas()
        },
        "security": [{ "bearer": [] }],
        "paths": paths
    })
}
