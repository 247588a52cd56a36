"""Non-determinism mutation suite: every example's code changed, replayed against its history.

Each example is run once (the step driver of the harness) to record its
history. Then its workflow function's *source* is mutated with ``ast`` at
every site of five kinds: an activity renamed, two yielding statements
swapped, a yield added, a yielding statement removed, a sleep changed to an
activity call. Each mutant is compiled in the example module's namespace and
replayed against every recorded history of the example.

A mutant either changes the commands issued in that run, and must then be
reported as ``NonDeterminismError`` (the instance STUCK, nothing written)
naming the position and both sides; or it issues exactly the recorded
commands (the mutated statement is not reached with that input, e.g. an
``except`` block of a run that did not fail) and replays to the same end.
Anything else (a different end without an error) fails the test. Every kind
must be caught on every example that has a site for it; ``ctx.patched``
around an added call lets the change pass.
"""

from __future__ import annotations

import ast
import inspect
import sys
import textwrap
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from durable import Status
from durable.errors import NonDeterminismError
from durable.execution import FINAL_STATUS
from durable.history import Event, PatchMarker
from durable.replay import replay
from durable.testing import EPOCH
from durable.workflow import Activity, Workflow
from tests.reliability.harness import EXAMPLE_CASES, IID, Case, drive

KINDS = ("rename", "reorder", "add", "remove", "sleep_to_call")
NOW = EPOCH + timedelta(days=30)


def _noop() -> None:
    """What added or substituted calls run."""


NOOP: Activity[[], None] = Activity(_noop, name="rel_mutant_noop")


def _renamed(act: Activity[..., Any]) -> Activity[..., Any]:
    """The same function under another name (a rename in a new deploy)."""
    return Activity(act.fn, name=f"{act.name}_v2", retry=act.retry)


# ----------------------------------------------------------------------------- mutations


def _is_ctx_call(node: ast.AST, method: str) -> bool:
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == method
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "ctx"
    )


def _has_yield(node: ast.AST) -> bool:
    return any(isinstance(n, ast.Yield | ast.YieldFrom) for n in ast.walk(node))


def _blocks(fn: ast.FunctionDef) -> Iterator[list[ast.stmt]]:
    """Every statement list (function body, loop and try bodies, ...), outermost first."""
    for node in ast.walk(fn):
        for attr in ("body", "orelse", "finalbody", "handlers"):
            block = getattr(node, attr, None)
            if isinstance(block, list) and block and isinstance(block[0], ast.stmt):
                yield block


def _yielding_statements(fn: ast.FunctionDef) -> list[tuple[list[ast.stmt], int]]:
    """(block, index) of every simple statement that yields (not compound ones)."""
    found = []
    for block in _blocks(fn):
        for i, stmt in enumerate(block):
            simple = ast.Expr | ast.Assign | ast.AugAssign | ast.AnnAssign | ast.Return
            if isinstance(stmt, simple) and _has_yield(stmt):
                found.append((block, i))
    return found


def _sites(kind: str, fn: ast.FunctionDef) -> int:
    if kind == "rename":
        return sum(_is_ctx_call(n, "call") for n in ast.walk(fn))
    if kind == "sleep_to_call":
        return sum(_is_ctx_call(n, "sleep") for n in ast.walk(fn))
    return len(_yielding_statements(fn))


def _mutate(kind: str, fn: ast.FunctionDef, site: int) -> bool:
    """Apply mutation ``kind`` at ``site`` in place; False if it does not apply there."""
    if kind in ("rename", "sleep_to_call"):
        method = "call" if kind == "rename" else "sleep"
        node = [n for n in ast.walk(fn) if _is_ctx_call(n, method)][site]
        assert isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
        if kind == "rename":
            node.args[0] = ast.Call(ast.Name("_renamed", ast.Load()), [node.args[0]], [])
        else:
            node.func.attr = "call"
            node.args = [ast.Name("NOOP", ast.Load())]
        return True
    block, i = _yielding_statements(fn)[site]
    if kind == "add":
        extra = ast.parse("yield ctx.call(NOOP)").body[0]
        block.insert(i, extra)
    elif kind == "remove":
        block[i] = ast.Pass()
    elif kind == "reorder":
        later = [j for j in range(i + 1, len(block)) if _has_yield(block[j])]
        if not later:
            return False
        j = later[0]
        block[i], block[j] = block[j], block[i]
    return True


def _compile(original: Workflow[Any, Any], tree: ast.FunctionDef) -> Workflow[Any, Any]:
    """The mutated function, defined in the example module's namespace, as an unregistered
    workflow under the original's name (a new deploy of the same workflow)."""
    tree.decorator_list = []
    module = ast.fix_missing_locations(ast.Module([tree], type_ignores=[]))
    namespace = dict(vars(sys.modules[original.fn.__module__]))
    namespace.update(_renamed=_renamed, NOOP=NOOP)
    exec(compile(module, f"<mutant of {original.name}>", "exec"), namespace)
    return Workflow(namespace[tree.name], name=original.name, retry=original.retry)


def _source_tree(wf: Workflow[Any, Any]) -> ast.FunctionDef:
    tree = ast.parse(textwrap.dedent(inspect.getsource(wf.fn))).body[0]
    assert isinstance(tree, ast.FunctionDef)
    return tree


def mutants(wf: Workflow[Any, Any], kind: str) -> Iterator[tuple[int, Workflow[Any, Any]]]:
    for site in range(_sites(kind, _source_tree(wf))):
        tree = _source_tree(wf)
        if _mutate(kind, tree, site):
            yield site, _compile(wf, tree)


# ----------------------------------------------------------------------------- the suite


def _histories(case: Case) -> list[list[Event]]:
    return drive(case, None).histories[IID]


WORKFLOWS = {case.workflow.name: case.workflow for case in EXAMPLE_CASES}
HISTORIES: dict[str, list[list[Event]]] = {}


def _recorded(name: str) -> list[list[Event]]:
    """Every run's history of every case of the example (its branches: ok, failing, ...)."""
    if name not in HISTORIES:
        HISTORIES[name] = [
            h for case in EXAMPLE_CASES if case.workflow.name == name for h in _histories(case)
        ]
    return HISTORIES[name]


def _check_nde(error: NonDeterminismError, history: list[Event]) -> None:
    text = str(error)
    assert f"#{error.position}" in text and error.position >= 1
    assert error.recorded is not None or error.yielded is not None
    assert (error.recorded or "nothing") in text and (error.yielded or "nothing") in text
    assert error.instance_id == IID


@pytest.mark.parametrize("name", sorted(WORKFLOWS))
def test_every_mutation_of_every_example_is_caught(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    original = WORKFLOWS[name]
    histories = _recorded(name)
    for history in histories:  # the unmutated code replays its own histories cleanly
        decision = replay(original, history, [], NOW, instance_id=IID)
        assert decision.stuck is None and decision.events == []
    caught: Counter[str] = Counter()
    unreached: Counter[str] = Counter()
    sites: Counter[str] = Counter()
    for kind in KINDS:
        for site, mutant in mutants(original, kind):
            sites[kind] += 1
            detected = False
            for history in histories:
                decision = replay(mutant, history, [], NOW, instance_id=IID)
                if decision.stuck is not None:
                    detected = True
                    assert decision.status == Status.STUCK and decision.events == []
                    assert decision.consumed == []
                    _check_nde(decision.stuck, history)
                else:  # the mutated statement is not reached in this run: same commands, same end
                    assert decision.events == [], (kind, site, decision.events)
                    assert decision.status == Status(_final_status(history)), (kind, site)
            if detected:
                caught[kind] += 1
            else:
                unreached[kind] += 1
    with capsys.disabled():
        print(f"\n{name}: sites {dict(sites)}; caught {dict(caught)}; unreached {dict(unreached)}")
    for kind in KINDS:
        if sites[kind]:
            assert caught[kind] >= 1, f"no {kind} mutation of {name} was caught"
    # The recorded runs (ok, failing, timed out, ...) reach every site.
    assert not unreached, dict(unreached)


def _final_status(history: list[Event]) -> str:
    return FINAL_STATUS[type(history[-1])].value


@pytest.mark.parametrize("name", sorted(WORKFLOWS))
def test_a_change_behind_ctx_patched_replays_old_histories(name: str) -> None:
    original = WORKFLOWS[name]
    first: Workflow[Any, Any] | None = None
    for site in range(_sites("add", _source_tree(original))):
        tree = _source_tree(original)
        block, i = _yielding_statements(tree)[site]
        block.insert(i, ast.parse("if ctx.patched('rel-v2'):\n    yield ctx.call(NOOP)").body[0])
        patched = _compile(original, tree)
        first = first or patched
        for history in _recorded(name):
            decision = replay(patched, history, [], NOW, instance_id=IID)
            assert decision.stuck is None, (site, decision.stuck)
            assert decision.events == []
    # ...while a new instance takes the new path and records that it did.
    assert first is not None
    fresh = replay(first, _recorded(name)[0][:1], [], NOW, instance_id=IID)
    assert fresh.stuck is None
    assert any(isinstance(e, PatchMarker) for e in fresh.events)
    assert [w.activity for w in fresh.dispatch][:1] == [NOOP.name]
