"""Where `lynx` finds Lynx and its token: the environment, else the file `lynx login` writes (0600)."""

from __future__ import annotations

import io
import json
import stat
from pathlib import Path

import pytest

from tests.cli.conftest import FakeLynx, Reply

ME = {"username": "dana", "role": "deployer", "teams": ["vision"], "token": None}


def _signed_in_with(server: FakeLynx) -> list[str]:
    return [seen.headers.get("Authorization", "") for seen in server.requests_to("GET", "/api/v1/me")]


def test_login_checks_the_token_and_writes_the_config_file_with_mode_0600(
    lynx: FakeLynx, run, config_home: Path, monkeypatch: pytest.MonkeyPatch
):
    lynx.on("GET", "/api/v1/me", Reply(200, ME))
    monkeypatch.delenv("LYNX_URL")
    monkeypatch.delenv("LYNX_TOKEN")
    monkeypatch.setattr("sys.stdin", io.StringIO("lynx_from-the-page\n"))

    result = run("login", "--url", lynx.url + "/")

    assert result.code == 0, result.err
    assert "as dana (deployer)" in result.out
    assert _signed_in_with(lynx) == ["Bearer lynx_from-the-page"]
    path = config_home / "lynx" / "config.json"
    assert json.loads(path.read_text()) == {"url": lynx.url, "token": "lynx_from-the-page"}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_login_asks_a_terminal_for_the_token_without_echo(
    lynx: FakeLynx, run, config_home: Path, monkeypatch: pytest.MonkeyPatch
):
    lynx.on("GET", "/api/v1/me", Reply(200, ME))

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr("sys.stdin", Terminal(""))
    monkeypatch.setattr("getpass.getpass", lambda prompt: "lynx_typed")

    assert run("login").code == 0
    assert _signed_in_with(lynx) == ["Bearer lynx_typed"]


def test_login_with_a_refused_token_writes_nothing_and_exits_3(
    lynx: FakeLynx, run, config_home: Path, monkeypatch: pytest.MonkeyPatch
):
    lynx.on("GET", "/api/v1/me", Reply(401, {"detail": "Unknown token."}))
    monkeypatch.setattr("sys.stdin", io.StringIO("lynx_wrong\n"))

    result = run("login")

    assert (result.code, result.err) == (3, "lynx: Unknown token.\n")
    assert not (config_home / "lynx" / "config.json").exists()


def test_login_rewrites_a_looser_file_as_0600(
    lynx: FakeLynx, run, config_home: Path, monkeypatch: pytest.MonkeyPatch
):
    lynx.on("GET", "/api/v1/me", Reply(200, ME))
    path = config_home / "lynx" / "config.json"
    path.parent.mkdir(parents=True)
    path.write_text('{"url": "http://old", "token": "lynx_old"}')
    path.chmod(0o644)
    monkeypatch.setattr("sys.stdin", io.StringIO("lynx_new\n"))

    assert run("login").code == 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text())["token"] == "lynx_new"


def _write_config(config_home: Path, url: str, token: str) -> Path:
    path = config_home / "lynx" / "config.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"url": url, "token": token}))
    return path


def test_the_config_file_is_used_when_the_environment_says_nothing(
    lynx: FakeLynx, run, config_home: Path, monkeypatch: pytest.MonkeyPatch
):
    lynx.on("GET", "/api/v1/me", Reply(200, ME))
    _write_config(config_home, lynx.url, "lynx_saved")
    monkeypatch.delenv("LYNX_URL")
    monkeypatch.delenv("LYNX_TOKEN")

    assert run("whoami").code == 0
    assert _signed_in_with(lynx) == ["Bearer lynx_saved"]


def test_the_environment_wins_over_the_config_file(
    lynx: FakeLynx, run, config_home: Path, monkeypatch: pytest.MonkeyPatch
):
    lynx.on("GET", "/api/v1/me", Reply(200, ME))
    # The saved URL is a port nobody listens on: only LYNX_URL can reach the server.
    _write_config(config_home, "http://127.0.0.1:9", "lynx_saved")
    monkeypatch.setenv("LYNX_TOKEN", "lynx_from-env")

    result = run("whoami")

    assert result.code == 0, result.err
    assert _signed_in_with(lynx) == ["Bearer lynx_from-env"]


def test_lynx_url_alone_points_the_saved_token_at_another_server(
    lynx: FakeLynx, run, config_home: Path, monkeypatch: pytest.MonkeyPatch
):
    lynx.on("GET", "/api/v1/me", Reply(200, ME))
    _write_config(config_home, "http://127.0.0.1:9", "lynx_saved")
    monkeypatch.delenv("LYNX_TOKEN")

    assert run("whoami").code == 0
    assert _signed_in_with(lynx) == ["Bearer lynx_saved"]


def test_the_config_file_lives_under_dot_config_without_xdg_config_home(
    lynx: FakeLynx, run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    lynx.on("GET", "/api/v1/me", Reply(200, ME))
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.setattr("sys.stdin", io.StringIO("lynx_home\n"))

    assert run("login").code == 0
    assert json.loads((tmp_path / "home" / ".config" / "lynx" / "config.json").read_text())["token"] == (
        "lynx_home"
    )


def test_logout_removes_the_config_file(lynx: FakeLynx, run, config_home: Path):
    path = _write_config(config_home, lynx.url, "lynx_saved")

    result = run("logout")

    assert result.code == 0
    assert not path.exists()
    assert run("logout").out.startswith("Not signed in")


def test_without_a_token_it_says_how_to_sign_in_and_exits_3(
    lynx: FakeLynx, run, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.delenv("LYNX_TOKEN")

    result = run("clusters", "list")

    assert result.code == 3
    assert result.err == "lynx: not signed in: run `lynx login` or set LYNX_TOKEN\n"
    assert lynx.seen == []
