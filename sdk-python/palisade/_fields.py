"""Handing ``next`` a bar's fields instead of a ``Bar``, where no strategy
could tell the difference: the runtime's fast path.

Building a ``Bar`` and reading its fields back costs, in the sandbox, about
a quarter of a sma-cross bar. A strategy whose ``next(self, bar)`` only
ever reads ``bar.<field>`` never needs the tuple: ``plan`` compiles a copy
of that method taking the fields it reads as arguments (``bar.close``
becomes a local bound to the close), and the event loop unpacks just those
fields from the host's bytes and calls the copy. The strategy's own
``next`` is left as it is (``self.next(bar)`` still works).

The copy is made only when nothing could observe it: the method is a plain
function defined in a top-level class of the strategy's source, takes
exactly ``(self, bar)``, and its body uses ``bar`` only as ``bar.<field>``
read, in no nested function, lambda, comprehension or class, with no
``super()``, ``__class__``, ``locals()``, ``vars()``, ``dir()``, ``eval`` or
``exec``, and is not a generator. Anything else, and the loop hands over a
``Bar`` as always. Line numbers, the file name and the function's name are
the original's, so an exception reads the same either way.
"""

import ast
import copy
import struct

from .strategy import Bar, Strategy

__all__ = ["Plan", "plan", "plan_from_source"]

#: Where each field sits in a packed bar (ABI v2's 56-byte ``Bar``) and its
#: struct code.
_LAYOUT = {
    "ts": (0, "q"),
    "symbol": (8, "i"),
    "open": (16, "d"),
    "high": (24, "d"),
    "low": (32, "d"),
    "close": (40, "d"),
    "volume": (48, "d"),
}
_BAR_SIZE = 56
assert tuple(_LAYOUT) == Bar._fields

#: Names whose use in ``next`` could observe its frame or its class (the
#: copy is compiled outside the class, with other local names).
_OBSERVERS = frozenset({"super", "__class__", "locals", "vars", "dir", "eval", "exec"})

_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef, ast.GeneratorExp, ast.ListComp, ast.SetComp, ast.DictComp)
_GENERATORS = (ast.Yield, ast.YieldFrom, ast.Await)


class Plan:
    """How the loop calls a strategy's ``next``: ``function(strategy,
    *values)``, the values of ``fields`` (the ``Bar`` fields the method
    reads, in ``Bar`` order) read from a packed bar by ``unpack(bar)`` (its
    56 bytes alone) or ``unpack_from(data, offset)``."""

    __slots__ = ("function", "fields", "unpack", "unpack_from")

    def __init__(self, function, fields):
        self.function = function
        self.fields = fields
        layout = fields_struct(fields)
        self.unpack = layout.unpack
        self.unpack_from = layout.unpack_from


def fields_struct(fields):
    """A struct reading ``fields`` (in ``Bar`` order) out of a packed bar."""
    fmt, at = "<", 0
    for name in fields:
        offset, code = _LAYOUT[name]
        if offset > at:
            fmt += f"{offset - at}x"
        fmt += code
        at = offset + struct.calcsize("<" + code)
    if at < _BAR_SIZE:
        fmt += f"{_BAR_SIZE - at}x"
    return struct.Struct(fmt)


def plan(cls, tree, filename):
    """The fast path for ``cls.next``, or ``None`` when the loop must hand
    over ``Bar`` tuples. ``tree`` is the AST of the source that defined the
    class (compiled from ``filename``). Never raises: whatever goes wrong
    (a source too deeply nested to copy, say) leaves the ``Bar`` path."""
    try:
        return _plan(cls, tree, filename)
    except Exception:
        return None


def _plan(cls, tree, filename):
    found = _method(cls)
    if found is None:
        return None
    owner, function = found
    if function.__code__.co_filename != filename:
        return None
    node = _definition(tree, owner, function)
    if node is None:
        return None
    rewritten = _rewrite(node)
    if rewritten is None:
        return None
    fn_node, fields = rewritten
    # Compiled inside a class of the same name, so that private names are
    # mangled as in the original.
    wrapper = ast.ClassDef(name=owner.__name__, bases=[], keywords=[], body=[fn_node], decorator_list=[])
    if "type_params" in ast.ClassDef._fields:
        wrapper.type_params = []
    module = ast.Module(body=[wrapper], type_ignores=[])
    ast.copy_location(wrapper, node)
    ast.fix_missing_locations(module)
    code = compile(module, filename, "exec", dont_inherit=True)
    scratch = {}
    exec(code, function.__globals__, scratch)
    return Plan(scratch[owner.__name__].__dict__["next"], fields)


def plan_from_source(cls):
    """``plan`` for a class imported the usual way (native tests): its
    module's source is read back, and no plan is made if it cannot be."""
    try:
        import inspect
        import sys

        found = _method(cls)
        if found is None:
            return None
        source = inspect.getsource(sys.modules[found[0].__module__])
        filename = found[1].__code__.co_filename
        tree = compile(source, filename, "exec", ast.PyCF_ONLY_AST, dont_inherit=True)
    except Exception:
        return None
    return plan(cls, tree, filename)


def _method(cls):
    """The plain function ``cls.next`` resolves to and the class defining
    it, or ``None`` (not overridden, or not a plain function)."""
    for klass in cls.__mro__:
        if "next" in klass.__dict__:
            function = klass.__dict__["next"]
            break
    else:
        return None
    if klass is Strategy or type(function) is not type(plan):
        return None
    if function.__closure__ or function.__defaults__ or function.__kwdefaults__:
        return None
    if klass.__qualname__ != klass.__name__ or function.__qualname__ != f"{klass.__name__}.next":
        return None
    return klass, function


def _definition(tree, owner, function):
    """The ``def next`` of ``owner`` in ``tree`` that made ``function``."""
    line = function.__code__.co_firstlineno
    for stmt in tree.body:
        if isinstance(stmt, ast.ClassDef) and stmt.name == owner.__name__:
            for item in stmt.body:
                if isinstance(item, ast.FunctionDef) and item.name == "next" and item.lineno == line:
                    return item if not item.decorator_list else None
    return None


def _rewrite(node):
    """A copy of ``node`` taking the fields it reads, with those fields, or
    ``None`` when ``bar`` is used in any other way."""
    a = node.args
    params = a.posonlyargs + a.args
    if len(params) != 2 or a.vararg or a.kwonlyargs or a.kwarg or a.defaults or a.kw_defaults:
        return None
    if getattr(node, "type_params", None):
        return None
    bar = params[1].arg
    reads = {}
    for sub in ast.walk(node):
        if (
            isinstance(sub, ast.Attribute)
            and isinstance(sub.value, ast.Name)
            and sub.value.id == bar
            and sub.attr in _LAYOUT
            and isinstance(sub.ctx, ast.Load)
        ):
            reads[id(sub.value)] = sub.attr
    for sub in ast.walk(node):
        if sub is node:
            continue
        if isinstance(sub, _GENERATORS):
            return None
        if isinstance(sub, ast.Name):
            if sub.id in _OBSERVERS or (sub.id == bar and id(sub) not in reads):
                return None
        elif isinstance(sub, _SCOPES) and _mentions(sub, bar):
            return None
        elif _binds(sub, bar):
            return None
    fields = tuple(f for f in _LAYOUT if f in reads.values())
    local = {f: f"{bar}.{f}" for f in fields}

    class Substitute(ast.NodeTransformer):
        def visit_Attribute(self, sub):
            if id(sub.value) in reads:
                return ast.copy_location(ast.Name(id=local[sub.attr], ctx=ast.Load()), sub)
            return self.generic_visit(sub)

    copied = copy.deepcopy(node)
    # deepcopy made new nodes: find the reads again in the copy.
    reads = {
        id(sub.value): sub.attr
        for sub in ast.walk(copied)
        if isinstance(sub, ast.Attribute) and isinstance(sub.value, ast.Name) and sub.value.id == bar
    }
    copied = Substitute().visit(copied)
    self_arg = ast.arg(arg=params[0].arg)
    copied.args = ast.arguments(
        posonlyargs=[],
        args=[self_arg] + [ast.arg(arg=local[f]) for f in fields],
        vararg=None,
        kwonlyargs=[],
        kw_defaults=[],
        kwarg=None,
        defaults=[],
    )
    for arg in copied.args.args:
        ast.copy_location(arg, params[0])
    copied.returns = None
    copied.decorator_list = []
    return copied, fields


def _mentions(scope, name):
    """Whether ``name`` appears as a variable or parameter inside ``scope``."""
    for sub in ast.walk(scope):
        if isinstance(sub, ast.Name) and sub.id == name:
            return True
        if isinstance(sub, ast.arg) and sub.arg == name:
            return True
        if _binds(sub, name):
            return True
    return False


def _binds(sub, name):
    """Whether ``sub`` binds ``name`` other than through an ``ast.Name``."""
    if isinstance(sub, ast.ExceptHandler):
        return sub.name == name
    if isinstance(sub, (ast.Global, ast.Nonlocal)):
        return name in sub.names
    if isinstance(sub, ast.alias):
        return (sub.asname or sub.name.partition(".")[0]) == name
    if isinstance(sub, (ast.MatchAs, ast.MatchStar)):
        return sub.name == name
    if isinstance(sub, ast.MatchMapping):
        return sub.rest == name
    return False
