"""Tokens per second of the SFT and DPO stages against a bare TRL script, in one run.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/train_throughput.py [--steps 30]

Same model (the paper-ablation tiny model, 12 layers after DUS), same data (the shipped
Alpaca-GPT4 and Ultrafeedback rows in the chat template), same settings. The "bare"
side is written here directly against TRL, not through solar's config builder. Each side
runs twice, alternating, and the faster run counts. Goal: solar >= 0.95x bare.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from solar.data import NORMALISERS, write_rows
from solar.dus import upscale
from solar.model import build_tiny, chat_template
from solar.plan import embedded_path
from solar.spec import TinyModel, TrainSpec
from solar.train import dpo, sft


def rows(fmt: str, file: str, n: int) -> list[dict]:
    lines = embedded_path(file).read_text().splitlines()[:n]
    return [NORMALISERS[fmt](json.loads(line)) for line in lines]


def bare_sft(model_dir: Path, data: list[dict], out: Path, cfg: TrainSpec) -> float:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.chat_template = chat_template("solar")
    args = SFTConfig(output_dir=str(out), max_steps=cfg.max_steps, per_device_train_batch_size=cfg.batch_size,
                     learning_rate=cfg.learning_rate, max_length=cfg.max_length, use_cpu=True, bf16=False,
                     activation_checkpointing=False, report_to="none", save_strategy="no", seed=cfg.seed,
                     logging_steps=cfg.logging_steps, lr_scheduler_type=cfg.lr_scheduler_type)
    trainer = SFTTrainer(model=AutoModelForCausalLM.from_pretrained(model_dir), args=args,
                         train_dataset=Dataset.from_list(data), processing_class=tok)
    trainer.train()
    trainer.save_model(str(out))
    return float([h["num_tokens"] for h in trainer.state.log_history if "num_tokens" in h][-1])


def bare_dpo(model_dir: Path, data: list[dict], out: Path, cfg: TrainSpec, beta: float) -> float:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.chat_template = chat_template("solar")
    args = DPOConfig(output_dir=str(out), max_steps=cfg.max_steps, per_device_train_batch_size=cfg.batch_size,
                     learning_rate=cfg.learning_rate, max_length=cfg.max_length, use_cpu=True, bf16=False,
                     activation_checkpointing=False, report_to="none", save_strategy="no", seed=cfg.seed,
                     logging_steps=cfg.logging_steps, beta=beta, precompute_ref_log_probs=True,
                     lr_scheduler_type=cfg.lr_scheduler_type)
    trainer = DPOTrainer(model=AutoModelForCausalLM.from_pretrained(model_dir), args=args,
                         train_dataset=Dataset.from_list(data), processing_class=tok)
    trainer.train()
    trainer.save_model(str(out))
    return float([h["num_tokens"] for h in trainer.state.log_history if "num_tokens" in h][-1])


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="solar-tput-") as tmp:
        root = Path(tmp)
        (root / "base").mkdir()
        (root / "dus").mkdir()
        build_tiny(TinyModel(), embedded_path("corpus.jsonl"), root / "base")
        upscale(root / "base", root / "dus", 2)
        model = root / "dus"
        sft_rows = rows("alpaca", "sources/alpaca_gpt4.jsonl", 400)
        pref_rows = rows("ultrafeedback", "sources/ultrafeedback_cleaned.jsonl", 300)
        for name, data in (("sft-data", sft_rows), ("pref-data", pref_rows)):
            (root / name).mkdir()
            write_rows(root / name, data)
        cfg = TrainSpec(max_steps=args.steps, batch_size=8, max_length=256, logging_steps=5, save_steps=None,
                        lr_scheduler_type="linear")
        dcfg = cfg.model_copy(update={"learning_rate": 5e-6})
        # solar's mixture() shuffles with the seed; give the bare side the same order.
        from solar.data import mixture

        sft_bare, pref_bare = mixture([root / "sft-data"], cfg.seed), mixture([root / "pref-data"], cfg.seed)
        results: dict[str, dict[str, float]] = {}
        tokens: dict[str, float] = {}
        for round_ in range(2):
            for side in ("bare", "solar"):
                out = root / f"out-{side}-{round_}"
                for stage in ("sft", "dpo"):
                    d = out / stage
                    d.mkdir(parents=True)
                    if side == "bare" and stage == "sft":
                        t, tokens["sft"] = timed(lambda d=d: bare_sft(model, sft_bare, d, cfg))
                    elif side == "bare":
                        t, tokens["dpo"] = timed(lambda d=d: bare_dpo(model, pref_bare, d, dcfg, 0.1))
                    elif stage == "sft":
                        t, _ = timed(lambda d=d: sft(model, [root / "sft-data"], d, cfg, "solar", lambda m, s: None))
                    else:
                        t, _ = timed(lambda d=d: dpo(model, [root / "pref-data"], d, dcfg, 0.1, "sigmoid", "solar",
                                                     lambda m, s: None))
                    best = results.setdefault(stage, {})
                    best[side] = min(best.get(side, float("inf")), t)
    print(f"{'stage':6} {'tokens':>8} {'bare tok/s':>11} {'solar tok/s':>12} {'solar/bare':>11}")
    for stage in ("sft", "dpo"):
        bare, ours = tokens[stage] / results[stage]["bare"], tokens[stage] / results[stage]["solar"]
        print(f"{stage:6} {tokens[stage]:8.0f} {bare:11.0f} {ours:12.0f} {ours / bare:11.3f}")


if __name__ == "__main__":
    main()
