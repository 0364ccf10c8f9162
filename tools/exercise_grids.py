"""The generated units of tools/make_exercises.py: each is a table of operations and a table
of what they apply to, and every operation meets every entry ("how many of the numbers are
negative", "the string without its digits", "a list of the cube of each number"...).

A docstring's words then name the parts of a function separately, so a model can meet a
combination it was never shown as the sum of two it was. The combinations that are tasks of
the evaluation's held-out set (tools/code_tasks.py) are left out, each grid's LEFT_OUT says
which; tests/test_exercises.py runs every family's reference against every held-out task and
finds any that should have been. The held-out tasks that are such cells measure that
composition; the card reports them apart from the other held-out tasks.
"""
from __future__ import annotations

import re

NUMS = ("numbers", "values", "nums", "data", "xs")
TEXT = ("text", "s", "string", "word", "phrase")
SCALAR = ("x", "n", "value", "number")

# ---- list operations under a condition on a number
CONDITIONS = [  # (word for names, phrase for docstrings, test on x)
    ("even", "even", "x % 2 == 0"),
    ("odd", "odd", "x % 2 == 1"),
    ("positive", "greater than zero", "x > 0"),
    ("negative", "less than zero", "x < 0"),
    ("nonzero", "not zero", "x != 0"),
    ("below_ten", "smaller than 10", "x < 10"),
    ("multiple_of_three", "divisible by 3", "x % 3 == 0"),
    ("over_hundred", "greater than 100", "x > 100"),
]
LIST_OPERATIONS = {  # name patterns, docstrings, bodies ({w}, {p}, {c}: the condition's word,
    # phrase, test), and the reference given the condition as a predicate
    "count": ("count_{w} how_many_{w}",
              ["Return how many numbers in {{a}} are {p}.", "Count the elements of {{a}} that are {p}."],
              ["    count = 0\n    for x in {{a}}:\n        if {c}:\n            count += 1\n    return count",
               "    return sum(1 for x in {{a}} if {c})"],
              lambda keep, xs: sum(1 for x in xs if keep(x))),
    "sum": ("sum_{w} total_of_{w}",
            ["Return the sum of the numbers in {{a}} that are {p} (0 if there are none).",
             "Add up the elements of {{a}} that are {p}."],
            ["    total = 0\n    for x in {{a}}:\n        if {c}:\n            total += x\n    return total",
             "    return sum(x for x in {{a}} if {c})"],
            lambda keep, xs: sum(x for x in xs if keep(x))),
    "keep": ("keep_{w} select_{w}",
             ["Return a list of the numbers in {{a}} that are {p}, in order.",
              "Keep the elements of {{a}} that are {p}."],
             ["    result = []\n    for x in {{a}}:\n        if {c}:\n            result.append(x)\n    return result",
              "    return [x for x in {{a}} if {c}]"],
             lambda keep, xs: [x for x in xs if keep(x)]),
    "any": ("any_{w} has_{w}",
            ["Return True if at least one number in {{a}} is {p}.", "Check whether some element of {{a}} is {p}."],
            ["    for x in {{a}}:\n        if {c}:\n            return True\n    return False",
             "    return any({c} for x in {{a}})"],
            lambda keep, xs: any(keep(x) for x in xs)),
    "all": ("all_{w} all_are_{w}",
            ["Return True if every number in {{a}} is {p} (True for an empty list).",
             "Check that each element of {{a}} is {p}."],
            ["    for x in {{a}}:\n        if not ({c}):\n            return False\n    return True",
             "    return all({c} for x in {{a}})"],
            lambda keep, xs: all(keep(x) for x in xs)),
    "first": ("first_{w} find_first_{w}",
              ["Return the first number in {{a}} that is {p}, or None if there is none.",
               "Find the first element of {{a}} that is {p} (None when no element is)."],
              ["    for x in {{a}}:\n        if {c}:\n            return x\n    return None",
               "    return next((x for x in {{a}} if {c}), None)"],
              lambda keep, xs: next((x for x in xs if keep(x)), None)),
    "largest": ("largest_{w} max_{w}",
                ["Return the largest number in {{a}} that is {p}, or None if there is none.",
                 "Find the biggest element of {{a}} that is {p} (None when no element is)."],
                ["    best = None\n    for x in {{a}}:\n        if {c} and (best is None or x > best):\n            best = x\n"
                 "    return best",
                 "    return max((x for x in {{a}} if {c}), default=None)"],
                lambda keep, xs: max((x for x in xs if keep(x)), default=None)),
    # the condition on one number
    "is": ("is_{w}_number {w}_check",
           ["Return True if {{a}} is {p}, otherwise False.", "Check whether the number {{a}} is {p}."],
           ["    return {c}", "    if {c}:\n        return True\n    return False"],
           lambda keep, x: keep(x)),
}
LIST_EXAMPLES = [([1, -2, 3, 0, 12, 150, -7, 6],), ([],), ([2, 4, 101, 300],), ([-3, -9, 5],), ([7],)]
SCALAR_EXAMPLES = [(4,), (-3,), (0,), (7,), (150,), (-12,)]

# ---- string operations on a class of characters
CHAR_CLASSES = [  # (word for names, plural phrase for docstrings, test on ch)
    ("vowels", "vowels", "ch in 'aeiouAEIOU'"),
    ("digits", "digits", "ch.isdigit()"),
    ("uppercase", "upper-case letters", "ch.isupper()"),
    ("lowercase", "lower-case letters", "ch.islower()"),
    ("letters", "letters", "ch.isalpha()"),
    ("spaces", "spaces", "ch == ' '"),
]
TEXT_OPERATIONS = {
    "count": ("how_many_{w} num_{w}",
              ["Return how many {p} there are in {{a}}.", "Count the {p} in the string {{a}}."],
              ["    count = 0\n    for ch in {{a}}:\n        if {c}:\n            count += 1\n    return count",
               "    return sum(1 for ch in {{a}} if {c})"],
              lambda keep, s: sum(1 for ch in s if keep(ch))),
    "remove": ("remove_{w} without_{w}",
               ["Return {{a}} with all of its {p} removed.", "Delete the {p} from the string {{a}}."],
               ["    result = ''\n    for ch in {{a}}:\n        if not ({c}):\n            result += ch\n    return result",
                "    return ''.join(ch for ch in {{a}} if not ({c}))"],
               lambda keep, s: "".join(ch for ch in s if not keep(ch))),
    "keep": ("only_{w} keep_{w}",
             ["Return a string of just the {p} of {{a}}, in order.", "Keep only the {p} of {{a}}."],
             ["    result = ''\n    for ch in {{a}}:\n        if {c}:\n            result += ch\n    return result",
              "    return ''.join(ch for ch in {{a}} if {c})"],
             lambda keep, s: "".join(ch for ch in s if keep(ch))),
    "any": ("has_{w} contains_{w}",
            ["Return True if {{a}} contains any {p}.", "Check whether the string {{a}} has at least one of the {p}."],
            ["    for ch in {{a}}:\n        if {c}:\n            return True\n    return False",
             "    return any({c} for ch in {{a}})"],
            lambda keep, s: any(keep(ch) for ch in s)),
    "all": ("only_has_{w} all_{w}",
            ["Return True if every character of {{a}} is one of the {p} (True for an empty string).",
             "Check that the string {{a}} is made of {p} alone."],
            ["    for ch in {{a}}:\n        if not ({c}):\n            return False\n    return True",
             "    return all({c} for ch in {{a}})"],
            lambda keep, s: all(keep(ch) for ch in s)),
    "first": ("first_of_{w} find_first_of_{w}",
              ["Return the first of the {p} in {{a}}, or '' if it has none.",
               "Find the earliest character of {{a}} that is one of the {p} ('' when there is none)."],
              ["    for ch in {{a}}:\n        if {c}:\n            return ch\n    return ''",
               "    return next((ch for ch in {{a}} if {c}), '')"],
              lambda keep, s: next((ch for ch in s if keep(ch)), "")),
}
TEXT_EXAMPLES = [("Hello World 42",), ("",), ("abc",), ("A1 b2!",), ("XYZ",), ("  ",)]

# ---- a change to each number: on one number, over a list, summed over a list, summed 1..n
TRANSFORMS = [  # (verb for names, participle, phrase before "x", expression in x)
    ("double", "doubled", "twice", "x * 2"),
    ("triple", "tripled", "three times", "x * 3"),
    ("square", "squared", "the square of", "x * x"),
    ("cube", "cubed", "the cube of", "x ** 3"),
    ("increment", "incremented", "one more than", "x + 1"),
    ("decrement", "decremented", "one less than", "x - 1"),
    ("negate", "negated", "the negative of", "-x"),
    ("halve", "halved", "half of", "x / 2"),
    ("absolute", "absolute", "the absolute value of", "abs(x)"),
    ("tenfold", "multiplied_by_ten", "ten times", "x * 10"),
]
TRANSFORM_OPERATIONS = {  # ({v}, {pp}, {p}, {e}: verb, participle, phrase, expression)
    "one": ("{v}_number {pp}_value", SCALAR, SCALAR_EXAMPLES,
            ["Return {p} {{a}}.", "Compute {p} the number {{a}} and return it."],
            ["    return {e}", "    result = {e}\n    return result"],
            lambda f, x: f(x)),
    "map": ("{v}_each {pp}_list", NUMS, LIST_EXAMPLES,
            ["Return a new list of {p} each number in {{a}}.", "Make a list holding {p} every element of {{a}}, in order."],
            ["    result = []\n    for x in {{a}}:\n        result.append({e})\n    return result",
             "    return [{e} for x in {{a}}]"],
            lambda f, xs: [f(x) for x in xs]),
    "sum": ("sum_of_{pp} {pp}_total", NUMS, LIST_EXAMPLES,
            ["Return the sum of {p} each number in {{a}} (0 for an empty list).",
             "Add up {p} every element of {{a}}."],
            ["    total = 0\n    for x in {{a}}:\n        total += {e}\n    return total",
             "    return sum({e} for x in {{a}})"],
            lambda f, xs: sum(f(x) for x in xs)),
    "upto": ("sum_{pp}_up_to {pp}_series", ("n", "limit", "count"), [(0,), (1,), (4,), (6,)],
             ["Return the sum of {p} x for every whole number x from 1 to {{a}}.",
              "Add up {p} x over x = 1, 2, ..., {{a}} (0 when {{a}} is 0)."],
             ["    total = 0\n    for x in range(1, {{a}} + 1):\n        total += {e}\n    return total",
              "    return sum({e} for x in range(1, {{a}} + 1))"],
             lambda f, n: sum(f(x) for x in range(1, n + 1))),
}

# cells that are held-out evaluation tasks (tools/code_tasks.py)
LEFT_OUT = {
    ("count", "odd"), ("sum", "odd"), ("keep", "positive"), ("is", "negative"),  # count_odd, sum_of_odds,
    # keep_positive, is_negative
    ("count", "lowercase"), ("count", "letters"),                                 # count_lowercase, count_letters
    ("one", "triple"), ("map", "increment"), ("map", "negate"),                   # triple, increment_all, negate_all
    ("sum", "square"), ("upto", "cube"),                                          # sum_squares_of_list, sum_of_cubes
}


def _predicate(arg: str, test: str):
    return eval(f"lambda {arg}: {test}")  # noqa: S307 (the tables above)


def _on_argument(expr: str) -> str:
    """expr (in x) applied to the function's own argument: on one number there is no loop."""
    return re.sub(r"\bx\b", "{a}", expr)


def grid_families(F, left_out=LEFT_OUT) -> list:
    """Every cell of the three grids not in left_out, as families made by F (make_exercises.F)."""
    out = []
    for op, (names, docs, bodies, ref) in LIST_OPERATIONS.items():
        args, examples = (SCALAR, SCALAR_EXAMPLES) if op == "is" else (NUMS, LIST_EXAMPLES)
        for word, phrase, test in CONDITIONS:
            if (op, word) in left_out:
                continue
            keep = _predicate("x", test)
            cond = _on_argument(test) if op == "is" else test
            out.append(F(names.format(w=word), [(a,) for a in args], [d.format(p=phrase) for d in docs],
                         [b.format(c=cond) for b in bodies], examples, lambda v, keep=keep, ref=ref: ref(keep, v)))
    for op, (names, docs, bodies, ref) in TEXT_OPERATIONS.items():
        for word, phrase, test in CHAR_CLASSES:
            if (op, word) in left_out:
                continue
            keep = _predicate("ch", test)
            out.append(F(names.format(w=word), [(a,) for a in TEXT], [d.format(p=phrase) for d in docs],
                         [b.format(c=test) for b in bodies], TEXT_EXAMPLES, lambda s, keep=keep, ref=ref: ref(keep, s)))
    for op, (names, args, examples, docs, bodies, ref) in TRANSFORM_OPERATIONS.items():
        for verb, participle, phrase, expr in TRANSFORMS:
            if (op, verb) in left_out:
                continue
            f = _predicate("x", expr)
            fill = dict(v=verb, pp=participle, p=phrase, e=_on_argument(expr) if op == "one" else expr)
            out.append(F(names.format(**fill), [(a,) for a in args], [d.format(**fill) for d in docs],
                         [b.format(**fill) for b in bodies], examples, lambda v, f=f, ref=ref: ref(f, v)))
    return out
