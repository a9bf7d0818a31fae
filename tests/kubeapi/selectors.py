"""Label selectors in a list's ``labelSelector`` query: the equality-based forms."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from tests.kubeapi.errors import ApiError

Selects = Callable[[Mapping[str, str]], bool]


def parse(text: str) -> Selects:
    """``a=b,c==d,e!=f,g,!h`` as a predicate over an object's labels; set-based terms
    (``in``, ``notin``) are refused with 400, since promgate does not send them."""
    tests: list[Selects] = []
    for term in filter(None, (t.strip() for t in text.split(","))):
        if " in " in term or " notin " in term or "(" in term:
            raise ApiError(
                400, f"unable to parse requirement {term!r}: set-based selectors are not served"
            )
        if "!=" in term:
            key, value = (part.strip() for part in term.split("!=", 1))
            tests.append(lambda labels, k=key, v=value: labels.get(k) != v)
        elif "=" in term:
            key, value = (part.strip() for part in term.replace("==", "=", 1).split("=", 1))
            tests.append(lambda labels, k=key, v=value: labels.get(k) == v)
        elif term.startswith("!"):
            absent = term[1:].strip()
            tests.append(lambda labels, k=absent: k not in labels)
        else:
            tests.append(lambda labels, k=term: k in labels)
    return lambda labels: all(test(labels) for test in tests)
