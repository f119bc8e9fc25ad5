"""Test scoring from the dashboard: check an image, POST its raw bytes to the scoring URI with the key, as
the how-to's client does, and keep what happened (a ScoringRun) for the deployment's page.

The image is checked before anything is sent: Pillow must identify and verify it, it must be a JPEG or PNG
of at most 10 MB and at most MAX_IMAGE_PIXELS pixels (a small file can decode to gigabytes: a
decompression bomb). Every way the endpoint can fail becomes a sentence for the user, never an exception.
No database transaction is open while the request is in flight.
"""

from __future__ import annotations

import http.cookiejar
import io
import json
import math
import threading
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import requests
import urllib3
from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone
from PIL import Image, UnidentifiedImageError

from deployments.backends.base import BackendError
from deployments.crypto import decrypt
from deployments.models import Deployment, ScoringRun
from deployments.states import ServiceState

from .audit import actor_name, audit_record
from .operations import Refused
from .specs import backend_for, service_spec

MAX_IMAGE_BYTES = 10 * 1024 * 1024
# Pillow's own guard (Image.MAX_IMAGE_PIXELS, ~89 MP, DecompressionBombError at twice that) is looser than
# a web process should be: 50 MP is an 8660 x 5770 photo, ~150 MB once decoded.
MAX_IMAGE_PIXELS = 50_000_000
ACCEPTED_FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png"}
# Pillow names a camera's Multi-Picture JPEG "MPO": JPEG bytes, with the extra frames after the first image,
# which every JPEG decoder (TensorFlow's too) reads as the first image. It is sent, and kept, as a JPEG.
_FORMAT_AS = {"MPO": "JPEG"}
THUMBNAIL_SIZE = (192, 192)
TOP_K = 5
EXCERPT_CHARS = 16_000


class ImageRefused(Refused):
    """The image was not sent: the message says what is wrong with it."""


@dataclass(frozen=True)
class CheckedImage:
    format: str
    content_type: str
    width: int
    height: int
    thumbnail: bytes  # PNG


@dataclass
class Outcome:
    status_code: int | None = None
    latency_ms: float | None = None
    top_classes: list[dict] = field(default_factory=list)
    response_excerpt: str = ""
    error: str = ""


def _open(data: bytes) -> Image.Image:
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            return Image.open(io.BytesIO(data))
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise ImageRefused(
                "The image declares more pixels than Lynx will decode "
                "(a decompression bomb?); nothing was sent."
            ) from None
        except UnidentifiedImageError:
            raise ImageRefused("The file is not an image Pillow can read: choose a JPEG or PNG.") from None
        except Exception as exc:  # noqa: BLE001 - Pillow raises many types for damaged headers
            raise ImageRefused(f"The image file is damaged ({exc}); nothing was sent.") from None


def _thumbnail(data: bytes) -> bytes:
    image = _open(data)
    image.draft("RGB", THUMBNAIL_SIZE)  # JPEG: decode at a reduced scale, not the full photo
    image.thumbnail(THUMBNAIL_SIZE)
    if image.mode not in ("RGB", "RGBA", "L", "LA"):
        image = image.convert("RGBA" if image.mode in ("P", "PA") else "RGB")
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return out.getvalue()


def image_check(data: bytes) -> CheckedImage:
    """Identify, verify and thumbnail an image.

    Raise ImageRefused with the reason when it must not be sent.
    """
    if not data:
        raise ImageRefused("The file is empty: choose a JPEG or PNG.")
    if len(data) > MAX_IMAGE_BYTES:
        raise ImageRefused(
            f"The image is {len(data) / 2**20:.1f} MB; "
            f"the limit is {MAX_IMAGE_BYTES // 2**20} MB. Nothing was sent."
        )
    image = _open(data)
    image_format = _FORMAT_AS.get(image.format or "", image.format)
    if image_format not in ACCEPTED_FORMATS:
        raise ImageRefused(f"The file is a {image.format} image; the test page sends JPEG or PNG.")
    width, height = image.size
    if width * height > MAX_IMAGE_PIXELS:
        raise ImageRefused(
            f"The image is {width} x {height} pixels, "
            f"over the {MAX_IMAGE_PIXELS // 1_000_000} megapixel limit "
            "(a decompression bomb?); nothing was sent."
        )
    try:
        image.verify()  # checks the structure (PNG CRCs, JPEG markers) without decoding pixels
        thumbnail = _thumbnail(data)  # decodes: finds truncated data that verify() cannot
    except ImageRefused:
        raise
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types for damaged files
        raise ImageRefused(f"The {image_format} file is damaged ({exc}); nothing was sent.") from None
    return CheckedImage(image_format, ACCEPTED_FORMATS[image_format], width, height, thumbnail)


# --- reading the endpoint's answer --------------------------------------------------------------------


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _label(index: int | None, labels: list[str]) -> str:
    if index is not None and 0 <= index < len(labels):
        return labels[index]
    return str(index) if index is not None else "?"


def top_classes(payload: Any, labels: list[str], k: int = TOP_K) -> list[dict]:
    """The best classes in a scoring response, best first: [{"label", "probability", "class"}].

    Understands the default entry script's `{"predictions": [{"class", "label", "probability"}]}`, a mapping
    {label: score}, a list of probabilities (or a batch of one), and the same under "predictions",
    "probabilities", "scores" or "result". Anything else gives [] and the page shows the raw JSON.
    """
    if isinstance(payload, dict):
        for key in ("predictions", "probabilities", "scores", "result", "outputs"):
            if key in payload:
                return top_classes(payload[key], labels, k)
        pairs = [(str(name), _number(value)) for name, value in payload.items()]
        scored = [(name, score) for name, score in pairs if score is not None]
        if pairs and len(scored) == len(pairs):
            ranked = sorted(scored, key=lambda pair: pair[1], reverse=True)[:k]
            return [{"label": name, "probability": score, "class": None} for name, score in ranked]
        return []
    if not isinstance(payload, list) or not payload:
        return []
    if len(payload) == 1 and isinstance(payload[0], list):
        return top_classes(payload[0], labels, k)
    if all(isinstance(item, dict) for item in payload):
        found: list[dict[str, Any]] = []
        for item in payload:
            score = next(
                (_number(item.get(key)) for key in ("probability", "score", "confidence") if key in item),
                None,
            )
            index = item.get("class") if isinstance(item.get("class"), int) else None
            label = item.get("label") or item.get("name") or _label(index, labels)
            if score is not None:
                found.append({"label": str(label), "probability": score, "class": index})
        return sorted(found, key=lambda entry: entry["probability"], reverse=True)[:k]
    scores = [_number(item) for item in payload]
    numbers = [score for score in scores if score is not None]
    if len(numbers) == len(scores):
        best = sorted(range(len(numbers)), key=lambda i: numbers[i], reverse=True)[:k]
        return [{"label": _label(i, labels), "probability": numbers[i], "class": i} for i in best]
    return []


_local = threading.local()


def _session() -> requests.Session:
    """One pooled session per web thread: a kept-alive connection saves a TCP handshake per test.

    It keeps no cookies: an answer is written by the deployer's code, and a cookie it set would be sent on to
    every other deployment at the same host."""
    session = getattr(_local, "session", None)
    if session is None:
        session = _local.session = requests.Session()
        session.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
    return session


def _server_message(text: str) -> str:
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return body["message"]
    return text.strip()[:300]


def _explain_status(response: requests.Response, text: str) -> str:
    code, said = response.status_code, _server_message(text)
    quoted = f' It said: "{said}"' if said else ""
    if code == 401:
        return (
            "401 Unauthorized: the scoring endpoint refused the key Lynx sent. "
            "The key may have been regenerated outside Lynx; "
            "regenerate it here so Lynx and the service agree."
        )
    if code == 403:
        return f"403 Forbidden: the endpoint does not let this key score.{quoted}"
    if code == 404:
        return "404 Not Found at the scoring URI: the service may have been deleted, or its URI has changed."
    if code == 405:
        return f"405 Method Not Allowed: the entry script does not accept a POST.{quoted}"
    if code == 413:
        return "413 Payload Too Large: the endpoint refuses an image this large; try a smaller one."
    if code == 415:
        return f"415 Unsupported Media Type: the entry script does not take raw image bytes.{quoted}"
    if 400 <= code < 500:
        return f"{code} {response.reason}: the entry script refused the request.{quoted}"
    if code == 500:
        failed = response.headers.get("x-ms-run-function-failed", "").lower() == "true"
        where = "run() raised an exception" if failed else "the server failed"
        return (
            f"500 Internal Server Error: {where}; the replica's log (Logs section) has the traceback.{quoted}"
        )
    if code in (502, 503, 504):
        return (
            f"{code} {response.reason}: no replica could answer (starting, restarting or overloaded). "
            f"Try again in a moment.{quoted}"
        )
    return f"{code} {response.reason}: the endpoint answered with an error.{quoted}"


def _post(uri: str, key: str, image: bytes, content_type: str, timeout: float) -> Outcome:
    headers = {"Authorization": f"Bearer {key}", "Content-Type": content_type}
    started = time.perf_counter()
    try:
        # Never follow a redirect: the deployer's code could send the dashboard, and the image, to any
        # service its host reaches and read the answer on this page. Read no more than the page shows.
        response = _session().post(
            uri, data=image, headers=headers, timeout=timeout, allow_redirects=False, stream=True
        )
        with response:
            body = response.raw.read(EXCERPT_CHARS * 4, decode_content=True)
    except (requests.Timeout, urllib3.exceptions.ReadTimeoutError):
        return Outcome(
            latency_ms=(time.perf_counter() - started) * 1000,
            error=f"No answer within {timeout:g} s: run() may be stuck or too slow; see the Logs section.",
        )
    except requests.ConnectionError as exc:
        refused = "refused" in str(exc).lower()
        reason = "nothing is listening there (are the replicas down?)" if refused else "the connection failed"
        return Outcome(error=f"Could not connect to {uri}: {reason}.")
    except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:  # the latter: reading the body
        return Outcome(error=f"The request to {uri} failed: {type(exc).__name__}.")
    text = body.decode(response.encoding or "utf-8", errors="replace")[:EXCERPT_CHARS]
    outcome = Outcome(
        status_code=response.status_code,
        latency_ms=(time.perf_counter() - started) * 1000,
        response_excerpt=text,
    )
    if response.is_redirect:
        outcome.error = (
            f"{response.status_code} {response.reason}: the endpoint answered with a redirect to "
            f"{response.headers.get('Location', 'nowhere')[:200]}; Lynx does not follow a scoring "
            "endpoint's redirects."
        )
    elif response.status_code >= 400:
        outcome.error = _explain_status(response, text)
    return outcome


def _read_scores(outcome: Outcome, labels: list[str]) -> None:
    if outcome.error or outcome.status_code is None:
        return
    try:
        payload = json.loads(outcome.response_excerpt)
    except ValueError:
        kind = "an empty body" if not outcome.response_excerpt.strip() else "a body that is not JSON"
        outcome.error = f"The endpoint answered {outcome.status_code} with {kind}; the raw answer is below."
        return
    outcome.top_classes = top_classes(payload, labels)
    if not outcome.top_classes:
        outcome.error = "The answer is JSON but holds no scores Lynx recognises; the raw JSON is below."


def _credential(deployment: Deployment) -> str:
    """What goes after `Bearer`: the stored primary key, or for a token-auth deployment (Azure's
    token_auth_enabled: keys do not work there) a fresh short-lived token from the target."""
    if not deployment.token_auth_enabled:
        return decrypt(deployment.primary_key_encrypted)
    try:
        token, _refresh_after = backend_for(deployment.cluster).service_access_token(service_spec(deployment))
    except BackendError as exc:
        raise Refused(f"Could not get a scoring token for {deployment.name}: {exc.message}") from exc
    return token


def scoring_run_create(
    *,
    user: User,
    deployment: Deployment,
    image: bytes,
    image_name: str = "",
    timeout: float | None = None,
) -> ScoringRun:
    """Score one image against a Healthy deployment and keep the run. Raises Refused (nothing sent, nothing
    kept) when the deployment is not Healthy or the image is not acceptable; an endpoint failure is a kept
    run with `error` set.

    `deployment` is the row as loaded for this request, with its model (select_related("model")): its state
    is checked as loaded, without a second query (test scoring is on the dashboard's hot path)."""
    if deployment.state != ServiceState.HEALTHY:
        raise Refused(
            f"{deployment.name} is {deployment.state}: only a Healthy deployment can be test-scored."
        )
    checked = image_check(image)
    key = _credential(deployment)
    if not deployment.scoring_uri or not key:
        raise Refused(
            f"{deployment.name} has no scoring URI or key yet; wait until its deployment has finished."
        )
    timeout = timeout or float(getattr(settings, "LYNX_TEST_SCORING_TIMEOUT_SECONDS", 30))
    outcome = _post(deployment.scoring_uri, key, image, checked.content_type, timeout)
    labels = [line for line in deployment.model.labels.splitlines() if line.strip()]
    _read_scores(outcome, labels)
    with transaction.atomic():
        run = ScoringRun.objects.create(
            deployment=deployment,
            user=user if user is not None and user.is_authenticated else None,
            user_name=actor_name(user),
            image_name=image_name[:255],
            image_format=checked.format,
            thumbnail=checked.thumbnail,
            status_code=outcome.status_code,
            latency_ms=outcome.latency_ms,
            top_classes=outcome.top_classes,
            response_excerpt=outcome.response_excerpt,
            error=outcome.error,
        )
        best = outcome.top_classes[0] if outcome.top_classes else None
        audit_record(
            actor=user,
            action="deployment.test_score",
            resource=deployment,
            after={
                "status_code": outcome.status_code,
                "latency_ms": round(outcome.latency_ms, 1) if outcome.latency_ms is not None else None,
                "top": f"{best['label']} {best['probability']:.1%}" if best else None,
                "image": image_name[:80],
            },
            message=outcome.error[:500],
        )
        if outcome.status_code is not None and outcome.status_code < 400:
            Deployment.objects.filter(pk=deployment.pk).update(last_scored_at=timezone.now())
    return run


def pretty_json(text: str) -> str:
    """The raw answer, indented when it is JSON (for the collapsible raw view)."""
    try:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except ValueError:
        return text
