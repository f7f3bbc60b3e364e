"""Training stages through TRL: continued pretraining, SFT and DPO.

Each stage turns its spec into a TRL config in one function (`trl_args`), loads data and
model, trains, saves. Defaults follow the device: on CPU fp32 without gradient
checkpointing (TRL's bf16 and checkpointing defaults make CPU training ~10x slower).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from solar.artifacts import read_manifest
from solar.data import mixture, read_rows
from solar.model import chat_template, load_model, load_tokenizer
from solar.perplexity import split_heldout
from solar.spec import TrainSpec

LogFn = Callable[[dict[str, float], int], None]


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def trl_args(cfg: TrainSpec, out_dir: Path, checkpoints: Path | None, **extra: Any) -> dict[str, Any]:
    """The TrainingArguments every stage shares, from a TrainSpec. With `checkpoints`, the
    trainer saves its full state there every `save_steps` (model, optimizer, scheduler, RNG)."""
    device = resolve_device(cfg.device)
    on_gpu = device == "cuda"
    save = checkpoints is not None and cfg.save_steps is not None
    return dict(
        output_dir=str(checkpoints if save else out_dir),
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
        save_strategy="steps" if save else "no",
        save_steps=cfg.save_steps if save else None,
        save_total_limit=1,
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


def _distributed(fn: str, cfg: TrainSpec, log: LogFn, **kwargs: Any) -> dict[str, float]:
    """Run the training function `fn` in `cfg.processes` ranks (see solar/launch.py)."""
    import tempfile

    from solar.launch import run_distributed

    with tempfile.TemporaryDirectory(prefix="solar-launch-") as work:
        return run_distributed(fn, kwargs, cfg, log, Path(work))


def _train(trainer, checkpoints: Path | None) -> dict[str, float]:
    """Train, resuming from the newest checkpoint a killed earlier attempt left."""
    from transformers.trainer_utils import get_last_checkpoint

    last = get_last_checkpoint(str(checkpoints)) if checkpoints and checkpoints.is_dir() else None
    trainer.train(resume_from_checkpoint=last)
    return {"resumed_from_step": float(last.rsplit("-", 1)[-1]) if last else 0.0}


def peft_config(cfg: TrainSpec):
    """A peft LoraConfig from the spec, or None for full fine-tuning."""
    if cfg.lora is None:
        return None
    from peft import LoraConfig

    return LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                      target_modules=list(cfg.lora.target_modules), task_type="CAUSAL_LM")


def check_quantize(cfg: TrainSpec) -> None:
    """`lora.quantize` needs a CUDA GPU and bitsandbytes: say so when the stage starts."""
    if cfg.lora is None or cfg.lora.quantize is None:
        return
    import importlib.util

    if resolve_device(cfg.device) != "cuda" or not torch.cuda.is_available():
        raise ValueError(f"train.lora.quantize: {cfg.lora.quantize} loading (QLoRA, bitsandbytes) needs a "
                         "CUDA GPU; this machine has none (drop lora.quantize to train plain LoRA)")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ValueError(f"train.lora.quantize: {cfg.lora.quantize} needs the bitsandbytes package "
                         "(pip install bitsandbytes; the GPU image has it)")


def quantization_config(cfg: TrainSpec):
    """transformers' BitsAndBytesConfig for `lora.quantize`, or None. 4bit is QLoRA's recipe:
    NF4 weights, double quantisation of the scales, bf16 compute."""
    if cfg.lora is None or cfg.lora.quantize is None:
        return None
    from transformers import BitsAndBytesConfig

    if cfg.lora.quantize == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=torch.bfloat16)


def _load_trainable(model_dir: Path, cfg: TrainSpec):
    """The model to train: as stored, or quantized and prepared for k-bit training (QLoRA),
    one copy per rank on that rank's GPU."""
    bnb = quantization_config(cfg)
    if bnb is None:
        return load_model(model_dir)
    from peft import prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM

    rank = int(os.environ.get("LOCAL_RANK", "0"))
    model = AutoModelForCausalLM.from_pretrained(model_dir, quantization_config=bnb, dtype=torch.bfloat16,
                                                 device_map={"": rank}, use_safetensors=True)
    checkpointing = cfg.activation_checkpointing is not False
    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=checkpointing)


def _finish(trainer, tokenizer, out_dir: Path, base_dir: Path | None = None) -> dict[str, float]:
    """Save final weights (safetensors; LoRA adapters merged in) and tokenizer. Adapters
    trained on a quantized base are merged into the base reloaded in bf16 (`base_dir`), so
    the saved model is an ordinary one, not a bitsandbytes checkpoint."""
    quantized = getattr(trainer.model, "is_loaded_in_4bit", False) or getattr(trainer.model, "is_loaded_in_8bit", False)
    if quantized and base_dir is not None:
        if trainer.is_world_process_zero():
            import tempfile

            from peft import PeftModel

            with tempfile.TemporaryDirectory(prefix="solar-adapter-") as adapter:
                trainer.model.save_pretrained(adapter)
                base = load_model(base_dir, dtype=torch.bfloat16)
                PeftModel.from_pretrained(base, adapter).merge_and_unload().save_pretrained(out_dir)
    elif hasattr(trainer.model, "merge_and_unload"):  # a peft model
        if trainer.is_world_process_zero():
            trainer.model.merge_and_unload().save_pretrained(out_dir)
    else:
        trainer.save_model(str(out_dir))  # writes on the main process only
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(out_dir)
        (out_dir / "training_args.bin").unlink(missing_ok=True)
    history = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    metrics = {"train_steps": float(trainer.state.global_step), "world_size": float(trainer.args.world_size)}
    if history:
        metrics["train_loss_first"] = float(history[0])
        metrics["train_loss_last"] = float(history[-1])
    return metrics


def pretrain(
    model_dir: Path, corpus_dir: Path, out_dir: Path, cfg: TrainSpec, log: LogFn,
    checkpoints: Path | None = None,
) -> dict[str, float]:
    """Continued pretraining: causal LM on the corpus, packed so that no token is dropped.
    Held-out loss is measured before and after, to show the up-scaled model recovering."""
    check_quantize(cfg)  # before any data is read
    if cfg.processes > 1 or cfg.launcher == "accelerate":
        return _distributed("pretrain", cfg, log, model_dir=model_dir, corpus_dir=corpus_dir,
                            out_dir=out_dir, checkpoints=checkpoints)
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    train_texts, heldout_texts = split_heldout([r["text"] for r in read_rows(corpus_dir)])
    train = Dataset.from_list([{"text": t} for t in train_texts])
    heldout = Dataset.from_list([{"text": t} for t in heldout_texts])
    tokenizer = load_tokenizer(model_dir)
    args = SFTConfig(**trl_args(cfg, out_dir, checkpoints, packing=True, packing_strategy="wrapped",
                                dataset_text_field="text", eval_strategy="no"))
    trainer = SFTTrainer(
        model=_load_trainable(model_dir, cfg), args=args, train_dataset=train, eval_dataset=heldout,
        processing_class=tokenizer, callbacks=[LogMetrics(log)], peft_config=peft_config(cfg),
    )
    before = trainer.evaluate()["eval_loss"]
    log({"heldout_loss": before}, 0)
    resumed = _train(trainer, checkpoints)
    after = trainer.evaluate()["eval_loss"]
    log({"heldout_loss": after}, trainer.state.global_step)
    metrics = {**_finish(trainer, tokenizer, out_dir, model_dir), **resumed}
    return {**metrics, "heldout_loss_before": float(before), "heldout_loss": float(after)}


def sft(
    model_dir: Path, data_dirs: list[Path], out_dir: Path, cfg: TrainSpec, template: str, log: LogFn,
    checkpoints: Path | None = None,
) -> dict[str, float]:
    """Supervised fine-tuning on a mixture of prompt/completion chats; loss on the answer only."""
    check_quantize(cfg)  # before any data is read
    if cfg.processes > 1 or cfg.launcher == "accelerate":
        return _distributed("sft", cfg, log, model_dir=model_dir, data_dirs=data_dirs, out_dir=out_dir,
                            template=template, checkpoints=checkpoints)
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    rows = mixture(data_dirs, cfg.seed)
    tokenizer = load_tokenizer(model_dir)
    tokenizer.chat_template = chat_template(template)
    args = SFTConfig(**trl_args(cfg, out_dir, checkpoints, completion_only_loss=True))
    trainer = SFTTrainer(
        model=_load_trainable(model_dir, cfg), args=args, train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer, callbacks=[LogMetrics(log)], peft_config=peft_config(cfg),
    )
    resumed = _train(trainer, checkpoints)
    return {**_finish(trainer, tokenizer, out_dir, model_dir), **resumed, "rows": float(len(rows))}


def ref_logps_key(model_dir: Path, data_dirs: list[Path], template: str, cfg: TrainSpec) -> str:
    """What reference log-probs depend on: the reference model, the data and its order,
    the chat template and the truncation length (identities from the inputs' manifests)."""
    def identity(d: Path) -> str:
        manifest = read_manifest(d)
        return manifest["fingerprint"] if manifest else str(d.resolve())

    blob = json.dumps([identity(model_dir), [identity(d) for d in data_dirs], chat_template(template),
                       cfg.max_length, cfg.seed])
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def dpo(
    model_dir: Path, data_dirs: list[Path], out_dir: Path, cfg: TrainSpec, beta: float,
    loss_type: str, template: str, log: LogFn, checkpoints: Path | None = None,
    ref_cache: Path | None = None,
) -> dict[str, float]:
    """DPO against the base model as reference. Its log-probs are computed once, up front,
    and kept in `ref_cache` so variants with the same reference and data reuse them."""
    check_quantize(cfg)  # before any data is read
    if cfg.processes > 1 or cfg.launcher == "accelerate":
        return _distributed("dpo", cfg, log, model_dir=model_dir, data_dirs=data_dirs, out_dir=out_dir,
                            beta=beta, loss_type=loss_type, template=template,
                            checkpoints=checkpoints, ref_cache=ref_cache)
    from datasets import Dataset
    from trl import DPOConfig

    rows = mixture(data_dirs, cfg.seed)
    tokenizer = load_tokenizer(model_dir)
    tokenizer.chat_template = chat_template(template)
    args = DPOConfig(**trl_args(cfg, out_dir, checkpoints, beta=beta, loss_type=[loss_type],
                                precompute_ref_log_probs=True))
    cache_file = ref_cache / f"{ref_logps_key(model_dir, data_dirs, template, cfg)}.safetensors" if ref_cache else None
    trainer = _cached_ref_trainer()(
        model=_load_trainable(model_dir, cfg), ref_model=None, args=args,
        train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
        callbacks=[LogMetrics(log)], ref_cache_file=cache_file, peft_config=peft_config(cfg),
    )
    resumed = _train(trainer, checkpoints)
    metrics = {**_finish(trainer, tokenizer, out_dir, model_dir), **resumed,
               "ref_logps_reused": float(trainer.ref_logps_reused)}
    last = next((h for h in reversed(trainer.state.log_history) if "rewards/accuracies" in h), {})
    for key in ("rewards/accuracies", "rewards/margins"):
        if key in last:
            metrics[key.replace("/", "_")] = float(last[key])
    return {**metrics, "rows": float(len(rows))}


@cache
def _cached_ref_trainer():
    """DPOTrainer whose precomputed reference log-probs of the training set are read from,
    or written to, one safetensors file. (TRL caches them only for datasets backed by
    files in its own cache; it gives no hook, hence the subclass.)"""
    from safetensors.torch import load_file, save_file
    from trl import DPOTrainer

    class CachedRefDPOTrainer(DPOTrainer):
        def __init__(self, *args, ref_cache_file: Path | None = None, **kwargs):
            self.ref_cache_file, self.ref_logps_reused = ref_cache_file, False
            super().__init__(*args, **kwargs)

        def _precompute_ref_logps(self, dataset, name, batch_size):
            f = self.ref_cache_file
            if f is None or name != "train":
                return super()._precompute_ref_logps(dataset, name, batch_size)
            if f.is_file():
                logps = load_file(f)
                if len(logps["chosen"]) == len(dataset):
                    self.ref_logps_reused = True
                    return (dataset.add_column("ref_chosen_logps", logps["chosen"].tolist())
                            .add_column("ref_rejected_logps", logps["rejected"].tolist()))
            out = super()._precompute_ref_logps(dataset, name, batch_size)
            f.parent.mkdir(parents=True, exist_ok=True)
            tmp = f.with_name(f".{f.name}.tmp")
            save_file({"chosen": torch.tensor(out["ref_chosen_logps"]),
                       "rejected": torch.tensor(out["ref_rejected_logps"])}, tmp)
            os.replace(tmp, f)
            return out

    return CachedRefDPOTrainer
