"""A compact token embedding for training (``runtime.compact_vocab``): only the ids the training data uses.

The text tower's token embedding has ``V = 49408`` rows (CLIP's BPE vocabulary), but SynthHier's captions use a few
hundred ids. Every step, the embedding's backward writes a dense ``[V, W]`` gradient that is zero outside the used
rows, and AdamW updates all ``V`` rows. With ``U`` the sorted ids the data can produce (every caption a draw of
any sample can pick, tokenised), training runs on ``E_U = E[U]`` (``[|U|, W]``) with tokens remapped by the
monotone map ``id -> position in U`` (the [EOT] id, the largest, stays the largest, so argmax pooling and token
trimming are unchanged). Exactness:

* the forward pass, the losses and the used rows are bit-identical to training the full table: the same rows
  feed the same ops, AdamW works per element, and a row that gets no gradient gets none in both;
* a row outside ``U`` never gets a gradient, so AdamW only decays it (decoupled weight decay
  ``E_v <- E_v (1 - lr_t lambda)`` at each optimiser step); it is restored at every save as
  ``E_v(0) prod_t (1 - lr_t lambda)`` (the product kept in float64), within float rounding of the step-by-step
  update (tests/test_compact_vocab.py measures it).

Checkpoints and ``model.pt`` always hold the full ``[V, W]`` table, so evaluation and resumption see the usual
model. The optimiser state is the compact one, so a run cannot resume with ``runtime.compact_vocab`` changed
(a trajectory key of :mod:`meru.training.train`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn

EMBEDDING_KEY = "text.token_embedding.weight"


class TokenOutsideVocab(ValueError):
    """A batch holds a token id the compact vocabulary does not have (the data changed under the run)."""


class CompactVocab:
    """Train on the rows ``ids`` (sorted, unique) of a ``vocab_size``-row token embedding (module doc)."""

    def __init__(self, ids: Tensor, vocab_size: int):
        ids = torch.unique(ids.long().flatten())  # sorted
        if ids.numel() == 0 or int(ids[0]) < 0 or int(ids[-1]) >= vocab_size:
            raise ValueError(f"compact vocabulary ids must lie in [0, {vocab_size}), got {ids.tolist()[:5]}...")
        self.ids, self.vocab_size = ids, int(vocab_size)
        self.lut = torch.full((vocab_size,), -1, dtype=torch.long)
        self.lut[ids] = torch.arange(ids.numel())
        self.rest: Tensor | None = None  # the full table as of the last load (rows outside ids: decayed from here)
        self.decay = 1.0  # prod (1 - lr_t lambda) since then, float64

    @classmethod
    def from_texts(cls, texts: Iterable[str], tokenize: Callable[[list[str]], Tensor], vocab_size: int) -> CompactVocab:
        """The ids of every text in ``texts`` under ``tokenize`` (``list[str] -> [N, L]``; padding id included)."""
        texts = sorted(set(texts))
        if not texts:
            raise ValueError("no caption texts to build a compact vocabulary from")
        ids = torch.cat([torch.unique(tokenize(texts[i : i + 4096]).long()) for i in range(0, len(texts), 4096)])
        return cls(ids, vocab_size)

    def __len__(self) -> int:
        return int(self.ids.numel())

    def remap(self, tokens: Tensor) -> Tensor:
        """``[B, L]`` token ids -> positions in the compact table (a CPU gather); :class:`TokenOutsideVocab` for an
        id the data was not expected to produce."""
        mapped = self.lut[tokens]
        if bool((mapped < 0).any()):
            bad = sorted(set(tokens[mapped < 0].tolist()))[:5]
            raise TokenOutsideVocab(
                f"token ids {bad} are not in the compact vocabulary built from the training data at the start of "
                "the run (the data changed?); set runtime.compact_vocab: false"
            )
        return mapped

    # -- the model's table ------------------------------------------------------------------------------------
    @staticmethod
    def _embedding(model) -> nn.Embedding:
        return model.text.token_embedding

    def compact(self, model) -> None:
        """Replace the model's ``[V, W]`` token embedding by its rows ``ids`` (a new parameter: build the
        optimiser after this)."""
        full = self._embedding(model).weight
        if full.shape[0] != self.vocab_size:
            raise ValueError(
                f"token embedding has {full.shape[0]} rows, the compact vocabulary expects {self.vocab_size}"
            )
        self.rest, self.decay = full.detach().clone(), 1.0
        small = nn.Embedding(len(self), full.shape[1], device=full.device, dtype=full.dtype)
        with torch.no_grad():
            small.weight.copy_(full[self.ids.to(full.device)])
        model.text.token_embedding = small

    def step(self, lr: float, weight_decay: float) -> None:
        """Account one optimiser step's decoupled weight decay on the rows outside ``ids``."""
        self.decay *= 1.0 - float(lr) * float(weight_decay)

    def full_weight(self, compact_weight: Tensor) -> Tensor:
        """The ``[V, W]`` table: the trained rows at ``ids``, every other row decayed (module doc)."""
        rest = self.rest.to(compact_weight.device)
        full = (rest.double() * self.decay).to(rest.dtype) if self.decay != 1.0 else rest.clone()
        full[self.ids.to(full.device)] = compact_weight.detach()
        return full

    def full_state(self, state: dict) -> dict:
        """A compact model's ``state_dict`` with the full table (what checkpoints hold)."""
        return {**state, EMBEDDING_KEY: self.full_weight(state[EMBEDDING_KEY])}

    def compact_state(self, state: dict) -> dict:
        """A full ``state_dict`` (from a checkpoint) for the compact model; its table becomes the new ``rest``."""
        full = state[EMBEDDING_KEY]
        self.rest, self.decay = full.detach().clone(), 1.0
        return {**state, EMBEDDING_KEY: full[self.ids.to(full.device)]}

    def restore(self, model) -> None:
        """Put the full table back into the model (at the end of training)."""
        weight = self.full_weight(self._embedding(model).weight)
        table = nn.Embedding(self.vocab_size, weight.shape[1], device=weight.device, dtype=weight.dtype)
        with torch.no_grad():
            table.weight.copy_(weight)
        model.text.token_embedding = table
