"""A jinja2 environment for templates that come from files (a GGUF's chat template is
code written by whoever made the file), bounded in what it can reach, in time and in
memory.

Reach: jinja2's immutable sandbox (no attribute starting with "_", no mutation of
lists and dicts) with no loader, so include/import/extends find nothing; str methods
limited to those that cannot multiply a string (no format, ljust, center, zfill,
expandtabs, translate); filters limited to the usual ones, none evaluated at compile
time; no lipsum.

Time: a deadline checked at every loop iteration, call and filter.

Memory: every character a render emits (into its output or into a buffer: macros,
{% set %} blocks, {% filter %}) is counted against max_output, so no buffer can join
into more. Values can only grow through operations checked before they run: `*` and
`**`, `%` formatting, `+` and `~` (together at most max_value characters), str.replace
and join, and the filters with a width or count; converting a value to text walks it
first (a list nested k deep can stand for millions of elements).
"""
from __future__ import annotations

import re
import threading
import time
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.compiler import CodeGenerator
from jinja2.filters import FILTERS
from jinja2.runtime import Namespace
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import pass_context

MAX_VALUE = 1 << 22   # characters (or elements) of one value, plus its render's input's
MAX_OUTPUT = 1 << 23  # characters a render emits, plus twice its input's
TIME_LIMIT = 2.0      # seconds per render (real chat templates take milliseconds)
MAX_SOURCE = 1 << 18  # characters of template source

# str methods a template may call: none returns more than its inputs hold, but for
# replace and join, which are checked in call()
STR_METHODS = frozenset("""capitalize casefold count endswith find index isalnum isalpha isascii isdecimal isdigit
    isidentifier islower isnumeric isprintable isspace istitle isupper join lower lstrip partition removeprefix
    removesuffix replace rfind rindex rpartition rsplit rstrip split splitlines startswith strip swapcase title
    upper""".split())
DICT_METHODS = frozenset(("get", "items", "keys", "values"))
SEQ_METHODS = frozenset(("count", "index"))
# filters that cannot grow a value beyond a multiple of its size (checked after) or
# are checked below; the rest of jinja2's (center, format, pprint, urlize, wordwrap,
# xmlattr, filesizeformat, random, ...) are not available
PLAIN_FILTERS = """abs attr capitalize count d default dictsort e escape first float forceescape groupby int items
    last length list lower map max min reject rejectattr reverse round safe select selectattr sort striptags
    title trim truncate unique upper urlencode wordcount""".split()

_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?[a-zA-Z%]")


class TemplateLimitError(jinja2.TemplateError):
    """A template went past a bound (time, size) or used what the sandbox withholds."""


class _BoundedCodeGenerator(CodeGenerator):
    """Routes loops, literal text and `~` through the environment's checks."""

    def visit_For(self, node: nodes.For, frame) -> None:
        node.iter = nodes.Call(nodes.EnvironmentAttribute("bounded_iter"), [node.iter], [], None, None)
        super().visit_For(node, frame)

    def visit_Output(self, node: nodes.Output, frame) -> None:
        # literal text is emitted through finalize too (an environment call cannot be
        # folded into a constant), so it counts against the output bound
        node.nodes = [nodes.Call(nodes.EnvironmentAttribute("literal"), [nodes.Const(n.data)], [], None, None)
                      if isinstance(n, nodes.TemplateData) else n for n in node.nodes]
        super().visit_Output(node, frame)

    def visit_Concat(self, node: nodes.Concat, frame) -> None:
        self.write("environment.bounded_concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class BoundedSandbox(ImmutableSandboxedEnvironment):
    code_generator_class = _BoundedCodeGenerator
    intercepted_binops = frozenset(("+", "*", "**", "%"))

    def __init__(self, time_limit: float = TIME_LIMIT, max_output: int = MAX_OUTPUT, max_value: int = MAX_VALUE,
                 **options):
        super().__init__(finalize=self._emit, **options)
        self.time_limit, self.max_output, self.max_value = time_limit, max_output, max_value
        self._render = threading.local()  # deadline and characters emitted, per rendering thread
        self.globals.pop("lipsum", None)
        self.filters = {name: self._plain_filter(FILTERS[name]) for name in PLAIN_FILTERS}
        for name in ("join", "replace", "indent", "string", "tojson", "batch", "slice", "sum"):
            self.filters[name] = self._checked_filter(name, FILTERS[name])

    # ------------------------------------------------------------ rendering
    def render(self, template: jinja2.Template, input_chars: int = 0, **context) -> str:
        state = self._render
        state.deadline = time.monotonic() + self.time_limit
        state.left = self.max_output + 2 * input_chars
        state.value_limit = self.max_value + input_chars  # (a value may hold every message)
        try:
            return "".join(template.generate(**context))
        finally:
            state.deadline, state.value_limit = None, self.max_value

    def handle_exception(self, source=None):
        # re-raised as it is: jinja2's rewriting of the traceback compiles a code object
        # per template frame, seconds for a RecursionError a thousand frames deep
        raise  # noqa: PLE0704 (called in jinja2's except block)

    def tick(self) -> None:
        deadline = getattr(self._render, "deadline", None)
        if deadline is not None and time.monotonic() > deadline:
            raise TemplateLimitError(f"rendering ran past its time limit of {self.time_limit:g} s")

    def _emit(self, value: Any) -> Any:
        text = value if isinstance(value, str) else self._to_text(value)
        state = self._render
        if getattr(state, "deadline", None) is not None:
            state.left -= len(text)
            if state.left < 0:
                raise TemplateLimitError("rendering emitted more text than the output bound "
                                         f"({self.max_output} characters plus twice the messages)")
        return text

    # ------------------------------------------------------------ what code can reach
    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        if isinstance(obj, str):
            return attr in STR_METHODS
        if isinstance(obj, dict) and attr in dir(dict):
            return attr in DICT_METHODS
        if isinstance(obj, (list, tuple)) and attr in dir(list):
            return attr in SEQ_METHODS
        return super().is_safe_attribute(obj, attr, value)

    def wrap_str_format(self, value: Any):
        return None  # str.format is not in STR_METHODS: no sandboxed stand-in either

    def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805 (jinja2's signature)
        __self.tick()
        owner = getattr(__obj, "__self__", None)
        if isinstance(owner, str):
            name = getattr(__obj, "__name__", "")
            if name == "replace":
                __self._check_replace(owner, *args, **kwargs)
            elif name == "join":
                __self._check_join(owner, *args)
        return super().call(__context, __obj, *args, **kwargs)

    # environment attributes the generated code calls (see _BoundedCodeGenerator)
    def bounded_iter(self, iterable):
        for item in iterable:
            self.tick()
            yield item

    @staticmethod
    def literal(text: str) -> str:
        return text

    def bounded_concat(self, parts) -> str:
        texts = [p if isinstance(p, str) else self._to_text(p) for p in parts]
        self._check_size(sum(map(len, texts)), "`~`")
        return "".join(texts)

    def call_binop(self, context, operator: str, left: Any, right: Any) -> Any:
        self.tick()
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(n, int):
                    self._check_size(len(seq) * max(n, 0), "`*`")
            if isinstance(left, int) and isinstance(right, int):
                self._check_bits(left.bit_length() + right.bit_length(), "`*`")
        elif operator == "**" and isinstance(left, int) and isinstance(right, int) and right > 0:
            self._check_bits(max(left.bit_length(), 1) * right, "`**`")
        elif operator == "+" and isinstance(left, (str, list, tuple)) and isinstance(right, (str, list, tuple)):
            self._check_size(len(left) + len(right), "`+`")
        elif operator == "%" and isinstance(left, str):
            self._check_percent(left, right)
        return super().call_binop(context, operator, left, right)

    # ------------------------------------------------------------ checks
    def _value_limit(self) -> int:
        return getattr(self._render, "value_limit", self.max_value)

    def _check_size(self, n: int, what: str) -> None:
        if n > self._value_limit():
            raise TemplateLimitError(f"{what} would make a value of {n} characters or elements "
                                     f"(at most {self._value_limit()})")

    def _check_bits(self, bits: int, what: str) -> None:
        if bits > 1 << 16:
            raise TemplateLimitError(f"{what} would make an integer of {bits} bits (at most 65536)")

    def _size(self, value: Any, budget: int | None = None) -> int:
        """An upper bound of len(str(value)), or more than budget (default: the value
        bound) as soon as that is certain; the walk costs at most about budget steps."""
        budget = self._value_limit() if budget is None else budget
        total, stack, steps = 0, [value], 0
        while stack:
            v = stack.pop()
            steps += 1
            if steps % 65536 == 0:
                self.tick()
            if isinstance(v, str):
                total += len(v) + 4  # quotes, separator
            elif isinstance(v, dict):
                total += 2 + 2 * len(v)
                stack.extend(v.keys())
                stack.extend(v.values())
            elif isinstance(v, Namespace):  # its text is its attributes'
                stack.append(object.__getattribute__(v, "_Namespace__attrs"))
            elif isinstance(v, (list, tuple, set, frozenset)):
                total += 2 + 2 * len(v)
                stack.extend(v)
            else:
                total += 64  # numbers (at most 65536 bits: ~20000 digits, refused by str()), None, objects
            if total > budget:
                break
        return total

    def _total_size(self, items, what: str, extra: int = 0) -> None:
        """Checks the items' sizes together (one budget for all: a list of a million
        references to one big value must not be walked a million times)."""
        total = extra
        for i in items:
            total += self._size(i, self._value_limit() - total)
            self._check_size(total, what)

    def _to_text(self, value: Any) -> str:
        self._check_size(self._size(value), "converting to text")
        return str(value)

    def _check_replace(self, s: str, old: str = "", new: str = "", count: int = -1) -> None:
        if isinstance(old, str) and isinstance(new, str):
            n = (len(s) + 1) if not old else s.count(old)
            if isinstance(count, int) and count >= 0:
                n = min(n, count)
            self._check_size(len(s) + n * len(new), "replace")

    def _check_join(self, sep: str, items: Any = ()) -> None:
        if isinstance(items, (list, tuple, str)):
            self._total_size(items, "join", len(sep) * len(items))

    def _check_percent(self, fmt: str, args: Any) -> None:
        width = len(fmt)
        for m in _PERCENT_SPEC.finditer(fmt):
            if "*" in (m.group(1), m.group(2)):
                raise TemplateLimitError("`%` with a `*` width or precision is not available")
            width += sum(int(g) for g in m.groups() if g)
        self._check_size(width + self._size(args), "`%`")

    # ------------------------------------------------------------ filters
    def _plain_filter(self, f):
        """f, checked for time, its text result for size; never run at compile time."""
        pass_arg = jinja2.utils._PassArg.from_obj(f)

        @pass_context
        def run(context, *args, **kwargs):
            self.tick()
            if pass_arg is jinja2.utils._PassArg.context:
                out = f(context, *args, **kwargs)
            elif pass_arg is jinja2.utils._PassArg.eval_context:
                out = f(context.eval_ctx, *args, **kwargs)
            elif pass_arg is jinja2.utils._PassArg.environment:
                out = f(self, *args, **kwargs)
            else:
                out = f(*args, **kwargs)
            if isinstance(out, (str, list, tuple)):
                self._check_size(len(out), "a filter")
            return out
        return run

    def _checked_filter(self, name: str, f):
        run = self._plain_filter(f)

        @pass_context
        def checked(context, value, *args, **kwargs):
            self.tick()
            if name == "join":
                items = list(value) if not isinstance(value, (list, tuple, str)) else value
                self._check_join(str(args[0]) if args else kwargs.get("d", ""), items)
                value = items
            elif name == "replace" and isinstance(value, str):
                self._check_replace(value, *args, **kwargs)
            elif name == "indent":
                width = args[0] if args else kwargs.get("width", 4)
                w = len(width) if isinstance(width, str) else width
                if isinstance(value, str) and isinstance(w, int):
                    self._check_size(len(value) + (value.count("\n") + 1) * max(w, 0), "indent")
            elif name in ("string", "tojson"):
                self._check_size(self._size(value), name)
            elif name == "sum":  # of lists or strings: a concatenation, one copy per item
                items = list(value) if not isinstance(value, (list, tuple)) else value
                if any(isinstance(i, (str, list, tuple)) for i in items):
                    self._total_size(items, "sum")
                value = items
            elif name == "slice" or (name == "batch" and (len(args) > 1 or "fill_with" in kwargs)):
                # slice makes n lists, batch pads the last one to n: no more than there are items
                n = args[0] if args else kwargs.get("slices", kwargs.get("linecount", 1))
                if isinstance(n, int) and n > (len(value) if hasattr(value, "__len__") else 0) + 1:
                    raise TemplateLimitError(f"{name}({n}) asks for more than the sequence holds")
            return run(context, value, *args, **kwargs)
        return checked


def compile_template(env: BoundedSandbox, source: str) -> jinja2.Template:
    if len(source) > MAX_SOURCE:
        raise TemplateLimitError(f"the template is {len(source)} characters (at most {MAX_SOURCE})")
    return env.from_string(source)
