"""`meru train` with bad configs: each case fails with exit 2 and at most 2 lines naming file, key and value.

Cases run in-process through ``meru.cli.main`` (an escaping exception would be a traceback and fails the
test); two run as a real subprocess to check the user-visible output end to end.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from meru.cli import main
from meru.data.shards import write_shards

BASE = """\
model: {kind: meru, size: tiny}
data: {train: DATA, batch_size: 8, num_workers: 0, shuffle_buffer: 8}
optim: {lr: 1.0e-3, warmup_steps: 1, total_steps: 2}
runtime: {tensorboard: false, device: cpu}
"""

# (case id, config text (DATA = a valid shard dir; None = no file), extra CLI args, substrings the error must hold)
CASES = [
    ("unknown-section", BASE + "optimm: {lr: 1}\n", [], ["optimm", "unknown key"]),
    ("unknown-key", BASE.replace("lr: 1.0e-3", "lrr: 1.0e-3"), [], ["optim.lrr", "0.001", "unknown key"]),
    ("lr-string", BASE.replace("lr: 1.0e-3", "lr: abc"), [], ["optim.lr", "'abc'"]),
    ("lr-negative", BASE.replace("lr: 1.0e-3", "lr: -1"), [], ["optim.lr", "-1"]),
    ("lr-zero", BASE.replace("lr: 1.0e-3", "lr: 0"), [], ["optim.lr", "0"]),
    ("lr-nan", BASE.replace("lr: 1.0e-3", "lr: .nan"), [], ["optim.lr", "nan"]),
    ("lr-inf", BASE.replace("lr: 1.0e-3", "lr: .inf"), [], ["optim.lr", "inf"]),
    ("betas-length", BASE, ["--set", "optim.betas=[0.9]"], ["optim.betas", "0.9"]),
    ("betas-one", BASE, ["--set", "optim.betas=[0.9, 1.0]"], ["optim.betas", "1.0"]),
    ("betas-string", BASE, ["--set", "optim.betas=fast"], ["optim.betas", "'fast'"]),
    ("weight-decay-negative", BASE, ["--set", "optim.weight_decay=-0.1"], ["optim.weight_decay", "-0.1"]),
    ("eps-zero", BASE, ["--set", "optim.eps=0"], ["optim.eps", "0"]),
    ("warmup-negative", BASE.replace("warmup_steps: 1", "warmup_steps: -1"), [], ["optim.warmup_steps", "-1"]),
    ("warmup-fraction", BASE.replace("warmup_steps: 1", "warmup_steps: 1.5"), [], ["optim.warmup_steps", "1.5"]),
    ("total-zero", BASE.replace("total_steps: 2", "total_steps: 0"), [], ["optim.total_steps", "0"]),
    ("grad-clip-zero", BASE, ["--set", "optim.grad_clip=0"], ["optim.grad_clip", "0"]),
    ("grad-clip-string", BASE, ["--set", "optim.grad_clip=big"], ["optim.grad_clip", "'big'"]),
    ("grad-accum-zero", BASE, ["--set", "optim.grad_accum=0"], ["optim.grad_accum", "0"]),
    ("batch-not-divisible", BASE, ["--set", "optim.grad_accum=3"], ["data.batch_size", "8", "optim.grad_accum", "3"]),
    ("batch-zero", BASE.replace("batch_size: 8", "batch_size: 0"), [], ["data.batch_size", "0"]),
    ("batch-quoted", BASE.replace("batch_size: 8", "batch_size: '8'"), [], ["data.batch_size", "'8'"]),
    ("workers-negative", BASE.replace("num_workers: 0", "num_workers: -1"), [], ["data.num_workers", "-1"]),
    ("shuffle-zero", BASE.replace("shuffle_buffer: 8", "shuffle_buffer: 0"), [], ["data.shuffle_buffer", "0"]),
    ("augment-number", BASE, ["--set", "data.augment=3"], ["data.augment", "3"]),
    ("scale-reversed", BASE, ["--set", "data.scale=[0.9, 0.5]"], ["data.scale", "0.9", "0.5"]),
    ("scale-zero", BASE, ["--set", "data.scale=[0, 1]"], ["data.scale", "[0, 1]"]),
    ("prefix-prob", BASE, ["--set", "data.subreddit_prefix_prob=1.5"], ["data.subreddit_prefix_prob", "1.5"]),
    ("data-missing", BASE.replace("train: DATA", "train: DATA/nowhere"), [], ["data.train", "nowhere"]),
    ("data-no-manifest", BASE.replace("train: DATA", "train: EMPTY"), [], ["data.train", "empty", "manifest"]),
    ("data-tar-missing", BASE.replace("train: DATA", "train: DATA/x.tar"), [], ["data.train", "x.tar"]),
    ("data-number", BASE.replace("train: DATA", "train: 5"), [], ["data.train", "5"]),
    ("kind-unknown", BASE.replace("kind: meru", "kind: resnet"), [], ["model.kind", "'resnet'"]),
    ("size-unknown-file", BASE.replace("size: tiny", "size: huge"), ["--size", "huge"], ["model.size", "'huge'"]),
    ("curv-zero", BASE, ["--set", "model.curv_init=0"], ["model.curv_init", "0"]),
    ("entail-negative", BASE, ["--set", "model.entail_weight=-0.1"], ["model.entail_weight", "-0.1"]),
    ("learn-curv-string", BASE, ["--set", "model.learn_curv=maybe"], ["model.learn_curv", "'maybe'"]),
    ("amp-fp8", BASE + "precision: {amp: fp8}\n", [], ["precision.amp", "'fp8'"]),
    ("head-fp16", BASE + "precision: {head: fp16}\n", [], ["precision.head", "'fp16'"]),
    ("segmenter", BASE, ["--set", "data.subreddit_segmenter=ninja"], ["data.subreddit_segmenter", "ninja"]),
    ("device-tpu", BASE.replace("device: cpu", "device: tpu"), [], ["runtime.device", "'tpu'"]),
    ("nonfinite-policy", BASE, ["--set", "runtime.on_nonfinite=ignore"], ["runtime.on_nonfinite", "'ignore'"]),
    ("log-every-zero", BASE, ["--set", "runtime.log_every=0"], ["runtime.log_every", "0"]),
    ("checkpoint-every-negative", BASE, ["--set", "runtime.checkpoint_every=-5"], ["runtime.checkpoint_every", "-5"]),
    ("threads-zero", BASE, ["--set", "runtime.threads=0"], ["runtime.threads", "0"]),
    ("seed-negative", BASE, ["--seed", "-1"], ["runtime.seed", "-1"]),
    ("stop-after-negative", BASE, ["--set", "runtime.stop_after=-1"], ["runtime.stop_after", "-1"]),
    ("tensorboard-number", BASE.replace("tensorboard: false", "tensorboard: 2"), [], ["runtime.tensorboard", "2"]),
    ("compile-null", BASE, ["--set", "runtime.compile=null"], ["runtime.compile", "None"]),
    ("section-not-mapping", BASE + "precision: 5\n", [], ["precision", "5"]),
    ("duplicate-section", BASE + "optim: {lr: 5.0e-4}\n", [], ["duplicate key 'optim'", "line 3"]),
    ("duplicate-key", BASE.replace("lr: 1.0e-3", "lr: 1.0e-3, lr: 2.0e-3"), [], ["duplicate key 'lr'"]),
    ("yaml-syntax", BASE + "runtime: {threads: 1\n", [], ["not valid YAML", ":6:"]),
    ("yaml-tab", BASE + "\toptim: 1\n", [], ["not valid YAML"]),
    ("top-level-list", "- 1\n- 2\n", [], ["top level must be a mapping", "list"]),
    ("workflow-train-scalar", "train: 5\n", [], ["'train'", "mapping"]),
    ("workflow-overrides-list", "train: {}\ntrain_overrides: [1]\n", [], ["train_overrides", "[1]"]),
    (
        "workflow-override-bad",
        "train: {}\ntrain_overrides: {meru: {optim: {lr: x}}}\n",
        [],
        ["train_overrides.meru", "optim.lr", "'x'"],
    ),
    ("set-no-equals", BASE, ["--set", "optim"], ["--set", "'optim'", "key.sub=value"]),
    ("set-unknown-section", BASE, ["--set", "foo.bar=1"], ["--set", "foo.bar=1", "'foo'"]),
    ("set-unknown-key", BASE, ["--set", "optim.lrr=1"], ["optim.lrr", "unknown key"]),
    ("set-no-section", BASE, ["--set", "lr=1"], ["--set", "'lr=1'"]),
    ("missing-file", None, [], ["config file not found"]),
    # issue 22: accepted before, wrong; refused now
    (
        "warmup-over-total",
        BASE.replace("warmup_steps: 1", "warmup_steps: 5"),
        [],
        ["warmup_steps = 5", "total_steps = 2"],
    ),
    ("stop-after-over-total", BASE, ["--set", "runtime.stop_after=5"], ["runtime.stop_after = 5", "total_steps = 2"]),
    ("batch-one", BASE.replace("batch_size: 8", "batch_size: 1"), [], ["data.batch_size = 1", "negatives"]),
    ("batch-one-per-step", BASE, ["--set", "optim.grad_accum=8"], ["data.batch_size = 8", "grad_accum = 8"]),
    (
        "override-unknown-kind",
        "train: {}\ntrain_overrides: {mer: {optim: {lr: 1.0}}}\n",
        [],
        ["train_overrides.mer", "did you mean 'meru'", "never be used"],
    ),
    ("size-from-sizes-file", BASE.replace("size: tiny", "size: my-size"), ["--size", "my-size"], ["MERU_SIZES_FILE"]),
    # issue 21: did you mean; a huge value is echoed short
    ("unknown-key-did-you-mean", BASE.replace("lr: 1.0e-3", "lrr: 1.0e-3"), [], ["optim.lrr", "did you mean 'lr'"]),
    ("kind-did-you-mean", BASE.replace("kind: meru", "kind: mreu"), [], ["'mreu'", "did you mean 'meru'"]),
    ("size-did-you-mean", BASE, ["--size", "tinyy"], ["'tinyy'", "did you mean 'tiny'"]),
    ("huge-value", BASE.replace("device: cpu", "device: " + "x" * 100_000), [], ["runtime.device = 'xxx", "..."]),
]


def _samples(n):
    import io

    from PIL import Image

    for i in range(n):
        buf = io.BytesIO()
        Image.new("RGB", (16, 16), (i, 0, 0)).save(buf, format="PNG")
        yield {"__key__": f"s{i:04d}", "png": buf.getvalue(), "txt": f"caption {i}"}


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("badcfg")
    write_shards(_samples(8), root / "data", "t", shard_size=8, source="test")
    (root / "empty").mkdir()
    return root


def _args(dirs, case_id, text, extra):
    path = dirs / f"{case_id}.yaml"
    if text is not None:
        path.write_text(text.replace("DATA", str(dirs / "data")).replace("EMPTY", str(dirs / "empty")))
    argv = [
        "train",
        "--config",
        str(path),
        "--model",
        "meru",
        "--size",
        "tiny",
        "--seed",
        "0",
        "--out",
        str(dirs / "runs" / case_id),
    ]
    for flag in ("--size", "--seed"):
        if flag in extra:
            i = argv.index(flag)
            argv[i + 1] = extra[extra.index(flag) + 1]
    rest, skip = [], False
    for i, a in enumerate(extra):
        if skip:
            skip = False
            continue
        if a in ("--size", "--seed"):
            skip = True
            continue
        rest.append(a)
    return argv + rest, path


def test_enough_distinct_cases():
    assert len({c[0] for c in CASES}) == len(CASES) >= 40


@pytest.mark.parametrize("case_id,text,extra,expect", CASES, ids=[c[0] for c in CASES])
def test_bad_config_one_clear_line(dirs, capsys, case_id, text, extra, expect):
    argv, path = _args(dirs, case_id, text, extra)
    rc = main(argv)
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.strip()]
    assert rc == 2, err
    assert 1 <= len(lines) <= 2 and len(err) < 1500, err[:2000]
    assert "Traceback" not in err
    assert path.name in err or "--set" in err, err
    for s in expect:
        assert s.lower() in err.lower(), (s, err)
    assert not (dirs / "runs" / case_id / "model.pt").exists()


def test_no_cuda_device_is_one_line(dirs, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    argv, path = _args(dirs, "cuda", BASE.replace("device: cpu", "device: cuda"), [])
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "runtime.device = 'cuda'" in err and path.name in err


def test_compile_without_a_cpu_compiler_is_one_line(dirs, capsys, monkeypatch):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    monkeypatch.setenv("PATH", str(dirs / "no-compilers-here"))
    monkeypatch.delenv("CXX", raising=False)
    argv, path = _args(dirs, "compile", BASE.replace("device: cpu", "device: cpu, compile: true"), [])
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "C++ compiler" in err and "runtime.compile: false" in err, err


def test_compact_vocab_on_streaming_data_is_one_line(dirs, capsys):
    argv, path = _args(dirs, "compact", BASE.replace("device: cpu", "device: cpu, compact_vocab: true"), [])
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "data.in_memory: true" in err, err
    assert not (dirs / "runs" / "compact" / "model.pt").exists()


@pytest.mark.parametrize("case_id", ["duplicate-section"])
def test_real_process_prints_one_line(dirs, case_id):
    text, extra = next((c[1], c[2]) for c in CASES if c[0] == case_id)
    argv, _ = _args(dirs, case_id + "-proc", text, extra)
    r = subprocess.run([sys.executable, "-m", "meru", *argv], check=False, capture_output=True, text=True, timeout=600)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
