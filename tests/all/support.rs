//! Shared helpers: the workspace's test kit (`palisade-testkit`), under the
//! names these tests use.

#![allow(unused_imports)]

pub use palisade_testkit::bars::multi_walk as data;
pub use palisade_testkit::fixtures::*;
pub use palisade_testkit::guests::{self, read};
