"""The pipeline spec: one pydantic model for a whole SOLAR run.

Stages have names; a stage names its inputs by those names. Validation rejects unknown
fields, dangling names, references of the wrong kind, cycles and impossible numbers before
anything runs, and every message names the field it is about.
"""

from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    StringConstraints,
    model_validator,
)

# A stage name becomes part of MLflow run names and report rows, never a path on its own,
# but keep it to characters that are safe everywhere.
Name = Annotated[
    str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9+._-]*$", min_length=1, max_length=64)
]

# The dataset formats the loaders know, and what each becomes once prepared.
FORMATS: dict[str, str] = {
    "text": "text",
    "alpaca": "sft",
    "openorca": "sft",
    "math": "sft",
    "metamathqa": "sft",
    "ultrafeedback": "preference",
    "orca-dpo": "preference",
}
DatasetFormat = Literal["text", "alpaca", "openorca", "math", "metamathqa", "ultrafeedback", "orca-dpo"]
H6Task = Literal["arc", "hellaswag", "mmlu", "truthfulqa", "winogrande", "gsm8k"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TinyModel(Strict):
    """The embedded default: a Mistral-architecture model, randomly initialised."""

    hidden_size: PositiveInt = 128
    intermediate_size: PositiveInt = 256
    num_layers: PositiveInt = 8
    num_heads: PositiveInt = 4
    num_kv_heads: PositiveInt = 2
    vocab_size: int = Field(2048, ge=300, le=65536)
    max_position_embeddings: int = Field(4096, ge=128)
    seed: int = 0

    @model_validator(mode="after")
    def _heads_divide(self) -> TinyModel:
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"base.tiny.hidden_size ({self.hidden_size}) must be divisible by "
                f"base.tiny.num_heads ({self.num_heads})"
            )
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"base.tiny.num_heads ({self.num_heads}) must be divisible by "
                f"base.tiny.num_kv_heads ({self.num_kv_heads})"
            )
        return self


class BaseSpec(Strict):
    """The model to up-scale: `embedded` (the tiny default), a hub id, or a local directory.

    `config` names an architecture config shipped in `solar/configs/` (or a path to a
    config.json) so a hub model can be planned offline before any weight is downloaded.
    """

    name: Name = "base"
    model: str = "embedded"
    config: str | None = None
    revision: str | None = None
    trust_remote_code: bool = False
    tiny: TinyModel = TinyModel()


class UpscaleSpec(Strict):
    """Depth up-scaling: copy A drops its last m layers, copy B its first m; stack A then B."""

    name: Name = "dus"
    base: Name = "base"
    m: NonNegativeInt = 8


class TrainSpec(Strict):
    """Optimisation settings shared by pretraining, SFT and DPO.

    `bf16` and `activation_checkpointing` left as null follow the device: off on CPU (where
    they make training ~10x slower), on for CUDA.
    """

    max_steps: PositiveInt = 20
    learning_rate: PositiveFloat = 2e-4
    batch_size: PositiveInt = 8
    gradient_accumulation_steps: PositiveInt = 1
    max_length: int = Field(256, ge=8)
    warmup_ratio: float = Field(0.0, ge=0.0, lt=1.0)
    lr_scheduler_type: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "cosine"
    weight_decay: float = Field(0.0, ge=0.0)
    seed: int = 42
    logging_steps: PositiveInt = 5
    device: Literal["auto", "cpu", "cuda"] = "auto"
    bf16: bool | None = None
    activation_checkpointing: bool | None = None


class PretrainSpec(Strict):
    """Continued pretraining of the up-scaled model on a text corpus."""

    name: Name = "pretrain"
    base: Name = "dus"
    corpus: Name = "corpus"
    train: TrainSpec = TrainSpec()


class DatasetSpec(Strict):
    """One data source, read in its own schema and normalised.

    `source` is `embedded:<file under solar/embedded/data>`, `hub:<dataset id>`, or a
    local JSONL/JSON/Parquet path.
    """

    name: Name
    format: DatasetFormat
    source: str = Field(min_length=1)
    split: str = "train"
    revision: str | None = None
    cap: PositiveInt | None = None
    seed: int = 0


class MathInstructSpec(Strict):
    """Synth. Math-Instruct: rephrase MATH questions and answers; keep matching answers."""

    kind: Literal["math-instruct"] = "math-instruct"
    name: Name = "math-instruct"
    seed_dataset: Name = "math"
    backend: Literal["offline"] = "offline"
    cap: PositiveInt | None = None
    seed: int = 0


class MathAlignmentSpec(Strict):
    """Synth. Math-Alignment: {prompt: rephrased question, chosen: rephrased answer,
    rejected: original answer}."""

    kind: Literal["math-alignment"] = "math-alignment"
    name: Name = "math-alignment"
    source: Name = "math-instruct"
    cap: PositiveInt | None = None
    seed: int = 0


SynthSpec = Annotated[MathInstructSpec | MathAlignmentSpec, Field(discriminator="kind")]


class SFTSpec(Strict):
    """One SFT variant: a base model and a mixture of instruction datasets."""

    name: Name
    base: Name
    datasets: list[Name] = Field(min_length=1)
    chat_template: str = "solar"
    train: TrainSpec = TrainSpec()


class MergeSpec(Strict):
    """A merge of two or more models: weighted average (`linear`) or `slerp`."""

    name: Name
    method: Literal["linear", "slerp"] = "linear"
    models: list[Name] = Field(min_length=2)
    weights: list[float] | None = None
    t: float | None = Field(None, ge=0.0, le=1.0)
    dtype: Literal["float32", "bfloat16", "float16"] | None = None

    @model_validator(mode="after")
    def _method_args(self) -> MergeSpec:
        where = f"merges[{self.name}]"
        if self.method == "linear":
            if self.t is not None:
                raise ValueError(f"{where}.t: only a slerp merge takes t")
            if self.weights is not None:
                if len(self.weights) != len(self.models):
                    raise ValueError(
                        f"{where}.weights: {len(self.weights)} weights for "
                        f"{len(self.models)} models"
                    )
                if any(w < 0 for w in self.weights) or sum(self.weights) <= 0:
                    raise ValueError(f"{where}.weights: must be >= 0 with a positive sum")
        else:
            if len(self.models) != 2:
                raise ValueError(f"{where}.models: slerp merges exactly 2 models")
            if self.t is None:
                raise ValueError(f"{where}.t: a slerp merge needs t in [0, 1]")
            if self.weights is not None:
                raise ValueError(f"{where}.weights: a slerp merge takes t, not weights")
        if len(set(self.models)) != len(self.models):
            raise ValueError(f"{where}.models: a model is listed twice")
        return self


class DPOSpec(Strict):
    """One DPO variant: a base model (its own reference) and preference datasets."""

    name: Name
    base: Name
    datasets: list[Name] = Field(min_length=1)
    beta: PositiveFloat = 0.1
    loss_type: Literal["sigmoid", "hinge", "ipo", "robust"] = "sigmoid"
    chat_template: str = "solar"
    train: TrainSpec = TrainSpec(learning_rate=5e-6)


class EvalTaskSpec(Strict):
    shots: NonNegativeInt | None = None
    limit: PositiveInt | None = None


def _default_tasks() -> dict[str, EvalTaskSpec]:
    return {t: EvalTaskSpec() for t in ("arc", "hellaswag", "mmlu", "truthfulqa", "winogrande", "gsm8k")}


class EvalSpec(Strict):
    """H6 through lm-evaluation-harness. `models: all` evaluates every model stage."""

    models: list[Name] | Literal["all"] = "all"
    data: str = "embedded:eval"
    tasks: dict[H6Task, EvalTaskSpec] = Field(default_factory=_default_tasks, min_length=1)
    batch_size: PositiveInt = 8
    max_gen_toks: PositiveInt = 256
    seed: int = 1234


class TrackingSpec(Strict):
    """MLflow: `uri` null means $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here."""

    uri: str | None = None
    experiment: str | None = None


class ExecutionSpec(Strict):
    mode: Literal["local", "pools"] = "local"
    artifacts_dir: str = "artifacts"
    max_parallel: PositiveInt = 1


class PipelineSpec(Strict):
    """A whole pipeline: base, DUS, pretraining, data, SFT, merges, DPO, eval."""

    name: Name
    description: str = ""
    base: BaseSpec = BaseSpec()
    upscale: UpscaleSpec | None = UpscaleSpec()
    pretrain: PretrainSpec | None = None
    datasets: list[DatasetSpec] = []
    synthesis: list[SynthSpec] = []
    sft: list[SFTSpec] = []
    merges: list[MergeSpec] = []
    dpo: list[DPOSpec] = []
    eval: EvalSpec | None = EvalSpec()
    tracking: TrackingSpec = TrackingSpec()
    execution: ExecutionSpec = ExecutionSpec()

    @model_validator(mode="after")
    def _references(self) -> PipelineSpec:
        check_references(self)
        check_upscale(self)
        return self


# ---------------------------------------------------------------------------------------
# Cross-stage checks


def stage_kinds(spec: PipelineSpec) -> dict[str, tuple[str, str]]:
    """Map each stage name to (kind, field path), raising on a duplicate name."""
    entries: list[tuple[str, str, str]] = [(spec.base.name, "base", "base.name")]
    if spec.upscale:
        entries.append((spec.upscale.name, "upscale", "upscale.name"))
    if spec.pretrain:
        entries.append((spec.pretrain.name, "pretrain", "pretrain.name"))
    entries += [(d.name, "data", f"datasets[{i}].name") for i, d in enumerate(spec.datasets)]
    entries += [(s.name, s.kind, f"synthesis[{i}].name") for i, s in enumerate(spec.synthesis)]
    entries += [(s.name, "sft", f"sft[{i}].name") for i, s in enumerate(spec.sft)]
    entries += [(m.name, "merge", f"merges[{i}].name") for i, m in enumerate(spec.merges)]
    entries += [(d.name, "dpo", f"dpo[{i}].name") for i, d in enumerate(spec.dpo)]
    kinds: dict[str, tuple[str, str]] = {}
    for name, kind, field in entries:
        if name in kinds:
            raise ValueError(f"{field}: stage name {name!r} is already used by {kinds[name][1]}")
        kinds[name] = (kind, field)
    return kinds


MODEL_KINDS = ("base", "upscale", "pretrain", "sft", "merge", "dpo")


def data_format(spec: PipelineSpec, name: str) -> str | None:
    """What a data-producing stage yields once prepared: text, sft or preference."""
    for d in spec.datasets:
        if d.name == name:
            return FORMATS[d.format]
    for s in spec.synthesis:
        if s.name == name:
            return "sft" if s.kind == "math-instruct" else "preference"
    return None


def dependencies(spec: PipelineSpec) -> dict[str, list[tuple[str, str]]]:
    """Each stage's inputs as (referenced name, field path), in a stable order."""
    deps: dict[str, list[tuple[str, str]]] = {spec.base.name: []}
    if spec.upscale:
        deps[spec.upscale.name] = [(spec.upscale.base, "upscale.base")]
    if spec.pretrain:
        deps[spec.pretrain.name] = [
            (spec.pretrain.base, "pretrain.base"),
            (spec.pretrain.corpus, "pretrain.corpus"),
        ]
    for d in spec.datasets:
        deps[d.name] = []
    for i, s in enumerate(spec.synthesis):
        ref = s.seed_dataset if s.kind == "math-instruct" else s.source
        field = "seed_dataset" if s.kind == "math-instruct" else "source"
        deps[s.name] = [(ref, f"synthesis[{i}].{field}")]
    for group, stages in (("sft", spec.sft), ("dpo", spec.dpo)):
        for i, s in enumerate(stages):
            deps[s.name] = [(s.base, f"{group}[{i}].base")] + [
                (d, f"{group}[{i}].datasets[{j}]") for j, d in enumerate(s.datasets)
            ]
    for i, m in enumerate(spec.merges):
        deps[m.name] = [(x, f"merges[{i}].models[{j}]") for j, x in enumerate(m.models)]
    return deps


def check_references(spec: PipelineSpec) -> None:
    kinds = stage_kinds(spec)
    wanted = {  # field-path suffix -> what the reference must be
        "upscale.base": "model",
        "pretrain.base": "model",
        "pretrain.corpus": "text",
    }
    for refs in dependencies(spec).values():
        for ref, field in refs:
            if ref not in kinds:
                raise ValueError(f"{field}: {ref!r} names no stage; stages are {sorted(kinds)}")
            kind = kinds[ref][0]
            need = wanted.get(field)
            if need is None:
                if field.endswith(".base") or field.startswith("merges["):
                    need = "model"
                elif field.startswith("sft["):
                    need = "sft"
                elif field.startswith("dpo["):
                    need = "preference"
                elif ".seed_dataset" in field:
                    need = "math"
                else:  # math-alignment source
                    need = "math-instruct"
            if need == "model":
                ok = kind in MODEL_KINDS
            elif need in ("text", "sft", "preference"):
                ok = data_format(spec, ref) == need
            elif need == "math":
                ok = any(d.name == ref and d.format == "math" for d in spec.datasets)
            else:
                ok = kind == need
            if not ok:
                raise ValueError(f"{field}: {ref!r} is a {kind} stage, but a {need} stage is needed here")
    if spec.eval and spec.eval.models != "all":
        for j, ref in enumerate(spec.eval.models):
            if kinds.get(ref, ("",))[0] not in MODEL_KINDS:
                raise ValueError(f"eval.models[{j}]: {ref!r} names no model stage")
    topological_order(spec)


def base_layer_count(base: BaseSpec) -> int | None:
    """The base model's layer count where it is known offline, else None."""
    if base.model == "embedded":
        return base.tiny.num_layers
    config = resolve_config_path(base)
    if config is None:
        return None
    return int(json.loads(config.read_text())["num_hidden_layers"])


def resolve_config_path(base: BaseSpec) -> Path | None:
    """The config.json that describes the base: shipped by name, a path, or a local model."""
    if base.config:
        shipped = resources.files("solar") / "configs" / f"{base.config}.json"
        path = Path(str(shipped)) if shipped.is_file() else Path(base.config)
        if not path.is_file():
            raise ValueError(f"base.config: {base.config!r} is neither a shipped config nor a file")
        return path
    local = Path(base.model) / "config.json"
    return local if local.is_file() else None


def check_upscale(spec: PipelineSpec) -> None:
    if spec.upscale is None or spec.upscale.base != spec.base.name:
        return
    n = base_layer_count(spec.base)
    if n is not None and 2 * spec.upscale.m >= n:
        raise ValueError(
            f"upscale.m: m={spec.upscale.m} must be < n/2 for a base of n={n} layers "
            f"(the up-scaled model has 2(n-m) layers)"
        )


def topological_order(spec: PipelineSpec) -> list[str]:
    """Stage names in an order where every input comes before its consumer."""
    deps = {name: [ref for ref, _ in refs] for name, refs in dependencies(spec).items()}
    order: list[str] = []
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = path[path.index(name):] + [name]
            raise ValueError(f"cycle between stages: {' -> '.join(cycle)}")
        state[name] = 1
        for ref in deps[name]:
            visit(ref, path + [name])
        state[name] = 2
        order.append(name)

    for name in deps:
        visit(name, [])
    return order


# ---------------------------------------------------------------------------------------
# Presets and overrides

PRESETS = ("tiny", "paper-ablation", "solar-10.7b")


def preset_path(name: str) -> Path:
    path = resources.files("solar") / "presets" / f"{name}.yaml"
    if not path.is_file():
        raise ValueError(f"unknown preset {name!r}; presets are {', '.join(PRESETS)}")
    return Path(str(path))


def load_spec(
    preset: str | None = None, path: str | os.PathLike | None = None, overrides: list[str] = ()
) -> PipelineSpec:
    """Read a preset or a YAML file, apply `key.path=value` overrides, and validate."""
    if (preset is None) == (path is None):
        raise ValueError("give exactly one of a preset name or a spec file")
    source = preset_path(preset) if preset else Path(path)
    data = yaml.safe_load(source.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{source}: a spec is a YAML mapping")
    for item in overrides:
        apply_override(data, item)
    return PipelineSpec.model_validate(data)


def apply_override(data: dict[str, Any], item: str) -> None:
    """Set `a.b.c=value` in a spec dict. A list element is picked by index or by its name
    (`dpo.dpo-v1.beta=0.2`); the value is parsed as YAML."""
    key, sep, raw = item.partition("=")
    if not sep or not key:
        raise ValueError(f"override {item!r}: expected key.path=value")
    parts = key.split(".")
    node: Any = data
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        where = ".".join(parts[: depth + 1])
        if isinstance(node, list):
            idx = _list_index(node, part, where)
            if last:
                node[idx] = yaml.safe_load(raw)
            else:
                node = node[idx]
        elif isinstance(node, dict):
            if last:
                node[part] = yaml.safe_load(raw)
            else:
                node = node.setdefault(part, {})
        else:
            raise ValueError(f"override {item!r}: {where} is not a mapping or a list")


def _list_index(node: list, part: str, where: str) -> int:
    if part.lstrip("-").isdigit():
        idx = int(part)
        if not -len(node) <= idx < len(node):
            raise ValueError(f"override {where}: index out of range (list has {len(node)})")
        return idx
    for idx, item in enumerate(node):
        if isinstance(item, dict) and item.get("name") == part:
            return idx
    raise ValueError(f"override {where}: no element named {part!r}")
