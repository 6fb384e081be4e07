"""The Python runtime component's entry points: the glue between the WIT
world `palisade:strategy/python-strategy` (host-api/wit/palisade.wit) and the
SDK's loader and event loop (`palisade._runtime`).

componentize-py imports this module when it builds the component and
snapshots the interpreter's heap afterwards, so everything imported here
exists at run time and nothing else does: the strategy module allowlist is
imported below, once, at build time.
"""

import dis
import sys
from functools import partial
from types import SimpleNamespace

import componentize_py_runtime
import wit_world
from componentize_py_types import Err
from wit_world.imports import host as _host_module

from palisade import _runtime

for _name in sorted(_runtime.ALLOWED_MODULES):
    __import__(_name)


def _direct(function):
    """A host import without arguments, called without the Python frame of
    componentize-py's generated wrapper, whose whole body is
    ``return componentize_py_runtime.call_import(INDEX, [])``: the same call
    as a ``partial``, which the event loop's iterators call from C. The
    wrapper itself if its code is not that (another componentize-py)."""
    steps = [(i.opname, i.argval) for i in dis.get_instructions(function)]
    shape = [
        ("RESUME", 0),
        ("LOAD_GLOBAL", "componentize_py_runtime"),
        ("LOAD_ATTR", "call_import"),
        ("PUSH_NULL", None),
        ("LOAD_SMALL_INT", None),
        ("BUILD_LIST", 0),
        ("CALL", 2),
        ("STORE_FAST", "result"),
        ("LOAD_FAST_BORROW", "result"),
        ("RETURN_VALUE", None),
    ]
    if len(steps) != len(shape) or function.__code__.co_argcount:
        return function
    for (op, arg), (want_op, want_arg) in zip(steps, shape):
        if op != want_op or (want_arg is not None and arg != want_arg):
            return function
    index = steps[4][1]
    if type(index) is not int:
        return function
    return partial(componentize_py_runtime.call_import, index, [])


#: The `host` interface as the SDK uses it: the generated functions, with
#: the two called once per timestamp made direct.
host = SimpleNamespace(**{n: getattr(_host_module, n) for n in dir(_host_module) if not n.startswith("_")})
host.next = _direct(_host_module.next)
host.next_bar = _direct(_host_module.next_bar)

_ERRORS = {
    "syntax": wit_world.Error_Syntax,
    "forbidden-import": wit_world.Error_ForbiddenImport,
    "manifest": wit_world.Error_Manifest,
    "exception": wit_world.Error_Exception,
    "out-of-memory": wit_world.Error_OutOfMemory,
    "recursion": wit_world.Error_Recursion,
}

# A line longer than this is logged in pieces (the host bounds what it keeps).
_MAX_PENDING = 4096


class _HostLines:
    """`sys.stdout`/`sys.stderr` during a run: each line a host log line."""

    def __init__(self, level):
        self.level = level
        self.pending = ""

    def write(self, text):
        text = str(text)
        pending = self.pending + text
        lines = pending.split("\n")
        self.pending = lines.pop()
        for line in lines:
            host.log(self.level, line)
        while len(self.pending) > _MAX_PENDING:
            host.log(self.level, self.pending[:_MAX_PENDING])
            self.pending = self.pending[_MAX_PENDING:]
        return len(text)

    def flush(self):
        if self.pending:
            host.log(self.level, self.pending)
            self.pending = ""

    def isatty(self):
        return False


def _error(failure):
    return Err(_ERRORS.get(failure.kind, wit_world.Error_Exception)(failure.message))


def _escaped(exc):
    """An exception that escaped the SDK itself (not the strategy's code)."""
    if isinstance(exc, MemoryError):
        return Err(wit_world.Error_OutOfMemory(f"MemoryError: {exc}"))
    if isinstance(exc, RecursionError):
        return Err(wit_world.Error_Recursion(f"RecursionError: {exc}"))
    return Err(wit_world.Error_Exception(f"{type(exc).__name__}: {exc}"))


def _guarded(call, *args):
    """`call(*args)`, with every failure as the WIT `error` variant."""
    try:
        return call(*args)
    except _runtime.RuntimeFailure as failure:
        raise _error(failure) from None
    except Err:
        raise
    except BaseException as exc:
        raise _escaped(exc) from None


class WitWorld(wit_world.WitWorld):
    def describe(self, filename: str, source: str) -> str:
        return _guarded(_runtime.describe, filename, source)

    def run(self, filename: str, source: str) -> None:
        out, err = _HostLines(2), _HostLines(1)
        sys.stdout, sys.stderr = out, err
        try:
            _guarded(_runtime.run, filename, source, host)
        finally:
            out.flush()
            err.flush()
