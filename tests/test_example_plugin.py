"""The example company package: installed for real, found through its entry point."""

from __future__ import annotations

import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from keyrouter.message import TURKEY
from keyrouter.rules import registry
from keyrouter.rules.loader import load_rules
from keyrouter.testing import FakeIletiMerkezi, pipeline, process

ACME = Path(__file__).parent.parent / "examples" / "acme"
pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    target = tmp_path_factory.mktemp("site")
    # Built from a copy: building in place would leave build/ and *.egg-info in examples/acme/.
    source = shutil.copytree(ACME, tmp_path_factory.mktemp("acme") / "acme",
                             ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--target", str(target), str(source)], check=True, capture_output=True)
    assert list(target.glob("acme_keyrouter-*.dist-info"))
    sys.path.insert(0, str(target))
    registry._entry_points.cache_clear()
    yield target
    sys.path.remove(str(target))
    registry._entry_points.cache_clear()
    for name in [m for m in sys.modules if m.startswith("acme_keyrouter")]:
        del sys.modules[name]


def row(fake: FakeIletiMerkezi, text: str, sender: str) -> dict:
    return fake.add_message(text, sender=sender, date=datetime.now(TURKEY).strftime("%Y-%m-%d %H:%M:%S"))


async def test_the_entry_point_name_routes_to_the_plugin(installed) -> None:
    rules = load_rules(ACME / "rules.yaml")
    assert [h.name for h in rules.rules[1].handlers] == ["acme_reservation"]
    with FakeIletiMerkezi() as fake:
        async with pipeline(ACME / "rules.yaml", fake=fake, sender="ACME") as runtime:
            rows = [row(fake, "ACME REZ 123456", "05321112233"), row(fake, "rez 999999", "05321112234")]
            report = await process(runtime, rows)
    assert report.done == 2
    found, unknown = sorted(fake.sent, key=lambda s: s.numbers)
    assert found.numbers == ("+905321112233",) and found.iys == "0" and found.sender == "ACME"
    assert "Ayşe Y." in found.text and "12.12.2026 19:30" in found.text and "Kod: 123456" in found.text
    assert unknown.text.startswith("999999 kodlu bir rezervasyon bulamadık")


def test_check_passes_on_the_example_rules(installed, capsys) -> None:
    from keyrouter.cli import main

    assert main(["check", "--rules", str(ACME / "rules.yaml")]) == 0
