"""Synthetic "textbook exercises" for the bundled code model (issue 20): short, correct,
documented Python functions of a first programming course, each followed by a few asserts
that show it in use, generated from families of the same skill written many ways.

Phi-1's lesson was that a small model learns to write functions from clean exercise-like
text far more than from library code; the corpus of the earlier runs (the standard library,
installed packages, small libraries) taught the form of a function but not its content
(MODEL_CARD.md, runs 4-5). A family here is one skill (the sum of a list, reversing a
string, counting matches...) with several names, argument names, docstring phrasings and
correct bodies (a loop and a built-in, say); an exercise draws one of each, so the model
sees the same skill under many surfaces and the same surface with different skills.

Every body is checked against the family's reference on its examples (the asserts are
computed from the reference, tests/test_corpus_tools.py runs them all), and no exercise
reproduces a prompt of tools/code_tasks.py (the evaluation): the evaluation's skills
overlap with a first course's by nature, its wording must not.

    python tools/make_exercises.py --count 20000 --seed 1 > exercises.txt    # a sample
    make_tiny_corpus.py --exercises 20000 ...                                  # into the corpus
"""
from __future__ import annotations

import argparse
import random
import sys
from dataclasses import dataclass
from typing import Callable

EOT = "<|endoftext|>"


@dataclass(frozen=True)
class Family:
    names: tuple[str, ...]               # function names
    args: tuple[tuple[str, ...], ...]    # argument-name tuples (one name per parameter)
    docs: tuple[str, ...]                # docstrings; {a}, {b}, {c}: the argument names
    bodies: tuple[str, ...]              # indented bodies, same placeholders
    examples: tuple[tuple, ...]          # argument tuples
    ref: Callable                        # the reference: what every body must return


def F(names, args, docs, bodies, examples, ref) -> Family:
    """A family from short spellings: names and each argument tuple as space-separated words."""
    return Family(tuple(names.split()), tuple(tuple(a.split()) if isinstance(a, str) else tuple(a) for a in args),
                  tuple(docs), tuple(bodies), tuple(examples), ref)


def _collatz_steps(n: int) -> int:
    steps = 0
    while n != 1:
        n = n // 2 if n % 2 == 0 else 3 * n + 1
        steps += 1
    return steps


NUMS = ("numbers", "values", "nums", "data", "xs")
ITEMS = ("items", "seq", "elements", "lst", "values")
TEXT = ("text", "s", "string", "word", "phrase")

FAMILIES: list[Family] = [
    # ---- arithmetic
    F("subtract difference minus", ["a b", "x y", "first second"],
      ["Return {a} minus {b}.", "Subtract {b} from {a} and return the result."],
      ["    return {a} - {b}", "    result = {a} - {b}\n    return result"],
      [(5, 3), (0, 7), (-2, -9)], lambda a, b: a - b),
    F("multiply product times", ["a b", "x y", "m n"],
      ["Return the product of {a} and {b}.", "Multiply {a} by {b}."],
      ["    return {a} * {b}", "    result = {a} * {b}\n    return result"],
      [(4, 5), (0, 9), (-3, 7)], lambda a, b: a * b),
    F("cube cubed third_power", ["x", "n", "value"],
      ["Return {a} raised to the third power.", "Return the cube of {a}."],
      ["    return {a} * {a} * {a}", "    return {a} ** 3"],
      [(2,), (-3,), (0,)], lambda x: x ** 3),
    F("double twice times_two", ["x", "n", "value"],
      ["Return {a} multiplied by two.", "Return twice the value of {a}."],
      ["    return {a} * 2", "    return {a} + {a}"],
      [(4,), (-1,), (0,)], lambda x: 2 * x),
    F("half halve", ["x", "value", "number"],
      ["Return half of {a} as a float.", "Divide {a} by two."],
      ["    return {a} / 2"],
      [(4,), (3,), (-10,)], lambda x: x / 2),
    F("average_of_two midpoint mean_of_two", ["a b", "x y", "low high"],
      ["Return the average of {a} and {b}.", "Return the number halfway between {a} and {b}."],
      ["    return ({a} + {b}) / 2"],
      [(2, 4), (1, 2), (-6, 6)], lambda a, b: (a + b) / 2),
    F("is_odd odd", ["n", "number", "value"],
      ["Return True if {a} is odd, otherwise False.", "Check whether {a} is an odd number."],
      ["    return {a} % 2 == 1", "    return {a} % 2 != 0", "    if {a} % 2 == 1:\n        return True\n    return False"],
      [(3,), (8,), (0,), (-5,)], lambda n: n % 2 == 1),
    F("is_positive positive", ["n", "x", "value"],
      ["Return True if {a} is greater than zero.", "Check whether {a} is positive."],
      ["    return {a} > 0", "    if {a} > 0:\n        return True\n    return False"],
      [(3,), (0,), (-2,)], lambda n: n > 0),
    F("is_divisible divides_evenly", ["n d", "a b", "number divisor"],
      ["Return True if {a} is divisible by {b}.", "Check whether {b} divides {a} with no remainder."],
      ["    return {a} % {b} == 0"],
      [(10, 5), (7, 2), (0, 3)], lambda n, d: n % d == 0),
    F("minimum smaller min_of_two", ["a b", "x y", "first second"],
      ["Return the smaller of {a} and {b}.", "Return whichever of {a} and {b} is less."],
      ["    return {a} if {a} < {b} else {b}", "    if {a} < {b}:\n        return {a}\n    return {b}",
       "    return min({a}, {b})"],
      [(3, 9), (9, 3), (-2, -7), (4, 4)], lambda a, b: min(a, b)),
    F("max_of_three largest_of_three", ["a b c", "x y z"],
      ["Return the largest of {a}, {b} and {c}.", "Return the biggest of the three numbers {a}, {b}, {c}."],
      ["    return max({a}, {b}, {c})",
       "    result = {a}\n    if {b} > result:\n        result = {b}\n    if {c} > result:\n        result = {c}\n    return result"],
      [(1, 2, 3), (3, 2, 1), (2, 9, 4), (-1, -5, -3)], lambda a, b, c: max(a, b, c)),
    F("sign signum", ["x", "n", "value"],
      ["Return 1 if {a} is positive, -1 if it is negative and 0 if it is zero.", "Return the sign of {a}."],
      ["    if {a} > 0:\n        return 1\n    if {a} < 0:\n        return -1\n    return 0",
       "    if {a} > 0:\n        return 1\n    elif {a} < 0:\n        return -1\n    else:\n        return 0"],
      [(5,), (-3,), (0,)], lambda x: (x > 0) - (x < 0)),
    F("distance abs_difference", ["a b", "x y"],
      ["Return the distance between {a} and {b} on the number line.", "Return the absolute difference of {a} and {b}."],
      ["    return abs({a} - {b})", "    if {a} > {b}:\n        return {a} - {b}\n    return {b} - {a}"],
      [(3, 8), (8, 3), (-2, 2)], lambda a, b: abs(a - b)),
    F("sum_to triangular sum_up_to", ["n", "limit", "count"],
      ["Return the sum of the integers from 1 to {a}.", "Add up all whole numbers from 1 to {a} inclusive."],
      ["    total = 0\n    for i in range(1, {a} + 1):\n        total += i\n    return total",
       "    return {a} * ({a} + 1) // 2", "    return sum(range(1, {a} + 1))"],
      [(1,), (4,), (10,), (0,)], lambda n: n * (n + 1) // 2),
    F("sum_of_squares squares_sum", ["n", "limit"],
      ["Return 1*1 + 2*2 + ... + {a}*{a}.", "Return the sum of the squares of the numbers from 1 to {a}."],
      ["    total = 0\n    for i in range(1, {a} + 1):\n        total += i * i\n    return total",
       "    return sum(i * i for i in range(1, {a} + 1))"],
      [(1,), (3,), (5,), (0,)], lambda n: sum(i * i for i in range(1, n + 1))),
    F("product_to product_up_to", ["n", "limit"],
      ["Return the product of the integers from 1 to {a}.", "Multiply all whole numbers from 1 to {a} together."],
      ["    result = 1\n    for i in range(2, {a} + 1):\n        result *= i\n    return result",
       "    if {a} <= 1:\n        return 1\n    return {a} * product_to({a} - 1)"],
      [(0,), (1,), (4,), (6,)], lambda n: __import__("math").factorial(n)),
    F("count_digits num_digits digit_count", ["n", "number"],
      ["Return how many digits the non-negative integer {a} has.", "Count the decimal digits of {a}."],
      ["    return len(str({a}))",
       "    count = 1\n    while {a} >= 10:\n        {a} //= 10\n        count += 1\n    return count"],
      [(0,), (7,), (12345,), (100,)], lambda n: len(str(n))),
    F("reverse_digits reversed_number", ["n", "number"],
      ["Return the non-negative integer {a} with its digits in reverse order.", "Reverse the digits of {a}."],
      ["    return int(str({a})[::-1])",
       "    result = 0\n    while {a} > 0:\n        result = result * 10 + {a} % 10\n        {a} //= 10\n    return result"],
      [(123,), (7,), (1200,), (0,)], lambda n: int(str(n)[::-1])),
    F("lcm least_common_multiple", ["a b", "x y"],
      ["Return the least common multiple of the positive integers {a} and {b}.",
       "Return the smallest positive number divisible by both {a} and {b}."],
      ["    m = max({a}, {b})\n    while m % {a} != 0 or m % {b} != 0:\n        m += 1\n    return m",
       "    p, q = {a}, {b}\n    while q:\n        p, q = q, p % q\n    return {a} * {b} // p"],
      [(4, 6), (3, 5), (7, 7), (1, 9)], lambda a, b: a * b // __import__("math").gcd(a, b)),
    F("count_divisors divisor_count", ["n", "number"],
      ["Return how many positive integers divide {a}.", "Count the divisors of the positive integer {a}."],
      ["    count = 0\n    for i in range(1, {a} + 1):\n        if {a} % i == 0:\n            count += 1\n    return count",
       "    return sum(1 for i in range(1, {a} + 1) if {a} % i == 0)"],
      [(1,), (6,), (7,), (12,)], lambda n: sum(1 for i in range(1, n + 1) if n % i == 0)),
    F("divisors list_divisors", ["n", "number"],
      ["Return a list of the positive divisors of {a} in increasing order.", "Return every number that divides {a}, smallest first."],
      ["    result = []\n    for i in range(1, {a} + 1):\n        if {a} % i == 0:\n            result.append(i)\n    return result",
       "    return [i for i in range(1, {a} + 1) if {a} % i == 0]"],
      [(1,), (6,), (13,), (12,)], lambda n: [i for i in range(1, n + 1) if n % i == 0]),
    F("nth_fib fib", ["n", "k", "index"],
      ["Return the {a}-th Fibonacci number, where fib(0) is 0 and fib(1) is 1.",
       "Return element {a} of the sequence 0, 1, 1, 2, 3, 5, 8, ..."],
      ["    a, b = 0, 1\n    for _ in range({a}):\n        a, b = b, a + b\n    return a",
       "    if {a} < 2:\n        return {a}\n    prev, cur = 0, 1\n    for _ in range({a} - 1):\n        prev, cur = cur, prev + cur\n    return cur"],
      [(0,), (1,), (2,), (7,), (10,)], lambda n: [0, 1, 1, 2, 3, 5, 8, 13, 21, 34, 55][n]),
    F("kilometers_to_miles km_to_miles", ["km", "distance"],
      ["Convert a distance of {a} kilometers to miles (1 km is 0.621371 miles).", "Return {a} kilometers in miles."],
      ["    return {a} * 0.621371"],
      [(0,), (10,), (1.5,)], lambda km: km * 0.621371),
    F("fahrenheit_to_celsius to_celsius", ["f", "degrees", "temp"],
      ["Convert the temperature {a} from Fahrenheit to Celsius.", "Return {a} degrees Fahrenheit in degrees Celsius."],
      ["    return ({a} - 32) * 5 / 9"],
      [(32,), (212,), (-40,)], lambda f: (f - 32) * 5 / 9),
    F("area_of_rectangle rectangle_area", ["width height", "w h", "length breadth"],
      ["Return the area of a rectangle {a} wide and {b} high.", "Return {a} times {b}, the area of the rectangle."],
      ["    return {a} * {b}"],
      [(3, 4), (0, 5), (2.5, 2)], lambda w, h: w * h),
    F("perimeter rectangle_perimeter", ["width height", "w h"],
      ["Return the perimeter of a rectangle of sides {a} and {b}.", "Return the distance around a {a} by {b} rectangle."],
      ["    return 2 * ({a} + {b})", "    return {a} + {a} + {b} + {b}"],
      [(3, 4), (1, 1), (0, 5)], lambda w, h: 2 * (w + h)),
    # ---- strings
    F("first_char first_letter", [(t,) for t in TEXT],
      ["Return the first character of {a}, or an empty string if {a} is empty.", "Return {a}[0], or '' for an empty string."],
      ["    if not {a}:\n        return ''\n    return {a}[0]", "    return {a}[:1]"],
      [("hello",), ("",), ("x",)], lambda s: s[:1]),
    F("last_char last_letter", [(t,) for t in TEXT],
      ["Return the last character of {a}, or an empty string if it is empty.", "Return the final letter of {a}."],
      ["    if not {a}:\n        return ''\n    return {a}[-1]", "    return {a}[-1:]"],
      [("hello",), ("",), ("ab",)], lambda s: s[-1:]),
    F("to_upper shout uppercase", [("text",), ("s",), ("phrase",)],
      ["Return {a} with every letter in upper case.", "Convert {a} to capital letters."],
      ["    return {a}.upper()", "    result = ''\n    for ch in {a}:\n        result += ch.upper()\n    return result"],
      [("hello",), ("MiXeD 1",), ("",)], lambda s: s.upper()),
    F("count_char count_letter", ["text ch", "s c", "word letter"],
      ["Return how many times the character {b} appears in {a}.", "Count the occurrences of {b} in the string {a}."],
      ["    return {a}.count({b})",
       "    count = 0\n    for x in {a}:\n        if x == {b}:\n            count += 1\n    return count"],
      [("banana", "a"), ("hello", "z"), ("", "a")], lambda s, c: s.count(c)),
    F("count_consonants consonants", [("text",), ("s",), ("word",)],
      ["Return the number of consonants (letters that are not a, e, i, o, u) in {a}.",
       "Count the letters in {a} that are not vowels, ignoring case."],
      ["    count = 0\n    for ch in {a}.lower():\n        if ch.isalpha() and ch not in 'aeiou':\n            count += 1\n    return count",
       "    return sum(1 for ch in {a}.lower() if ch.isalpha() and ch not in 'aeiou')"],
      [("hello",), ("AEIOU",), ("Python 3",), ("",)], lambda s: sum(1 for ch in s.lower() if ch.isalpha() and ch not in "aeiou")),
    F("remove_spaces strip_spaces no_spaces", [("text",), ("s",), ("phrase",)],
      ["Return {a} with all space characters removed.", "Delete every space in {a}."],
      ["    return {a}.replace(' ', '')", "    return ''.join(ch for ch in {a} if ch != ' ')"],
      [("a b c",), ("nospace",), ("  x  ",)], lambda s: s.replace(" ", "")),
    F("starts_with_vowel begins_with_vowel", [("word",), ("s",), ("text",)],
      ["Return True if {a} starts with a vowel (a, e, i, o or u, any case).", "Check whether the first letter of {a} is a vowel."],
      ["    return len({a}) > 0 and {a}[0].lower() in 'aeiou'",
       "    if not {a}:\n        return False\n    return {a}[0].lower() in 'aeiou'"],
      [("apple",), ("Egg",), ("tree",), ("",)], lambda s: len(s) > 0 and s[0].lower() in "aeiou"),
    F("repeat_string repeat_text", ["text n", "s times", "word count"],
      ["Return {a} repeated {b} times.", "Return the string {a} written {b} times in a row."],
      ["    return {a} * {b}", "    result = ''\n    for _ in range({b}):\n        result += {a}\n    return result"],
      [("ab", 3), ("x", 0), ("", 5)], lambda s, n: s * n),
    F("longest_word longest", [("words",), ("word_list",), ("names",)],
      ["Return the longest string in the non-empty list {a} (the first one if several tie).",
       "Find the longest word in {a}."],
      ["    best = {a}[0]\n    for w in {a}:\n        if len(w) > len(best):\n            best = w\n    return best",
       "    return max({a}, key=len)"],
      [(["a", "abc", "ab"],), (["same", "four"],), (["x"],)], lambda ws: max(ws, key=len)),
    F("initials get_initials", [("name",), ("full_name",), ("text",)],
      ["Return the first letter of each word in {a}, in upper case.", "Return the initials of {a}, e.g. 'Ada Lovelace' gives 'AL'."],
      ["    return ''.join(w[0].upper() for w in {a}.split())",
       "    result = ''\n    for w in {a}.split():\n        result += w[0].upper()\n    return result"],
      [("ada lovelace",), ("Alan Mathison Turing",), ("",)], lambda s: "".join(w[0].upper() for w in s.split())),
    F("is_all_digits only_digits", [("text",), ("s",), ("code",)],
      ["Return True if {a} is not empty and every character of it is a digit.", "Check whether {a} consists of digits only."],
      ["    return {a}.isdigit()",
       "    if not {a}:\n        return False\n    for ch in {a}:\n        if ch not in '0123456789':\n            return False\n    return True"],
      [("123",), ("12a",), ("",)], lambda s: s.isdigit()),
    F("swap_case invert_case", [("text",), ("s",), ("phrase",)],
      ["Return {a} with upper-case letters made lower case and lower-case letters made upper case.", "Swap the case of every letter in {a}."],
      ["    return {a}.swapcase()",
       "    result = ''\n    for ch in {a}:\n        result += ch.lower() if ch.isupper() else ch.upper()\n    return result"],
      [("Hello",), ("aBc 1",), ("",)], lambda s: s.swapcase()),
    F("join_words make_sentence", ["words sep", "parts separator"],
      ["Return the strings in {a} joined with {b} between them.", "Join the items of {a} into one string, separated by {b}."],
      ["    return {b}.join({a})",
       "    result = ''\n    for i, w in enumerate({a}):\n        if i:\n            result += {b}\n        result += w\n    return result"],
      [(["a", "b", "c"], "-"), ([], ","), (["one"], " ")], lambda ws, sep: sep.join(ws)),
    F("is_pangram uses_every_letter", [("text",), ("sentence",)],
      ["Return True if {a} contains every letter of the English alphabet at least once.", "Check whether {a} is a pangram."],
      ["    return set('abcdefghijklmnopqrstuvwxyz') <= set({a}.lower())",
       "    for ch in 'abcdefghijklmnopqrstuvwxyz':\n        if ch not in {a}.lower():\n            return False\n    return True"],
      [("The quick brown fox jumps over the lazy dog",), ("hello",), ("",)],
      lambda s: set("abcdefghijklmnopqrstuvwxyz") <= set(s.lower())),
    F("word_count_dict count_each_word", [("text",), ("sentence",)],
      ["Return a dict mapping each word of {a} (split on whitespace) to how many times it occurs.",
       "Count how often every word appears in {a}."],
      ["    counts = {{}}\n    for w in {a}.split():\n        counts[w] = counts.get(w, 0) + 1\n    return counts",
       "    counts = {{}}\n    for w in {a}.split():\n        if w in counts:\n            counts[w] += 1\n        else:\n            counts[w] = 1\n    return counts"],
      [("a b a",), ("",), ("x y z x x",)], lambda s: {w: s.split().count(w) for w in s.split()}),
    # ---- lists
    F("total list_sum add_all sum_values", [(n,) for n in NUMS],
      ["Return the sum of all the numbers in {a}.", "Add up every element of {a} and return the total."],
      ["    total = 0\n    for x in {a}:\n        total += x\n    return total", "    return sum({a})"],
      [([1, 2, 3],), ([],), ([-4, 4, 10],)], lambda xs: sum(xs)),
    F("product_of list_product multiply_all", [(n,) for n in NUMS],
      ["Return the product of the numbers in {a} (1 for an empty list).", "Multiply together every element of {a}."],
      ["    result = 1\n    for x in {a}:\n        result *= x\n    return result"],
      [([1, 2, 3, 4],), ([],), ([-2, 5],)], lambda xs: __import__("math").prod(xs)),
    F("smallest min_value lowest", [(n,) for n in NUMS],
      ["Return the smallest number in the non-empty list {a}.", "Find the minimum of {a} without using min()."],
      ["    best = {a}[0]\n    for x in {a}:\n        if x < best:\n            best = x\n    return best",
       "    result = {a}[0]\n    for x in {a}[1:]:\n        if x < result:\n            result = x\n    return result"],
      [([3, 1, 2],), ([5],), ([-1, -9, 4],)], lambda xs: min(xs)),
    F("count_positive positives", [(n,) for n in NUMS],
      ["Return how many numbers in {a} are greater than zero.", "Count the positive elements of {a}."],
      ["    count = 0\n    for x in {a}:\n        if x > 0:\n            count += 1\n    return count",
       "    return sum(1 for x in {a} if x > 0)", "    return len([x for x in {a} if x > 0])"],
      [([1, -2, 3],), ([],), ([0, 0],)], lambda xs: sum(1 for x in xs if x > 0)),
    F("only_odd filter_odd odd_numbers", [(n,) for n in NUMS],
      ["Return a new list with only the odd numbers of {a}, in order.", "Keep the odd elements of {a}."],
      ["    result = []\n    for x in {a}:\n        if x % 2 == 1:\n            result.append(x)\n    return result",
       "    return [x for x in {a} if x % 2 == 1]"],
      [([1, 2, 3, 4, 5],), ([],), ([2, 4],)], lambda xs: [x for x in xs if x % 2 == 1]),
    F("double_all doubled times_two_all", [(n,) for n in NUMS],
      ["Return a new list with every number of {a} multiplied by 2.", "Double each element of {a}."],
      ["    result = []\n    for x in {a}:\n        result.append(x * 2)\n    return result", "    return [x * 2 for x in {a}]"],
      [([1, 2, 3],), ([],), ([-1],)], lambda xs: [2 * x for x in xs]),
    F("first_item head first_element", [(n,) for n in ITEMS],
      ["Return the first element of {a}, or None if {a} is empty.", "Return {a}[0], or None when there is no element."],
      ["    if not {a}:\n        return None\n    return {a}[0]", "    return {a}[0] if {a} else None"],
      [([4, 5],), ([],), (["a"],)], lambda xs: xs[0] if xs else None),
    F("last_item tail_element last_element", [(n,) for n in ITEMS],
      ["Return the last element of {a}, or None if it is empty.", "Return the final item of {a}."],
      ["    if not {a}:\n        return None\n    return {a}[-1]", "    return {a}[-1] if {a} else None"],
      [([4, 5],), ([],), (["a"],)], lambda xs: xs[-1] if xs else None),
    F("contains has_item includes", ["items target", "seq value", "values x"],
      ["Return True if {b} is an element of {a}.", "Check whether {a} contains {b}."],
      ["    for item in {a}:\n        if item == {b}:\n            return True\n    return False", "    return {b} in {a}"],
      [([1, 2, 3], 2), ([], 1), (["a", "b"], "c")], lambda xs, t: t in xs),
    F("index_of find_index position", ["items target", "seq value", "values x"],
      ["Return the index of the first occurrence of {b} in {a}, or -1 if it is absent.", "Find where {b} first appears in {a}; -1 if nowhere."],
      ["    for i, item in enumerate({a}):\n        if item == {b}:\n            return i\n    return -1",
       "    for i in range(len({a})):\n        if {a}[i] == {b}:\n            return i\n    return -1"],
      [([5, 6, 7], 7), ([1, 1], 1), ([], 3), ([2], 9)], lambda xs, t: xs.index(t) if t in xs else -1),
    F("all_positive every_positive", [(n,) for n in NUMS],
      ["Return True if every number in {a} is greater than zero (True for an empty list).", "Check that all elements of {a} are positive."],
      ["    for x in {a}:\n        if x <= 0:\n            return False\n    return True", "    return all(x > 0 for x in {a})"],
      [([1, 2],), ([1, -1],), ([],)], lambda xs: all(x > 0 for x in xs)),
    F("is_sorted in_order ascending", [(n,) for n in NUMS],
      ["Return True if {a} is sorted in non-decreasing order.", "Check whether each element of {a} is at least the one before it."],
      ["    for i in range(1, len({a})):\n        if {a}[i] < {a}[i - 1]:\n            return False\n    return True",
       "    return all({a}[i] <= {a}[i + 1] for i in range(len({a}) - 1))"],
      [([1, 2, 2, 5],), ([3, 1],), ([],), ([7],)], lambda xs: all(xs[i] <= xs[i + 1] for i in range(len(xs) - 1))),
    F("min_max min_and_max", [(n,) for n in NUMS],
      ["Return a tuple (smallest, largest) of the non-empty list {a}.", "Return the minimum and the maximum of {a} as a pair."],
      ["    return (min({a}), max({a}))",
       "    lo = hi = {a}[0]\n    for x in {a}:\n        if x < lo:\n            lo = x\n        if x > hi:\n            hi = x\n    return (lo, hi)"],
      [([3, 1, 2],), ([4],), ([-5, 5, 0],)], lambda xs: (min(xs), max(xs))),
    F("range_of spread value_range", [(n,) for n in NUMS],
      ["Return the largest number in {a} minus the smallest.", "Return how far apart the extremes of the non-empty list {a} are."],
      ["    return max({a}) - min({a})"],
      [([3, 1, 2],), ([4],), ([-5, 5],)], lambda xs: max(xs) - min(xs)),
    F("rotate_left rotate", ["items k", "seq n"],
      ["Return {a} rotated left by {b} positions ({b} is at most len({a})).", "Move the first {b} elements of {a} to its end."],
      ["    return {a}[{b}:] + {a}[:{b}]"],
      [([1, 2, 3, 4], 1), ([1, 2, 3], 0), ([1, 2], 2)], lambda xs, k: xs[k:] + xs[:k]),
    F("pairwise_sum add_lists elementwise_sum", ["a b", "xs ys", "left right"],
      ["Return the list of sums of corresponding elements of the equal-length lists {a} and {b}.", "Add {a} and {b} element by element."],
      ["    result = []\n    for i in range(len({a})):\n        result.append({a}[i] + {b}[i])\n    return result",
       "    return [x + y for x, y in zip({a}, {b})]"],
      [([1, 2], [3, 4]), ([], []), ([-1], [1])], lambda a, b: [x + y for x, y in zip(a, b)]),
    F("chunks split_into_groups", ["items size", "seq n"],
      ["Split {a} into consecutive lists of {b} elements (the last may be shorter).", "Return {a} cut into pieces of length {b}."],
      ["    return [{a}[i:i + {b}] for i in range(0, len({a}), {b})]",
       "    result = []\n    for i in range(0, len({a}), {b}):\n        result.append({a}[i:i + {b}])\n    return result"],
      [([1, 2, 3, 4, 5], 2), ([], 3), ([1, 2], 2)], lambda xs, n: [xs[i:i + n] for i in range(0, len(xs), n)]),
    F("unique_count count_distinct", [(n,) for n in ITEMS],
      ["Return how many different values {a} contains.", "Count the distinct elements of {a}."],
      ["    return len(set({a}))", "    seen = []\n    for x in {a}:\n        if x not in seen:\n            seen.append(x)\n    return len(seen)"],
      [([1, 2, 2, 3],), ([],), (["a", "a"],)], lambda xs: len(set(xs))),
    F("common_elements intersection shared", ["a b", "xs ys", "first second"],
      ["Return a sorted list of the values that appear in both {a} and {b}, each once.", "Return the elements common to {a} and {b}, sorted, without repeats."],
      ["    return sorted(set({a}) & set({b}))",
       "    result = []\n    for x in {a}:\n        if x in {b} and x not in result:\n            result.append(x)\n    return sorted(result)"],
      [([1, 2, 3], [2, 3, 4]), ([], [1]), ([5, 5], [5])], lambda a, b: sorted(set(a) & set(b))),
    F("cumulative_product running_product", [(n,) for n in NUMS],
      ["Return a list whose i-th element is the product of the first i + 1 numbers of {a}.", "Return the running products of {a}."],
      ["    result = []\n    p = 1\n    for x in {a}:\n        p *= x\n        result.append(p)\n    return result"],
      [([1, 2, 3, 4],), ([],), ([5],)], lambda xs: [__import__("math").prod(xs[:i + 1]) for i in range(len(xs))]),
    F("selection_sort insertion_sort sort_numbers", [(n,) for n in NUMS],
      ["Return a new list with the numbers of {a} in increasing order, without using sorted().", "Sort {a} from smallest to largest."],
      ["    result = list({a})\n    for i in range(len(result)):\n        m = i\n        for j in range(i + 1, len(result)):\n            if result[j] < result[m]:\n                m = j\n        result[i], result[m] = result[m], result[i]\n    return result",
       "    result = []\n    for x in {a}:\n        i = 0\n        while i < len(result) and result[i] < x:\n            i += 1\n        result.insert(i, x)\n    return result"],
      [([3, 1, 2],), ([],), ([5, -1, 5, 0],)], lambda xs: sorted(xs)),
    F("linear_search search", ["items target", "seq value"],
      ["Return True if {b} occurs in {a}, checking the elements one by one.", "Search {a} for {b}."],
      ["    for item in {a}:\n        if item == {b}:\n            return True\n    return False"],
      [([4, 2, 9], 9), ([], 1), ([1, 2], 3)], lambda xs, t: t in xs),
    F("zip_to_dict make_dict", ["keys values", "names scores"],
      ["Return a dict that maps each element of {a} to the element of {b} at the same index.", "Pair up {a} and {b} into a dictionary."],
      ["    return dict(zip({a}, {b}))",
       "    result = {{}}\n    for i in range(len({a})):\n        result[{a}[i]] = {b}[i]\n    return result"],
      [(["a", "b"], [1, 2]), ([], []), (["x"], [None])], lambda k, v: dict(zip(k, v))),
    # ---- dicts
    F("get_or_default lookup", ["d key default", "table name fallback"],
      ["Return {a}[{b}] if {b} is in {a}, otherwise {c}.", "Look {b} up in {a}, returning {c} when it is missing."],
      ["    if {b} in {a}:\n        return {a}[{b}]\n    return {c}", "    return {a}.get({b}, {c})"],
      [({"a": 1}, "a", 0), ({}, "x", -1), ({"k": None}, "k", 5)], lambda d, k, df: d[k] if k in d else df),
    F("sum_dict_values total_of_values", [("d",), ("prices",), ("counts",)],
      ["Return the sum of the values of the dict {a}.", "Add up every value in {a}."],
      ["    return sum({a}.values())", "    total = 0\n    for key in {a}:\n        total += {a}[key]\n    return total"],
      [({"a": 1, "b": 2},), ({},), ({"x": -3},)], lambda d: sum(d.values())),
    F("key_with_max_value best_key", [("d",), ("scores",)],
      ["Return the key of the non-empty dict {a} whose value is largest.", "Return the key that maps to the biggest value in {a}."],
      ["    best = None\n    for key in {a}:\n        if best is None or {a}[key] > {a}[best]:\n            best = key\n    return best",
       "    return max({a}, key={a}.get)"],
      [({"a": 1, "b": 3},), ({"x": 0},), ({"p": 5, "q": 2},)], lambda d: max(d, key=d.get)),
    F("group_by_length lengths_to_words", [("words",), ("names",)],
      ["Return a dict mapping each length to the list of words of {a} with that length, in order.", "Group the strings of {a} by their length."],
      ["    groups = {{}}\n    for w in {a}:\n        groups.setdefault(len(w), []).append(w)\n    return groups",
       "    groups = {{}}\n    for w in {a}:\n        if len(w) not in groups:\n            groups[len(w)] = []\n        groups[len(w)].append(w)\n    return groups"],
      [(["a", "bb", "c"],), ([],), (["xyz"],)], lambda ws: {n: [w for w in ws if len(w) == n] for n in dict.fromkeys(len(w) for w in ws)}),
    F("count_items tally histogram", [(n,) for n in ITEMS],
      ["Return a dict mapping each element of {a} to the number of times it occurs.", "Count how many times each value appears in {a}."],
      ["    counts = {{}}\n    for x in {a}:\n        counts[x] = counts.get(x, 0) + 1\n    return counts"],
      [([1, 1, 2],), ([],), (["a", "b", "a"],)], lambda xs: {x: xs.count(x) for x in xs}),
    # ---- recursion and loops
    F("countdown count_down", ["n", "start"],
      ["Return the list [{a}, {a} - 1, ..., 1].", "Return the numbers from {a} down to 1."],
      ["    return list(range({a}, 0, -1))", "    result = []\n    while {a} > 0:\n        result.append({a})\n        {a} -= 1\n    return result"],
      [(3,), (0,), (1,)], lambda n: list(range(n, 0, -1))),
    F("power_of_two pow2", ["n", "k"],
      ["Return 2 raised to the power {a}, for {a} >= 0.", "Return 2 ** {a} computed by repeated doubling."],
      ["    result = 1\n    for _ in range({a}):\n        result *= 2\n    return result",
       "    if {a} == 0:\n        return 1\n    return 2 * power_of_two({a} - 1)"],
      [(0,), (1,), (10,)], lambda n: 2 ** n),
    F("sum_recursive recursive_sum", [(n,) for n in NUMS],
      ["Return the sum of {a} using recursion.", "Add up {a} recursively: the first element plus the sum of the rest."],
      ["    if not {a}:\n        return 0\n    return {a}[0] + sum_recursive({a}[1:])"],
      [([1, 2, 3],), ([],), ([5],)], lambda xs: sum(xs)),
    F("collatz_steps collatz_length", ["n", "start"],
      ["Return how many steps the Collatz rule (n / 2 if n is even, 3n + 1 if odd) takes to bring {a} to 1.",
       "Count the Collatz steps from {a} down to 1."],
      ["    steps = 0\n    while {a} != 1:\n        if {a} % 2 == 0:\n            {a} = {a} // 2\n        else:\n            {a} = 3 * {a} + 1\n        steps += 1\n    return steps"],
      [(1,), (6,), (7,), (27,)], _collatz_steps),
    F("primes_up_to list_primes", ["n", "limit"],
      ["Return a list of all prime numbers less than or equal to {a}.", "Return the primes from 2 to {a}."],
      ["    result = []\n    for k in range(2, {a} + 1):\n        for d in range(2, k):\n            if k % d == 0:\n                break\n        else:\n            result.append(k)\n    return result",
       "    return [k for k in range(2, {a} + 1) if all(k % d for d in range(2, k))]"],
      [(10,), (1,), (2,), (20,)], lambda n: [k for k in range(2, n + 1) if all(k % d for d in range(2, k))]),
    F("digits_of to_digits", ["n", "number"],
      ["Return the decimal digits of the non-negative integer {a} as a list, most significant first.", "Split {a} into its digits."],
      ["    return [int(ch) for ch in str({a})]"],
      [(123,), (0,), (907,)], lambda n: [int(c) for c in str(n)]),
    F("is_perfect perfect_number", ["n", "number"],
      ["Return True if {a} equals the sum of its divisors smaller than itself (6 = 1 + 2 + 3).", "Check whether {a} is a perfect number."],
      ["    if {a} < 2:\n        return False\n    total = 0\n    for d in range(1, {a}):\n        if {a} % d == 0:\n            total += d\n    return total == {a}",
       "    return {a} > 1 and sum(d for d in range(1, {a}) if {a} % d == 0) == {a}"],
      [(6,), (28,), (12,), (1,)], lambda n: n > 1 and sum(d for d in range(1, n) if n % d == 0) == n),
    F("multiplication_table times_table", ["n", "number"],
      ["Return the list [{a} * 1, {a} * 2, ..., {a} * 10].", "Return the first ten multiples of {a}."],
      ["    return [{a} * i for i in range(1, 11)]", "    result = []\n    for i in range(1, 11):\n        result.append({a} * i)\n    return result"],
      [(3,), (0,)], lambda n: [n * i for i in range(1, 11)]),
]


def _fmt(template: str, names: tuple[str, ...]) -> str:
    return template.format(**dict(zip("abc", names)))


def render(fam: Family, name: str, args: tuple[str, ...], doc: str, body: str, rng: random.Random,
           asserts: bool) -> str:
    """One exercise: the function (recursive bodies call the family's first name, so they are
    rendered under it) and, when asserts, the family's examples as asserts computed by the
    reference."""
    if name + "(" not in body and any(n + "(" in body for n in fam.names):
        name = next(n for n in fam.names if n + "(" in body)
    text = f"def {name}({', '.join(args)}):\n    \"\"\"{_fmt(doc, args)}\"\"\"\n{_fmt(body, args)}\n"
    if asserts:
        examples = list(fam.examples)
        rng.shuffle(examples)
        lines = []
        for ex in examples[:rng.randint(2, 3)]:
            call = f"{name}({', '.join(repr(v) for v in ex)})"
            want = fam.ref(*ex)
            lines.append(f"assert {call} == {want!r}")
        text += "\n\n" + "\n".join(lines) + "\n"
    return text


def exercises(count: int, seed: int) -> list[str]:
    """count exercises, reproducible from seed."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        fam = rng.choice(FAMILIES)
        out.append(render(fam, rng.choice(fam.names), rng.choice(fam.args), rng.choice(fam.docs),
                          rng.choice(fam.bodies), rng, asserts=rng.random() < 0.7))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=100)
    ap.add_argument("--seed", type=int, default=1234)
    a = ap.parse_args(argv)
    sys.stdout.write(EOT.join(exercises(a.count, a.seed)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
