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

On top of Ray's checks, `security_problems` checks what this project's cluster.yaml promises:
the auth token mounted alone (kept out of the project sync) with mode 0600, uv pinned by
version and checksum (no `curl | sh`), and a dedicated security group whose ingress the file
states (SSH from a stated CIDR only). `create_security_group` creates that group with exactly
those rules before the first `ray up` (Ray's launcher would otherwise open SSH to 0.0.0.0/0).

Usage: python -m orchestrator.cluster [cluster.yaml] [--create-security-group]
(exit 0 valid, 2 invalid; see --help)
"""

from __future__ import annotations

import argparse
import copy
import ipaddress
import logging
import re
import sys
from pathlib import Path
from typing import Any

from search_spaces.bounded_yaml import load_bounded


RAY_TOKEN_PATH = "~/.ray/auth_token"  # where Ray 2.60 reads a node's token (RAY_AUTH_MODE=token)
WORLD = (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))


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
    raw = load_bounded(text, str(path))  # alias bombs and deep nesting: one line, at once
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
    problems = security_problems(raw, path.resolve().parent)
    if problems:
        raise ValueError(f"{path}: {problems[0]}")
    return prepared


def _commands(raw: dict[str, Any]) -> list[str]:
    keys = ("initialization_commands", "setup_commands", "head_setup_commands", "worker_setup_commands",
            "head_start_ray_commands", "worker_start_ray_commands")
    return [str(c) for key in keys for c in (raw.get(key) or [])]


def _excluded_dirs(raw: dict[str, Any]) -> set[str]:
    """Anchored directory-only rsync excludes ("/name/"), as paths relative to a synced root."""
    return {p.strip("/") for p in (raw.get("rsync_exclude") or [])
            if isinstance(p, str) and p.startswith("/") and p.endswith("/")}


def security_problems(raw: dict[str, Any], root: Path) -> list[str]:
    """What breaks the promises in cluster.yaml's security notes, one line each ([] if none).

    ``root``: the directory the file_mounts' local paths are relative to (the repository)."""
    problems: list[str] = []
    mounts = raw.get("file_mounts") or {}
    token_local = mounts.get(RAY_TOKEN_PATH)
    if token_local is None:
        problems.append(f"file_mounts must mount the auth token alone at {RAY_TOKEN_PATH}")
    else:
        token = (root / token_local).resolve()
        excluded = _excluded_dirs(raw)
        for remote, local in mounts.items():
            synced = (root / local).resolve()
            if remote == RAY_TOKEN_PATH or not synced.is_dir() or not token.is_relative_to(synced):
                continue
            parts = token.relative_to(synced).parts
            if not any("/".join(parts[:i]) in excluded for i in range(1, len(parts))):
                problems.append(f"file_mounts {remote}: {local} holds the auth token {token_local}; keep it "
                                f"in a subdirectory excluded with an anchored rsync_exclude entry such as "
                                f"/{parts[0] if len(parts) > 1 else '.secrets'}/")
        # rsync transfers the one-file mount under its own name: an exclude matching that name
        # would silently drop the token from every node.
        for pattern in raw.get("rsync_exclude") or []:
            bare = str(pattern).rstrip("/") if not str(pattern).endswith("/") else None
            if bare is not None and re.fullmatch(re.escape(bare.lstrip("/")).replace(r"\*", ".*"), token.name):
                problems.append(f"rsync_exclude {pattern!r} also matches the token's own mount {token_local}")
        if token.exists() and token.stat().st_mode & 0o077:
            problems.append(f"{token_local} is readable by others (mode {token.stat().st_mode & 0o777:o}); "
                            f"chmod 600 {token_local}")
    commands = _commands(raw)
    if not any(re.search(r"chmod (0?600|go-rwx) ~/\.ray/auth_token", c) for c in raw.get("setup_commands") or []):
        problems.append(f"setup_commands must make {RAY_TOKEN_PATH} mode 600 before Ray starts")
    for command in commands:
        if re.search(r"\|\s*(sudo\s+)?(ba|z|da)?sh\b", command):
            problems.append(f"a setup command pipes a download into a shell: {command.strip()[:80]}")
    uv_installs = [c for c in commands if "uv" in c and re.search(r"\bcurl\b|\bwget\b", c)]
    if not uv_installs:
        problems.append("setup_commands must install uv from a pinned download (version and sha256)")
    for command in uv_installs:
        if not re.search(r"uv-\d+\.\d+\.\d+", command) or not re.search(r"\b[0-9a-f]{64}\b", command) \
                or "sha256sum -c" not in command:
            problems.append("the uv download must name its version and be checked with sha256sum -c "
                            "against a stated checksum")
    problems.extend(_security_group_problems(raw))
    return problems


def _security_group_problems(raw: dict[str, Any]) -> list[str]:
    provider = raw.get("provider") or {}
    if provider.get("type") != "aws":
        return []  # GCP: the launcher's default network admits SSH only
    group = provider.get("security_group") or {}
    if not group.get("GroupName"):
        return ["provider.security_group.GroupName must name the cluster's dedicated security group"]
    rules = group.get("IpPermissions") or []
    if not rules:
        return ["provider.security_group.IpPermissions must state the SSH rule (tcp 22 from your CIDR): "
                "without it Ray's launcher opens SSH to 0.0.0.0/0"]
    problems = []
    for rule in rules:
        if not (rule.get("IpProtocol") == "tcp" and rule.get("FromPort") == 22 == rule.get("ToPort")):
            problems.append(f"security group rule {rule} opens more than SSH (tcp 22)")
            continue
        ranges = [r.get("CidrIp") for r in rule.get("IpRanges") or []] + \
                 [r.get("CidrIpv6") for r in rule.get("Ipv6Ranges") or []]
        if not ranges or rule.get("UserIdGroupPairs") or rule.get("PrefixListIds"):
            problems.append(f"security group rule {rule} must admit SSH from stated CIDRs only")
        for cidr in ranges:
            try:
                network = ipaddress.ip_network(str(cidr), strict=False)
            except ValueError:
                problems.append(f"security group rule: {cidr!r} is not a CIDR")
                continue
            if network in WORLD:
                problems.append(f"security group rule admits SSH from everywhere ({cidr}); state your CIDR")
    for name, node_type in (raw.get("available_node_types") or {}).items():
        if "SecurityGroupIds" in (node_type.get("node_config") or {}):
            problems.append(f"{name}: SecurityGroupIds bypasses the stated security group; remove it")
    return problems


def wanted_ingress(raw: dict[str, Any], group_id: str) -> list[dict[str, Any]]:
    """The group's whole ingress: all traffic between its own members, plus the stated rules."""
    return [{"IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": group_id}]},
            *raw["provider"]["security_group"]["IpPermissions"]]


def _rule_keys(rules: list[dict[str, Any]]) -> set[tuple]:
    """Comparable form of EC2 ingress rules (one key per protocol/port/source)."""
    keys = set()
    for rule in rules:
        protocol = str(rule.get("IpProtocol"))
        ports = (None, None) if protocol == "-1" else (rule.get("FromPort"), rule.get("ToPort"))
        for r in rule.get("IpRanges") or []:
            keys.add((protocol, *ports, "cidr", r["CidrIp"]))
        for r in rule.get("Ipv6Ranges") or []:
            keys.add((protocol, *ports, "cidr6", r["CidrIpv6"]))
        for r in rule.get("UserIdGroupPairs") or []:
            keys.add((protocol, *ports, "group", r["GroupId"]))
        for r in rule.get("PrefixListIds") or []:
            keys.add((protocol, *ports, "prefix", r["PrefixListId"]))
    return keys


def create_security_group(raw: dict[str, Any], ec2, vpc_id: str | None = None) -> str:
    """Create the dedicated group with exactly the ingress cluster.yaml states; returns a line.

    An existing group of that name is accepted only if its ingress is exactly that (Ray's
    launcher uses an existing group unchanged, so anything extra would be silently open).
    ``ec2``: a boto3 EC2 client for the provider's region."""
    name = raw["provider"]["security_group"]["GroupName"]
    if vpc_id is None:
        vpcs = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"]
        if not vpcs:
            raise ValueError("no default VPC in this region; pass --vpc-id")
        vpc_id = vpcs[0]["VpcId"]
    found = ec2.describe_security_groups(Filters=[{"Name": "vpc-id", "Values": [vpc_id]},
                                                  {"Name": "group-name", "Values": [name]}])["SecurityGroups"]
    if found:
        group_id = found[0]["GroupId"]
        have, want = _rule_keys(found[0]["IpPermissions"]), _rule_keys(wanted_ingress(raw, group_id))
        if have != want:
            extra = sorted(map(str, have - want))
            missing = sorted(map(str, want - have))
            raise ValueError(f"security group {name} ({group_id}) exists with other ingress rules "
                             f"(extra: {', '.join(extra) or 'none'}; missing: {', '.join(missing) or 'none'}); "
                             f"fix or delete it, or choose another GroupName")
        return f"security group {name} ({group_id}) in {vpc_id} already has exactly the stated ingress"
    group_id = ec2.create_security_group(
        GroupName=name, VpcId=vpc_id, Description=f"Ray cluster {raw.get('cluster_name', name)}: SSH from "
                                                  f"stated CIDRs, all traffic between members")["GroupId"]
    ec2.authorize_security_group_ingress(GroupId=group_id, IpPermissions=wanted_ingress(raw, group_id))
    return f"created security group {name} ({group_id}) in {vpc_id}: SSH from the stated CIDRs, members to members"


def _first_line(message: str) -> str:
    return message.strip().splitlines()[0] if message.strip() else ""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m orchestrator.cluster",
        description="Check a Ray cluster-launcher file offline, without a cloud account: Ray's own schema "
                    "and cross-field validation, plus this project's security promises (auth token mounted "
                    "alone with mode 600 and kept out of the project sync, uv pinned by version and "
                    "checksum, a dedicated security group admitting SSH only from stated CIDRs). Exit 0 when "
                    "valid, 2 with one error line otherwise.")
    p.add_argument("config", nargs="?", default="cluster.yaml",
                   help="the cluster-launcher YAML to check (default: cluster.yaml)")
    p.add_argument("--create-security-group", action="store_true",
                   help="after the checks, create the file's provider.security_group with exactly its stated "
                        "ingress (plus traffic between members) in the region's default VPC, or verify that "
                        "an existing group of that name has exactly those rules; run before the first "
                        "`ray up`; needs boto3 and AWS credentials")
    p.add_argument("--vpc-id", help="with --create-security-group: the VPC to create it in "
                                    "(default: the region's default VPC)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    path = args.config
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
    if args.create_security_group:
        try:
            import boto3

            raw = load_bounded(Path(path).read_text(), path)
            ec2 = boto3.client("ec2", region_name=raw["provider"]["region"])
            print(create_security_group(raw, ec2, args.vpc_id))
        except ImportError:
            print("error: --create-security-group needs boto3 (pip install boto3)", file=sys.stderr)
            return 2
        except Exception as e:  # botocore errors: credentials, permissions, throttling
            print(f"error: --create-security-group: {_first_line(str(e)) or type(e).__name__}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
