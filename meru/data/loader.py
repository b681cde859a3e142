"""Training loader: an infinite, exactly resumable webdataset stream of (image, caption-token) batches.

Pipeline (per logical stream, see below)::

    shard list (manifest) --epoch e: shard order shuffled from (seed, e)--> split by rank and stream
    --> webdataset tar reading --> shuffle buffer (rng from (seed, e, rank, stream))
    --> decode + check (corrupt samples are skipped and counted)
    --> caption choice (rng from (seed, e, key)) --> RandomResizedCrop (rng from (seed, e, key))
    --> ToTensor --> batch of ``batch_size`` --> tokenise (inside the worker)

Determinism and exact resume. Each rank's data is split into ``S = max(num_workers, 1)`` logical
streams; stream ``j`` produces the global batches ``g`` with ``g % S == j`` (which is the order in
which ``torch.utils.data.DataLoader`` yields from its workers). Every random choice is a function of
(seed, epoch, rank, stream, sample key), never of global RNG state, so a stream is a pure function of
its position. Every batch carries its stream's position after it (epoch, samples drawn from the
shuffle buffer in that epoch, skipped count); :meth:`TrainLoader.state_dict` records these and
:meth:`TrainLoader.load_state_dict` restarts worker ``i`` as stream ``(k + i) % S`` and fast-forwards
it by re-reading the tar members and replaying the shuffle buffer without decoding images. (If only
``{"batch": k}`` is given, streams are replayed with image decoding so corrupt samples are
re-detected; slower, same result.) Batches therefore depend on ``num_workers`` (it sets ``S``) but
never on timing, and a resumed loader yields bit-identical batches to an uninterrupted one.

Rank split: per epoch the shard order is the same on all ranks; partition ``p = rank * S + j`` of
``P = world_size * S`` takes shards ``p, p + P, ...`` when the shards divide evenly (a multiple of ``P``,
or at least ``8 P``), otherwise it reads all shards and keeps samples ``p, p + P, ...`` of the epoch's
sample sequence (balanced, at the cost of reading every shard ``P`` times). Ranks and streams
therefore see disjoint samples.

Augmentation follows MERU's training transform: RandomResizedCrop(image_size, scale=(0.5, 1.0),
ratio=(3/4, 4/3), bicubic) then ToTensor, values in [0, 1] (the model normalises).

GPU feeding (``image_dtype="uint8"``, ``trim_tokens=True``, ``pin_memory=True``, as ``meru train`` sets them):
images stay uint8 (0..255, the resized PIL pixels, 4x fewer bytes than float32; the model scales and
normalises them on its device, giving the same values as ToTensor), tokens are trimmed to the batch's
longest caption rounded up to 8 (:func:`meru.models.towers.trim_tokens`), and batches are copied into
page-locked memory so that ``.to(device, non_blocking=True)`` is a real asynchronous copy.

Batched JPEG decode (``decode_device="cuda"``, or ``"cpu"``; ``"auto"``: CUDA when available, else the
worker path): workers read only the JPEG header (size via PIL, no pixel decode) and check that the data
ends with the EOI marker, derive the same crop box from (seed, epoch, key), and ship the undecoded bytes;
the main process decodes the whole batch with ``torchvision.io.decode_jpeg(list, device=...)`` and crops
and resizes on that device (bicubic, antialiased; within a few grey levels of the PIL path, see
``docs/PERFORMANCE.md``). Sample order, captions, tokens, skips and resume are unchanged. Non-JPEG images
(PNG: SynthHier) and JPEGs whose data does not end in EOI take the worker path (the latter so that a
truncated file is skipped exactly as there). What this path cannot see in the worker: garbled
entropy-coded data in a complete file, which the worker path skips (libjpeg's "Corrupt JPEG data"
warnings); here it is decoded as the decoder fills it in (grey blocks), or, if the device decoder
raises, decoded on the CPU by PIL, counted in :attr:`TrainLoader.decode_fallbacks`.
"""

from __future__ import annotations

import io
import logging
import math
import os
import random
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.functional as TF
import webdataset as wds
from PIL import Image
from torchvision.transforms import InterpolationMode

from meru.data.captions import CaptionError, CaptionPolicy, derive_seed
from meru.data.manifest import read_manifest, verify_shards

log = logging.getLogger(__name__)

STATE_FORMAT = "meru-bench/loader-state/1"
IMAGE_EXTS = ("png", "jpg", "jpeg", "webp")
RATIO = (3.0 / 4.0, 4.0 / 3.0)
_WARNED: set[str] = set()  # damaged shards already reported by this process
_WARNED_DUPLICATES: set[str] = set()  # shards whose duplicate keys were already reported


def resolve_shards(
    source: str | os.PathLike | Sequence[str | os.PathLike], verify: bool = True
) -> list[tuple[str, int | None]]:
    """``[(shard path, samples promised by the manifest or None)]`` of ``source``: a shard directory
    (read via its manifest; a SynthHier output directory means its ``train/``) or a list of
    directories / ``.tar`` files. ``verify``: check each manifest shard's size and sha256 first
    (:func:`meru.data.manifest.verify_shards`, cached by file stat) and refuse a mismatch."""
    items = [source] if isinstance(source, (str, os.PathLike)) else list(source)
    shards: list[tuple[str, int | None]] = []
    for item in items:
        path = Path(item)
        if path.suffix == ".tar":
            if not path.exists():
                raise FileNotFoundError(f"{path}: shard not found")
            shards.append((str(path), None))
        else:
            if not (path / "manifest.json").exists() and (path / "train" / "manifest.json").exists():
                path = path / "train"  # a SynthHier output directory: its training shards
            manifest = read_manifest(path)  # raises IncompleteDatasetError with the fix
            if verify:
                verify_shards(path, manifest)  # raises CorruptDatasetError naming the shard
            shards.extend((str(path / e["path"]), int(e["num_samples"])) for e in manifest["shards"])
    if not shards:
        raise ValueError(f"{source}: no shards (the manifest lists none); regenerate the dataset")
    if all(n == 0 for _, n in shards):
        raise NoUsableSamplesError(
            f"{source}: all {len(shards)} shard(s) are empty (their manifests promise 0 samples); regenerate the dataset"
        )
    return shards


class NoUsableSamplesError(ValueError):
    """A training set that yields no sample: every shard empty, corrupt or unreadable."""


def random_resized_crop_params(
    height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float], rng: random.Random
) -> tuple[int, int, int, int]:
    """Inception-style crop box ``(top, left, h, w)``: area fraction ~ U(scale), log aspect ~ U(log ratio).

    Up to 10 tries for a box that fits, then the largest central box with aspect ratio clamped to ``ratio``
    (the same rule as torchvision's RandomResizedCrop, but driven by an explicit ``rng``).
    """
    area = height * width
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_lo, log_hi))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return rng.randint(0, height - h), rng.randint(0, width - w), h, w
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        h, w = height, int(round(height * ratio[1]))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


@dataclass
class _Jpeg:
    """An undecoded JPEG that passed the worker's header check: its bytes and size from the header."""

    data: bytes
    height: int
    width: int


@dataclass
class _Pending:
    """A JPEG to be decoded in the main process: bytes as uint8 ``[n]`` and crop box ``(top, left, h, w)``
    (None: resize the shorter side to the image size, then centre-crop)."""

    data: torch.Tensor
    box: tuple[int, int, int, int] | None


def jpeg_header(data: bytes, name: str) -> _Jpeg | None:
    """A :class:`_Jpeg` when ``data`` is a JPEG whose header parses and whose data ends with the EOI marker
    (checked without decoding pixels); None otherwise (not a JPEG, or possibly truncated: decode it fully)."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.format != "JPEG":
                return None
            width, height = im.size
    except Exception:
        return None
    if not data.rstrip(b"\x00\r\n ").endswith(b"\xff\xd9"):
        return None
    return _Jpeg(data, height, width)


class CorruptSample(ValueError):
    """A sample that cannot be used (undecodable image, missing caption, bad json)."""


def tar_samples(url: str) -> Iterator[dict]:
    """Raw (undecoded) samples of one shard in tar order; unreadable tar data ends the shard."""

    def handler(exn: Exception) -> bool:
        log.warning("unreadable tar data, rest of the shard skipped: %s", exn)
        return True

    return wds.tarfile_to_samples(handler=handler)(iter([{"url": url}]))


def _libjpeg_complaint(data: bytes) -> str | None:
    """libjpeg's message for damaged JPEG data (``Corrupt JPEG data: ...``), or None if it decodes cleanly.

    PIL decodes garbled entropy-coded data without an error (libjpeg only warns, on stderr, and fills
    in grey); torchvision's ``decode_jpeg`` reports the same warnings, which are captured from fd 2 here.
    Returns None when torchvision's decoder is unavailable (then PIL's own checks apply)."""
    import tempfile
    import warnings

    try:
        from torchvision.io import decode_jpeg
    except ImportError:  # pragma: no cover - torchvision without image codecs
        return None
    saved = os.dup(2)
    with tempfile.TemporaryFile() as err:
        os.dup2(err.fileno(), 2)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8))
            problem = None
        except RuntimeError as e:
            problem = str(e).strip().splitlines()[-1] if str(e).strip() else "decode error"
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        err.seek(0)
        text = err.read().decode("utf-8", "replace").strip()
    if text:
        problem = text.splitlines()[0]
    return problem


def decode_image(data: bytes, name: str) -> Image.Image:
    """Fully decode an image to RGB; raise :class:`CorruptSample` for truncated or garbled data (for JPEG
    also what libjpeg only warns about, see :func:`_libjpeg_complaint`)."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            fmt = im.format
            im.load()
            image = im.convert("RGB")
    except Exception as e:  # PIL raises many types for bad bytes
        raise CorruptSample(f"{name}: cannot decode image ({e})") from e
    if fmt == "JPEG":
        problem = _libjpeg_complaint(data)
        if problem:
            raise CorruptSample(f"{name}: damaged JPEG data ({problem})")
    return image


def sample_image(sample: dict, key: str) -> Image.Image:
    """The sample's image member, fully decoded to RGB; raise :class:`CorruptSample` if there is none or it
    does not decode cleanly."""
    ext = next((e for e in IMAGE_EXTS if e in sample), None)
    if ext is None:
        raise CorruptSample(f"{key}: no image member (.{'/.'.join(IMAGE_EXTS)})")
    return decode_image(sample[ext], f"{key}.{ext}")


@dataclass
class StreamState:
    """Position of one logical stream: next sample is number ``pos`` (0-based) of epoch ``epoch``."""

    epoch: int = 0
    pos: int = 0
    skipped: int = 0

    def as_dict(self) -> dict:
        return {"epoch": self.epoch, "pos": self.pos, "skipped": self.skipped}


@dataclass
class _Spec:
    shards: list[str]
    batch_size: int
    image_size: int
    context_length: int
    seed: int
    rank: int
    world_size: int
    num_streams: int
    shuffle_buffer: int
    augment: bool
    scale: tuple[float, float]
    captions: CaptionPolicy
    image_dtype: str = "float32"
    trim_tokens: bool = False
    decode_device: str | None = None  # None: decode in the workers (PIL); else batched decode_jpeg there
    log_skips: int = 5  # corrupt samples logged individually per stream


def _make_tokenizer(context_length: int):
    """``meru.models.get_tokenizer`` when available, else open_clip's BPE tokenizer (offline, bundled vocab)."""
    try:
        from meru.models import get_tokenizer  # type: ignore[attr-defined]

        return get_tokenizer(context_length)
    except ImportError:
        import open_clip

        return lambda texts: open_clip.tokenizer.tokenize(texts, context_length=context_length)


class _StreamDataset(torch.utils.data.IterableDataset):
    """Yields batch dicts for the logical streams assigned to this worker (see module docstring)."""

    def __init__(self, spec: _Spec, start_batch: int, states: list[dict | None]):
        super().__init__()
        self.spec = spec
        self.start_batch = start_batch
        self.states = states

    # -- raw sample stream -------------------------------------------------------------------------

    def _epoch_raw(self, stream: int, epoch: int, errors: list[int]) -> Iterator[dict]:
        """Undecoded samples of ``epoch`` for logical stream ``stream``, shuffled.

        Samples missing from damaged shards (fewer than the manifest promised) are added to ``errors[0]``.
        """
        s = self.spec
        order = list(range(len(s.shards)))
        random.Random(derive_seed(s.seed, "shards", epoch)).shuffle(order)
        parts = s.world_size * s.num_streams
        part = s.rank * s.num_streams + stream
        by_shard = len(order) % parts == 0 or len(order) >= 8 * parts  # balanced enough to split by shard
        mine = order[part::parts] if by_shard else order

        seen: set[int] = set()  # keys read by this stream in this epoch (hashes): duplicates are skipped

        def read(index: int) -> Iterator[dict]:
            url, expected = s.shards[index]
            got = 0
            for sample in self._shard_samples(index):
                got += 1
                key = hash(sample.get("__key__"))
                if key in seen:  # the same sample key again: skipped, counted as damage (once, by its owner)
                    if by_shard or got % parts == part:
                        errors[0] += 1
                        if url not in _WARNED_DUPLICATES:
                            _WARNED_DUPLICATES.add(url)
                            log.warning(
                                "%s: duplicate sample key %r skipped (duplicates are counted as skipped)",
                                url,
                                sample.get("__key__"),
                            )
                    continue
                seen.add(key)
                yield sample
            if expected is None and got == 0:
                errors[0] += 1
            elif expected is not None and got < expected and (by_shard or index % parts == part):
                # samples the manifest promised but the shard no longer holds (truncated / damaged),
                # counted once: by the partition that owns the shard index
                errors[0] += expected - got
                if url not in _WARNED:
                    _WARNED.add(url)
                    log.warning("%s: only %d of the %d samples in its manifest are readable", url, got, expected)

        samples = (x for i in mine for x in read(i))
        if not by_shard:
            samples = (x for n, x in enumerate(samples) if n % parts == part)
        if s.shuffle_buffer > 1:
            rng = random.Random(derive_seed(s.seed, "buffer", epoch, s.rank, stream))
            samples = wds.shuffle(s.shuffle_buffer, initial=s.shuffle_buffer, rng=rng)(iter(samples))
        return iter(samples)

    def _shard_samples(self, index: int) -> Iterator[dict]:
        return tar_samples(self.spec.shards[index][0])

    def _tokenizer(self):
        return _make_tokenizer(self.spec.context_length)

    # -- per-sample work ---------------------------------------------------------------------------

    def _parse(self, sample: dict, epoch: int) -> tuple[str, Image.Image, str]:
        """Decode the image and choose the caption (``spec.captions``); raise :class:`CorruptSample` if unusable."""
        key = sample.get("__key__", "?")
        image = self._decode(sample, key)
        try:
            text = self.spec.captions.caption(sample, key, epoch, self.spec.seed)
        except CaptionError as e:
            raise CorruptSample(str(e)) from e
        return key, image, text

    def _decode(self, sample: dict, key: str) -> Image.Image | _Jpeg:
        if self.spec.decode_device is not None:
            ext = next((e for e in ("jpg", "jpeg") if e in sample), None)
            if ext is not None and not any(e in sample for e in ("png", "webp")):
                jpeg = jpeg_header(sample[ext], f"{key}.{ext}")
                if jpeg is not None:
                    return jpeg  # decoded with its batch in the main process
        return sample_image(sample, key)

    def _transform(self, image: Image.Image | _Jpeg, key: str, epoch: int) -> torch.Tensor | _Pending:
        """[3, S, S] float in [0, 1]: random resized crop (augment) or resize + centre crop (a
        :class:`_Pending` for a JPEG left to the main process)."""
        s = self.spec
        size = [s.image_size, s.image_size]
        if isinstance(image, _Jpeg):
            box = None
            if s.augment:
                rng = random.Random(derive_seed(s.seed, "crop", epoch, key))
                box = random_resized_crop_params(image.height, image.width, s.scale, RATIO, rng)
            return _Pending(torch.frombuffer(bytearray(image.data), dtype=torch.uint8), box)
        if s.augment:
            rng = random.Random(derive_seed(s.seed, "crop", epoch, key))
            top, left, h, w = random_resized_crop_params(image.height, image.width, s.scale, RATIO, rng)
            image = TF.resized_crop(image, top, left, h, w, size, interpolation=InterpolationMode.BICUBIC)
        else:
            image = TF.resize(image, s.image_size, interpolation=InterpolationMode.BICUBIC)
            image = TF.center_crop(image, size)
        return TF.pil_to_tensor(image) if s.image_dtype == "uint8" else TF.to_tensor(image)

    # -- stream --------------------------------------------------------------------------------------

    def _run_stream(self, stream: int, state: StreamState | None, replay_batches: int) -> Iterator[dict]:
        """Infinite batches of logical stream ``stream``.

        ``state`` given: resume there (fast-forward without decoding). ``state`` None: start at epoch 0
        and first consume ``replay_batches`` batches with decoding but without transforms or yielding.
        """
        s = self.spec
        tokenizer = self._tokenizer()
        st = state or StreamState()
        errors = [0]
        buf: list[tuple[str, torch.Tensor, str]] = []
        n_light = 0  # samples counted towards replayed batches
        while True:
            epoch, start = st.epoch, st.pos
            raw = self._epoch_raw(stream, epoch, errors)
            for _ in range(start):  # fast-forward: tar reading + shuffle replay, no decode
                if next(raw, None) is None:
                    raise RuntimeError(
                        f"loader state says stream {stream} is at sample {start} of epoch {epoch}, but that epoch "
                        f"has fewer samples; the shards changed since the state was saved ({s.shards[0][0]} ...)"
                    )
            errors[0] = 0  # damage met while fast-forwarding is already in st.skipped
            pos, valid = start, 0
            for sample in raw:
                pos += 1
                light = n_light < replay_batches * s.batch_size
                try:
                    key, image, text = self._parse(sample, epoch)
                except CorruptSample as e:
                    st.skipped += 1
                    if st.skipped <= s.log_skips:
                        log.warning("skipping corrupt sample (%d so far in stream %d): %s", st.skipped, stream, e)
                    continue
                finally:
                    st.skipped += errors[0]
                    errors[0] = 0
                valid += 1
                if light:
                    n_light += 1
                    continue
                buf.append((key, self._transform(image, key, epoch), text))
                if len(buf) == s.batch_size:
                    keys, images, texts = zip(*buf)
                    buf = []
                    tokens = tokenizer(list(texts)).long()
                    if s.trim_tokens:
                        from meru.models.towers import trim_tokens

                        tokens = trim_tokens(tokens).contiguous()
                    yield {
                        **_pack_images(images, s),
                        "tokens": tokens,
                        "keys": list(keys),
                        "texts": list(texts),
                        "skipped": st.skipped,
                        "_stream": stream,
                        "_state": StreamState(epoch, pos, st.skipped).as_dict(),
                    }
            st.skipped += errors[0]
            errors[0] = 0
            if start == 0 and valid == 0:
                raise NoUsableSamplesError(
                    f"epoch {epoch} of stream {stream} (rank {s.rank}) produced no usable sample from "
                    f"{len(s.shards)} shard(s) starting {s.shards[0][0]}; check the shards (all corrupt or empty?)"
                )
            st = StreamState(epoch + 1, 0, st.skipped)

    def __iter__(self) -> Iterator[dict]:
        info = torch.utils.data.get_worker_info()
        worker, num_workers = (0, 1) if info is None else (info.id, info.num_workers)
        if num_workers != self.spec.num_streams:
            raise RuntimeError(f"{num_workers} workers for {self.spec.num_streams} logical streams")
        stream = (self.start_batch + worker) % self.spec.num_streams
        saved = self.states[stream]
        if saved is not None:
            return self._run_stream(stream, StreamState(**saved), 0)
        # batches g < start_batch with g % S == stream
        done = max(0, (self.start_batch - stream + self.spec.num_streams - 1) // self.spec.num_streams)
        return self._run_stream(stream, None, done)


def _pack_images(images: Sequence[torch.Tensor | _Pending], spec: _Spec) -> dict:
    """``{"images": [B, 3, S, S]}``, or with pending JPEGs: ``images`` holds the worker-decoded ones only,
    at rows ``_cpu_index`` of the batch; the rest are rows ``_jpeg_index``: their bytes concatenated in
    ``_jpegs`` (uint8, one tensor, so that workers pass one buffer, not one per image), ``_jpeg_sizes`` and
    ``_boxes`` (``[n, 4]`` top, left, h, w; -1 rows: resize + centre crop); see :func:`decode_jpeg_batch`."""
    pending = [i for i, x in enumerate(images) if isinstance(x, _Pending)]
    if not pending:
        return {"images": torch.stack(list(images))}
    done = [i for i, x in enumerate(images) if not isinstance(x, _Pending)]
    dtype = torch.uint8 if spec.image_dtype == "uint8" else torch.float32
    return {
        "images": torch.stack([images[i] for i in done])
        if done
        else torch.empty(0, 3, spec.image_size, spec.image_size, dtype=dtype),
        "_cpu_index": torch.tensor(done, dtype=torch.long),
        "_jpegs": torch.cat([images[i].data for i in pending]),
        "_jpeg_sizes": torch.tensor([len(images[i].data) for i in pending], dtype=torch.long),
        "_jpeg_index": torch.tensor(pending, dtype=torch.long),
        "_boxes": torch.tensor([images[i].box or (-1, -1, -1, -1) for i in pending], dtype=torch.long),
    }


def resolve_decode_device(decode_device: str | None) -> str | None:
    """``None``/``"worker"``: decode in the workers; ``"auto"``: ``"cuda"`` if available, else None;
    ``"cpu"`` / ``"cuda[:N]"``: batched ``decode_jpeg`` on that device (must exist)."""
    if decode_device in (None, "worker"):
        return None
    if decode_device == "auto":
        return "cuda" if torch.cuda.is_available() else None
    try:
        dev = torch.device(decode_device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"decode_device must be 'worker', 'auto', 'cpu' or 'cuda[:N]', got {decode_device!r}") from e
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"decode_device must be 'worker', 'auto', 'cpu' or 'cuda[:N]', got {decode_device!r}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"decode_device={decode_device!r} but no CUDA device is visible; use 'auto' or 'worker'")
    return str(dev)


def decode_jpeg_batch(batch: dict, spec: _Spec, device: str) -> tuple[torch.Tensor, int]:
    """Assemble a batch's images ``[B, 3, S, S]`` on ``device`` (dtype per ``spec.image_dtype``): decode the
    pending JPEGs with one ``torchvision.io.decode_jpeg(list, device=device)`` call, crop each to its box and
    resize it to ``S x S`` (bicubic, antialiased), place the worker-decoded rows. Returns the images and the
    number of JPEGs the device decoder refused, decoded instead on the CPU by PIL."""
    from torchvision.io import ImageReadMode, decode_jpeg
    from torchvision.transforms.v2 import functional as F2

    jpegs = list(torch.split(batch.pop("_jpegs"), batch.pop("_jpeg_sizes").tolist()))
    jpeg_index, boxes = batch.pop("_jpeg_index"), batch.pop("_boxes")
    cpu_index, cpu_images = batch.pop("_cpu_index"), batch["images"]
    size, B = spec.image_size, len(jpegs) + len(cpu_index)
    fallbacks = 0

    def decode(data):
        with warnings.catch_warnings():  # torchvision 0.29 deprecates its codecs (for TorchCodec) on every call
            warnings.simplefilter("ignore", DeprecationWarning)
            return decode_jpeg(data, mode=ImageReadMode.RGB, device=device)

    try:
        decoded = decode(jpegs)
    except RuntimeError:  # one bad image fails the batch call: decode one by one, PIL for the refused ones
        decoded = []
        for data in jpegs:
            try:
                decoded.append(decode(data))
            except RuntimeError as e:
                fallbacks += 1
                log.warning("device JPEG decode failed (%s); decoded on the CPU by PIL instead", e)
                with Image.open(io.BytesIO(data.numpy().tobytes())) as im:
                    rgb = np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
                decoded.append(torch.from_numpy(rgb).permute(2, 0, 1).to(device))
    out = torch.empty(B, 3, size, size, dtype=torch.uint8, device=device)
    bicubic = F2.InterpolationMode.BICUBIC
    for row, image, box in zip(jpeg_index.tolist(), decoded, boxes.tolist()):
        if box[0] < 0:
            image = F2.resize(image, [size], interpolation=bicubic, antialias=True)
            out[row] = F2.center_crop(image, [size, size])
        else:
            out[row] = F2.resized_crop(image, *box, [size, size], interpolation=bicubic, antialias=True)
    images = out if spec.image_dtype == "uint8" else out.float().div_(255)
    if len(cpu_index):
        images[cpu_index.to(device)] = cpu_images.to(device, non_blocking=True)
    return images, fallbacks


class DecodedShards:
    """Every sample of a shard set, read and decoded once and kept in memory.

    ``images``: uint8 tensor ``[N, 3, H, W]`` when all images share one size (SynthHier: 20k x 3 x 32 x 32
    = 61 MB), else a list of ``[3, H_i, W_i]`` tensors. ``samples[i]``: shard ``i``'s raw samples in tar
    order with the image member replaced by ``"__image__": index`` (captions and json kept as bytes), or by
    ``"__error__": message`` for an image that does not decode.
    """

    def __init__(self, shards: list[tuple[str, int | None]]):
        t0 = time.perf_counter()
        images: list[torch.Tensor] = []
        self.samples: list[list[dict]] = []
        for url, _ in shards:
            light = []
            for sample in tar_samples(url):
                key = sample.get("__key__", "?")
                entry = {k: v for k, v in sample.items() if k not in IMAGE_EXTS}
                try:
                    image = sample_image(sample, key)
                    entry["__image__"] = len(images)
                    images.append(torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1))
                except CorruptSample as e:
                    entry["__error__"] = str(e)
                light.append(entry)
            self.samples.append(light)
        same = len({tuple(x.shape) for x in images}) == 1
        self.images = torch.stack(images) if same and images else images
        log.info(
            "decoded %d images from %d shard(s) into memory (%.0f MB) in %.1f s",
            len(images),
            len(shards),
            sum(x.numel() for x in images) / 1e6,
            time.perf_counter() - t0,
        )


class _InMemoryStreamDataset(_StreamDataset):
    """:class:`_StreamDataset` over :class:`DecodedShards`: the same sample order, caption choices, skips
    and transforms (hence bit-identical batches), without tar reading or image decoding per draw."""

    def __init__(self, spec: _Spec, start_batch: int, states: list[dict | None], decoded: DecodedShards):
        super().__init__(spec, start_batch, states)
        self.decoded = decoded

    def _shard_samples(self, index: int) -> Iterator[dict]:
        return iter(self.decoded.samples[index])

    def _decode(self, sample: dict, key: str) -> torch.Tensor:
        if "__error__" in sample:
            raise CorruptSample(sample["__error__"])
        return self.decoded.images[sample["__image__"]]

    def _transform(self, image: torch.Tensor, key: str, epoch: int) -> torch.Tensor:
        s = self.spec
        if not s.augment and tuple(image.shape[1:]) == (s.image_size, s.image_size):
            # = (pil_to_)tensor(center_crop(resize(PIL image))): resize and crop are identities here
            return image if s.image_dtype == "uint8" else image.float().div(255)
        return super()._transform(Image.fromarray(image.permute(1, 2, 0).numpy()), key, epoch)

    def _tokenizer(self):
        base, rows = super()._tokenizer(), {}

        def tokenize(texts: list[str]) -> torch.Tensor:  # captions repeat (SynthHier: a few thousand distinct)
            missing = [t for t in dict.fromkeys(texts) if t not in rows]
            if missing:
                rows.update(zip(missing, base(missing).long()))
            return torch.stack([rows[t] for t in texts])

        return tokenize


def _worker_init(_worker_id: int) -> None:
    torch.set_num_threads(1)


class TrainLoader:
    """Infinite, exactly resumable training batches from webdataset shards.

    Each batch: ``images`` FloatTensor[B, 3, image_size, image_size] in [0, 1]; ``tokens``
    LongTensor[B, context_length]; ``keys`` list[str]; ``texts`` list[str] (the chosen captions);
    ``skipped`` int (corrupt samples skipped so far by the stream that made the batch);
    ``skipped_total`` int (all streams of this rank, as known to the loader).

    Args:
        source: shard directory with a complete manifest (a SynthHier output directory means its
            ``train/``), or a list of directories / ``.tar`` paths.
        captions: the caption choice per draw (:class:`meru.data.captions.CaptionPolicy`: SynthHier's
            ``json["captions"]`` or ``txt``, RedCaps' subreddit prefix); default ``CaptionPolicy()``.
        num_workers: DataLoader worker processes; also the number of logical streams (batches depend on it).
        verify: check shard sizes and sha256 against the manifests first (refuses changed shards); with
            ``False`` damage is only met while reading (unreadable samples skipped and counted).
        image_dtype: ``"float32"`` (values in [0, 1]) or ``"uint8"`` (0..255; the model normalises on its device).
        trim_tokens: tokens ``[B, L]`` with ``L`` the longest caption rounded up to 8 (``<= context_length``).
        pin_memory: page-locked ``images``/``tokens`` for asynchronous host-to-GPU copies (ignored without CUDA).
        decode_device: where JPEGs are decoded: ``"worker"`` (default; PIL in the workers), ``"cpu"`` /
            ``"cuda[:N]"`` (batched ``decode_jpeg`` in the main process, ``images`` on that device; see the
            module docstring) or ``"auto"`` (CUDA when available, else ``"worker"``). Ignored with ``in_memory``.
    """

    def __init__(
        self,
        source,
        batch_size: int,
        image_size: int,
        context_length: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        num_workers: int = 0,
        shuffle_buffer: int = 1000,
        augment: bool = True,
        scale: tuple[float, float] = (0.5, 1.0),
        captions: CaptionPolicy | None = None,
        in_memory: bool = False,
        verify: bool = True,
        image_dtype: str = "float32",
        trim_tokens: bool = False,
        pin_memory: bool = False,
        decode_device: str | None = "worker",
    ):
        if batch_size < 1 or image_size < 1 or context_length < 2:
            raise ValueError(
                f"bad loader sizes: batch_size={batch_size}, image_size={image_size}, context_length={context_length}"
            )
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world_size {world_size}")
        if not 0 < scale[0] <= scale[1] <= 1:
            raise ValueError(f"crop scale {scale} must satisfy 0 < lo <= hi <= 1")
        if captions is not None and not isinstance(captions, CaptionPolicy):
            raise TypeError(f"captions must be a meru.data.captions.CaptionPolicy, got {type(captions).__name__}")
        if image_dtype not in ("float32", "uint8"):
            raise ValueError(f"image_dtype must be 'float32' or 'uint8', got {image_dtype!r}")
        self.num_workers = int(num_workers)
        self.decode_device = None if in_memory else resolve_decode_device(decode_device)
        self.decode_fallbacks = 0  # JPEGs the device decoder refused (decoded by PIL on the CPU instead)
        self.pin_memory = bool(pin_memory) and torch.cuda.is_available()
        self.spec = _Spec(
            shards=resolve_shards(source, verify=verify),  # [(path, expected samples)]
            batch_size=int(batch_size),
            image_size=int(image_size),
            context_length=int(context_length),
            seed=int(seed),
            rank=int(rank),
            world_size=int(world_size),
            num_streams=max(1, self.num_workers),
            shuffle_buffer=int(shuffle_buffer),
            augment=bool(augment),
            scale=(float(scale[0]), float(scale[1])),
            captions=captions if captions is not None else CaptionPolicy(),
            image_dtype=image_dtype,
            trim_tokens=bool(trim_tokens),
            decode_device=self.decode_device,
        )
        self._batch = 0
        self._streams: list[dict | None] = [None] * self.spec.num_streams
        self._last_epoch = 0
        self.decoded = DecodedShards(self.spec.shards) if in_memory else None

    @property
    def num_samples(self) -> int | None:
        """Samples in the whole shard set (all ranks) per the manifests; None if a bare ``.tar`` was given."""
        counts = [n for _, n in self.spec.shards]
        return None if any(n is None for n in counts) else int(sum(counts))

    def caption_texts(self) -> set[str]:
        """Every caption a draw can give (:meth:`CaptionPolicy.candidates` over all samples of an in-memory loader;
        ``ValueError`` for a streaming one, whose shards would need a pass of their own)."""
        if self.decoded is None:
            raise ValueError("the caption set is known only for an in-memory loader (data.in_memory: true)")
        texts: set[str] = set()
        for shard in self.decoded.samples:
            for sample in shard:
                try:
                    texts.update(self.spec.captions.candidates(sample, sample.get("__key__", "?")))
                except CaptionError:  # a sample training skips as corrupt
                    continue
        return texts

    @property
    def skipped_total(self) -> int:
        """Corrupt samples skipped so far, summed over this rank's streams (as of the last yielded batch)."""
        return int(sum(s["skipped"] for s in self._streams if s is not None))

    def __iter__(self) -> Iterator[dict]:
        """Batches from the current position on (a new ``iter`` continues after the last yielded batch)."""
        if self.decoded is None:
            ds = _StreamDataset(self.spec, self._batch, list(self._streams))
        else:
            ds = _InMemoryStreamDataset(self.spec, self._batch, list(self._streams), self.decoded)
        if self.num_workers == 0:
            it = iter(ds)
        else:
            it = iter(
                torch.utils.data.DataLoader(
                    ds,
                    batch_size=None,
                    num_workers=self.num_workers,
                    worker_init_fn=_worker_init,
                    pin_memory=self.pin_memory,
                )
            )
        S = self.spec.num_streams
        for batch in it:
            stream, state = batch.pop("_stream"), batch.pop("_state")
            if stream != self._batch % S:
                raise RuntimeError(f"batch {self._batch} came from stream {stream}, expected {self._batch % S}")
            self._streams[stream] = state
            self._last_epoch = state["epoch"]
            self._batch += 1
            batch["skipped_total"] = self.skipped_total
            if "_jpegs" in batch:
                batch["images"], refused = decode_jpeg_batch(batch, self.spec, self.decode_device)
                self.decode_fallbacks += refused
            if self.pin_memory and self.num_workers == 0:  # with workers, the DataLoader's pin thread did it
                batch["tokens"] = batch["tokens"].pin_memory()
                if not batch["images"].is_cuda:
                    batch["images"] = batch["images"].pin_memory()
            yield batch

    def state_dict(self) -> dict:
        """Position of the next batch: ``{"batch": k, "epoch": e, "streams": [...], ...}`` (JSON-safe)."""
        s = self.spec
        return {
            "format": STATE_FORMAT,
            "batch": self._batch,
            "epoch": self._last_epoch,
            "streams": [dict(x) if x is not None else None for x in self._streams],
            "num_streams": s.num_streams,
            "batch_size": s.batch_size,
            "seed": s.seed,
            "rank": s.rank,
            "world_size": s.world_size,
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue exactly after the batch where ``state`` was taken.

        ``state`` from :meth:`state_dict` of a loader with the same settings; a dict with only ``"batch"``
        is accepted too, as is the state of another rank (streams are then replayed from the start,
        decoding images to re-detect skips).
        """
        if "batch" not in state:
            raise ValueError(f"loader state has no 'batch' entry (keys: {sorted(state)})")
        s = self.spec
        for key, mine in (
            ("num_streams", s.num_streams),
            ("batch_size", s.batch_size),
            ("seed", s.seed),
            ("world_size", s.world_size),
        ):
            if key in state and state[key] != mine:
                raise ValueError(
                    f"loader state has {key}={state[key]} but this loader has {mine}; resume with the same "
                    "batch size, seed, num_workers (logical streams) and world size"
                )
        streams = state.get("streams")
        if streams is None or state.get("rank", s.rank) != s.rank:
            # another rank's state (e.g. DDP checkpoints saved by rank 0): same batch index, replay our streams
            streams = [None] * s.num_streams
        if len(streams) != s.num_streams:
            raise ValueError(f"loader state has {len(streams)} streams, this loader {s.num_streams}")
        self._batch = int(state["batch"])
        self._streams = [dict(x) if x is not None else None for x in streams]
        self._last_epoch = int(state.get("epoch", 0))
