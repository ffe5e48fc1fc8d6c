"""Loader for the C++ fused top-k encoder (kernels/topk_cpu.cpp).

The extension is compiled once with torch.utils.cpp_extension (ninja + a C++ compiler,
~25 s) into TORCH_EXTENSIONS_DIR or <WORKBENCH_DATA>/cache/torch_extensions, then
reloaded from that cache in milliseconds. Without a working toolchain we warn once and use the pure-torch
row-block encoder instead.

On CPUs with bf16 dot-product instructions (AVX512-BF16 or AMX) the kernel screens scores with
a bf16 GEMM and recomputes only the candidates in float32 (see topk_cpu.cpp); the result is
the float32 top-k (near-ties may order differently from the unscreened kernel, as between any
two float32 summation orders). WORKBENCH_TOPK_SCREEN=0 or 1 overrides the automatic choice.
"""

from __future__ import annotations

import fcntl
import functools
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import torch
from torch import Tensor

from kernels.blocked import topk_encode_blocked
from kernels.reference import TopKOutput
from workbench.paths import cache_dir

_SOURCE = Path(__file__).with_name("topk_cpu.cpp")
# Tiles for a 2-core AVX-512 EPYC (1 MiB L2 per core, 32 MiB L3): 512-row blocks keep the
# re-reads of W_enc (one per row block) small; the 2 MiB per-thread buffer stays in L3.
TILE_ROWS = 512
TILE_COLS = 1024
# Screened path: 256 columns per tile measured best (vs 64, 128 and 512, with 256- to 2048-row
# blocks); the tile's float32 copy for recomputes is then 576 KiB at d_in=576.
SCREEN_TILE_COLS = 256
# Below this many rows the per-call tile preparation costs more than the bf16 GEMM saves
# (measured at d_sae=32768, k=32: 64 rows 25.8 ms screened vs 21.3 exact, 128 rows 29.1 vs 40.4).
SCREEN_MIN_ROWS = 128
SCREEN_ENV = "WORKBENCH_TOPK_SCREEN"
_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@contextmanager
def _sole_loader(build: Path) -> Iterator[None]:
    """Load under an OS lock on `build`. Every load (even with nothing to rebuild) takes torch's build
    lock, a plain file `lock` that a loader killed with SIGKILL leaves behind, and every later load
    then waits for it forever. The OS lock is released when its holder dies, so a `lock` found while
    holding it is a dead loader's."""
    with open(build / "loader.flock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        (build / "lock").unlink(missing_ok=True)
        yield


def _build_dir() -> Path:
    root = os.environ.get("TORCH_EXTENSIONS_DIR")
    base = Path(root) if root else cache_dir() / "torch_extensions"
    path = base / f"workbench_topk_cpu-torch{torch.__version__}"
    path.mkdir(parents=True, exist_ok=True)
    return path


@functools.cache
def load_extension() -> ModuleType | None:
    """Compile (first call) or reload the extension; None, with a warning, if that fails."""
    from torch.utils import cpp_extension

    try:
        build = _build_dir()
        with _sole_loader(build):
            return cpp_extension.load(
                name="workbench_topk_cpu",
                sources=[str(_SOURCE)],
                extra_cflags=["-O3", "-march=native", "-fopenmp"],
                extra_ldflags=["-fopenmp"],
                build_directory=str(build),
                verbose=False,
            )
    except Exception as err:  # no ninja, no compiler, or a failed build: all mean "fall back"
        first_line = (str(err).strip().splitlines() or [type(err).__name__])[0]
        warnings.warn(
            f"kernels: C++ top-k extension unavailable ({first_line}); using the pure-torch row-block encoder",
            RuntimeWarning,
            stacklevel=2,
        )
        return None


@functools.cache
def cpu_has_fast_bf16() -> bool:
    """Whether oneDNN can run bf16 GEMMs with native dot-product instructions here."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return torch.backends.mkldnn.is_available() and any(f in flags for f in _BF16_FLAGS)


def use_screen(n_rows: int) -> bool:
    """The automatic choice of the screened path, unless WORKBENCH_TOPK_SCREEN says otherwise."""
    forced = os.environ.get(SCREEN_ENV, "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    # Without oneDNN (torch.backends.mkldnn.enabled = False) bf16 GEMMs take a slow path.
    return n_rows >= SCREEN_MIN_ROWS and bool(torch.backends.mkldnn.enabled) and cpu_has_fast_bf16()


def topk_encode_cpu(
    xc: Tensor,  # [N, d_in] float32, already x - b_dec
    W_enc: Tensor,  # [d_in, d_sae]
    b_enc: Tensor,  # [d_sae]
    k: int,
    threshold: Tensor | None = None,  # [d_sae]
    screen: bool | None = None,  # None: use_screen() decides
) -> TopKOutput:
    """Fused tiled GEMM + running top-k on CPU; falls back to row blocks without the extension."""
    ext = load_extension()
    if ext is None:
        return topk_encode_blocked(xc, W_enc, b_enc, k, threshold)
    screen = use_screen(xc.shape[0]) if screen is None else screen
    tile_cols = SCREEN_TILE_COLS if screen else TILE_COLS
    values, indices = ext.topk_encode(xc, W_enc, b_enc, threshold, k, TILE_ROWS, tile_cols, screen)
    return TopKOutput(values, indices)
