"""Fill in a rendered HTML form the way a browser submits it, whatever fields the page has today: the
benchmark and the query-count test post the deploy form without knowing its fields in advance."""

from __future__ import annotations

from html.parser import HTMLParser


class _Forms(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[dict[str, str]] = []
        self._in_form = False
        self._select: str | None = None
        self._first_option: str | None = None
        self._textarea: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {key: value or "" for key, value in attrs}
        if tag == "form" and a.get("method", "get").lower() == "post":
            self._in_form = True
            self.forms.append({})
        if not self._in_form:
            return
        fields = self.forms[-1]
        name = a.get("name")
        if tag == "input" and name:
            kind = a.get("type", "text").lower()
            if kind in ("submit", "button", "file", "image", "reset"):
                return
            if kind in ("checkbox", "radio") and "checked" not in a:
                return
            fields[name] = a.get("value", "on" if kind == "checkbox" else "")
        elif tag == "select" and name:
            self._select, self._first_option = name, None
        elif tag == "option" and self._select:
            value = a.get("value", "")
            if self._first_option is None and value:
                self._first_option = value
            if "selected" in a:
                fields[self._select] = value
        elif tag == "textarea" and name:
            self._textarea = name
            fields[name] = ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._in_form = False
        elif tag == "select" and self._select:
            self.forms[-1].setdefault(self._select, self._first_option or "")
            self._select = None
        elif tag == "textarea":
            self._textarea = None

    def handle_data(self, data: str) -> None:
        if self._textarea and self._in_form:
            self.forms[-1][self._textarea] += (
                data.removeprefix("\n") if not self.forms[-1][self._textarea] else data
            )


def form_data(html: str, must_have: str) -> dict[str, str]:
    """The fields of the first POST form on the page that has a field named `must_have`, as submitted."""
    parser = _Forms()
    parser.feed(html)
    for fields in parser.forms:
        if must_have in fields:
            return fields
    raise LookupError(f"no POST form with a field named {must_have!r} on the page")
