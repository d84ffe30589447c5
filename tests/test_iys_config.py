"""A wrong İYS code never makes an opt-out "handled": the pipeline dead-letters it, `doctor`
fails naming the variable, and `run` refuses to start (exit 2).  An unreachable İYS only warns."""

from __future__ import annotations

from pathlib import Path

import pytest

from keyrouter.cli import main
from keyrouter.ops.doctor_iys import check_iys
from keyrouter.rules.loader import load_rules
from keyrouter.rules.router import Router
from keyrouter.settings import Settings
from keyrouter.testing import FakeIletiMerkezi, FakeIys, pipeline, process
from tests.redis_server import free_port

RULES = """\
version: 1
rules:
  - name: optout
    keywords: [RET]
    handlers:
      - blacklist
      - iys
"""
NUMBER = "+905321112233"


@pytest.fixture
def rules(tmp_path: Path) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(RULES, encoding="utf-8")
    return path


@pytest.mark.anyio
@pytest.mark.parametrize("field", ["iys_code", "iys_brand_code"])
async def test_a_wrong_code_dead_letters_the_ret_never_handled(rules: Path, field: str) -> None:
    with FakeIletiMerkezi() as provider, FakeIys() as iys:
        wrong = {**iys.settings(), field: "700009"}
        async with pipeline(rules, fake=provider, retry_max=0.05, max_attempts=1,
                            **wrong) as runtime:
            ret = provider.add_message("RET", sender="05321112233", date="2026-11-27 09:15:00")
            await process(runtime, [ret])
            ledger = await runtime.store.optouts()
            dead = await runtime.store.dead_letters()
            pending = await runtime.store.pending_optouts()
    assert not [e for e in ledger if e.action == "iys_ret"]  # never "handled"
    assert [d.id for d in dead] == [ret["id"]]
    variable = "IYS_CODE" if field == "iys_code" else "IYS_BRAND_CODE"
    assert f"check {variable}" in dead[0].error
    assert [(p.message_id, p.action) for p in pending] == [(ret["id"], "iys_ret")]
    assert iys.records == []


def router_of(path: Path) -> Router:
    return Router(load_rules(str(path)))


@pytest.mark.anyio
async def test_doctor_check_passes_and_names_each_wrong_variable(rules: Path) -> None:
    with FakeIys() as iys:
        good = Settings.model_validate(iys.settings())
        assert (await check_iys(good, router_of(rules))).status == "ok"
        for field, variable in (("iys_code", "IYS_CODE"), ("iys_brand_code", "IYS_BRAND_CODE")):
            check = await check_iys(Settings.model_validate({**iys.settings(), field: "1"}),
                                    router_of(rules))
            assert check.status == "fail" and variable in check.fix, check
        bad_login = await check_iys(Settings.model_validate(
            {**iys.settings(), "iys_password": "wrong-pass"}), router_of(rules))
        assert bad_login.status == "fail" and "IYS_PASSWORD" in bad_login.fix
        assert "wrong-pass" not in bad_login.detail and iys.password not in bad_login.detail
        path = await check_iys(Settings.model_validate(
            {**iys.settings(), "iys_base_url": iys.base_url + "/x"}), router_of(rules))
        assert path.status == "fail"
        unreachable = await check_iys(Settings.model_validate(
            {**iys.settings(), "iys_base_url": f"http://127.0.0.1:{free_port()}"}),
            router_of(rules))
    assert unreachable.status == "warn"
    missing = await check_iys(Settings(), router_of(rules))
    assert missing.status == "fail" and "IYS_USERNAME" in missing.fix
    assert (await check_iys(Settings(), None)).status == "skip"


def iys_env(monkeypatch: pytest.MonkeyPatch, values: dict[str, str]) -> None:
    for field, value in values.items():
        monkeypatch.setenv(field.upper(), value)


def test_run_refuses_a_wrong_brand_code_and_doctor_exits_2(
        rules: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    with FakeIletiMerkezi() as provider, FakeIys() as iys:
        provider.add_message("RET", sender="05321112233", date="2026-11-27 09:15:00")
        monkeypatch.setenv("ILETIMERKEZI_API_KEY", provider.key)
        monkeypatch.setenv("ILETIMERKEZI_API_HASH", provider.hash)
        monkeypatch.setenv("ILETIMERKEZI_BASE_URL", provider.base_url)
        iys_env(monkeypatch, {**iys.settings(), "iys_brand_code": "700009"})
        store = f"sqlite:///{tmp_path / 'state.sqlite3'}"
        assert main(["run", "--once", "--rules", str(rules), "--store", store]) == 2
        err = capsys.readouterr().err
        assert "IYS_BRAND_CODE" in err and iys.password not in err
        assert provider.blacklist == set()  # nothing ran
        assert main(["doctor", "--rules", str(rules), "--store", store]) == 2
        out = capsys.readouterr().out
        assert any(line.startswith("fail  iys:") and "IYS_BRAND_CODE" in line
                   for line in out.splitlines()), out
        # the right code: run starts and the RET is handled
        iys.add_record(NUMBER, "ONAY")
        iys_env(monkeypatch, iys.settings())
        assert main(["run", "--once", "--rules", str(rules), "--store", store]) == 0
        assert iys.held(NUMBER)["status"] == "RET" and NUMBER in provider.blacklist


def test_run_starts_when_iys_is_unreachable(rules: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    with FakeIletiMerkezi() as provider, FakeIys() as iys:
        monkeypatch.setenv("ILETIMERKEZI_API_KEY", provider.key)
        monkeypatch.setenv("ILETIMERKEZI_API_HASH", provider.hash)
        monkeypatch.setenv("ILETIMERKEZI_BASE_URL", provider.base_url)
        iys_env(monkeypatch, {**iys.settings(), "iys_base_url": f"http://127.0.0.1:{free_port()}"})
        store = f"sqlite:///{tmp_path / 'state.sqlite3'}"
        assert main(["run", "--once", "--rules", str(rules), "--store", store]) == 0
        assert "İYS did not answer" in capsys.readouterr().err
