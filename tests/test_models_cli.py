"""`python -m audit.models`: info on a local folder, one-line errors with exit status 2."""

from __future__ import annotations

import pytest

from audit.models.__main__ import main


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    monkeypatch.setenv("SUBAUDIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))


def test_info_prints_source_path_and_hash(tmp_path, capsys):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    assert main(["info", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "local" in out and str(folder) in out and "content hash" in out


def test_unknown_model_exits_2_with_one_line(capsys):
    assert main(["info", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: unknown model 'nope'") and "\n" not in err


def test_prepare_rejects_unknown_alias():
    with pytest.raises(SystemExit):
        main(["prepare", "gpt5"])
