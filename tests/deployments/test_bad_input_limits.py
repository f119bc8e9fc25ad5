"""Hostile text and images get a short, clear refusal, never a 500 or a message the size of an attack: a
score.py nested too deeply to parse, a YAML alias bomb, an upload over the limit that must not silently give
way to the text box; and a camera's JPEG (MPO) is a JPEG."""

from __future__ import annotations

import io

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image

from deployments.entry_scripts import check_entry_script
from deployments.environments import check_environment, default_entry_script
from deployments.models import Deployment, ScoringRun
from tests.deployments.conftest import login
from tests.deployments.factories import MINIMAL_SCRIPT, deploy_form_data, ready_cluster
from tests.deployments.test_test_scoring import DEFAULT_SCRIPT_ANSWER

GOOD = MINIMAL_SCRIPT

NESTED_SCRIPTS = {
    "100 000 open parentheses": "(" * 100_000,
    "100 000 unary minuses": "-" * 100_000 + "1",
    "a 200 000-term sum": "1" + "+1" * 200_000,
    "100 000 chained calls": "f" + "()" * 100_000,
    "deep brackets inside run": GOOD + "x = " + "[" * 5_000 + "]" * 5_000 + "\n",
}


@pytest.mark.parametrize("case", sorted(NESTED_SCRIPTS))
def test_a_score_py_nested_too_deeply_to_parse_gets_a_clear_error(case):
    check = check_entry_script(NESTED_SCRIPTS[case])
    assert not check.ok
    message = str(check.errors[0])
    assert message.startswith("score.py") and len(message) < 300
    assert "nested" in message or "syntax error" in message


@pytest.mark.django_db
def test_a_deeply_nested_score_py_is_refused_on_the_form_not_with_a_500(deployer, demo_model):
    cluster = ready_cluster(deployer)
    response = login(deployer).post(
        "/deployments/new/", deploy_form_data(cluster, demo_model, entry_script="-" * 100_000 + "1")
    )
    assert response.status_code == 400
    assert "nested too deeply" in response.content.decode()
    assert not Deployment.objects.exists()


BILLION_LAUGHS = """name: lol
dependencies:
  - &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
  - &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
  - &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
  - &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
  - &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
  - &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
  - &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
"""


@pytest.mark.parametrize(
    "text, message",
    [
        (BILLION_LAUGHS, "uses YAML aliases"),
        ("name: x\ndependencies: [{pip: &p [numpy]}, {pip: *p}]\n", "uses YAML aliases"),
        ("name: x\ndependencies: " + "[" * 30_000 + "]" * 30_000 + "\n", "nested too deeply"),
        ("name: x\ndependencies: [{conda: [" + "y, " * 5_000 + "y]}]\n", "Unexpected entry in dependencies"),
    ],
    ids=["billion laughs", "one alias", "deep nesting", "a long bad entry"],
)
def test_a_hostile_environment_gets_a_short_clear_error(text, message):
    check = check_environment(text)
    assert not check.ok
    assert any(message in error for error in check.errors), check.errors
    assert sum(len(error) for error in check.errors) < 1_000


@pytest.mark.django_db
def test_a_yaml_alias_bomb_is_refused_on_the_form_in_a_few_words(deployer, demo_model):
    cluster = ready_cluster(deployer)
    response = login(deployer).post(
        "/deployments/new/", deploy_form_data(cluster, demo_model, environment_yaml=BILLION_LAUGHS)
    )
    assert response.status_code == 400
    assert "uses YAML aliases" in response.content.decode() and len(response.content) < 500_000
    assert not Deployment.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    "field, what",
    [("entry_script_file", "entry script"), ("environment_file", "environment")],
)
def test_an_upload_over_the_limit_is_refused_not_replaced_by_the_text_box(field, what, deployer, demo_model):
    cluster = ready_cluster(deployer)
    big = SimpleUploadedFile("big.txt", b"# padding\n" * (150 * 1024))  # 1.5 MiB
    data = deploy_form_data(cluster, demo_model, entry_script=default_entry_script())
    response = login(deployer).post("/deployments/new/", {**data, field: big})
    assert response.status_code == 400
    assert f"The uploaded {what} is over 512 KiB" in response.content.decode()
    assert not Deployment.objects.exists()


def _mpo() -> bytes:
    """What a phone or a stereo camera writes: a JPEG, then more JPEG frames after it (Multi-Picture)."""
    first, second = Image.new("RGB", (64, 48), "white"), Image.new("RGB", (64, 48), "black")
    out = io.BytesIO()
    first.save(out, format="MPO", save_all=True, append_images=[second])
    return out.getvalue()


@pytest.mark.django_db
def test_a_cameras_multi_picture_jpeg_is_scored_as_a_jpeg(deployer, healthy_deployment, fake_endpoint):
    content = _mpo()
    assert Image.open(io.BytesIO(content)).format == "MPO"
    fake_endpoint.answer(200, DEFAULT_SCRIPT_ANSWER)
    response = login(deployer).post(
        f"/deployments/{healthy_deployment.pk}/test/", {"image": SimpleUploadedFile("IMG_0001.jpg", content)}
    )
    assert response.status_code == 200, response.content.decode()[-2000:]
    assert fake_endpoint.requests[0]["headers"]["Content-Type"] == "image/jpeg"
    assert fake_endpoint.requests[0]["body"] == content
    assert ScoringRun.objects.get().image_format == "JPEG"
