"""What the deployment page's Consume section shows: the scoring URI, whether the reader may copy the key, and
ready-to-run samples that send an image as the test page does (raw bytes, Content-Type, a Bearer key).

Computed from the `deployment` row already in the page's context, with no query of its own, so the page's
query count stays the same whatever the deployment holds.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from typing import Any

from django import template

from accounts.roles import can_deploy
from deployments.crypto import decrypt, mask
from deployments.models import Deployment
from deployments.states import ServiceState

register = template.Library()

# The samples read the key from this variable: a sample pasted into a chat or a repository carries no key.
KEY_VARIABLE = "LYNX_SCORING_KEY"
SAMPLE_IMAGE = "image.jpg"
SAMPLE_CONTENT_TYPE = "image/jpeg"


@dataclass(frozen=True)
class Sample:
    slug: str  # the element id's suffix: consume-sample-<slug>
    label: str
    how_to_run: str
    code: str


@dataclass(frozen=True)
class ConsumeInfo:
    scoring_uri: str
    deleted: bool
    token_auth: bool
    may_copy_key: bool  # a deployer, on a key-auth deployment that has a primary key
    key_masked: str
    has_api_docs: bool
    samples: list[Sample] = field(default_factory=list)


def consume_samples(scoring_uri: str) -> list[Sample]:
    """curl, Python `requests` and JavaScript `fetch`, each posting image.jpg to `scoring_uri`.

    The URI is quoted for each language (shell, then a JSON string literal, which Python and JavaScript both
    read), since a target's URI is not Lynx's to vouch for."""
    shell_uri = shlex.quote(scoring_uri)
    literal_uri = json.dumps(scoring_uri)
    curl = (
        f"curl --fail-with-body -X POST {shell_uri} \\\n"
        f'  -H "Authorization: Bearer ${KEY_VARIABLE}" \\\n'
        f'  -H "Content-Type: {SAMPLE_CONTENT_TYPE}" \\\n'
        f"  --data-binary @{SAMPLE_IMAGE}\n"
    )
    python = (
        "import os\n\n"
        "import requests\n\n"
        f"SCORING_URI = {literal_uri}\n"
        f'KEY = os.environ["{KEY_VARIABLE}"]\n\n'
        f'with open("{SAMPLE_IMAGE}", "rb") as f:\n'
        "    image = f.read()\n\n"
        "response = requests.post(\n"
        "    SCORING_URI,\n"
        "    data=image,\n"
        f'    headers={{"Authorization": f"Bearer {{KEY}}", "Content-Type": "{SAMPLE_CONTENT_TYPE}"}},\n'
        "    timeout=60,\n"
        ")\n"
        "response.raise_for_status()\n"
        "print(response.json())\n"
    )
    javascript = (
        'import { readFile } from "node:fs/promises";\n\n'
        f"const scoringUri = {literal_uri};\n"
        f'const image = await readFile("{SAMPLE_IMAGE}");\n\n'
        "const response = await fetch(scoringUri, {\n"
        '  method: "POST",\n'
        "  headers: {\n"
        f"    Authorization: `Bearer ${{process.env.{KEY_VARIABLE}}}`,\n"
        f'    "Content-Type": "{SAMPLE_CONTENT_TYPE}",\n'
        "  },\n"
        "  body: image,\n"
        "});\n"
        "if (!response.ok) throw new Error(`${response.status}: ${await response.text()}`);\n"
        "console.log(await response.json());\n"
    )
    return [
        Sample("curl", "curl", f"In a shell, with {SAMPLE_IMAGE} in the current folder.", curl),
        Sample(
            "python",
            "Python (requests)",
            f"Save as score.py and run python score.py, with {SAMPLE_IMAGE} beside it "
            "(pip install requests).",
            python,
        ),
        Sample(
            "javascript",
            "JavaScript (fetch)",
            f"Save as score.mjs and run node score.mjs (Node.js 18 or later), with {SAMPLE_IMAGE} beside it.",
            javascript,
        ),
    ]


@register.simple_tag(takes_context=True)
def consume_info(context: dict[str, Any], deployment: Deployment) -> ConsumeInfo:
    """Everything the section needs, from the row and the reader's role (cached on the user: no query)."""
    deleted = deployment.state in (ServiceState.DELETED, ServiceState.DELETING)
    scoring_uri = "" if deleted else deployment.scoring_uri
    key = "" if deployment.token_auth_enabled or deleted else decrypt(deployment.primary_key_encrypted)
    user = context.get("user")
    may_copy_key = bool(key) and user is not None and can_deploy(user)
    return ConsumeInfo(
        scoring_uri=scoring_uri,
        deleted=deleted,
        token_auth=deployment.token_auth_enabled,
        may_copy_key=may_copy_key,
        # Only for those who may copy it: viewers see no part of a key here.
        key_masked=mask(key) if may_copy_key else "",
        has_api_docs=bool(deployment.swagger_uri) and not deleted,
        samples=consume_samples(scoring_uri) if scoring_uri else [],
    )
