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

Two sets, which measure different things:
- TASKS ("taught", 40): the functions a new user tries first (add, fibonacci, is_prime...).
  The bundled model's exercise curriculum (tools/make_exercises.py) teaches each of these
  skills under other names and wording (a family's reference passes 39 of these 40 tasks'
  tests), so pass@1 here says whether the model writes a taught skill from a new name and
  docstring, not whether it generalises.
- HELDOUT_TASKS ("held-out", 40): skills of the same course that no exercise family
  implements: no family's reference passes any of their tests, checked by
  tests/test_exercises.py. Written before any model was evaluated on them; pass@1 here is
  the figure for functions the curriculum did not teach. GRID_CELL_TASKS (11 of them) are
  combinations of parts the curriculum teaches apart, reported on their own.
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

# Skills no exercise family implements (tests/test_exercises.py checks it by running every
# family's reference against these tests); a family added to the curriculum must keep it so.
HELDOUT_TASKS: list[Task] = [
    _t("triple", "def triple(x):", "Return three times x.",
       "assert triple(4) == 12\nassert triple(-2) == -6\nassert triple(0) == 0",
       "    return 3 * x"),
    _t("is_negative", "def is_negative(x):", "Return True if x is less than zero, False otherwise.",
       "assert is_negative(-3) is True\nassert is_negative(0) is False\nassert is_negative(5) is False",
       "    return x < 0"),
    _t("min_of_three", "def min_of_three(a, b, c):", "Return the smallest of a, b and c.",
       "assert min_of_three(3, 1, 2) == 1\nassert min_of_three(5, 9, 7) == 5\nassert min_of_three(-1, -4, 0) == -4",
       "    smallest = a\n    if b < smallest:\n        smallest = b\n    if c < smallest:\n        smallest = c\n"
       "    return smallest"),
    _t("sum_of_cubes", "def sum_of_cubes(n):", "Return 1**3 + 2**3 + ... + n**3 for a non-negative integer n.",
       "assert sum_of_cubes(0) == 0\nassert sum_of_cubes(1) == 1\nassert sum_of_cubes(3) == 36\nassert sum_of_cubes(4) == 100",
       "    return sum(i ** 3 for i in range(1, n + 1))"),
    _t("product_of_digits", "def product_of_digits(n):", "Return the product of the decimal digits of a positive integer n.",
       "assert product_of_digits(123) == 6\nassert product_of_digits(5) == 5\nassert product_of_digits(205) == 0\n"
       "assert product_of_digits(99) == 81",
       "    result = 1\n    for c in str(n):\n        result *= int(c)\n    return result"),
    _t("last_digit", "def last_digit(n):", "Return the last decimal digit of a non-negative integer n.",
       "assert last_digit(1234) == 4\nassert last_digit(7) == 7\nassert last_digit(50) == 0",
       "    return n % 10"),
    _t("max_digit", "def max_digit(n):", "Return the largest decimal digit of a non-negative integer n.",
       "assert max_digit(1937) == 9\nassert max_digit(0) == 0\nassert max_digit(505) == 5",
       "    return max(int(c) for c in str(n))"),
    _t("is_square", "def is_square(n):", "Return True if the non-negative integer n is a perfect square.",
       "assert is_square(16) is True\nassert is_square(15) is False\nassert is_square(0) is True\nassert is_square(1) is True",
       "    i = 0\n    while i * i < n:\n        i += 1\n    return i * i == n"),
    _t("count_primes", "def count_primes(n):", "Return how many prime numbers are less than or equal to n.",
       "assert count_primes(10) == 4\nassert count_primes(1) == 0\nassert count_primes(2) == 1\nassert count_primes(20) == 8",
       "    count = 0\n    for k in range(2, n + 1):\n        if all(k % d for d in range(2, int(k ** 0.5) + 1)):\n"
       "            count += 1\n    return count"),
    _t("sum_odd_numbers", "def sum_odd_numbers(n):", "Return the sum of the odd numbers from 1 to n inclusive.",
       "assert sum_odd_numbers(1) == 1\nassert sum_odd_numbers(5) == 9\nassert sum_odd_numbers(6) == 9\n"
       "assert sum_odd_numbers(0) == 0",
       "    return sum(range(1, n + 1, 2))"),
    _t("area_of_circle", "import math\n\n\ndef area_of_circle(r):", "Return the area of a circle of radius r.",
       "assert abs(area_of_circle(1) - math.pi) < 1e-9\nassert abs(area_of_circle(2) - 4 * math.pi) < 1e-9\n"
       "assert area_of_circle(0) == 0",
       "    return math.pi * r * r"),
    _t("area_of_triangle", "def area_of_triangle(base, height):",
       "Return the area of a triangle with the given base and height.",
       "assert area_of_triangle(4, 3) == 6\nassert area_of_triangle(5, 2) == 5\nassert area_of_triangle(1, 1) == 0.5",
       "    return base * height / 2"),
    _t("miles_to_km", "def miles_to_km(miles):", "Convert a distance in miles to kilometres (1 mile is 1.609344 km).",
       "assert abs(miles_to_km(1) - 1.609344) < 1e-9\nassert miles_to_km(0) == 0\nassert abs(miles_to_km(10) - 16.09344) < 1e-9",
       "    return miles * 1.609344"),
    _t("celsius_to_kelvin", "def celsius_to_kelvin(c):", "Convert a temperature from degrees Celsius to kelvin.",
       "assert abs(celsius_to_kelvin(0) - 273.15) < 1e-9\nassert abs(celsius_to_kelvin(100) - 373.15) < 1e-9\n"
       "assert abs(celsius_to_kelvin(-273.15)) < 1e-9",
       "    return c + 273.15"),
    _t("is_between", "def is_between(x, low, high):", "Return True if low <= x <= high, otherwise False.",
       "assert is_between(5, 1, 10) is True\nassert is_between(1, 1, 10) is True\nassert is_between(11, 1, 10) is False\n"
       "assert is_between(0, 1, 10) is False",
       "    return low <= x <= high"),
    _t("count_lowercase", "def count_lowercase(s):", "Return how many lower-case letters s contains.",
       "assert count_lowercase('Hello World') == 8\nassert count_lowercase('') == 0\nassert count_lowercase('ABC') == 0\n"
       "assert count_lowercase('abc') == 3",
       "    return sum(1 for c in s if c.islower())"),
    _t("count_letters", "def count_letters(s):", "Return how many characters of s are letters.",
       "assert count_letters('a1b2 c!') == 3\nassert count_letters('') == 0\nassert count_letters('123') == 0\n"
       "assert count_letters('Hi') == 2",
       "    return sum(1 for c in s if c.isalpha())"),
    _t("capitalize_first", "def capitalize_first(s):",
       "Return s with its first character in upper case and the rest unchanged.",
       "assert capitalize_first('hello') == 'Hello'\nassert capitalize_first('') == ''\n"
       "assert capitalize_first('hELLO') == 'HELLO'\nassert capitalize_first('a b') == 'A b'",
       "    return s[:1].upper() + s[1:]"),
    _t("repeat_each_char", "def repeat_each_char(s):", "Return s with every character written twice: 'abc' becomes 'aabbcc'.",
       "assert repeat_each_char('abc') == 'aabbcc'\nassert repeat_each_char('') == ''\nassert repeat_each_char('a b') == 'aa  bb'",
       "    return ''.join(c * 2 for c in s)"),
    _t("reverse_each_word", "def reverse_each_word(text):",
       "Return text with the letters of each space-separated word reversed, the words kept in order.",
       "assert reverse_each_word('hello world') == 'olleh dlrow'\nassert reverse_each_word('') == ''\n"
       "assert reverse_each_word('ab') == 'ba'",
       "    return ' '.join(w[::-1] for w in text.split(' '))"),
    _t("ends_with_vowel", "def ends_with_vowel(s):",
       "Return True if the last character of s is a vowel (a, e, i, o, u, either case).",
       "assert ends_with_vowel('banana') is True\nassert ends_with_vowel('cat') is False\nassert ends_with_vowel('') is False\n"
       "assert ends_with_vowel('HELLO') is True",
       "    return s != '' and s[-1].lower() in 'aeiou'"),
    _t("is_all_uppercase", "def is_all_uppercase(s):",
       "Return True if s has at least one letter and all of its letters are upper case.",
       "assert is_all_uppercase('ABC') is True\nassert is_all_uppercase('AbC') is False\n"
       "assert is_all_uppercase('123') is False\nassert is_all_uppercase('HI 2') is True",
       "    return any(c.isalpha() for c in s) and all(c.isupper() for c in s if c.isalpha())"),
    _t("longest_word_length", "def longest_word_length(words):",
       "Return the length of the longest string in the non-empty list words.",
       "assert longest_word_length(['a', 'abc', 'ab']) == 3\nassert longest_word_length(['hello']) == 5",
       "    return max(len(w) for w in words)"),
    _t("count_odd", "def count_odd(numbers):", "Return how many odd numbers the list numbers contains.",
       "assert count_odd([1, 2, 3, 5]) == 3\nassert count_odd([]) == 0\nassert count_odd([2, 4]) == 0\n"
       "assert count_odd([7, 9, 11, 4]) == 3",
       "    return sum(1 for x in numbers if x % 2 == 1)"),
    _t("sum_of_odds", "def sum_of_odds(numbers):", "Return the sum of the odd numbers in the list numbers.",
       "assert sum_of_odds([1, 2, 3, 4, 5]) == 9\nassert sum_of_odds([]) == 0\nassert sum_of_odds([2]) == 0\n"
       "assert sum_of_odds([-3, 3, 7]) == 7",
       "    return sum(x for x in numbers if x % 2 == 1)"),
    _t("keep_positive", "def keep_positive(numbers):", "Return a list of the numbers greater than zero, in order.",
       "assert keep_positive([1, -2, 3, 0]) == [1, 3]\nassert keep_positive([]) == []\nassert keep_positive([-1]) == []",
       "    return [x for x in numbers if x > 0]"),
    _t("increment_all", "def increment_all(numbers):", "Return a new list with 1 added to every number.",
       "assert increment_all([1, 2, 3]) == [2, 3, 4]\nassert increment_all([]) == []\nassert increment_all([-1]) == [0]",
       "    return [x + 1 for x in numbers]"),
    _t("negate_all", "def negate_all(numbers):", "Return a new list with the sign of every number flipped.",
       "assert negate_all([1, -2, 0]) == [-1, 2, 0]\nassert negate_all([]) == []",
       "    return [-x for x in numbers]"),
    _t("sum_squares_of_list", "def sum_squares_of_list(numbers):", "Return the sum of the squares of the numbers in the list.",
       "assert sum_squares_of_list([1, 2, 3]) == 14\nassert sum_squares_of_list([]) == 0\nassert sum_squares_of_list([-2]) == 4",
       "    return sum(x * x for x in numbers)"),
    _t("last_n", "def last_n(items, n):",
       "Return the last n elements of the list items (all of them if n is larger than its length); n >= 1.",
       "assert last_n([1, 2, 3, 4], 2) == [3, 4]\nassert last_n([1], 3) == [1]\nassert last_n([5, 6], 1) == [6]",
       "    return items[-n:]"),
    _t("drop_first", "def drop_first(items):", "Return a new list with every element of items but the first.",
       "assert drop_first([1, 2, 3]) == [2, 3]\nassert drop_first([1]) == []\nassert drop_first([]) == []",
       "    return items[1:]"),
    _t("contains_duplicate", "def contains_duplicate(items):", "Return True if some value occurs more than once in items.",
       "assert contains_duplicate([1, 2, 1]) is True\nassert contains_duplicate([1, 2, 3]) is False\n"
       "assert contains_duplicate([]) is False",
       "    return len(set(items)) < len(items)"),
    _t("rotate_right", "def rotate_right(items, k):",
       "Return the list items rotated right by k positions, 0 <= k <= len(items): its last k elements come first.",
       "assert rotate_right([1, 2, 3, 4], 1) == [4, 1, 2, 3]\nassert rotate_right([1, 2, 3], 0) == [1, 2, 3]\n"
       "assert rotate_right([1, 2, 3], 3) == [1, 2, 3]\nassert rotate_right([1, 2, 3], 2) == [2, 3, 1]",
       "    return items[len(items) - k:] + items[:len(items) - k]"),
    _t("is_sorted_descending", "def is_sorted_descending(numbers):",
       "Return True if each number in the list is greater than or equal to the next one.",
       "assert is_sorted_descending([3, 2, 2, 1]) is True\nassert is_sorted_descending([1, 2]) is False\n"
       "assert is_sorted_descending([]) is True",
       "    return all(numbers[i] >= numbers[i + 1] for i in range(len(numbers) - 1))"),
    _t("index_of_min", "def index_of_min(numbers):",
       "Return the index of the smallest number in a non-empty list (the first one if it occurs more than once).",
       "assert index_of_min([3, 1, 2]) == 1\nassert index_of_min([5]) == 0\nassert index_of_min([2, 1, 1]) == 1\n"
       "assert index_of_min([4, 8, 0, 6]) == 2",
       "    best = 0\n    for i in range(1, len(numbers)):\n        if numbers[i] < numbers[best]:\n            best = i\n"
       "    return best"),
    _t("keys_with_value", "def keys_with_value(d, value):",
       "Return a sorted list of the keys of the dict d whose value equals value.",
       "assert keys_with_value({'a': 1, 'b': 2, 'c': 1}, 1) == ['a', 'c']\nassert keys_with_value({}, 1) == []\n"
       "assert keys_with_value({'x': 2}, 1) == []",
       "    return sorted(k for k, v in d.items() if v == value)"),
    _t("key_with_min_value", "def key_with_min_value(d):", "Return the key of the non-empty dict d whose value is smallest.",
       "assert key_with_min_value({'a': 3, 'b': 1}) == 'b'\nassert key_with_min_value({'x': 5}) == 'x'\n"
       "assert key_with_min_value({'b': 2, 'a': 7, 'c': 4}) == 'b'",
       "    return min(d, key=d.get)"),
    _t("count_values_over", "def count_values_over(d, limit):",
       "Return how many values of the dict d are greater than limit.",
       "assert count_values_over({'a': 5, 'b': 1, 'c': 7}, 3) == 2\nassert count_values_over({}, 0) == 0\n"
       "assert count_values_over({'a': 1}, 1) == 0",
       "    return sum(1 for v in d.values() if v > limit)"),
    _t("words_longer_than", "def words_longer_than(words, n):",
       "Return the strings of the list words that have more than n characters, in order.",
       "assert words_longer_than(['a', 'abc', 'abcd'], 2) == ['abc', 'abcd']\nassert words_longer_than([], 1) == []",
       "    return [w for w in words if len(w) > n]"),
    _t("days_in_month", "def days_in_month(month):",
       "Return the number of days in month (1 to 12) of a year that is not a leap year.",
       "assert days_in_month(1) == 31\nassert days_in_month(2) == 28\nassert days_in_month(4) == 30\n"
       "assert days_in_month(12) == 31\nassert days_in_month(9) == 30",
       "    if month == 2:\n        return 28\n    if month in (4, 6, 9, 11):\n        return 30\n    return 31"),
]

TASK_SETS: dict[str, list[Task]] = {"taught": TASKS, "held-out": HELDOUT_TASKS}

# The held-out tasks that are cells the exercise grids leave out (tools/exercise_grids.py,
# LEFT_OUT; written after this set, knowing it): an operation and an operand the curriculum
# teaches apart. pass@1 on them measures composition; on the other held-out tasks, skills
# no exercise touches. tests/test_exercises.py checks this list against the grids.
GRID_CELL_TASKS = frozenset({"triple", "is_negative", "sum_of_cubes", "count_lowercase", "count_letters",
                             "count_odd", "sum_of_odds", "keep_positive", "increment_all", "negate_all",
                             "sum_squares_of_list"})
