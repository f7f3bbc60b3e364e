"""Turn a validated spec into the DAG of stages, each with its fingerprint.

A stage's fingerprint hashes its kind, its normalised parameters, its inputs' fingerprints
and the source of the library code that builds it. It is known before anything runs, so
`solar plan` can say which stages are already built, and a changed DPO beta changes the
fingerprints of that DPO stage and what depends on it, nothing upstream.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from solar import __version__
from solar.spec import MODEL_KINDS, PipelineSpec, decontam_targets, dependencies, topological_order

SOLAR_DIR = Path(__file__).resolve().parent

# The library modules whose source each stage kind's output depends on.
KIND_MODULES: dict[str, tuple[str, ...]] = {
    "base": ("model.py",),
    "upscale": ("dus.py", "tensorio.py", "model.py"),
    "pretrain": ("train.py", "data.py"),
    "data": ("data.py",),
    "math-instruct": ("synth.py", "data.py"),
    "math-alignment": ("synth.py", "data.py"),
    "decontam": ("decontam.py", "data.py"),
    "sft": ("train.py", "data.py"),
    "merge": ("merge.py", "tensorio.py", "model.py"),
    "select": ("selection.py",),
    "dpo": ("train.py", "data.py"),
    "eval": ("evaluate.py",),
    "perplexity": ("perplexity.py", "model.py"),
}


@dataclass(frozen=True)
class Stage:
    """One node of the DAG: what to build, from which inputs, under which identity."""

    name: str
    kind: str
    inputs: tuple[str, ...]
    params: dict[str, Any] = field(hash=False)
    fingerprint: str

    @property
    def is_model(self) -> bool:
        return self.kind in MODEL_KINDS or self.kind == "select"


@cache
def code_version(kind: str) -> str:
    """Hash of the library version and the source files a stage kind is built by."""
    h = hashlib.sha256(__version__.encode())
    for name in KIND_MODULES[kind]:
        path = SOLAR_DIR / name
        h.update(name.encode())
        h.update(path.read_bytes() if path.exists() else b"")
    if kind == "eval":
        for path in sorted((SOLAR_DIR / "eval_tasks").glob("*")):
            if path.is_file():
                h.update(path.read_bytes())
    return h.hexdigest()[:16]


@cache
def file_digest(path: str) -> str:
    """sha256 of a data file, so an edited local or shipped file changes the fingerprint."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def fingerprint(kind: str, params: dict[str, Any], input_fps: list[str]) -> str:
    payload = {"kind": kind, "params": params, "inputs": input_fps, "code": code_version(kind)}
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def plan(spec: PipelineSpec) -> list[Stage]:
    """All stages of the pipeline in dependency order, evaluation stages last."""
    params = stage_params(spec)
    deps = dependencies(spec)
    cleaned = decontam_targets(spec)  # dataset -> its decontam stage, which trainers read
    stepwise = {d.name for d in spec.dpo if d.sdpo and len(d.datasets) > 1}
    grids = {m.name: m for m in spec.merges if m.candidates}
    eval_p = eval_params(spec) if spec.eval else {}
    fps: dict[str, str] = {}
    stages: list[Stage] = []
    for name in topological_order(spec):
        kind, p = params[name]
        trains = kind in ("pretrain", "sft", "dpo")
        inputs = tuple(cleaned.get(ref, ref) if trains else ref for ref, _ in deps[name])
        if name in stepwise:
            stages += sdpo_steps(name, p, inputs, fps)
            continue
        if name in grids:
            stages += merge_grid(grids[name], inputs, fps, eval_p)
            continue
        fps[name] = fingerprint(kind, p, [fps[i] for i in inputs])
        stages.append(Stage(name, kind, inputs, p, fps[name]))
        if name in cleaned:
            dp = decontam_params(spec)
            fps[cleaned[name]] = fingerprint("decontam", dp, [fps[name]])
            stages.append(Stage(cleaned[name], "decontam", (name,), dp, fps[cleaned[name]]))
    if spec.eval:
        ev = spec.eval
        targets = [s.name for s in stages if s.is_model] if ev.models == "all" else ev.models
        evaluated = {s.name for s in stages if s.kind == "eval"}  # merge candidates already are
        for model in targets:
            if f"eval-{model}" not in evaluated:
                fp = fingerprint("eval", eval_p, [fps[model]])
                stages.append(Stage(f"eval-{model}", "eval", (model,), eval_p, fp))
        if ev.perplexity_corpus:
            corpus = ev.perplexity_corpus
            pp = {"max_length": 256, "batch_size": ev.batch_size}
            for model in [s.name for s in stages if s.is_model]:
                fp = fingerprint("perplexity", pp, [fps[model], fps[corpus]])
                stages.append(Stage(f"ppl-{model}", "perplexity", (model, corpus), pp, fp))
    return stages


def eval_params(spec: PipelineSpec) -> dict[str, Any]:
    """What an H6 score depends on besides the model: tasks, shots, limits, batch size,
    generation length, seed, the harness version and the eval data; in hub mode also the
    registered tasks' versions and the digest of any local dataset overrides."""
    ev = spec.eval
    p = ev.model_dump(mode="json", exclude={"models", "perplexity_corpus"})
    p["harness"] = _harness_version()
    if ev.data.startswith("embedded:"):
        p["data_digest"] = _embedded_dir_digest(ev.data.removeprefix("embedded:"))
    if ev.data == "hub":
        from solar.evaluate import registered_task_versions

        p["registered_tasks"] = registered_task_versions()
        root = resolve_local_source(ev.dataset_overrides) if ev.dataset_overrides else None
        if root is not None and root.is_dir():
            p["data_digest"] = _dir_digest(str(root.resolve()))
    return p


def merge_grid(m, inputs: tuple[str, ...], fps: dict[str, str], eval_p: dict[str, Any]) -> list[Stage]:
    """A merge candidate grid: each candidate merged and evaluated, then a `select` stage,
    named as the merge, that holds the best candidate by `m.select_by`."""
    stages, evals = [], []
    for i in range(1, len(m.candidates) + 1):
        c = m.candidate(i)
        p = c.model_dump(mode="json", exclude={"name", "models", "base", "candidates", "select_by"})
        fps[c.name] = fingerprint("merge", p, [fps[x] for x in inputs])
        stages.append(Stage(c.name, "merge", inputs, p, fps[c.name]))
        e = f"eval-{c.name}"
        fps[e] = fingerprint("eval", eval_p, [fps[c.name]])
        stages.append(Stage(e, "eval", (c.name,), eval_p, fps[e]))
        evals.append(e)
    picks = tuple(s.name for s in stages if s.kind == "merge") + tuple(evals)
    p = {"select_by": m.select_by}
    fps[m.name] = fingerprint("select", p, [fps[x] for x in picks])
    return stages + [Stage(m.name, "select", picks, p, fps[m.name])]


def sdpo_steps(name: str, p: dict[str, Any], inputs: tuple[str, ...], fps: dict[str, str]) -> list[Stage]:
    """sDPO: one DPO stage per dataset, each starting from (and referenced to) the last.
    A step's fingerprint depends only on the steps before it, so adding a step reuses them."""
    previous, *datasets = inputs
    steps = []
    for t, data in enumerate(datasets, 1):
        step = name if t == len(datasets) else f"{name}.step{t}"
        fps[step] = fingerprint("dpo", p, [fps[previous], fps[data]])
        steps.append(Stage(step, "dpo", (previous, data), p, fps[step]))
        previous = step
    return steps


def stage_params(spec: PipelineSpec) -> dict[str, tuple[str, dict[str, Any]]]:
    """Each stage's kind and normalised parameters: its spec without its name and without
    the names of its inputs (inputs enter the fingerprint by their own fingerprints)."""
    out: dict[str, tuple[str, dict[str, Any]]] = {}
    base = spec.base.model_dump(mode="json", exclude={"name"})
    if spec.base.model == "embedded":
        base["corpus_digest"] = file_digest(str(embedded_path("corpus.jsonl")))
    else:
        base.pop("tiny")
    out[spec.base.name] = ("base", base)
    if spec.upscale:
        out[spec.upscale.name] = ("upscale", spec.upscale.model_dump(mode="json", exclude={"name", "base"}))
    if spec.pretrain:
        out[spec.pretrain.name] = (
            "pretrain",
            spec.pretrain.model_dump(mode="json", exclude={"name", "base", "corpus"}),
        )
    for d in spec.datasets:
        p = d.model_dump(mode="json", exclude={"name"})
        local = resolve_local_source(d.source)
        if local is not None and local.is_file():
            p["digest"] = file_digest(str(local))
        out[d.name] = ("data", p)
    for s in spec.synthesis:
        out[s.name] = (s.kind, s.model_dump(mode="json", exclude={"name", "kind", "seed_dataset", "source"}))
    for s in spec.sft:
        out[s.name] = ("sft", s.model_dump(mode="json", exclude={"name", "base", "datasets"}))
    for m in spec.merges:
        out[m.name] = ("merge", m.model_dump(mode="json", exclude={"name", "models", "base", "candidates", "select_by"}))
    for d in spec.dpo:
        out[d.name] = ("dpo", d.model_dump(mode="json", exclude={"name", "base", "datasets", "sdpo"}))
    return out


def decontam_params(spec: PipelineSpec) -> dict[str, Any]:
    """The decontamination section, with a digest of the local eval sets it reads."""
    assert spec.decontamination is not None
    p = spec.decontamination.model_dump(mode="json", exclude={"datasets"})
    root = resolve_local_source(p["eval_data"])
    if root is not None and root.is_dir():
        p["eval_digest"] = _dir_digest(str(root))
    return p


def embedded_path(relative: str) -> Path:
    return SOLAR_DIR / "embedded" / "data" / relative


def resolve_local_source(source: str) -> Path | None:
    """The file behind an `embedded:` or local source; None for a hub id."""
    if source.startswith("hub:"):
        return None
    if source.startswith("embedded:"):
        return embedded_path(source.removeprefix("embedded:"))
    return Path(source)


@cache
def _embedded_dir_digest(relative: str) -> str:
    return _dir_digest(str(embedded_path(relative)))


@cache
def _dir_digest(directory: str) -> str:
    root = Path(directory)
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.jsonl")):
        h.update(str(path.relative_to(root)).encode())
        h.update(file_digest(str(path)).encode())
    return h.hexdigest()[:16]


def _harness_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lm_eval")
    except PackageNotFoundError:
        return "absent"


def model_shapes(spec: PipelineSpec, stages: list[Stage]) -> dict[str, tuple[int, int] | None]:
    """(layers, parameters) of every model stage from configs alone, on the meta device.
    None where the base's architecture is not known offline (a hub id without `config`)."""
    from solar.dus import layer_count, upscale_config
    from solar.model import config_from_dict, count_parameters, tiny_config
    from solar.spec import resolve_config_path

    if spec.base.model == "embedded":
        base_cfg: dict[str, Any] | None = tiny_config(spec.base.tiny).to_dict()
    else:
        path = resolve_config_path(spec.base)
        base_cfg = json.loads(path.read_text()) if path else None
    configs: dict[str, dict[str, Any] | None] = {}
    shapes: dict[str, tuple[int, int] | None] = {}
    for s in stages:
        if not s.is_model:
            continue
        if s.kind == "base":
            cfg = base_cfg
        elif s.kind == "upscale":
            up = configs[s.inputs[0]]
            cfg = upscale_config(up, s.params["m"], s.params["ranges"]) if up else None
        else:  # trained or merged models keep their first input's architecture
            cfg = configs[s.inputs[0]]
        configs[s.name] = cfg
        if cfg is None:
            shapes[s.name] = None
        elif s.kind in ("base", "upscale"):
            shapes[s.name] = (int(layer_count(cfg)), count_parameters(config_from_dict(cfg)))
        else:
            shapes[s.name] = shapes[s.inputs[0]]
    return shapes


def describe(spec: PipelineSpec, root: str | Path) -> list[dict[str, Any]]:
    """One record per stage: name, kind, inputs, cached, and layers/params for models."""
    from solar.artifacts import is_complete, stage_dir

    stages = plan(spec)
    shapes = model_shapes(spec, stages)
    records = []
    for s in stages:
        rec: dict[str, Any] = {
            "name": s.name,
            "kind": s.kind,
            "inputs": list(s.inputs),
            "cached": is_complete(stage_dir(Path(root).resolve(), s.kind, s.fingerprint)),
            "fingerprint": s.fingerprint[:16],
        }
        if s.is_model:
            shape = shapes[s.name]
            rec["layers"], rec["params"] = shape if shape else (None, None)
        records.append(rec)
    return records
