"""The ``durable`` command line, through typer's runner and through real subprocesses."""

from __future__ import annotations

import json
import os
import signal as signals
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from durable.cli import app
from durable.history import (
    ActivityScheduled,
    EventWaitStarted,
    Status,
    TimerScheduled,
    WorkflowStarted,
    WorkflowTerminated,
    load_history,
)
from durable.loader import (
    LoadError,
    configured_modules,
    load_module,
    load_workflow,
    parse_spec,
)
from durable.store import open_store

REPO = Path(__file__).resolve().parents[1]
REMIND_USER = REPO / "examples" / "remind_user.py"
ADA = '{"name": "Ada", "email": "ada@example.com"}'

# Every workflow and activity name here is unique in the test session (the
# registry is global); the file is written once and loaded by path.
FLOWS = '''
"""Workflows for tests/test_cli.py."""

from __future__ import annotations

from durable import Context, activity, workflow


@activity
def cli_greet_activity(name: str) -> str:
    print(f"greeting {name} (printed by an activity)")
    return f"hello {name}"


@workflow(name="cli_greet")
def greet(ctx: Context, name: str):
    text = yield ctx.call(cli_greet_activity, name, name="Greet")
    return {"greeting": text}


@activity
def cli_record(marker: str, label: str) -> str:
    with open(marker, "a", encoding="utf-8") as handle:
        handle.write(label + "\\n")
    return label


@workflow(name="cli_counted")
def counted(ctx: Context, marker: str):
    first = yield ctx.call(cli_record, marker, "one", name="Step one")
    second = yield ctx.call(cli_record, marker, "two", name="Step two")
    return [first, second]


@workflow(name="cli_approval")
def approval(ctx: Context, request: str):
    ctx.set_status("waiting for approval")
    decision = yield ctx.wait_for_event("approval", name="Approval")
    return {"request": request, "decision": decision}


@activity
def cli_explode(message: str) -> None:
    raise ValueError(message)


@workflow(name="cli_failing")
def failing(ctx: Context, message: str):
    yield ctx.call(cli_explode, message, name="Explode")
'''

FLOWS_CHANGED = '''
"""cli_greet with its activity swapped: replaying a cli_greet history must fail."""

from __future__ import annotations

from durable import Context, activity, workflow


@activity
def cli_shout_activity(name: str) -> str:
    return f"HELLO {name}"


@workflow(name="cli_greet_changed")
def greet_changed(ctx: Context, name: str):
    text = yield ctx.call(cli_shout_activity, name, name="Greet")
    return {"greeting": text}
'''


@pytest.fixture(scope="session")
def flows(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("cli_flows")
    (folder / "cli_changed_flows.py").write_text(FLOWS_CHANGED, encoding="utf-8")
    path = folder / "cli_flows.py"
    path.write_text(FLOWS, encoding="utf-8")
    return path


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def db(project: Path) -> str:
    return str(project / "store.db")


def cli(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def one_error_line(result: Result) -> str:
    """The run failed with exactly one ``error:`` line on stderr and no traceback."""
    lines = result.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    return lines[-1]


def status_of(db: str, instance_id: str) -> dict[str, object]:
    result = cli("status", instance_id, "--json", "--db", db)
    assert result.exit_code == 0, result.output
    data: dict[str, object] = json.loads(result.stdout)
    return data


def start(db: str, spec: str, input: str, *extra: str) -> str:
    result = cli("start", spec, "--input", input, "--db", db, *extra)
    assert result.exit_code == 0, result.output
    return result.stdout.strip()


# ----------------------------------------------------------------------------- run


def test_run_remind_user_with_time_skipping_prints_the_result_json(db: str) -> None:
    result = cli("run", f"{REMIND_USER}:remind_user", "--input", ADA, "--time-skipping", "--db", db)

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "name": "Ada",
        "email": "ada@example.com",
        "times_reminded": 2,
    }
    assert "First reminder (send_email)" in result.stderr
    assert "Second reminder (send_email)" in result.stderr
    assert "Wait one day until" in result.stderr
    assert "virtual time moved 1d 2h" in result.stderr
    assert "emailing ada@example.com" in result.stderr  # activity prints go to stderr
    assert "reminded Ada 2 times" in result.stderr  # the workflow's ctx.logger


def test_run_uses_the_default_store_in_the_current_folder(project: Path, flows: Path) -> None:
    result = cli("run", f"{flows}:cli_greet", "--input", '"Bea"')

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"greeting": "hello Bea"}
    assert (project / ".durable" / "durable.db").is_file()


def test_run_accepts_a_file_with_one_workflow_and_input_from_a_file(project: Path, db: str) -> None:
    (project / "cli_single.py").write_text(
        textwrap.dedent(
            """
            from durable import workflow

            @workflow(name="cli_single_echo")
            def echo(ctx, value):
                return {"echo": value}
                yield
            """
        ),
        encoding="utf-8",
    )
    (project / "input.json").write_text('{"a": [1, 2]}', encoding="utf-8")

    result = cli("run", "cli_single.py", "--input", "@input.json", "--db", db)

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"echo": {"a": [1, 2]}}


def test_run_prints_a_pickled_result_as_plain_json(project: Path, db: str) -> None:
    (project / "cli_pickled_flow.py").write_text(
        textwrap.dedent(
            """
            from durable import workflow

            @workflow(name="cli_pickled", codec="pickle")
            def pickled(ctx, value):
                return {"doubled": value * 2}
                yield
            """
        ),
        encoding="utf-8",
    )

    result = cli("run", "cli_pickled_flow.py:pickled", "--input", "21", "--db", db)

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"doubled": 42}


def test_run_of_a_failing_workflow_exits_1_with_the_error(db: str, flows: Path) -> None:
    result = cli("run", f"{flows}:cli_failing", "--input", '"boom"', "--db", db)

    assert result.exit_code == 1
    line = one_error_line(result)
    assert "ended FAILED" in line
    assert "ValueError: boom" in line
    assert result.stdout == ""


def test_run_resumes_an_unfinished_instance_with_the_same_workflow_and_input(
    db: str, flows: Path, project: Path
) -> None:
    marker = str(project / "marker.txt")
    pending = start(db, f"{flows}:cli_counted", json.dumps(marker))

    result = cli("run", f"{flows}:cli_counted", "--input", json.dumps(marker), "--db", db)

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == ["one", "two"]
    assert f"resuming instance {pending}" in result.stderr
    listed = json.loads(cli("list", "--json", "--db", db).stdout)
    assert [h["instance_id"] for h in listed] == [pending]
    assert listed[0]["status"] == "COMPLETED"


def test_run_with_new_or_other_input_does_not_resume(db: str, flows: Path, project: Path) -> None:
    marker = json.dumps(str(project / "marker.txt"))
    other = json.dumps(str(project / "other.txt"))
    pending = start(db, f"{flows}:cli_counted", marker)

    fresh = cli("run", f"{flows}:cli_counted", "--input", marker, "--new", "--db", db)
    different = cli("run", f"{flows}:cli_counted", "--input", other, "--db", db)

    assert fresh.exit_code == 0 and different.exit_code == 0
    assert "resuming" not in fresh.stderr + different.stderr
    assert status_of(db, pending)["status"] == "PENDING"
    assert len(json.loads(cli("list", "--json", "--db", db).stdout)) == 3


def test_run_does_not_resume_a_completed_instance(db: str, flows: Path) -> None:
    first = cli("run", f"{flows}:cli_greet", "--input", '"Cy"', "--db", db)
    second = cli("run", f"{flows}:cli_greet", "--input", '"Cy"', "--db", db)

    assert first.exit_code == 0 and second.exit_code == 0
    assert "resuming" not in second.stderr
    assert len(json.loads(cli("list", "--json", "--db", db).stdout)) == 2


def test_run_with_id_is_idempotent(db: str, flows: Path, project: Path) -> None:
    marker = project / "marker.txt"
    args = ("run", f"{flows}:cli_counted", "--input", json.dumps(str(marker)), "--id", "job-1")

    first = cli(*args, "--db", db)
    again = cli(*args, "--db", db)
    without_input = cli("run", f"{flows}:cli_counted", "--id", "job-1", "--db", db)

    for result in (first, again, without_input):
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout) == ["one", "two"]
    assert "instance job-1 of cli_counted already ended COMPLETED" in again.stderr
    assert marker.read_text().splitlines() == ["one", "two"]  # ran once


def test_run_with_an_id_taken_by_other_input_or_workflow_fails(db: str, flows: Path) -> None:
    assert (
        cli("run", f"{flows}:cli_greet", "--input", '"A"', "--id", "g", "--db", db).exit_code == 0
    )

    other_input = cli("run", f"{flows}:cli_greet", "--input", '"B"', "--id", "g", "--db", db)
    other_workflow = cli("run", f"{flows}:cli_failing", "--input", '"B"', "--id", "g", "--db", db)

    assert other_input.exit_code == 2
    assert "already exists with different input" in one_error_line(other_input)
    assert other_workflow.exit_code == 2
    assert "runs workflow 'cli_greet', not 'cli_failing'" in one_error_line(other_workflow)


def test_run_leaves_the_other_instances_of_the_store_alone(db: str, flows: Path) -> None:
    store = open_store(db)
    store.create("orphan", WorkflowStarted(workflow="cli_registered_nowhere_either"))
    store.close()
    waiting = start(db, f"{flows}:cli_greet", '"not me"')

    result = cli("run", f"{flows}:cli_greet", "--input", '"me"', "--db", db)

    assert result.exit_code == 0, result.output
    assert status_of(db, "orphan")["status"] == "PENDING"  # not made STUCK for lack of code
    assert status_of(db, waiting)["status"] == "PENDING"  # not run as a side effect


# ----------------------------------------------------------------------------- errors


def test_bad_json_input_is_one_line(db: str, flows: Path) -> None:
    result = cli("run", f"{flows}:cli_greet", "--input", "{not json", "--db", db)

    assert result.exit_code == 2
    assert "--input is not valid JSON" in one_error_line(result)


def test_input_of_the_wrong_type_is_one_line(db: str) -> None:
    result = cli("run", f"{REMIND_USER}:remind_user", "--input", '{"name": 1}', "--db", db)

    assert result.exit_code == 2
    line = one_error_line(result)
    assert "input of workflow 'remind_user' does not match User" in line
    assert "email: Field required" in line


def test_unknown_workflow_lists_the_ones_the_file_has(db: str, flows: Path) -> None:
    result = cli("run", f"{flows}:nope", "--db", db)

    assert result.exit_code == 2
    line = one_error_line(result)
    assert "has no workflow 'nope'" in line
    assert "cli_greet" in line and "greet (registered as 'cli_greet')" in line


def test_missing_file_is_one_line(db: str) -> None:
    result = cli("run", "no_such_file.py:flow", "--db", db)

    assert result.exit_code == 2
    assert one_error_line(result) == "error: workflow file no_such_file.py does not exist"


def test_spec_must_name_a_python_file(db: str) -> None:
    result = cli("run", "flows:flow", "--db", db)

    assert result.exit_code == 2
    assert "expected FILE.py:WORKFLOW" in one_error_line(result)


def test_syntax_error_in_the_workflow_file_is_one_line(project: Path, db: str) -> None:
    (project / "cli_broken.py").write_text("def flow(:\n    pass\n", encoding="utf-8")

    result = cli("run", "cli_broken.py:flow", "--db", db)

    assert result.exit_code == 2
    line = one_error_line(result)
    assert line.startswith("error: syntax error in ")
    assert "cli_broken.py, line 1" in line


def test_exception_while_importing_the_file_is_one_line(project: Path, db: str) -> None:
    (project / "cli_raising.py").write_text("raise RuntimeError('no config')\n", encoding="utf-8")

    result = cli("run", "cli_raising.py:flow", "--db", db)

    assert result.exit_code == 2
    assert "cannot import cli_raising.py: RuntimeError: no config" in one_error_line(result)


@pytest.mark.parametrize(
    "args",
    [
        ["status", "nope"],
        ["history", "nope"],
        ["signal", "nope", "go"],
        ["cancel", "nope"],
        ["terminate", "nope"],
    ],
)
def test_unknown_instance_is_one_line(db: str, flows: Path, args: list[str]) -> None:
    cli("run", f"{flows}:cli_greet", "--input", '"x"', "--db", db)

    result = cli(*args, "--db", db)

    assert result.exit_code == 2
    assert one_error_line(result) == "error: no workflow instance with id 'nope'"


def test_reading_commands_need_an_existing_store(project: Path) -> None:
    result = cli("list")

    assert result.exit_code == 2
    assert "no store at .durable/durable.db" in one_error_line(result)
    assert not (project / ".durable").exists()


@pytest.mark.parametrize("command", ["signal", "cancel", "terminate"])
def test_acting_on_a_finished_instance_is_one_line(db: str, flows: Path, command: str) -> None:
    cli("run", f"{flows}:cli_greet", "--input", '"x"', "--id", "done", "--db", db)
    args = ["signal", "done", "go"] if command == "signal" else [command, "done"]

    result = cli(*args, "--db", db)

    assert result.exit_code == 2
    assert "instance 'done' has already ended (COMPLETED)" in one_error_line(result)


# ----------------------------------------------------------------------------- start, worker


def test_start_creates_a_pending_instance_and_the_worker_runs_it(
    db: str, flows: Path, project: Path
) -> None:
    marker = project / "marker.txt"
    first = start(db, f"{flows}:cli_counted", json.dumps(str(marker)), "--id", "w-1")
    second = start(db, f"{flows}:cli_greet", '"Di"')
    assert first == "w-1"
    assert status_of(db, first)["status"] == "PENDING"

    result = cli("worker", "--module", str(flows), "--drain", "--db", db)

    assert result.exit_code == 0, result.output
    assert status_of(db, first)["output"] == ["one", "two"]
    assert status_of(db, second)["output"] == {"greeting": "hello Di"}
    assert "w-1 ✓ Step one (cli_record)" in result.stderr
    assert f"{second} completed" in result.stderr


def test_start_is_idempotent_on_the_id(db: str, flows: Path) -> None:
    start(db, f"{flows}:cli_greet", '"Ed"', "--id", "s-1")

    again = cli("start", f"{flows}:cli_greet", "--input", '"Ed"', "--id", "s-1", "--db", db)
    other = cli("start", f"{flows}:cli_greet", "--input", '"Flo"', "--id", "s-1", "--db", db)

    assert again.exit_code == 0 and again.stdout.strip() == "s-1"
    assert "already exists (PENDING)" in again.stderr
    assert other.exit_code == 2
    assert "already exists with different input" in one_error_line(other)


def test_worker_reads_modules_from_pyproject(db: str, flows: Path, project: Path) -> None:
    (project / "pyproject.toml").write_text(
        f"[tool.durable]\nmodules = [{json.dumps(str(flows))}]\n", encoding="utf-8"
    )
    instance = start(db, f"{flows}:cli_greet", '"Gus"')

    result = cli("worker", "--drain", "--db", db)

    assert result.exit_code == 0, result.output
    assert status_of(db, instance)["status"] == "COMPLETED"


def test_worker_without_modules_is_one_line(db: str) -> None:
    result = cli("worker", "--db", db)

    assert result.exit_code == 2
    assert "no workflow modules" in one_error_line(result)


def test_worker_reports_an_instance_of_an_unregistered_workflow(db: str, flows: Path) -> None:
    store = open_store(db)
    store.create("orphan", WorkflowStarted(workflow="cli_registered_nowhere"))
    store.close()
    runnable = start(db, f"{flows}:cli_greet", '"Hal"')

    result = cli("worker", "--module", str(flows), "--drain", "--db", db)

    assert result.exit_code == 1
    assert (
        "error: instance orphan runs workflow 'cli_registered_nowhere', "
        "which none of the loaded modules"
    ) in result.stderr
    assert status_of(db, "orphan")["status"] == "STUCK"
    assert status_of(db, runnable)["status"] == "COMPLETED"


# ----------------------------------------------------------------------------- signal, cancel, terminate


def test_signal_is_buffered_until_the_worker_runs_the_instance(db: str, flows: Path) -> None:
    instance = start(db, f"{flows}:cli_approval", '"deploy"')

    sent = cli("signal", instance, "approval", "--data", '{"by": "Ida"}', "--db", db)
    worked = cli("worker", "--module", str(flows), "--drain", "--db", db)

    assert sent.exit_code == 0, sent.output
    assert worked.exit_code == 0, worked.output
    final = status_of(db, instance)
    assert final["output"] == {"request": "deploy", "decision": {"by": "Ida"}}
    assert final["custom_status"] == "waiting for approval"


def test_signal_with_bad_json_data_is_one_line(db: str, flows: Path) -> None:
    instance = start(db, f"{flows}:cli_approval", '"x"')

    result = cli("signal", instance, "approval", "--data", "{", "--db", db)

    assert result.exit_code == 2
    assert "--data is not valid JSON" in one_error_line(result)


def test_cancel_ends_the_instance_canceled(db: str, flows: Path) -> None:
    instance = start(db, f"{flows}:cli_approval", '"x"')

    cancelled = cli("cancel", instance, "--reason", "not needed", "--db", db)
    cli("worker", "--module", str(flows), "--drain", "--db", db)

    assert cancelled.exit_code == 0, cancelled.output
    assert status_of(db, instance)["status"] == "CANCELED"


def test_terminate_records_the_reason(db: str, flows: Path) -> None:
    instance = start(db, f"{flows}:cli_approval", '"x"')

    terminated = cli("terminate", instance, "--reason", "wrong input", "--db", db)
    cli("worker", "--module", str(flows), "--drain", "--db", db)

    assert terminated.exit_code == 0, terminated.output
    assert status_of(db, instance)["status"] == "TERMINATED"
    events = load_history(cli("history", instance, "--json", "--db", db).stdout)
    assert isinstance(events[-1], WorkflowTerminated)
    assert events[-1].reason == "wrong input"


# ----------------------------------------------------------------------------- status, history, list


def test_status_table_and_json(db: str, flows: Path) -> None:
    cli("run", f"{flows}:cli_greet", "--input", '"Jo"', "--id", "st", "--db", db)

    table = cli("status", "st", "--db", db)
    data = status_of(db, "st")

    assert table.exit_code == 0
    assert "cli_greet" in table.stdout and "COMPLETED" in table.stdout
    assert '{"greeting": "hello Jo"}' in table.stdout
    assert data["status"] == "COMPLETED"
    assert data["input"] == "Jo"
    assert data["output"] == {"greeting": "hello Jo"}


def test_history_table_shows_display_names_and_json_exports_a_loadable_history(
    db: str, project: Path
) -> None:
    cli(
        "run",
        f"{REMIND_USER}:remind_user",
        "--input",
        ADA,
        "--time-skipping",
        "--id",
        "h",
        "--db",
        db,
    )

    table = cli("history", "h", "--db", db)
    exported = cli("history", "h", "--json", "--db", db)
    to_file = cli("history", "h", "--json", "--output", "h.json", "--db", db)

    assert table.exit_code == 0, table.output
    for text in ("seq", "TimerScheduled", "ActivityCompleted", "First reminder", "send_email"):
        assert text in table.stdout
    events = load_history(exported.stdout)
    store = open_store(db)
    assert events == store.history("h")
    store.close()
    assert to_file.exit_code == 0
    assert load_history((project / "h.json").read_text()) == events
    scheduled = [e for e in events if isinstance(e, ActivityScheduled)]
    assert [e.name for e in scheduled] == ["First reminder", "Second reminder"]


def test_list_filters_by_status_and_workflow(db: str, flows: Path) -> None:
    cli("run", f"{flows}:cli_greet", "--input", '"K"', "--id", "done", "--db", db)
    cli("run", f"{flows}:cli_failing", "--input", '"K"', "--id", "failed", "--db", db)
    start(db, f"{flows}:cli_approval", '"K"', "--id", "pending")

    def ids(*args: str) -> list[str]:
        result = cli("list", "--json", "--db", db, *args)
        assert result.exit_code == 0, result.output
        return sorted(h["instance_id"] for h in json.loads(result.stdout))

    table = cli("list", "--db", db)
    assert table.exit_code == 0
    assert all(text in table.stdout for text in ("done", "failed", "pending", "FAILED"))
    assert ids() == ["done", "failed", "pending"]
    assert ids("--status", "failed") == ["failed"]
    assert ids("--status", "COMPLETED", "--status", "pending") == ["done", "pending"]
    assert ids("--workflow", "cli_approval") == ["pending"]
    bad = cli("list", "--status", "sleeping", "--db", db)
    assert bad.exit_code == 2
    assert "unknown status 'sleeping'" in one_error_line(bad)


# ----------------------------------------------------------------------------- replay


def test_replay_of_a_consistent_history_exits_0(db: str, flows: Path, project: Path) -> None:
    cli("run", f"{flows}:cli_greet", "--input", '"Lu"', "--id", "r", "--db", db)
    cli("history", "r", "--json", "--output", "r.json", "--db", db)

    result = cli("replay", "r.json", f"{flows}:cli_greet")

    assert result.exit_code == 0, result.output
    assert "replay consistently" in result.stdout


def test_replay_against_mismatching_code_exits_1_naming_both_sides(
    db: str, flows: Path, project: Path
) -> None:
    cli("run", f"{flows}:cli_greet", "--input", '"Mo"', "--id", "r", "--db", db)
    cli("history", "r", "--json", "--output", "r.json", "--db", db)

    result = cli("replay", "r.json", f"{flows.parent / 'cli_changed_flows.py'}:greet_changed")

    assert result.exit_code == 1
    line = one_error_line(result)
    assert "at command #1" in line
    assert "history recorded activity 'cli_greet_activity'" in line
    assert "the code yielded" in line and "cli_shout_activity" in line


def test_replay_of_a_file_that_is_not_a_history_is_one_line(project: Path, flows: Path) -> None:
    (project / "junk.json").write_text('[{"kind": "Nonsense"}]', encoding="utf-8")

    junk = cli("replay", "junk.json", f"{flows}:cli_greet")
    missing = cli("replay", "missing.json", f"{flows}:cli_greet")

    assert junk.exit_code == 2
    assert "junk.json is not a history exported by" in one_error_line(junk)
    assert missing.exit_code == 2
    assert "cannot read missing.json" in one_error_line(missing)


# ----------------------------------------------------------------------------- loader


def test_loading_a_file_twice_gives_the_same_module(flows: Path) -> None:
    assert load_module(flows) is load_module(str(flows))
    assert load_workflow(f"{flows}:greet") is load_workflow(f"{flows}:cli_greet")


def test_a_file_inside_a_package_is_imported_by_its_dotted_name() -> None:
    import examples.remind_user

    assert load_module(REMIND_USER) is examples.remind_user


def test_a_file_whose_name_is_taken_by_another_module_is_refused(tmp_path: Path) -> None:
    shadow = tmp_path / "json.py"
    shadow.write_text("x = 1\n", encoding="utf-8")

    with pytest.raises(LoadError, match="as module 'json': that name is already taken"):
        load_module(shadow)
    assert str(tmp_path) not in sys.path


def test_parse_spec_and_configured_modules(tmp_path: Path) -> None:
    assert parse_spec("a/b.py:flow") == (Path("a/b.py"), "flow")
    assert parse_spec("b.py") == (Path("b.py"), None)
    with pytest.raises(LoadError, match="no workflow name after ':'"):
        parse_spec("b.py:")
    assert configured_modules(tmp_path) == []
    (tmp_path / "pyproject.toml").write_text(
        '[tool.durable]\nmodules = ["flows/a.py", "pkg.mod"]\n', encoding="utf-8"
    )
    assert configured_modules(tmp_path) == [str(tmp_path / "flows" / "a.py"), "pkg.mod"]
    (tmp_path / "pyproject.toml").write_text("[tool.durable]\nmodules = 3\n", encoding="utf-8")
    with pytest.raises(LoadError, match="must be a list of strings"):
        configured_modules(tmp_path)


# ----------------------------------------------------------------------------- subprocesses


def durable_command() -> list[str]:
    script = Path(sys.executable).with_name("durable")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "durable"]


def test_console_script_runs_remind_user_in_a_subprocess(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            *durable_command(),
            "run",
            f"{REMIND_USER}:remind_user",
            "--input",
            ADA,
            "--time-skipping",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["times_reminded"] == 2
    assert "Traceback" not in done.stderr
    assert (tmp_path / ".durable" / "durable.db").is_file()


CRASH_FLOW = """
from __future__ import annotations

from datetime import timedelta

from durable import Context, activity, workflow


@activity
def crash_step(marker: str, label: str) -> str:
    with open(marker, "a", encoding="utf-8") as handle:
        handle.write(label + "\\n")
    return label


@workflow(name="cli_crash")
def crash(ctx: Context, marker: str):
    first = yield ctx.call(crash_step, marker, "one", name="Step one")
    yield ctx.sleep(timedelta(hours=1), name="Long nap")
    second = yield ctx.call(crash_step, marker, "two", name="Step two")
    return [first, second]
"""


@pytest.fixture
def crash_project(tmp_path: Path) -> Iterator[Path]:
    (tmp_path / "crash_flow.py").write_text(CRASH_FLOW, encoding="utf-8")
    yield tmp_path


def test_killed_run_finishes_where_it_stopped_when_run_again(crash_project: Path) -> None:
    marker = crash_project / "marker.txt"
    command = [*durable_command(), "run", "crash_flow.py:cli_crash"]
    command += ["--input", json.dumps(str(marker))]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        command, cwd=crash_project, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    try:
        _wait_for_the_nap(crash_project / ".durable" / "durable.db", proc)
    finally:
        proc.send_signal(signals.SIGKILL)
        proc.communicate(timeout=60)
    assert marker.read_text().splitlines() == ["one"]

    again = subprocess.run(
        [*command, "--time-skipping"],
        cwd=crash_project,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )

    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout) == ["one", "two"]
    assert "resuming instance" in again.stderr
    assert marker.read_text().splitlines() == ["one", "two"]  # step one did not run again

    # The same history against changed code (a call where the timer was): exit 1.
    exported = subprocess.run(
        [*durable_command(), "list", "--json"], cwd=crash_project, capture_output=True, text=True
    )
    instance = json.loads(exported.stdout)[0]["instance_id"]
    subprocess.run(
        [*durable_command(), "history", instance, "--json", "-o", "crash.json"],
        cwd=crash_project,
        check=True,
        capture_output=True,
    )
    changed = CRASH_FLOW.replace(
        'yield ctx.sleep(timedelta(hours=1), name="Long nap")',
        'yield ctx.call(crash_step, marker, "extra")',
    )
    (crash_project / "crash_flow.py").write_text(changed, encoding="utf-8")
    replayed = subprocess.run(
        [*durable_command(), "replay", "crash.json", "crash_flow.py:cli_crash"],
        cwd=crash_project,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert replayed.returncode == 1
    assert "at command #2: history recorded a timer" in replayed.stderr
    assert "activity 'crash_step'" in replayed.stderr
    assert "Traceback" not in replayed.stderr


def _wait_for_the_nap(db: Path, proc: subprocess.Popen[bytes]) -> None:
    """Block until the first step is recorded and the run sleeps on its one-hour timer."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        if db.is_file():
            store = open_store(str(db))
            try:
                headers = store.list_instances(status=[Status.RUNNING])
                if headers and any(
                    isinstance(e, TimerScheduled) for e in store.history(headers[0].instance_id)
                ):
                    return
            finally:
                store.close()
        time.sleep(0.05)
    pytest.fail("the run never reached its timer")


def test_python_dash_m_durable_runs_the_cli(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "durable", "list", "--db", str(tmp_path / "none.db")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"error: no store at {tmp_path / 'none.db'}"]


def _wait_until(predicate: Callable[[], bool], proc: subprocess.Popen[str], what: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if predicate():
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    pytest.fail(f"timed out waiting until {what}")


def _reap(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.communicate()


def _waiting_for_approval(db: str, instance_id: str) -> Callable[[], bool]:
    def check() -> bool:
        if not Path(db).is_file():
            return False
        store = open_store(db)
        try:
            header = store.get(instance_id)
            return header is not None and any(
                isinstance(e, EventWaitStarted) for e in store.history(instance_id)
            )
        finally:
            store.close()

    return check


def test_a_signal_from_another_process_reaches_a_running_run(db: str, flows: Path) -> None:
    proc = subprocess.Popen(
        [
            *durable_command(),
            "run",
            f"{flows}:cli_approval",
            "-i",
            '"ship"',
            "--id",
            "a1",
            "--db",
            db,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_until(_waiting_for_approval(db, "a1"), proc, "the run waits for approval")
        sent = cli("signal", "a1", "approval", "--data", '"yes"', "--db", db)
        out, err = proc.communicate(timeout=60)
    finally:
        _reap(proc)

    assert sent.exit_code == 0, sent.output
    assert proc.returncode == 0, err
    assert json.loads(out) == {"request": "ship", "decision": "yes"}
    assert "event 'approval' received" in err


def test_ctrl_c_stops_a_run_and_keeps_the_instance(db: str, flows: Path) -> None:
    proc = subprocess.Popen(
        [*durable_command(), "run", f"{flows}:cli_approval", "-i", '"x"', "--id", "a2", "--db", db],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_until(_waiting_for_approval(db, "a2"), proc, "the run waits for approval")
        proc.send_signal(signals.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        _reap(proc)

    assert proc.returncode == 130
    assert out == ""
    assert err.strip().splitlines()[-1] == (
        "error: interrupted: instance a2 is saved; run the same command again to resume it"
    )
    assert "Traceback" not in err
    assert status_of(db, "a2")["status"] == "RUNNING"


def test_worker_runs_until_ctrl_c_and_picks_up_new_instances(db: str, flows: Path) -> None:
    start(db, f"{flows}:cli_greet", '"first"', "--id", "before")
    proc = subprocess.Popen(
        [*durable_command(), "worker", "--module", str(flows), "--db", db],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_until(lambda: status_of(db, "before")["status"] == "COMPLETED", proc, "done")
        start(db, f"{flows}:cli_approval", '"later"', "--id", "after")
        _wait_until(_waiting_for_approval(db, "after"), proc, "the worker runs the new one")
        cli("signal", "after", "approval", "--data", "true", "--db", db)
        _wait_until(lambda: status_of(db, "after")["status"] == "COMPLETED", proc, "done")
        proc.send_signal(signals.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        _reap(proc)

    assert proc.returncode == 0, err
    assert "worker: stopping" in err
    assert "Traceback" not in err
    assert status_of(db, "after")["output"] == {"request": "later", "decision": True}


def test_run_resumes_a_stuck_instance_once_its_code_exists(project: Path, db: str) -> None:
    store = open_store(db)
    store.create("late", WorkflowStarted(workflow="cli_late", input="abc"))
    store.close()
    (project / "cli_other_flow.py").write_text(
        "from durable import workflow\n\n"
        "@workflow(name='cli_unrelated')\n"
        "def unrelated(ctx):\n    return None\n    yield\n",
        encoding="utf-8",
    )
    stuck = cli("worker", "--module", "cli_other_flow.py", "--drain", "--db", db)
    assert stuck.exit_code == 1
    assert status_of(db, "late")["status"] == "STUCK"
    (project / "cli_late_flow.py").write_text(
        textwrap.dedent(
            """
            from durable import activity, workflow

            @activity
            def cli_upper(text: str) -> str:
                return text.upper()

            @workflow(name="cli_late")
            def late(ctx, text: str):
                return (yield ctx.call(cli_upper, text))
            """
        ),
        encoding="utf-8",
    )

    result = cli("run", "cli_late_flow.py:late", "--id", "late", "--db", db)

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == "ABC"
    assert "resuming instance late of cli_late, STUCK since" in result.stderr


def test_a_redispatched_attempt_is_shown_in_the_history_and_the_progress() -> None:
    from durable._cli_views import Labels, details, progress_line
    from durable.history import ActivityRedispatched, ActivityScheduled

    labels = Labels()
    labels.learn(ActivityScheduled(task_id=3, activity="send_email", name="First reminder"))
    event = ActivityRedispatched(task_id=3, attempt=2)
    assert details(event) == "attempt 2 dispatched again (no outcome came: lost invocation)"
    line = progress_line(event, labels)
    assert line is not None and "First reminder" in line and "attempt 2 dispatched again" in line
