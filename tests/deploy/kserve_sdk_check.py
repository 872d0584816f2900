"""Check KServe manifests against the KServe Python SDK's own models; run with the SDK's Python.

    .tools/peers/kserve/bin/python tests/deploy/kserve_sdk_check.py < manifests.json

Reads a JSON list of manifests on stdin and prints a JSON list of problems (empty: all good).
The SDK's own deserializer drops fields it does not know without a word, so the manifest is
built into the models here: every key must be in its model's `attribute_map` (a misspelt or
invented field is a problem), and each model's constructor checks required fields and enums.
Runs outside the test process: the SDK lives in its own environment (benchmarks/peers/setup.sh).
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any

import kserve
import kubernetes.client

MODELS = {
    ("serving.kserve.io/v1alpha1", "ClusterServingRuntime"): "V1alpha1ClusterServingRuntime",
    ("serving.kserve.io/v1alpha1", "ServingRuntime"): "V1alpha1ServingRuntime",
    ("serving.kserve.io/v1beta1", "InferenceService"): "V1beta1InferenceService",
}
PRIMITIVES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
    "object": (object,),
    "datetime": (str,),
    "date": (str,),
}


def model_class(name: str) -> Any:
    found = getattr(kserve.models, name, None) or getattr(kubernetes.client.models, name, None)
    if found is None:
        raise LookupError(f"no SDK model {name}")
    return found


def load(value: Any, type_name: str, path: str, problems: list[str]) -> Any:
    """`value` built into the SDK's model for `type_name` (each model's constructor checks its
    required fields and enums); a field the model does not declare is a problem."""
    if match := re.fullmatch(r"[lL]ist\[(.+)\]", type_name):
        if not isinstance(value, list):
            problems.append(f"{path}: expected a list")
            return None
        return [load(v, match[1], f"{path}[{i}]", problems) for i, v in enumerate(value)]
    if match := re.fullmatch(r"dict\(str, (.+)\)|Dict\[str, (.+)\]", type_name):
        if not isinstance(value, dict):
            problems.append(f"{path}: expected a mapping")
            return None
        item_type = match[1] or match[2]
        return {k: load(v, item_type, f"{path}.{k}", problems) for k, v in value.items()}
    if type_name in PRIMITIVES:
        if not isinstance(value, PRIMITIVES[type_name]):
            problems.append(f"{path}: expected {type_name}, got {value!r}")
        return value
    cls = model_class(type_name)
    if not isinstance(value, dict):
        problems.append(f"{path}: expected a {type_name} mapping")
        return None
    by_key = {key: attribute for attribute, key in cls.attribute_map.items()}
    kwargs = {}
    for key, item in value.items():
        if key not in by_key:
            problems.append(f"{path}.{key}: not a field of {type_name}")
            continue
        attribute = by_key[key]
        kwargs[attribute] = load(item, cls.openapi_types[attribute], f"{path}.{key}", problems)
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as error:
        problems.append(f"{path}: the SDK's {type_name} refuses it: {error}")
        return None


def check(manifest: dict[str, Any]) -> list[str]:
    where = f"{manifest.get('kind')} {manifest.get('metadata', {}).get('name')}"
    name = MODELS.get((manifest.get("apiVersion", ""), manifest.get("kind", "")))
    if name is None:
        return [f"{where}: not a KServe kind this check knows"]
    problems: list[str] = []
    load(manifest, name, where, problems)
    return problems


if __name__ == "__main__":
    manifests = json.load(sys.stdin)
    json.dump([problem for manifest in manifests for problem in check(manifest)], sys.stdout)
