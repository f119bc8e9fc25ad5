"""`make run` reads the `.env` that .env.example tells people to create; what is exported wins."""

from __future__ import annotations

import os

from lynx.launcher import env_file_read


def test_a_dot_env_file_fills_the_environment_but_never_overrides_it(tmp_path, monkeypatch):
    env_file = tmp_path / ".env"
    env_file.write_text(
        "# a comment\nLYNX_TEST_FROM_FILE=from-file\nLYNX_TEST_EXPORTED=from-file\nLYNX_TEST_QUOTED='a b'\n"
    )
    monkeypatch.setenv("LYNX_TEST_EXPORTED", "exported")
    for name in ("LYNX_TEST_FROM_FILE", "LYNX_TEST_QUOTED"):
        monkeypatch.delenv(name, raising=False)
    loaded = env_file_read(env_file)
    try:
        assert sorted(loaded) == ["LYNX_TEST_FROM_FILE", "LYNX_TEST_QUOTED"]
        assert os.environ["LYNX_TEST_FROM_FILE"] == "from-file" and os.environ["LYNX_TEST_QUOTED"] == "a b"
        assert os.environ["LYNX_TEST_EXPORTED"] == "exported"
    finally:
        for name in loaded:
            os.environ.pop(name, None)


def test_no_dot_env_file_is_no_change(tmp_path):
    before = dict(os.environ)
    assert env_file_read(tmp_path / ".env") == [] and dict(os.environ) == before
