"""Performance paths give the same results as the plain ones: trimmed text length, uint8 images,
device-side logs with plain progress lines, bf16 embedding, reused bootstrap indices."""

import json

import numpy as np
import pytest
import torch

from meru.models import build_model, get_tokenizer
from meru.models.towers import build_text_tower, trim_tokens

CAPTIONS = ["a cat", "a big red dog on the left of a small green bird, seen from above", "x", ""]


def test_trim_tokens_rounds_to_eight_and_keeps_every_eot():
    tokens = get_tokenizer(77)(CAPTIONS)
    trimmed = trim_tokens(tokens)
    assert trimmed.shape[1] % 8 == 0 and trimmed.shape[1] < 77
    assert torch.equal(trimmed, tokens[:, : trimmed.shape[1]])
    assert (trimmed.argmax(1) == tokens.argmax(1)).all()  # every [EOT] survives
    assert (tokens[:, trimmed.shape[1] :] == 0).all()  # only padding was cut
    full = torch.full((2, 77), 5)
    full[:, -1] = 49407
    assert trim_tokens(full).shape[1] == 77  # never beyond the context


def test_text_tower_at_batch_length_equals_full_context_padding():
    """Outputs and gradients of a 77-context tower are the same for 77-token and trimmed batches."""
    torch.manual_seed(0)
    tower = build_text_tower(2, 64, 2, 77, 49408, 32)
    tokens = get_tokenizer(77)(CAPTIONS)
    trimmed = trim_tokens(tokens)
    out_full = tower(tokens)
    g_full = torch.autograd.grad(out_full.square().sum(), list(tower.parameters()), allow_unused=True)
    out_trim = tower(trimmed)
    g_trim = torch.autograd.grad(out_trim.square().sum(), list(tower.parameters()), allow_unused=True)
    # float32 sums in another order: AVX-512 kernels (AMD EPYC, 2026-12-07) differ by up to 1.1e-6 on outputs ~0.35
    torch.testing.assert_close(out_trim, out_full, atol=4e-6, rtol=0)
    for a, b in zip(g_trim, g_full):
        if a is None:
            assert b is None
        else:  # float32 sums in another order: 1e-6 of the gradient's scale (here up to ~350)
            torch.testing.assert_close(a, b, atol=1e-6 * max(1.0, b.abs().max().item()), rtol=0)


@pytest.mark.parametrize("kind", ["clip", "meru"])
def test_uint8_images_equal_float_images(kind):
    torch.manual_seed(0)
    model = build_model(kind, "tiny").eval()
    pixels = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        a = model.encode_image(pixels)
        b = model.encode_image(pixels.float() / 255)
    assert torch.equal(a, b)


@pytest.fixture(scope="module")
def synth(synthhier):
    out = synthhier(64, 8)
    assert "meru synth train: 64/64 images (100.0%)" in synthhier.stderr[out]  # plain progress line
    return out / "train"


def test_loader_uint8_and_trimmed_tokens_match_the_float_path(synth):
    from meru.data.loader import TrainLoader

    kw = {"batch_size": 8, "image_size": 32, "context_length": 77, "shuffle_buffer": 1}
    plain = next(iter(TrainLoader(synth, **kw)))
    fast = next(iter(TrainLoader(synth, image_dtype="uint8", trim_tokens=True, pin_memory=True, **kw)))
    assert fast["images"].dtype == torch.uint8 and plain["images"].dtype == torch.float32
    assert torch.equal(fast["images"].float() / 255, plain["images"])
    n = fast["tokens"].shape[1]
    assert n % 8 == 0 and n < 77 and torch.equal(fast["tokens"], plain["tokens"][:, :n])
    assert (plain["tokens"][:, n:] == 0).all()
    with pytest.raises(ValueError, match="image_dtype"):
        TrainLoader(synth, image_dtype="float16", **kw)


def test_training_writes_plain_progress_lines_and_flop_telemetry(synth, tmp_path, capsys):
    from meru.config import load_train_config
    from meru.training.flops import train_flops_per_sample
    from meru.training.train import train

    torch.set_num_threads(1)
    sets = [
        f"data.train={synth}",
        "data.batch_size=8",
        "data.num_workers=0",
        "data.shuffle_buffer=8",
        "optim.warmup_steps=1",
        "optim.total_steps=4",
        "runtime.log_every=2",
        "runtime.checkpoint_every=4",
        "runtime.tensorboard=false",
        "runtime.threads=1",
    ]
    train(load_train_config(None, "meru", "tiny", 0, sets), tmp_path)
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("meru train meru/tiny:")]
    assert len(lines) == 2 and lines[0].startswith("meru train meru/tiny: 2/4 steps (50.0%) | loss ")
    assert "samples/s" in lines[0] and "TFLOP/s" in lines[0] and "ETA" in lines[0] and "\r" not in lines[0]
    rows = [json.loads(r) for r in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4]
    for r in rows:  # achieved FLOP/s is formula FLOPs over wall time: consistent with samples/s
        per_sample = r["tflops_per_device"] * 1e12 / r["samples_per_s"]
        assert train_flops_per_sample("tiny", 8) <= per_sample * (1 + 1e-6)
        assert per_sample <= train_flops_per_sample("tiny") * (1 + 1e-6)
        assert "mfu" not in r  # no known peak on CPU


@pytest.mark.parametrize("kind", ["clip", "meru"])
def test_bf16_embedding_is_close_to_fp32(kind):
    """CPU bf16 autocast stands in for the GPU path: towers in bf16, projection and lift in fp32.
    Stated tolerance: relative L2 error per embedding <= 3e-2 (bf16 has 8 mantissa bits)."""
    from meru.evaluation.encode import encode_images, encode_texts

    torch.manual_seed(0)
    model = build_model(kind, "small-cpu").eval()
    images = torch.rand(16, 3, 32, 32)
    _, f32 = encode_images(model, images, amp="fp32")
    _, bf = encode_images(model, images, amp="bf16")
    assert f32.dtype == bf.dtype == torch.float32
    rel = (bf - f32).norm(dim=-1) / f32.norm(dim=-1)
    assert rel.max() < 3e-2, rel.max()
    assert not torch.equal(bf, f32)  # autocast really ran in bf16
    t32 = encode_texts(model, CAPTIONS, amp="fp32")
    tbf = encode_texts(model, CAPTIONS, amp="bf16")
    assert ((tbf - t32).norm(dim=-1) / t32.norm(dim=-1)).max() < 3e-2


def test_prompt_encoding_at_own_length_equals_full_context():
    from meru.evaluation.encode import encode_texts

    torch.manual_seed(0)
    model = build_model("meru", "tiny").eval()
    trimmed = encode_texts(model, CAPTIONS * 3, batch_size=5, amp="fp32")
    with torch.no_grad():
        full = model.encode_text(model.tokenize(CAPTIONS * 3))
    torch.testing.assert_close(trimmed, full, atol=1e-6, rtol=0)


def test_imagenet_class_nodes_skip_header_lines():
    from meru.data.evalsets import _class_nodes

    nodes = _class_nodes(None, "imagenet1k", [f"class {i}" for i in range(1000)])
    assert nodes is not None and len(nodes) == 1000 and len(set(nodes)) == 1000
    assert all(n.startswith("n") and len(n) == 9 and n[1:].isdigit() for n in nodes)
    assert nodes[0] == "n01440764"


def test_bootstrap_indices_reused_give_identical_intervals():
    from meru.stats import bootstrap_ci, bootstrap_indices

    rng = np.random.default_rng(1)
    a, b = rng.integers(0, 2, 300), rng.random(300)
    idx = bootstrap_indices(300, 200, seed=3)
    assert bootstrap_ci(a, n_boot=200, seed=3) == bootstrap_ci(a, indices=idx)
    assert bootstrap_ci(b, np.median, n_boot=200, seed=3) == bootstrap_ci(b, np.median, indices=idx)
    with pytest.raises(ValueError, match="do not resample"):
        bootstrap_ci(a[:10], indices=idx)


def test_zeroshot_intervals_unchanged_by_index_reuse():
    from meru.evaluation.zeroshot import _mpc_rows, evaluate_zeroshot
    from meru.records import EmbeddingCache
    from meru.spaces import get_space
    from meru.stats import bootstrap_ci

    g = torch.Generator().manual_seed(0)
    cache = EmbeddingCache(
        task="classification",
        space=get_space("clip"),
        textual_alpha=None,
        classnames=["a", "b", "c"],
        class_text_raw=torch.randn(2, 3, 8, generator=g),
        image_emb=torch.randn(50, 8, generator=g),
        labels=torch.randint(0, 3, (50,), generator=g),
    )
    out = evaluate_zeroshot(cache, n_boot=100, seed=4)
    c1, lab = np.array(out.per_item["correct"]), np.array(out.per_item["label"])
    assert out.intervals["top1"] == [100.0 * v for v in bootstrap_ci(c1, n_boot=100, seed=4)]
    assert out.intervals["mean_per_class"] == [
        100.0 * v for v in bootstrap_ci(np.stack([c1, lab], 1), statistic=_mpc_rows, n_boot=100, seed=4)
    ]


def test_progress_line_format():
    import io

    from meru.progress import Progress, format_duration

    buf = io.StringIO()
    p = Progress("job", 10, "items", every_s=3600, stream=buf)
    assert p.update(4) is None  # throttled
    line = p.update(6)  # reaching the total always prints
    assert line.startswith("job: 10/10 items (100.0%) | ") and "items/s" in line and "ETA 0s" in line
    assert buf.getvalue() == line + "\n"
    assert format_duration(3725) == "1h02m" and format_duration(151) == "2m31s" and format_duration(None) == "?"
