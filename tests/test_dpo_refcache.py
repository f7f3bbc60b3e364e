"""DPO variants that share a reference model and data compute its log-probs once."""

import torch
from safetensors.torch import load_file

from solar.data import assistant, user, write_rows
from solar.spec import TrainSpec
from solar.train import dpo

CFG = TrainSpec(max_steps=3, batch_size=4, max_length=64, learning_rate=1e-3, logging_steps=1, save_steps=None)


def test_second_variant_reuses_reference_logps_and_trains_identically(tmp_path, tiny_base):
    base, data = tiny_base, tmp_path / "data"
    data.mkdir()
    write_rows(data, [{"prompt": [user(f"what is {i} plus one?")], "chosen": [assistant(str(i + 1))],
                       "rejected": [assistant(str(i + 2))]} for i in range(24)])
    cache = tmp_path / "refcache"

    def run(name, beta, ref_cache):
        out = tmp_path / name
        out.mkdir()
        return out, dpo(base, [data], out, CFG, beta, "sigmoid", "solar", lambda m, s: None, None, ref_cache)

    _, first = run("v1", 0.1, cache)
    assert first["ref_logps_reused"] == 0.0
    assert len(list(cache.glob("*.safetensors"))) == 1
    cached_dir, second = run("v2", 0.3, cache)
    assert second["ref_logps_reused"] == 1.0
    # The reused log-probs are the ones a fresh computation gives: same final weights.
    fresh_dir, fresh = run("v2-fresh", 0.3, None)
    assert fresh["ref_logps_reused"] == 0.0
    a, b = load_file(cached_dir / "model.safetensors"), load_file(fresh_dir / "model.safetensors")
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    start = load_file(base / "model.safetensors")
    assert not torch.allclose(start["lm_head.weight"], a["lm_head.weight"])
