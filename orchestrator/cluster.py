"""Offline validation of a Ray cluster-launcher file (cluster.yaml).

`ray up` validates its file only after it has started talking to the cloud. This
module runs the same checks Ray's launcher runs first -- fill in the provider's
defaults (`prepare_config`), then the JSON schema and cross-field checks
(`validate_config`) -- without any cloud call, so a broken file fails in CI or on
a laptop without an account.

Ray's validator is private API (`ray.autoscaler._private.util`); everything that
touches it is in `validate_cluster_config`, so a Ray upgrade breaks one function.
Offline subset, checked against Ray 2.60: `prepare_config` only reads the
provider's bundled defaults.yaml (no boto3 / Google client import) and
`validate_config` is pure. Left out on purpose: the provider's `bootstrap_config`
and `fillout_available_node_types_resources`, which are the steps of `ray up`
that call the cloud's APIs (key pairs, IAM roles, security groups, AMIs,
instance-type resources).

Usage: python -m orchestrator.cluster [cluster.yaml]   (exit 0 valid, 2 invalid)
"""

from __future__ import annotations

import copy
import logging
import sys
from pathlib import Path
from typing import Any

import yaml


def validate_cluster_config(path: str | Path) -> dict[str, Any]:
    """Validate a cluster-launcher YAML offline with Ray's own validator.

    Returns the prepared config (provider defaults merged in, setup commands
    merged into head/worker setup commands, per-type worker limits filled), i.e.
    what `ray up` would go on to use. Raises ValueError with one line naming the
    file and the problem when the file is missing, not YAML, or invalid.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ValueError(f"{path}: cannot read cluster config ({e.strerror or e})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        problem = " ".join(str(e).split())
        raise ValueError(f"{path}: not valid YAML: {problem}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: a cluster config must be a YAML mapping, got {type(raw).__name__}")
    if not isinstance(raw.get("provider"), dict) or "type" not in raw["provider"]:
        raise ValueError(f"{path}: missing provider.type (e.g. aws, gcp)")

    # Private API, imported here so importing this module stays cheap.
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    try:
        prepared = prepare_config(copy.deepcopy(raw))
        validate_config(prepared)
    except jsonschema.ValidationError as e:
        where = "/".join(str(p) for p in e.absolute_path) or "<top level>"
        raise ValueError(f"{path}: invalid at {where}: {_first_line(e.message)}") from None
    except NotImplementedError as e:  # unknown provider type
        raise ValueError(f"{path}: {_first_line(str(e))}") from None
    except (ValueError, RuntimeError, KeyError, AssertionError) as e:
        raise ValueError(f"{path}: {_first_line(str(e)) or type(e).__name__}") from None
    return prepared


def _first_line(message: str) -> str:
    return message.strip().splitlines()[0] if message.strip() else ""


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) > 1:
        print("usage: python -m orchestrator.cluster [cluster.yaml]", file=sys.stderr)
        return 2
    path = args[0] if args else "cluster.yaml"
    # Ray's validator logs an INFO line per node type it fills in; noise here.
    logging.getLogger("ray.autoscaler._private.util").setLevel(logging.WARNING)
    try:
        prepared = validate_cluster_config(path)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    worker_types = [t for t in prepared["available_node_types"] if t != prepared["head_node_type"]]
    print(
        f"{path}: valid ({prepared['provider']['type']}, head {prepared['head_node_type']}, "
        f"workers {', '.join(worker_types)}, max_workers {prepared['max_workers']})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
