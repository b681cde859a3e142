"""One rank's failure ends every rank of a DDP run promptly, each with one line naming the failed rank and why.

Without this, a rank that raises (a refused checkpoint save on rank 0, a data error on rank 1) leaves the
others blocked in their next collective (the gradient all-reduce) until the process group's timeout
(30 min for gloo, 10 min for NCCL) or a launcher kills them; plain ``srun`` or separately started processes
do not. Protocol, through the process group's key-value store (the one every rank already shares):

- a failing rank sets ``meru/train/failed/RANK`` to its one-line reason (:func:`announce_failure`), then exits;
- every rank runs a watcher thread that polls the other ranks' keys every ``POLL_S`` seconds; on a peer's key
  it prints ``meru train: error: rank R of W failed: REASON (rank S stopped)`` and ends its process with
  status 2 (``os._exit``: the main thread may be blocked inside a collective that never returns);
- a store that stops answering (the rank hosting it is gone) ends the process the same way after a grace
  of ``GRACE_S`` seconds, unless the run finished meanwhile (:func:`stop_failure_watch`).
"""

from __future__ import annotations

import os
import sys
import threading

POLL_S = 0.5
GRACE_S = 3.0
KEY = "meru/train/failed/{}"

_watch: dict = {}  # this process's watcher: rank, world, store, stop event, thread


def _store():
    from torch.distributed import distributed_c10d

    return distributed_c10d._get_default_store().clone()  # an own connection for the watcher thread


def _peer_failure(store, rank: int, world: int) -> str | None:
    """``"rank R of W failed: REASON"`` of the first other rank that announced a failure, else None."""
    for r in range(world):
        if r != rank and store.check([KEY.format(r)]):
            return f"rank {r} of {world} failed: {store.get(KEY.format(r)).decode(errors='replace')}"
    return None


def _end(line: str) -> None:
    print(f"meru train: error: {line}", file=sys.stderr, flush=True)
    os._exit(2)


def _poll(store, rank: int, world: int, stop: threading.Event) -> None:
    while not stop.wait(POLL_S):
        try:
            peer = _peer_failure(store, rank, world)
        except Exception as e:  # noqa: BLE001 (store gone: its host rank ended)
            if not stop.wait(GRACE_S):
                _end(f"rank {rank} of {world} lost contact with the other ranks ({type(e).__name__}: {e}); stopped")
            return
        if peer and not stop.is_set():
            _end(f"{peer} (rank {rank} stopped)")


def start_failure_watch(rank: int, world: int) -> None:
    """Start this rank's watcher (after ``init_process_group``; a no-op for one process)."""
    if world < 2 or _watch:
        return
    store, stop = _store(), threading.Event()
    thread = threading.Thread(target=_poll, args=(store, rank, world, stop), daemon=True, name="meru-ddp-watch")
    _watch.update(rank=rank, world=world, store=_store(), stop=stop, thread=thread)
    thread.start()


def stop_failure_watch() -> None:
    """The run ended normally (every rank passed the final barrier): stop watching."""
    if _watch:
        _watch["stop"].set()
        _watch["thread"].join()
        _watch.clear()


def announce_failure(reason: str) -> str:
    """Tell the other ranks that this rank fails with ``reason``; returns the line this rank prints (a peer's
    earlier failure if there is one: this rank's error may only be its consequence)."""
    if not _watch:
        return reason
    rank, world, store = _watch["rank"], _watch["world"], _watch["store"]
    _watch["stop"].set()
    try:
        peer = _peer_failure(store, rank, world)
        if peer:
            return f"{peer} (rank {rank} stopped)"
        store.set(KEY.format(rank), reason.splitlines()[0][:500] if reason else "?")
    except Exception:  # noqa: BLE001,S110 (store gone: the others learn it from the store too)
        pass
    return f"rank {rank} of {world} failed: {reason}"


def distributed_failure() -> bool:
    """Whether a failure watch is (or was, until this failure) active: the caller skips collective cleanup."""
    return bool(_watch)
