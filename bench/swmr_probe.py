"""HDF5 SWMR mode measured against the workspace's transactions (docs/cache-format.md, crash safety).

Three questions, answered on this machine:

1. Append throughput: batches of B keys + B x D float32 rows appended to an existing set by
   (a) plain h5py, file open for the whole run (the baseline every ratio is against),
   (b) h5py in SWMR mode (libver="latest", swmr_mode=True, a flush per batch so readers see it),
   (c) the workspace (Workspace.write_batch: lock, open, one journalled transaction per batch).
2. Crash safety: a child appends in a loop (SWMR, or plain h5py for contrast) and is SIGKILLed at a
   random moment, N times on fresh files; after each kill the file is opened and every row read, plainly
   and as a SWMR reader, and reopened for appending.
3. The structural-change limit: what a SWMR writer may not do (create a group, a dataset, an attribute),
   which the workspace does on the fly (new sets, clusterings, digests, memo).

    python bench/swmr_probe.py                    # 200 batches of 64 x 512, 20 kills each way
    python bench/swmr_probe.py --batches 50 --kills 5
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

WRITER = r"""
import sys, h5py, numpy as np
path, swmr, batch, dim = sys.argv[1], sys.argv[2] == "1", int(sys.argv[3]), int(sys.argv[4])
f = h5py.File(path, "a", libver="latest") if swmr else h5py.File(path, "a")
if swmr:
    f.swmr_mode = True
keys, data = f["keys"], f["data"]
rows = np.ones((batch, dim), np.float32)
print("ready", flush=True)
i = 0
while True:
    n = keys.shape[0]
    keys.resize(n + batch, axis=0); data.resize(n + batch, axis=0)
    keys[n:] = np.array([b"%064d" % (n + j) for j in range(batch)]); data[n:] = rows
    if swmr:
        keys.flush(); data.flush()
    else:
        f.flush()
    i += 1
"""


def new_file(path: Path, dim: int, swmr: bool, prefill: int = 256) -> None:
    import h5py

    kwargs = {"libver": "latest"} if swmr else {}
    with h5py.File(path, "w", **kwargs) as f:
        f.create_dataset("keys", data=np.array([b"%064d" % i for i in range(prefill)], dtype="S64"), maxshape=(None,),
                         chunks=(1024,))
        f.create_dataset("data", data=np.ones((prefill, dim), np.float32), maxshape=(None, dim),
                         chunks=(max(1, 262144 // (dim * 4)), dim))


def batches(batch: int, dim: int, count: int) -> list[tuple[list[str], np.ndarray]]:
    rng = np.random.default_rng(0)
    out = []
    for b in range(count):
        keys = [f"{b * batch + j:064x}" for j in range(batch)]
        vecs = rng.normal(size=(batch, dim)).astype(np.float32)
        out.append((keys, vecs / np.linalg.norm(vecs, axis=1, keepdims=True)))
    return out


def append_h5py(path: Path, work: list, swmr: bool) -> float:
    import h5py

    new_file(path, work[0][1].shape[1], swmr, prefill=0)
    t0 = time.perf_counter()
    with h5py.File(path, "a", **({"libver": "latest"} if swmr else {})) as f:
        if swmr:
            f.swmr_mode = True
        keys, data = f["keys"], f["data"]
        for ks, vecs in work:
            n = keys.shape[0]
            keys.resize(n + len(ks), axis=0)
            data.resize(n + len(ks), axis=0)
            keys[n:] = np.array(ks, dtype="S64")
            data[n:] = vecs
            if swmr:
                keys.flush()
                data.flush()
            else:
                f.flush()
    return time.perf_counter() - t0


def append_reopening(path: Path, work: list) -> float:
    """Plain h5py opening the file for each batch, as the workspace does (no lock, no journal)."""
    import h5py

    new_file(path, work[0][1].shape[1], False, prefill=0)
    t0 = time.perf_counter()
    for ks, vecs in work:
        with h5py.File(path, "a") as f:
            keys, data = f["keys"], f["data"]
            n = keys.shape[0]
            keys.resize(n + len(ks), axis=0)
            data.resize(n + len(ks), axis=0)
            keys[n:] = np.array(ks, dtype="S64")
            data[n:] = vecs
    return time.perf_counter() - t0


def append_store(path: Path, work: list) -> float:
    from clipclust.store import SetSpec, Workspace

    ws = Workspace(path)
    spec = SetSpec.of(("probe", "image"), name="image", kind="image", model="probe")
    t0 = time.perf_counter()
    for ks, vecs in work:
        ws.write_batch(rows=[(spec, ks, vecs)])
    return time.perf_counter() - t0


def throughput(root: Path, n_batches: int, batch: int, dim: int) -> None:
    work = batches(batch, dim, n_batches)
    rows = n_batches * batch
    results = {}
    for name, fn in (("plain h5py (open once)", lambda p: append_h5py(p, work, False)),
                     ("h5py SWMR (open once, flush per batch)", lambda p: append_h5py(p, work, True)),
                     ("plain h5py (open per batch)", lambda p: append_reopening(p, work)),
                     ("workspace transactions (open per batch)", lambda p: append_store(p, work))):
        times = []
        for attempt in range(2):
            path = root / f"tp-{len(results)}-{attempt}.h5"
            times.append(fn(path))
            path.unlink()
        results[name] = min(times)
    base = results["plain h5py (open once)"]
    print(f"1. appending {n_batches} batches of {batch} x {dim} float32 (best of 2; ratio against plain h5py):")
    for name, took in results.items():
        print(f"   {name:42s} {rows / took:9.0f} rows/s   x{took / base:.2f}")


def read_back(path: Path, swmr: bool) -> str:
    """'ok (N rows)' or the error class and message of the first failure."""
    import h5py

    try:
        with h5py.File(path, "r", **({"libver": "latest", "swmr": True} if swmr else {})) as f:
            n = f["keys"].shape[0]
            f["keys"][:]
            f["data"][:]
            if f["data"].shape[0] != n:
                return f"misaligned ({n} keys, {f['data'].shape[0]} rows)"
            return f"ok ({n} rows)"
    except Exception as exc:  # noqa: BLE001 - a probe reports every failure
        return f"{type(exc).__name__}: {str(exc).splitlines()[0][:90]}"


def reopen_for_append(path: Path, swmr: bool) -> str:
    import h5py

    try:
        with h5py.File(path, "a", **({"libver": "latest"} if swmr else {})) as f:
            f["keys"].resize(f["keys"].shape[0] + 1, axis=0)
        return "ok"
    except Exception as exc:  # noqa: BLE001
        return f"{type(exc).__name__}: {str(exc).splitlines()[0][:90]}"


def kills(root: Path, n: int, dim: int, swmr: bool, rng: random.Random) -> None:
    outcomes: dict[str, dict[str, int]] = {"plain read": {}, "SWMR read": {}, "reopen to append": {}}
    for i in range(n):
        path = root / f"kill-{int(swmr)}-{i}.h5"
        new_file(path, dim, swmr)
        child = subprocess.Popen([sys.executable, "-c", WRITER, str(path), "1" if swmr else "0", "16", str(dim)],
                                 stdout=subprocess.PIPE, text=True)
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.0, 0.3))
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        for what, result in (("plain read", read_back(path, False)), ("SWMR read", read_back(path, True))):
            verdict = "ok" if result.startswith("ok") else result
            outcomes[what][verdict] = outcomes[what].get(verdict, 0) + 1
        result = reopen_for_append(path, swmr)
        outcomes["reopen to append"][result] = outcomes["reopen to append"].get(result, 0) + 1
        path.unlink()
    print(f"2. {'SWMR' if swmr else 'plain h5py'} writer SIGKILLed {n} times at random moments while appending:")
    for what, counts in outcomes.items():
        listing = "; ".join(f"{k}: {v}/{n}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))
        print(f"   {what:17s} {listing}")


def structural(root: Path, dim: int) -> None:
    """Each change on a fresh file in SWMR mode: is it refused, and does the file read afterwards?"""
    import h5py

    def grow(f: h5py.File) -> None:
        for name in ("keys", "data"):
            f[name].resize(f[name].shape[0] + 1, axis=0)

    ops = (("append rows to existing datasets", grow),
           ("set an attribute (a set's digest)", lambda f: f["data"].attrs.__setitem__("digest", "abc")),
           ("create a group (a new set)", lambda f: f.create_group("sets/new")),
           ("create a dataset (a clustering)", lambda f: f.create_dataset("ids", data=np.arange(3))),
           ("delete a dataset (a clustering replace)", lambda f: f.__delitem__("keys")))
    print("3. one change by a SWMR writer on a fresh file: refused?, then does the file read (plain / SWMR reader)?")
    for i, (what, op) in enumerate(ops):
        path = root / f"structural-{i}.h5"
        new_file(path, dim, True)
        verdict = "allowed"
        try:
            f = h5py.File(path, "a", libver="latest")
            f.swmr_mode = True
            try:
                op(f)
            except Exception as exc:  # noqa: BLE001 - a probe reports every failure
                verdict = f"refused ({type(exc).__name__}: {str(exc).splitlines()[0][:60]})"
            f.close()
        except Exception as exc:  # noqa: BLE001
            verdict += f", close failed ({type(exc).__name__}: {str(exc).splitlines()[0][:60]})"
        after = f"{_short(read_back(path, False))} / {_short(read_back(path, True))}"
        print(f"   {what:40s} {verdict}; reads: {after}")


def _short(result: str) -> str:
    return "ok" if result.startswith("ok") else result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    import h5py

    print(f"h5py {h5py.version.version}, HDF5 {h5py.version.hdf5_version}")
    with tempfile.TemporaryDirectory(prefix="clipclust-swmr-") as tmp:
        root = Path(tmp)
        throughput(root, args.batches, args.batch, args.dim)
        rng = random.Random(args.seed)
        for swmr in (True, False):
            kills(root, args.kills, args.dim, swmr, rng)
        structural(root, args.dim)


if __name__ == "__main__":
    main()
