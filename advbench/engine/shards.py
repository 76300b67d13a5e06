"""Sharded, resumable evaluation: which batches a rank runs, its resume files, and how the ranks finish.

One process keeps ``attacks/.<suite>.partial.json`` (per-batch results so far) and ``attacks/.<suite>.state/``
(per-batch state of attacks with internal progress, AutoAttack). Under W ranks, rank r evaluates global
batches r, r + W, ... and keeps ``.<suite>.rank<r>-of-<W>.partial.json`` and ``.state/``; a rerun resumes
each shard from its own files and also takes the finished batches it owns from partial files of another
world size. When every shard is done, :func:`merge_shards` puts the batches back in global order.
"""

from __future__ import annotations

import glob
import json
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch.distributed as dist

from advbench import runs
from advbench.core import distributed
from advbench.core.signals import StopFlag


def shard_paths(out_file: str | Path, rank: int = 0, world: int = 1) -> tuple[Path, Path]:
    """The resume files of one shard: (partial results JSON, AutoAttack state directory).

    One process keeps ``.<suite>.partial.json`` and ``.<suite>.state/``; rank ``r`` of ``W`` keeps
    ``.<suite>.rank<r>-of-<W>.partial.json`` and ``.<suite>.rank<r>-of-<W>.state/``.
    """
    out_file = Path(out_file)
    tag = "" if world <= 1 else f".rank{rank}-of-{world}"
    return (out_file.with_name(f".{out_file.stem}{tag}.partial.json"),
            out_file.with_name(f".{out_file.stem}{tag}.state"))


def shard_batches(n_batches: int, rank: int = 0, world: int = 1) -> list[int]:
    """The global batches a rank evaluates: ``rank, rank + W, rank + 2W, ...`` (all of them for one process).

    Batches are cut from the global sequence exactly as one process cuts them, and every batch draws its
    randomness from (seed, attack, eps, global batch index), so each batch's result does not depend on
    which rank ran it or on the number of ranks. Striding (rather than contiguous blocks) spreads slow
    batches (robust points that survive to AutoAttack's later components) evenly over the ranks.
    """
    return list(range(rank, n_batches, max(1, world)))


def resume_files(out_file: Path, own: Path, world: int) -> list[Path]:
    """Partial files left by earlier runs of the same suite with a different number of processes."""
    stem = out_file.stem
    found = [out_file.with_name(f".{stem}.partial.json"), *out_file.parent.glob(f".{glob.escape(stem)}.rank*-of-*"
                                                                              ".partial.json")]
    same_world = f"-of-{world}.partial.json"
    return [p for p in found if p != own and p.is_file() and not (world > 1 and p.name.endswith(same_world))]


def _read_partial(path: Path, fp: str) -> dict[str, Any]:
    """A partial file's content if it belongs to the job with fingerprint ``fp`` (else empty)."""
    try:
        prev = runs.read_json(path)
    except (OSError, json.JSONDecodeError):
        return {}
    return prev if isinstance(prev, dict) and prev.get("fingerprint") == fp else {}


def load_state(out_file: Path, partial_file: Path, fp: str, rank: int, world: int) -> dict[str, Any]:
    """This shard's saved progress, plus the batches it owns from partial files of another world size."""
    state: dict[str, Any] = _read_partial(partial_file, fp) if partial_file.is_file() else {}
    state = state or {"fingerprint": fp, "done": {}}
    for other in resume_files(out_file, partial_file, world):
        prev = _read_partial(other, fp)
        for key, batches in (prev.get("done") or {}).items():
            mine = state["done"].setdefault(key, {})
            for b, rec in batches.items():
                if int(b) % world == rank:
                    mine.setdefault(b, rec)
        if rank == 0 and "probe" in prev:
            state.setdefault("probe", prev["probe"])
    return state


def remove_resume_files(out_file: Path, partial_file: Path, state_dir: Path, rank: int, world: int) -> None:
    """Delete this shard's resume files once the result is written; rank 0 also removes the leftovers of
    interrupted runs with another number of processes."""
    partial_file.unlink(missing_ok=True)
    shutil.rmtree(state_dir, ignore_errors=True)
    if rank != 0:
        return
    for other in resume_files(out_file, partial_file, world):
        other.unlink(missing_ok=True)
    for d in [out_file.with_name(f".{out_file.stem}.state"),
              *out_file.parent.glob(f".{glob.escape(out_file.stem)}.rank*-of-*.state")]:
        if not (world > 1 and d.name.endswith(f"-of-{world}.state")):
            shutil.rmtree(d, ignore_errors=True)


def merge_shards(shards: list[dict[str, Any]], todo: list[tuple[str, Any, Any, int]], bs: int) -> dict[str, Any]:
    """Per-batch results of every rank, merged per attack in global batch order (checked complete)."""
    merged: dict[str, Any] = {}
    for key, _entry, _threat, n_e in todo:
        batches: dict[str, Any] = {}
        for done in shards:
            batches.update(done.get(key, {}))
        expected = [str(b) for b in range(math.ceil(n_e / bs))]
        missing = [b for b in expected if b not in batches]
        if missing:
            raise RuntimeError(f"sharded evaluation of {key}: batches {missing} missing after the merge")
        merged[key] = {b: batches[b] for b in expected}
    return merged


class ShardSync:
    """How the ranks of a sharded evaluation agree on its end: every shard finished (``go``) or stopped.

    Shards may take very different times (one rank resumed most of its batches, or its points survive
    to AutoAttack's last components), so the ranks do not meet in a barrier that would time out after
    gloo's or NCCL's default limit; they use torchrun's key-value store instead. A rank that finished
    its shard adds itself to a counter and polls; the last one to finish sets the verdict ``go``. A rank
    that is stopped (Ctrl-C, SIGTERM from torchrun after another rank died) sets ``stop`` unless ``go``
    was set first; working ranks see the verdict between batches and stop too. Every rank obeys the one
    verdict (compare-and-set), so none waits in a collective for a rank that has left. Without
    torchrun's agent the store lives in rank 0; if it is gone, the others stop as well.
    """

    def __init__(self, world: int) -> None:
        self.world = world
        self.store: Any = None
        # a fresh key per evaluation (a store may outlive a torchrun restart): rank 0 draws it for all
        token = distributed.broadcast_object(os.urandom(8).hex() if distributed.is_main() else None)
        self.prefix = f"advbench/evaluate/{token}"
        if world > 1:
            try:  # distributed_c10d is absent from builds without distributed support
                self.store = dist.distributed_c10d._get_default_store()
            except (AttributeError, RuntimeError, ValueError):
                self.store = None  # fall back to a collective at the end

    def stopped_elsewhere(self) -> bool:
        """True once another rank has stopped the evaluation (checked between batches)."""
        if self.store is None:
            return False
        try:
            return self.store.check([f"{self.prefix}/verdict"])
        except RuntimeError:  # the store's host (rank 0 without torchrun's agent) has gone: it stopped
            return True

    def _decide(self, verdict: str) -> bool:
        try:
            return self.store.compare_set(f"{self.prefix}/verdict", "", verdict).decode() == "go"
        except RuntimeError:
            return False

    def finish(self, interrupted: bool, stop: StopFlag, poll_s: float = 0.05) -> bool:
        """Whether every rank finished its shard (False: the evaluation stops on every rank)."""
        if self.world <= 1:
            return not interrupted
        if self.store is None:
            return not distributed.any_rank(interrupted)
        if interrupted:
            return self._decide("stop")
        key = f"{self.prefix}/verdict"
        try:
            if self.store.add(f"{self.prefix}/done", 1) >= self.world:
                return self._decide("go")
            while not self.store.check([key]):
                if stop.requested:
                    return self._decide("stop")
                time.sleep(poll_s)
            return self.store.get(key).decode() == "go"
        except RuntimeError:
            return False
