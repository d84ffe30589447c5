"""The documented public imports keep working whatever the package layout inside: the names of
`keyrouter` and `keyrouter.testing`, the built-in handler names, the `keyrouter` command and
`python -m keyrouter.cli`."""

from __future__ import annotations

import importlib
import subprocess
import sys
from importlib.metadata import entry_points

import keyrouter
import keyrouter.testing
from keyrouter.rules.registry import BUILTINS, resolve

DOCUMENTED = {"Context", "Message", "Match", "Route", "Router", "RulesError", "load_rules",
              "PermanentError", "RetryLater", "ApiError", "AuthenticationRefused",
              "PermanentApiError", "TransientApiError"}
TESTING = {"FakeIletiMerkezi", "FakeIys", "pipeline", "process", "inbox_response", "SentSms",
           "RecordedRequest", "ENDPOINTS"}


def test_every_documented_name_imports_from_keyrouter() -> None:
    assert set(keyrouter.__all__) >= DOCUMENTED
    for name in keyrouter.__all__:
        assert getattr(keyrouter, name) is not None, name


def test_keyrouter_testing_exports_the_fakes_and_the_pipeline() -> None:
    assert set(keyrouter.testing.__all__) == TESTING
    for name in TESTING:
        assert getattr(keyrouter.testing, name) is not None, name


def test_every_built_in_handler_resolves_to_a_callable() -> None:
    for name, target in BUILTINS.items():
        module, _, attr = target.partition(":")
        assert callable(getattr(importlib.import_module(module), attr)), name
        assert callable(resolve(name)), name


def test_the_console_script_points_at_the_cli() -> None:
    scripts = {ep.name: ep.value for ep in entry_points(group="console_scripts")}
    assert scripts["keyrouter"] == "keyrouter.cli:main"


def test_python_m_keyrouter_cli_runs_the_command() -> None:
    done = subprocess.run([sys.executable, "-m", "keyrouter.cli", "--version"], capture_output=True,
                          text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("keyrouter ")
