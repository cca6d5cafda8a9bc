"""`deepserve` as a first-time user meets it: a busy port is one line naming the port and its flag (exit 2, no
traceback, no gRPC log line), `--version`, and `serve --help` showing every setting's default."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest

from service.cli import _shown, main
from service.config import ServerSettings
from tests.ops.servers import deepserve
from tests.tiny_models import make_repository


@pytest.mark.parametrize("flag", ["--port", "--metrics-port", "--http-port", "--health-port"])
def test_a_busy_port_is_one_line_naming_it_and_its_flag_then_exit_2(tmp_path: Path, flag: str) -> None:
    repo = make_repository(tmp_path / "models", names=("add_sub",))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = {"--port": "0", "--metrics-port": "0", "--http-port": "0", flag: str(port)}
        done = deepserve(
            "serve",
            "--model-repository",
            str(repo),
            "--host",
            "127.0.0.1",
            "--device",
            "cpu",
            *(word for pair in args.items() for word in pair),
        )
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1, f"one line, no traceback or gRPC log:\n{done.stderr}"
    env = "DEEPSERVE_" + flag[2:].replace("-", "_").upper()
    assert re.fullmatch(
        rf"deepserve: cannot bind \S+ port 127\.0\.0\.1:{port} \(in use\); choose another with {flag} or {env}\n",
        done.stderr,
    ), done.stderr


def test_a_busy_port_set_by_the_environment_names_the_variable_too(tmp_path: Path) -> None:
    repo = make_repository(tmp_path / "models", names=("add_sub",))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = deepserve(
            "serve",
            "--model-repository",
            str(repo),
            "--metrics-port",
            "0",
            "--http-port",
            "0",
            env={"DEEPSERVE_PORT": str(port), "DEEPSERVE_HOST": "127.0.0.1"},
        )
    assert done.returncode == 2
    assert f"gRPC port 127.0.0.1:{port} (in use); choose another with --port or DEEPSERVE_PORT" in done.stderr


def test_version() -> None:
    done = deepserve("--version")
    assert done.returncode == 0
    assert re.fullmatch(r"deepserve \d+\.\d+\.\d+\S*\n", done.stdout), done.stdout


def test_serve_help_shows_every_setting_with_its_default(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "1000")  # one line per flag: nothing wrapped
    with pytest.raises(SystemExit) as exited:
        main(["serve", "--help"])
    assert exited.value.code == 0
    help = " ".join(capsys.readouterr().out.split())
    for name, field in ServerSettings.model_fields.items():
        env, default = f"DEEPSERVE_{name.upper()}", _shown(field.default)
        flag = f"--{name.replace('_', '-')}"
        assert f"(env {env}; default {default})" in help or f"{env} (default {default})" in help, name
        assert (flag in help) == (f"(env {env};" in help), f"{flag} and its variable go together"
    assert "--port PORT gRPC port, 0 for any free one (env DEEPSERVE_PORT; default 8001)" in help
    assert "(env DEEPSERVE_MAX_MESSAGE_BYTES; default 33554432 (32 MiB))" in help
    assert "(env DEEPSERVE_HEALTH_PORT; default off)" in help


def test_defaults_are_shown_as_a_user_types_them() -> None:
    assert [_shown(v) for v in (None, True, 10.0, 0.5, 8001, 64 * 1024 * 1024, Path("models"))] == [
        "off",
        "true",
        "10",
        "0.5",
        "8001",
        "67108864 (64 MiB)",
        "models",
    ]
