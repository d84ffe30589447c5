"""The deployment files in deploy/: parsed, and their production settings checked."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"


def dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) with continuation lines joined and comments dropped."""
    joined, current = [], ""
    for raw in (DEPLOY / "Dockerfile").read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        current += " " + line.removesuffix("\\").strip()
        if not line.endswith("\\"):
            joined.append(current.strip())
            current = ""
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in joined]


def unit() -> dict[str, dict[str, list[str]]]:
    sections: dict[str, dict[str, list[str]]] = {}
    section = ""
    for raw in (DEPLOY / "keyrouter.service").read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            sections[section] = {}
            continue
        key, _, val = line.partition("=")
        sections[section].setdefault(key.strip(), []).append(val.strip())
    return sections


def seconds(text: str) -> float:
    return float(str(text).removesuffix("s"))


def env_list(entries: list[dict[str, Any]]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in entries}


def test_dockerfile_slim_non_root_from_the_repo_with_a_healthcheck() -> None:
    steps = dockerfile()
    kinds = [k for k, _ in steps]
    base = dict(steps)["FROM"]
    assert base.startswith("python:3.1") and "slim" in base
    user = [a for k, a in steps if k == "USER"]
    assert user and user[-1] not in ("root", "0")
    assert kinds.index("USER") > max(i for i, k in enumerate(kinds) if k == "RUN"), "RUN as root after USER"
    runs = " ".join(a for k, a in steps if k == "RUN")
    assert "pip install ." in runs and "[web]" not in runs  # the package from the repo, lean
    copies = [a for k, a in steps if k == "COPY"]
    assert any("keyrouter" in c for c in copies) and any("pyproject.toml" in c for c in copies)
    assert '"keyrouter", "run"' in dict(steps)["CMD"]
    health = dict(steps)["HEALTHCHECK"]
    assert "/healthz" in health and "9464" in health
    env = dict(steps)["ENV"]
    assert "KEYROUTER_METRICS_ADDR=:9464" in env
    assert dict(steps)["STOPSIGNAL"] == "SIGTERM"


def test_compose_redis_persists_and_never_evicts() -> None:
    doc = yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))
    redis, worker = doc["services"]["redis"], doc["services"]["keyrouter"]
    command = redis["command"]
    command = command if isinstance(command, list) else shlex.split(command)
    flags = dict(zip(command[1::2], command[2::2], strict=False))
    assert flags["--appendonly"] == "yes" and flags["--maxmemory-policy"] == "noeviction"
    assert worker["environment"]["KEYROUTER_STORE"].startswith("redis://redis:")
    assert worker["build"]["dockerfile"] == "deploy/Dockerfile"
    assert worker["depends_on"]["redis"]["condition"] == "service_healthy"
    assert "keyrouter.env" in worker["env_file"]  # secrets from a file, not the compose file
    assert "ILETIMERKEZI_API_KEY" not in worker["environment"]
    handler = float(worker["environment"]["KEYROUTER_HANDLER_TIMEOUT"])
    grace = float(worker["environment"]["KEYROUTER_SHUTDOWN_GRACE"])
    assert seconds(worker["stop_grace_period"]) > max(handler, grace)
    assert worker["stop_signal"] == "SIGTERM" and worker["restart"] == "on-failure"


def test_systemd_unit_restarts_stops_gracefully_and_reads_secrets_from_a_file() -> None:
    service = unit()["Service"]
    assert service["Restart"] == ["on-failure"]
    assert service["KillSignal"] == ["SIGTERM"]
    assert service["EnvironmentFile"] == ["/etc/keyrouter/keyrouter.env"]
    env = dict(e.split("=", 1) for e in service["Environment"])
    assert not any(k.startswith("ILETIMERKEZI_API") for k in env), "secrets belong in the EnvironmentFile"
    stop = seconds(service["TimeoutStopSec"][0])
    assert stop > float(env["KEYROUTER_HANDLER_TIMEOUT"]) and stop > float(env["KEYROUTER_SHUTDOWN_GRACE"])
    assert service["ExecStart"][0].endswith("keyrouter run")
    assert service["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert service["User"] != ["root"]
    assert unit()["Install"]["WantedBy"] == ["multi-user.target"]


def verify_copy(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at this environment's keyrouter, so verify can find it."""
    exe = shutil.which("keyrouter") or str(Path(sys.executable).parent / "keyrouter")
    text = (DEPLOY / "keyrouter.service").read_text(encoding="utf-8")
    copy = tmp_path / "keyrouter.service"
    copy.write_text(text.replace("/opt/keyrouter/bin/keyrouter", exe), encoding="utf-8")
    return copy


def test_systemd_analyze_verifies_the_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing (Debian: apt-get install systemd)"
    done = subprocess.run([analyze, "verify", str(verify_copy(tmp_path))], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "keyrouter.service" not in done.stderr, done.stderr  # no warning about our unit


def test_kubernetes_deployment_probes_grace_and_secrets() -> None:
    docs = [d for d in yaml.safe_load_all((DEPLOY / "kubernetes.yaml").read_text(encoding="utf-8")) if d]
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    port = ports[container["livenessProbe"]["httpGet"]["port"]]
    env = env_list(container["env"])
    assert env["KEYROUTER_METRICS_ADDR"] == f":{port}"
    handler, grace = float(env["KEYROUTER_HANDLER_TIMEOUT"]), float(env["KEYROUTER_SHUTDOWN_GRACE"])
    assert pod["terminationGracePeriodSeconds"] > max(handler, grace)
    assert pod["terminationGracePeriodSeconds"] <= max(handler, grace) + 60  # matching, not arbitrary
    for secret in ("ILETIMERKEZI_API_KEY", "ILETIMERKEZI_API_HASH", "KEYROUTER_STORE"):
        assert "secretKeyRef" in env[secret], secret
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["args"][:2] == ["keyrouter", "run"]


def docker_answers() -> bool:
    docker = shutil.which("docker")
    if not docker:
        return False
    try:
        return subprocess.run([docker, "info"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def test_the_image_builds_and_runs_keyrouter_version() -> None:
    if not docker_answers():
        message = "no Docker daemon answers on this machine: the image was not built or run"
        print(message, file=sys.__stderr__)
        pytest.skip(message)
    tag = f"keyrouter-test:{uuid.uuid4().hex[:8]}"
    try:
        built = subprocess.run(["docker", "build", "-f", str(DEPLOY / "Dockerfile"), "-t", tag, str(REPO)],
                               capture_output=True, text=True, timeout=900, env=os.environ.copy())
        assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
        ran = subprocess.run(["docker", "run", "--rm", tag, "keyrouter", "--version"], capture_output=True,
                             text=True, timeout=120)
        assert ran.returncode == 0 and "keyrouter" in ran.stdout + ran.stderr, ran.stderr
        user = subprocess.run(["docker", "run", "--rm", tag, "id", "-u"], capture_output=True, text=True,
                              timeout=120)
        assert user.stdout.strip() not in ("", "0")
    finally:
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True, timeout=120)
