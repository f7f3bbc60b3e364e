"""Training stages through TRL: continued pretraining, SFT and DPO.

Each stage turns its spec into a TRL config in one function (`trl_args`), loads data and
model, trains, saves. Defaults follow the device: on CPU fp32 without gradient
checkpointing (TRL's bf16 and checkpointing defaults make CPU training ~10x slower).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from solar.data import mixture, read_rows
from solar.model import chat_template, load_model, load_tokenizer
from solar.spec import TrainSpec

LogFn = Callable[[dict[str, float], int], None]
HELDOUT_FRACTION = 0.05


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def trl_args(cfg: TrainSpec, out_dir: Path, **extra: Any) -> dict[str, Any]:
    """The TrainingArguments every stage shares, from a TrainSpec."""
    device = resolve_device(cfg.device)
    on_gpu = device == "cuda"
    return dict(
        output_dir=str(out_dir),
        max_steps=cfg.max_steps,
        learning_rate=cfg.learning_rate,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        warmup_steps=math.ceil(cfg.warmup_ratio * cfg.max_steps),
        lr_scheduler_type=cfg.lr_scheduler_type,
        weight_decay=cfg.weight_decay,
        seed=cfg.seed,
        data_seed=cfg.seed,
        max_length=cfg.max_length,
        logging_steps=cfg.logging_steps,
        use_cpu=not on_gpu,
        bf16=cfg.bf16 if cfg.bf16 is not None else (on_gpu and torch.cuda.is_bf16_supported()),
        activation_checkpointing=(
            cfg.activation_checkpointing if cfg.activation_checkpointing is not None else on_gpu
        ),
        save_strategy="no",
        report_to="none",
        disable_tqdm=False,
        dataloader_num_workers=0,
        **extra,
    )


class LogMetrics(TrainerCallback):
    """Forward the trainer's logged scalars (loss, lr, rewards) to a `log(metrics, step)`."""

    def __init__(self, log: LogFn):
        self.log = log

    def on_log(self, args, state, control, logs=None, **kwargs):
        scalars = {k: float(v) for k, v in (logs or {}).items() if isinstance(v, (int, float))}
        if scalars:
            self.log(scalars, state.global_step)


def _finish(trainer, tokenizer, out_dir: Path) -> dict[str, float]:
    """Save final weights (safetensors) and tokenizer; drop trainer scratch files."""
    trainer.save_model(str(out_dir))
    tokenizer.save_pretrained(out_dir)
    for scratch in ("training_args.bin",):
        (out_dir / scratch).unlink(missing_ok=True)
    history = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    metrics = {"train_steps": float(trainer.state.global_step)}
    if history:
        metrics["train_loss_first"] = float(history[0])
        metrics["train_loss_last"] = float(history[-1])
    return metrics


def pretrain(model_dir: Path, corpus_dir: Path, out_dir: Path, cfg: TrainSpec, log: LogFn) -> dict[str, float]:
    """Continued pretraining: causal LM on the corpus, packed so that no token is dropped.
    Held-out loss is measured before and after, to show the up-scaled model recovering."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    rows = read_rows(corpus_dir)
    n_heldout = max(1, int(len(rows) * HELDOUT_FRACTION))
    train, heldout = Dataset.from_list(rows[n_heldout:]), Dataset.from_list(rows[:n_heldout])
    tokenizer = load_tokenizer(model_dir)
    args = SFTConfig(**trl_args(cfg, out_dir, packing=True, packing_strategy="wrapped",
                                dataset_text_field="text", eval_strategy="no"))
    trainer = SFTTrainer(
        model=load_model(model_dir), args=args, train_dataset=train, eval_dataset=heldout,
        processing_class=tokenizer, callbacks=[LogMetrics(log)],
    )
    before = trainer.evaluate()["eval_loss"]
    log({"heldout_loss": before}, 0)
    trainer.train()
    after = trainer.evaluate()["eval_loss"]
    log({"heldout_loss": after}, trainer.state.global_step)
    metrics = _finish(trainer, tokenizer, out_dir)
    return {**metrics, "heldout_loss_before": float(before), "heldout_loss": float(after)}


def sft(
    model_dir: Path, data_dirs: list[Path], out_dir: Path, cfg: TrainSpec, template: str, log: LogFn
) -> dict[str, float]:
    """Supervised fine-tuning on a mixture of prompt/completion chats; loss on the answer only."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    rows = mixture(data_dirs, cfg.seed)
    tokenizer = load_tokenizer(model_dir)
    tokenizer.chat_template = chat_template(template)
    args = SFTConfig(**trl_args(cfg, out_dir, completion_only_loss=True))
    trainer = SFTTrainer(
        model=load_model(model_dir), args=args, train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer, callbacks=[LogMetrics(log)],
    )
    trainer.train()
    return {**_finish(trainer, tokenizer, out_dir), "rows": float(len(rows))}


def dpo(
    model_dir: Path, data_dirs: list[Path], out_dir: Path, cfg: TrainSpec, beta: float,
    loss_type: str, template: str, log: LogFn,
) -> dict[str, float]:
    """DPO against the base model as reference (its log-probs computed once, up front)."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    rows = mixture(data_dirs, cfg.seed)
    tokenizer = load_tokenizer(model_dir)
    tokenizer.chat_template = chat_template(template)
    args = DPOConfig(**trl_args(cfg, out_dir, beta=beta, loss_type=[loss_type],
                                precompute_ref_log_probs=True))
    trainer = DPOTrainer(
        model=load_model(model_dir), ref_model=None, args=args,
        train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
        callbacks=[LogMetrics(log)],
    )
    trainer.train()
    metrics = _finish(trainer, tokenizer, out_dir)
    last = next((h for h in reversed(trainer.state.log_history) if "rewards/accuracies" in h), {})
    for key in ("rewards/accuracies", "rewards/margins"):
        if key in last:
            metrics[key.replace("/", "_")] = float(last[key])
    return {**metrics, "rows": float(len(rows))}

