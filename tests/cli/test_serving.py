"""A deployment at work from the command line: score, keys, logs; and the audit CSV and tokens."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.cli.conftest import BASE_DIR, FakeLynx, Reply, Seen

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


def _scored(seen: Seen) -> Reply:
    return Reply(
        200,
        {
            "id": 1,
            "status": "ok",
            "http_status": 200,
            "latency_ms": 12.345,
            "top_classes": [{"label": "seven", "score": 0.9712}, {"label": "one", "score": 0.0213}],
            "error": "",
            "image_name": "x.png",
            "image_format": "PNG",
            "created_at": "2025-01-01T00:00:00Z",
        },
    )


def test_score_sends_the_image_as_the_raw_body_and_prints_label_and_score(
    lynx: FakeLynx, run, tmp_path: Path
):
    lynx.on("POST", "/api/v1/deployments/digits-ci/score", _scored)
    # Named .jpg, but a PNG: its bytes say what it is.
    image = tmp_path / "seven.jpg"
    image.write_bytes(PNG)

    result = run("score", "digits-ci", str(image))

    assert result.code == 0, result.err
    assert result.out == "LABEL  SCORE\nseven  0.9712\none    0.0213\n\nlatency 12.3 ms\n"
    (seen,) = lynx.requests_to("POST", "/api/v1/deployments/digits-ci/score")
    assert seen.body == PNG
    assert seen.headers["Content-Type"] == "image/png"
    assert seen.param("image_name") == "seven.jpg"


def test_score_takes_a_jpeg_by_its_name_when_its_bytes_say_nothing(lynx: FakeLynx, run, tmp_path: Path):
    lynx.on("POST", "/api/v1/deployments/d/score", _scored)
    image = tmp_path / "x.jpeg"
    image.write_bytes(b"not really an image")

    run("score", "d", str(image))

    assert lynx.requests_to("POST", "/api/v1/deployments/d/score")[0].headers["Content-Type"] == "image/jpeg"


def test_a_scoring_run_that_failed_exits_1_with_its_error(lynx: FakeLynx, run, tmp_path: Path):
    failed = {
        "id": 2,
        "status": "error",
        "latency_ms": None,
        "top_classes": [],
        "error": "The replica timed out.",
    }
    lynx.on("POST", "/api/v1/deployments/d/score", Reply(200, failed))
    image = tmp_path / "x.png"
    image.write_bytes(PNG)

    result = run("score", "d", str(image))

    assert (result.code, result.err) == (1, "lynx: scoring failed: The replica timed out.\n")


def test_keys_are_masked_by_default(lynx: FakeLynx, run):
    lynx.on(
        "GET", "/api/v1/deployments/d/keys", Reply(200, {"primary": "abcd…wxyz", "secondary": "efgh…stuv"})
    )

    result = run("keys", "d")

    assert result.out == "primary    abcd…wxyz\nsecondary  efgh…stuv\n"
    assert lynx.requests_to("POST", "/api/v1/deployments/d/keys/reveal") == []


def test_reveal_prints_only_the_key(lynx: FakeLynx, run):
    lynx.on(
        "POST", "/api/v1/deployments/d/keys/reveal", Reply(200, {"key": "Primary", "secret": "s3cr3t-key"})
    )

    result = run("keys", "d", "--reveal", "primary")

    assert (result.code, result.out) == (0, "s3cr3t-key\n")
    assert lynx.requests_to("POST", "/api/v1/deployments/d/keys/reveal")[0].json() == {"key": "primary"}


def test_logs_print_each_replicas_lines(lynx: FakeLynx, run):
    lynx.on("GET", "/api/v1/deployments/d/logs", Reply(200, {"replicas": {"0": "a\nb\n", "1": "c\n"}}))

    result = run("logs", "d", "--lines", "20")

    assert result.out == "[0] a\n[0] b\n[1] c\n"
    assert lynx.requests_to("GET", "/api/v1/deployments/d/logs")[0].param("lines") == "20"


def test_logs_follow_prints_only_new_lines_and_ctrl_c_exits_0(lynx: FakeLynx, tmp_path: Path):
    # The tail is a window that slides as the replica writes: each poll overlaps the one before.
    windows = ["start\nready\n", "ready\nscored 1\n", "scored 1\nscored 2\n", "scored 1\nscored 2\n"]
    lynx.on("GET", "/api/v1/deployments/d/logs", *[Reply(200, {"replicas": {"0": w}}) for w in windows])
    out = tmp_path / "out.txt"
    env = {**os.environ, "LYNX_URL": lynx.url, "LYNX_TOKEN": "lynx_t", "PYTHONUNBUFFERED": "1"}
    with out.open("w") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cli", "logs", "d", "--follow"], cwd=BASE_DIR, env=env, stdout=sink
        )
        try:
            deadline = time.monotonic() + 30
            while len(lynx.requests_to("GET", "/api/v1/deployments/d/logs")) < 4:
                assert time.monotonic() < deadline, out.read_text()
                time.sleep(0.1)
            time.sleep(0.3)
            proc.send_signal(signal.SIGINT)  # Ctrl-C
            code = proc.wait(10)
        finally:
            proc.kill()
    assert code == 0
    assert out.read_text() == "start\nready\nscored 1\nscored 2\n"


def test_audit_csv_is_the_servers_file_as_it_came(lynx: FakeLynx, capsysbinary):
    csv_body = b'at,actor,via,action\r\n2025-01-02,dana,token ci,"deployment.create"\r\n'
    lynx.on("GET", "/api/v1/audit.csv", Reply(200, csv_body, {"Content-Type": "text/csv"}))

    from cli.main import main

    code = main(["audit", "--csv", "--action", "deployment", "--since", "2025-01-01"])

    assert code == 0
    assert capsysbinary.readouterr().out == csv_body
    (seen,) = lynx.requests_to("GET", "/api/v1/audit.csv")
    assert (seen.param("action"), seen.param("since"), seen.param("until")) == (
        "deployment",
        "2025-01-01",
        None,
    )


def test_audit_csv_with_a_limit_keeps_the_header_and_that_many_rows(lynx: FakeLynx, run):
    rows = 'at,message\r\n1,"two\nlines"\r\n2,b\r\n3,c\r\n'
    lynx.on("GET", "/api/v1/audit.csv", Reply(200, rows.encode(), {"Content-Type": "text/csv"}))

    result = run("audit", "--csv", "--limit", "2")

    assert result.out == 'at,message\r\n1,"two\nlines"\r\n2,b\r\n'


def test_audit_refuses_a_date_it_cannot_read_as_a_usage_error(lynx: FakeLynx, run):
    result = run("audit", "--since", "last tuesday")

    assert result.code == 2 and "is not a date (YYYY-MM-DD)" in result.err
    assert lynx.seen == []


def test_audit_table_names_the_token_a_change_came_through(lynx: FakeLynx, run):
    event = {
        "id": 5,
        "at": "2025-01-02T03:04:05.678+00:00",
        "actor": "dana",
        "via": "token ci",
        "action": "deployment.create",
        "resource_type": "deployment",
        "resource_name": "digits-ci",
        "message": "Deployed digits:1",
        "before": {},
        "after": {},
    }
    lynx.on("GET", "/api/v1/audit", Reply(200, {"items": [event], "next_cursor": None}))

    lines = run("audit", "--actor", "dana").out.splitlines()

    assert lines[0].split() == ["AT", "(UTC)", "ACTOR", "VIA", "ACTION", "TYPE", "RESOURCE", "MESSAGE"]
    assert lines[1].split() == [
        "2025-01-02", "03:04:05", "dana", "token", "ci", "deployment.create", "deployment", "digits-ci",
        "Deployed", "digits:1",
    ]  # fmt: skip


def test_tokens_create_prints_only_the_secret_on_stdout(lynx: FakeLynx, run):
    made = {
        "name": "ci",
        "prefix": "lynx_abcd",
        "read_only": True,
        "status": "active",
        "token": "lynx_abcdXYZ",
    }
    lynx.on("POST", "/api/v1/tokens", Reply(201, made))

    result = run("tokens", "create", "ci", "--read-only", "--expires-days", "30")

    assert result.out == "lynx_abcdXYZ\n"
    assert "shown once" in result.err
    assert lynx.requests_to("POST", "/api/v1/tokens")[0].json() == {
        "name": "ci",
        "read_only": True,
        "expires_days": 30,
    }


def test_the_command_line_imports_no_django_and_no_lynx_package():
    probe = (
        "import sys, cli.main; cli.main.build_parser(); "
        "import json; print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=BASE_DIR, env=env, capture_output=True, text=True, check=True
    )
    loaded = set(json.loads(done.stdout))
    lynx_packages = {
        "django",
        "ninja",
        "lynx",
        "api",
        "accounts",
        "deployments",
        "dashboard",
        "targets",
        "workers",
        "scoring",
    }
    assert "requests" in loaded
    assert not loaded & lynx_packages, loaded & lynx_packages


def test_python_dash_m_cli_is_the_command():
    done = subprocess.run(
        [sys.executable, "-m", "cli", "--version"], cwd=BASE_DIR, capture_output=True, text=True, timeout=60
    )
    assert (done.returncode, done.stdout) == (0, "lynx 0.1.0\n")
