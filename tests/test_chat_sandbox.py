"""A GGUF's chat template is code from whoever made the file. Rendering it must not
reach Python objects or the file system, must end in bounded time and memory, and
anything that goes wrong is a ValueError: hostile templates aimed at each bound, and
random templates from a grammar of jinja fragments (hypothesis)."""
from __future__ import annotations

import os
import time
import tracemalloc

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from phicpp.chat import PHI3_TEMPLATE, PHI4_TEMPLATE, PLAIN_TEMPLATE, ChatTemplate

MSGS = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."}]
LIMIT = 0.25  # seconds: the tests' time limit (the default is 2 s)
PEAK = 96 << 20  # bytes of Python objects a render may hold at once

NEST = "".join(f"{{% set l{i + 1} = [l{i}, l{i}, l{i}, l{i}, l{i}, l{i}, l{i}, l{i}, l{i}, l{i}] %}}" for i in range(8))
HOSTILE = {
    # time
    "nested loops": "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    "output in nested loops": "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
    "recursive macro": "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
    "recursive loop": "{% for x in [[1], [2]] recursive %}{{ loop([x, x]) }}{% endfor %}",
    # (found by the random templates below: jinja2's traceback rewriting took seconds)
    "nested recursive macros": "{% macro g(x) %}{% macro g(x) %}<|user|>\n{{ g(x) }}{% endmacro %}{{ g(1) }}"
                               "{{ g(x) }}{% endmacro %}{{ g(1) }}",
    "macro loops": "{% macro f() %}{% for i in range(100000) %}{{ i }}{% endfor %}{% endmacro %}"
                   "{% for i in range(100000) %}{% set x = f() %}{% endfor %}",
    # memory
    "string times 1e9": "{{ 'a' * 1000000000 }}",
    "list times 1e9": "{{ ([1] * 1000000000)|length }}",
    "power": "{{ 7 ** 100000000 }}",
    "doubling": "{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
    "doubling with +": "{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s + ns.s %}"
                       "{% endfor %}",
    "set block": "{% set x %}{% for i in range(100000) %}" + "a" * 1000 + "{% endfor %}{% endset %}{{ x|length }}",
    "filter block": "{% filter upper %}{% for i in range(100000) %}" + "a" * 1000 + "{% endfor %}{% endfilter %}",
    "nested list to text": "{% set l0 = [1, 2] %}" + NEST + "{{ l8 }}",
    "nested list to json": "{% set l0 = [1, 2] %}" + NEST + "{{ l8|tojson }}",
    "nested list joined": "{% set l0 = [1, 2] %}" + NEST + "{{ l8|join(',') }}",
    "nested list in namespace": "{% set l0 = [1, 2] %}" + NEST + "{% set ns = namespace(x=l8) %}{{ ns }}",
    "percent width": "{{ '%1000000000d' % 1 }}",
    "percent star": "{{ '%*d' % (1000000000, 1) }}",
    "replace": "{% set s = 'a' * 100000 %}{{ s.replace('', s) }}",
    "replace filter": "{% set s = 'a' * 100000 %}{{ s|replace('a', s) }}",
    "join": "{% set s = 'a' * 1000000 %}{{ [s, s, s, s, s, s]|join }}",
    "str join": "{% set s = 'a' * 1000000 %}{{ s.join([s, s, s, s, s, s]) }}",
    "indent": "{% set s = '\n' * 1000000 %}{{ s|indent(1000) }}",
    "slice": "{{ [1]|slice(1000000000)|list|length }}",
    "sum of lists": "{% set l = [0] * 1000000 %}{{ ([l] * 1000000)|sum(start=[])|length }}",
    "batch": "{{ [1]|batch(1000000000, 0)|list|length }}",
    # reach
    "str format": "{{ '{:>1000000000}'.format(1) }}",
    "format via attr": "{{ ('{0.__class__}'|attr('format'))(1) }}",
    "ljust": "{{ 'a'.ljust(1000000000) }}",
    "center": "{{ 'a'|center(1000000000) }}",
    "lipsum": "{{ lipsum(1000000) }}",
    "__class__": "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "__globals__": "{{ raise_exception.__globals__['__builtins__'] }}",
    "cycler globals": "{{ cycler.__init__.__globals__.os.system('true') }}",
    "namespace init": "{{ namespace.__init__.__globals__ }}",
    "self": "{{ self._TemplateReference__context.parent }}",
    "include": "{% include '/etc/passwd' %}",
    "import": "{% import 'os' as os %}{{ os }}",
    "from import": "{% from '/etc/passwd' import x %}",
    "extends": "{% extends '/etc/passwd' %}",
    "list append": "{{ messages.append({'role': 'x'}) }}",
    "dict update": "{{ messages[0].update({'content': 'x'}) }}",
    "division by zero": "{{ 1 / 0 }}",
    "deep source": "{{ " + "(" * 3000 + "1" + ")" * 3000 + " }}",
    "huge source": "x" * (1 << 19),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_template_is_a_bounded_value_error(name):
    tracemalloc.start()
    t0 = time.monotonic()
    try:
        ChatTemplate(HOSTILE[name], time_limit=LIMIT).render(MSGS)
        raise AssertionError("rendered")
    except ValueError as e:
        assert str(e).startswith(("chat template failed", "chat template does not compile")), e
    finally:
        elapsed = time.monotonic() - t0
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert elapsed < LIMIT + 2.0, elapsed
    assert peak < PEAK, peak


def test_nothing_reached_leaks_into_the_output():
    """Unsafe attributes are undefined (empty) when only printed: no object leaks out."""
    for src in ["{{ raise_exception.__globals__ }}", "{{ messages.__class__ }}", "{{ self.__dict__ }}",
                "{{ ''|attr('format') }}", "{{ cycler.__init__ }}"]:
        try:
            out = ChatTemplate(src, time_limit=LIMIT).render(MSGS)
        except ValueError:
            continue
        assert out == "", (src, out)


def test_limits_leave_real_templates_alone():
    """The templates phicpp ships and the fixture's Phi-3.5 template render a long chat
    (2000 messages of 1 KiB) well within the bounds."""
    long_chat = [{"role": ("user", "assistant")[i % 2], "content": "x" * 1024} for i in range(2000)]
    from pathlib import Path
    phi35 = (Path(__file__).parent / "data" / "microsoft-Phi-3.5-mini-instruct.jinja").read_text()
    for src in (PHI3_TEMPLATE, PHI4_TEMPLATE, PLAIN_TEMPLATE, phi35):
        out = ChatTemplate(src, eos_token="<|endoftext|>").render(long_chat)
        assert len(out) > 2000 * 1024
    # and the output bound grows with the messages: a 20 MiB conversation still renders
    big = [{"role": "user", "content": "y" * (20 << 20)}]
    assert len(ChatTemplate(PHI3_TEMPLATE).render(big)) > 20 << 20


def test_output_and_value_bounds_are_settable():
    with pytest.raises(ValueError, match="output bound"):
        ChatTemplate("{% for i in range(100) %}xxxxxxxxxx{% endfor %}", max_output=500).render([])
    assert len(ChatTemplate("{% for i in range(100) %}xxxxxxxxxx{% endfor %}", max_output=1000).render([])) == 1000
    with pytest.raises(ValueError, match="at most 99"):
        ChatTemplate("{{ 'a' * 100 }}", max_value=99).render([])


def test_template_errors_name_their_cause():
    with pytest.raises(ValueError, match="roles must alternate"):
        ChatTemplate("{{ raise_exception('roles must alternate') }}").render(MSGS)
    with pytest.raises(ValueError, match="does not compile"):
        ChatTemplate("{% for %}")
    with pytest.raises(ValueError, match="time limit"):
        ChatTemplate(HOSTILE["nested loops"], time_limit=0.05).render(MSGS)


# ---------------------------------------------------------------- random templates

ATOMS = ["'ab'", "'\\n'", "1", "-3", "7", "1000000", "2.5", "true", "none", "messages", "messages[0]",
         "messages[-1]['content']", "m", "m.role", "m['content']", "ns.s", "ns", "loop.index", "range(3)",
         "range(100000)", "[1, 2]", "{'a': 1}", "bos_token", "add_generation_prompt", "x", "self", "cycler(1, 2)"]
BINOPS = ["+", "-", "*", "/", "//", "%", "**", "~", "==", "<", "and", "or", "in"]
FILTERS = ["length", "upper", "trim", "tojson", "join(',')", "list", "first", "last", "string", "reverse",
           "replace('a', 'bb')", "indent(4)", "default('d')", "int", "sum", "unique", "sort", "batch(2)", "slice(2)",
           "map('upper')", "select", "items", "center(9)", "format(1)", "attr('__class__')", "wordcount"]
METHODS = [".strip()", ".split()", ".upper()", ".replace('a', 'xx')", ".join(['a', 'b'])", ".startswith('a')",
           ".items()", ".get('role')", ".format(1)", ".ljust(1000)", ".__class__", ".__init__", ".append(1)"]


@st.composite
def expressions(draw, depth=0):
    if depth > 2 or draw(st.booleans()):
        e = draw(st.sampled_from(ATOMS))
    else:
        kind = draw(st.sampled_from(["binop", "filter", "method", "paren"]))
        a = draw(expressions(depth + 1))
        if kind == "binop":
            e = f"{a} {draw(st.sampled_from(BINOPS))} {draw(expressions(depth + 1))}"
        elif kind == "filter":
            e = f"({a})|{draw(st.sampled_from(FILTERS))}"
        elif kind == "method":
            e = f"({a}){draw(st.sampled_from(METHODS))}"
        else:
            e = f"({a})"
    return e


@st.composite
def templates(draw, depth=0):
    parts = []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["text", "expr", "for", "if", "set", "ns", "macro"] if depth < 3 else
                                    ["text", "expr"]))
        if kind == "text":
            parts.append(draw(st.sampled_from(["<|user|>\n", "abc", " ", "\n"])))
        elif kind == "expr":
            parts.append("{{ " + draw(expressions()) + " }}")
        elif kind == "for":
            parts.append(f"{{% for m in {draw(expressions())} %}}{draw(templates(depth + 1))}{{% endfor %}}")
        elif kind == "if":
            parts.append(f"{{% if {draw(expressions())} %}}{draw(templates(depth + 1))}{{% else %}}"
                         f"{draw(templates(depth + 1))}{{% endif %}}")
        elif kind == "set":
            parts.append(f"{{% set x = {draw(expressions())} %}}")
        elif kind == "ns":
            parts.append(f"{{% set ns = namespace(s={draw(expressions())}) %}}"
                         f"{{% for i in range(1000) %}}{{% set ns.s = ns.s ~ ns.s %}}{{% endfor %}}")
        else:
            parts.append(f"{{% macro g(x) %}}{draw(templates(depth + 1))}{{{{ g(x) }}}}{{% endmacro %}}"
                         "{{ g(1) }}")
    return "".join(parts)


# PHICPP_TEMPLATE_FUZZ_EXAMPLES=20000 for a long run (docs/BENCHMARKS.md); CI takes 300
@settings(max_examples=int(os.environ.get("PHICPP_TEMPLATE_FUZZ_EXAMPLES", "300")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(templates())
def test_random_templates_render_or_raise_value_error(src):
    t0 = time.monotonic()
    try:
        out = ChatTemplate(src, time_limit=LIMIT, max_output=1 << 20).render(MSGS)
    except ValueError as e:
        event(str(e).split(":")[1].strip())  # (--hypothesis-show-statistics: what stopped it)
    else:
        event("rendered")
        assert isinstance(out, str) and len(out) <= (1 << 20) + 2 * 1000
    assert time.monotonic() - t0 < LIMIT + 2.0
