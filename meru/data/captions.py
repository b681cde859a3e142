"""Caption rules in one place: SynthHier's caption text, the RedCaps subreddit prefix, and the
training-time caption choice (:class:`CaptionPolicy`, handed to :class:`meru.data.loader.TrainLoader`).

SynthHier captions name one taxonomy node (depth ``L``: 0 root .. 3 leaf) plus a subset ``A`` of the
attributes (count, size, colour, texture), e.g. ``"two small red triangles on stripes."``; specificity is
``L + |A|``. Without a count a caption is existential ("a red triangle"). Training samples store
``CAPTIONS_PER_SPECIFICITY`` captions per specificity with a random prefix (``PREFIXES``); zero-shot
templates are ``prefix + "a {c}."`` (``TEMPLATES``) for taxonomy nodes and ``prefix + "{c}."``
(``ATTRIBUTE_TEMPLATES``) for attribute values, whose class names are root phrases ("two objects"), so prompts
are in-distribution.

RedCaps (MERU): with probability ``p`` the training caption becomes ``"<subreddit words> : <caption>"``; the
words come from the project's wordlist (``segmenter="wordlist"``) or from the ``wordsegment`` package as in the
official code (``"wordsegment"``, ``data.subreddit_segmenter``; docs/DEVIATIONS.md).

Caption choice per training draw of sample ``key`` in ``epoch`` with loader seed ``seed``
(:meth:`CaptionPolicy.caption`):

1. ``sample_json_captions`` and the sample's json has ``captions``: caption number
   ``Random(derive_seed(seed, "caption", epoch, key)).randrange(n)``; otherwise the ``txt`` member;
2. ``subreddit_prefix_prob = p > 0`` and the sample has json: one draw
   ``u = Random(derive_seed(seed, "prefix", epoch, key)).random()``; prefix when the json names a subreddit
   and ``u < p``.

Every draw is a function of (seed, epoch, key) only, so batches are deterministic and resumable.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
import re
from dataclasses import dataclass
from functools import lru_cache

# ----------------------------------------------------------------------------- seeds


def derive_seed(*parts) -> int:
    """A 63-bit integer seed that depends only on ``parts`` (stable across processes and platforms)."""
    digest = hashlib.blake2b(repr(parts).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


# ----------------------------------------------------------------------------- SynthHier caption text

SYNTH_ATTRIBUTES = ("count", "size", "colour", "texture")  # caption word order: count size colour noun texture
PLURALS = {"cross": "crosses", "letter T": "letter Ts", "letter L": "letter Ls", "letter H": "letter Hs"}
NUMBER_WORDS = {1: "one", 2: "two", 3: "three"}
TEXTURE_PHRASES = {"plain": "on a plain background", "stripes": "on stripes", "dots": "on dots"}
# Caption prefixes; zero-shot templates are prefix + "a {c}." (all class names start with a consonant).
PREFIXES = ("", "a photo of ", "a picture of ", "an image of ", "a drawing of ", "a rendering of ")
TEMPLATES = tuple(p + "a {c}." for p in PREFIXES)
# Attribute zero-shot templates: the class name is a whole noun phrase ("two objects", "an object on dots").
ATTRIBUTE_TEMPLATES = tuple(p + "{c}." for p in PREFIXES)
CAPTIONS_PER_SPECIFICITY = 3


def synth_phrase(name: str, attrs: dict) -> str:
    """Noun phrase for a node called ``name`` with the attribute values in ``attrs`` (any subset of
    ``SYNTH_ATTRIBUTES``).

    >>> synth_phrase("triangle", {"count": 2, "size": "small", "colour": "red", "texture": "stripes"})
    'two small red triangles on stripes'
    >>> synth_phrase("object", {"colour": "white"})
    'a white object'
    """
    count = attrs.get("count")
    noun = PLURALS.get(name, name + "s") if count and count > 1 else name
    words = [NUMBER_WORDS[count]] if count else []
    words += [attrs[a] for a in ("size", "colour") if a in attrs]
    words.append(noun)
    text = " ".join(words)
    if not count:
        text = ("an " if text[0] in "aeiou" else "a ") + text
    if "texture" in attrs:
        text += " " + TEXTURE_PHRASES[attrs["texture"]]
    return text


def synth_caption(name: str, attrs: dict, prefix: str = "") -> str:
    """A full caption: ``prefix + synth_phrase(name, attrs) + "."``."""
    return prefix + synth_phrase(name, attrs) + "."


def synth_specificity(depth: int, attrs: dict) -> int:
    """Specificity of a caption: node depth (0 root .. leaf) + number of attributes named."""
    return depth + len(attrs)


def attribute_subsets() -> list[tuple[str, ...]]:
    """Every subset of ``SYNTH_ATTRIBUTES`` in a fixed order (by size, then lexicographic in that order)."""
    return [c for k in range(len(SYNTH_ATTRIBUTES) + 1) for c in itertools.combinations(SYNTH_ATTRIBUTES, k)]


@lru_cache(maxsize=8)
def _combos_by_specificity(n_depths: int) -> dict[int, list[tuple[int, tuple[str, ...]]]]:
    """Specificity -> [(depth, attribute subset)] for depths ``0..n_depths-1``, in a fixed order."""
    combos: dict[int, list] = {s: [] for s in range(n_depths + len(SYNTH_ATTRIBUTES))}
    for depth in range(n_depths):
        for subset in attribute_subsets():
            combos[depth + len(subset)].append((depth, subset))
    return combos


def synth_training_captions(path_names: list[str], attrs: dict, rng) -> list[dict]:
    """``CAPTIONS_PER_SPECIFICITY`` captions ``{"text", "specificity"}`` per specificity ``0..max``.

    ``path_names``: the display names of the image's root-to-leaf path (index = depth); ``attrs``: all
    attribute values of the image; ``rng``: a ``numpy.random.Generator``. Per specificity ``s`` it draws
    ``rng.choice(#options, 3, replace=#options < 3)`` among the (depth, attribute subset) pairs with
    ``depth + |subset| = s``, then one prefix ``PREFIXES[rng.integers(6)]`` per caption."""
    combos = _combos_by_specificity(len(path_names))
    out = []
    for s in range(len(combos)):
        options = combos[s]
        picks = rng.choice(len(options), size=CAPTIONS_PER_SPECIFICITY, replace=len(options) < CAPTIONS_PER_SPECIFICITY)
        for p in picks:
            depth, subset = options[p]
            prefix = PREFIXES[rng.integers(len(PREFIXES))]
            out.append(
                {"text": synth_caption(path_names[depth], {a: attrs[a] for a in subset}, prefix), "specificity": s}
            )
    return out


# ----------------------------------------------------------------------------- RedCaps subreddit prefix

# Small wordlist for splitting concatenated subreddit names (RedCaps' 350 subreddits are mostly
# lower-case compounds like "itookapicture", "earthporn", "birdpics"). Words are plain English;
# segmentation is the fewest-pieces split into known words; unknown names are kept whole.
_WORDS = set(
    """
    a i am an and any art at ball balls be bird birds blue book books box bread build by cake cakes car cars cat
    cats city clouds coffee cozy cute day design diy dog dogs dream drone earth eat eating everything fish
    flower flowers food for forest fountain garden gardening green hands have home house houses how i in
    interior is it knit knitting life lil look macro made me mildly mushroom mushrooms my
    nature night of old on one our out pen pic pics picture pictures plant plants pizza porn pot pottery
    reddit room rose sea shoe shoes sky snake snakes space spider spiders street sun table tea that the
    these this thrift to took tree trees up view views village water way where wild with wood woodworking
    work world you your
    """.split()
)
_WORDS |= {"interesting", "photo", "photos", "photography"}


def segment_subreddit(name: str, words: set[str] | None = None) -> str:
    """Split a subreddit name into words: underscores/CamelCase first, then dynamic programming over a
    wordlist (fewest known words covering the whole lower-cased token). A token with no full cover is kept.

    >>> segment_subreddit("itookapicture")
    'i took a picture'
    """
    words = _WORDS if words is None else words
    name = name.strip()
    if name.lower().startswith("r/"):
        name = name[2:]
    tokens = [t for part in re.split(r"[_\-\s]+", name) for t in re.findall(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])", part)]
    out = []
    for tok in tokens:
        tok = tok.lower()
        n = len(tok)
        best: list[list[str] | None] = [None] * (n + 1)
        best[0] = []
        for end in range(1, n + 1):
            for start in range(end):
                piece = tok[start:end]
                if best[start] is not None and (piece in words or piece.isdigit()):
                    cand = best[start] + [piece]
                    if best[end] is None or len(cand) < len(best[end]):
                        best[end] = cand
        out.extend(best[n] if best[n] is not None else [tok])
    return " ".join(out)


@lru_cache(maxsize=None)
def segment_subreddit_wordsegment(name: str) -> str:
    """The official code's split (``meru/data/redcaps.py``, ``RedCapsTarMapper``): ``wordsegment``'s unigram /
    bigram model over ``clean(name)`` (lower-cased, non-alphanumerics dropped), words joined by spaces.

    >>> segment_subreddit_wordsegment("thriftstorehauls")
    'thrift store hauls'
    """
    import wordsegment

    if not wordsegment.UNIGRAMS:  # the corpus counts, read once per process
        wordsegment.load()
    return " ".join(wordsegment.segment(wordsegment.clean(name)))


SEGMENTERS = {"wordlist": segment_subreddit, "wordsegment": segment_subreddit_wordsegment}


def subreddit_words(name: str, segmenter: str = "wordlist") -> str:
    """A subreddit name as words, by ``segmenter`` (a key of :data:`SEGMENTERS`)."""
    if segmenter not in SEGMENTERS:
        raise ValueError(f"subreddit segmenter {segmenter!r}: choose one of {', '.join(SEGMENTERS)}")
    return SEGMENTERS[segmenter](name)


def apply_subreddit_prefix(
    caption: str, subreddit: str | None, rng: random.Random, prob: float = 0.5, segmenter: str = "wordlist"
) -> str:
    """MERU's RedCaps caption: with probability ``prob`` return ``"<subreddit words> : <caption>"``, the words
    by ``segmenter`` (:func:`subreddit_words`).

    One ``rng.random()`` draw per call (so a seeded ``random.Random`` makes it deterministic).
    No subreddit (CC3M/CC12M) -> the caption unchanged, and still one draw, so streams stay aligned.
    """
    draw = rng.random()
    if not subreddit or draw >= prob:
        return caption
    return f"{subreddit_words(subreddit, segmenter)} : {caption}"


# ----------------------------------------------------------------------------- training-time choice


class CaptionError(ValueError):
    """A sample whose caption cannot be used (no caption, empty caption, invalid json)."""


@dataclass(frozen=True)
class CaptionPolicy:
    """Which caption a training sample gets per draw (module doc).

    sample_json_captions: draw one of ``json["captions"]`` per draw (SynthHier); else use ``txt``.
    subreddit_prefix_prob: RedCaps prefix probability ``p`` in [0, 1] (0: never).
    subreddit_segmenter: how the prefix splits the name (:data:`SEGMENTERS`)."""

    sample_json_captions: bool = True
    subreddit_prefix_prob: float = 0.0
    subreddit_segmenter: str = "wordlist"

    def __post_init__(self):
        p = float(self.subreddit_prefix_prob)
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"subreddit_prefix_prob must be in [0, 1], got {self.subreddit_prefix_prob!r}")
        if self.subreddit_segmenter not in SEGMENTERS:
            raise ValueError(
                f"subreddit_segmenter = {self.subreddit_segmenter!r}: choose one of {', '.join(SEGMENTERS)}"
            )
        object.__setattr__(self, "sample_json_captions", bool(self.sample_json_captions))
        object.__setattr__(self, "subreddit_prefix_prob", p)

    @classmethod
    def from_config(cls, data_config: dict) -> CaptionPolicy:
        """From the training config's ``data`` section (``sample_captions``, ``subreddit_prefix_prob``,
        ``subreddit_segmenter``)."""
        return cls(
            sample_json_captions=data_config.get("sample_captions", True),
            subreddit_prefix_prob=data_config.get("subreddit_prefix_prob", 0.0) or 0.0,
            subreddit_segmenter=data_config.get("subreddit_segmenter", "wordlist"),
        )

    def _json_captions(self, sample: dict, key: str) -> tuple[dict | None, list]:
        """(the sample's parsed json or None, its ``captions`` when the policy draws from them, else [])."""
        if not (self.sample_json_captions and "json" in sample):
            return None, []
        meta = _json(sample, key)
        return meta, meta.get("captions") or []

    def caption(self, sample: dict, key: str, epoch: int, seed: int) -> str:
        """The caption of raw sample ``sample`` (members as bytes) for this draw; raises :class:`CaptionError`."""
        meta, captions = self._json_captions(sample, key)
        if captions:
            rng = random.Random(derive_seed(seed, "caption", epoch, key))
            text = captions[rng.randrange(len(captions))]["text"]
        else:
            text = _txt(sample, key)
        if not text:
            raise CaptionError(f"{key}: empty caption")
        if self.subreddit_prefix_prob > 0 and "json" in sample:
            subreddit = (meta if meta is not None else _json(sample, key)).get("subreddit")
            rng = random.Random(derive_seed(seed, "prefix", epoch, key))
            text = apply_subreddit_prefix(text, subreddit, rng, self.subreddit_prefix_prob, self.subreddit_segmenter)
        return text

    def candidates(self, sample: dict, key: str) -> list[str]:
        """Every caption :meth:`caption` can give ``sample`` in any draw (the json captions, or the ``txt``);
        ``ValueError`` with a subreddit prefix (its words are not enumerated here)."""
        if self.subreddit_prefix_prob > 0:
            raise ValueError("the captions of a subreddit-prefixed draw are not enumerable (subreddit_prefix_prob > 0)")
        _, captions = self._json_captions(sample, key)
        texts = [c["text"] for c in captions] if captions else [_txt(sample, key)]
        return [t for t in texts if t]


def _txt(sample: dict, key: str) -> str:
    if "txt" not in sample:
        raise CaptionError(f"{key}: no caption (.txt or json captions)")
    return sample["txt"].decode("utf-8", errors="replace").strip()


def _json(sample: dict, key: str) -> dict:
    try:
        meta = json.loads(sample["json"])
    except Exception as e:
        raise CaptionError(f"{key}.json: invalid JSON ({e})") from e
    if not isinstance(meta, dict):
        raise CaptionError(f"{key}.json: invalid JSON (a {type(meta).__name__}, not an object)")
    return meta
