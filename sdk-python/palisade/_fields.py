"""Handing ``next`` a bar's fields instead of a ``Bar``, where no strategy
could tell the difference: the runtime's fast path.

Building a ``Bar`` and reading its fields back costs, in the sandbox, about
a fifth of a sma-cross bar. A strategy whose ``next(self, bar)`` only
ever reads ``bar.<field>`` never needs the tuple: ``plan`` compiles a copy
of that method taking the fields it reads as arguments (``bar.close``
becomes a local bound to the close), and the event loop unpacks just those
fields from the host's bytes and calls the copy. The strategy's own
``next`` is left as it is (``self.next(bar)`` still works).

The copy is made only when nothing could observe it: the method is a plain
function defined in a top-level class of the strategy's source, takes
exactly ``(self, bar)``, and its body uses ``bar`` only as ``bar.<field>``
read, in no nested function, lambda, comprehension or class, no match value
pattern, no ``{...=}`` f-string field and no template string, with no ``super()``,
``__class__``, ``locals()``, ``vars()``, ``dir()``, ``eval`` or ``exec``,
and is not a generator; the source nowhere names what could look at a
frame, a function's code or the builtins (``_INTROSPECTION``); ``Bar``'s
accessors are its own; and the method the instance resolves when the run
starts is that one. Anything else, and the loop hands over a ``Bar`` as
always. Line numbers, the file name and the function's name are the
original's, so an exception reads the same either way. The copy is only
compiled, never run at module level: building it runs none of the
strategy's code.

What remains observable, by design: the fuel a run uses, and frames
reached by means the source does not name (none that the import allowlist
lets a strategy reach).
"""

import ast
import re
import struct
import warnings

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

_SCOPES = frozenset(
    {ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef, ast.GeneratorExp, ast.ListComp, ast.SetComp, ast.DictComp}
)
#: Nodes that make a ``next`` a generator or coroutine, and template
#: strings (Python 3.14), whose interpolations keep their source text.
_REFUSED = frozenset({ast.Yield, ast.YieldFrom, ast.Await} | ({ast.TemplateStr} if hasattr(ast, "TemplateStr") else set()))
#: Nodes that bind a name other than through an ``ast.Name`` (``_binds``).
_BINDERS = frozenset(
    {ast.ExceptHandler, ast.Global, ast.Nonlocal, ast.alias, ast.MatchAs, ast.MatchStar, ast.MatchMapping}
)
#: The accessors ``Bar`` was made with (a strategy that replaces one keeps
#: the ``Bar`` path).
_ACCESSORS = {f: Bar.__dict__[f] for f in Bar._fields}
#: Words in a source that could observe a frame's locals, a function's code
#: or the builtins (aliases included: the whole source is searched): such a
#: strategy keeps the ``Bar`` path.
_INTROSPECTION = re.compile(
    r"\b(locals|eval|exec|compile|getattr|__builtins__|__build_class__|__code__|__getattribute__"
    r"|__class__|__globals__|tb_frame|f_back|f_locals|f_code|gi_frame|cr_frame|ag_frame)\b"
    r"|\b(vars|dir)\s*\(\s*\)"
)
#: The copy's locals for the fields read: ``_palisade_<bar>_<field>`` (with
#: more leading underscores if the source has such a name anywhere).
_LOCAL_PREFIX = "_palisade_"


class Plan:
    """How the loop calls a strategy's ``next``: ``function(strategy,
    *values)``, for ``original`` (the strategy's ``next``), the values of
    ``fields`` (the fields the method reads, in the packing's order) read
    from a packed bar by ``unpack(bar)`` (its record alone) or
    ``unpack_from(data, offset)``."""

    __slots__ = ("function", "fields", "original", "unpack", "unpack_from")

    def __init__(self, function, fields, original, indicators=()):
        self.function = function
        self.fields = fields
        self.original = original
        layout = fields_struct(fields, indicators)
        self.unpack = layout.unpack
        self.unpack_from = layout.unpack_from


def _layout(indicators):
    """Where each field of a packed bar sits: ``_LAYOUT``, then one f64 per
    declared indicator; and the record's size."""
    layout = dict(_LAYOUT)
    for i, name in enumerate(indicators):
        layout[name] = (_BAR_SIZE + 8 * i, "d")
    return layout, _BAR_SIZE + 8 * len(indicators)


def fields_struct(fields, indicators=()):
    """A struct reading ``fields`` (in the packing's order) out of a packed
    bar followed by the values of ``indicators``."""
    layout, size = _layout(indicators)
    fmt, at = "<", 0
    for name in fields:
        offset, code = layout[name]
        if offset > at:
            fmt += f"{offset - at}x"
        fmt += code
        at = offset + struct.calcsize("<" + code)
    if at < size:
        fmt += f"{size - at}x"
    return struct.Struct(fmt)


def plan(cls, tree, source, filename, indicators=()):
    """The fast path for ``cls.next``, or ``None`` when the loop must hand
    over ``Bar`` tuples. ``source`` is the text of the module that defined
    the class, ``tree`` its AST (compiled from ``filename``; not changed);
    ``indicators`` the names of the declared indicators, fields after the
    bar's own. Never raises: whatever goes wrong leaves the ``Bar`` path."""
    try:
        return _plan(cls, tree, source, filename, tuple(indicators))
    except Exception:
        return None


def _plan(cls, tree, source, filename, indicators):
    found = _method(cls)
    if found is None:
        return None
    owner, function = found
    if function.__code__.co_filename != filename or _has_future_imports(tree):
        return None
    if _INTROSPECTION.search(source) or _bar_patched():
        return None
    node = _definition(tree, owner, function)
    if node is None:
        return None
    layout, _size = _layout(indicators)
    reads = _reads(node, layout)
    if reads is None:
        return None
    fields = tuple(f for f in layout if any(a.attr == f for a in reads))
    # The copy is the method's own lines with each `bar.<field>` read and
    # the `bar` parameter replaced by locals (edited at the AST's byte
    # offsets, so strings and comments are untouched), compiled inside a
    # class of the same name (private names are mangled as in the original)
    # on the same lines: parsing and compiling a function's text is the
    # interpreter's C code, far cheaper than rewriting an AST in Python.
    lines = source.encode("utf-8").splitlines(keepends=True)
    prefix = f"{_LOCAL_PREFIX}{node.args.args[1].arg}_"
    # Not a name the method or its nested code uses (as the compiler sees
    # names: normalized), nor one written anywhere in the source.
    used = _names(function.__code__)
    while any(prefix + f in used or prefix + f in source for f in fields):
        prefix = "_" + prefix
    local = {f: prefix + f for f in fields}
    bar_arg = node.args.args[1]
    edits = [(a.lineno, a.col_offset, a.end_col_offset, local[a.attr]) for a in reads]
    edits.append((bar_arg.lineno, bar_arg.col_offset, bar_arg.end_col_offset, ", ".join(local[f] for f in fields)))
    if any(a.end_lineno != a.lineno for a in reads) or bar_arg.end_lineno != bar_arg.lineno:
        return None
    for line, start, end, text in sorted(edits, reverse=True):
        b = lines[line - 1]
        lines[line - 1] = b[:start] + text.encode() + b[end:]
    body = b"".join(lines[node.lineno - 1 : node.end_lineno]).decode("utf-8")
    text = "\n" * (node.lineno - 2) + f"class {owner.__name__}:\n" + body
    with warnings.catch_warnings():
        # The original's compile warned already.
        warnings.simplefilter("ignore")
        module = compile(text, filename, "exec", dont_inherit=True)
    # Only compiled, never run: the copy is made from its code object, so
    # no class is built and no annotation evaluated again.
    code = _code_named(_code_named(module, owner.__name__), "next")
    if code is None or code.co_firstlineno != function.__code__.co_firstlineno or code.co_argcount != 1 + len(fields):
        return None
    copied = type(function)(code, function.__globals__, "next")
    if copied.__builtins__ is not function.__builtins__:
        # The module's builtins were replaced after `next` was defined.
        return None
    copied.__qualname__ = function.__qualname__
    copied.__module__ = function.__module__
    copied.__doc__ = function.__doc__
    return Plan(copied, fields, function, indicators)


def _code_named(code, name):
    """The code object named ``name`` among ``code``'s constants."""
    if code is None:
        return None
    for const in code.co_consts:
        if type(const) is type(code) and const.co_name == name:
            return const
    return None


def _names(code):
    """Every name ``code`` and the code nested in it use."""
    names = set(code.co_names) | set(code.co_varnames) | set(code.co_freevars) | set(code.co_cellvars)
    for const in code.co_consts:
        if type(const) is type(code):
            names |= _names(const)
    return names


def _bar_patched():
    """Whether ``Bar``'s field accessors are not the ones it was made with."""
    return any(Bar.__dict__.get(f) is not a for f, a in _ACCESSORS.items())


def plan_from_source(cls, indicators=()):
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
    return plan(cls, tree, source, filename, indicators)


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


def _reads(node, layout):
    """The ``bar.<field>`` reads (``ast.Attribute`` nodes, ``field`` in
    ``layout``) of a ``def next(self, bar)``, or ``None`` when ``bar`` is
    used in any other way or the method could observe the change (see the
    module's docstring)."""
    a = node.args
    if a.posonlyargs or len(a.args) != 2 or a.vararg or a.kwonlyargs or a.kwarg or a.defaults or a.kw_defaults:
        return None
    if getattr(node, "type_params", None) or node.returns is not None or a.args[0].annotation is not None:
        return None
    bar = a.args[1].arg
    reads, read_names = [], set()
    attribute, name, load = ast.Attribute, ast.Name, ast.Load
    # Depth first, each node before its children (an Attribute before the
    # Name it reads); a walk of its own, as ast.walk's generators cost
    # several times as much in the sandbox.
    stack = list(node.body)
    while stack:
        sub = stack.pop()
        kind = type(sub)
        if kind is attribute:
            value = sub.value
            if type(value) is name and value.id == bar and sub.attr in layout and type(sub.ctx) is load:
                reads.append(sub)
                read_names.add(id(value))
        elif kind is name:
            if sub.id in _OBSERVERS or (sub.id == bar and id(sub) not in read_names):
                return None
            continue
        elif kind in _REFUSED:
            return None
        elif kind is ast.MatchValue:
            value = sub.value
            if type(value) is attribute and type(value.value) is name and value.value.id == bar:
                # `case bar.close:` compares; `case local:` would capture.
                return None
        elif kind is ast.JoinedStr and _debug_text(sub, bar):
            return None
        elif kind in _SCOPES:
            if _mentions(sub, bar):
                return None
        elif kind in _BINDERS and _binds(sub, bar):
            return None
        for field in sub._fields:
            child = getattr(sub, field, None)
            if type(child) is list:
                stack.extend(c for c in child if isinstance(c, ast.AST))
            elif isinstance(child, ast.AST):
                stack.append(child)
    return reads


def _debug_text(joined, bar):
    """Whether an f-string shows ``bar``'s text with ``=`` (``{bar.close=}``
    prints "bar.close=", the copy would print its local's name)."""
    values = joined.values
    for i in range(1, len(values)):
        before = values[i - 1]
        if type(before) is ast.Constant and type(values[i]) is ast.FormattedValue:
            text = str(before.value).rstrip()
            if text.endswith("=") and f"{bar}." in text:
                return True
    return False


def _has_future_imports(tree):
    """Whether the module has ``from __future__ import ...`` (which changes
    how its code compiles: the copy would not)."""
    return any(isinstance(stmt, ast.ImportFrom) and stmt.module == "__future__" for stmt in tree.body)


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
