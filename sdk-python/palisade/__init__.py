"""Palisade's Python SDK: write a trading strategy as a ``Strategy``
subclass, test it natively with pytest (``palisade.testing``), and run it in
Palisade's WebAssembly sandbox (``palisade backtest strategy.py``).

Guide: ``docs/python.md``. The pieces: ``Strategy`` and the parameter
declarations ``Int``, ``Float``, ``Bool`` (``palisade.strategy``), streaming
indicators with the Rust SDK's exact values (``palisade.indicators``), a mock
host for tests (``palisade.testing``), and the loader and event loop the
sandboxed runtime calls (``palisade._runtime``).
"""

from . import indicators, strategy
from .strategy import Bar, Bool, Fill, Float, History, Int, InvalidParams, OrderError, Strategy, StrategyError

__version__ = "0.2.0"

__all__ = [*strategy.__all__, "indicators"]
