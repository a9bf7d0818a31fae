"""PromQL template rendering: placeholders, escaping, injection attempts, windows."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from sidecar.analysis import queries
from sidecar.analysis.queries import (
    KNOWN_PLACEHOLDERS,
    escape_label_value,
    placeholders,
    render,
)
from sidecar.errors import QueryError

IDENTITY = {
    "service": "checkout",
    "stage": "prod",
    "digest": "sha256:" + "ab" * 32,
    "tag": "1.4.2",
    "version": "1.4.2",
    "repository": "registry.example/shop/checkout",
    "role": "candidate",
    "backend": "green",
    "upstream": "http://127.0.0.1:9002",
    "window": "5m",
}

MATCHER_TEMPLATE = 'sum(rate(http_requests_total{version="$version",code=~"5.."}[$window]))'
MATCHER_PREFIX = 'sum(rate(http_requests_total{version="'
MATCHER_SUFFIX = '",code=~"5.."}[5m]))'


def read_promql_string(text: str) -> tuple[str, str]:
    """Read a double-quoted PromQL string body at the start of ``text`` as PromQL does.

    Returns the decoded value and what follows the closing quote.
    """
    simple = {"\\": "\\", '"': '"', "n": "\n", "r": "\r", "t": "\t"}
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char == '"':
            return "".join(out), text[i + 1 :]
        if char == "\n":
            raise AssertionError("raw newline inside a PromQL string ends the query")
        if char == "\\":
            code = text[i + 1]
            if code in simple:
                out.append(simple[code])
                i += 2
                continue
            if code == "x":
                out.append(chr(int(text[i + 2 : i + 4], 16)))
                i += 4
                continue
            raise AssertionError(f"invalid escape \\{code} in {text!r}")
        out.append(char)
        i += 1
    raise AssertionError(f"unterminated string in {text!r}")


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ('up{service="$service"}', {"service"}),
        ('rate(x{a="${digest}",b="$role"}[$window])', {"digest", "role", "window"}),
        ("$$service costs $$5", set()),
        ("${service}${service}$service", {"service"}),
        ('up{a="$bogus", b="${also_bogus}"}', {"bogus", "also_bogus"}),
        ('up{a=~"x$"} $ ${', set()),
        ("no placeholders at all", set()),
    ],
)
def test_placeholders_lists_every_name_without_raising(template: str, expected: set[str]) -> None:
    assert placeholders(template) == expected


def test_known_placeholders_are_the_release_identity() -> None:
    assert frozenset(IDENTITY) == KNOWN_PLACEHOLDERS


@pytest.mark.parametrize(
    ("value", "escaped"),
    [
        ("plain-1.2.3", "plain-1.2.3"),
        ('a"b', 'a\\"b'),
        ("a\\b", "a\\\\b"),
        ("line\nbreak", "line\\nbreak"),
        ("cr\rtab\t", "cr\\rtab\\t"),
        ("\x00\x1b\x7f", "\\x00\\x1b\\x7f"),
        ('\\"', '\\\\\\"'),
        ("ünïcødé ✓", "ünïcødé ✓"),
        ("", ""),
    ],
)
def test_escape_label_value(value: str, escaped: str) -> None:
    assert escape_label_value(value) == escaped
    decoded, rest = read_promql_string(escaped + '"')
    assert (decoded, rest) == (value, "")


def test_render_fills_every_known_placeholder() -> None:
    template = (
        'sum(rate(http_requests_total{service="$service",stage="$stage",digest="${digest}",'
        'tag="$tag",version="$version",repository="$repository",role="$role"}[$window]))'
    )
    assert render(template, IDENTITY) == (
        'sum(rate(http_requests_total{service="checkout",stage="prod",'
        f'digest="sha256:{"ab" * 32}",tag="1.4.2",version="1.4.2",'
        'repository="registry.example/shop/checkout",role="candidate"}[5m]))'
    )


def test_render_keeps_literal_dollar_and_ignores_unused_values() -> None:
    assert render('up{a="$$x"}', {"service": "unused"}) == 'up{a="$x"}'


INJECTIONS = [
    ('1"} or vector(1) #', '1\\"} or vector(1) #'),
    ('1\\"} or vector(1) #', '1\\\\\\"} or vector(1) #'),
    ("trailing\\", "trailing\\\\"),
    ('1"}\n or vector(1)', '1\\"}\\n or vector(1)'),
    ('"}[1m])) or on() vector(1) or sum(x{y="', '\\"}[1m])) or on() vector(1) or sum(x{y=\\"'),
    ("1\r\n#", "1\\r\\n#"),
]


@pytest.mark.parametrize(("hostile", "escaped"), INJECTIONS)
def test_injection_stays_inside_the_label_matcher(hostile: str, escaped: str) -> None:
    rendered = render(MATCHER_TEMPLATE, {**IDENTITY, "version": hostile})

    assert rendered == MATCHER_PREFIX + escaped + MATCHER_SUFFIX
    assert rendered.startswith(MATCHER_PREFIX)
    value, rest = read_promql_string(rendered[len(MATCHER_PREFIX) :])
    assert value == hostile
    assert rest == MATCHER_SUFFIX[1:]


@pytest.mark.parametrize(
    ("template", "identity", "named"),
    [
        ('up{a="$bogus"}', IDENTITY, "$bogus"),
        ('up{a="${Service}"}', IDENTITY, "$Service"),
        ('up{a="$tag"}', {"service": "checkout"}, "$tag"),
        ("rate(up[$window])", {"service": "checkout"}, "$window"),
    ],
)
def test_unknown_or_missing_placeholder_is_named(
    template: str, identity: dict[str, str], named: str
) -> None:
    with pytest.raises(QueryError) as caught:
        render(template, identity)
    message = str(caught.value)
    assert named in message
    assert "known placeholders" in message
    assert "$service" in message and "$window" in message


def test_stray_dollar_is_a_query_error_that_suggests_doubling() -> None:
    with pytest.raises(QueryError, match=r"\$\$"):
        render('up{job=~"api$"}', IDENTITY)


@pytest.mark.parametrize("window", ["30s", "1500ms", "5m", "2h", "1d", "1w", "1y", "90s"])
def test_valid_windows(window: str) -> None:
    assert render("rate(up[$window])", {"window": window}) == f"rate(up[{window}])"


@pytest.mark.parametrize(
    "window",
    ["5", "5 m", "5M", "-5m", "1.5m", "", "5m\n", "1m]) or vector(1", "5m5s", "m", "0s", "00m"],
)
def test_invalid_windows(window: str) -> None:
    with pytest.raises(QueryError, match=r"\$window"):
        render("rate(up[$window])", {"window": window})


def test_queries_module_does_no_io() -> None:
    source = Path(queries.__file__).read_text()
    imported: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert "string" in imported  # the walk does see this module's imports
    assert not imported & {"asyncio", "aiohttp"}
