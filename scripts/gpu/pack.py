"""Pack what a GPU machine without package registries needs to run the server and bench/gpu.py.

    python scripts/gpu/pack.py [--out .gpu] [--part-mb 28] [--keep-arch 90]

The GPU machine (docs/gpu.md) has Python 3.12, CUDA 13 and cuDNN 9 as Python packages, numpy, Pillow,
tokenizers, PyYAML and prometheus-client, but neither onnxruntime-gpu nor the server's other dependencies, and
it can download nothing: everything travels with the working tree, at most 64 MiB per call. This writes

- `<out>/ort-gpu.tar.xz.part-NN`: onnxruntime-gpu unpacked and tarred with xz, cut into parts of at most
  `--part-mb` MB for consecutive calls; `<out>/ort-gpu.parts` has their count and SHA-256. `--keep-arch 90`
  zeroes the machine code of every other GPU architecture in libonnxruntime_providers_cuda.so (sm_75 … sm_120:
  142 of its 284 MB), which then compresses to nothing: H100 and H200 are sm_90, and the CUDA driver picks a
  fat binary's entry by architecture, so the zeroed ones are never read there. The TensorRT provider
  library is left out. 255 MB of wheel become 69 MB.
- `<out>/wheels/`: the server's other dependencies as wheels for CPython 3.12 on x86-64 Linux.
- `<out>/perf.tar.xz`: perf_analyzer from tritonclient 2.41.0, with the two libraries it links that the image
  lacks (libb64 and CUDA 12's libcudart), if `.bench-venvs/perf` has them (`make bench` builds it).

scripts/gpu/setup.sh joins and installs all of it on the GPU machine.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import lzma
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ORT_GPU = "onnxruntime-gpu==1.31.1"
# The server's dependencies that the GPU image lacks or has in other versions, pinned to what the tests use.
WHEELS = [
    "grpcio==1.85.3",
    "grpcio-health-checking==1.78.2",
    "grpcio-reflection==1.78.2",
    "protobuf==6.33.6",
    "pydantic==2.14.4",
    "pydantic-core==2.50.5",
    "pydantic-settings==2.16.3",
    "python-dotenv==1.2.4",
    "annotated-types==0.8.0",
    "typing-inspection==0.4.5",
    "typing-extensions==4.16.0",
    "starlette==1.10.0",
    "uvicorn==0.54.0",
]
PLATFORMS = [
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux1_x86_64",
    "manylinux_2_5_x86_64",
]
FATBIN_MAGIC = 0xBA55ED50


def download(specs: list[str], dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--only-binary=:all:",
            "--python-version",
            "3.12",
            "--implementation",
            "cp",
            *platforms,
            "-d",
            str(dest),
            *specs,
        ],
        check=True,
    )


def fatbin_section(data: bytes) -> tuple[int, int]:
    """Offset and size of the ELF64 section `.nv_fatbin`."""
    (shoff,) = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)

    def section(i: int) -> tuple[int, int, int]:
        name, _type, _flags, _addr, offset, size = struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize)
        return name, offset, size

    _, strtab, _ = section(shstrndx)
    for i in range(shnum):
        name, offset, size = section(i)
        if data[strtab + name : data.index(b"\0", strtab + name)] == b".nv_fatbin":
            return offset, size
    raise SystemExit("no .nv_fatbin section: not a CUDA library?")


def keep_arch(data: bytearray, arch: int) -> tuple[int, int]:
    """Zero the payload of every cubin/PTX entry whose architecture is not `arch`; returns (kept, zeroed) bytes."""
    start, size = fatbin_section(bytes(data))
    pos, end, kept, zeroed = start, start + size, 0, 0
    while pos < end:
        magic, _version, header, fat = struct.unpack_from("<IHHQ", data, pos)
        if magic != FATBIN_MAGIC:
            pos += 8  # fat binaries are 8-byte aligned, with padding between them
            continue
        entry, last = pos + header, pos + header + fat
        while entry < last:
            _kind, _v, entry_header, payload = struct.unpack_from("<HHIQ", data, entry)
            (entry_arch,) = struct.unpack_from("<I", data, entry + 28)
            body = entry + entry_header
            if entry_arch == arch:
                kept += payload
            else:
                data[body : body + payload] = bytes(payload)
                zeroed += payload
            entry = body + payload
        pos = last
    return kept, zeroed


def pack_ort(wheel: Path, out: Path, arch: int | None, part_mb: int) -> list[Path]:
    buffer = io.BytesIO()
    with zipfile.ZipFile(wheel) as zf, tarfile.open(fileobj=buffer, mode="w") as tar:
        for info in zf.infolist():
            if info.is_dir() or info.filename.endswith("libonnxruntime_providers_tensorrt.so"):
                continue
            body = bytearray(zf.read(info))
            if arch is not None and info.filename.endswith("libonnxruntime_providers_cuda.so"):
                kept, zeroed = keep_arch(body, arch)
                print(f"{info.filename}: kept {kept / 1e6:.0f} MB of sm_{arch} code, zeroed {zeroed / 1e6:.0f} MB")
            member = tarfile.TarInfo(info.filename)
            member.size = len(body)
            member.mode = 0o755 if info.filename.endswith(".so") or ".so." in info.filename else 0o644
            tar.addfile(member, io.BytesIO(bytes(body)))
    packed = lzma.compress(buffer.getvalue(), preset=6)
    for old in out.glob("ort-gpu.tar.xz.part-*"):
        old.unlink()
    step = part_mb * 1_000_000
    parts = []
    for index in range(0, len(packed), step):
        part = out / f"ort-gpu.tar.xz.part-{index // step:02d}"
        part.write_bytes(packed[index : index + step])
        parts.append(part)
    digest = hashlib.sha256(packed).hexdigest()
    (out / "ort-gpu.parts").write_text(f"{len(parts)} {digest}\n")
    size = wheel.stat().st_size
    print(f"onnxruntime-gpu: {size / 1e6:.0f} MB wheel, {len(packed) / 1e6:.0f} MB in {len(parts)} parts")
    return parts


def pack_perf(out: Path) -> None:
    venv = ROOT / ".bench-venvs" / "perf"
    binary = venv / "bin" / "perf_analyzer"
    cudart = sorted(venv.glob("lib/python3*/site-packages/nvidia/cuda_runtime/lib/libcudart.so.12"))
    b64 = Path("/lib/x86_64-linux-gnu/libb64.so.0d")
    if not (binary.exists() and cudart and b64.exists()):
        print("perf_analyzer: .bench-venvs/perf or libb64 missing (run `make bench` once); the GPU run skips it")
        return
    target = out / "perf.tar.xz"
    with tarfile.open(target, "w:xz") as tar:
        for path in (binary, cudart[0], b64):
            tar.add(path.resolve(), arcname=path.name)
    print(f"perf_analyzer: {target.stat().st_size / 1e6:.0f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / ".gpu")
    parser.add_argument(
        "--part-mb", type=int, default=28, help="at most 64 MiB travel per call, the tree (33 MB) included"
    )
    parser.add_argument("--keep-arch", type=int, default=90, help="GPU architecture to keep (0: keep all)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    cache = Path(tempfile.gettempdir()) / "deepserve-gpu-download"  # the 255 MB wheel must not travel
    download([ORT_GPU], cache)
    wheel = next(cache.glob("onnxruntime_gpu-*.whl"))
    pack_ort(wheel, args.out, args.keep_arch or None, args.part_mb)
    shutil.rmtree(args.out / "wheels", ignore_errors=True)
    download(WHEELS, args.out / "wheels")
    print(f"wheels: {sum(p.stat().st_size for p in (args.out / 'wheels').iterdir()) / 1e6:.1f} MB")
    pack_perf(args.out)


if __name__ == "__main__":
    main()
