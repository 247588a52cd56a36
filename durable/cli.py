"""The ``durable`` command line: run, start, worker, serve, status, history, signal, cancel, terminate,
list, replay, synth, deploy, destroy.

Every command works on a SQLite store, ``.durable/durable.db`` in the current
folder unless ``--db`` names another one; ``start``, ``status``, ``history``,
``signal``, ``cancel``, ``terminate`` and ``list`` call the HTTP API instead
with ``--endpoint URL`` (or ``DURABLE_ENDPOINT``; see :mod:`durable.remote`),
which ``serve`` provides locally. Workflow code comes from files
(``FILE.py:WORKFLOW``, ``--module FILE.py`` or ``[tool.durable] modules`` in
``pyproject.toml``; see :mod:`durable.loader`).

Output: results and tables go to stdout, progress and errors to stderr (and
``run`` sends whatever the workflow's activities print to stderr too, so that
stdout carries only the result JSON). Exit codes:

* 0: done (``replay``: the history replays consistently);
* 1: the workflow did not complete (FAILED, CANCELED, TERMINATED, STUCK),
  ``replay`` found non-determinism, or a worker reported instances it cannot run;
* 2: bad invocation: bad JSON, missing file, unknown workflow or instance,
  instance already ended (one ``error:`` line, no traceback);
* 130: interrupted with Ctrl-C (the instance is saved; run the command again).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, NoReturn, ParamSpec, TypeVar

import pydantic
import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from durable._cli_views import (
    ALL,
    Labels,
    Progress,
    Subtree,
    WorkerReport,
    details,
    one_line_text,
    short,
    when,
)
from durable.codec import decode, encode
from durable.errors import (
    DurableError,
    InstanceExistsError,
    InstanceNotFoundError,
    NonDeterminismError,
)
from durable.history import (
    CancelMessage,
    CommandEvent,
    Event,
    EventMessage,
    InstanceStatus,
    Message,
    Status,
    TerminateMessage,
    WorkflowStarted,
    dump_history,
    load_history,
    utcnow,
)
from durable.loader import configured_modules, load_modules, load_workflow
from durable.remote import RemoteApi, quote_segment
from durable.runtime.local import Runtime
from durable.runtime.start import check_instance_id, check_text, create_instance, encode_input
from durable.runtime.step import step
from durable.store import DEFAULT_DB, HistoryStore, open_store
from durable.testing import replay_history
from durable.workflow import Workflow, get_workflow, registered_workflows

P = ParamSpec("P")
R = TypeVar("R")

EXIT_NOT_COMPLETED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

_UNFINISHED = [Status.PENDING, Status.RUNNING, Status.STUCK]

app = typer.Typer(
    name="durable",
    help="Code-first durable workflows: run, inspect and drive workflow instances.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# ----------------------------------------------------------------------------- options

DbOption = Annotated[
    str,
    typer.Option(
        "--db",
        help="The store: a SQLite file path (or sqlite:///path URL).",
        show_default=True,
    ),
]
IdArgument = Annotated[str, typer.Argument(help="The instance id.", show_default=False)]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
ReasonOption = Annotated[str, typer.Option("--reason", help="Why (recorded in the history).")]

EndpointOption = Annotated[
    str | None,
    typer.Option(
        "--endpoint",
        envvar="DURABLE_ENDPOINT",
        help="Call the HTTP API at this URL (`durable serve`, or a deployed stack: "
        "SigV4-signed) instead of opening the store.",
        show_default=False,
    ),
]
TokenOption = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar="DURABLE_TOKEN",
        help="Bearer token for --endpoint (`durable serve --token`).",
        show_default=False,
    ),
]

_DEFAULT_DB = str(DEFAULT_DB)


# ----------------------------------------------------------------------------- errors


class _Fail(Exception):
    """A one-line error for the user; ``code`` is the exit status."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


def _one_line(exc: BaseException) -> str:
    """An exception's message on one line (pydantic's multi-line reports condensed)."""
    message = str(exc)
    cause = exc.__cause__ if not isinstance(exc, pydantic.ValidationError) else exc
    if isinstance(cause, pydantic.ValidationError):
        head = message.split("\n", 1)[0]
        details = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'value'}: {err['msg']}"
            for err in cause.errors()
        )
        return f"{head} ({details})"
    return " ".join(message.split())


def _errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn the errors a user can cause into one ``error:`` line and an exit code."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except _Fail as exc:
            _error(str(exc), exc.code)
        except (DurableError, ValueError) as exc:
            _error(_one_line(exc), EXIT_USAGE)

    return wrapper


def _error(message: str, code: int) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _note(message: str) -> None:
    typer.echo(message, err=True)


class _DropStuckRecords(logging.Filter):
    """The runtime logs STUCK instances; the CLI reports them itself, on one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("instance %s is stuck")


@contextlib.contextmanager
def _logging() -> Iterator[None]:
    """Show the workflows' ``ctx.logger`` lines and the runtime's errors on stderr."""
    logger = logging.getLogger("durable")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("  %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(_DropStuckRecords())
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


# ----------------------------------------------------------------------------- helpers


def _parse_json(text: str | None, option: str) -> Any:
    """``text`` as JSON; ``@path`` reads the JSON from a file."""
    if text is None:
        return None
    source = text
    if text.startswith("@"):
        path = Path(text[1:])
        try:
            source = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise _Fail(f"{option}: cannot read {path}: {exc.strerror}") from None
    try:
        return json.loads(source)
    except RecursionError:
        raise _Fail(f"{option} nests lists or objects too deeply to be read") from None
    except json.JSONDecodeError as exc:
        shown = source if len(source) <= 40 else source[:37] + "..."
        raise _Fail(
            f"{option} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno} "
            f"in {shown!r}"
        ) from None


def _open(db: str, *, must_exist: bool) -> HistoryStore:
    if "://" not in db:
        path = Path(db)
        if must_exist and not path.is_file():
            hint = " (nothing has run here yet; pass --db PATH)" if db == _DEFAULT_DB else ""
            raise _Fail(f"no store at {db}{hint}")
        if path.is_dir():
            raise _Fail(f"--db {db} is a folder, not a database file")
    return open_store(db)


@contextlib.contextmanager
def _store(db: str, *, must_exist: bool = True) -> Iterator[HistoryStore]:
    store = _open(db, must_exist=must_exist)
    try:
        yield store
    finally:
        store.close()


def _header(store: HistoryStore, instance_id: str) -> InstanceStatus:
    check_text(instance_id, "instance id")  # e.g. undecodable bytes on the command line
    header = store.get(instance_id)
    if header is None:
        raise InstanceNotFoundError(instance_id)
    return header


def _post(store: HistoryStore, instance_id: str, message: Message, what: str) -> None:
    header = _header(store, instance_id)
    if header.status.is_terminal or not store.post(instance_id, message):
        final = store.get(instance_id)
        status = final.status.value if final is not None else "gone"
        raise _Fail(f"cannot {what}: instance {instance_id!r} has already ended ({status})")


def _remote(endpoint: str, token: str | None) -> RemoteApi:
    return RemoteApi(endpoint, token or None)


def _remote_header(api: RemoteApi, instance_id: str) -> InstanceStatus:
    check_text(instance_id, "instance id")
    body = api.request("GET", f"/instances/{quote_segment(instance_id)}")
    fields = InstanceStatus.model_fields
    return InstanceStatus.model_validate({k: v for k, v in body.items() if k in fields})


def _remote_history(api: RemoteApi, instance_id: str, run: int) -> list[Event]:
    events: list[Any] = []
    after = 0
    while True:
        page = api.request(
            "GET",
            f"/instances/{quote_segment(instance_id)}/history",
            query={"run": str(run), "after": str(after), "limit": "1000"},
        )
        events.extend(page["events"])
        if page.get("next") is None or not page["events"]:
            return load_history(json.dumps(events))
        after = int(page["events"][-1]["seq"])


def _remote_post(api: RemoteApi, instance_id: str, action: str, body: Any = None) -> None:
    check_text(instance_id, "instance id")
    api.request("POST", f"/instances/{quote_segment(instance_id)}/{action}", body)


def _plain(payload: Any) -> Any:
    """A stored payload as plain JSON: a pickled one is unpickled and re-encoded if it can be."""
    if isinstance(payload, dict) and len(payload) == 1 and "$pickle" in payload:
        with contextlib.suppress(DurableError):
            return encode(decode(payload))
    return payload


def _json_text(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False)


def _out() -> Console:
    """Tables for stdout; wide when piped so that rows are not wrapped."""
    console = Console(highlight=False)
    return console if console.is_terminal else Console(highlight=False, width=200)


def _encoded_input(wf: Workflow[Any, Any], value: Any) -> Any:
    """The stored form of ``value`` as input of ``wf``, checked against its input type."""
    try:
        return encode_input(wf, value)
    except DurableError as exc:
        hint = " (pass it with --input JSON)" if value is None else ""
        raise _Fail(_one_line(exc) + hint) from None


def _find_unfinished(store: HistoryStore, wf: Workflow[Any, Any], payload: Any) -> str | None:
    """The newest unfinished top-level instance of ``wf`` started with ``payload``."""
    for header in store.list_instances(status=_UNFINISHED, workflow=wf.name, limit=ALL):
        if header.parent_id is None and _first_input(store, header) == payload:
            return header.instance_id
    return None


def _first_input(store: HistoryStore, header: InstanceStatus) -> Any:
    """The input an instance was started with (its header holds the current run's)."""
    if header.run == 1:
        return header.input
    first = store.history(header.instance_id, run=1)
    return first[0].input if first and isinstance(first[0], WorkflowStarted) else None


def _prepare(
    store: HistoryStore,
    wf: Workflow[Any, Any],
    raw_input: Any,
    input_given: bool,
    instance_id: str | None,
    new: bool,
) -> tuple[str, bool]:
    """The id ``run`` drives and whether it resumes an existing instance."""
    if instance_id is not None:
        existing = store.get(instance_id)
        if existing is None:
            return instance_id, False
        if existing.workflow != wf.name:
            raise _Fail(
                f"instance {instance_id!r} runs workflow {existing.workflow!r}, not {wf.name!r}"
            )
        if input_given:
            payload = _encoded_input(wf, raw_input)
            first = store.history(instance_id, run=1)
            if first and isinstance(first[0], WorkflowStarted) and first[0].input != payload:
                raise InstanceExistsError(instance_id, "with different input")
        return instance_id, True
    payload = _encoded_input(wf, raw_input)
    if not new:
        found = _find_unfinished(store, wf, payload)
        if found is not None:
            return found, True
    return uuid.uuid4().hex, False


# ----------------------------------------------------------------------------- commands


@app.command()
@_errors
def run(
    spec: Annotated[
        str, typer.Argument(metavar="FILE.py:WORKFLOW", help="The workflow file and name.")
    ],
    input: Annotated[
        str | None, typer.Option("--input", "-i", help="Input as JSON (or @file.json).")
    ] = None,
    instance_id: Annotated[
        str | None,
        typer.Option("--id", help="Instance id; an existing instance with it is resumed."),
    ] = None,
    time_skipping: Annotated[
        bool, typer.Option("--time-skipping", help="Skip timers: jump virtual time ahead.")
    ] = False,
    new: Annotated[
        bool,
        typer.Option("--new", help="Start a fresh instance even if an unfinished one matches."),
    ] = False,
    db: DbOption = _DEFAULT_DB,
) -> None:
    """Run a workflow to its end here, with live progress; print its result as JSON.

    Without --id, an unfinished instance of the same workflow with the same
    input is resumed (so a run killed half-way finishes where it stopped),
    unless --new.
    """
    wf = load_workflow(spec)
    raw_input = _parse_json(input, "--input")
    if instance_id is not None:
        check_instance_id(instance_id)
    stdout = sys.stdout
    with _store(db, must_exist=False) as store:
        iid, resumed = _prepare(store, wf, raw_input, input is not None, instance_id, new)
        header = store.get(iid)
        if header is not None and header.status.is_terminal:
            _note(f"instance {iid} of {wf.name} already ended {header.status.value}")
        elif resumed and header is not None:
            state = header.status.value
            how = "" if instance_id is not None else " (same workflow and input; --new starts anew)"
            since = when(header.updated_at)
            _note(f"resuming instance {iid} of {wf.name}, {state} since {since} UTC{how}")
            if header.status == Status.STUCK:
                # wait() would report the stored STUCK status before the runtime retries it.
                step(
                    store, iid, lambda name: wf if name == wf.name else get_workflow(name), utcnow()
                )
        else:
            _note(f"starting instance {iid} of {wf.name} (store {db})")
        console = Console(stderr=True, highlight=False, soft_wrap=True)
        view = Subtree(store, [iid])
        runtime = Runtime(view, time_skipping=time_skipping, workflows=(wf,))
        progress = Progress(console, store, runtime, iid)
        try:
            with contextlib.redirect_stdout(sys.stderr), _logging(), progress:
                runtime.add_listener(progress.on_step)
                if header is None or input is not None:
                    runtime.start(wf, raw_input, instance_id=iid)
                with contextlib.suppress(DurableError):
                    runtime.wait(iid)
                progress.refresh(None)
        except KeyboardInterrupt:
            runtime.close()
            _error(
                f"interrupted: instance {iid} is saved; run the same command again to resume it",
                EXIT_INTERRUPTED,
            )
        finally:
            runtime.close()
        final = _header(store, iid)
    summary = progress.summary()
    if final.status != Status.COMPLETED:
        reason = (
            f": {final.error.type}: {one_line_text(final.error.message)}" if final.error else ""
        )
        _error(f"instance {iid} ended {final.status.value}{reason} ({summary})", EXIT_NOT_COMPLETED)
    _note(f"instance {iid} completed ({summary})")
    print(_json_text(_plain(final.output)), file=stdout)


@app.command()
@_errors
def start(
    spec: Annotated[
        str, typer.Argument(metavar="FILE.py:WORKFLOW", help="The workflow file and name.")
    ],
    input: Annotated[
        str | None, typer.Option("--input", "-i", help="Input as JSON (or @file.json).")
    ] = None,
    instance_id: Annotated[
        str | None, typer.Option("--id", help="Instance id (default: a random one).")
    ] = None,
    db: DbOption = _DEFAULT_DB,
    endpoint: EndpointOption = None,
    token: TokenOption = None,
) -> None:
    """Create an instance in the store without running it (a worker runs it); print its id.

    With --endpoint, SPEC may also be just the registered workflow name.
    """
    if endpoint:
        path = spec.rpartition(":")[0]
        name = load_workflow(spec).name if path and Path(path).is_file() else spec
        body: dict[str, Any] = {"input": _parse_json(input, "--input")}
        if instance_id is not None:
            body["instance_id"] = instance_id
        answer = _remote(endpoint, token).request("POST", f"/workflows/{quote_segment(name)}", body)
        iid = str(answer["instance_id"])
        if answer.get("created"):
            _note(f"created instance {iid} of {name} at {endpoint}")
        else:
            _note(f"instance {iid} of {name} already exists at {endpoint}; nothing to do")
        typer.echo(iid)
        return
    wf = load_workflow(spec)
    payload = _encoded_input(wf, _parse_json(input, "--input"))
    with _store(db, must_exist=False) as store:
        iid, created = create_instance(store, wf, payload, instance_id, utcnow())
        if created:
            _note(f"created instance {iid} of {wf.name}; `durable worker` runs it")
        else:
            status = _header(store, iid).status.value
            _note(f"instance {iid} of {wf.name} already exists ({status}); nothing to do")
    typer.echo(iid)


@app.command()
@_errors
def worker(
    module: Annotated[
        list[str] | None,
        typer.Option(
            "--module",
            "-m",
            help="A workflow file (or module name) to load; repeatable. "
            "Default: [tool.durable] modules in ./pyproject.toml.",
        ),
    ] = None,
    drain: Annotated[
        bool, typer.Option("--drain", help="Exit once no instance is PENDING or RUNNING.")
    ] = False,
    db: DbOption = _DEFAULT_DB,
) -> None:
    """Resume and drive every unfinished instance in the store until Ctrl-C."""
    targets = list(module or []) or configured_modules()
    if not targets:
        raise _Fail(
            "no workflow modules: pass --module FILE.py or list them under "
            "[tool.durable] modules = [...] in pyproject.toml"
        )
    load_modules(targets)
    workflows = registered_workflows()
    console = Console(stderr=True, highlight=False, soft_wrap=True)
    reporter = WorkerReport(console, ", ".join(targets))
    with _store(db, must_exist=False) as store, _logging():
        reporter.store = store
        _note(
            f"worker: {len(workflows)} workflow(s) loaded ({', '.join(sorted(workflows))}); "
            f"store {db}; Ctrl-C stops"
        )
        runtime = Runtime(store, workflows=tuple(workflows.values()))
        runtime.add_listener(reporter.on_step)
        try:
            while not (drain and _drained(store)):
                time.sleep(0.2)
        except KeyboardInterrupt:
            _note("worker: stopping (instances in progress resume with the next worker)")
        finally:
            runtime.close()
    if reporter.errors:
        _error(f"{reporter.errors} instance(s) could not be run (see above)", EXIT_NOT_COMPLETED)


@app.command()
@_errors
def serve(
    module: Annotated[
        list[str] | None,
        typer.Option(
            "--module",
            "-m",
            help="A workflow file (or module name) to load; repeatable. "
            "Default: [tool.durable] modules in ./pyproject.toml.",
        ),
    ] = None,
    host: Annotated[
        str, typer.Option("--host", help="Address to bind (loopback unless you mean otherwise).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port (0: any free one).")] = 8000,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            envvar="DURABLE_TOKEN",
            help="Require `Authorization: Bearer TOKEN` on every request.",
        ),
    ] = None,
    db: DbOption = _DEFAULT_DB,
) -> None:
    """Serve the HTTP API (the same as on AWS) on the store, with a worker running it."""
    from durable.serve import serve as serve_api

    targets = list(module or []) or configured_modules()
    if targets:
        load_modules(targets)
    workflows = registered_workflows()
    with _store(db, must_exist=False) as store, _logging():
        _note(
            f"serve: {len(workflows)} workflow(s) loaded ({', '.join(sorted(workflows))}); "
            f"store {db}; Ctrl-C stops"
        )
        try:
            serve_api(store, tuple(workflows.values()), host, port, token=token or None)
        except OSError as exc:
            raise _Fail(f"cannot serve on {host}:{port}: {exc.strerror or exc}") from None


def _drained(store: HistoryStore) -> bool:
    return not store.list_instances(status=[Status.PENDING, Status.RUNNING], limit=1)


@app.command()
@_errors
def status(
    instance_id: IdArgument,
    as_json: JsonFlag = False,
    watch: Annotated[
        bool,
        typer.Option(
            "--watch",
            help="Follow the instance live until it ends (exit 1 unless it completes).",
        ),
    ] = False,
    db: DbOption = _DEFAULT_DB,
    endpoint: EndpointOption = None,
    token: TokenOption = None,
) -> None:
    """Show where an instance stands."""

    def fetch() -> InstanceStatus:
        if endpoint:
            return _remote_header(_remote(endpoint, token), instance_id)
        with _store(db) as store:
            return _header(store, instance_id)

    header = fetch()
    if watch and not as_json:
        console = _out()
        try:
            with Live(_status_table(header), console=console, auto_refresh=False) as live:
                while not header.status.is_terminal:
                    time.sleep(0.5)
                    header = fetch()
                    live.update(_status_table(header), refresh=True)
        except KeyboardInterrupt:
            raise typer.Exit(EXIT_INTERRUPTED) from None
        if header.status != Status.COMPLETED:
            raise typer.Exit(EXIT_NOT_COMPLETED)
        return
    if as_json:
        typer.echo(header.model_dump_json(indent=2))
        return
    _out().print(_status_table(header))


def _status_table(header: InstanceStatus) -> Table:
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    rows: list[tuple[str, str]] = [
        ("instance", header.instance_id),
        ("workflow", header.workflow),
        ("status", header.status.value),
        ("run", str(header.run)),
        ("created", f"{when(header.created_at)} UTC"),
        ("updated", f"{when(header.updated_at)} UTC"),
        ("input", short(header.input, 100)),
    ]
    if header.custom_status is not None:
        rows.append(("custom status", short(header.custom_status, 100)))
    if header.wake_at is not None:
        rows.append(("next timer", f"{when(header.wake_at)} UTC"))
    if header.status == Status.COMPLETED:
        rows.append(("output", short(header.output, 100)))
    if header.error is not None:
        rows.append(("error", f"{header.error.type}: {one_line_text(header.error.message)}"))
    if header.parent_id is not None:
        rows.append(("parent", header.parent_id))
    for key, value in rows:
        table.add_row(key, Text(value))
    return table


@app.command()
@_errors
def history(
    instance_id: IdArgument,
    as_json: Annotated[
        bool, typer.Option("--json", help="Export JSON loadable by load_history / durable replay.")
    ] = False,
    run_number: Annotated[
        int | None, typer.Option("--run", help="Which run (default: the current one).")
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to this file instead of stdout.")
    ] = None,
    db: DbOption = _DEFAULT_DB,
    endpoint: EndpointOption = None,
    token: TokenOption = None,
) -> None:
    """Show an instance's event history (or export it with --json)."""
    if endpoint:
        api = _remote(endpoint, token)
        header = _remote_header(api, instance_id)
        if run_number is not None and not 1 <= run_number <= header.run:
            raise _Fail(f"instance {instance_id!r} has runs 1 to {header.run}, not {run_number}")
        events = _remote_history(api, instance_id, run_number or header.run)
    else:
        with _store(db) as store:
            header = _header(store, instance_id)
            if run_number is not None and not 1 <= run_number <= header.run:
                raise _Fail(
                    f"instance {instance_id!r} has runs 1 to {header.run}, not {run_number}"
                )
            events = store.history(instance_id, run_number)
    if as_json:
        text = dump_history(events)
        if output is not None:
            output.write_text(text + "\n", encoding="utf-8")
            _note(f"wrote {len(events)} events to {output}")
        else:
            typer.echo(text)
        return
    labels = Labels()
    table = Table(title=f"{header.workflow} {instance_id} (run {run_number or header.run})")
    for column in ("seq", "time", "kind", "task", "name", "details"):
        table.add_column(column, no_wrap=column != "details")
    for event in events:
        labels.learn(event)
        task_id = getattr(event, "task_id", None)
        table.add_row(
            str(event.seq),
            when(event.timestamp),
            event.kind,
            "" if task_id is None else str(task_id),
            Text(labels.name(event)),
            Text(details(event)),
        )
    if output is not None:
        with output.open("w", encoding="utf-8") as handle:
            Console(file=handle, width=200, highlight=False).print(table)
        return
    _out().print(table)


@app.command()
@_errors
def signal(
    instance_id: IdArgument,
    name: Annotated[str, typer.Argument(help="The event name the workflow waits for.")],
    data: Annotated[
        str | None, typer.Option("--data", "-d", help="Event data as JSON (or @file.json).")
    ] = None,
    db: DbOption = _DEFAULT_DB,
    endpoint: EndpointOption = None,
    token: TokenOption = None,
) -> None:
    """Raise an external event on an instance (buffered if it is not waiting yet)."""
    if not name:
        raise _Fail("the event name must not be empty")
    check_text(name, "event name")
    value = _parse_json(data, "--data")
    payload = encode(value, what=f"data of event {name!r}")
    if endpoint:
        _remote_post(_remote(endpoint, token), instance_id, f"events/{quote_segment(name)}", value)
        _note(f"event {name!r} sent to instance {instance_id}")
        return
    with _store(db) as store:
        _post(store, instance_id, EventMessage(event=name, data=payload), f"signal {name!r}")
    _note(f"event {name!r} sent to instance {instance_id}")


@app.command()
@_errors
def cancel(
    instance_id: IdArgument,
    reason: ReasonOption = "",
    db: DbOption = _DEFAULT_DB,
    endpoint: EndpointOption = None,
    token: TokenOption = None,
) -> None:
    """Ask an instance to cancel: the workflow sees Cancelled at its current yield."""
    _request(instance_id, "cancel", CancelMessage(reason=reason), db, endpoint, token)


@app.command()
@_errors
def terminate(
    instance_id: IdArgument,
    reason: ReasonOption = "",
    db: DbOption = _DEFAULT_DB,
    endpoint: EndpointOption = None,
    token: TokenOption = None,
) -> None:
    """End an instance at once, running no more of its code."""
    _request(instance_id, "terminate", TerminateMessage(reason=reason), db, endpoint, token)


def _request(
    instance_id: str,
    what: str,
    message: CancelMessage | TerminateMessage,
    db: str,
    endpoint: str | None,
    token: str | None,
) -> None:
    """Send a cancel or terminate request, to the API at ``endpoint`` or into the store."""
    if endpoint:
        _remote_post(_remote(endpoint, token), instance_id, what, {"reason": message.reason})
    else:
        with _store(db) as store:
            _post(store, instance_id, message, what)
    _note(f"{what} requested for instance {instance_id}; it takes effect at its next step")


@app.command(name="list")
@_errors
def list_(
    status: Annotated[
        list[str] | None,
        typer.Option("--status", "-s", help="Only these statuses (repeatable)."),
    ] = None,
    workflow: Annotated[
        str | None, typer.Option("--workflow", "-w", help="Only this workflow name.")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", help="At most this many.")] = 100,
    as_json: JsonFlag = False,
    db: DbOption = _DEFAULT_DB,
    endpoint: EndpointOption = None,
    token: TokenOption = None,
) -> None:
    """List instances, newest first."""
    wanted = [_status(s) for s in status] if status else None
    if endpoint:
        query = {"limit": str(limit)}
        if wanted:
            query["status"] = ",".join(s.value for s in wanted)
        if workflow:
            query["workflow"] = workflow
        found = _remote(endpoint, token).request("GET", "/instances", query=query)
        fields = InstanceStatus.model_fields
        headers = [
            InstanceStatus.model_validate({k: v for k, v in item.items() if k in fields})
            for item in found["instances"]
        ]
    else:
        with _store(db) as store:
            headers = store.list_instances(status=wanted, workflow=workflow, limit=limit)
    if as_json:
        typer.echo(json.dumps([h.model_dump(mode="json") for h in headers], indent=2))
        return
    if not headers:
        _note("no instances")
        return
    table = Table()
    for column in ("instance", "workflow", "status", "run", "created", "updated"):
        table.add_column(column, no_wrap=True)
    for h in headers:
        table.add_row(
            h.instance_id,
            h.workflow,
            h.status.value,
            str(h.run),
            when(h.created_at),
            when(h.updated_at),
        )
    _out().print(table)


def _status(text: str) -> Status:
    try:
        return Status(text.upper())
    except ValueError:
        raise _Fail(
            f"unknown status {text!r}; one of {', '.join(s.value for s in Status)}"
        ) from None


@app.command(name="replay")
@_errors
def replay_(
    history_file: Annotated[
        Path, typer.Argument(metavar="HISTORY.json", help="From `durable history ID --json`.")
    ],
    spec: Annotated[
        str, typer.Argument(metavar="FILE.py:WORKFLOW", help="The current workflow code.")
    ],
) -> None:
    """Replay an exported history against the current code; exit 1 on non-determinism."""
    try:
        text = history_file.read_bytes()
    except OSError as exc:
        raise _Fail(f"cannot read {history_file}: {exc.strerror}") from None
    try:
        events = load_history(text)
    except pydantic.ValidationError as exc:
        raise _Fail(
            f"{history_file} is not a history exported by `durable history --json`: "
            f"{_one_line(exc)}"
        ) from None
    if not events or not isinstance(events[0], WorkflowStarted):
        raise _Fail(f"{history_file} does not begin with a WorkflowStarted event")
    wf = load_workflow(spec)
    started = events[0]
    if started.workflow != wf.name:
        _note(
            f"note: the history was recorded by workflow {started.workflow!r}; replaying {wf.name!r}"
        )
    try:
        replay_history(wf, events, instance_id=history_file.stem)
    except NonDeterminismError as nde:
        recorded = next(
            (e for e in events if isinstance(e, CommandEvent) and e.task_id == nde.position),
            None,
        )
        where = f" (history event seq {recorded.seq}, {recorded.kind})" if recorded else ""
        _error(f"{_one_line(nde)}{where}", EXIT_NOT_COMPLETED)
    typer.echo(
        f"{history_file}: {len(events)} events replay consistently against {spec} "
        f"(workflow {wf.name!r})"
    )


# ----------------------------------------------------------------------------- AWS

ModuleOption = Annotated[
    list[str] | None,
    typer.Option(
        "--module",
        "-m",
        help="A workflow file or module (repeatable; default: [tool.durable] modules).",
    ),
]
PythonOption = Annotated[
    str | None,
    typer.Option("--python", help="The Lambda runtime's Python version: 3.11 (default) or 3.12."),
]
ArchOption = Annotated[
    str | None, typer.Option("--arch", help="The Lambda architecture: x86_64 (default) or arm64.")
]
StackOption = Annotated[str, typer.Option("--stack", help="The CloudFormation stack name.")]
_DETACHED = "interrupted: CloudFormation carries on with stack {stack}; see its events"
RegionOption = Annotated[
    str | None, typer.Option("--region", help="The AWS region (default: your AWS configuration's).")
]


def _bundle(modules: list[str] | None, out: Path, python: str | None, arch: str | None) -> Any:
    from durable.deploy.bundle import build_bundle

    targets = modules or configured_modules()
    python, arch = python or "3.11", arch or "x86_64"
    _note(f"building the Lambda bundle (Python {python}, {arch})")
    built = build_bundle(targets, out, python=python, arch=arch)
    _note(
        f"wrote {built.path} ({built.size / 1e6:.1f} MB, {built.entries} files; "
        f"workflows: {', '.join(sorted(built.workflows))})"
    )
    return built


@app.command()
@_errors
def synth(
    module: ModuleOption = None,
    out: Annotated[Path, typer.Option("--out", help="The folder to write to.")] = Path(
        ".durable/synth"
    ),
    python: PythonOption = None,
    arch: ArchOption = None,
) -> None:
    """Write the stack's template and the Lambda bundle (code package) to a folder."""
    from durable.deploy.bundle import state_machine_text, template_text

    if out.exists() and not out.is_dir():
        raise _Fail(f"--out {out} is a file, not a folder")
    built = _bundle(module, out / "bundle.zip", python, arch)
    (out / "template.yaml").write_text(template_text(), encoding="utf-8")
    (out / "statemachine.asl.json").write_text(state_machine_text(), encoding="utf-8")
    _note(
        f"wrote {out / 'template.yaml'} (parameters: CodeBucket and CodeKey where bundle.zip "
        f"goes, Architecture {built.arch}, PythonRuntime python{built.python})"
    )


@app.command()
@_errors
def deploy(
    stack: StackOption,
    region: RegionOption = None,
    module: ModuleOption = None,
    bucket: Annotated[
        str | None,
        typer.Option("--bucket", help="S3 bucket for the code (default: one created for you)."),
    ] = None,
    python: PythonOption = None,
    arch: ArchOption = None,
    bundle: Annotated[
        Path | None,
        typer.Option(
            "--bundle", help="Deploy this bundle from `durable synth` instead of building."
        ),
    ] = None,
    parameter: Annotated[
        list[str] | None,
        typer.Option(
            "--parameter",
            "-p",
            help="Set a stack parameter, KEY=VALUE (repeatable), e.g. -p InlineSeconds=5. "
            "On an update, parameters not given keep their values.",
        ),
    ] = None,
) -> None:
    """Build the bundle, then create or update the stack; print the API URL."""
    import tempfile

    from durable.deploy.bundle import open_bundle
    from durable.deploy.stack import Deployer, StackFailedError, check_parameters

    if bundle is not None and (module or python or arch):
        raise _Fail(
            "--bundle excludes --module, --python and --arch: the bundle was built with them"
        )
    tuned: dict[str, str] = {}
    for item in parameter or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise _Fail(f"--parameter wants KEY=VALUE, got {item!r}")
        tuned[key.strip()] = value.strip()
    check_parameters(tuned)  # before the bundle is built: a typo fails at once
    console = Console(stderr=True, highlight=False, soft_wrap=True)
    deployer = Deployer(stack, region=region, console=console)
    with tempfile.TemporaryDirectory(prefix="durable-deploy-") as tmp:
        if bundle is not None:
            built = open_bundle(bundle)
        else:
            built = _bundle(module, Path(tmp) / "bundle.zip", python, arch)
        try:
            result = deployer.deploy(built, bucket=bucket, parameters=tuned)
        except StackFailedError as exc:
            raise _Fail(str(exc), EXIT_NOT_COMPLETED) from None
        except KeyboardInterrupt:
            raise _Fail(_DETACHED.format(stack=stack), EXIT_INTERRUPTED) from None
    for key, value in sorted(result.outputs.items()):
        if key != "ApiUrl":
            _note(f"{key}: {value}")
    done = {"CREATE": "created", "UPDATE": "updated", "NONE": "unchanged"}[result.action]
    _note(f"stack {stack} {done}")
    typer.echo(result.outputs.get("ApiUrl", ""))


@app.command()
@_errors
def destroy(stack: StackOption, region: RegionOption = None) -> None:
    """Delete the stack (its table and payload bucket are kept)."""
    from durable.deploy.stack import Deployer, StackFailedError

    console = Console(stderr=True, highlight=False, soft_wrap=True)
    deployer = Deployer(stack, region=region, console=console)
    try:
        retained = deployer.destroy()
    except StackFailedError as exc:
        raise _Fail(str(exc), EXIT_NOT_COMPLETED) from None
    except KeyboardInterrupt:
        raise _Fail(_DETACHED.format(stack=stack), EXIT_INTERRUPTED) from None
    _note(f"stack {stack} deleted")
    for resource in retained:
        _note(f"kept (DeletionPolicy Retain): {resource}")


def main() -> None:
    """Entry point of the ``durable`` console script."""
    app(prog_name="durable")


if __name__ == "__main__":
    main()
