from __future__ import annotations

from django import forms

from api.tokens import MAX_EXPIRES_DAYS, NAME_RULE, NAME_RULE_TEXT


class TokenForm(forms.Form):
    name = forms.RegexField(regex=NAME_RULE, max_length=64, error_messages={"invalid": NAME_RULE_TEXT})
    expires_days = forms.IntegerField(
        required=False,
        min_value=1,
        max_value=MAX_EXPIRES_DAYS,
        label="Expires after (days)",
        help_text="Blank: never. A token for CI is best given an expiry.",
    )
    read_only = forms.BooleanField(
        required=False, help_text="It can read everything you can, and change nothing."
    )
