"""Loads a strategy's source and runs it: what the sandboxed Python runtime
component calls (its ``describe`` and ``run`` exports), also usable natively.

- ``describe(filename, source)`` checks the source (syntax, imports against
  ``ALLOWED_MODULES``, exactly one ``Strategy`` subclass, its declarations)
  and returns its manifest, the JSON object of ABI v2's ``palisade.manifest``
  section (``host-api/src/lib.rs``, module ``manifest``). It calls no host
  function.
- ``run(filename, source, host)`` loads the source the same way, then drives
  the strategy over ``host``, an object with the WIT ``host`` interface's
  functions (``host-api/wit/palisade.wit``): ``init``, then per timestamp
  the fills (``on_fill``) and the bars (``on_timestamp``, by default ``next``
  per bar), and ``finish`` once after ``host.next()`` hands over no bars.
  ``host.next()`` returns the timestamp packed as bytes (``pack_next``
  writes that form, for hosts written in Python such as ``MockHost``);
  ``host.next_bar()``, when the host has it, returns a timestamp of one bar
  and no fill as that bar's 56 bytes alone, and ``b""`` for any other,
  which ``host.next()`` then hands over.
- ``execute(cls, host)`` is that loop for a class already loaded (native
  tests: ``palisade.testing.run_strategy``).

Failures are ``RuntimeFailure(kind, message)``, ``kind`` being a case of the
WIT world's ``error`` variant: ``syntax``, ``forbidden-import``, ``manifest``,
``exception``, ``out-of-memory``, ``recursion``. ``InvalidParams`` and
``StrategyError`` raised by the strategy are not failures of the runtime:
they become ``host.fail(kind, message)``, as in the Rust SDK.

What it deliberately does not do: it is not the sandbox. The allowlist keeps
strategies to modules that compute (no files, processes, network, clock
beyond the bar's time, or introspection modules); the isolation itself is the
WebAssembly sandbox around the interpreter, which grants no capability.
"""

import ast
import builtins
import json
import math
import struct
from collections import deque
from functools import partial
from itertools import repeat, starmap

from . import _fields
from .strategy import NAME_RE, Bar, Fill, Int, Strategy, StrategyError, bar_type, declared_params

__all__ = ["ALLOWED_MODULES", "RuntimeFailure", "describe", "execute", "manifest", "pack_next", "run"]

#: ``host.next()``'s packing (the WIT file): a header of two u32, the bar and
#: fill counts; the bars in ABI v2's 56-byte ``Bar`` layout (ts, symbol,
#: reserved, open, high, low, close, volume); the fills in its 48-byte
#: ``Fill`` layout (order id, ts, symbol, reserved, qty, price, commission).
_HEADER = struct.Struct("<II")
_BAR = struct.Struct("<qi4xddddd")
_FILL = struct.Struct("<qqi4xddd")
#: The length of a packing of one bar and no fill, what ``host.next_bar()``
#: returns without its header (no other count of bars and fills packs to it).
ONE_BAR_PACKING = _HEADER.size + _BAR.size


def pack_next(bars, fills=(), values=()):
    """One timestamp as ``host.next()`` returns it: ``bars`` as tuples
    ``(ts, symbol, open, high, low, close, volume)``, each followed by the
    declared indicators' values (``values``, a tuple of floats per bar, or
    none), ``fills`` as tuples ``(order_id, ts, symbol, qty, price,
    commission)``."""
    parts = [_HEADER.pack(len(bars), len(fills))]
    if values:
        parts += [_BAR.pack(*b) + struct.pack(f"<{len(v)}d", *v) for b, v in zip(bars, values, strict=True)]
    else:
        parts += [_BAR.pack(*b) for b in bars]
    parts += [_FILL.pack(*f) for f in fills]
    return b"".join(parts)

#: Top-level modules a strategy may import (with their submodules). Modules
#: that compute and nothing else: numbers, containers, algorithms, text,
#: dates, the seeded-by-the-run ``random`` (prefer ``self.random()``: the
#: host's stream, identical on every host), ``time`` (in the sandbox its
#: clocks are fixed to the bar's time) and the SDK. Deliberately absent:
#: anything touching the outside world (``os``, ``io``, ``pathlib``,
#: ``shutil``, ``socket``, ``subprocess``, ``urllib``, ``http``,
#: ``threading``, ``signal``) or the interpreter itself (``sys``,
#: ``importlib``, ``builtins``, ``ctypes``, ``gc``, ``inspect``, ``types``,
#: ``code``, ``pickle``, ``marshal``).
ALLOWED_MODULES = frozenset(
    {
        "abc",
        "array",
        "bisect",
        "cmath",
        "collections",
        "copy",
        "dataclasses",
        "datetime",
        "decimal",
        "enum",
        "fractions",
        "functools",
        "heapq",
        "itertools",
        "json",
        "math",
        "numbers",
        "operator",
        "palisade",
        "random",
        "re",
        "statistics",
        "string",
        "time",
        "typing",
    }
)

#: Most parameters a strategy may declare, longest manifest (ABI v2).
MAX_PARAMS = 64
MAX_MANIFEST_BYTES = 64 * 1024

#: The name strategy modules run under (``cls.__module__``).
MODULE_NAME = "strategy"

_real_import = builtins.__import__
#: ``len`` as it was when the SDK loaded (a strategy may replace the
#: builtin; what the SDK computes with it must not change).
_len = len


class RuntimeFailure(Exception):
    """Why the runtime could not describe or run a strategy. ``kind`` is a
    case of the WIT ``error`` variant, ``message`` its text."""

    def __init__(self, kind, message):
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message


class _ForbiddenImport(BaseException):
    """Raised by the import guard. A BaseException so that strategy code's
    ``except Exception`` does not swallow it (the loader also remembers the
    attempt, so even a bare ``except`` cannot hide it)."""

    def __init__(self, module):
        super().__init__(f"import of {module!r} is not allowed in a strategy")
        self.module = module


# ---------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------


def _statements(body):
    """Every statement in ``body`` and in the statements nested in them
    (with except handlers and match cases), in no particular order."""
    stack = list(body)
    while stack:
        node = stack.pop()
        yield node
        for field in ("body", "orelse", "finalbody", "handlers", "cases"):
            nested = getattr(node, field, None)
            if type(nested) is list:
                stack.extend(nested)


def _static_imports(tree, source):
    """Every module the source imports (including relative imports, imports
    inside functions and ``__import__("name")`` with a literal name), as
    (line, column, name, top-level name) in source order."""
    found = []
    # Import statements are statements: walking only those is far cheaper
    # in the sandbox than every node of a long source. A call of
    # `__import__` needs every node; its name is in the source's text
    # unless the source spells it with other characters that normalize to
    # it (only in a source that is not ASCII).
    if "__import__" in source or not source.isascii():
        nodes = ast.walk(tree)
    else:
        nodes = _statements(tree.body)
    for node in nodes:
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.append((node.lineno, node.col_offset, alias.name, alias.name.partition(".")[0]))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                name = "." * node.level + (node.module or "")
                found.append((node.lineno, node.col_offset, name, name))
            else:
                found.append((node.lineno, node.col_offset, node.module, node.module.partition(".")[0]))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "__import__"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            name = node.args[0].value
            found.append((node.lineno, node.col_offset, name, name.partition(".")[0]))
    found.sort(key=lambda f: (f[0], f[1]))
    return found


class _Loader:
    """Compiles and executes one strategy source under the import guard."""

    def __init__(self, filename, source):
        self.filename = filename
        self.source = source
        self.forbidden = None
        self.tree = None

    def guarded_import(self, name, globals=None, locals=None, fromlist=(), level=0):
        if level:
            self._forbid("." * level + (name or ""))
        if name.partition(".")[0] not in ALLOWED_MODULES:
            self._forbid(name)
        return _real_import(name, globals, locals, fromlist, level)

    def _forbid(self, name):
        if self.forbidden is None:
            self.forbidden = name
        raise _ForbiddenImport(name)

    def check_forbidden(self):
        if self.forbidden is not None:
            raise RuntimeFailure("forbidden-import", self.forbidden)

    def load(self):
        """Returns the strategy class defined by the source."""
        filename = self.filename
        try:
            tree = compile(self.source, filename, "exec", ast.PyCF_ONLY_AST, dont_inherit=True)
            code = compile(tree, filename, "exec", dont_inherit=True)
            self.tree = tree
        except SyntaxError as e:
            line = e.lineno if e.lineno is not None else 0
            raise RuntimeFailure("syntax", f"{filename}, line {line}: {e.msg}") from None
        except ValueError as e:  # e.g. a null byte in the source
            raise RuntimeFailure("syntax", f"{filename}, line 0: {e}") from None
        for _line, _col, name, top in _static_imports(tree, self.source):
            if top not in ALLOWED_MODULES:
                raise RuntimeFailure("forbidden-import", name)
        namespace = self.namespace()
        self.guard(exec, code, namespace)
        return find_strategy(namespace, filename)

    def fields_plan(self, cls, indicators=()):
        """The fast path's ``_fields.Plan`` for ``cls``, a class this source
        defined, whose bars carry the values of ``indicators``, or
        ``None``."""
        return _fields.plan(cls, self.tree, self.source, self.filename, indicators)

    def namespace(self):
        guarded_builtins = dict(builtins.__dict__)
        guarded_builtins["__import__"] = self.guarded_import
        return {"__name__": MODULE_NAME, "__file__": self.filename, "__builtins__": guarded_builtins}

    def guard(self, fn, *args):
        """Calls strategy code, turning what escapes it into a
        ``RuntimeFailure`` (a forbidden import wins over anything else)."""
        try:
            fn(*args)
        except _ForbiddenImport:
            pass
        except BaseException as e:
            self.check_forbidden()
            if _is_strategy_exception(e):
                raise _failure_from(e, self.filename) from None
            raise
        self.check_forbidden()


def _is_strategy_exception(e):
    """Exceptions the strategy's code raised (as opposed to a host signalling
    the end of the run by raising, as test hosts do in ``fail``)."""
    return isinstance(e, (Exception, SystemExit, KeyboardInterrupt, GeneratorExit)) or type(e).__module__ == MODULE_NAME


def _failure_from(exc, filename):
    if isinstance(exc, MemoryError):
        kind = "out-of-memory"
    elif isinstance(exc, RecursionError):
        kind = "recursion"
    else:
        kind = "exception"
    line = None
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == filename:
            line = tb.tb_lineno
        tb = tb.tb_next
    try:
        text = str(exc)
    except Exception:
        text = ""
    head = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    where = filename if line is None else f"{filename}, line {line}"
    return RuntimeFailure(kind, f"{head} ({where})")


def find_strategy(namespace, filename):
    """The one ``Strategy`` subclass the module defines (a class that other
    strategy classes of the module derive from counts as their base, not as
    a second strategy)."""
    found = [
        v
        for v in namespace.values()
        if isinstance(v, type) and issubclass(v, Strategy) and v is not Strategy and v.__module__ == MODULE_NAME
    ]
    leaves = [c for c in found if not any(o is not c and issubclass(o, c) for o in found)]
    if not leaves:
        raise RuntimeFailure(
            "manifest", f"{filename} defines no strategy: define one class deriving from palisade.Strategy"
        )
    if len(leaves) > 1:
        names = ", ".join(c.__name__ for c in leaves)
        raise RuntimeFailure(
            "manifest", f"{filename} defines {len(leaves)} strategies ({names}): define exactly one Strategy subclass"
        )
    return leaves[0]


# ---------------------------------------------------------------------------
# Manifest
# ---------------------------------------------------------------------------


def _kebab(name):
    out = []
    for i, ch in enumerate(name):
        if ch.isupper() and i > 0:
            prev = name[i - 1]
            nxt = name[i + 1] if i + 1 < len(name) else ""
            if prev.islower() or prev.isdigit() or (prev.isupper() and nxt.islower()):
                out.append("-")
        out.append(ch.lower())
    return "".join(out).replace("_", "-")


def _is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _param_entry(name, spec):
    def bad(what):
        return RuntimeFailure("manifest", f"parameter {name}: {what}")

    if NAME_RE.fullmatch(name) is None:
        raise RuntimeFailure("manifest", f"parameter name {name!r} must be 1 to 64 characters of a-z, 0-9, _ and -")
    if hasattr(Strategy, name):
        raise bad(f"the name hides Strategy.{name}; choose another name")
    entry = {"name": name, "type": spec.type}
    if spec.type == "bool":
        if not isinstance(spec.default, bool):
            raise bad("default of a Bool must be True or False")
        entry["default"] = spec.default
    else:
        values = {"default": spec.default, "min": spec.min, "max": spec.max}
        for key, v in values.items():
            if v is None and key != "default":
                continue
            if not _is_number(v):
                raise bad(f"{key} must be a number, not {v!r}")
            if not math.isfinite(v):
                raise bad(f"{key} must be finite, not {v!r}")
            if spec.type == "int":
                if v != int(v):
                    raise bad(f"{key} of an Int must be a whole number, not {v!r}")
                entry[key] = int(v)
            else:
                entry[key] = float(v)
        lo, hi, d = entry.get("min"), entry.get("max"), entry["default"]
        if lo is not None and hi is not None and lo > hi:
            raise bad(f"min {lo} is greater than max {hi}")
        if (lo is not None and d < lo) or (hi is not None and d > hi):
            raise bad(f"default {d} is outside [min, max] = [{lo}, {hi}]")
    if spec.description is not None:
        if not isinstance(spec.description, str):
            raise bad("description must be a string")
        entry["description"] = spec.description
    return entry


def manifest(cls):
    """The manifest of a strategy class, as a dict in ABI v2's schema (the
    ``palisade.manifest`` JSON object). Raises ``RuntimeFailure("manifest",
    ...)`` on a bad declaration."""
    if not (isinstance(cls, type) and issubclass(cls, Strategy)):
        raise RuntimeFailure("manifest", f"{cls!r} is not a Strategy subclass")
    name = cls.name if cls.name is not None else _kebab(cls.__name__)
    if not isinstance(name, str) or NAME_RE.fullmatch(name) is None:
        raise RuntimeFailure("manifest", f"strategy name {name!r} must be 1 to 64 characters of a-z, 0-9, _ and -")
    if not isinstance(cls.version, str):
        raise RuntimeFailure("manifest", f"version must be a string, not {cls.version!r}")
    out = {"abi": 2, "name": name, "version": cls.version}
    description = cls.description
    if description is None and cls.__doc__:
        lines = cls.__doc__.strip().splitlines()
        description = lines[0].strip() if lines else None
    if description is not None:
        if not isinstance(description, str):
            raise RuntimeFailure("manifest", "description must be a string")
        out["description"] = description
    params = declared_params(cls)
    if len(params) > MAX_PARAMS:
        raise RuntimeFailure("manifest", f"{len(params)} parameters are declared, at most {MAX_PARAMS} are allowed")
    entries = [_param_entry(n, spec) for n, spec in params.items()]
    warmup = cls.warmup
    if warmup is not None:
        if isinstance(warmup, str):
            if not isinstance(params.get(warmup), Int):
                raise RuntimeFailure("manifest", f"warmup names {warmup}, which is not a declared Int parameter")
        elif not _is_number(warmup) or not isinstance(warmup, int) or warmup < 0:
            raise RuntimeFailure(
                "manifest", f"warmup must be a bar count (an int >= 0) or an Int parameter's name, not {warmup!r}"
            )
        out["warmup"] = warmup
    keep = cls.keep_bars
    if not (keep is None or isinstance(keep, bool) or (isinstance(keep, int) and keep >= 0)):
        raise RuntimeFailure("manifest", f"keep_bars must be None, True, False or an int >= 0, not {keep!r}")
    out["params"] = entries
    if len(manifest_json(out).encode()) > MAX_MANIFEST_BYTES:
        raise RuntimeFailure("manifest", f"the manifest is longer than {MAX_MANIFEST_BYTES} bytes")
    return out


def manifest_json(m):
    """A manifest dict as the compact JSON the host reads."""
    return json.dumps(m, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


# ---------------------------------------------------------------------------
# describe / run
# ---------------------------------------------------------------------------


def _load(filename, source):
    loader = _Loader(filename, source)
    cls = loader.load()
    return loader, cls, manifest(cls)


def describe(filename, source):
    """Checks a strategy source and returns its manifest JSON."""
    _loader, _cls, m = _load(filename, source)
    return manifest_json(m)


def run(filename, source, host):
    """Loads a strategy source and runs it over ``host`` to the end."""
    loader, cls, _m = _load(filename, source)
    loader.guard(execute, cls, host, lambda indicators: loader.fields_plan(cls, indicators))


def _overrides(cls, method):
    return getattr(cls, method) is not getattr(Strategy, method)


def _uses_history(cls):
    """Whether any method of the class (or of its bases below ``Strategy``)
    mentions the attributes ``data`` or ``history``."""
    names = {"data", "history"}

    def code_uses(code):
        if names.intersection(code.co_names):
            return True
        return any(code_uses(c) for c in code.co_consts if hasattr(c, "co_names"))

    for klass in cls.__mro__:
        if klass is Strategy or klass is object:
            continue
        for value in vars(klass).values():
            if isinstance(value, (staticmethod, classmethod)):
                value = value.__func__
            elif isinstance(value, property):
                value = value.fget
            code = getattr(value, "__code__", None)
            if code is not None and code_uses(code):
                return True
    return False


def _history_containers(cls, n_symbols):
    keep = cls.keep_bars
    if keep is None:
        keep = True if _uses_history(cls) else 0
    if keep is False or keep == 0:
        return None
    if keep is True:
        return [[] for _ in range(n_symbols)]
    from collections import deque

    return [deque(maxlen=keep) for _ in range(n_symbols)]


def execute(cls, host, fields_plan=None):
    """Runs a loaded strategy class over ``host``: set-up, every timestamp,
    finish. ``InvalidParams`` and ``StrategyError`` become ``host.fail``;
    other exceptions propagate as raised. ``fields_plan(indicators)`` gives
    the fast path's ``_fields.Plan`` or ``None`` (default: made from the
    source of the class's module, when it can be read)."""
    strategy = object.__new__(cls)
    if fields_plan is None:
        fields_plan = partial(_fields.plan_from_source, cls)
    try:
        _execute(strategy, cls, host, fields_plan)
    except StrategyError as e:
        host.fail(e.kind, str(e) or type(e).__name__)


def _execute(strategy, cls, host, fields_plan):
    params = declared_params(cls)
    d = strategy.__dict__
    d["_host"] = host
    d["_params"] = params
    for name, spec in params.items():
        d[name] = spec.convert(host.param(name))
    n_symbols = max(int(host.symbol_count()), 1)
    histories = _history_containers(cls, n_symbols)
    if histories is not None:
        d["_histories"] = histories
        d["_history_views"] = [None] * n_symbols
    d["_indicator_names"] = []
    strategy.__init__()
    strategy.init()
    # Declaring is over; each bar is followed by the indicators' values.
    names = d["_indicator_names"] = tuple(d["_indicator_names"])
    record = struct.Struct(_BAR.format + "d" * _len(names)) if names else _BAR
    size = record.size
    bar_cls = bar_type(names)

    host_next = host.next
    new = tuple.__new__
    header, bar_at, fill_at = _HEADER.unpack_from, record.unpack_from, _FILL.unpack_from
    on_fill = strategy.on_fill if _overrides(cls, "on_fill") else None
    per_timestamp = _overrides(cls, "on_timestamp")

    def deliver_fills(data, nb, nf):
        # The fills follow the timestamp's nb bars (rare: off the hot path).
        base = 8 + size * nb
        for k in range(nf):
            on_fill(new(Fill, fill_at(data, base + 48 * k)))

    # The first timestamp comes first, so that the fast path's plan (about
    # as much fuel as loading the source) is made in its window, not init's.
    data = host_next()
    _check_packing(data, size)
    if histories is None and not per_timestamp:
        # The hot loop of most strategies: `next` per bar, no history, and
        # no Python code of the loop's own per bar: chained iterators call
        # `next`. With one symbol, almost every timestamp is one bar and no
        # fill, which host.next_bar() hands over alone (its 56 bytes); it
        # returns b"" for any other (fills, the end), which host.next() then
        # hands over whole. With several symbols, host.next() hands over
        # each.
        next_bar = getattr(host, "next_bar", None) if n_symbols == 1 else None
        plan = fields_plan(names)
        on_bar = strategy.next
        if plan is not None and not (
            getattr(on_bar, "__func__", None) is plan.original and getattr(on_bar, "__self__", None) is strategy
        ):
            # What runs is not the method planned (an instance attribute, a
            # class swapped in init, a __getattribute__ of its own).
            plan = None
        if plan is not None:
            # `next` reads only fields of its bar: it gets them (see _fields).
            on_bar = plan.function.__get__(strategy)
            alone, fields_at = plan.unpack, plan.unpack_from

            def lone_bars():
                return starmap(on_bar, map(alone, iter(next_bar, b"")))

            def bars_of(data, nb):
                return starmap(on_bar, map(fields_at, repeat(data, nb), range(8, 8 + size * nb, size)))
        else:
            make_bar = partial(new, bar_cls)

            def lone_bars():
                return map(on_bar, map(make_bar, map(record.unpack, iter(next_bar, b""))))

            def bars_of(data, nb):
                return map(on_bar, map(make_bar, map(bar_at, repeat(data, nb), range(8, 8 + size * nb, size))))

        drain = deque(maxlen=0).extend
        while True:
            nb, nf = header(data)
            if not nb:
                break
            if nf and on_fill is not None:
                deliver_fills(data, nb, nf)
            drain(bars_of(data, nb))
            if next_bar is not None:
                drain(lone_bars())
            data = host_next()
    else:
        on_timestamp = strategy.on_timestamp
        appends = None if histories is None else [h.append for h in histories]
        while True:
            nb, nf = header(data)
            if not nb:
                break
            if nf and on_fill is not None:
                deliver_fills(data, nb, nf)
            batch = [new(bar_cls, bar_at(data, off)) for off in range(8, 8 + size * nb, size)]
            if appends is not None:
                # Every bar of this timestamp is recorded before any is
                # handled: all are known at its close, none is later.
                for bar in batch:
                    appends[bar[1]](bar)
            on_timestamp(batch)
            data = host_next()
    strategy.finish()


def _check_packing(data, size):
    """Checks that the first timestamp's bars take ``size`` bytes each (the
    bar and the indicators the SDK declared): an indicator declared on the
    host behind the SDK's back would garble every bar."""
    nb, nf = _HEADER.unpack_from(data)
    if _len(data) != _HEADER.size + size * nb + _FILL.size * nf:
        raise StrategyError(
            f"the host hands over {_len(data)} bytes for {nb} bars and {nf} fills, not the "
            f"{size} bytes a bar the indicators declared through self.indicator make: "
            "an indicator was declared on the host directly"
        )

