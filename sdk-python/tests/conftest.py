"""Shared helpers: strategy sources as text, loading the examples."""

import pathlib
import textwrap

import pytest

from palisade import _runtime

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"


def src(text):
    """A strategy source from an indented triple-quoted string."""
    return textwrap.dedent(text).lstrip("\n")


def load_class(source, filename="strategy.py"):
    """The strategy class a source defines, loaded as the runtime loads it."""
    return _runtime._Loader(filename, source).load()


def example(name):
    """The strategy class of ``examples/<name>.py``."""
    path = EXAMPLES / f"{name}.py"
    return load_class(path.read_text(), path.name)


def failure(fn, *args):
    """The RuntimeFailure ``fn(*args)`` raises, as (kind, message)."""
    with pytest.raises(_runtime.RuntimeFailure) as info:
        fn(*args)
    return info.value.kind, info.value.message
