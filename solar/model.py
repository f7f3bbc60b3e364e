"""Models: the embedded tiny default, loading, configs, and parameter counts.

The embedded default is a Mistral-architecture model with a few layers, randomly
initialised with a fixed seed, and a byte-level BPE tokenizer trained with `tokenizers` on
the corpus the project ships. Both are built by the `base` stage like any other artifact.
"""

from __future__ import annotations

import json
import shutil
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PretrainedConfig

from solar.spec import BaseSpec, TinyModel

SPECIAL_TOKENS = ["<unk>", "<s>", "</s>"]
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "tokenizer.model",
    "generation_config.json",
)


def chat_template(name: str) -> str:
    """A chat template shipped in solar/templates, or a path to a Jinja file."""
    shipped = resources.files("solar") / "templates" / f"{name}.jinja"
    path = Path(str(shipped)) if shipped.is_file() else Path(name)
    if not path.is_file():
        raise ValueError(f"chat_template: {name!r} is neither a shipped template nor a file")
    return path.read_text()


def tiny_config(spec: TinyModel) -> PretrainedConfig:
    from transformers import MistralConfig

    return MistralConfig(
        vocab_size=spec.vocab_size,
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_kv_heads,
        max_position_embeddings=spec.max_position_embeddings,
        sliding_window=None,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
    )


def train_tokenizer(texts: list[str], vocab_size: int):
    """A byte-level BPE tokenizer (as GPT-2 and Llama 3 use), trained on `texts`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
        pad_token="</s>", model_max_length=4096,
    )


def build_tiny(spec: TinyModel, corpus: Path, out_dir: Path) -> dict[str, float]:
    """Train the tokenizer on `corpus` (JSONL of {"text"}), initialise the model, save both."""
    texts = [json.loads(line)["text"] for line in corpus.read_text().splitlines() if line.strip()]
    tokenizer = train_tokenizer(texts, spec.vocab_size)
    tokenizer.chat_template = chat_template("solar")
    config = tiny_config(spec)
    config.vocab_size = len(tokenizer)  # BPE may stop short of the requested size
    torch.manual_seed(spec.seed)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return {"params": float(model.num_parameters()), "layers": float(config.num_hidden_layers),
            "vocab_size": float(len(tokenizer))}


def fetch_base(spec: BaseSpec, out_dir: Path) -> dict[str, float]:
    """Materialise a hub or local base model as a safetensors directory.

    A local directory is checked before anything is loaded (solar/checks.py: corrupt files,
    config vs weights, tokenizer vs embedding, pickles, custom code); what is saved is
    checked again. A weight the config needs but the checkpoint lacks is an error, not a
    random initialisation. Pickles, if allowed, are read with weights_only=True."""
    from solar.checks import ModelCheckError, check_model_dir, check_remote_code

    if Path(spec.model).is_dir():
        check_remote_code(Path(spec.model), spec.trust_remote_code)
        check_model_dir(Path(spec.model), spec.allow_pickle)
    model, info = AutoModelForCausalLM.from_pretrained(
        spec.model, revision=spec.revision, trust_remote_code=spec.trust_remote_code,
        use_safetensors=None if spec.allow_pickle else True, weights_only=True, dtype="auto",
        output_loading_info=True,
    )
    if info.get("missing_keys"):
        raise ModelCheckError(f"{spec.model}: the checkpoint lacks weights its config needs, "
                              f"e.g. {sorted(info['missing_keys'])[:3]}")
    tokenizer = AutoTokenizer.from_pretrained(
        spec.model, revision=spec.revision, trust_remote_code=spec.trust_remote_code
    )
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    check_model_dir(out_dir)
    return {"params": float(model.num_parameters()), "layers": float(model.config.num_hidden_layers)}


def load_model(path: Path, dtype: torch.dtype | None = None):
    """A model directory's safetensors model, after the checks of solar/checks.py."""
    from solar.checks import check_model_dir

    check_model_dir(Path(path))
    return AutoModelForCausalLM.from_pretrained(
        path, dtype=dtype or torch.float32, use_safetensors=True, trust_remote_code=False
    )


def load_tokenizer(path: Path):
    return AutoTokenizer.from_pretrained(path, trust_remote_code=False)


def copy_tokenizer(src: Path, dst: Path) -> None:
    """Carry the tokenizer, chat template and generation config to a derived model."""
    for name in TOKENIZER_FILES:
        if (src / name).is_file():
            shutil.copy2(src / name, dst / name)


def config_from_dict(data: dict[str, Any]) -> PretrainedConfig:
    data = dict(data)
    model_type = data.pop("model_type")
    return AutoConfig.for_model(model_type, **data)


def count_parameters(config: PretrainedConfig) -> int:
    """Parameters of a model built from `config`, on the meta device: no memory, no weights."""
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())
