"""Every file of a model resolves, after symbolic links, inside its model's folder (the step model inside its
version folder); otherwise the model fails to load with an error naming the model and the key.

The issue: `labels: ../../outside/secret.txt` made Classify answer with the lines of a file outside the
repository."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import yaml
from PIL import Image

from service.config import parse_model_config
from service.errors import ModelLoadError
from service.grpc._generated.deepserve.v1 import image_classifier_pb2 as ic
from service.grpc._generated.deepserve.v1 import image_classifier_pb2_grpc as ic_grpc
from service.grpc._generated.inference import grpc_service_pb2 as pb
from service.grpc._generated.inference import grpc_service_pb2_grpc as pb_grpc
from service.repository import ModelRepository
from service.tasks.assets import read_labels
from tests.conftest import RunningServer, start_server
from tests.tiny_task_models import QUADRANTS, write_quadrants

SECRET = "the-secret-line"
CONFIG = {
    "max_batch_size": 4,
    "inputs": [{"name": "x", "datatype": "FP32", "dims": [2]}],
    "outputs": [{"name": "y", "datatype": "FP32", "dims": [2]}],
}
TEXT = {"task": "sentiment", "labels": "labels.txt", "text": {"max_length": 8}}
STEP = {
    "task": "text_generation",
    "text": {"max_length": 8},
    "generation": {"context_length": 8, "step_model": "decoder_step.onnx"},
}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """`<tmp>/models` (the repository) beside `<tmp>/outside/secret.txt`."""
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.txt").write_text(f"{SECRET}\n" * 4)
    (tmp_path / "outside" / "model.onnx").write_bytes(b"")
    (tmp_path / "models").mkdir()
    return tmp_path / "models"


def write_model(root: Path, name: str = "m", versions: tuple[int, ...] = (1, 2), **config: object) -> Path:
    """A model folder whose files exist (empty: the repository checks where files are, not what they hold)."""
    folder = root / name
    folder.mkdir()
    (folder / "config.yaml").write_text(yaml.safe_dump({**CONFIG, **config}))
    for name in ("labels.txt", "tokenizer.json"):
        (folder / name).write_text("a\nb\n")
    for v in versions:
        (folder / str(v)).mkdir()
        for file in ("model.onnx", "decoder_step.onnx"):
            (folder / str(v) / file).write_bytes(b"")
    return folder


def load_error(root: Path, name: str = "m") -> str:
    with pytest.raises(ModelLoadError) as info:
        ModelRepository(root).load(name)
    message = info.value.message
    assert str(root.parent) not in message, message  # no server path, even in a refusal
    return message


# ---- keys that name files in the model's folder ----------------------------------------------------
@pytest.mark.parametrize(
    ("config", "key", "value"),
    [
        ({**TEXT, "labels": "../../outside/secret.txt"}, "labels", "../../outside/secret.txt"),
        ({**TEXT, "labels": "../m/../../outside/secret.txt"}, "labels", "../m/../../outside/secret.txt"),
        ({**TEXT, "labels": ".."}, "labels", ".."),
        ({**TEXT, "labels": "."}, "labels", "."),
        ({**TEXT, "text": {"max_length": 8, "tokenizer": "../other/tokenizer.json"}}, "text.tokenizer", None),
        (
            {**STEP, "generation": {**STEP["generation"], "step_model": "../1/decoder_step.onnx"}},
            "generation.step_model",
            None,
        ),
        (
            {**STEP, "generation": {**STEP["generation"], "step_model": "../../outside/model.onnx"}},
            "generation.step_model",
            None,
        ),
    ],
)
def test_a_key_naming_a_file_outside_is_refused(root: Path, config: dict, key: str, value: str | None) -> None:
    write_model(root, **config)
    message = load_error(root)
    where = "the version folder" if key == "generation.step_model" else "the model's folder"
    assert message.startswith(f"model 'm': `{key}` must name a file inside {where}, got '"), message
    if value is not None:
        assert f"got {value!r}" in message


def test_the_issue_example_reads_as_the_issue_asks(root: Path) -> None:
    write_model(root, **{**TEXT, "labels": "../../outside/secret.txt"})
    assert load_error(root) == (
        "model 'm': `labels` must name a file inside the model's folder, got '../../outside/secret.txt', "
        "which is outside it"
    )


def test_an_absolute_path_is_refused(root: Path) -> None:
    write_model(root, **{**TEXT, "labels": str(root.parent / "outside" / "secret.txt")})
    with pytest.raises(ModelLoadError, match=r"`labels` must name a file inside the model's folder"):
        ModelRepository(root).load("m")


@pytest.mark.parametrize(("file", "key"), [("labels.txt", "labels"), ("tokenizer.json", "text.tokenizer")])
def test_a_symbolic_link_to_outside_is_refused(root: Path, file: str, key: str) -> None:
    folder = write_model(root, **TEXT)
    (folder / file).unlink()
    (folder / file).symlink_to(root.parent / "outside" / "secret.txt")
    message = load_error(root)
    assert message == (
        f"model 'm': `{key}` must name a file inside the model's folder, got {file!r}, a symbolic link to outside it"
    )


def test_a_symbolic_link_through_a_linked_folder_is_refused(root: Path) -> None:
    folder = write_model(root, **{**TEXT, "labels": "assets/secret.txt"})
    (folder / "assets").symlink_to(root.parent / "outside")
    assert "`labels` must name a file inside the model's folder" in load_error(root)


def test_symbolic_links_that_stay_inside_are_fine(root: Path) -> None:
    """As Kubernetes mounts ConfigMaps: `labels.txt -> ..data/labels.txt`, `..data -> ..2024_01_01`."""
    folder = write_model(root, **TEXT)
    (folder / "..2024_01_01").mkdir()
    (folder / "labels.txt").rename(folder / "..2024_01_01" / "labels.txt")
    (folder / "..data").symlink_to("..2024_01_01")
    (folder / "labels.txt").symlink_to("..data/labels.txt")
    (folder / "2" / "model.onnx").unlink()
    (folder / "2" / "model.onnx").symlink_to("../1/model.onnx")
    entry = ModelRepository(root).load("m")
    assert entry.versions == {"2": folder / "2" / "model.onnx"}
    config = parse_model_config(yaml.safe_load((folder / "config.yaml").read_text()), "m")
    assert read_labels("m", folder, config, None) == ["a", "b"]


def test_a_symbolic_link_loop_is_a_load_error(root: Path) -> None:
    folder = write_model(root, **TEXT)
    (folder / "labels.txt").unlink()
    (folder / "labels.txt").symlink_to("labels.txt")
    assert "`labels`" in load_error(root)


# ---- the files every model has: config.yaml, version folders, model.onnx, the step model -------------
def test_a_config_linked_from_outside_is_refused(root: Path) -> None:
    folder = write_model(root)
    (root.parent / "outside" / "config.yaml").write_text((folder / "config.yaml").read_text())
    (folder / "config.yaml").unlink()
    (folder / "config.yaml").symlink_to(root.parent / "outside" / "config.yaml")
    assert load_error(root) == (
        "model 'm': `config.yaml` must name a file inside the model's folder, got 'config.yaml', "
        "a symbolic link to outside it"
    )


def test_a_model_file_linked_from_outside_is_refused(root: Path) -> None:
    folder = write_model(root)
    (folder / "2" / "model.onnx").unlink()
    (folder / "2" / "model.onnx").symlink_to(root.parent / "outside" / "model.onnx")
    assert "`2/model.onnx` must name a file inside the model's folder, got '2/model.onnx'" in load_error(root)


def test_a_version_folder_linked_from_outside_is_refused(root: Path) -> None:
    folder = write_model(root, versions=(1,))
    (root.parent / "outside" / "2").mkdir()
    (root.parent / "outside" / "2" / "model.onnx").write_bytes(b"")
    (folder / "2").symlink_to(root.parent / "outside" / "2")
    assert "`2/model.onnx` must name a file inside the model's folder, got '2'" in load_error(root)


def test_a_version_not_served_is_not_checked(root: Path) -> None:
    """Only the files the server would read: an old version outside `version_policy` does not block a load."""
    folder = write_model(root, versions=(2,))
    (folder / "1").symlink_to(root.parent / "outside")
    assert list(ModelRepository(root).load("m").versions) == ["2"]


def test_a_step_model_linked_from_outside_is_refused(root: Path) -> None:
    folder = write_model(root, **STEP)
    (folder / "2" / "decoder_step.onnx").unlink()
    (folder / "2" / "decoder_step.onnx").symlink_to(root.parent / "outside" / "model.onnx")
    assert "`generation.step_model` must name a file inside the version folder" in load_error(root)


def test_a_model_folder_linked_from_outside_is_not_in_the_repository(root: Path) -> None:
    (root.parent / "elsewhere").mkdir()
    write_model(root.parent / "elsewhere")
    (root / "m").symlink_to(root.parent / "elsewhere" / "m")
    with pytest.raises(Exception, match="model 'm' is not in the repository"):
        ModelRepository(root).load("m")


# ---- the readers check too ------------------------------------------------------------------------------
def test_read_labels_refuses_outside_files_by_itself(root: Path) -> None:
    folder = write_model(root)
    config = parse_model_config({**CONFIG, **TEXT, "labels": "../../outside/secret.txt"}, "m")
    with pytest.raises(ModelLoadError, match="`labels` must name a file inside the model's folder"):
        read_labels("m", folder, config, None)


# ---- on a real server: the issue's Classify ---------------------------------------------------------------
@pytest.fixture
def server(root: Path) -> Iterator[RunningServer]:
    for name, labels in (("leaky", "../../outside/secret.txt"), ("linked", "labels.txt"), ("quadrants", None)):
        folder = write_quadrants(root, name)
        if labels is not None:
            config = yaml.safe_load((folder / "config.yaml").read_text())
            (folder / "config.yaml").write_text(yaml.safe_dump({**config, "labels": labels}))
    (root / "linked" / "labels.txt").unlink()
    (root / "linked" / "labels.txt").symlink_to(root.parent / "outside" / "secret.txt")
    running = start_server(root)
    yield running
    running.stop()


def png() -> bytes:
    out = io.BytesIO()
    Image.new("L", (32, 32)).save(out, "PNG")
    return out.getvalue()


@pytest.mark.parametrize(("model", "file"), [("leaky", "../../outside/secret.txt"), ("linked", "labels.txt")])
def test_classify_never_reads_a_file_outside(server: RunningServer, root: Path, model: str, file: str) -> None:
    with grpc.insecure_channel(server.address) as channel:
        with pytest.raises(grpc.RpcError) as info:
            ic_grpc.ImageClassifierStub(channel).Classify(
                ic.ClassifyRequest(images=[png()], model_name=model), timeout=10
            )
        index = pb_grpc.GRPCInferenceServiceStub(channel).RepositoryIndex(pb.RepositoryIndexRequest(), timeout=10)
        good = ic_grpc.ImageClassifierStub(channel).Classify(
            ic.ClassifyRequest(images=[png()], model_name="quadrants"), timeout=10
        )
    assert info.value.code() is grpc.StatusCode.UNAVAILABLE
    message = info.value.details()
    expected = f"model '{model}': `labels` must name a file inside the model's folder, got {file!r}"
    assert message.startswith(f"model '{model}' failed to load: {expected}"), message
    reasons = {m.name: (m.state, m.reason) for m in index.models}
    assert (
        reasons[model][0] == "UNAVAILABLE"
        and "`labels` must name a file inside the model's folder" in reasons[model][1]
    )
    assert reasons["quadrants"][0] == "READY"
    assert good.classifications[0].labels[0].label in QUADRANTS
    for text in (message, *(reason for _, reason in reasons.values())):
        assert SECRET not in text and str(root.parent) not in text
