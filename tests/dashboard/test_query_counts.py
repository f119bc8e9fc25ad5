"""The busiest pages run the same number of SQL queries however much history there is.

Each page is counted with a small data set, then again after adding twice as much (three times the rows, a
history three times as long for the deployment whose page is read). A list that loads a related row per
item (an N+1) shows up as a count that grows; the failure names the page and the query that repeats.
Row counts stay under the pages' own limits (50 audit rows per page, 20 operations...), so that every extra
row is on the page.
"""

from __future__ import annotations

import re
from collections import Counter
from uuid import uuid4

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from bench.dataset import Dataset, populate
from bench.htmlform import form_data

pytestmark = pytest.mark.django_db

SMALL = {"deployments": 10, "audit_events": 12, "people": 4, "clusters": 3, "models": 2, "busy_history": 4}


def _pages(dataset: Dataset) -> dict[str, tuple[str, str]]:
    return {
        "overview": ("get", reverse("overview")),
        "deployment page": ("get", reverse("deployment_detail", args=[dataset.busy.pk])),
        "audit log, first page": ("get", reverse("audit_list")),
        "audit log, filtered": ("get", f"{reverse('audit_list')}?person={dataset.person}&action=deployment"),
        "deploy POST": ("post", reverse("deployment_new")),
    }


def _deploy_form(client, dataset: Dataset) -> dict[str, str]:
    page = client.get(reverse("deployment_new"))
    assert page.status_code == 200
    data = form_data(page.content.decode(), must_have="entry_script")
    data.update(name=f"qc-{uuid4().hex[:8]}", cluster=str(dataset.cluster.pk), model=str(dataset.model.pk))
    return data


def _shape(sql: str) -> str:
    """The query without its literals, so the same query for another row compares equal."""
    return re.sub(r"\b\d+\b|'[^']*'", "?", sql)


def _count(client, dataset: Dataset, method: str, url: str) -> list[str]:
    data = _deploy_form(client, dataset) if method == "post" else None
    with CaptureQueriesContext(connection) as queries:
        response = client.post(url, data) if method == "post" else client.get(url)
    assert response.status_code in (200, 302), f"{url}: {response.status_code}"
    if method == "post":
        assert response.status_code == 302, "the deploy form did not accept the submission"
    return [_shape(query["sql"]) for query in queries.captured_queries]


def _counts(client, dataset: Dataset) -> dict[str, list[str]]:
    counted = {}
    for page, (method, url) in _pages(dataset).items():
        _count(
            client, dataset, method, url
        )  # warm: first-use caches (content types, sessions) out of the way
        counted[page] = _count(client, dataset, method, url)
    return counted


def test_page_query_counts_do_not_grow_with_the_data(client, deployer):
    client.force_login(deployer)
    small = populate(prefix="s", seed=1, **SMALL)
    before = _counts(client, small)

    populate(prefix="t", seed=2, **{key: value * 2 for key, value in SMALL.items()})
    # The page measured at the larger size belongs to a deployment with a three times longer history.
    big = populate(prefix="u", seed=3, **{**SMALL, "busy_history": SMALL["busy_history"] * 3})
    after = _counts(client, big)

    grown = {}
    for page, queries in before.items():
        if len(after[page]) != len(queries):
            extra = Counter(after[page]) - Counter(queries)
            repeated = "; ".join(
                f"{n}x more: {re.sub(r'^SELECT .*? FROM', 'SELECT ... FROM', sql)[:200]}"
                for sql, n in extra.most_common(3)
            )
            grown[page] = f"{len(queries)} -> {len(after[page])} queries; {repeated}"
    assert not grown, "queries grow with the data:\n" + "\n".join(f"{p}: {w}" for p, w in grown.items())
    assert all(before.values()), "every page was counted"
