"""Library versions recorded as provenance (looked up once per process, no heavy imports)."""

from __future__ import annotations

import functools

from clipclust.version import __version__


@functools.lru_cache(maxsize=1)
def _versions() -> tuple[tuple[str, str], ...]:
    from importlib import metadata

    out = [("clipclust", __version__)]
    for dist in ("torch", "open_clip_torch", "transformers", "h5py", "numpy", "scikit-learn", "llama_cpp_python"):
        try:
            out.append((dist, metadata.version(dist)))
        except metadata.PackageNotFoundError:
            continue
    return tuple(out)


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shape stored numbers, for provenance."""
    return dict(_versions())
