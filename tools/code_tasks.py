"""Short function-writing tasks for tools/eval_code.py (pass@1 of a code model).

Each task is a prompt (imports if any, the signature and a docstring, as a user would
start a function), the unit tests the completed function must pass (plain asserts, run
after the completion in a fresh interpreter), and a reference body. The reference is
not shown to the model: tests/test_eval_code.py runs every task with it (all must pass)
and with a wrong body (all must fail), so a task whose tests cannot tell right from
wrong fails the suite.

The tasks are the everyday exercises of a first programming course (arithmetic, strings,
lists, dicts, recursion, searching and sorting), written for this file; none is taken
from a published benchmark. Keep them that way: general, each testable in a few asserts,
and not rewritten to suit one model's output.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Task:
    name: str
    prompt: str     # ends with the docstring's closing line and a newline
    tests: str      # asserts on the function, run after it
    solution: str   # a correct body (indented), for the harness's own test

    @property
    def stem(self) -> str:
        """What the model continues: the prompt without its last newline. Byte-level BPEs
        trained on code merge a newline with the indentation after it ("\n   " + " return"),
        so a text that ends in a bare newline token was, in training, followed by a line at
        column 0 (or the end of a document): a model continuing the full prompt ends the
        function before its body (measured on tools/train_tiny.py models: P("\n   ") ~0.7-0.9
        after the stem, ~0 after the prompt)."""
        return self.prompt[:-1] if self.prompt.endswith("\n") else self.prompt


def _t(name: str, signature: str, doc: str, tests: str, solution: str) -> Task:
    prompt = f'{signature}\n    """{doc}"""\n'
    return Task(name, prompt, tests.strip() + "\n", solution.rstrip() + "\n")


TASKS: list[Task] = [
    _t("add", "def add(a, b):", "Return the sum of a and b.",
       "assert add(2, 3) == 5\nassert add(-1, 1) == 0\nassert add(10, -4) == 6",
       "    return a + b"),
    _t("square", "def square(x):", "Return x multiplied by itself.",
       "assert square(3) == 9\nassert square(-4) == 16\nassert square(0) == 0",
       "    return x * x"),
    _t("is_even", "def is_even(n):", "Return True if n is even, False otherwise.",
       "assert is_even(4) is True\nassert is_even(7) is False\nassert is_even(0) is True",
       "    return n % 2 == 0"),
    _t("absolute", "def absolute(x):", "Return the absolute value of x without using abs().",
       "assert absolute(-5) == 5\nassert absolute(3) == 3\nassert absolute(0) == 0",
       "    return -x if x < 0 else x"),
    _t("maximum", "def maximum(a, b):", "Return the larger of a and b.",
       "assert maximum(3, 9) == 9\nassert maximum(9, 3) == 9\nassert maximum(-2, -7) == -2",
       "    return a if a > b else b"),
    _t("factorial", "def factorial(n):", "Return n! (the product 1 * 2 * ... * n); factorial(0) is 1.",
       "assert factorial(0) == 1\nassert factorial(1) == 1\nassert factorial(5) == 120\nassert factorial(10) == 3628800",
       "    result = 1\n    for i in range(2, n + 1):\n        result *= i\n    return result"),
    _t("fibonacci", "def fibonacci(n):", "Return the n-th Fibonacci number: fibonacci(0) == 0, fibonacci(1) == 1.",
       "assert fibonacci(0) == 0\nassert fibonacci(1) == 1\nassert fibonacci(2) == 1\nassert fibonacci(10) == 55\n"
       "assert fibonacci(20) == 6765",
       "    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a"),
    _t("is_prime", "def is_prime(n):", "Return True if n is a prime number, False otherwise.",
       "assert is_prime(2) and is_prime(3) and is_prime(13) and is_prime(97)\n"
       "assert not is_prime(1) and not is_prime(0) and not is_prime(9) and not is_prime(100)",
       "    if n < 2:\n        return False\n    i = 2\n    while i * i <= n:\n        if n % i == 0:\n"
       "            return False\n        i += 1\n    return True"),
    _t("gcd", "def gcd(a, b):", "Return the greatest common divisor of two positive integers.",
       "assert gcd(12, 18) == 6\nassert gcd(17, 5) == 1\nassert gcd(100, 10) == 10",
       "    while b:\n        a, b = b, a % b\n    return a"),
    _t("power", "def power(base, exp):", "Return base raised to the non-negative integer exp, without using **.",
       "assert power(2, 10) == 1024\nassert power(5, 0) == 1\nassert power(3, 3) == 27",
       "    result = 1\n    for _ in range(exp):\n        result *= base\n    return result"),
    _t("sum_digits", "def sum_digits(n):", "Return the sum of the decimal digits of a non-negative integer n.",
       "assert sum_digits(0) == 0\nassert sum_digits(1234) == 10\nassert sum_digits(99) == 18",
       "    return sum(int(c) for c in str(n))"),
    _t("is_leap_year", "def is_leap_year(year):", "Return True if year is a leap year in the Gregorian calendar.",
       "assert is_leap_year(2024)\nassert not is_leap_year(2023)\nassert not is_leap_year(1900)\nassert is_leap_year(2000)",
       "    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)"),
    _t("celsius_to_fahrenheit", "def celsius_to_fahrenheit(c):", "Convert a temperature from Celsius to Fahrenheit.",
       "assert celsius_to_fahrenheit(0) == 32\nassert celsius_to_fahrenheit(100) == 212\n"
       "assert abs(celsius_to_fahrenheit(-40) + 40) < 1e-9",
       "    return c * 9 / 5 + 32"),
    _t("clamp", "def clamp(x, low, high):", "Return x limited to the range [low, high].",
       "assert clamp(5, 0, 10) == 5\nassert clamp(-3, 0, 10) == 0\nassert clamp(42, 0, 10) == 10",
       "    return max(low, min(x, high))"),
    _t("reverse_string", "def reverse_string(s):", "Return the string s reversed.",
       "assert reverse_string('hello') == 'olleh'\nassert reverse_string('') == ''\nassert reverse_string('ab') == 'ba'",
       "    return s[::-1]"),
    _t("is_palindrome", "def is_palindrome(s):", "Return True if the string s reads the same forwards and backwards.",
       "assert is_palindrome('racecar')\nassert is_palindrome('')\nassert not is_palindrome('python')",
       "    return s == s[::-1]"),
    _t("count_vowels", "def count_vowels(s):", "Return the number of vowels (a, e, i, o, u, either case) in s.",
       "assert count_vowels('hello') == 2\nassert count_vowels('AEIOU xyz') == 5\nassert count_vowels('') == 0",
       "    return sum(1 for c in s.lower() if c in 'aeiou')"),
    _t("count_words", "def count_words(text):", "Return the number of whitespace-separated words in text.",
       "assert count_words('the quick brown fox') == 4\nassert count_words('') == 0\nassert count_words('  a  b ') == 2",
       "    return len(text.split())"),
    _t("capitalize_words", "def capitalize_words(text):",
       "Return text with the first letter of every space-separated word in upper case.",
       "assert capitalize_words('hello world') == 'Hello World'\nassert capitalize_words('a') == 'A'",
       "    return ' '.join(w[:1].upper() + w[1:] for w in text.split(' '))"),
    _t("char_frequency", "def char_frequency(s):", "Return a dict mapping each character of s to how often it occurs.",
       "assert char_frequency('aab') == {'a': 2, 'b': 1}\nassert char_frequency('') == {}",
       "    counts = {}\n    for c in s:\n        counts[c] = counts.get(c, 0) + 1\n    return counts"),
    _t("is_anagram", "def is_anagram(a, b):", "Return True if the strings a and b contain the same letters in any order.",
       "assert is_anagram('listen', 'silent')\nassert not is_anagram('abc', 'abd')\nassert not is_anagram('aa', 'a')",
       "    return sorted(a) == sorted(b)"),
    _t("sum_list", "def sum_list(numbers):", "Return the sum of a list of numbers.",
       "assert sum_list([1, 2, 3]) == 6\nassert sum_list([]) == 0\nassert sum_list([-1, 1, 5]) == 5",
       "    total = 0\n    for x in numbers:\n        total += x\n    return total"),
    _t("mean", "def mean(numbers):", "Return the arithmetic mean of a non-empty list of numbers.",
       "assert mean([1, 2, 3]) == 2\nassert mean([4]) == 4\nassert abs(mean([1, 2]) - 1.5) < 1e-9",
       "    return sum(numbers) / len(numbers)"),
    _t("largest", "def largest(numbers):", "Return the largest element of a non-empty list.",
       "assert largest([3, 9, 2]) == 9\nassert largest([-5, -2, -9]) == -2\nassert largest([7]) == 7",
       "    best = numbers[0]\n    for x in numbers:\n        if x > best:\n            best = x\n    return best"),
    _t("count_occurrences", "def count_occurrences(items, value):", "Return how many times value appears in the list items.",
       "assert count_occurrences([1, 2, 1, 3, 1], 1) == 3\nassert count_occurrences([], 5) == 0\n"
       "assert count_occurrences(['a', 'b'], 'c') == 0",
       "    return sum(1 for x in items if x == value)"),
    _t("filter_even", "def filter_even(numbers):", "Return a list of the even numbers in numbers, in order.",
       "assert filter_even([1, 2, 3, 4, 6]) == [2, 4, 6]\nassert filter_even([1, 3]) == []",
       "    return [x for x in numbers if x % 2 == 0]"),
    _t("square_all", "def square_all(numbers):", "Return a new list with the square of each number.",
       "assert square_all([1, 2, 3]) == [1, 4, 9]\nassert square_all([]) == []",
       "    return [x * x for x in numbers]"),
    _t("reverse_list", "def reverse_list(items):", "Return a new list with the elements of items in reverse order.",
       "assert reverse_list([1, 2, 3]) == [3, 2, 1]\nassert reverse_list([]) == []",
       "    return items[::-1]"),
    _t("remove_duplicates", "def remove_duplicates(items):",
       "Return a list of the elements of items without repeats, keeping the first occurrence of each.",
       "assert remove_duplicates([3, 1, 3, 2, 1]) == [3, 1, 2]\nassert remove_duplicates([]) == []",
       "    seen = set()\n    out = []\n    for x in items:\n        if x not in seen:\n            seen.add(x)\n"
       "            out.append(x)\n    return out"),
    _t("flatten", "def flatten(lists):", "Return one list holding the elements of a list of lists, in order.",
       "assert flatten([[1, 2], [3], []]) == [1, 2, 3]\nassert flatten([]) == []",
       "    return [x for sub in lists for x in sub]"),
    _t("running_sum", "def running_sum(numbers):", "Return the list of cumulative sums: element i is the sum of numbers[:i + 1].",
       "assert running_sum([1, 2, 3, 4]) == [1, 3, 6, 10]\nassert running_sum([]) == []",
       "    out = []\n    total = 0\n    for x in numbers:\n        total += x\n        out.append(total)\n    return out"),
    _t("second_largest", "def second_largest(numbers):",
       "Return the second largest distinct value in a list with at least two distinct values.",
       "assert second_largest([1, 5, 3]) == 3\nassert second_largest([4, 4, 2]) == 2\nassert second_largest([-1, -2]) == -2",
       "    return sorted(set(numbers))[-2]"),
    _t("merge_sorted", "def merge_sorted(a, b):", "Merge two sorted lists into one sorted list.",
       "assert merge_sorted([1, 4, 9], [2, 3, 10]) == [1, 2, 3, 4, 9, 10]\nassert merge_sorted([], [1]) == [1]",
       "    out = []\n    i = j = 0\n    while i < len(a) and j < len(b):\n        if a[i] <= b[j]:\n"
       "            out.append(a[i])\n            i += 1\n        else:\n            out.append(b[j])\n"
       "            j += 1\n    return out + a[i:] + b[j:]"),
    _t("binary_search", "def binary_search(items, target):",
       "Return the index of target in the sorted list items, or -1 if it is not there.",
       "assert binary_search([1, 3, 5, 7, 9], 7) == 3\nassert binary_search([1, 3, 5], 4) == -1\n"
       "assert binary_search([], 1) == -1\nassert binary_search([2], 2) == 0",
       "    lo, hi = 0, len(items) - 1\n    while lo <= hi:\n        mid = (lo + hi) // 2\n"
       "        if items[mid] == target:\n            return mid\n        if items[mid] < target:\n"
       "            lo = mid + 1\n        else:\n            hi = mid - 1\n    return -1"),
    _t("bubble_sort", "def bubble_sort(items):", "Return a new list with the elements of items in ascending order.",
       "assert bubble_sort([5, 2, 9, 1]) == [1, 2, 5, 9]\nassert bubble_sort([]) == []\nassert bubble_sort([3, 3, 1]) == [1, 3, 3]",
       "    out = list(items)\n    for i in range(len(out)):\n        for j in range(len(out) - 1 - i):\n"
       "            if out[j] > out[j + 1]:\n                out[j], out[j + 1] = out[j + 1], out[j]\n    return out"),
    _t("dot_product", "def dot_product(a, b):", "Return the dot product of two equal-length lists of numbers.",
       "assert dot_product([1, 2, 3], [4, 5, 6]) == 32\nassert dot_product([], []) == 0",
       "    return sum(x * y for x, y in zip(a, b))"),
    _t("transpose", "def transpose(matrix):", "Return the transpose of a matrix given as a list of equal-length rows.",
       "assert transpose([[1, 2, 3], [4, 5, 6]]) == [[1, 4], [2, 5], [3, 6]]\nassert transpose([[7]]) == [[7]]",
       "    return [list(col) for col in zip(*matrix)]"),
    _t("fizzbuzz", "def fizzbuzz(n):",
       "Return 'Fizz' if n is divisible by 3, 'Buzz' if by 5, 'FizzBuzz' if by both, else str(n).",
       "assert fizzbuzz(3) == 'Fizz'\nassert fizzbuzz(10) == 'Buzz'\nassert fizzbuzz(30) == 'FizzBuzz'\nassert fizzbuzz(7) == '7'",
       "    if n % 15 == 0:\n        return 'FizzBuzz'\n    if n % 3 == 0:\n        return 'Fizz'\n"
       "    if n % 5 == 0:\n        return 'Buzz'\n    return str(n)"),
    _t("invert_dict", "def invert_dict(d):", "Return a new dict with the keys and values of d swapped.",
       "assert invert_dict({'a': 1, 'b': 2}) == {1: 'a', 2: 'b'}\nassert invert_dict({}) == {}",
       "    return {v: k for k, v in d.items()}"),
    _t("word_lengths", "def word_lengths(words):", "Return a dict mapping each word in the list words to its length.",
       "assert word_lengths(['a', 'abc']) == {'a': 1, 'abc': 3}\nassert word_lengths([]) == {}",
       "    return {w: len(w) for w in words}"),
]
