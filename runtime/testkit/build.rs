//! Builds the guest strategies (through `scripts/build-guests.sh`) when a
//! module is missing or older than the sources it is built from, and writes
//! `guests.rs` into `OUT_DIR`: one constant per module with its path, and
//! `ALL`, the list of every Rust guest crate, so a guest added without tests
//! is noticed. The AssemblyScript sma-cross (`guest-examples/assemblyscript/`,
//! no Cargo.toml, so not in `ALL`) is built by the same script and gets its
//! own constant, `SMA_CROSS_AS`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

fn newest(dir: &Path, newest_seen: &mut SystemTime) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path
            .file_name()
            .is_some_and(|n| n == "target" || n == "out" || n == "node_modules")
        {
            continue;
        }
        if path.is_dir() {
            newest(&path, newest_seen);
        } else if let Ok(modified) = entry.metadata().and_then(|m| m.modified()) {
            *newest_seen = (*newest_seen).max(modified);
        }
    }
}

/// The AssemblyScript module `scripts/build-assemblyscript.sh` writes.
const AS_MODULE: &str = "sma_cross_as";

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("../..");
    let root = root.canonicalize().unwrap();
    let guests = root.join("guest-examples");
    for dir in [
        "guest-examples",
        "sdk/src",
        "host-api/src",
        "host-api/wit",
        "sdk-python/palisade",
        "sdk-python/component",
        "scripts/build-guests.sh",
        "scripts/build-assemblyscript.sh",
        "scripts/wasm-add-section.py",
        "scripts/build-python-runtime.sh",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }
    let members: Vec<String> = fs::read_dir(&guests)
        .unwrap()
        .flatten()
        .filter(|e| e.path().join("Cargo.toml").exists() && e.path().join("src").exists())
        .map(|e| e.file_name().to_string_lossy().replace('-', "_"))
        .collect();
    let mut sources = SystemTime::UNIX_EPOCH;
    for dir in [guests.clone(), root.join("sdk"), root.join("host-api")] {
        newest(&dir, &mut sources);
    }
    // Every module build-guests.sh writes: one per Rust crate, and the
    // AssemblyScript one.
    let outputs: Vec<String> = members.iter().cloned().chain([AS_MODULE.to_owned()]).collect();
    let stale = outputs.iter().any(|m| {
        let wasm = guests.join("out").join(format!("{m}.wasm"));
        wasm.metadata()
            .and_then(|m| m.modified())
            .map_or(true, |built| built < sources)
    });
    if stale {
        // A clean environment: cargo's variables for this build script
        // (RUSTFLAGS, jobserver, target) must not leak into the wasm build.
        let keep = [
            "PATH",
            "HOME",
            "USER",
            "LANG",
            "CARGO_HOME",
            "RUSTUP_HOME",
            "RUSTUP_TOOLCHAIN",
            "TMPDIR",
        ];
        let mut cmd = Command::new("bash");
        cmd.arg(root.join("scripts/build-guests.sh")).env_clear();
        for k in keep {
            if let Ok(v) = std::env::var(k) {
                cmd.env(k, v);
            }
        }
        let status = cmd.status().expect("run scripts/build-guests.sh");
        assert!(
            status.success(),
            "scripts/build-guests.sh failed: build the guests by hand to see why"
        );
    }
    // The Python runtime component: the script rebuilds it only when an
    // input changed.
    let mut cmd = Command::new("bash");
    cmd.arg(root.join("scripts/build-python-runtime.sh")).env_clear();
    for k in [
        "PATH",
        "HOME",
        "USER",
        "LANG",
        "TMPDIR",
        "PYENV_ROOT",
        "PYENV_VERSION",
    ] {
        if let Ok(v) = std::env::var(k) {
            cmd.env(k, v);
        }
    }
    let built = cmd.output().expect("run scripts/build-python-runtime.sh");
    assert!(
        built.status.success(),
        "scripts/build-python-runtime.sh failed: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    let python_runtime = root.join("sdk-python/out/palisade-python.wasm");
    assert!(
        python_runtime.exists(),
        "{} was not built",
        python_runtime.display()
    );

    let mut out = format!(
        "/// The Python runtime component (`scripts/build-python-runtime.sh`).\npub const PYTHON_RUNTIME: &str = {:?};\n",
        python_runtime.display().to_string()
    );
    let mut all = String::from("pub const ALL: &[(&str, &str)] = &[\n");
    for m in &members {
        let path = guests.join("out").join(format!("{m}.wasm"));
        assert!(path.exists(), "{} was not built", path.display());
        out.push_str(&format!(
            "pub const {}: &str = {:?};\n",
            m.to_uppercase(),
            path.display().to_string()
        ));
        all.push_str(&format!("    ({m:?}, {}),\n", m.to_uppercase()));
    }
    all.push_str("];\n");
    out.push_str(&all);
    let as_path = guests.join("out").join(format!("{AS_MODULE}.wasm"));
    assert!(as_path.exists(), "{} was not built", as_path.display());
    out.push_str(&format!(
        "/// The AssemblyScript sma-cross (`scripts/build-assemblyscript.sh`); not in `ALL`, which lists the Rust guest crates.\npub const {}: &str = {:?};\n",
        AS_MODULE.to_uppercase(),
        as_path.display().to_string()
    ));
    fs::write(
        PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("guests.rs"),
        out,
    )
    .unwrap();
}
