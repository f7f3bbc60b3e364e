"""The pipeline spec: one pydantic model for a whole SOLAR run.

Stages have names; a stage names its inputs by those names. Validation rejects unknown
fields, dangling names, references of the wrong kind, cycles and impossible numbers before
anything runs, and every message names the field it is about.
"""

from __future__ import annotations

import json
import math
import os
import re
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    StringConstraints,
    ValidationError,
    model_validator,
)

from solar.artifacts import Verify

# A stage name becomes part of MLflow run names and report rows, never a path on its own,
# but keep it to characters that are safe everywhere: no "/", no "..", no trailing ".".
Name = Annotated[
    str,
    StringConstraints(
        pattern=r"^[a-z0-9][a-z0-9+_-]*(\.[a-z0-9+_-]+)*$", min_length=1, max_length=64
    ),
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
    "custom-sft": "sft",
    "custom-preference": "preference",
}
DatasetFormat = Literal[
    "text", "alpaca", "openorca", "math", "metamathqa", "ultrafeedback", "orca-dpo",
    "custom-sft", "custom-preference",
]
# The columns a custom format maps (required, optional).
CUSTOM_COLUMNS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "custom-sft": (("prompt", "completion"), ("system",)),
    "custom-preference": (("prompt", "chosen", "rejected"), ("system",)),
}
# SOLAR Table 8: the OpenOrca FLAN tasks filtered out as overlapping the H6 benchmarks.
TABLE8_TASKS: tuple[str, ...] = (
    "task228_arc_answer_generation_easy", "ai2_arc/ARC-Challenge:1.0.0", "ai2_arc/ARC-Easy:1.0.0",
    "task229_arc_answer_generation_hard", "hellaswag:1.1.0", "task1389_hellaswag_completion",
    "cot_gsm8k", "cot_gsm8k_ii", "drop:2.0.0", "winogrande:1.1.0",
)
H6Task = Literal["arc", "hellaswag", "mmlu", "truthfulqa", "winogrande", "gsm8k"]


def _check_source(value: str) -> str:
    """An `embedded:` path must stay inside solar/embedded/data and a `hub:` source needs an
    id: otherwise the mistake shows only when the stage runs, or reads outside the package."""
    scheme, sep, rest = value.partition(":")
    if sep and scheme in ("embedded", "hub"):
        if not rest.strip():
            raise ValueError(f"{value!r}: {scheme}: needs a {'path' if scheme == 'embedded' else 'dataset id'}")
        if scheme == "embedded" and (rest.startswith("/") or ".." in Path(rest).parts):
            raise ValueError(f"{value!r} points outside solar/embedded/data")
    return value


# A data location: `embedded:<path under solar/embedded/data>`, `hub:<id>`, or a local path.
Source = Annotated[str, Field(min_length=1), AfterValidator(_check_source)]


class Strict(BaseModel):
    # inf and nan pass `gt=0` bounds (nan fails them, inf does not) and would only fail
    # mid-training or as a merged model of nan: refuse both in every float field. Errors
    # name the field and what is wrong but do not echo the value: it may be a secret.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, hide_input_in_errors=True)


# A URL written with `user:password@` or `token@`: refused in specs and run parameters,
# since both are stored (Prefect keeps a flow run's parameters, MLflow the spec).
USERINFO = r"[^/@\s]+@"
URL_USERINFO = re.compile(rf"(?<=://){USERINFO}")
NO_USERINFO = rf"^(?![A-Za-z][A-Za-z0-9+.-]*://{USERINFO})"  # the same rule, for JSON schemas


def no_credentials(url: str) -> str:
    if URL_USERINFO.search(url):
        raise ValueError("credentials in the URL would be stored with the run; give them in the "
                         "environment: MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD or "
                         "MLFLOW_TRACKING_TOKEN for MLflow, the variable named by api_key_env for a generator")
    return url


class _NoUserinfoSchema:
    def __get_pydantic_json_schema__(self, core_schema, handler):
        schema = handler(core_schema)
        schema["pattern"] = NO_USERINFO  # so the Prefect server refuses it before storing it
        return schema


Url = Annotated[str, AfterValidator(no_credentials), _NoUserinfoSchema()]


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
    # Run the custom modeling code a model's auto_map names (off: never imported).
    trust_remote_code: bool = False
    # Read pickled weights (*.bin, *.pt, ...) of a model without safetensors, and then only
    # with torch.load(weights_only=True); off: such a model is refused (see solar/checks.py).
    allow_pickle: bool = False
    tiny: TinyModel = TinyModel()


class UpscaleSpec(Strict):
    """Depth up-scaling: copy A drops its last m layers, copy B its first m; stack A then B.

    `ranges` is the general form, instead of m: [start, end) layer ranges stacked in order
    (m is [[0, n-m], [m, n]]). Output is safetensors shards of at most `shard_size_mb`."""

    name: Name = "dus"
    base: Name = "base"
    m: NonNegativeInt | None = None
    ranges: list[tuple[NonNegativeInt, PositiveInt]] | None = Field(None, min_length=1)
    shard_size_mb: PositiveInt = 1000

    @model_validator(mode="before")
    @classmethod
    def _default_m(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("m") is None and data.get("ranges") is None:
            data = {**data, "m": 8}
        return data

    @model_validator(mode="after")
    def _m_or_ranges(self) -> UpscaleSpec:
        if self.m is not None and self.ranges is not None:
            raise ValueError("upscale: give exactly one of m or ranges")
        for i, (start, end) in enumerate(self.ranges or []):
            if start >= end:
                raise ValueError(f"upscale.ranges[{i}]: [{start}, {end}] needs start < end")
        return self


class LoraSpec(Strict):
    """LoRA adapters (peft) instead of full fine-tuning; merged back into full weights
    before the stage's model is saved, so merges and evals see an ordinary model."""

    r: PositiveInt = 16
    alpha: PositiveFloat = 32.0
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    target_modules: list[str] = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    # QLoRA: the frozen base weights loaded in 4-bit NF4 (double quantisation, bf16 compute)
    # or 8-bit through bitsandbytes. Needs a CUDA GPU and bitsandbytes, checked when the
    # stage starts, before any data is read.
    quantize: Literal["4bit", "8bit"] | None = None


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
    # Save the full training state every N steps in the stage's work dir; a rerun after a
    # crash resumes from the newest checkpoint. null: no checkpoints.
    save_steps: PositiveInt | None = 100
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # Data-parallel processes on this machine, started with torchrun (DDP; gloo on CPU).
    processes: PositiveInt = 1
    # `accelerate` starts the ranks with `accelerate launch --config_file accelerate_config`
    # instead (e.g. deployments/accelerate/fsdp.yaml or deepspeed-zero3.yaml on GPU pools).
    launcher: Literal["torchrun", "accelerate"] = "torchrun"
    accelerate_config: str | None = None
    lora: LoraSpec | None = None
    bf16: bool | None = None
    activation_checkpointing: bool | None = None

    @model_validator(mode="after")
    def _launcher(self) -> TrainSpec:
        if self.launcher == "accelerate" and not self.accelerate_config:
            raise ValueError("accelerate_config: launcher 'accelerate' needs an accelerate config file "
                             "(e.g. deployments/accelerate/ddp.yaml)")
        if self.launcher != "accelerate" and self.accelerate_config:
            raise ValueError("accelerate_config: only read with launcher: accelerate")
        if self.lora and self.lora.quantize and self.device == "cpu":
            raise ValueError(f"lora.quantize: {self.lora.quantize} loading (bitsandbytes) needs a CUDA GPU, "
                             "and device is 'cpu'")
        return self


class PretrainSpec(Strict):
    """Continued pretraining of the up-scaled model on a text corpus."""

    name: Name = "pretrain"
    base: Name = "dus"
    corpus: Name = "corpus"
    train: TrainSpec = TrainSpec()


class DatasetSpec(Strict):
    """One data source, read in its own schema and normalised.

    `source` is `embedded:<file under solar/embedded/data>`, `hub:<dataset id>`, or a
    local JSONL/JSON/Parquet path. `custom-sft` / `custom-preference` read any file whose
    `columns` map {prompt, completion} / {prompt, chosen, rejected} (and optionally system)
    to its column names. `task_column` names the column holding a row's task name (for the
    Table 8 filter of `decontamination`). A row that does not fit is an error naming the
    file, row and column, or with `on_bad_row: skip` dropped and counted in the metrics.
    """

    name: Name
    format: DatasetFormat
    source: Source
    split: str = "train"
    revision: str | None = None
    cap: PositiveInt | None = None
    seed: int = 0
    columns: dict[str, str] | None = None
    task_column: str | None = None
    on_bad_row: Literal["error", "skip"] = "error"

    @model_validator(mode="after")
    def _columns(self) -> DatasetSpec:
        where = f"datasets[{self.name}]"
        if self.format not in CUSTOM_COLUMNS:
            if self.columns is not None:
                raise ValueError(f"{where}.columns: only custom-sft/custom-preference take columns")
        else:
            required, optional = CUSTOM_COLUMNS[self.format]
            given = set(self.columns or {})
            if missing := [c for c in required if c not in given]:
                raise ValueError(f"{where}.columns: {self.format} needs a column for {missing}")
            if unknown := sorted(given - set(required) - set(optional)):
                raise ValueError(f"{where}.columns: unknown roles {unknown}")
        if self.task_column is not None and self.format == "text":
            raise ValueError(f"{where}.task_column: a text corpus has no task names")
        return self


class MathInstructSpec(Strict):
    """Synth. Math-Instruct: rephrase MATH questions and answers; keep matching answers."""

    kind: Literal["math-instruct"] = "math-instruct"
    name: Name = "math-instruct"
    seed_dataset: Name = "math"
    backend: Literal["offline", "openai", "transformers"] = "offline"
    cap: PositiveInt | None = None
    seed: int = 0
    # LLM backends: `openai` is any OpenAI-compatible chat-completions server (vLLM, TGI):
    # `base_url` up to /v1, `model`, and the API key read from the environment variable
    # named by `api_key_env` (never stored or logged). `transformers` loads `model` locally.
    base_url: Url | None = None
    model: str | None = None
    api_key_env: str | None = None
    max_concurrency: PositiveInt = 4
    max_retries: NonNegativeInt = 5
    backoff: float = Field(1.0, ge=0.0)  # seconds before the first retry, doubling after
    timeout: PositiveFloat = 60.0
    temperature: float = Field(0.7, ge=0.0)
    max_tokens: PositiveInt = 1024

    @model_validator(mode="after")
    def _backend_args(self) -> MathInstructSpec:
        where = f"synthesis[{self.name}]"
        if self.backend == "openai" and not (self.base_url and self.model):
            raise ValueError(f"{where}.base_url: the openai backend needs base_url and model")
        if self.backend == "transformers" and not self.model:
            raise ValueError(f"{where}.model: the transformers backend needs a model")
        return self


class MathAlignmentSpec(Strict):
    """Synth. Math-Alignment: {prompt: rephrased question, chosen: rephrased answer,
    rejected: original answer}."""

    kind: Literal["math-alignment"] = "math-alignment"
    name: Name = "math-alignment"
    source: Name = "math-instruct"
    cap: PositiveInt | None = None
    seed: int = 0


SynthSpec = Annotated[MathInstructSpec | MathAlignmentSpec, Field(discriminator="kind")]


class DecontamSpec(Strict):
    """Decontamination of training data against the H6 eval sets, one `decontam-<dataset>`
    stage per cleaned dataset, between it and its SFT/DPO/pretrain consumers (which keep
    naming the dataset). A row is removed if its `task_column` value is one of `flan_tasks`
    (Table 8), or if at least `threshold` of some eval question's word `ngram`-grams occur
    in it (an eval question shorter than `ngram` words but at least `min_tokens` counts as
    one n-gram). `datasets: all` cleans every dataset an SFT or DPO stage consumes."""

    datasets: list[Name] | Literal["all"] = "all"
    eval_data: Source = "embedded:eval"
    ngram: PositiveInt = 13
    threshold: float = Field(0.5, gt=0.0, le=1.0)
    min_tokens: PositiveInt = 8
    flan_tasks: list[str] = list(TABLE8_TASKS)
    examples: NonNegativeInt = 3


class SFTSpec(Strict):
    """One SFT variant: a base model and a mixture of instruction datasets."""

    name: Name
    base: Name
    datasets: list[Name] = Field(min_length=1)
    chat_template: str = "solar"
    train: TrainSpec = TrainSpec()


class MergeSpec(Strict):
    """A merge of two or more models: weighted average (`linear`, the paper's), `slerp` at
    t, or `task_arithmetic`, `ties`, `dare` on task vectors relative to the model `base`.

    `weights` weigh the models (normalised for linear; task-vector weights, default 1, for
    the base methods); `density` is the fraction ties keeps and dare keeps in expectation;
    `scale` (lambda) multiplies the merged task vector; `seed` fixes dare's drop masks.
    `weights_sum`, if given, is the sum the weights must have: a check, not a parameter (a
    hand-edited [0.6, 0.6] meant to sum to 1 fails here), so it is left out of dumps and
    fingerprints; it applies to the candidates' weights too.
    `tokenizer_policy`: `strict` refuses inputs whose tokenizers differ in vocabulary,
    special tokens or chat template; `first` takes the first model's when every tokenizer
    has as many tokens, else refuses. Output is float tensors in `dtype` (default:
    the first model's), in safetensors shards of at most `shard_size_mb`."""

    name: Name
    method: Literal["linear", "slerp", "task_arithmetic", "ties", "dare"] = "linear"
    models: list[Name] = Field(min_length=2)
    base: Name | None = None
    weights: list[float] | None = None
    weights_sum: float | None = Field(None, exclude=True)
    t: float | None = Field(None, ge=0.0, le=1.0)
    density: float | None = Field(None, gt=0.0, le=1.0)
    scale: PositiveFloat | None = None
    seed: int | None = None
    dtype: Literal["float32", "bfloat16", "float16"] | None = None
    tokenizer_policy: Literal["strict", "first"] = "strict"
    shard_size_mb: PositiveInt = 1000
    # A candidate grid (the paper's Table 7): each entry overrides method/weights/t/...
    # of this merge; every candidate is built and evaluated, and the best by `select_by`
    # becomes this stage's model, the one downstream stages use.
    candidates: list[dict[str, Any]] | None = Field(None, min_length=2)
    select_by: Literal["h6", "arc", "hellaswag", "mmlu", "truthfulqa", "winogrande", "gsm8k"] = "h6"

    def candidate(self, i: int) -> MergeSpec:
        """The i-th candidate (from 1) as a plain merge."""
        data = self.model_dump(exclude={"candidates", "select_by"})
        data.update(self.candidates[i - 1], name=f"{self.name}.c{i}")
        if data.get("weights") is not None:
            data["weights_sum"] = self.weights_sum
        return MergeSpec.model_validate(data)

    @model_validator(mode="after")
    def _candidates(self) -> MergeSpec:
        for i, cand in enumerate(self.candidates or [], 1):
            unknown = set(cand) - {"method", "weights", "t", "density", "scale", "seed", "base", "dtype"}
            if unknown:
                raise ValueError(f"merges[{self.name}].candidates[{i - 1}]: cannot override {sorted(unknown)}")
            try:
                self.candidate(i)
            except ValidationError as e:
                raise ValueError(f"merges[{self.name}].candidates[{i - 1}]: {e.errors()[0]['msg']}") from None
        return self

    @model_validator(mode="after")
    def _method_args(self) -> MergeSpec:
        where = f"merges[{self.name}]"
        based = self.method in ("task_arithmetic", "ties", "dare")
        if self.t is not None and self.method != "slerp":
            raise ValueError(f"{where}.t: only a slerp merge takes t")
        if self.weights is not None and len(self.weights) != len(self.models):
            raise ValueError(f"{where}.weights: {len(self.weights)} weights for {len(self.models)} models")
        if based and self.base is None:
            raise ValueError(f"{where}.base: a {self.method} merge needs the base model its task vectors are relative to")
        if not based and self.base is not None:
            raise ValueError(f"{where}.base: a {self.method} merge takes no base")
        if not based and self.scale is not None:
            raise ValueError(f"{where}.scale: only task_arithmetic, ties and dare take scale")
        if self.base is not None and self.base in self.models:
            raise ValueError(f"{where}.base: {self.base!r} is also one of the models")
        if self.method in ("ties", "dare") and self.density is None:
            raise ValueError(f"{where}.density: a {self.method} merge needs density in (0, 1]")
        if self.method not in ("ties", "dare") and self.density is not None:
            raise ValueError(f"{where}.density: only ties and dare take density")
        if self.method != "dare" and self.seed is not None:
            raise ValueError(f"{where}.seed: only a dare merge takes seed")
        if self.weights_sum is not None and self.weights is None and not self.candidates:
            raise ValueError(f"{where}.weights_sum: declared, but the merge gives no weights")
        if self.weights_sum is not None and not math.isclose(
            sum(self.weights), self.weights_sum, rel_tol=1e-9, abs_tol=1e-6
        ):
            raise ValueError(
                f"{where}.weights: {self.weights} sum to {sum(self.weights):g}, "
                f"but weights_sum declares {self.weights_sum:g}"
            )
        if self.method == "linear" and self.weights is not None:
            if any(w < 0 for w in self.weights) or sum(self.weights) <= 0:
                raise ValueError(f"{where}.weights: must be >= 0 with a positive sum")
        if self.method == "slerp":
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
    """One DPO variant: a base model (its own reference) and preference datasets.

    With `sdpo`, the datasets are aligned on in steps, in the order listed (sDPO): step t
    trains on dataset t, starting from and referenced to the model of step t-1. Each step
    is its own cached stage (`<name>.step<t>`, the last one keeps `name`), so adding a
    step reuses the earlier ones."""

    name: Name
    base: Name
    datasets: list[Name] = Field(min_length=1)
    sdpo: bool = False
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
    """H6 through lm-evaluation-harness. `models: all` evaluates every model stage.
    `data`: `embedded:eval` runs solar/eval_tasks over the embedded sets; `hub` runs the
    harness's registered leaderboard tasks on their hub datasets or, with
    `dataset_overrides` (`embedded:eval` or a local directory, one subdirectory per
    benchmark in the hub schemas), on those local files: air-gapped machines and tests."""

    models: list[Name] | Literal["all"] = "all"
    data: Source = "embedded:eval"
    dataset_overrides: Source | None = None
    tasks: dict[H6Task, EvalTaskSpec] = Field(default_factory=_default_tasks, min_length=1)
    batch_size: PositiveInt = 8
    max_gen_toks: PositiveInt = 256
    seed: int = 1234
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    chat_template: bool = False  # render prompts with the model's chat template (harness --apply_chat_template)
    # A text dataset whose held-out split (see solar/perplexity.py) every model stage is
    # scored on: base, up-scaled and pretrained models side by side show the DUS story.
    perplexity_corpus: Name | None = None

    @property
    def is_estimate(self) -> bool:
        """Scores on document subsets (any task `limit`) are screening estimates, not the
        leaderboard's numbers; reports say so wherever they show them."""
        return any(t.limit is not None for t in self.tasks.values())

    @model_validator(mode="after")
    def _overrides_need_hub(self) -> EvalSpec:
        if self.dataset_overrides is not None and self.data != "hub":
            raise ValueError(
                f"eval.dataset_overrides: only with eval.data: hub (data is {self.data!r})"
            )
        return self


class TrackingSpec(Strict):
    """MLflow: `uri` null means $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here."""

    uri: Url | None = None
    experiment: str | None = None
    # The model stage to register in the MLflow model registry at the end of a run, and
    # the registered model's name (default: "<pipeline>-<stage>").
    register_stage: Name | None = None
    registered_name: str | None = None
    # Extra tags on the pipeline's parent run (a sweep tags each point with its values).
    tags: dict[str, str] = {}


class ExecutionSpec(Strict):
    mode: Literal["local", "pools"] = "local"
    artifacts_dir: str = Field("artifacts", min_length=1)  # "" would build stages into the cwd
    max_parallel: PositiveInt = 1
    # How a cached artifact is checked before reuse: `fast` compares each file's size and
    # mtime with its manifest (a stat per file); `hash` re-hashes every file on every hit,
    # catching even a same-size change with its mtime put back (see solar/artifacts.py).
    verify: Verify = "fast"


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
    decontamination: DecontamSpec | None = None
    eval: EvalSpec | None = EvalSpec()
    tracking: TrackingSpec = TrackingSpec()
    execution: ExecutionSpec = ExecutionSpec()

    @model_validator(mode="after")
    def _references(self) -> PipelineSpec:
        check_references(self)
        check_upscale(self)
        check_decontamination(self)
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
# The names the planner gives the stages it adds (eval-<model>, ppl-<model>, sDPO steps
# <dpo>.step<t>, merge candidates <merge>.c<i>): a spec's own stage may not take one, or
# two stages of the plan would share a name. decontam-<dataset> is checked where known.
GENERATED_NAME = re.compile(r"^(eval|ppl)-|\.(step|c)\d+$")


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
        if m.base is not None:  # last, so a merge's first input is still its first model
            deps[m.name].append((m.base, f"merges[{i}].base"))
    return deps


def check_references(spec: PipelineSpec) -> None:
    kinds = stage_kinds(spec)
    for name, (_, field) in kinds.items():
        if GENERATED_NAME.search(name):
            raise ValueError(
                f"{field}: {name!r} has the form of a name the planner gives its own stages "
                "(eval-*, ppl-*, *.step<N>, *.c<N>)"
            )
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
    for i, m in enumerate(spec.merges):
        if m.candidates and spec.eval is None:
            raise ValueError(f"merges[{i}].candidates: selecting a candidate needs an eval section")
    stage = spec.tracking.register_stage
    if stage is not None and kinds.get(stage, ("",))[0] not in MODEL_KINDS:
        raise ValueError(f"tracking.register_stage: {stage!r} names no model stage")
    if spec.eval and spec.eval.perplexity_corpus is not None:
        ref = spec.eval.perplexity_corpus
        if data_format(spec, ref) != "text":
            raise ValueError(f"eval.perplexity_corpus: {ref!r} is not a text dataset")
    if spec.eval and spec.eval.models != "all":
        for j, ref in enumerate(spec.eval.models):
            if kinds.get(ref, ("",))[0] not in MODEL_KINDS:
                raise ValueError(f"eval.models[{j}]: {ref!r} names no model stage")
            if ref in spec.eval.models[:j]:
                raise ValueError(f"eval.models[{j}]: {ref!r} is listed twice")
    topological_order(spec)


DECONTAM_PREFIX = "decontam-"


def decontam_targets(spec: PipelineSpec) -> dict[str, str]:
    """Each dataset to clean -> the name of its decontam stage (empty without the section)."""
    dc = spec.decontamination
    if dc is None:
        return {}
    if dc.datasets == "all":
        names = {d for s in (*spec.sft, *spec.dpo) for d in s.datasets}
    else:
        names = set(dc.datasets)
    return {n: DECONTAM_PREFIX + n for n in topological_order(spec) if n in names}


def check_decontamination(spec: PipelineSpec) -> None:
    if spec.decontamination is None:
        return
    kinds = stage_kinds(spec)
    if spec.decontamination.datasets != "all":
        for j, ref in enumerate(spec.decontamination.datasets):
            if data_format(spec, ref) is None:
                raise ValueError(f"decontamination.datasets[{j}]: {ref!r} names no dataset")
    for target, stage in decontam_targets(spec).items():
        if stage in kinds:
            raise ValueError(
                f"{kinds[stage][1]}: stage name {stage!r} is taken by the decontam stage of {target!r}"
            )


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
    if n is not None and spec.upscale.m is not None and 2 * spec.upscale.m >= n:
        raise ValueError(
            f"upscale.m: m={spec.upscale.m} must be < n/2 for a base of n={n} layers "
            f"(the up-scaled model has 2(n-m) layers)"
        )
    for i, (start, end) in enumerate(spec.upscale.ranges or []):
        if n is not None and end > n:
            raise ValueError(f"upscale.ranges[{i}]: [{start}, {end}] goes past the base's n={n} layers")


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
    try:
        data = yaml.load(source.read_text(), Loader=_UniqueKeyLoader)
    except yaml.YAMLError as e:
        raise ValueError(f"{source}: not YAML: {e}") from None
    except DuplicateKey as e:
        raise ValueError(f"{source}: {e}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{source}: a spec is a YAML mapping")
    return spec_from_dict(data, overrides)


def spec_from_dict(data: dict[str, Any], overrides: list[str] = ()) -> PipelineSpec:
    """Apply `key.path=value` overrides to a spec dict (in place), then validate it."""
    for item in overrides:
        apply_override(data, item)
    return PipelineSpec.model_validate(data)


class DuplicateKey(ValueError):
    """A YAML mapping with the same key twice (kept apart from YAMLError, which it is not)."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """safe_load keeps the last of two equal keys, so a spec with two `sft:` sections would
    silently lose the first: this loader refuses it, naming the key and its line."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<:` may override, by design
                continue
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise DuplicateKey(f"line {key_node.start_mark.line + 1}: duplicate key {key!r}")
            seen.add(key)
        return super().construct_mapping(node, deep)


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
