"""The shared check of a refused command: `tinylm ...` exits 2 with one line on stderr (tests import it; pytest
puts tests/ on the path through its conftest)."""

from __future__ import annotations

import pytest

from tinylm.cli import main


def one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str], *words: str) -> str:
    """main(argv) exits 2 with one line on stderr, no traceback, holding every word; returns what it printed."""
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    for word in words:
        assert word in err, err
    return err
