"""PromQL template rendering: placeholders, escaping, injection attempts, windows."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from sidecar.analysis import queries
from sidecar.analysis.queries import (
    KNOWN_PLACEHOLDERS,
    Context,
    escape_label_value,
    placeholder_uses,
    placeholders,
    render,
    template_problems,
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
    "namespace": "shop",
    "workload": "checkout-candidate",
    "pod": "checkout-candidate-[a-z0-9]+-[a-z0-9]+",
    "k8sService": "checkout-canary",
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


DQ, SQ, RAW = Context.DOUBLE_QUOTED, Context.SINGLE_QUOTED, Context.RAW
COMMENT, ESCAPE, DURATION, CODE = Context.COMMENT, Context.ESCAPE, Context.DURATION, Context.CODE


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        pytest.param('x{v="$version"}', [("version", DQ)], id="double-quoted"),
        pytest.param('x{v="${version}"}', [("version", DQ)], id="double-quoted-braced"),
        pytest.param('x{v="a $version b"}', [("version", DQ)], id="double-quoted-middle"),
        pytest.param("x{v='$version'}", [("version", SQ)], id="single-quoted"),
        pytest.param("x{v=`$version`}", [("version", RAW)], id="backtick"),
        pytest.param("x{v=`a\\`} $tag", [("tag", CODE)], id="backtick-has-no-escapes"),
        pytest.param("x # $version", [("version", COMMENT)], id="comment"),
        pytest.param('x # "\n$tag', [("tag", CODE)], id="comment-ends-at-newline"),
        pytest.param('x{a="#"} $tag', [("tag", CODE)], id="hash-in-string-is-no-comment"),
        pytest.param("x{v=$version}", [("version", CODE)], id="bare-matcher"),
        pytest.param("$version", [("version", CODE)], id="whole-query"),
        pytest.param('x{v="\\$version"}', [("version", ESCAPE)], id="after-backslash"),
        pytest.param("x{v='\\$version'}", [("version", ESCAPE)], id="after-backslash-single"),
        pytest.param('x{v="\\\\$version"}', [("version", DQ)], id="after-escaped-backslash"),
        pytest.param('x{v="\\"$tag"}', [("tag", DQ)], id="escaped-quote-keeps-it-open"),
        pytest.param('x{v="\\""} $tag', [("tag", CODE)], id="escaped-quote-then-close"),
        pytest.param('x{v="\\\\"} $tag', [("tag", CODE)], id="escaped-backslash-then-close"),
        pytest.param("x{v='\"'} $tag", [("tag", CODE)], id="double-quote-in-single"),
        pytest.param('x{v="\'"} $tag', [("tag", CODE)], id="single-quote-in-double"),
        pytest.param("rate(x[$window])", [("window", DURATION)], id="range"),
        pytest.param("rate(x[ $window ])", [("window", DURATION)], id="range-spaced"),
        pytest.param("x offset $window", [("window", DURATION)], id="offset"),
        pytest.param("x OFFSET $window", [("window", DURATION)], id="offset-upper"),
        pytest.param("x[5m:$window]", [("window", DURATION)], id="subquery-step"),
        pytest.param("x myoffset $window", [("window", CODE)], id="offset-inside-a-name"),
        pytest.param("x{a='b'} : $window", [("window", CODE)], id="colon-outside-brackets"),
        pytest.param("x[1h$window]", [("window", CODE)], id="glued-to-a-duration"),
        pytest.param("x > $window", [("window", CODE)], id="comparison"),
        pytest.param('x{a="$$"} $$tag # $$', [], id="literal-dollars"),
        pytest.param('x{a="$"} $1', [], id="stray-dollars-are-no-placeholders"),
        pytest.param(
            "x{a=\"$service\",b='$tag'}[$window] # $role",
            [("service", DQ), ("tag", SQ), ("window", DURATION), ("role", COMMENT)],
            id="several",
        ),
    ],
)
def test_placeholder_contexts(template: str, expected: list[tuple[str, Context]]) -> None:
    """The lexer sees each placeholder where PromQL would: in which string, comment or code."""
    assert [(use.name, use.context) for use in placeholder_uses(template)] == expected


@pytest.mark.parametrize(
    ("template", "fix"),
    [
        pytest.param("x{v='$version'}", 'use {version="$version"}', id="single-quoted"),
        pytest.param("x{v=`$version`}", 'use {version="$version"}', id="backtick"),
        pytest.param("x # $version", 'use {version="$version"}', id="comment"),
        pytest.param("x{v=$version}", 'use {version="$version"}', id="bare"),
        pytest.param('x{v="\\$version"}', "remove the backslash before $version", id="escape"),
        pytest.param("rate(x[$version])", 'use {version="$version"}', id="range"),
        pytest.param("x > $window", "put $window in a range or after offset", id="bare-window"),
        pytest.param("x{v='$window'}", "put $window in a range or after offset", id="sq-window"),
    ],
)
def test_render_refuses_a_misplaced_placeholder(template: str, fix: str) -> None:
    """Rendering refuses a template the policy check would refuse, whatever the values."""
    [(_, given)] = template_problems(template)
    assert fix in given
    with pytest.raises(QueryError) as caught:
        render(template, IDENTITY)
    assert "is refused" in str(caught.value)
    assert fix in str(caught.value)


@pytest.mark.parametrize(
    ("template", "identity"),
    [
        pytest.param("sum(x{version='$version'})", {"version": "x'}) or vector(2) #"},
                     id="single-quote-breakout"),
        pytest.param("sum(x{version=`$version`})", {"version": "x`}) or vector(2) #"},
                     id="backtick-breakout"),
        pytest.param("sum(x) # $version", {"version": "x\nor vector(2)"}, id="comment"),
        pytest.param('sum(x{version="\\$version"})', {"version": '"}) or vector(2) #'},
                     id="backslash-eats-the-escape"),
        pytest.param("sum(rate(x[$version]))", {"version": "1m])) or vector(2) #"},
                     id="range-breakout"),
    ],
)  # fmt: skip
def test_injections_in_unsafe_contexts_are_refused(template: str, identity: dict[str, str]) -> None:
    """Each of these values, substituted where escaping does not hold, would add PromQL."""
    with pytest.raises(QueryError, match=r"\$version is "):
        render(template, identity)


def test_known_placeholders_all_follow_the_quoting_rule() -> None:
    """Every known placeholder but $window is refused outside double quotes; none is exempt."""
    for name in sorted(KNOWN_PLACEHOLDERS - {"window"}):
        assert template_problems(f'x{{a="${name}"}}') == []
        for template in (f"x{{a='${name}'}}", f"x[${name}]", f"x > ${name}", f"x # ${name}"):
            assert len(template_problems(template)) == 1, template


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
