"""A training stage killed with SIGKILL resumes from its last checkpoint and ends where an
uninterrupted run ends."""

import signal
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file

from solar.data import assistant, user, write_rows
from solar.spec import TrainSpec
from solar.train import sft

CFG = TrainSpec(max_steps=8, batch_size=4, max_length=64, learning_rate=1e-3, logging_steps=2, save_steps=4)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, tiny_base):
    base, data = tiny_base, tmp_path_factory.mktemp("resume") / "data"
    data.mkdir()
    write_rows(data, [{"prompt": [user(f"what is {i} plus {i}?")], "completion": [assistant(str(2 * i))]}
                      for i in range(64)])
    return base, data


def test_killed_sft_resumes_and_matches_uninterrupted(tmp_path, inputs):
    base, data = inputs
    clean = tmp_path / "clean"
    clean.mkdir()
    sft(base, [data], clean, CFG.model_copy(update={"save_steps": None}), "solar", lambda m, s: None)

    checkpoints = tmp_path / "work" / "checkpoints"
    killed_out = tmp_path / "killed"
    killed_out.mkdir()
    script = textwrap.dedent(f"""
        import os, signal
        from pathlib import Path
        import solar.train as train
        from solar.spec import TrainSpec

        def die_at_6(self, args, state, control, **kw):
            if state.global_step == 6:  # after the checkpoint at step 4, before the end
                os.kill(os.getpid(), signal.SIGKILL)

        train.LogMetrics.on_step_end = die_at_6
        cfg = TrainSpec.model_validate_json({CFG.model_dump_json()!r})
        train.sft(Path({str(base)!r}), [Path({str(data)!r})], Path({str(killed_out)!r}), cfg, "solar",
                  lambda m, s: None, Path({str(checkpoints)!r}))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert not (killed_out / "model.safetensors").exists()
    assert (checkpoints / "checkpoint-4").is_dir()

    resumed = tmp_path / "resumed"
    resumed.mkdir()
    metrics = sft(base, [data], resumed, CFG, "solar", lambda m, s: None, checkpoints)
    assert metrics["resumed_from_step"] == 4
    assert metrics["train_steps"] == 8
    a, b = load_file(clean / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-5), key
    # And training really moved the weights, so the comparison means something.
    start = load_file(base / "model.safetensors")
    assert not torch.allclose(start["lm_head.weight"], b["lm_head.weight"])
