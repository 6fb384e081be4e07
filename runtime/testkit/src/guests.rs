//! The prebuilt guest modules of `guest-examples/` (`guest-examples/out/`).
//! The build script rebuilds them when a source is newer than a module, and
//! writes one constant per module with its path, and [`ALL`], every guest
//! (so a guest added without a test is noticed).

use std::path::PathBuf;

include!(concat!(env!("OUT_DIR"), "/guests.rs"));

/// The repository's root directory.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The bytes of the file at `path` (a guest constant of this module, say);
/// panics naming the path.
pub fn read(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The bytes of guest `name` (`sma_cross`, `adversary`, ...).
pub fn bytes(name: &str) -> Vec<u8> {
    read(&path(name))
}

/// The path of guest `name`, as text.
pub fn path(name: &str) -> String {
    ALL.iter()
        .find(|(n, _)| *n == name)
        .map(|(_, p)| (*p).to_owned())
        .unwrap_or_else(|| {
            panic!(
                "no guest {name}: the guests are {:?}",
                ALL.iter().map(|(n, _)| n).collect::<Vec<_>>()
            )
        })
}

/// The bundled sample bars (`data/sample/<file>`), as a path.
pub fn sample_path(file: &str) -> String {
    repo_root().join("data/sample").join(file).display().to_string()
}

/// The first `bars` bars of a sample CSV file in `data/sample/`.
pub fn sample_csv(file: &str, bars: usize) -> Vec<u8> {
    let text = std::fs::read_to_string(sample_path(file)).expect("sample data");
    let mut out: String = text.lines().take(bars + 1).collect::<Vec<_>>().join("\n");
    out.push('\n');
    out.into_bytes()
}
