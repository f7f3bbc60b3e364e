"""The bad-spec corpus: malformed pipeline specs, one defect each, every one a full copy of
the tiny preset as it was when the corpus was made (`valid.yaml`), so no file depends on a
preset that may change.

Each file starts with comment lines:

    # expect: <substring the validation error must contain: the field path or stage name>
    # defect: <what is wrong, in words>
    # file-only: ...   (optional: the defect is in the YAML text itself, e.g. a duplicate
                        key, so the file has no parsed-mapping form)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
VALID = HERE / "valid.yaml"


@dataclass(frozen=True)
class BadSpec:
    name: str  # the file's stem, e.g. "31-upscale-m-half-of-n"
    path: Path
    expect: str
    defect: str
    file_only: bool


def _header(path: Path) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if not line.startswith("# "):
            break
        key, sep, value = line[2:].partition(": ")
        if sep:
            fields[key] = value
    if "expect" not in fields:
        raise ValueError(f"{path}: the first line must be '# expect: <substring>'")
    return fields


def bad_specs() -> list[BadSpec]:
    """Every file of the corpus, in file-name order."""
    out = []
    for path in sorted(HERE.glob("[0-9]*.yaml")):
        h = _header(path)
        out.append(BadSpec(path.stem, path, h["expect"], h.get("defect", ""), "file-only" in h))
    return out


def corpus() -> list[tuple[str, dict, str]]:
    """(name, parsed spec dict, expected substring) of every defect a parsed mapping can
    carry, to submit as flow parameters; the file-only ones (YAML syntax, duplicate keys,
    a top-level list) are left out."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return [(b.name, yaml.load(b.path.read_text(), Loader=loader), b.expect)
            for b in bad_specs() if not b.file_only]
