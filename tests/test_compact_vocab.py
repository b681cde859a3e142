"""``runtime.compact_vocab``: training on the token-embedding rows the data uses gives the same run."""

from __future__ import annotations

import json

import pytest
import torch

from meru.config import ConfigError, load_train_config
from meru.data.captions import ATTRIBUTE_TEMPLATES, TEMPLATES
from meru.data.synthhier import ATTRIBUTE_SETS, attribute_classnames, taxonomy
from meru.models import build_model
from meru.training.train import ResumeConfigMismatch, train
from meru.training.vocab import EMBEDDING_KEY, CompactVocab, TokenOutsideVocab


@pytest.fixture(scope="module")
def synth(synthhier):
    return synthhier(300, 10) / "train"


def _cfg(data, compact: bool, steps=16, sets=()):
    base = [
        f"data.train={data}",
        "data.batch_size=8",
        "data.num_workers=0",
        "data.shuffle_buffer=50",
        "data.in_memory=true",
        "optim.warmup_steps=3",
        f"optim.total_steps={steps}",
        "optim.lr=1e-2",  # large, so that the decay of the unused rows is far from 1 in 16 steps
        "optim.weight_decay=0.5",
        "runtime.log_every=1",
        "runtime.checkpoint_every=5",
        "runtime.tensorboard=false",
        "runtime.threads=1",
        f"runtime.compact_vocab={str(compact).lower()}",
    ]
    return load_train_config(None, "meru", "tiny", 0, base + list(sets))


def _rows(run):
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def _state(run):
    return torch.load(run / "model.pt", weights_only=True)["state_dict"]


def test_remap_is_monotone_and_refuses_unknown_ids():
    vocab = CompactVocab(torch.tensor([49407, 0, 320, 49406, 320, 1125]), 49408)
    assert vocab.ids.tolist() == [0, 320, 1125, 49406, 49407]
    tokens = torch.tensor([[49406, 320, 1125, 49407, 0, 0], [49406, 1125, 49407, 0, 0, 0]])
    mapped = vocab.remap(tokens)
    assert mapped.tolist() == [[3, 1, 2, 4, 0, 0], [3, 2, 4, 0, 0, 0]]
    assert torch.equal(mapped.argmax(dim=1), tokens.argmax(dim=1))  # [EOT] pooling finds the same position
    with pytest.raises(TokenOutsideVocab, match=r"\[7\].*compact_vocab: false"):
        vocab.remap(torch.tensor([[49406, 7, 49407]]))


def test_compact_run_equals_the_full_run(synth, tmp_path):
    """Bit-identical losses, gradient norms and trained rows; the rows no caption uses within float rounding of
    AdamW's step-by-step decay (which moved them by ~4% here); the saved table is the full one."""
    torch.set_num_threads(1)
    train(_cfg(synth, True), tmp_path / "compact")
    train(_cfg(synth, False), tmp_path / "full")
    fields = ("step", "loss", "contrastive_loss", "entailment_loss", "grad_norm", "lr")
    assert [[r[k] for k in fields] for r in _rows(tmp_path / "compact")] == [
        [r[k] for k in fields] for r in _rows(tmp_path / "full")
    ]
    a, b = _state(tmp_path / "compact"), _state(tmp_path / "full")
    assert a.keys() == b.keys()
    for key in a:
        if key != EMBEDDING_KEY:
            assert torch.equal(a[key], b[key]), key
    assert a[EMBEDDING_KEY].shape == b[EMBEDDING_KEY].shape == (49408, build_model("meru", "tiny").text.width)
    torch.manual_seed(0)  # runtime.seed: the runs' initial table
    init = build_model("meru", "tiny").state_dict()[EMBEDDING_KEY]
    assert (b[EMBEDDING_KEY] / init).median() < 0.99  # most rows are unused and decayed: the check below can fail
    torch.testing.assert_close(a[EMBEDDING_KEY], b[EMBEDDING_KEY], rtol=2e-6, atol=0)
    used = torch.load(tmp_path / "compact" / "ckpt" / "last.pt", weights_only=True)["optimizer"]
    assert min(s["exp_avg"].shape[0] for s in used["state"].values() if s["exp_avg"].ndim == 2) < 1000


def test_compact_run_resumes_exactly_and_refuses_a_changed_setting(synth, tmp_path):
    torch.set_num_threads(1)
    train(_cfg(synth, True), tmp_path / "whole")
    assert train(_cfg(synth, True, sets=["runtime.stop_after=7"]), tmp_path / "part") is None
    with pytest.raises(ResumeConfigMismatch, match="runtime.compact_vocab"):
        train(_cfg(synth, False), tmp_path / "part")
    train(_cfg(synth, True), tmp_path / "part")
    a, b = _state(tmp_path / "whole"), _state(tmp_path / "part")
    for key in a:
        if key != EMBEDDING_KEY:
            assert torch.equal(a[key], b[key]), key
    torch.testing.assert_close(a[EMBEDDING_KEY], b[EMBEDDING_KEY], rtol=1e-6, atol=0)
    assert [r["loss"] for r in _rows(tmp_path / "whole")] == [r["loss"] for r in _rows(tmp_path / "part")]


def test_streaming_data_is_refused_in_one_line(synth, tmp_path):
    with pytest.raises(ConfigError, match=r"runtime.compact_vocab: .*in-memory.*data.in_memory: true"):
        train(_cfg(synth, True, sets=["data.in_memory=false"]), tmp_path)


def test_every_synthhier_prompt_uses_training_caption_ids(synth):
    """SynthHier's zero-shot prompts (taxonomy and attribute tasks) use only ids of its training captions, so a
    compact-vocabulary model embeds them exactly as the full-table model would."""
    from meru.data.loader import TrainLoader

    model = build_model("meru", "tiny")
    loader = TrainLoader(synth, 8, model.image_size, model.context_length, in_memory=True)
    vocab = CompactVocab.from_texts(loader.caption_texts(), model.tokenize, 49408)
    names = taxonomy()["names"].values()
    prompts = [t.format(c=n) for t in TEMPLATES for n in names]
    prompts += [t.format(c=c) for t in ATTRIBUTE_TEMPLATES for a in ATTRIBUTE_SETS for c in attribute_classnames(a)]
    vocab.remap(model.tokenize(prompts))  # raises on an id outside the compact table
    assert len(vocab) < 1000
