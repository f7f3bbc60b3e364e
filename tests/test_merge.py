import json
import math

import pytest
import torch
from safetensors.torch import load_file, save_file

import solar.merge
import solar.tensorio
from solar.merge import (
    dare,
    dare_mask,
    kth_largest,
    linear,
    merge_models,
    slerp,
    slerp_coefficients,
    task_arithmetic,
    ties,
)
from solar.tensorio import model_tensors, read_rows


def test_linear_is_the_weighted_average():
    a, b = torch.tensor([1.0, 2.0, -4.0]), torch.tensor([3.0, 6.0, 8.0])
    assert torch.equal(linear([a, b], [0.5, 0.5]), torch.tensor([2.0, 4.0, 2.0]))
    # Weights are normalised: 1:3 is 0.25/0.75.
    assert torch.allclose(linear([a, b], [1, 3]), 0.25 * a + 0.75 * b)


def test_slerp_endpoints_and_midpoint():
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0])
    assert torch.equal(slerp(a, b, 0.0), a)
    assert torch.equal(slerp(a, b, 1.0), b)
    # Halfway along a quarter circle: angle 45 degrees, norm between the two.
    mid = slerp(a, b, 0.5)
    s = math.sin(math.pi / 4) / math.sin(math.pi / 2)
    assert torch.allclose(mid, torch.tensor([s, 2 * s]))
    assert slerp_coefficients(1.0, 1.0, 1.0, 0.3) == (0.7, 0.3)  # parallel: linear


def test_task_arithmetic_by_hand():
    base, m1, m2 = torch.tensor([1.0, 2.0]), torch.tensor([2.0, 2.0]), torch.tensor([1.0, 4.0])
    # task vectors [1, 0] and [0, 2]; weights 1 and 0.5 -> [1, 1]; scale 2 -> base + [2, 2]
    assert torch.equal(task_arithmetic(base, [m1, m2], [1.0, 0.5], 2.0), torch.tensor([3.0, 4.0]))


def test_ties_by_hand():
    base = torch.ones(4)
    d1, d2 = torch.tensor([1.0, -2.0, 3.0, 0.5]), torch.tensor([-1.0, 1.0, 2.0, -4.0])
    # density 0.5 keeps the 2 largest magnitudes: [0, -2, 3, 0] and [0, 0, 2, -4].
    # Elected signs of the sum [0, -2, 5, -4]: 0, -, +, -.  Agreeing means: 0, -2, 2.5, -4.
    out = ties(base, [base + d1, base + d2], [1.0, 1.0], 0.5, 1.0)
    assert torch.equal(out, base + torch.tensor([0.0, -2.0, 2.5, -4.0]))
    # Weights enter the election and the mean; scale multiplies the merged task vector.
    out = ties(base, [base + d1, base + d2], [3.0, 1.0], 0.5, 0.5)
    assert torch.allclose(out, base + 0.5 * torch.tensor([0.0, -2.0, (9 + 2) / 4, -4.0]))
    # density 1 with agreeing signs is the weighted mean of the task vectors.
    assert torch.allclose(ties(base, [base + d1, base + d1 * 3], [1.0, 1.0], 1.0, 1.0), base + 2 * d1)


def test_dare_by_hand():
    base = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0, 5.0])
    m1, m2 = base + torch.arange(6.0), base - 1.0
    masks = [dare_mask((6,), 0.5, 11), dare_mask((6,), 0.5, 12)]
    assert 0 < int(masks[0].sum()) < 6  # some dropped, some kept
    expected = base + 0.8 * (1.0 * torch.arange(6.0) * masks[0] / 0.5 + 2.0 * -1.0 * masks[1] / 0.5)
    assert torch.allclose(dare(base, [m1, m2], [1.0, 2.0], 0.5, 0.8, [11, 12]), expected)
    # density 1 drops nothing: task arithmetic.
    assert torch.equal(dare(base, [m1, m2], [1.0, 2.0], 1.0, 0.8, [11, 12]),
                       task_arithmetic(base, [m1, m2], [1.0, 2.0], 0.8))


def test_kth_largest_is_exact_over_chunks():
    torch.manual_seed(0)
    x = torch.randn(10_001).abs()
    x[:50] = 0.0
    chunks = lambda: x.split(997)  # noqa: E731
    for k in (1, 2, 500, 5_000, 9_951, 10_001):
        assert kth_largest(chunks, k) == torch.topk(x, k).values[-1].item()


TOKENIZER = {"model": {"type": "BPE", "vocab": {"a": 0, "b": 1}}, "added_tokens": []}


def _write_model(path, tensors, layers=1, tokenizer=TOKENIZER):
    path.mkdir()
    save_file(tensors, path / "model.safetensors")
    (path / "config.json").write_text(
        f'{{"model_type": "mistral", "num_hidden_layers": {layers}, "hidden_size": 2, "vocab_size": 3}}'
    )
    if tokenizer is not None:
        (path / "tokenizer.json").write_text(json.dumps(tokenizer))
    return path


def _random_models(tmp_path, count, seed=0, dtype=torch.float32):
    torch.manual_seed(seed)
    shapes = {"w": (64, 8), "b": (8,), "emb": (40, 8), "scalar": ()}
    return [_write_model(tmp_path / f"m{i}", {k: torch.randn(s).to(dtype) for k, s in shapes.items()})
            for i in range(count)]


def _out(tmp_path, name="out"):
    (tmp_path / name).mkdir()
    return tmp_path / name


def _load(model_dir):
    return {name: read_rows(info, 0, info.rows) for name, info in model_tensors(model_dir).items()}


def test_merge_models_linear_exact(tmp_path):
    a, b, c = _random_models(tmp_path, 3)
    out = _out(tmp_path)
    metrics = merge_models([a, b, c], out, "linear", [0.2, 0.3, 0.5], shard_bytes=1000)
    assert (out / "model.safetensors.index.json").is_file() and (out / "tokenizer.json").is_file()
    merged, ins = _load(out), [load_file(d / "model.safetensors") for d in (a, b, c)]
    assert metrics["tensors"] == 4 == len(merged)
    for k in merged:
        expected = torch.zeros_like(ins[0][k])
        for t, w in zip(ins, [0.2, 0.3, 0.5], strict=True):
            expected += t[k] * (w / 1.0)
        assert torch.equal(merged[k], expected), k


def test_linear_merge_bf16_is_the_fp32_weighted_average_bit_for_bit(tmp_path, monkeypatch):
    # Chunks of 100 elements (split mid-tensor), staging buffers of two blocks (tensors
    # straddle them) and several shards: every output entry is the float32 weighted average
    # rounded once to bf16, as separate float32 ops (weights that are not powers of two).
    monkeypatch.setattr(solar.merge, "LINEAR_CHUNK", 100)
    monkeypatch.setattr(solar.tensorio, "STAGING_BYTES", 8192)
    torch.manual_seed(1)
    shapes = {"w": (300, 7), "emb": (1001, 3), "b": (5,), "scalar": ()}
    ins = []
    for i in range(2):
        tensors = {k: torch.randn(sh).bfloat16() for k, sh in shapes.items()}
        tensors["ids"] = torch.arange(3, dtype=torch.int64) + i  # not floating: the first model's
        tensors["flags"] = torch.tensor([1, 0, i], dtype=torch.int8)  # 3 bytes: what follows is at odd offsets
        ins.append(tensors)
        _write_model(tmp_path / f"m{i}", tensors)
    out = _out(tmp_path)
    merge_models([tmp_path / "m0", tmp_path / "m1"], out, "linear", [3.0, 7.0], shard_bytes=4000)
    assert len(list(out.glob("model-*.safetensors"))) > 1
    merged = _load(out)
    assert torch.equal(merged["ids"], ins[0]["ids"]) and torch.equal(merged["flags"], ins[0]["flags"])
    for k in shapes:
        a, b = ins[0][k], ins[1][k]
        expected = (0.3 * a.float() + 0.7 * b.float()).to(torch.bfloat16)
        assert merged[k].dtype == torch.bfloat16 and torch.equal(merged[k], expected), k
    # ... and what safetensors itself reads from the shards is the same.
    from safetensors import safe_open

    for shard in out.glob("model-*.safetensors"):
        with safe_open(shard, "pt") as f:
            assert all(torch.equal(f.get_tensor(k), merged[k]) for k in f.keys())


def test_direct_write_is_the_buffered_write_byte_for_byte(tmp_path, monkeypatch):
    # O_DIRECT staging (block-padded, then truncated) writes the very bytes of the
    # buffered writer, for tensors of odd sizes across buffer and shard boundaries;
    # map_rows and read_rows read the same rows.
    monkeypatch.setattr(solar.tensorio, "STAGING_BYTES", 4096)
    torch.manual_seed(2)
    tensors = {"a": torch.randn(777, 3), "b": torch.randint(0, 9, (4099,), dtype=torch.int8),
               "c": torch.randn(5).bfloat16(), "d": torch.tensor(1.5)}
    src = _write_model(tmp_path / "src", tensors)
    infos = model_tensors(src)
    outs = [solar.tensorio.OutTensor(k, i.dtype, i.shape) for k, i in infos.items()]
    for name, direct, how in [("buffered", False, "copy"), ("direct", True, "copy"), ("direct_t", True, "write")]:
        d = _out(tmp_path, name)

        def fill(t, f, how=how):
            return f.copy(infos[t.name]) if how == "copy" else f.write_tensor(read_rows(infos[t.name], 0, infos[t.name].rows))
        solar.tensorio.write_model(d, outs, fill, 10_000, direct=direct)
    files = sorted(p.name for p in (tmp_path / "buffered").iterdir())
    assert len(files) > 2
    for name in ("direct", "direct_t"):
        assert sorted(p.name for p in (tmp_path / name).iterdir()) == files
        for fname in files:
            assert (tmp_path / name / fname).read_bytes() == (tmp_path / "buffered" / fname).read_bytes(), fname
    for info in infos.values():
        for r0, r1 in [(0, info.rows), (1, min(3, info.rows)), (info.rows - 1, info.rows)]:
            assert torch.equal(solar.tensorio.map_rows(info, r0, r1), read_rows(info, r0, r1)), info.name


def test_direct_write_falls_back_when_the_filesystem_refuses_o_direct_writes(tmp_path, monkeypatch):
    import errno
    import fcntl
    import os

    try:
        os.close(os.open(tmp_path / "probe", os.O_WRONLY | os.O_CREAT | os.O_DIRECT))
    except OSError:
        pytest.skip("this filesystem has no O_DIRECT: the fallback at open is the one taken")
    refused = []

    def pwrite(fd, data, offset, real=os.pwrite):
        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT:
            refused.append(offset)
            raise OSError(errno.EINVAL, "Invalid argument")
        return real(fd, data, offset)

    a, b = _random_models(tmp_path, 2, dtype=torch.bfloat16)
    monkeypatch.setattr(solar.tensorio.os, "pwrite", pwrite)
    out = _out(tmp_path)
    merge_models([a, b], out, "linear", [1.0, 1.0])
    ins = [load_file(d / "model.safetensors") for d in (a, b)]
    merged = load_file(out / "model.safetensors")
    assert refused and all(torch.equal(merged[k], linear([ins[0][k], ins[1][k]], [1, 1]).bfloat16()) for k in merged)


def test_merge_models_chunked_equals_whole(tmp_path, monkeypatch):
    # Tensors split into row chunks (of 24 elements) merge exactly as whole tensors do.
    base, a, b = _random_models(tmp_path, 3)
    ins = [load_file(d / "model.safetensors") for d in (base, a, b)]
    monkeypatch.setattr(solar.merge, "CHUNK_ELEMENTS", 24)
    for method, kwargs, pure in [
        ("ties", {"density": 0.3, "scale": 0.7},
         lambda k: ties(ins[0][k], [ins[1][k], ins[2][k]], [1.0, 2.0], 0.3, 0.7)),
        ("task_arithmetic", {"scale": 0.5},
         lambda k: task_arithmetic(ins[0][k], [ins[1][k], ins[2][k]], [1.0, 2.0], 0.5)),
    ]:
        out = _out(tmp_path, method)
        merge_models([a, b], out, method, [1.0, 2.0], base=base, **kwargs)
        merged = _load(out)
        for k in merged:
            assert torch.allclose(merged[k], pure(k), atol=1e-6), (method, k)
    out = _out(tmp_path, "slerp")
    merge_models([a, b], out, "slerp", t=0.3)
    for k, v in _load(out).items():
        assert torch.allclose(v, slerp(ins[1][k], ins[2][k], 0.3), atol=1e-6), k


@pytest.mark.parametrize("t,which", [(0.0, 0), (1.0, 1)])
def test_merge_models_slerp_endpoints_are_the_inputs(tmp_path, t, which):
    a, b = _random_models(tmp_path, 2, dtype=torch.bfloat16)
    out = _out(tmp_path)
    merge_models([a, b], out, "slerp", t=t)
    expected = load_file((a, b)[which] / "model.safetensors")
    merged = load_file(out / "model.safetensors")
    assert all(torch.equal(merged[k], expected[k]) and merged[k].dtype == torch.bfloat16 for k in expected)


def test_merge_models_dare_is_deterministic_and_dtype_is_the_specs(tmp_path):
    base, a, b = _random_models(tmp_path, 3)
    outs = [_out(tmp_path, n) for n in ("x", "y", "z")]
    for out, seed in zip(outs, (1, 1, 2), strict=True):
        merge_models([a, b], out, "dare", base=base, density=0.5, seed=seed, dtype="bfloat16")
    x, y, z = (load_file(o / "model.safetensors") for o in outs)
    assert x["w"].dtype == torch.bfloat16
    assert json.loads((outs[0] / "config.json").read_text())["dtype"] == "bfloat16"
    assert all(torch.equal(x[k], y[k]) for k in x)
    assert not torch.equal(x["w"], z["w"])


@pytest.fixture
def no_tensor_reads(monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("a tensor was read")

    for target in (solar.merge, solar.tensorio):
        for name in ("read_rows", "map_rows", "write_model"):
            monkeypatch.setattr(target, name, boom)
    import safetensors

    monkeypatch.setattr(safetensors, "safe_open", boom)


def test_merge_models_refuses_mismatched_shapes(tmp_path, no_tensor_reads):
    _write_model(tmp_path / "a", {"w": torch.zeros(3, 2)})
    _write_model(tmp_path / "b", {"w": torch.zeros(2, 3)})
    with pytest.raises(ValueError, match="tensor w has shapes"):
        merge_models([tmp_path / "a", tmp_path / "b"], _out(tmp_path))


def test_merge_models_refuses_other_names_config_or_tokenizer(tmp_path, no_tensor_reads):
    a = _write_model(tmp_path / "a", {"w": torch.zeros(2)})
    b = _write_model(tmp_path / "b", {"v": torch.zeros(2)})
    c = _write_model(tmp_path / "c", {"w": torch.zeros(2)}, layers=2)
    other = {"model": {"type": "BPE", "vocab": {"a": 0, "c": 1}}, "added_tokens": []}
    d = _write_model(tmp_path / "d", {"w": torch.zeros(2)}, tokenizer=other)
    out = _out(tmp_path)
    with pytest.raises(ValueError, match="differs in tensor names"):
        merge_models([a, b], out)
    with pytest.raises(ValueError, match="num_hidden_layers=2"):
        merge_models([a, c], out)
    with pytest.raises(ValueError, match="in its vocabulary"):
        merge_models([a, d], out)
    with pytest.raises(ValueError, match="in its vocabulary"):  # the base is checked too
        merge_models([a, a], out, "task_arithmetic", base=d)
    with pytest.raises(ValueError, match="needs base"):
        merge_models([a, a], out, "ties", density=0.5)
    with pytest.raises(ValueError, match="slerp merges exactly 2 models"):
        merge_models([a, a, a], out, "slerp", t=0.5)
    with pytest.raises(ValueError, match="unknown method 'mean'"):
        merge_models([a, a], out, "mean")
    for m, layers in ((a, 3), (c, 4)):  # a multimodal model's text section is compared too
        cfg = json.loads((m / "config.json").read_text())
        (m / "config.json").write_text(json.dumps({**cfg, "num_hidden_layers": None,
                                                   "text_config": {"num_hidden_layers": layers}}))
    with pytest.raises(ValueError, match="has text_config.num_hidden_layers=4, .* has 3"):
        merge_models([a, c], out)


def test_merge_models_tokenizer_policy_first(tmp_path):
    other = {"model": {"type": "BPE", "vocab": {"a": 0, "c": 1}}, "added_tokens": []}
    a = _write_model(tmp_path / "a", {"w": torch.ones(2)})
    d = _write_model(tmp_path / "d", {"w": torch.zeros(2)}, tokenizer=other)
    out = _out(tmp_path)
    merge_models([a, d], out, tokenizer_policy="first")
    assert json.loads((out / "tokenizer.json").read_text()) == TOKENIZER
    assert torch.equal(load_file(out / "model.safetensors")["w"], torch.full((2,), 0.5))


def test_tokenizer_policies(tmp_path, no_tensor_reads):
    a = _write_model(tmp_path / "a", {"w": torch.ones(2)})
    # One more (added) token: `first` refuses, as embedding rows would mean different tokens.
    bigger = {**TOKENIZER, "added_tokens": [{"id": 2, "content": "<s>", "special": True}]}
    big = _write_model(tmp_path / "big", {"w": torch.ones(2)}, tokenizer=bigger)
    out = _out(tmp_path)
    with pytest.raises(ValueError, match=r"big/tokenizer.json has 3 tokens, .*a/tokenizer.json 2"):
        merge_models([a, big], out, tokenizer_policy="first")
    with pytest.raises(ValueError, match="in its added tokens"):
        merge_models([a, big], out)
    # Same vocabulary, other special tokens or chat template: `strict` refuses, naming the part.
    config = {"eos_token": {"content": "b", "special": True}, "chat_template": "{{ x }}"}
    for name, cfg, files, part in [
        ("eos", {**config, "eos_token": "a"}, {}, "special tokens"),
        ("tmpl", {**config, "chat_template": "{{ y }}"}, {}, "chat template"),
        ("jinja", config, {"chat_template.jinja": "{{ z }}"}, "chat template"),
    ]:
        m = _write_model(tmp_path / name, {"w": torch.ones(2)})
        (m / "tokenizer_config.json").write_text(json.dumps(cfg))
        for fname, text in files.items():
            (m / fname).write_text(text)
        (a / "tokenizer_config.json").write_text(json.dumps(config))
        with pytest.raises(ValueError, match=f"in its {part}"):
            merge_models([a, m], out)
    # A base (task arithmetic, ties, dare) may lack the chat template, not the special tokens.
    plain = _write_model(tmp_path / "plain", {"w": torch.ones(2)})
    (plain / "tokenizer_config.json").write_text(json.dumps({"eos_token": "b"}))
    solar.merge.check_tokenizers([a, a], "strict", base=plain)
    with pytest.raises(ValueError, match="plain differs .* in its chat template"):
        solar.merge.check_tokenizers([a, plain], "strict")
    with pytest.raises(ValueError, match="eos differs .* in its special tokens"):
        solar.merge.check_tokenizers([a, a], "strict", base=tmp_path / "eos")
    # The same settings spelt differently (a string, not an AddedToken dict) are the same.
    same = _write_model(tmp_path / "same", {"w": torch.ones(2)})
    (same / "tokenizer_config.json").write_text(json.dumps({**config, "eos_token": "b"}))
    solar.merge.check_tokenizers([a, same], "strict")
    with pytest.raises(ValueError, match="unknown tokenizer_policy 'require_same'"):
        solar.merge.check_tokenizers([a, same], "require_same")


def test_merge_models_refuses_nan(tmp_path):
    _write_model(tmp_path / "a", {"w": torch.tensor([float("nan"), 1.0])})
    _write_model(tmp_path / "b", {"w": torch.tensor([1.0, 1.0])})
    out = _out(tmp_path)
    with pytest.raises(ValueError, match="non-finite"):
        merge_models([tmp_path / "a", tmp_path / "b"], out)
    assert not list(out.iterdir())  # the half-written shard is gone


@pytest.mark.parametrize(
    "fields,match",
    [
        ({"method": "ties", "density": 0.5}, "merges[m].base: a ties merge needs the base"),
        ({"method": "dare", "base": "c"}, "merges[m].density: a dare merge needs density"),
        ({"method": "ties", "base": "c", "density": 1.5}, "density"),
        ({"method": "task_arithmetic", "base": "a"}, "merges[m].base: 'a' is also one of the models"),
        ({"method": "linear", "base": "c"}, "merges[m].base: a linear merge takes no base"),
        ({"method": "linear", "seed": 3}, "merges[m].seed: only a dare merge takes seed"),
        ({"method": "linear", "density": 0.5}, "merges[m].density: only ties and dare"),
        ({"method": "slerp", "t": 0.5, "scale": 2.0}, "merges[m].scale"),
        ({"method": "ties", "base": "c", "density": 0.5, "weights": [1.0]}, "1 weights for 2 models"),
        ({"tokenizer_policy": "any"}, "tokenizer_policy"),
    ],
)
def test_merge_spec_is_validated(fields, match):
    from pydantic import ValidationError

    from solar.spec import MergeSpec

    with pytest.raises(ValidationError, match=match.replace("[", r"\[").replace("]", r"\]")):
        MergeSpec(name="m", models=["a", "b"], **fields)


def test_build_merge_takes_the_base_as_last_input(tmp_path):
    from solar.spec import MergeSpec
    from solar.stages import build_merge

    base, a, b = _random_models(tmp_path, 3)
    spec = MergeSpec(name="m", method="task_arithmetic", models=["a", "b"], base="base", scale=0.5)
    out = _out(tmp_path)
    build_merge(spec.model_dump(mode="json", exclude={"name", "models", "base"}), [a, b, base], out, None)
    ins = [load_file(d / "model.safetensors") for d in (base, a, b)]
    merged = load_file(out / "model.safetensors")
    for k in merged:
        assert torch.allclose(merged[k], task_arithmetic(ins[0][k], [ins[1][k], ins[2][k]], [1, 1], 0.5))
