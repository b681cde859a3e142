"""One rank's failure ends every rank of a DDP run promptly, each with one line naming the failed rank and why.

Without this, a rank that raises (a refused checkpoint save on rank 0, a data error on rank 1) leaves the
others blocked in their next collective (the gradient all-reduce) until the process group's timeout
(30 min for gloo, 10 min for NCCL) or a launcher kills them; plain ``srun`` or separately started processes
do not. Protocol, through the process group's key-value store (the one every rank already shares):

- a failing rank sets ``meru/train/failed/RANK`` to its one-line reason (:func:`announce_failure`), waits (at
  most ``ACK_WAIT_S``) until every other rank has read it (``meru/train/stopped/RANK``; the store may live in
  this process), then exits at once (:func:`end_failed_rank`);
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
import time

POLL_S = 0.5
GRACE_S = 3.0
KEY = "meru/train/failed/{}"
ACK = "meru/train/stopped/{}"  # a rank that read a peer's failure says so; the failed rank waits for that
ACK_WAIT_S = 5.0

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


def _acknowledge(store, rank: int) -> None:
    try:
        store.set(ACK.format(rank), "1")
    except Exception:  # noqa: BLE001,S110 (store gone)
        pass


def _end(line: str, store, rank: int) -> None:
    _acknowledge(store, rank)
    print(f"meru train: error: {line}", file=sys.stderr, flush=True)
    os._exit(2)


def _poll(store, rank: int, world: int, stop: threading.Event) -> None:
    while not stop.wait(POLL_S):
        try:
            peer = _peer_failure(store, rank, world)
        except Exception as e:  # noqa: BLE001 (store gone: its host rank ended)
            if not stop.wait(GRACE_S):
                _end(f"rank {rank} of {world} lost contact with the other ranks ({type(e).__name__}: {e})", store, rank)
            return
        if peer and not stop.is_set():
            _end(f"{peer} (rank {rank} stopped)", store, rank)


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


def announce_failure(reason: str) -> tuple[str, bool]:
    """Tell the other ranks that this rank fails with ``reason``. Returns (the line this rank prints, whether
    the failure is its own): a peer's earlier failure comes first, this rank's error may be its consequence
    (e.g. gloo's "Connection closed by peer")."""
    if not _watch:
        return reason, True
    rank, world, store = _watch["rank"], _watch["world"], _watch["store"]
    _watch["stop"].set()
    try:
        peer = _peer_failure(store, rank, world)
        if peer:
            _acknowledge(store, rank)
            return f"{peer} (rank {rank} stopped)", False
        _watch["own"] = True
        store.set(KEY.format(rank), reason.splitlines()[0][:500] if reason else "?")
    except Exception as e:  # noqa: BLE001 (store gone: its host rank ended first; this error is the consequence)
        return f"rank {rank} of {world} lost contact with the other ranks ({type(e).__name__}: {e}): {reason}", False
    return f"rank {rank} of {world} failed: {reason}", True


def end_failed_rank(traceback: bool = False) -> None:
    """After :func:`announce_failure` under DDP: end this process at once with status 2 (its peers are being
    stopped; a collective cleanup such as ``destroy_process_group`` could wait on them). No-op otherwise."""
    if not _watch:
        return
    if traceback:
        import traceback as tb

        tb.print_exc()
    rank, world, store = _watch["rank"], _watch["world"], _watch["store"]
    # the failed rank (its store may serve the others) waits until they have read its reason
    deadline = time.monotonic() + (ACK_WAIT_S if _watch.get("own") else 0.0)
    try:
        while time.monotonic() < deadline and not all(store.check([ACK.format(r)]) for r in range(world) if r != rank):
            time.sleep(0.1)
    except Exception:  # noqa: BLE001,S110 (store gone)
        pass
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(2)
