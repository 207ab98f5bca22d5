"""cluster.yaml: Ray's own offline validation plus the security settings it promises.

No cloud calls and no Ray cluster: these run in about a second.
"""

from __future__ import annotations

import copy
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from orchestrator.cluster import main as cluster_main
from orchestrator.cluster import create_security_group, security_problems, validate_cluster_config

REPO = Path(__file__).resolve().parent.parent
CLUSTER_YAML = REPO / "cluster.yaml"


@pytest.fixture(scope="module")
def prepared() -> dict:
    return validate_cluster_config(CLUSTER_YAML)


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def _ray_start_commands(commands: list[str]) -> list[str]:
    return [c for c in commands if re.search(r"\bray start\b", c)]


def _env_before_ray_start(command: str) -> dict[str, str]:
    """Variables set on the shell line that runs `ray start` (VAR=x prefix or export)."""
    env: dict[str, str] = {}
    for statement in re.split(r"[;&|]+", command.split("ray start")[0]):
        words = shlex.split(statement)
        if words and words[0] == "export":
            words = words[1:]
        for word in words:
            name, eq, value = word.partition("=")
            if eq and re.fullmatch(r"[A-Z_][A-Z0-9_]*", name):
                env[name] = value
    return env


def _pinned_ray_versions(text: str) -> set[str]:
    return set(re.findall(r"\bray(?:\[[^\]]*\])?==([0-9][0-9A-Za-z.+-]*)", text))


def test_validates_offline_with_rays_validator(prepared: dict) -> None:
    assert prepared["provider"]["type"] == "aws"
    # prepare_config ran: setup_commands were merged into the per-kind lists.
    assert prepared["setup_commands"][0] == prepared["head_setup_commands"][0]
    assert prepared["setup_commands"][0] == prepared["worker_setup_commands"][0]
    assert prepared["idle_timeout_minutes"] > 0
    assert prepared["max_workers"] >= 1


def test_head_is_cpu_and_workers_have_one_and_four_gpus(prepared: dict) -> None:
    node_types = prepared["available_node_types"]
    head = node_types[prepared["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0
    assert head["max_workers"] == 0
    worker_gpus = sorted(
        t["resources"].get("GPU", 0) for name, t in node_types.items() if name != prepared["head_node_type"]
    )
    assert worker_gpus == [1, 4]
    for name, node_type in node_types.items():
        if name != prepared["head_node_type"]:
            assert node_type["min_workers"] == 0, f"{name} should scale from zero"
            assert 1 <= node_type["max_workers"] <= prepared["max_workers"]


def test_invalid_config_raises_one_line_value_error(tmp_path: Path, raw: dict) -> None:
    broken = dict(raw, max_workers=-1)
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(broken))
    with pytest.raises(ValueError, match=r"broken\.yaml: invalid at max_workers") as info:
        validate_cluster_config(path)
    assert "\n" not in str(info.value)

    path.write_text(yaml.safe_dump(dict(raw, no_such_field=1)))
    with pytest.raises(ValueError, match="no_such_field"):
        validate_cluster_config(path)

    path.write_text("provider: [unclosed\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        validate_cluster_config(path)

    with pytest.raises(ValueError, match="cannot read"):
        validate_cluster_config(tmp_path / "missing.yaml")


def test_cli_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cluster_main([str(CLUSTER_YAML)]) == 0
    assert "valid" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text("provider: {type: no_such_cloud}\n")
    assert cluster_main([str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no_such_cloud" in err


def test_token_auth_on_head_and_workers(raw: dict) -> None:
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        starts = _ray_start_commands(raw[key])
        assert starts, f"no `ray start` in {key}"
        for command in starts:
            assert _env_before_ray_start(command).get("RAY_AUTH_MODE") == "token", command


def test_token_file_is_mounted_where_ray_reads_it_and_never_tracked(raw: dict) -> None:
    from ray._private.authentication.authentication_token_setup import _get_default_token_path

    default_token = "~/" + str(_get_default_token_path().relative_to(Path.home()))
    assert default_token in raw["file_mounts"], "token must land on Ray's default token path"
    local_token = raw["file_mounts"][default_token]

    ignored = subprocess.run(["git", "check-ignore", "-q", local_token], cwd=REPO)
    assert ignored.returncode == 0, f"{local_token} is not git-ignored"
    tracked = subprocess.run(
        ["git", "ls-files", "--", local_token, "*auth_token*", "*ray_token*"],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout
    assert tracked == "", f"token file tracked by git: {tracked}"


def test_dashboard_bound_to_localhost(raw: dict) -> None:
    head_starts = _ray_start_commands(raw["head_start_ray_commands"])
    assert len(head_starts) == 1
    assert re.findall(r"--dashboard-host[= ](\S+)", head_starts[0]) == ["127.0.0.1"]
    for command in raw["worker_start_ray_commands"]:
        assert "0.0.0.0" not in command


def test_security_group_is_dedicated_and_states_ssh_from_a_cidr_only(raw: dict) -> None:
    # Ray's launcher opens SSH to 0.0.0.0/0 when it creates a group, and uses an existing group
    # unchanged: the file must state the whole outside ingress (SSH from a CIDR), created by
    # --create-security-group.
    security_group = raw["provider"]["security_group"]
    assert security_group["GroupName"]
    rules = security_group["IpPermissions"]
    assert rules
    for rule in rules:
        assert rule.get("IpProtocol") == "tcp" and rule.get("FromPort") == 22 == rule.get("ToPort"), rule
        cidrs = [r["CidrIp"] for r in rule["IpRanges"]]
        assert cidrs and "0.0.0.0/0" not in cidrs
    # A node with its own SecurityGroupIds would bypass that group's rules.
    for name, node_type in raw["available_node_types"].items():
        assert "SecurityGroupIds" not in node_type["node_config"], name


def _problems(raw: dict, tmp_path: Path, **changes) -> list[str]:
    broken = copy.deepcopy(raw)
    for dotted, value in changes.items():
        *parents, leaf = dotted.split("__")
        target = broken
        for key in parents:
            target = target[key]
        target[leaf] = value
    return security_problems(broken, tmp_path)


def test_validator_catches_each_security_regression(raw: dict, tmp_path: Path) -> None:
    assert security_problems(raw, tmp_path) == []
    token_at_root = {**raw["file_mounts"], "~/.ray/auth_token": "./ray_auth_token"}
    cases = {
        "holds the auth token": dict(file_mounts=token_at_root, rsync_exclude=["/.venv"]),
        "also matches the token's own mount": dict(rsync_exclude=raw["rsync_exclude"] + ["auth_token"]),
        "mount the auth token alone": dict(file_mounts={"~/mtgan-sweep": "."}),
        "pipes a download into a shell": dict(setup_commands=["curl -LsSf https://astral.sh/uv/install.sh | sh"]
                                              + raw["setup_commands"]),
        "checked with sha256sum -c": dict(setup_commands=[
            "test -x ~/.local/bin/uv || curl -fsSL -o uv.whl https://example.org/uv-latest.whl"]
            + [c for c in raw["setup_commands"] if "sha256" not in c]),
        "mode 600 before Ray starts": dict(setup_commands=[c for c in raw["setup_commands"] if "chmod" not in c]),
        "must state the SSH rule": dict(provider__security_group__IpPermissions=[]),
        "SSH from everywhere": dict(provider__security_group__IpPermissions=[
            {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}]),
        "opens more than SSH": dict(provider__security_group__IpPermissions=[
            {"IpProtocol": "tcp", "FromPort": 6379, "ToPort": 6379, "IpRanges": [{"CidrIp": "10.0.0.0/8"}]}]),
    }
    for needle, changes in cases.items():
        problems = _problems(raw, tmp_path, **changes)
        assert any(needle in p for p in problems), (needle, problems)
    with_ids = copy.deepcopy(raw)
    with_ids["available_node_types"]["gpu.1x"]["node_config"]["SecurityGroupIds"] = ["sg-123"]
    assert any("bypasses" in p for p in security_problems(with_ids, tmp_path))

    token = tmp_path / ".secrets" / "auth_token"
    token.parent.mkdir()
    token.write_text("x")
    token.chmod(0o644)
    assert any("readable by others" in p for p in security_problems(raw, tmp_path))
    token.chmod(0o600)
    assert security_problems(raw, tmp_path) == []


def test_cli_help_describes_every_flag() -> None:
    done = subprocess.run([sys.executable, "-m", "orchestrator.cluster", "--help"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Check a Ray cluster-launcher file offline" in done.stdout
    for flag in ("--create-security-group", "--vpc-id", "config"):
        described = re.search(rf"{flag}[^\n]*\n?\s+\S+", done.stdout)
        assert described, flag


def test_create_security_group_states_exactly_the_ingress(raw: dict) -> None:
    moto = pytest.importorskip("moto")
    import boto3

    with moto.mock_aws():
        ec2 = boto3.client("ec2", region_name="us-west-2")
        first = create_security_group(raw, ec2)
        assert first.startswith("created security group mtgan-sweep-ray")
        group = ec2.describe_security_groups(GroupNames=["mtgan-sweep-ray"])["SecurityGroups"][0]
        outside = [(r["IpProtocol"], r.get("FromPort"), r.get("ToPort"), ip["CidrIp"])
                   for r in group["IpPermissions"] for ip in r.get("IpRanges", [])]
        stated = raw["provider"]["security_group"]["IpPermissions"][0]
        assert outside == [("tcp", 22, 22, stated["IpRanges"][0]["CidrIp"])]
        members = [p["GroupId"] for r in group["IpPermissions"] for p in r.get("UserIdGroupPairs", [])]
        assert members == [group["GroupId"]]
        assert "already has exactly the stated ingress" in create_security_group(raw, ec2)

        # Someone opened 6379 to the world: the group is refused, never used as is.
        ec2.authorize_security_group_ingress(GroupId=group["GroupId"], IpPermissions=[
            {"IpProtocol": "tcp", "FromPort": 6379, "ToPort": 6379, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
        with pytest.raises(ValueError, match=r"exists with other ingress rules \(extra: .*6379"):
            create_security_group(raw, ec2)


def test_setup_installs_python311_and_the_pyproject_ray_pin(raw: dict) -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    pyproject_pins = _pinned_ray_versions(" ".join(pyproject["project"]["dependencies"]))
    assert len(pyproject_pins) == 1, pyproject_pins
    setup = " ".join(raw["setup_commands"] + raw["head_setup_commands"] + raw["worker_setup_commands"])
    assert _pinned_ray_versions(setup) == pyproject_pins
    assert "--python 3.11" in setup
    assert re.search(r"torch==2\.13\.\d", setup)
    # The project itself is synced and installed.
    project_mount = next(remote for remote, local in raw["file_mounts"].items() if local in (".", "./"))
    assert f"-e {project_mount}" in setup
