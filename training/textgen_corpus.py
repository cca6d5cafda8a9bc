"""textgen_transformer's corpus: the running Python's own standard library source, split by module.

Every `.py` file under `sysconfig.get_paths()["stdlib"]` in sorted order, except the test suites, the
bundled `site-packages`, generated tables and data (`encodings`, `pydoc_data`, `_sysconfigdata*`, the
`config-*` build folder), `turtledemo` and `ensurepip`. Whole top-level modules or packages go to one part,
by a CRC-32 of their name (`crc32 % 20`: 0 test, 1 validation, the rest training), so no held-out module
is ever seen in training and the selection is the same on every machine with the same Python version.
"""

from __future__ import annotations

import sys
import sysconfig
import zlib
from dataclasses import dataclass, field
from pathlib import Path

EXCLUDED_FOLDERS = frozenset(
    {
        "test",
        "tests",
        "idle_test",
        "site-packages",
        "dist-packages",
        "encodings",
        "pydoc_data",
        "__pycache__",
        "turtledemo",
        "ensurepip",
    }
)
BUCKETS, TEST_BUCKET, VALIDATION_BUCKET = 20, 0, 1


@dataclass(frozen=True)
class SourceFile:
    module: str
    """Dotted module name, e.g. `email.utils`."""
    top: str
    text: str


@dataclass(frozen=True)
class StdlibCorpus:
    root: Path
    train: list[SourceFile] = field(default_factory=list)
    validation: list[SourceFile] = field(default_factory=list)
    test: list[SourceFile] = field(default_factory=list)

    @property
    def source(self) -> str:
        return f"Python {sys.version.split()[0]} standard library source ({self.root})"

    def modules(self, part: str) -> list[str]:
        return sorted({f.top for f in getattr(self, part)})


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def part_of(top: str) -> str:
    bucket = zlib.crc32(top.encode()) % BUCKETS
    return "test" if bucket == TEST_BUCKET else "validation" if bucket == VALIDATION_BUCKET else "train"


def _included(relative: Path) -> bool:
    folders = relative.parts[:-1]
    return not (
        set(folders) & EXCLUDED_FOLDERS
        or relative.name.startswith("_sysconfigdata")
        or (folders and folders[0].startswith("config-"))
    )


def _module(relative: Path) -> str:
    parts = [*relative.parts[:-1], relative.stem]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def load_stdlib(root: Path | None = None) -> StdlibCorpus:
    """The standard library's source files, each in the part its top-level module falls in."""
    root = root or stdlib_root()
    corpus = StdlibCorpus(root)
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root)
        if not _included(relative):
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        top = relative.parts[0].removesuffix(".py")
        getattr(corpus, part_of(top)).append(SourceFile(_module(relative), top, text))
    if not corpus.train or not corpus.validation or not corpus.test:
        raise ValueError(f"{root}: found no standard library source to split")
    return corpus
