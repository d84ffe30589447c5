"""`keyrouter check` (shape errors with file:line, start keywords, example conversations),
`keyrouter explain --as SENDER` and `keyrouter survey results` for conversations."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import time
from pathlib import Path

import pytest

from keyrouter.cli import main
from keyrouter.conversations.steps import COMPLETED, OPEN, Record
from keyrouter.store import open_store

from .support import RULES, write_rules


def check(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str], str]:
    code = main(["check", "--rules", str(path)])
    captured = capsys.readouterr()
    return code, captured.err.splitlines(), captured.out


def test_the_issue_survey_checks_and_its_example_holds(tmp_path: Path, capsys) -> None:
    code, err, out = check(write_rules(tmp_path), capsys)
    assert code == 0, err
    assert "2 rules valid, 1 conversation(s), 1 examples hold" in out


def test_shape_errors_name_the_file_and_line(tmp_path: Path, capsys) -> None:
    text = RULES.replace("    expires: 24h\n", "    expire: 24h\n").replace(
        "      - id: callback\n", "      - id: reason\n").replace(
        "        text: true\n", "        text: true\n        colour: red\n")
    path = write_rules(tmp_path, text)
    code, err, _ = check(path, capsys)
    lines = text.splitlines()
    at = {name: lines.index(line) + 1 for name, line in (
        ("expire", "    expire: 24h"), ("colour", "        colour: red"))}
    assert code == 2
    assert f"{path}:{at['expire']}: conversation 'nps-2026': unknown key 'expire' (did you mean " \
           "'expires'?)" in err
    assert f"{path}:{at['colour']}: conversation 'nps-2026': unknown key 'colour'" in err


def test_duplicate_question_ids_and_bad_aliases(tmp_path: Path, capsys) -> None:
    text = RULES.replace("      - id: callback\n", "      - id: reason\n").replace(
        'aliases: {"5": ["bes", "👍"], "1": ["bir", "👎"]}',
        'aliases: {"5": ["bes", "👍"], "6": ["alti"], "1": ["bir", "👍🏽"]}')
    path = write_rules(tmp_path, text)
    code, err, _ = check(path, capsys)
    lines = text.splitlines()
    dup = [i + 1 for i, line in enumerate(lines) if line == "      - id: reason"][1]
    aliases = next(i for i, line in enumerate(lines) if "aliases:" in line) + 1
    assert code == 2
    assert f"{path}:{dup}: conversation 'nps-2026': duplicate question id 'reason' (question 2 " \
           "has it too)" in err
    assert any(e.startswith(f"{path}:{aliases}: ") and "'6', which is not one of the choices" in e
               for e in err), err
    assert any(e.startswith(f"{path}:{aliases}: ") and "'👍🏽' names both '5' and '1'" in e
               for e in err), err


def test_a_start_keyword_a_high_priority_rule_takes(tmp_path: Path, capsys) -> None:
    text = RULES.replace("keywords: [RET, IPTAL]", "keywords: [RET, IPTAL, SURVEY]")
    path = write_rules(tmp_path, text)
    code, err, _ = check(path, capsys)
    line = text.splitlines().index("    start: [ANKET, SURVEY]") + 1
    assert code == 2
    assert any(e.startswith(f"{path}:{line}: ") and "'SURVEY'" in e for e in err), err
    text = RULES.replace("keywords: [RET, IPTAL]\n    match: first_word",
                         "pattern: '(ret|iptal|survey)( .*)?'")
    code, err, _ = check(write_rules(tmp_path, text), capsys)
    line = text.splitlines().index("    start: [ANKET, SURVEY]") + 1
    assert code == 2
    assert any(f":{line}: conversation 'nps-2026': start keyword 'SURVEY' is taken by the "
               "priority: high rule 'optout'" in e for e in err), err


def test_an_example_that_does_not_hold(tmp_path: Path, capsys) -> None:
    text = RULES.replace('callback: EVET}', 'callback: HAYIR}').replace(
        '      - say: [ANKET, "5", "hizli teslimat", evet]',
        '      - say: [ANKET, "5", "hizli teslimat", evet]\n        status: completed\n'
        '      - say: [ANKET, "4", RET]\n        answers: {score: "4"}\n        status: opted_out\n'
        '      - say: [ANKET, "5", "hizli teslimat", evet]')
    path = write_rules(tmp_path, text)
    code, err, _ = check(path, capsys)
    assert code == 2
    assert len(err) == 2, err  # both copies of the first example fail; the opt-out one holds
    assert "ends with answers {'score': '5', 'reason': 'hizli teslimat', 'callback': 'EVET'}" \
           in err[0]


def seed(store_url: str, *records: Record) -> None:
    async def go() -> None:
        async with open_store(store_url, "default") as store:
            for r in records:
                assert await store.save_conversation(r, None)

    asyncio.run(go())


def test_explain_as_a_sender_with_an_open_conversation(tmp_path: Path, capsys,
                                                        monkeypatch) -> None:
    monkeypatch.delenv("KEYROUTER_NAMESPACE", raising=False)
    path = write_rules(tmp_path)
    store = f"sqlite:///{tmp_path}/s.sqlite3"
    seed(store, Record("nps-2026", "+905321112233", OPEN, 1, "m1", time.time(), time.time()))
    args = ["explain", "--rules", str(path), "--store", store, "--as", "05321112233"]
    assert main([*args, "merhaba", "RET"]) == 0
    out = capsys.readouterr().out
    first, second = out.split("\n'RET'")
    assert "has conversation 'nps-2026' open at question 2 'reason': this text is its answer" \
           in first and "+90532***2233" in first and "2233" not in first.replace("***2233", "")
    assert "has conversation" not in second  # the opt-out wins
    assert main([*args, "Anket"]) == 0
    assert "a start keyword: the current question is sent again" in capsys.readouterr().out
    assert main([*args, "--json", "5"]) == 0
    assert json.loads(capsys.readouterr().out)["as"] == {"conversation": "nps-2026",
                                                          "question": "reason"}
    other = ["explain", "--rules", str(path), "--store", store, "--as", "+905329999999", "5"]
    assert main(other) == 0
    assert "has conversation" not in capsys.readouterr().out


def test_survey_results_table_json_and_csv(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.delenv("KEYROUTER_NAMESPACE", raising=False)
    path = write_rules(tmp_path)
    store = f"sqlite:///{tmp_path}/s.sqlite3"
    now = time.time()
    seed(store,
         Record("nps-2026", "+905320000001", COMPLETED, 3, "a", now, now,
                answers={"score": "5", "reason": "hızlı, ucuz", "callback": "EVET"}),
         Record("nps-2026", "+905320000002", OPEN, 1, "b", now - 90000, now - 90000,
                answers={"score": "2"}),
         Record("nps-2026", "+905320000003", OPEN, 0, "c", now, now))
    args = ["survey", "results", "nps-2026", "--rules", str(path), "--store", store]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "score: 1 0, 2 1, 3 0, 4 0, 5 1 (2 answered)" in out
    assert "reason: 1 free-text answer(s)" in out
    assert "started 3, completed 1, expired 1, incomplete 0, opted out 0" in out
    assert main([*args, "--format", "json"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert lines[0] == {"respondent": "+90532***0001", "question": "score", "answer": "5",
                        "status": "completed"}
    assert lines[3] == {"respondent": "+90532***0002", "question": "score", "answer": "2",
                        "status": "expired"}
    assert lines[-1] == {"started": 3, "completed": 1, "expired": 1, "incomplete": 0,
                         "opted_out": 0}
    assert main([*args, "--format", "csv"]) == 0
    csv_lines = capsys.readouterr().out.splitlines()
    assert csv_lines[0] == "respondent,question,answer,status"
    assert '+90532***0001,reason,"hızlı, ucuz",completed' in csv_lines


def test_survey_results_csv_keeps_spreadsheet_formulas_from_running(tmp_path: Path, capsys,
                                                                     monkeypatch) -> None:
    monkeypatch.delenv("KEYROUTER_NAMESPACE", raising=False)
    path = write_rules(tmp_path)
    store = f"sqlite:///{tmp_path}/s.sqlite3"
    now = time.time()
    answer = '=HYPERLINK("http://example.invalid","tıkla")'
    seed(store, Record("nps-2026", "+905320000001", COMPLETED, 3, "a", now, now,
                       answers={"score": "5", "reason": answer, "callback": "-EVET"}))
    args = ["survey", "results", "nps-2026", "--rules", str(path), "--store", store]
    assert main([*args, "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert {r["question"]: r["answer"] for r in rows} == {
        "score": "5", "reason": "'" + answer, "callback": "'-EVET"}
    assert {r["respondent"] for r in rows} == {"+90532***0001"}  # a number is not a formula
    assert main([*args, "--format", "json"]) == 0  # JSON lines keep the answer as it was
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert {"respondent": "+90532***0001", "question": "reason", "answer": answer,
            "status": "completed"} in lines


def test_the_conversation_entries_cannot_be_written_in_a_rule(tmp_path: Path, capsys) -> None:
    text = RULES.replace("      - reply: {text: \"Merhaba!\"}", "      - conversation_reply")
    path = write_rules(tmp_path, text)
    code, err, _ = check(path, capsys)
    line = text.splitlines().index("      - conversation_reply") + 1
    assert code == 2
    assert err == [f"{path}:{line}: the conversation entries are added by keyrouter itself: "
                   "declare a conversation under `conversations:` (docs/conversations.md)"]
