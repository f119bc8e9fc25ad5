"""Lists follow `next_cursor` to the end (or `--limit`); `--json` prints the API's JSON for scripts."""

from __future__ import annotations

import json
from typing import Any

from tests.cli.conftest import FakeLynx, Reply, Seen


def _paged(items: list[dict[str, Any]]):
    """A list endpoint as the API pages it: `limit` and `cursor` (the last id read), oldest first."""

    def serve(seen: Seen) -> Reply:
        limit = int(seen.param("limit") or 50)
        after = int(seen.param("cursor") or 0)
        rest = [item for item in items if item["id"] > after]
        page = rest[:limit]
        more = len(rest) > limit
        return Reply(200, {"items": page, "next_cursor": str(page[-1]["id"]) if more else None})

    return serve


def _deployments(count: int) -> list[dict[str, Any]]:
    return [
        {
            "id": n,
            "name": f"digits-{n:03d}",
            "state": "Healthy",
            "model": "digits",
            "model_version": 1,
            "cluster": "local-gpu",
            "replicas": 2,
            "owner": "dana",
            "scoring_uri": f"http://127.0.0.1:{9000 + n}/score",
            "extra": {"not": "shown"},
        }
        for n in range(1, count + 1)
    ]


def test_a_list_follows_next_cursor_until_the_last_page(lynx: FakeLynx, run):
    lynx.on("GET", "/api/v1/deployments", _paged(_deployments(450)))

    result = run("deployments", "list")

    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines[0].split() == [
        "NAME",
        "STATE",
        "MODEL",
        "VERSION",
        "CLUSTER",
        "REPLICAS",
        "OWNER",
        "SCORING",
        "URI",
    ]
    assert [line.split()[0] for line in lines[1:]] == [f"digits-{n:03d}" for n in range(1, 451)]
    cursors = [seen.param("cursor") for seen in lynx.requests_to("GET", "/api/v1/deployments")]
    assert cursors == [None, "200", "400"]


def test_limit_stops_reading_pages(lynx: FakeLynx, run):
    lynx.on("GET", "/api/v1/deployments", _paged(_deployments(450)))

    result = run("deployments", "list", "--limit", "205", "--json")

    answer = json.loads(result.out)
    assert [item["id"] for item in answer["items"]] == list(range(1, 206))
    # Where it stopped, so a script can read on from there.
    assert answer["next_cursor"] == "205"
    limits = [seen.param("limit") for seen in lynx.requests_to("GET", "/api/v1/deployments")]
    assert limits == ["200", "5"]


def test_list_json_is_every_page_in_the_apis_own_shape(lynx: FakeLynx, run):
    items = _deployments(3)
    lynx.on("GET", "/api/v1/deployments", _paged(items))

    result = run("deployments", "list", "--json")

    assert json.loads(result.out) == {"items": items, "next_cursor": None}


def test_show_json_prints_the_answer_as_it_came(lynx: FakeLynx, run):
    cluster = {
        "id": 3,
        "name": "local-gpu",
        "target": "local",
        "nodes": [{"name": "n0", "gpus": 1}],
        "ünï": "ok",
    }
    lynx.on("GET", "/api/v1/clusters/local-gpu", Reply(200, cluster))

    result = run("clusters", "show", "local-gpu", "--json")

    assert result.code == 0
    assert json.loads(result.out) == cluster


def test_a_table_aligns_its_columns_and_leaves_out_what_no_row_has(lynx: FakeLynx, run):
    lynx.on(
        "GET",
        "/api/v1/clusters",
        Reply(
            200,
            {
                "items": [
                    {"id": 1, "name": "local-gpu", "target": "local", "provisioning_state": "Succeeded"},
                    {"id": 2, "name": "a100-pool-east", "target": "azureml_aks", "provisioning_state": None},
                ],
                "next_cursor": None,
            },
        ),
    )

    out = run("clusters", "list").out.splitlines()

    assert out == [
        "NAME            TARGET       STATE",
        "local-gpu       local        Succeeded",
        "a100-pool-east  azureml_aks  -",
    ]


def test_an_empty_list_says_so(lynx: FakeLynx, run):
    lynx.on("GET", "/api/v1/models", Reply(200, {"items": [], "next_cursor": None}))

    assert run("models", "list").out == "No models.\n"


def test_a_name_is_sent_as_one_path_segment(lynx: FakeLynx, run):
    result = run("deployments", "show", "../clusters/x?y")

    assert result.code == 1
    assert [seen.path for seen in lynx.seen] == ["/api/v1/deployments/..%2Fclusters%2Fx%3Fy"]


def test_show_prints_fields_then_the_entry_script_as_a_block(lynx: FakeLynx, run):
    deployment = {
        "id": 4,
        "name": "digits-ci",
        "state": "Healthy",
        "canary": {"percent": 10, "revision": 3, "previous_revision": 2},
        "entry_script": "def init():\n    pass\n",
    }
    lynx.on("GET", "/api/v1/deployments/digits-ci", Reply(200, deployment))

    result = run("deployments", "show", "digits-ci")

    assert result.out == (
        "id      4\n"
        "name    digits-ci\n"
        "state   Healthy\n"
        'canary  {"percent": 10, "revision": 3, "previous_revision": 2}\n'
        "\n"
        "entry_script:\n"
        "  def init():\n"
        "      pass\n"
    )
