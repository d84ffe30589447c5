"""keyrouter.testing's pipeline helpers, as a company would use them to test its own rules."""

from __future__ import annotations

import pytest
import recording

from keyrouter.testing import FakeIletiMerkezi, pipeline, process

pytestmark = pytest.mark.anyio


async def test_rows_through_the_pipeline_with_a_fake_provider(write_rules) -> None:
    recording.CALLS.clear()
    rules = write_rules("""
        version: 1
        normalize: {strip_prefixes: [ILT]}
        rules:
          - {name: optout, keywords: [RET], handlers: [recording:arecord]}
        default: {handlers: [recording:record]}
    """)
    with FakeIletiMerkezi() as fake:
        async with pipeline(rules, fake=fake) as runtime:
            rows = [fake.add_message("ILT RET"), fake.add_message("merhaba", sender="+905550001122")]
            report = await process(runtime, rows)
            assert report.done == 2
            assert (await process(runtime, rows)).done == 0  # processed once
            assert runtime.client is not None and repr(runtime.client).startswith("IletiMerkezi(")
    calls = sorted((c["rule"], c["kind"]) for c in recording.CALLS)
    assert calls == [("default", "sync"), ("optout", "async")]
    recording.CALLS.clear()
