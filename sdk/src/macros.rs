//! The [`strategy!`](crate::strategy) macro.

/// Exports a [`Strategy`](crate::Strategy) as a Palisade module and writes its
/// manifest.
///
/// ```ignore
/// palisade_sdk::strategy! {
///     strategy: SmaCross,
///     name: "sma-cross",
///     version: "0.1.0",
///     description: "long-only moving-average crossover",
///     warmup: "slow",
///     params: {
///         fast: int = 10, min = 2, max = 200, doc = "fast SMA length";
///         slow: int = 30, min = 3, max = 500, doc = "slow SMA length";
///         size: float = 1.0, min = 0.0001, max = 1000000.0, doc = "units per trade";
///     }
/// }
/// ```
///
/// Types are `int`, `float` or `bool`; `min`, `max`, `doc`, `description` and
/// `warmup` (a bar count or the name of an `int` parameter) are optional.
/// Write numbers as plain decimals (no `_` separators, no suffixes): they are
/// copied into the JSON manifest as written, and the host rejects a manifest
/// that is not valid JSON when the module is loaded.
///
/// On wasm32 this emits the `palisade_run` export and the `palisade.manifest`
/// custom section; on every target it defines `pub const MANIFEST_JSON: &str`
/// so native tests can read the manifest.
#[macro_export]
macro_rules! strategy {
    (
        strategy: $ty:ty,
        name: $name:literal,
        version: $version:literal,
        $(description: $desc:literal,)?
        $(warmup: $warmup:literal,)?
        params: {
            $( $pname:ident : $pty:ident = $pdef:expr
               $(, min = $pmin:expr)? $(, max = $pmax:expr)? $(, doc = $pdoc:literal)? ; )*
        } $(,)?
    ) => {
        const __PALISADE_MANIFEST_HEAD: &str = concat!(
            "{\"abi\":2,\"name\":", stringify!($name),
            ",\"version\":", stringify!($version),
            $(",\"description\":", stringify!($desc),)?
            $(",\"warmup\":", stringify!($warmup),)?
            ",\"params\":["
        );
        const __PALISADE_MANIFEST_PARAMS: &[&str] = &[$(
            concat!(
                "{\"name\":\"", stringify!($pname),
                "\",\"type\":\"", stringify!($pty),
                "\",\"default\":", stringify!($pdef)
                $(, ",\"min\":", stringify!($pmin))?
                $(, ",\"max\":", stringify!($pmax))?
                $(, ",\"description\":", stringify!($pdoc))?,
                "}"
            )
        ),*];
        const __PALISADE_MANIFEST_LEN: usize = $crate::__private::manifest_len(
            __PALISADE_MANIFEST_HEAD,
            __PALISADE_MANIFEST_PARAMS,
            "]}",
        );
        const __PALISADE_MANIFEST_BYTES: [u8; __PALISADE_MANIFEST_LEN] =
            $crate::__private::manifest_bytes(
                __PALISADE_MANIFEST_HEAD,
                __PALISADE_MANIFEST_PARAMS,
                "]}",
            );

        /// This strategy's `palisade.manifest` (JSON).
        pub const MANIFEST_JSON: &str =
            match $crate::__private::core::str::from_utf8(&__PALISADE_MANIFEST_BYTES) {
                Ok(text) => text,
                Err(_) => panic!("manifest is not UTF-8"),
            };

        #[cfg(target_arch = "wasm32")]
        #[unsafe(link_section = "palisade.manifest")]
        #[used]
        static __PALISADE_MANIFEST: [u8; __PALISADE_MANIFEST_LEN] = __PALISADE_MANIFEST_BYTES;

        /// The module's entry point (ABI v2).
        #[cfg(target_arch = "wasm32")]
        #[unsafe(no_mangle)]
        pub extern "C" fn palisade_run() -> i32 {
            $crate::__private::run_export::<$ty>()
        }
    };
}
