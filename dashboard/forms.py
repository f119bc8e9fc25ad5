"""Forms for the overview, the audit log, the price table and the people page."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from django import forms
from django.contrib.auth import get_user_model, password_validation
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator

from accounts.roles import ROLES
from deployments.services.audit import AUDIT_ACTIONS, audit_families
from deployments.services.expiry import MAX_EXTEND_HOURS

# What the audit log records, for the filters' suggestions; any other value is accepted too.
# The filter's choices: each family (all its actions), then each action; declared once in AUDIT_ACTIONS.
KNOWN_ACTIONS = tuple(audit_families() + list(AUDIT_ACTIONS))
RESOURCE_TYPES = (
    "cluster",
    "deployment",
    "operation",
    "registeredmodel",
    "vmprice",
    "user",
    "workspace",
    "scoringrun",
)

team_name_rule = RegexValidator(
    r"^[\w .-]{2,64}$", "A team name is 2 to 64 letters, digits, spaces, dots or dashes."
)


# The dates a filter may name. Outside them a date is a typo or a probe, and at the far end the day after
# 9999-12-31 (the filter's exclusive end) cannot be computed at all: refuse it as a form error, not a 500.
AUDIT_FIRST_DAY, AUDIT_LAST_DAY = date(1970, 1, 1), date(2999, 12, 31)
audit_day_rules = [
    MinValueValidator(AUDIT_FIRST_DAY, f"Choose a date between {AUDIT_FIRST_DAY} and {AUDIT_LAST_DAY}."),
    MaxValueValidator(AUDIT_LAST_DAY, f"Choose a date between {AUDIT_FIRST_DAY} and {AUDIT_LAST_DAY}."),
]


def audit_day_field(label: str) -> forms.DateField:
    return forms.DateField(
        required=False,
        label=label,
        validators=audit_day_rules,
        widget=forms.DateInput(
            attrs={"type": "date", "min": AUDIT_FIRST_DAY.isoformat(), "max": AUDIT_LAST_DAY.isoformat()}
        ),
    )


class AuditFilterForm(forms.Form):
    person = forms.CharField(required=False, max_length=150)
    action = forms.CharField(
        required=False, max_length=64, help_text="e.g. cluster.delete, or cluster for all"
    )
    resource_type = forms.CharField(required=False, max_length=32, label="Resource type")
    resource_name = forms.CharField(required=False, max_length=64, label="Resource name")
    since = audit_day_field("From")
    until = audit_day_field("To")

    def clean(self) -> dict[str, Any]:
        super().clean()  # Form.clean returns self.cleaned_data
        data = self.cleaned_data
        if data.get("since") and data.get("until") and data["since"] > data["until"]:
            self.add_error("until", "The end date is before the start date.")
        return data

    def filters(self) -> dict:
        """Keyword arguments for `selectors.audit_events` (dates are whole UTC days, both included)."""
        data = self.cleaned_data
        since, until = data.get("since"), data.get("until")
        return {
            "person": data.get("person", "").strip(),
            "action": data.get("action", "").strip(),
            "resource_type": data.get("resource_type", "").strip(),
            "resource_name": data.get("resource_name", "").strip(),
            "since": datetime.combine(since, time.min, UTC) if since else None,
            "until": datetime.combine(until + timedelta(days=1), time.min, UTC) if until else None,
        }


class PriceForm(forms.Form):
    price_per_hour = forms.DecimalField(
        min_value=0,
        max_digits=10,
        decimal_places=4,
        label="Price per node-hour (USD)",
    )


class NewPriceForm(PriceForm):
    vm_size = forms.CharField(
        max_length=64,
        label="VM size",
        validators=[
            RegexValidator(r"^[A-Za-z0-9_.-]+$", "A VM size is letters, digits, dots, dashes or underscores.")
        ],
    )
    gpu_count = forms.FloatField(initial=0, min_value=0, max_value=64, label="GPUs per node")
    gpu_kind = forms.CharField(required=False, max_length=64, label="GPU kind")


class ExtendForm(forms.Form):
    hours = forms.IntegerField(validators=[MinValueValidator(1), MaxValueValidator(MAX_EXTEND_HOURS)])


class PersonForm(forms.Form):
    role = forms.ChoiceField(choices=[(r, r) for r in ROLES])
    team = forms.CharField(
        required=False,
        max_length=64,
        validators=[team_name_rule],
        help_text="Costs are totalled per team; empty for no team.",
    )


class NewPersonForm(PersonForm):
    username = forms.CharField(
        max_length=150,
        validators=[RegexValidator(r"^[\w.@+-]+$", "A username is letters, digits and @ . + - _ only.")],
    )
    email = forms.EmailField(required=False, help_text="Expiry warnings go here.")
    password = forms.CharField(
        widget=forms.PasswordInput,
        help_text="At least 8 characters, not a common one, not all digits, not like the username; "
        "tell them in person.",
    )

    def clean(self) -> dict[str, Any]:
        super().clean()  # Form.clean returns self.cleaned_data
        data = self.cleaned_data
        if password := data.get("password"):
            # The would-be user, so the similarity check can compare the password with the name and email.
            user = get_user_model()(username=data.get("username", ""), email=data.get("email", ""))
            try:
                password_validation.validate_password(password, user)
            except forms.ValidationError as exc:
                self.add_error("password", exc)
        return data
