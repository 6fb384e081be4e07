"""Request bodies schemathesis cannot derive from the OpenAPI document.

The document says an upload is `application/wasm`, a dataset `text/csv`
and a policy `application/toml`: raw bytes with no JSON Schema of their
content. These strategies mix real content (the example modules, slices of
the sample bars, the shipped policies), so that uploads succeed and the
stateful phase gets ids to use, with mangled and random content, so that
every refusal path is exercised too. Loaded through SCHEMATHESIS_HOOKS by
scripts/api-fuzz.sh, which sets PALISADE_ROOT.
"""

import os
from pathlib import Path

import schemathesis
from hypothesis import strategies as st

ROOT = Path(os.environ.get("PALISADE_ROOT", Path(__file__).resolve().parents[2]))

MODULES = [p.read_bytes() for p in sorted((ROOT / "guest-examples/out").glob("*.wasm"))]
if not MODULES:
    raise SystemExit("no guest modules in guest-examples/out: run scripts/build-guests.sh first")
CSV_LINES = (ROOT / "data/sample/spy-like-daily.csv").read_text().splitlines()
POLICIES = [p.read_bytes() for p in sorted((ROOT / "policies").glob("*.toml"))]


@st.composite
def mangled(draw, originals):
    """One of `originals` with a slice cut out or random bytes spliced in."""
    data = bytearray(draw(st.sampled_from(originals)))
    at = draw(st.integers(0, len(data)))
    if draw(st.booleans()):
        data[at:] = data[at + draw(st.integers(1, 64)):]
    else:
        data[at:at] = draw(st.binary(min_size=1, max_size=64))
    return bytes(data)


@st.composite
def csv_slice(draw):
    """A header and a run of consecutive sample bars (sometimes none)."""
    start = draw(st.integers(1, len(CSV_LINES) - 1))
    count = draw(st.integers(0, 300))
    return "\n".join([CSV_LINES[0], *CSV_LINES[start:start + count]]).encode() + b"\n"


@st.composite
def mangled_text(draw, originals):
    """One of `originals` (UTF-8) with a slice cut out or text spliced in."""
    text = draw(st.sampled_from(originals)).decode()
    at = draw(st.integers(0, len(text)))
    if draw(st.booleans()):
        text = text[:at] + text[at + draw(st.integers(1, 64)):]
    else:
        text = text[:at] + draw(st.text(min_size=1, max_size=64)) + text[at:]
    return text.encode()


# An empty body is a missing one (400 "the body is empty"), not content a
# schema could describe: every strategy gives at least one byte.
nonempty_binary = st.binary(min_size=1, max_size=256)


@st.composite
def policy_text(draw):
    """A few keys of the policy format with values of any sign and size."""
    keys = ["memory_bytes", "fuel_per_event", "deadline_per_event_ms", "stack_bytes",
            "orders_per_event", "log_bytes", "max_variants", "compile_ms", "unknown_key"]
    chosen = draw(st.lists(st.sampled_from(keys), min_size=1, max_size=4, unique=True))
    value = st.one_of(st.integers(-10, 10**12).map(str), st.text(max_size=8).map(repr))
    return "".join(f"{k} = {draw(value)}\n" for k in chosen).encode()


schemathesis.openapi.media_type(
    "application/wasm",
    st.one_of(st.sampled_from(MODULES), mangled(MODULES), nonempty_binary),
)
schemathesis.openapi.media_type(
    "text/csv",
    st.one_of(csv_slice(), nonempty_binary),
)
schemathesis.openapi.media_type(
    "application/toml",
    # A policy is text: bytes that are not UTF-8 are malformed (400).
    st.one_of(st.sampled_from(POLICIES), policy_text(), mangled_text(POLICIES),
              st.text(min_size=1, max_size=128).map(str.encode)),
)


def _anchor_patterns(node):
    """Rewrites each `pattern` ending in `$` to end in `\\Z`, in place."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "pattern" and isinstance(value, str) and value.endswith("$") \
                    and not value.endswith("\\$"):
                node[key] = value[:-1] + "\\Z"
            else:
                _anchor_patterns(value)
    elif isinstance(node, list):
        for item in node:
            _anchor_patterns(item)


@schemathesis.hook
def before_load_schema(ctx, raw_schema):
    """The document's patterns are ECMA-262 regexes, where `$` is the end of
    the string; in Python's `re`, which generates the tests, `$` also
    matches before a final newline, so `^[0-9a-f]{64}$` would yield ids
    ending in "\\n" that the document does not allow. `\\Z` is Python's
    end of string."""
    _anchor_patterns(raw_schema)
