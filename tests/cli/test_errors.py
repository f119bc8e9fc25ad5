"""Every failure is one line, `lynx: <the server's detail>`, and an exit code a script can act on."""

from __future__ import annotations

import socket
import time

import pytest

from tests.cli.conftest import FakeLynx, Reply, started


@pytest.mark.parametrize(
    ("status", "code"),
    [(400, 1), (404, 1), (409, 1), (401, 3), (403, 4), (500, 5), (502, 5), (503, 5)],
)
def test_each_refusal_has_its_exit_code(lynx: FakeLynx, run, status: int, code: int):
    lynx.on("GET", "/api/v1/deployments/digits-ci", Reply(status, {"detail": f"refused with {status}"}))

    result = run("deployments", "show", "digits-ci")

    assert result.code == code
    assert result.err == f"lynx: refused with {status}\n"
    assert result.out == ""


def test_the_error_line_is_the_servers_detail(lynx: FakeLynx, run):
    lynx.on("DELETE", "/api/v1/deployments/nope", Reply(404, {"detail": "No deployment named nope."}))

    result = run("deployments", "delete", "nope")

    assert (result.code, result.err) == (1, "lynx: No deployment named nope.\n")


def test_bad_input_gives_each_field_error_on_the_same_line(lynx: FakeLynx, run):
    lynx.on(
        "POST",
        "/api/v1/deployments",
        Reply(
            400,
            {
                "detail": "Ensure this value is less than or equal to 16.",
                "errors": {
                    "replicas": ["Ensure this value is less than or equal to 16."],
                    "cpu_cores": ["Ensure this value is greater than or equal to 0.1.", "Too\nsmall."],
                    "__all__": ["A GPU deployment needs a GPU cluster."],
                },
            },
        ),
    )

    result = run("deploy", "d", "--model", "digits", "--cluster", "c", "--replicas", "99", "--cpu", "0.01")

    assert result.code == 1
    assert result.err == (
        "lynx: replicas: Ensure this value is less than or equal to 16.; "
        "cpu_cores: Ensure this value is greater than or equal to 0.1.; cpu_cores: Too small.; "
        "A GPU deployment needs a GPU cluster.\n"
    )


def test_a_detail_that_says_more_than_the_fields_is_kept(lynx: FakeLynx, run):
    lynx.on(
        "POST",
        "/api/v1/clusters",
        Reply(400, {"detail": "Bad input.", "errors": {"target": ["No target kubernetes."]}}),
    )

    result = run("clusters", "create", "c", "--target", "kubernetes")

    assert result.err == "lynx: Bad input.; target: No target kubernetes.\n"


def test_an_answer_that_is_not_json_is_named_by_its_status(lynx: FakeLynx, run):
    lynx.on("GET", "/api/v1/clusters", Reply(502, b"<html>Bad Gateway</html>", {"Content-Type": "text/html"}))

    result = run("clusters", "list")

    assert result.code == 5
    assert result.err.startswith("lynx: 502 Bad Gateway from http://127.0.0.1:")
    assert result.err.count("\n") == 1


def test_a_lynx_that_cannot_be_reached_exits_5(lynx: FakeLynx, run, monkeypatch: pytest.MonkeyPatch):
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("LYNX_URL", f"http://127.0.0.1:{port}")

    result = run("clusters", "list")

    assert result.code == 5
    assert result.err == f"lynx: cannot reach Lynx at http://127.0.0.1:{port}: connection refused\n"


def test_rate_limited_it_waits_retry_after_once_and_goes_on(lynx: FakeLynx, run):
    lynx.on(
        "POST",
        "/api/v1/deployments/d/rollback",
        Reply(429, {"detail": "Over 600/m."}, {"Retry-After": "1"}),
        started(9),
    )

    began = time.monotonic()
    result = run("deployments", "rollback", "d", "2")

    assert result.code == 0, result.err
    assert time.monotonic() - began >= 1
    tries = lynx.requests_to("POST", "/api/v1/deployments/d/rollback")
    assert len(tries) == 2
    # The same Idempotency-Key both times: had the first one gone through, Lynx answers the same operation.
    keys = {seen.headers["Idempotency-Key"] for seen in tries}
    assert len(keys) == 1 and len(keys.pop()) == 32
    assert result.out.startswith("operation 9 queued: ")


def test_rate_limited_twice_exits_6(lynx: FakeLynx, run):
    lynx.on("GET", "/api/v1/clusters", Reply(429, {"detail": "Over 600/m."}, {"Retry-After": "0"}))

    result = run("clusters", "list")

    assert (result.code, result.err.splitlines()[-1]) == (6, "lynx: Over 600/m.")
    assert len(lynx.requests_to("GET", "/api/v1/clusters")) == 2


def test_a_usage_error_is_argparses_exit_2(lynx: FakeLynx, run):
    result = run("deploy", "digits-ci", "--cluster", "local-gpu")

    assert result.code == 2
    assert "the following arguments are required: --model" in result.err
    assert lynx.seen == []


def test_update_with_nothing_to_change_is_a_usage_error(lynx: FakeLynx, run):
    result = run("deployments", "update", "digits-ci")

    assert result.code == 2
    assert result.err.startswith("lynx: nothing to change")
    assert lynx.seen == []


def test_a_redirect_names_the_address_to_use(lynx: FakeLynx, run):
    lynx.on(
        "GET", "/api/v1/clusters", Reply(301, b"", {"Location": "https://lynx.example.com/api/v1/clusters"})
    )

    result = run("clusters", "list")

    assert result.code == 1
    assert "redirects to https://lynx.example.com/api/v1/clusters" in result.err


def test_version_and_help(run):
    version = run("--version")
    assert (version.code, version.out) == (0, "lynx 0.1.0\n")
    helped = run("--help")
    assert helped.code == 0
    assert "lynx deploy digits-ci --model digits:1" in helped.out and "exit codes:" in helped.out
