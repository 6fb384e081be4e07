//! Validation of a module before anything runs: size, WebAssembly validity,
//! imports (only the ABI's, with the ABI's signatures), exports, declared
//! sizes, and the manifest. Each rejection names its reason.
//!
//! This reads the module's bytes only; it never compiles or runs guest code.

use palisade_host_api::manifest::{
    Manifest, ParamType, ParamValue, Warmup, MAX_NAME_LEN, MAX_PARAMS, MAX_SECTION_BYTES,
};
use palisade_host_api::{
    exports, FuncSig, ValType, ABI_VERSION, IMPORT_MODULE, MANIFEST_SECTION, REQUIRED_EXPORTS, SDK_VERSION,
};
use serde::Serialize;
use wasmparser::{ExternalKind, FuncType, Parser, Payload, TypeRef, Validator, WasmFeatures};

use palisade_run::{Cause, Failure, Policy};

/// What a strategy is written in: a WebAssembly core module (ABI v2), or
/// Python source run by the Python runtime component.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    #[default]
    Wasm,
    Python,
}

/// What validation learned about a module.
#[derive(Clone, Debug, Serialize)]
pub struct ModuleInfo {
    pub language: Language,
    pub manifest: Manifest,
    /// The module's bytes, or the Python source's.
    pub size_bytes: usize,
    /// `module.name` of every import.
    pub imports: Vec<String>,
    /// Names of every export.
    pub exports: Vec<String>,
    /// Functions, imported and defined.
    pub functions: u32,
    pub memory_min_pages: u64,
    pub memory_max_pages: Option<u64>,
    pub tables: u32,
}

impl ModuleInfo {
    /// What is known of a Python strategy once the runtime described it: its
    /// manifest and size (the rest describes the runtime, not the strategy).
    pub fn python(manifest: Manifest, size_bytes: usize) -> ModuleInfo {
        ModuleInfo::blank(Language::Python, manifest, size_bytes)
    }

    /// Nothing known yet but the language, manifest and size.
    fn blank(language: Language, manifest: Manifest, size_bytes: usize) -> ModuleInfo {
        ModuleInfo {
            language,
            manifest,
            size_bytes,
            imports: Vec::new(),
            exports: Vec::new(),
            functions: 0,
            memory_min_pages: 0,
            memory_max_pages: None,
            tables: 0,
        }
    }
}

/// WebAssembly features a guest may use. Threads, shared memory, 64-bit and
/// multiple memories, GC, exceptions and stack switching are refused: a guest
/// is one deterministic, single-threaded computation over one memory.
pub fn allowed_features() -> WasmFeatures {
    let mut f = WasmFeatures::default();
    for off in [
        WasmFeatures::THREADS,
        WasmFeatures::SHARED_EVERYTHING_THREADS,
        WasmFeatures::MULTI_MEMORY,
        WasmFeatures::MEMORY64,
        WasmFeatures::GC,
        WasmFeatures::EXCEPTIONS,
        WasmFeatures::LEGACY_EXCEPTIONS,
        WasmFeatures::STACK_SWITCHING,
        WasmFeatures::COMPONENT_MODEL,
        WasmFeatures::CUSTOM_PAGE_SIZES,
        WasmFeatures::WIDE_ARITHMETIC,
    ] {
        f.remove(off);
    }
    f
}

fn invalid(message: impl Into<String>) -> Failure {
    Failure::new(Cause::InvalidModule, message)
}

fn val_type(t: &wasmparser::ValType) -> Option<ValType> {
    match t {
        wasmparser::ValType::I32 => Some(ValType::I32),
        wasmparser::ValType::I64 => Some(ValType::I64),
        wasmparser::ValType::F64 => Some(ValType::F64),
        _ => None,
    }
}

fn matches(sig: &FuncSig, ty: &FuncType) -> bool {
    let same = |want: &[ValType], got: &[wasmparser::ValType]| {
        want.len() == got.len() && want.iter().zip(got).all(|(w, g)| val_type(g) == Some(*w))
    };
    same(sig.params, ty.params()) && same(sig.results, ty.results())
}

fn show_sig(params: &[ValType], results: &[ValType]) -> String {
    let list = |v: &[ValType]| {
        v.iter()
            .map(|t| match t {
                ValType::I32 => "i32",
                ValType::I64 => "i64",
                ValType::F64 => "f64",
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!("({}) -> ({})", list(params), list(results))
}

fn show_found(ty: &FuncType) -> String {
    let list = |v: &[wasmparser::ValType]| v.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(", ");
    format!("({}) -> ({})", list(ty.params()), list(ty.results()))
}

/// Validates `bytes` against the ABI and `policy`.
pub fn validate(bytes: &[u8], policy: &Policy) -> Result<ModuleInfo, Failure> {
    if bytes.len() as u64 > policy.module_bytes {
        return Err(invalid(format!(
            "module is {} bytes, the policy allows at most {} (module_bytes)",
            bytes.len(),
            policy.module_bytes
        )));
    }
    if !bytes.starts_with(b"\0asm") {
        return Err(invalid("not a WebAssembly module (missing the \\0asm header)"));
    }
    if bytes.len() >= 8 && bytes[4..8] != [1, 0, 0, 0] {
        return Err(invalid(
            "not a core WebAssembly module (components and other versions are not supported)",
        ));
    }
    Validator::new_with_features(allowed_features())
        .validate_all(bytes)
        .map_err(|e| invalid(format!("invalid WebAssembly: {e}")))?;
    // A module of another ABI version is told so first: its imports would
    // otherwise be reported one by one as unknown.
    if let Some(section) = manifest_section(bytes) {
        check_abi(section)?;
    }

    let mut types: Vec<FuncType> = Vec::new();
    let manifest = Manifest {
        abi: 0,
        name: String::new(),
        version: String::new(),
        description: None,
        warmup: None,
        params: Vec::new(),
    };
    let mut info = ModuleInfo::blank(Language::Wasm, manifest, bytes.len());
    let mut func_types: Vec<u32> = Vec::new();
    let mut memories = 0u32;
    let mut manifest: Option<&[u8]> = None;
    let mut export_funcs: Vec<(String, u32)> = Vec::new();
    let mut memory_exported = false;

    for payload in Parser::new(0).parse_all(bytes) {
        let payload = payload.map_err(|e| invalid(format!("invalid WebAssembly: {e}")))?;
        match payload {
            Payload::TypeSection(reader) => {
                for ty in reader.into_iter_err_on_gc_types() {
                    types.push(ty.map_err(|e| invalid(format!("type section: {e}")))?);
                }
            }
            Payload::ImportSection(reader) => {
                for import in reader.into_imports() {
                    let import = import.map_err(|e| invalid(format!("import section: {e}")))?;
                    let name = format!("{}.{}", import.module, import.name);
                    let sig = (import.module == IMPORT_MODULE)
                        .then(|| palisade_host_api::import(import.name))
                        .flatten();
                    let Some(sig) = sig else {
                        let why = if import.module.starts_with("wasi") {
                            " (WASI is not granted by this host)"
                        } else {
                            ""
                        };
                        return Err(Failure::new(
                            Cause::ForbiddenImport,
                            format!("forbidden import {name}{why}"),
                        ));
                    };
                    let (TypeRef::Func(index) | TypeRef::FuncExact(index)) = import.ty else {
                        return Err(Failure::new(
                            Cause::ForbiddenImport,
                            format!("forbidden import {name}: only functions may be imported"),
                        ));
                    };
                    let ty = &types[index as usize];
                    if !matches(sig, ty) {
                        return Err(invalid(format!(
                            "import {name} has signature {}, ABI v{ABI_VERSION} defines {}",
                            show_found(ty),
                            show_sig(sig.params, sig.results)
                        )));
                    }
                    func_types.push(index);
                    info.imports.push(name);
                }
            }
            Payload::FunctionSection(reader) => {
                for index in reader {
                    func_types.push(index.map_err(|e| invalid(format!("function section: {e}")))?);
                }
            }
            Payload::TableSection(reader) => {
                for table in reader {
                    let table = table.map_err(|e| invalid(format!("table section: {e}")))?;
                    info.tables += 1;
                    if table.ty.initial > u64::from(policy.table_elements) {
                        return Err(Failure::new(
                            Cause::InvalidModule,
                            format!(
                                "table {} declares {} elements, the policy allows {} (table_elements)",
                                info.tables - 1,
                                table.ty.initial,
                                policy.table_elements
                            ),
                        ));
                    }
                }
            }
            Payload::MemorySection(reader) => {
                for memory in reader {
                    let memory = memory.map_err(|e| invalid(format!("memory section: {e}")))?;
                    memories += 1;
                    info.memory_min_pages = memory.initial;
                    info.memory_max_pages = memory.maximum;
                }
            }
            Payload::StartSection { .. } => {
                return Err(invalid(
                    "start function not allowed: a module must not run code when it is instantiated",
                ));
            }
            Payload::ExportSection(reader) => {
                for export in reader {
                    let export = export.map_err(|e| invalid(format!("export section: {e}")))?;
                    info.exports.push(export.name.to_string());
                    match export.kind {
                        ExternalKind::Func | ExternalKind::FuncExact => {
                            export_funcs.push((export.name.to_string(), export.index))
                        }
                        ExternalKind::Memory if export.name == exports::MEMORY => memory_exported = true,
                        _ => {}
                    }
                }
            }
            Payload::CustomSection(reader) if reader.name() == MANIFEST_SECTION => {
                if manifest.is_some() {
                    return Err(invalid(format!(
                        "more than one {MANIFEST_SECTION} custom section"
                    )));
                }
                manifest = Some(reader.data());
            }
            _ => {}
        }
    }

    info.functions = func_types.len() as u32;
    if info.functions > policy.max_functions {
        return Err(invalid(format!(
            "module has {} functions, the policy allows {} (max_functions)",
            info.functions, policy.max_functions
        )));
    }
    if info.tables > policy.max_tables {
        return Err(invalid(format!(
            "module declares {} tables, the policy allows {} (max_tables)",
            info.tables, policy.max_tables
        )));
    }
    if memories != 1 || !memory_exported {
        return Err(invalid(format!(
            "module must define one memory and export it as \"{}\"",
            exports::MEMORY
        )));
    }
    let limit_pages = policy.memory_bytes / 65536;
    if info.memory_min_pages > limit_pages {
        return Err(Failure::new(
            Cause::MemoryLimit,
            format!(
                "memory declares {} pages ({} bytes) at start, the policy allows {} pages (memory_bytes = {})",
                info.memory_min_pages,
                info.memory_min_pages * 65536,
                limit_pages,
                policy.memory_bytes
            ),
        ));
    }
    for sig in REQUIRED_EXPORTS {
        let Some((_, index)) = export_funcs.iter().find(|(n, _)| n == sig.name) else {
            return Err(invalid(format!(
                "missing export {} (ABI v{ABI_VERSION})",
                sig.name
            )));
        };
        let ty = &types[func_types[*index as usize] as usize];
        if !matches(sig, ty) {
            return Err(invalid(format!(
                "export {} has signature {}, ABI v{ABI_VERSION} defines {}",
                sig.name,
                show_found(ty),
                show_sig(sig.params, sig.results)
            )));
        }
    }
    let Some(manifest) = manifest else {
        return Err(invalid(format!(
            "missing custom section {MANIFEST_SECTION} (build the strategy with palisade_sdk::strategy!)"
        )));
    };
    info.manifest = parse_manifest(manifest)?;
    Ok(info)
}

/// The first `palisade.manifest` custom section, if any.
fn manifest_section(bytes: &[u8]) -> Option<&[u8]> {
    Parser::new(0).parse_all(bytes).find_map(|payload| match payload {
        Ok(Payload::CustomSection(reader)) if reader.name() == MANIFEST_SECTION => Some(reader.data()),
        _ => None,
    })
}

/// Parses a manifest as JSON and checks that it declares this ABI version;
/// a module of ABI v1 is told which SDK to rebuild it with.
fn check_abi(bytes: &[u8]) -> Result<serde_json::Value, Failure> {
    if bytes.len() > MAX_SECTION_BYTES {
        return Err(invalid(format!(
            "manifest is {} bytes, at most {MAX_SECTION_BYTES} are allowed",
            bytes.len()
        )));
    }
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| invalid(format!("manifest is not valid JSON: {e}")))?;
    match value.get("abi").and_then(|v| v.as_u64()) {
        Some(v) if v == u64::from(ABI_VERSION) => Ok(value),
        Some(1) => Err(invalid(format!(
            "the module was built for ABI v1 (palisade-sdk 0.1), which this runtime no longer runs: ABI v1 handed a strategy bars ahead of the one it decided on; rebuild it with palisade-sdk {SDK_VERSION} (ABI v{ABI_VERSION})"
        ))),
        Some(v) => Err(invalid(format!(
            "manifest declares ABI version {v}; this runtime runs ABI v{ABI_VERSION} (palisade-sdk {SDK_VERSION})"
        ))),
        None => Err(invalid("manifest has no \"abi\" version number")),
    }
}

/// Parses and checks the manifest section.
pub fn parse_manifest(bytes: &[u8]) -> Result<Manifest, Failure> {
    if bytes.len() > MAX_SECTION_BYTES {
        return Err(invalid(format!(
            "manifest is {} bytes, at most {MAX_SECTION_BYTES} are allowed",
            bytes.len()
        )));
    }
    // Read the ABI version first so that a manifest of another version is
    // reported as such, not as a schema error.
    let value = check_abi(bytes)?;
    let m: Manifest = serde_json::from_value(value).map_err(|e| invalid(format!("manifest: {e}")))?;
    check_name("strategy name", &m.name)?;
    if m.params.len() > MAX_PARAMS {
        return Err(invalid(format!(
            "manifest declares {} parameters, at most {MAX_PARAMS} are allowed",
            m.params.len()
        )));
    }
    for (i, p) in m.params.iter().enumerate() {
        check_name("parameter name", &p.name)?;
        if m.params[..i].iter().any(|q| q.name == p.name) {
            return Err(invalid(format!("manifest declares parameter {} twice", p.name)));
        }
        let ctx = |what: &str| invalid(format!("manifest: parameter {}: {what}", p.name));
        match (p.ty, p.default) {
            (ParamType::Bool, ParamValue::Bool(_)) => {
                if p.min.is_some() || p.max.is_some() {
                    return Err(ctx("a bool has no min or max"));
                }
            }
            (ParamType::Bool, _) => return Err(ctx("default of a bool must be true or false")),
            (_, ParamValue::Bool(_)) => return Err(ctx("default must be a number")),
            (ty, ParamValue::Number(d)) => {
                let bounds = [Some(d), p.min, p.max];
                if bounds.iter().flatten().any(|v| !v.is_finite()) {
                    return Err(ctx("default, min and max must be finite"));
                }
                if ty == ParamType::Int && bounds.iter().flatten().any(|v| v.fract() != 0.0) {
                    return Err(ctx("default, min and max of an int must be whole numbers"));
                }
                if let (Some(lo), Some(hi)) = (p.min, p.max) {
                    if lo > hi {
                        return Err(ctx(&format!("min {lo} is greater than max {hi}")));
                    }
                }
                if p.min.is_some_and(|lo| d < lo) || p.max.is_some_and(|hi| d > hi) {
                    return Err(ctx(&format!("default {d} is outside [min, max]")));
                }
            }
        }
    }
    if let Some(Warmup::Param(name)) = &m.warmup {
        if !m.params.iter().any(|p| &p.name == name && p.ty == ParamType::Int) {
            return Err(invalid(format!(
                "manifest: warmup names {name}, which is not a declared int parameter"
            )));
        }
    }
    Ok(m)
}

fn check_name(what: &str, name: &str) -> Result<(), Failure> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "manifest: {what} {name:?} must be 1 to {MAX_NAME_LEN} characters of a-z, 0-9, _ and -"
        )))
    }
}
