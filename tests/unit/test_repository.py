"""The model repository on disk: which versions are served, and names that must never leave the root."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from service.errors import ModelLoadError, ModelNotFoundError
from service.repository import ModelRepository

CONFIG = {
    "max_batch_size": 4,
    "inputs": [{"name": "x", "datatype": "FP32", "dims": [2]}],
    "outputs": [{"name": "y", "datatype": "FP32", "dims": [2]}],
}


def write_model(root: Path, name: str, versions: tuple[int, ...] = (1,), **config: object) -> Path:
    """A model folder; the repository only checks that model.onnx files exist, so they stay empty."""
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump({**CONFIG, **config}))
    for v in versions:
        (folder / str(v)).mkdir()
        (folder / str(v) / "model.onnx").write_bytes(b"")
    return folder


def test_names_lists_folders_with_a_config_sorted(tmp_path: Path) -> None:
    write_model(tmp_path, "b")
    write_model(tmp_path, "a")
    (tmp_path / "no_config").mkdir()
    (tmp_path / "file.yaml").write_text("x: 1")
    assert ModelRepository(tmp_path).names() == ["a", "b"]


def test_missing_root_has_no_names(tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path / "absent")
    assert not repo.exists()
    assert repo.names() == []


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (None, ["3"]),
        ({"latest": 1}, ["3"]),
        ({"latest": 2}, ["2", "3"]),
        ({"latest": 10}, ["1", "2", "3"]),
        ({"specific": [1, 3]}, ["1", "3"]),
        ({"specific": [2, 7]}, ["2"]),
    ],
)
def test_version_policy_selects_versions(tmp_path: Path, policy: dict | None, expected: list[str]) -> None:
    extra = {} if policy is None else {"version_policy": policy}
    folder = write_model(tmp_path, "m", versions=(1, 2, 3), **extra)
    entry = ModelRepository(tmp_path).load("m")
    assert sorted(entry.versions, key=int) == expected
    assert entry.versions[expected[0]] == folder.resolve() / expected[0] / "model.onnx"
    assert entry.name == "m" and entry.config.max_batch_size == 4


def test_versions_are_ordered_numerically_not_as_text(tmp_path: Path) -> None:
    write_model(tmp_path, "m", versions=(2, 10, 9))
    assert list(ModelRepository(tmp_path).load("m").versions) == ["10"]


def test_specific_policy_matching_nothing_says_how_to_fix(tmp_path: Path) -> None:
    write_model(tmp_path, "m", versions=(1, 2), version_policy={"specific": [5]})
    with pytest.raises(ModelLoadError) as info:
        ModelRepository(tmp_path).load("m")
    assert "model 'm'" in info.value.message
    assert "selects none of the available versions [1, 2]" in info.value.message
    assert "version_policy.specific" in info.value.message


def test_no_versions_is_a_load_error_naming_the_expected_file(tmp_path: Path) -> None:
    folder = write_model(tmp_path, "m", versions=())
    (folder / "2").mkdir()  # a version folder without its model.onnx
    (folder / "latest").mkdir()  # not a number: ignored
    (folder / "latest" / "model.onnx").write_bytes(b"")
    with pytest.raises(ModelLoadError) as info:
        ModelRepository(tmp_path).load("m")
    assert "model 'm': no version folder with a model.onnx" in info.value.message
    assert "expected 1/model.onnx in its folder" in info.value.message
    assert str(tmp_path) not in info.value.message


def test_version_folders_without_model_file_are_skipped(tmp_path: Path) -> None:
    folder = write_model(tmp_path, "m", versions=(1,))
    (folder / "2").mkdir()
    assert list(ModelRepository(tmp_path).load("m").versions) == ["1"]


def test_bad_config_is_reported_by_load(tmp_path: Path) -> None:
    write_model(tmp_path, "m", bogus=True)
    with pytest.raises(ModelLoadError, match="unknown key `bogus`"):
        ModelRepository(tmp_path).load("m")


def test_unknown_model_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="model 'nope' is not in the repository") as info:
        ModelRepository(tmp_path).load("nope")
    assert str(tmp_path) not in info.value.message  # no server paths in what clients read


@pytest.mark.parametrize("name", ["m" * (1 << 20), "../" * (1 << 18)])
def test_a_megabyte_name_is_echoed_as_a_short_prefix(tmp_path: Path, name: str) -> None:
    with pytest.raises(ModelNotFoundError, match=r"more characters\) is not a valid model name") as info:
        ModelRepository(tmp_path).load(name)
    assert len(info.value.message) < 300


@pytest.mark.parametrize(
    "name", ["../outside", "..", ".", "", "a/b", "/etc", "..\\outside", "m/../../outside", "-rf", "x" * 200, "a\nb"]
)
def test_traversal_and_invalid_names_are_not_found(tmp_path: Path, name: str) -> None:
    repo_root = tmp_path / "repo"
    write_model(repo_root, "m")
    write_model(tmp_path, "outside")  # a valid model folder just outside the repository
    repo = ModelRepository(repo_root)
    with pytest.raises(ModelNotFoundError):
        repo.model_dir(name)
    with pytest.raises(ModelNotFoundError):
        repo.load(name)


def test_traversal_name_message_explains_valid_names(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError) as info:
        ModelRepository(tmp_path).model_dir("../x")
    assert "'../x' is not a valid model name" in info.value.message
    assert "no path separators" in info.value.message


def test_symlink_leaving_the_repository_is_not_followed(tmp_path: Path) -> None:
    repo_root = tmp_path / "repo"
    repo_root.mkdir()
    outside = write_model(tmp_path, "outside")
    (repo_root / "link").symlink_to(outside, target_is_directory=True)
    repo = ModelRepository(repo_root)
    with pytest.raises(ModelNotFoundError, match="model 'link' is not in the repository"):
        repo.load("link")


def test_dotted_names_inside_the_repository_are_fine(tmp_path: Path) -> None:
    write_model(tmp_path, "resnet-50.v2_int8")
    assert ModelRepository(tmp_path).model_dir("resnet-50.v2_int8") == (tmp_path / "resnet-50.v2_int8").resolve()


GENERATION = {
    "task": "text_generation",
    "text": {"max_length": 16},
    "generation": {"context_length": 16, "step_model": "decoder_step.onnx"},
}


def test_step_model_is_found_next_to_each_version(tmp_path: Path) -> None:
    folder = write_model(tmp_path, "lm", versions=(1, 2), version_policy={"latest": 2}, **GENERATION)
    for v in (1, 2):
        (folder / str(v) / "decoder_step.onnx").write_bytes(b"")
    entry = ModelRepository(tmp_path).load("lm")
    assert entry.step_models == {v: folder.resolve() / v / "decoder_step.onnx" for v in ("1", "2")}
    assert ModelRepository(tmp_path).load("lm").config.generation.step_model == "decoder_step.onnx"


def test_missing_step_model_is_a_load_error_naming_the_key(tmp_path: Path) -> None:
    write_model(tmp_path, "lm", **GENERATION)
    with pytest.raises(ModelLoadError) as info:
        ModelRepository(tmp_path).load("lm")
    assert "model 'lm': `generation.step_model`" in info.value.message
    assert "(1/decoder_step.onnx)" in info.value.message
    assert "remove the key" in info.value.message
    assert str(tmp_path) not in info.value.message


def test_without_step_model_there_is_none(tmp_path: Path) -> None:
    config = {**GENERATION, "generation": {"context_length": 16}}
    write_model(tmp_path, "lm", **config)
    assert ModelRepository(tmp_path).load("lm").step_models == {}
