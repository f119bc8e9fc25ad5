"""What the outside review of the command reproduced, each a test before its fix."""

from __future__ import annotations

import pytest

from cli.main import main


def test_a_token_with_a_stray_carriage_return_is_refused_without_printing_it(monkeypatch, capsys):
    """M3: requests raised InvalidHeader quoting the whole header, the secret in a CI log."""
    secret = "lynx_iHmWs7mjXDoh_yej5DgjcL-OFJ1zGhF5Y0joBJHNrfE"
    monkeypatch.setenv("LYNX_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("LYNX_TOKEN", secret + "\r\n x")
    code = main(["whoami"])
    out, err = capsys.readouterr()
    assert code == 3 and "LYNX_TOKEN" in err
    assert secret not in out + err


def test_a_trailing_newline_is_forgiven(monkeypatch, capsys):
    monkeypatch.setenv("LYNX_URL", "http://127.0.0.1:9")  # nothing listens on port 9 (discard)
    monkeypatch.setenv("LYNX_TOKEN", "lynx_abc\n")
    assert main(["whoami"]) == 5  # past the token check, to the (unreachable) server


@pytest.mark.parametrize("url", ["lynx.example.com", "ftp://lynx.example.com", "http://"])
def test_an_address_without_http_is_a_one_line_error(monkeypatch, capsys, url):
    monkeypatch.setenv("LYNX_URL", url)
    monkeypatch.setenv("LYNX_TOKEN", "lynx_abc")
    assert main(["whoami"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lynx: LYNX_URL is not an http:// or https:// address") and "Traceback" not in err


def test_plain_http_to_another_host_is_warned_about_once(monkeypatch, capsys):
    """L3: the token crossed the network in clear with no word."""
    monkeypatch.setenv("LYNX_URL", "http://lynx.invalid")
    monkeypatch.setenv("LYNX_TOKEN", "lynx_abc")
    main(["whoami"])
    err = capsys.readouterr().err
    assert err.count("over plain HTTP") == 1 and "lynx.invalid" in err
