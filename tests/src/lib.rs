//! End-to-end tests live in `all/` (one binary, one module per area); this
//! library is empty. `build.rs` builds the guest modules and exposes their
//! paths to the tests.
