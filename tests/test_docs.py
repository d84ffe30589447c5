"""The documentation stays true to the code: the site builds with no warning, its generated
reference names every setting and every command and flag, its examples (rules, commands, the
webhook verifier, the testing example) work as written, and the README stays a short front door
whose commands and links hold."""

from __future__ import annotations

import argparse
import html
import importlib.util
import os
import re
import shlex
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import anyio
import pytest
import yaml
from markdown.extensions.toc import slugify
from pydantic import Field

from keyrouter.cli import build_parser
from keyrouter.handlers.webhook import sign
from keyrouter.ops.metrics import Metrics
from keyrouter.rules.check import check_examples
from keyrouter.rules.loader import load_rules
from keyrouter.rules.registry import BUILTINS
from keyrouter.rules.router import Router
from keyrouter.rules.schema import FileModel, NormalizeModel, RuleModel
from keyrouter.settings import _ENV, Settings

ROOT = Path(__file__).parent.parent
DOCS = ROOT / "docs"
README = ROOT / "README.md"


def read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def pages() -> list[Path]:
    return sorted(p for p in DOCS.rglob("*.md") if "hooks" not in p.parts)


def blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, re.S)


def commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[
        tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every command and action of the parser, found without the docs generator's help."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield (*path, name), child
                yield from commands(child, (*path, name))


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site as `mkdocs build --strict` writes it (any warning fails the build)."""
    target = tmp_path_factory.mktemp("site")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(target)],
                          cwd=ROOT, capture_output=True, text=True, check=False, timeout=300,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert done.returncode == 0, done.stdout + done.stderr
    return target


def test_the_site_has_every_page_in_its_navigation(site: Path) -> None:
    nav = read(ROOT / "mkdocs.yml")
    for page in pages():
        name = page.relative_to(DOCS).as_posix()
        assert name in nav, f"mkdocs.yml: add {name} to nav"
        assert (site / name.removesuffix(".md").removesuffix("index") / "index.html").exists() or \
            (site / name.replace(".md", ".html")).exists()


def test_the_settings_reference_names_every_setting(site: Path) -> None:
    page = html.unescape(read(site / "reference" / "settings" / "index.html"))
    assert set(_ENV) == set(Settings.model_fields)
    for field, info in Settings.model_fields.items():
        assert _ENV[field] in page, f"reference/settings: {_ENV[field]} missing"
        assert info.description and " ".join(info.description.split()).split("`")[0] in page
        if info.default is not None:
            assert str(info.default) in page


def test_the_commands_reference_names_every_command_and_flag(site: Path) -> None:
    page = html.unescape(read(site / "reference" / "commands" / "index.html"))
    found = list(commands(build_parser()))
    assert {words[0] for words, _ in found} >= {"check", "explain", "run", "replay", "dead-letters",
                                                 "optouts", "survey", "doctor", "dashboard"}
    for words, parser in found:
        assert f"keyrouter {' '.join(words)}" in page, f"reference/commands: keyrouter {' '.join(words)}"
        for action in parser._actions:
            for option in action.option_strings:
                assert option in page, f"reference/commands: keyrouter {' '.join(words)} {option}"
            if not action.option_strings and not isinstance(action, argparse._SubParsersAction):
                assert (action.metavar or action.dest.upper()) in page


def test_the_reference_refuses_a_setting_without_a_description() -> None:
    """A new setting cannot reach the site undocumented: the build stops and names it."""
    spec = importlib.util.spec_from_file_location("docs_reference", DOCS / "hooks" / "reference.py")
    assert spec and spec.loader
    reference: ModuleType = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reference)
    assert "KEYROUTER_LEASE" in reference.settings_page()

    class Grown(Settings):
        new_knob: int = Field(1)

    reference.Settings = Grown
    with pytest.raises(reference.ReferenceError, match="new_knob"):
        reference.settings_page()


def test_the_rules_page_excerpt_is_the_shipped_file() -> None:
    shown = yaml.safe_load(blocks(read(DOCS / "rules.md"), "yaml")[0])
    shipped = yaml.safe_load(read(ROOT / "rules" / "main.yaml"))
    for document in (shown, shipped):  # the page shortens the examples
        for rule in document["rules"]:
            rule.pop("examples", None)
    assert shown == shipped


@pytest.mark.parametrize("source", [README, DOCS / "rules.md"], ids=["README", "rules.md"])
def test_every_complete_rules_file_shown_loads_and_its_examples_hold(source: Path, tmp_path: Path) -> None:
    complete = [b for b in blocks(read(source), "yaml") if b.startswith("version:")]
    assert complete
    for number, block in enumerate(complete):
        path = tmp_path / f"rules{number}.yaml"
        path.write_text(block, encoding="utf-8")
        rules = load_rules(path)
        problems, count = check_examples(Router(rules))
        assert not problems and count > 0, problems


def command_lines(text: str) -> Iterator[str]:
    """Each `keyrouter ...` command of the text's shell blocks, cut at pipes, redirections and
    `&&`, without comments or leading variable assignments."""
    for block in blocks(text, "sh"):
        for line in block.splitlines():
            line = line.split(" #", 1)[0]
            for part in re.split(r"&&|\|\||\||>", line):
                found = re.search(r"(?:^|\s)(keyrouter\s.*)$", part.strip())
                if found:
                    yield found.group(1).strip()


@pytest.mark.parametrize("source", [README, *pages()], ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_command_shown_parses(source: Path) -> None:
    parser = build_parser()
    for line in command_lines(read(source)):
        words = shlex.split(line)[1:]
        try:
            parser.parse_args(words)
        except SystemExit as exc:
            pytest.fail(f"{source.name}: `{line}` does not parse (exit {exc.code})")


def test_the_commands_are_found() -> None:
    shown = [line for source in (README, *pages()) for line in command_lines(read(source))]
    for name in ("replay", "check", "explain", "run", "doctor", "dead-letters", "optouts", "survey",
                 "dashboard"):
        assert any(line.startswith(f"keyrouter {name}") for line in shown), name


def test_the_webhook_page_verifier_accepts_keyrouters_signature() -> None:
    code = next(b for b in blocks(read(DOCS / "handlers.md"), "python") if "def verified" in b)
    namespace: dict[str, object] = {}
    exec(compile(code, "handlers.md", "exec"), namespace)
    verified = namespace["verified"]
    body = b'{"message": {"id": "1", "text": "RET"}}'
    assert callable(verified)
    assert verified(body, sign(b"s3cret", body), b"s3cret") is True
    assert verified(body + b" ", sign(b"s3cret", body), b"s3cret") is False
    assert verified(body, sign(b"other", body), b"s3cret") is False


def test_the_testing_example_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    code = next(b for b in blocks(read(DOCS / "handlers.md"), "python") if "keyrouter.testing" in b)
    namespace: dict[str, object] = {}
    exec(compile(code, "handlers.md", "exec"), namespace)
    test = namespace["test_optout_blacklists_the_sender"]
    monkeypatch.chdir(ROOT)  # the example reads rules/ relative to the repository
    assert callable(test)
    anyio.run(test)  # its own asserts: one message done, the sender blacklisted


def test_the_handler_examples_compile() -> None:
    for source in (README, DOCS / "handlers.md"):
        for code in blocks(read(source), "python"):
            compile(code, source.name, "exec")


def test_the_test_variables_are_documented() -> None:
    used = set()
    for path in (ROOT / "tests").rglob("*.py"):
        used |= set(re.findall(r'environ\.get\("(KEYROUTER_[A-Z0-9_]+)"', read(path)))
    assert used >= {"KEYROUTER_TEST_REDIS_URL", "KEYROUTER_E2E_REDIS_URL"}
    page = read(DOCS / "getting-started.md")
    assert not [var for var in used if var not in page], "docs/getting-started.md: document them"


def test_the_readme_is_a_front_door() -> None:
    text = read(README)
    assert len(text.splitlines()) <= 200
    assert "pip install -e '.[test]'" in text  # the set-up .ci/run follows
    assert re.search(r"^python -m pytest -q\s", text, re.M)  # the test command .ci/run runs
    assert "pip install -q -e '.[test]'" in read(ROOT / ".ci" / "run")
    assert "mkdocs build --strict" in read(ROOT / ".ci" / "run")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", read(page), flags=re.S)
    return {slugify(title.strip().replace("`", ""), "-") for title in re.findall(r"^#+ (.+)$", text, re.M)}


@pytest.mark.parametrize("source", [README, DOCS / "dashboard.md"], ids=["README", "dashboard.md"])
def test_the_links_resolve(source: Path) -> None:
    for target in re.findall(r"\]\(([^)\s]+)\)", read(source)):
        if target.startswith(("http://", "https://")):
            continue
        path, _, anchor = target.partition("#")
        file = (source.parent / path).resolve()
        assert file.exists(), f"{source.name}: {target}"
        if anchor:
            assert anchor in anchors(file), f"{source.name}: {target}: no such heading"


def test_bench_run_all_describes_the_machine_and_lists_every_benchmark() -> None:
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "run_all.py"), "--list"], cwd=ROOT,
                          capture_output=True, text=True, check=False, timeout=60)
    assert done.returncode == 0, done.stderr
    for label in ("cpu", "cores", "memory", "python", "redis", "load average"):
        assert re.search(rf"^  {label}\s+\S", done.stdout, re.M), label
    for script in sorted((ROOT / "bench").glob("bench_*.py")):
        assert f"bench/{script.name}" in done.stdout, f"bench/run_all.py: add {script.name}"
        assert f"`{script.name}`" in read(ROOT / "bench" / "README.md"), f"bench/README.md: {script.name}"


@pytest.mark.parametrize("source", [README, *pages()], ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_command_named_in_the_text_exists(source: Path) -> None:
    """`keyrouter X` and `keyrouter X Y` in the prose name a real command and action."""
    known = {" ".join(words) for words, _ in commands(build_parser())}
    text = re.sub(r"```.*?```", "", read(source), flags=re.S)
    for span in re.findall(r"`keyrouter ([^`]+)`", text):
        words = [w for w in span.split()[:2] if re.fullmatch(r"[a-z][a-z-]*", w)]
        if not words:  # `keyrouter --version`, `keyrouter COMMAND ...`
            continue
        assert words[0] in known, f"{source.name}: `keyrouter {span}`: no command {words[0]!r}"
        if len(words) == 2 and any(k.startswith(words[0] + " ") for k in known):
            assert " ".join(words) in known, f"{source.name}: `keyrouter {span}`: no such action"


def test_every_dependency_has_its_line() -> None:
    """Each package of pyproject.toml (runtime and every extra) says why it is there."""
    project = tomllib.loads(read(ROOT / "pyproject.toml"))["project"]
    page = read(DOCS / "dependencies.md")
    groups = {"Runtime": project["dependencies"], **{f"Extra `{name}`": requirements for name, requirements
                                                     in project["optional-dependencies"].items()}}
    for title, requirements in groups.items():
        assert f"## {title}\n" in page, f"docs/dependencies.md: add a section {title}"
        section = page.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]
        for requirement in requirements:
            name = re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0]
            if name == "keyrouter":  # an extra of its own, e.g. keyrouter[web]
                name = requirement.split(";")[0].strip()
            assert f"**{name}**" in section, f"docs/dependencies.md, {title}: say why {name}"


def test_the_rules_page_names_every_key_of_a_rules_file() -> None:
    page = read(DOCS / "rules.md")
    for model in (RuleModel, NormalizeModel):
        missing = [key for key in model.model_fields if f"| `{key}` |" not in page]
        assert not missing, f"docs/rules.md: add the keys {missing} of {model.__name__}"
    for key in FileModel.model_fields:
        assert f"`{key}:`" in page or f"`{key}: " in page, f"docs/rules.md: the file's key {key}"


def test_the_handlers_page_lists_every_built_in() -> None:
    page = read(DOCS / "handlers.md")
    missing = [name for name in BUILTINS if f"| `{name}` |" not in page]
    assert not missing, f"docs/handlers.md, Built-in handlers: add {missing}"


def test_the_operations_page_lists_every_metric() -> None:
    page = read(DOCS / "operations.md")
    families = {family.name for family in Metrics(process_metrics=False).registry.collect()}
    assert "keyrouter_messages" in families
    missing = [name for name in sorted(families) if f"`{name}" not in page]
    assert not missing, f"docs/operations.md, Metrics: add {missing}"
