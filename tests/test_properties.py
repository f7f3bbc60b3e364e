"""Property-based tests (hypothesis) of the DUS layer map and of spec validation.

Derandomized and without an example database, so every run tries the same examples and
writes nothing: a failure here is a bug, never bad luck.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from solar.dus import layer_map, plan_upscale, ranges_map, source_layers, upscale_config
from solar.plan import plan
from solar.spec import Name, PipelineSpec
from solar.tensorio import TensorInfo

BOUNDED = settings(max_examples=80, deadline=None, derandomize=True, database=None,
                   suppress_health_check=[HealthCheck.too_slow])


# --- the DUS layer map --------------------------------------------------------------------


@st.composite
def n_and_m(draw) -> tuple[int, int]:
    n = draw(st.integers(1, 200))
    return n, draw(st.integers(0, (n - 1) // 2))  # 2m < n


@BOUNDED
@given(n_and_m())
def test_layer_map_is_a_then_b(nm):
    n, m = nm
    mapping = layer_map(n, m)
    assert len(mapping) == 2 * (n - m)
    assert all(0 <= i < n for i in mapping)
    assert mapping[: n - m] == list(range(0, n - m))  # copy A without its last m layers
    assert mapping[n - m:] == list(range(m, n))  # copy B without its first m layers
    assert ranges_map(n, [[0, n - m], [m, n]]) == mapping == source_layers(n, m=m)


@BOUNDED
@given(st.integers(1, 200), st.data())
def test_layer_map_refuses_m_of_half_n_or_more(n, data):
    m = data.draw(st.one_of(st.integers(-50, -1), st.integers((n + 1) // 2, 400)))  # 2m >= n or m < 0
    with pytest.raises(ValueError, match=f"m={m}: need 0 <= m < n/2"):
        layer_map(n, m)


@st.composite
def n_and_ranges(draw) -> tuple[int, list[list[int]]]:
    n = draw(st.integers(1, 64))
    pair = st.tuples(st.integers(0, n - 1), st.integers(1, n)).map(sorted).filter(lambda p: p[0] < p[1])
    return n, [list(p) for p in draw(st.lists(pair, min_size=1, max_size=6))]


@BOUNDED
@given(n_and_ranges())
def test_ranges_map_is_the_concatenation_of_the_ranges(nr):
    n, ranges = nr
    mapping = ranges_map(n, ranges)
    assert mapping == [i for start, end in ranges for i in range(start, end)]
    assert len(mapping) == sum(end - start for start, end in ranges)
    config = {"model_type": "mistral", "num_hidden_layers": n, "layer_types": [f"t{i}" for i in range(n)],
              "architectures": ["MistralForCausalLM"]}
    out = upscale_config(config, ranges=ranges)
    assert out["num_hidden_layers"] == len(mapping)
    assert out["layer_types"] == [f"t{i}" for i in mapping]
    assert out["architectures"] == ["MistralForCausalLM"]


@BOUNDED
@given(n_and_ranges(), st.data())
def test_a_bad_range_is_refused_by_its_index(nr, data):
    n, ranges = nr
    i = data.draw(st.integers(0, len(ranges) - 1))
    bad = data.draw(st.sampled_from([
        [ranges[i][1], ranges[i][0]],  # reversed
        [ranges[i][0], ranges[i][0]],  # empty
        [ranges[i][0], n + data.draw(st.integers(1, 5))],  # past the last layer
        [-data.draw(st.integers(1, 5)), ranges[i][1]],  # before the first
    ]))
    ranges = ranges[:i] + [bad] + ranges[i + 1:]
    with pytest.raises(ValueError, match=rf"ranges\[{i}\]"):
        ranges_map(n, ranges)


def fake_headers(n: int) -> dict[str, TensorInfo]:
    """safetensors headers of an n-layer decoder: two tensors a layer, plus embed and norm."""
    tensors = {}
    for name in ["model.embed_tokens.weight", "model.norm.weight"] + [
        f"model.layers.{i}.{part}" for i in range(n) for part in ("mlp.up_proj.weight", "input_layernorm.weight")
    ]:
        tensors[name] = TensorInfo(name, "F32", (4,), Path("model.safetensors"), len(tensors) * 16,
                                   len(tensors) * 16 + 16)
    return tensors


@BOUNDED
@given(n_and_m())
def test_upscale_plan_copies_layer_i_from_the_maps_source(nm):
    n, m = nm
    n = min(n, 40)
    m = min(m, (n - 1) // 2)
    mapping = layer_map(n, m)
    steps = plan_upscale(fake_headers(n), n, mapping)
    layers = [(out.name, src.name) for out, src in steps if out.name.startswith("model.layers.")]
    assert len(layers) == 2 * len(mapping)
    for out_name, src_name in layers:
        new, old = int(out_name.split(".")[2]), int(src_name.split(".")[2])
        assert mapping[new] == old
        assert out_name.split(".", 3)[3] == src_name.split(".", 3)[3]
    assert {out.name for out, _ in steps} == set(fake_headers(2 * (n - m)))


# --- spec validation ----------------------------------------------------------------------

NAME = st.from_regex(r"[a-z][a-z0-9]{0,5}(-[a-z0-9]{1,3})?", fullmatch=True).filter(
    lambda s: not s.startswith(("eval-", "ppl-", "decontam-")) and s not in ("base", "dus")
)
POSITIVE = st.floats(1e-6, 1e3, allow_nan=False, allow_infinity=False)


@st.composite
def valid_specs(draw) -> dict:
    """A random pipeline: embedded base, DUS with a valid m, SFT/merge/DPO stages each built
    on earlier models, positive numbers, merge weights summing to their declared 1."""
    names = draw(st.lists(NAME, min_size=12, max_size=12, unique=True))
    sft_data, pref_data, corpus = names[:2], names[2:4], names[4]
    layers = draw(st.integers(1, 12))
    spec: dict = {
        "name": "prop",
        "base": {"tiny": {"num_layers": layers, "hidden_size": 32, "intermediate_size": 64,
                          "num_heads": 2, "num_kv_heads": 1, "vocab_size": 512}},
        "upscale": {"m": draw(st.integers(0, (layers - 1) // 2))},
        "datasets": [{"name": d, "format": "alpaca", "source": "embedded:sources/alpaca_gpt4.jsonl"}
                     for d in sft_data]
        + [{"name": d, "format": "ultrafeedback", "source": "embedded:sources/ultrafeedback_cleaned.jsonl",
            "cap": draw(st.integers(1, 10_000))} for d in pref_data]
        + [{"name": corpus, "format": "text", "source": "embedded:corpus.jsonl"}],
        "sft": [], "merges": [], "dpo": [],
    }
    models = ["base", "dus"]
    for name in names[5:5 + draw(st.integers(1, 7))]:
        kind = draw(st.sampled_from(["sft", "merge", "dpo"] if len(models) > 2 else ["sft", "dpo"]))
        if kind == "sft":
            train = {"learning_rate": draw(POSITIVE), "max_steps": draw(st.integers(1, 1000))}
            spec["sft"].append({"name": name, "base": draw(st.sampled_from(models)), "train": train,
                                "datasets": draw(st.lists(st.sampled_from(sft_data), min_size=1, max_size=3))})
        elif kind == "merge":
            picked = draw(st.lists(st.sampled_from(models), min_size=2, max_size=4, unique=True))
            raw = draw(st.lists(st.integers(1, 100), min_size=len(picked), max_size=len(picked)))
            weights = [w / sum(raw) for w in raw]
            spec["merges"].append({"name": name, "models": picked, "weights": weights, "weights_sum": 1.0})
        else:
            spec["dpo"].append({"name": name, "base": draw(st.sampled_from(models)), "beta": draw(POSITIVE),
                                "sdpo": draw(st.booleans()),
                                "datasets": draw(st.lists(st.sampled_from(pref_data), min_size=1, max_size=3,
                                                          unique=True))})
        models.append(name)
    evaluated = draw(st.lists(st.sampled_from(models), min_size=1, max_size=4, unique=True))
    spec["eval"] = {"models": draw(st.sampled_from(["all", evaluated])), "perplexity_corpus": corpus}
    if draw(st.booleans()):
        spec["decontamination"] = {"datasets": "all"}
    return spec


@settings(max_examples=50, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(valid_specs())
def test_valid_random_specs_validate_and_plan_inputs_first(data):
    spec = PipelineSpec.model_validate(data)
    stages = plan(spec)
    names = [s.name for s in stages]
    assert len(names) == len(set(names))
    seen: set[str] = set()
    for s in stages:
        assert set(s.inputs) <= seen, f"{s.name} comes before its inputs {s.inputs}"
        seen.add(s.name)
    declared = {d["name"] for d in data["datasets"]} | {s["name"] for k in ("sft", "merges", "dpo")
                                                       for s in data[k]}
    assert declared <= seen
    n, m = data["base"]["tiny"]["num_layers"], data["upscale"]["m"]
    assert source_layers(n, m=m) == layer_map(n, m)
    evaluated = [s for s in stages if s.kind == "eval"]
    expected = len([s for s in stages if s.is_model]) if data["eval"]["models"] == "all" else len(
        data["eval"]["models"])
    assert len(evaluated) == expected


def references(data: dict) -> list[tuple[str, list, str]]:
    """Every (error field path, path into the dict, referenced name) of a spec dict."""
    out = []
    for group in ("sft", "dpo"):
        for i, s in enumerate(data[group]):
            out.append((f"{group}[{i}].base", [group, i, "base"], s["base"]))
            out += [(f"{group}[{i}].datasets[{j}]", [group, i, "datasets", j], d) for j, d in enumerate(s["datasets"])]
    for i, m in enumerate(data["merges"]):
        out += [(f"merges[{i}].models[{j}]", ["merges", i, "models", j], x) for j, x in enumerate(m["models"])]
    return out


def put(data: dict, path: list, value) -> None:
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value


def mutations(data: dict) -> dict[str, list[tuple[str, object]]]:
    """By kind of defect, (expected message fragment, mutation) pairs that each must make
    `data` invalid."""
    out: dict[str, list] = {"dangling": [], "number": [], "unknown key": [], "upscale": [], "weights": [],
                            "duplicate": []}
    for field, path, _ in references(data):
        out["dangling"].append((f"{field}: 'gone-away' names no stage", lambda d, p=path: put(d, p, "gone-away")))
    for group, key in (("sft", ("train", "learning_rate")), ("sft", ("train", "max_steps")), ("dpo", ("beta",))):
        for i in range(len(data[group])):
            loc = ".".join([group, str(i), *key])
            out["number"].append((loc, lambda d, p=[group, i, *key]: put(d, p, -1)))
    for i in range(len(data["datasets"])):
        out["number"].append((f"datasets.{i}.cap", lambda d, i=i: put(d, ["datasets", i, "cap"], 0)))
    sections = [("", []), ("upscale.", ["upscale"]), ("eval.", ["eval"])] + [
        (f"{g}.{i}.", [g, i]) for g in ("sft", "merges", "dpo", "datasets") for i in range(len(data[g]))]
    for prefix, path in sections:
        out["unknown key"].append((f"{prefix}bogus_key", lambda d, p=path: put(d, [*p, "bogus_key"], 1)))
    n = data["base"]["tiny"]["num_layers"]
    for m in ((n + 1) // 2, n, n + 3):
        out["upscale"].append((f"upscale.m: m={m} must be < n/2 for a base of n={n}",
                               lambda d, m=m: put(d, ["upscale", "m"], m)))
    for i, m in enumerate(data["merges"]):
        out["weights"].append((f"merges[{m['name']}].weights", lambda d, i=i: put(d, ["merges", i, "weights_sum"], 1.5)))
        out["weights"].append((f"merges[{m['name']}].weights: {len(m['models']) + 1} weights",
                               lambda d, i=i: d["merges"][i]["weights"].append(0.0)))
    groups = [(g, len(data[g])) for g in ("sft", "dpo") if len(data[g]) >= 2]
    for group, _ in groups:
        other = data[group][0]["name"]
        out["duplicate"].append((f"{group}[1].name: stage name '{other}' is already used",
                                 lambda d, g=group, o=other: put(d, [g, 1, "name"], o)))
    return {kind: items for kind, items in out.items() if items}


@BOUNDED
@given(valid_specs(), st.data())
def test_a_single_mutation_is_refused_naming_the_field(data, draw):
    by_kind = mutations(data)
    expect, mutate = draw.draw(st.sampled_from(by_kind[draw.draw(st.sampled_from(sorted(by_kind)))]))
    bad = copy.deepcopy(data)
    mutate(bad)
    with pytest.raises(ValidationError) as info:
        PipelineSpec.model_validate(bad)
    assert expect in str(info.value)


@BOUNDED
@given(st.text(st.sampled_from("abz09+_-./A "), min_size=1, max_size=12))
def test_stage_names_never_hold_a_path(name):
    """A name that validates has no "/" and no "..", no dot at either end, no capitals."""
    try:
        TypeAdapter(Name).validate_python(name)
    except ValidationError:
        return
    assert "/" not in name and ".." not in name and not name.startswith(".") and not name.endswith(".")
    assert name == name.lower() and " " not in name
