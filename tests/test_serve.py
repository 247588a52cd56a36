"""``durable serve`` as a real process on a loopback port, driven over HTTP and by the CLI's --endpoint."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import textwrap
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from durable.cli import app
from durable.remote import RemoteApi, signed_headers

TOKEN = "s3cret-token"

FLOWS = textwrap.dedent(
    """
    from durable import Context, activity, workflow


    @activity
    def api_sv_shout(text: str) -> str:
        return text.upper()


    @workflow(name="api_sv_wait")
    def api_sv_wait(ctx: Context, label: str):
        ctx.set_status("waiting for go")
        data = yield ctx.wait_for_event("go")
        shouted = yield ctx.call(api_sv_shout, label, name="Shout")
        return {"label": shouted, "data": data}
    """
)


class Server:
    def __init__(self, url: str, process: subprocess.Popen[str], lines: list[str]) -> None:
        self.url = url
        self.process = process
        self.lines = lines

    def call(
        self, method: str, path: str, body: Any = None, token: str | None = TOKEN
    ) -> tuple[int, dict[str, str], Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        if token is not None:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=90) as answer:
                return answer.status, dict(answer.headers), json.loads(answer.read())
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, dict(exc.headers), json.loads(exc.read())


@contextmanager
def running_server(directory: Path, flows: str, *, token: str | None) -> Iterator[Server]:
    """``durable serve`` as a subprocess on a free loopback port, with ``flows`` as its module."""
    (directory / "sv_flows.py").write_text(flows, encoding="utf-8")
    command = [sys.executable, "-m", "durable", "serve", "--module", "sv_flows.py"]
    command += ["--db", str(directory / "serve.db"), "--port", "0"]
    if token is not None:
        command += ["--token", token]
    process = subprocess.Popen(
        command, cwd=directory, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    assert process.stderr is not None
    lines: list[str] = []
    found: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            lines.append(line)
            if "listening on " in line:
                found.put(line.split("listening on ", 1)[1].strip())
        found.put("")

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        url = found.get(timeout=60)
        assert url.startswith("http://127.0.0.1:"), "".join(lines)
        yield Server(url, process, lines)
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        reader.join(timeout=30)
        process.stderr.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    with running_server(tmp_path, FLOWS, token=TOKEN) as running:
        yield running


def test_serve_over_http_needs_the_token_and_runs_instances(server: Server) -> None:
    for token in (None, "wrong"):
        code, headers, body = server.call("GET", "/workflows", token=token)
        assert code == 401 and body["error"] == "unauthorized"
        assert headers["WWW-Authenticate"] == "Bearer"
    code, _, body = server.call("GET", "/workflows")
    assert code == 200
    assert [w["name"] for w in body["workflows"]] == ["api_sv_wait"]

    code, headers, started = server.call(
        "POST", "/workflows/api_sv_wait", {"input": "ada", "instance_id": "sv-1"}
    )
    assert code == 202 and started["instance_id"] == "sv-1"
    assert headers["Location"] == "/instances/sv-1"
    code, _, body = server.call("POST", "/workflows/api_sv_wait", {"input": 5})
    assert code == 422 and body["field"] == "input"
    code, _, body = server.call("POST", "/instances/sv-1/events/go", {"n": 1})
    assert code == 202
    code, _, body = server.call("GET", "/instances/sv-1?wait=60")
    assert code == 200 and body["status"] == "COMPLETED", body
    assert body["output"] == {"label": "ADA", "data": {"n": 1}}
    code, _, body = server.call("GET", "/instances/sv-1/history?limit=3")
    assert code == 200 and len(body["events"]) == 3 and body["next"]
    code, _, body = server.call("GET", "/nowhere")
    assert code == 404 and body["error"] == "not_found"


def test_a_body_over_the_limit_is_refused_before_it_is_read(server: Server) -> None:
    request = urllib.request.Request(
        server.url + "/workflows/api_sv_wait",
        data=b"x" * (2 * 1024 * 1024),
        method="POST",
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    try:
        urllib.request.urlopen(request, timeout=60)
    except urllib.error.HTTPError as exc:
        with exc:
            assert exc.code == 413
            assert json.loads(exc.read())["error"] == "payload_too_large"
    except (ConnectionError, urllib.error.URLError):
        pass  # the server closed the connection before the whole body was sent
    else:
        raise AssertionError("a 2 MB body was accepted")
    code, _, body = server.call("GET", "/instances")
    assert code == 200 and body["instances"] == []


def test_the_status_page_loads_without_the_token_and_its_data_needs_it(server: Server) -> None:
    for path, kind in (("/", "text/html"), ("/ui/app.js", "text/javascript")):
        with urllib.request.urlopen(server.url + path, timeout=60) as answer:
            assert answer.status == 200 and answer.headers["Content-Type"].startswith(kind)
    for path in ("/instances", "/openapi.json", "/ui/../instances"):
        code, _, body = server.call("GET", path, token=None)
        assert code == 401 and body["error"] == "unauthorized", path


def cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_the_cli_drives_a_served_store_with_endpoint(server: Server, tmp_path: Path) -> None:
    remote = ("--endpoint", server.url, "--token", TOKEN)
    code, out, err = cli("start", "api_sv_wait", "--input", '"bob"', "--id", "sv-cli", *remote)
    assert code == 0, err
    assert out.strip() == "sv-cli"
    code, out, err = cli("start", "api_sv_wait", "--input", '"other"', "--id", "sv-cli", *remote)
    assert code == 2 and "409" in err and "different input" in err

    code, out, err = cli("status", "sv-cli", "--json", *remote)
    assert code == 0, err
    assert json.loads(out)["workflow"] == "api_sv_wait"

    code, out, err = cli("signal", "sv-cli", "go", "--data", '{"ok": true}', *remote)
    assert code == 0, err
    code, _, body = server.call("GET", "/instances/sv-cli?wait=60")
    assert body["status"] == "COMPLETED"
    code, out, err = cli("status", "sv-cli", *remote)
    assert code == 0 and "COMPLETED" in out and "BOB" in out

    code, out, err = cli("history", "sv-cli", "--json", *remote)
    assert code == 0, err
    kinds = [e["kind"] for e in json.loads(out)]
    assert kinds[0] == "WorkflowStarted" and kinds[-1] == "WorkflowCompleted"

    code, out, err = cli("start", "api_sv_wait", "--input", '"c"', "--id", "sv-c", *remote)
    assert code == 0, err
    code, out, err = cli("cancel", "sv-c", "--reason", "not needed", *remote)
    assert code == 0, err
    code, _, body = server.call("GET", "/instances/sv-c?wait=60")
    assert body["status"] == "CANCELED"
    code, out, err = cli("cancel", "sv-c", *remote)
    assert code == 2 and "409" in err and "already ended" in err

    cli("start", "api_sv_wait", "--input", '"t"', "--id", "sv-t", *remote)
    code, out, err = cli("terminate", "sv-t", *remote)
    assert code == 0, err
    code, _, body = server.call("GET", "/instances/sv-t?wait=60")
    assert body["status"] == "TERMINATED"

    code, out, err = cli("list", "--json", "--status", "completed", *remote)
    assert code == 0, err
    assert [i["instance_id"] for i in json.loads(out)] == ["sv-cli"]
    code, out, err = cli("list", *remote)
    assert code == 0 and {"sv-cli", "sv-c", "sv-t"} <= set(out.split())

    code, out, err = cli("status", "sv-nope", *remote)
    assert code == 2 and "404" in err
    code, out, err = cli("status", "sv-cli", "--endpoint", server.url, "--token", "bad")
    assert code == 2 and "401" in err


def test_endpoint_from_the_environment(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DURABLE_ENDPOINT", server.url)
    monkeypatch.setenv("DURABLE_TOKEN", TOKEN)
    code, out, err = cli("list", "--json")
    assert code == 0, err
    assert json.loads(out) == []


def test_status_watch_follows_an_instance_until_it_ends(server: Server) -> None:
    code, _, _ = server.call(
        "POST", "/workflows/api_sv_wait", {"input": "w", "instance_id": "sv-w"}
    )
    assert code == 202
    watcher = subprocess.Popen(
        [sys.executable, "-m", "durable", "status", "sv-w", "--watch"],
        env={**os.environ, "DURABLE_ENDPOINT": server.url, "DURABLE_TOKEN": TOKEN},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        code, _, body = server.call("POST", "/instances/sv-w/events/go", 3)
        assert code == 202, body
        out, err = watcher.communicate(timeout=120)
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.communicate()
    assert watcher.returncode == 0, err
    assert "COMPLETED" in out
    assert "'label': 'W'" in out or '"label": "W"' in out, out


def test_requests_to_a_deployed_stack_are_sigv4_signed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    api = RemoteApi("https://abc123.execute-api.eu-west-1.amazonaws.com/prod")
    assert api.sigv4 and not RemoteApi("http://127.0.0.1:8000").sigv4
    headers = signed_headers(
        "POST",
        "https://abc123.execute-api.eu-west-1.amazonaws.com/prod/workflows/x",
        b'{"input": 1}',
        {"Content-Type": "application/json"},
    )
    authorization = headers["Authorization"]
    assert authorization.startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
    assert "/eu-west-1/execute-api/aws4_request" in authorization
    assert "X-Amz-Date" in headers


def test_a_bad_endpoint_is_a_one_line_error() -> None:
    code, _, err = cli("list", "--endpoint", "ftp://example.com")
    assert code == 2 and "http(s) URL" in err
    code, _, err = cli("list", "--endpoint", "http://127.0.0.1:9")
    assert code == 2 and "cannot reach" in err
