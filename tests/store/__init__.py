"""Store backends: one contract suite (contract.py) run against every backend."""

import pytest

# contract.py is not a test_*.py file: ask pytest to rewrite its asserts too, for useful failures.
pytest.register_assert_rewrite(f"{__name__}.contract")
