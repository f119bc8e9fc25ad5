"""Every refusal as JSON: `{"detail": ...}` (and `errors` per field for bad input)."""

from __future__ import annotations

from django import forms


class InvalidInput(Exception):
    """Bad input (a 400): nothing was changed. `errors` maps a field (or "__all__") to its messages."""

    def __init__(self, errors: dict[str, list[str]]) -> None:
        self.errors = errors
        first = next(iter(errors.values()), ["Bad input."])
        super().__init__(first[0] if first else "Bad input.")

    @classmethod
    def from_form(cls, form: forms.Form) -> InvalidInput:
        return cls({field: [str(message) for message in messages] for field, messages in form.errors.items()})


class NotFound(Exception):
    """No such resource (a 404), with a message naming what was asked for."""
