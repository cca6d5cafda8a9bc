"""`deepserve classify | sentiment | generate` against a real server: output, --json, exit codes."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from service.cli import main
from tests.conftest import RunningServer
from tests.ports import free_port

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def drawing(tmp_path: Path) -> Path:
    image = Image.new("L", (120, 120), 255)
    ImageDraw.Draw(image).rectangle((70, 70, 110, 110), fill=0)
    path = tmp_path / "box.png"
    image.save(path)
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_classify_prints_labels(task_server: RunningServer, drawing: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "classify", str(drawing), "--top-k", "2", "--server", task_server.address)
    assert code == 0
    assert out.startswith(f"{drawing}: bottom_right (")
    assert out.count("(") == 2


def test_classify_json(task_server: RunningServer, drawing: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "classify", str(drawing), str(drawing), "--json", "--server", task_server.address)
    assert code == 0
    doc = json.loads(out)
    assert doc["model"] == "quadrants" and len(doc["results"]) == 2
    assert doc["results"][0]["labels"][0] == {
        "label": "bottom_right",
        "probability": pytest.approx(1, abs=0.05),
        "index": 3,
    }


def test_dns_target_with_round_robin(
    task_server: RunningServer, drawing: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port = task_server.address.rsplit(":", 1)[1]
    code, out, _ = run(capsys, "classify", str(drawing), "--server", f"dns:///localhost:{port}")
    assert code == 0 and "bottom_right" in out


def test_sentiment(task_server: RunningServer, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "sentiment", "I love it", "awful, I hate it", "--server", task_server.address)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("positive\t") and lines[0].endswith("\tI love it")
    assert lines[1].startswith("negative\t")


def test_sentiment_json(task_server: RunningServer, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "sentiment", "wonderful", "--json", "--server", task_server.address)
    row = json.loads(out)["results"][0]
    assert code == 0 and row["text"] == "wonderful" and row["label"] == "positive"
    assert set(row["scores"]) == {"negative", "neutral", "positive"} and row["truncated"] is False


def test_generate_streams_text_and_reports_on_stderr(
    task_server: RunningServer, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["generate", "The quick", "--max-tokens", "8", "--temperature", "0", "--model", "tiny_lm"]
    code, out, err = run(capsys, *argv, "--server", task_server.address)
    assert code == 0 and out.endswith("\n") and len(out) > 1
    assert "[length: " in err and "8 generated" in err
    code, again, _ = run(capsys, *argv, "--server", task_server.address)
    assert again == out


def test_generate_json_lines(task_server: RunningServer, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys,
        "generate",
        "The quick",
        "--max-tokens",
        "6",
        "--seed",
        "3",
        "--json",
        "--model",
        "tiny_lm",
        "--server",
        task_server.address,
    )
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and all("text" in r for r in rows[:-1])
    assert rows[-1]["finish_reason"] == "length" and rows[-1]["generated_tokens"] == 6


def test_exit_code_unavailable_when_no_server(drawing: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "classify", str(drawing), "--server", f"127.0.0.1:{free_port()}", "--timeout", "5")
    assert code == 3
    assert "cannot reach the server" in err and "deepserve serve" in err


def test_exit_code_invalid_argument(
    task_server: RunningServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    code, _, err = run(capsys, "classify", str(bad), "--server", task_server.address)
    assert code == 4 and "invalid argument: images[0] is not a PNG" in err
    code, _, err = run(capsys, "generate", "hi", "--top-p", "2", "--model", "tiny_lm", "--server", task_server.address)
    assert code == 4 and "top_p must be in (0, 1]" in err


def test_exit_code_not_found(task_server: RunningServer, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "sentiment", "hello", "--model", "missing", "--server", task_server.address)
    assert code == 5 and "unknown model 'missing'" in err


def test_exit_code_timeout(task_server: RunningServer, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(
        capsys,
        "generate",
        "The quick",
        "--max-tokens",
        "2000",
        "--temperature",
        "0",
        "--model",
        "slow_lm",
        "--timeout",
        "0.3",
        "--server",
        task_server.address,
    )
    assert code == 6 and "try a larger --timeout" in err
    assert out == "" or out.endswith("\n")  # text streamed before the deadline ends its line


def test_exit_code_usage(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, "classify", str(tmp_path / "missing.png"))
    assert code == 2 and "cannot read" in err and "missing.png" in err
    with pytest.raises(SystemExit) as caught:
        main(["classify", "x.png", "--top-k", "0"])
    assert caught.value.code == 2


def test_help_documents_exit_codes() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "service", "generate", "--help"], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert "exit codes:" in result.stdout and "3    server unavailable" in result.stdout


def test_stdin_image(
    task_server: RunningServer, drawing: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(drawing.read_bytes())))
    code, out, _ = run(capsys, "classify", "-", "--top-k", "1", "--server", task_server.address)
    assert code == 0 and out.startswith("-: bottom_right")
