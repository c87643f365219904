"""Arithmetic word problems whose ideal answers spread the computation over tokens.

A model spends a fixed amount of compute per token, so an answer that states the result first and
justifies it afterwards asks for the whole computation in one token. These problems teach the opposite
habit: one arithmetic operation per sentence, each result written only after the expression that
produces it, and the final answer last, on a `#### <number>` line (see `components/tasks/base.py`).

Every problem renders two ways from the same steps, so an evaluation can ask one problem with and
without the tool:

* mental: "The oranges cost 2 x 2 = 4 dollars. The apples cost 13 - 4 = 9 dollars. ..." (no system
  message);
* tool: the same sentences, each operation a calculator call whose output the sandbox computes
  (text "The oranges cost ", python "2*2", output "4", text " dollars. ..."), after the system message
  `TOOL_SYSTEM_PROMPT`.

Numbers are drawn so that every number in the question and in the solution is an integer between 0 and
`max_number` and every division is exact: the difficulty is the number of operations (`min_steps`,
`max_steps`) and the size of the numbers (`max_number`), nothing else."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from components.chat.protocol import Conversation, validate_conversation
from components.sandbox.calculator import run_calculator
from components.tasks.base import ANSWER_MARKER, TaskExample

TASK = "arithmetic"
TOOL_SYSTEM_PROMPT = "You can use the calculator."
MIN_MAX_NUMBER = 10          # below this some story shapes have no valid numbers at all
MAX_MAX_NUMBER = 1_000_000   # keeps problems short enough for a 256-token context
MIN_RESULT = 2               # a result of 0 or 1 would read "1 pages"
MAX_STEPS = 3                # every story shape has a variant for 1, 2 and 3 operations
_SYMBOL = {"+": "+", "-": "-", "*": "x", "/": "/"}

# (name, subject pronoun, possessive)
NAMES = [(name, "she", "her") for name in (
    "Emily", "Natalia", "Julie", "Sara", "Maya", "Lena", "Olivia", "Grace", "Nora", "Aisha", "Priya",
    "Hana", "Rosa", "Zoe")] + [(name, "he", "his") for name in (
    "Tom", "James", "Omar", "Leo", "Ben", "Carlos", "Ravi", "Kenji", "Sam", "Noah", "Lucas", "Ivan",
    "Malik", "Peter")]
# (singular, plural) of things one buys
GOODS = [("apple", "apples"), ("orange", "oranges"), ("pear", "pears"), ("banana", "bananas"),
         ("muffin", "muffins"), ("notebook", "notebooks"), ("pen", "pens"), ("toy car", "toy cars"),
         ("ticket", "tickets"), ("sandwich", "sandwiches"), ("cupcake", "cupcakes"), ("book", "books"),
         ("lemon", "lemons"), ("mango", "mangoes"), ("candle", "candles"), ("mug", "mugs")]
# plurals of things one collects, counts and shares
THINGS = ["stickers", "marbles", "cards", "pencils", "shells", "stamps", "beads", "cookies", "candies",
          "balloons", "coins", "crayons", "buttons", "rocks", "erasers", "ribbons"]
CONTAINERS = [("box", "boxes"), ("bag", "bags"), ("jar", "jars"), ("basket", "baskets"),
              ("pack", "packs"), ("tin", "tins")]
# (base verb, third person, unit, period)
RATES = [("read", "reads", "pages", "day"), ("save", "saves", "dollars", "week"),
         ("bake", "bakes", "cookies", "day"), ("walk", "walks", "miles", "day"),
         ("practice", "practices", "minutes", "day"), ("collect", "collects", "shells", "day"),
         ("write", "writes", "pages", "week"), ("run", "runs", "laps", "day")]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"]


@dataclass(frozen=True)
class Step:
    """One operation of a solution and the sentence around it."""

    left: int
    op: str          # one of + - * /
    right: int
    result: int
    before: str      # the sentence up to the computation, e.g. "The apples cost "
    after: str       # the rest of the sentence after the result, e.g. " dollars."

    @property
    def expression(self) -> str:
        """The calculator call, e.g. "13-4"."""
        return f"{self.left}{self.op}{self.right}"

    @property
    def shown(self) -> str:
        """The operation as a person writes it, e.g. "2 x 2"."""
        return f"{self.left} {_SYMBOL[self.op]} {self.right}"

    @property
    def sentence(self) -> str:
        """The mental-arithmetic sentence: computation first, then its result."""
        return f"{self.before}{self.shown} = {self.result}{self.after}"


@dataclass(frozen=True)
class Problem:
    """A word problem, its step-by-step solution and the numbers it was built from."""

    template: str
    question: str
    steps: tuple[Step, ...]
    answer: int
    numbers: dict[str, int] = field(default_factory=dict)  # the numbers the question gives, by name


class _Retry(Exception):
    """The drawn numbers break a constraint; draw again."""


class _Builder:
    """Draws numbers and records steps, enforcing 0 <= value <= max_number and exact division."""

    def __init__(self, rng: random.Random, max_number: int) -> None:
        self.rng, self.max = rng, max_number
        self.steps: list[Step] = []
        self.numbers: dict[str, int] = {}

    def num(self, name: str | None, lo: int, hi: int) -> int:
        """A random integer in [lo, min(hi, max_number)]; recorded as a given unless name is None
        (an unknown the solution finds)."""
        hi = min(hi, self.max)
        if hi < lo:
            raise _Retry
        value = self.rng.randint(lo, hi)
        if name is not None:
            self.numbers[name] = value
        return value

    def given(self, name: str, value: int) -> int:
        """A number the question states that was derived from drawn ones."""
        if not 0 < value <= self.max:
            raise _Retry
        self.numbers[name] = value
        return value

    def op(self, left: int, op: str, right: int, before: str, after: str) -> int:
        if op == "/":
            if right == 0 or left % right:
                raise _Retry
            result = left // right
        else:
            result = {"+": left + right, "-": left - right, "*": left * right}[op]
        if not MIN_RESULT <= result <= self.max:
            raise _Retry
        self.steps.append(Step(left, op, right, result, before, after))
        return result


def _people(rng: random.Random, k: int) -> list[tuple[str, str, str]]:
    return rng.sample(NAMES, k)


def _shopping(b: _Builder, steps: int) -> str:
    """Emily buys a X and b Y, each Y costs c, total T: what does each X cost?"""
    (name, _, _), = _people(b.rng, 1)
    (x, xs), (y, ys) = b.rng.sample(GOODS, 2)
    a = b.num("a", 2, 9)
    price = b.num(None, 2, (b.max - 1) // a)
    if steps == 1:
        total = b.given("total", a * price)
        question = f"{name} buys {a} {xs} for ${total}. They all cost the same. How much does each {x} cost?"
        b.op(total, "/", a, f"Each {x} costs ", " dollars.")
        return question
    count = b.num("count", 1, 1) if steps == 2 else b.num("count", 2, 9)
    cost = b.num("cost", 1, (b.max - a * price) // count)
    total = b.given("total", a * price + count * cost)
    if steps == 2:
        question = (f"{name} buys {a} {xs} and one {y}. The {y} costs ${cost}. The total cost is ${total}. "
                    f"What is the cost of each {x}?")
        rest = b.op(total, "-", cost, f"The {xs} cost ", " dollars.")
    else:
        question = (f"{name} buys {a} {xs} and {count} {ys}. Each {y} costs ${cost}. The total cost is "
                    f"${total}. What is the cost of each {x}?")
        bought = b.op(count, "*", cost, f"The {ys} cost ", " dollars.")
        rest = b.op(total, "-", bought, f"The {xs} cost ", " dollars.")
    b.op(rest, "/", a, f"Each {x} costs ", " dollars.")
    return question


def _give_and_buy(b: _Builder, steps: int) -> str:
    """Has N, gives away k, buys m packs of p: how many now?"""
    (name, she, _), (friend, _, _) = _people(b.rng, 2)
    thing = b.rng.choice(THINGS)
    if steps == 1:
        have = b.num("have", 3, b.max)
        give = b.num("give", 1, have - 2)
        question = (f"{name} has {have} {thing}. {she.capitalize()} gives {give} to {friend}. "
                    f"How many {thing} does {name} have left?")
        b.op(have, "-", give, f"{name} has ", f" {thing} left.")
        return question
    packs = b.num("packs", 2, 9)
    per = b.num("per", 2, b.max // packs)
    have = b.num("have", 3, b.max - packs * per)
    if steps == 2:
        question = (f"{name} has {have} {thing}. {she.capitalize()} buys {packs} packs of {per} {thing}. "
                    f"How many {thing} does {name} have now?")
        bought = b.op(packs, "*", per, "The packs have ", f" {thing}.")
        b.op(have, "+", bought, f"{name} now has ", f" {thing}.")
        return question
    give = b.num("give", 1, have - 2)
    question = (f"{name} has {have} {thing}. {she.capitalize()} gives {give} to {friend} and buys {packs} "
                f"packs of {per} {thing}. How many {thing} does {name} have now?")
    left = b.op(have, "-", give, "After giving some away, there are ", f" {thing}.")
    bought = b.op(packs, "*", per, "The packs have ", f" {thing}.")
    b.op(left, "+", bought, f"{name} now has ", f" {thing}.")
    return question


def _sharing(b: _Builder, steps: int) -> str:
    """Items shared equally among friends, after being counted up or partly kept."""
    (name, she, _), = _people(b.rng, 1)
    thing = b.rng.choice(THINGS)
    if steps == 1:
        friends = b.num("friends", 2, 9)
        each = b.num(None, 2, b.max // friends)
        total = b.given("total", friends * each)
        question = (f"{name} shares {total} {thing} equally among {friends} friends. "
                    f"How many {thing} does each friend get?")
        b.op(total, "/", friends, "Each friend gets ", f" {thing}.")
        return question
    container, containers = b.rng.choice(CONTAINERS)
    bags = b.num("bags", 2, 9)
    per = b.num("per", 2, b.max // bags)
    friends = b.num("friends", 2, 9)
    if steps == 2:
        question = (f"{name} has {bags} {containers} with {per} {thing} in each {container}. "
                    f"{she.capitalize()} shares them equally among {friends} friends. "
                    f"How many {thing} does each friend get?")
        total = b.op(bags, "*", per, f"{name} has ", f" {thing}.")
        b.op(total, "/", friends, "Each friend gets ", f" {thing}.")
        return question
    total = bags * per
    each = b.num(None, 2, (total - 1) // friends)
    keep = b.given("keep", total - friends * each)
    question = (f"{name} has {bags} {containers} with {per} {thing} in each {container}. {she.capitalize()} "
                f"keeps {keep} and shares the rest equally among {friends} friends. "
                f"How many {thing} does each friend get?")
    total = b.op(bags, "*", per, f"{name} has ", f" {thing}.")
    rest = b.op(total, "-", keep, f"{she.capitalize()} shares ", f" {thing}.")
    b.op(rest, "/", friends, "Each friend gets ", f" {thing}.")
    return question


def _rates(b: _Builder, steps: int) -> str:
    """Reads p pages a day for d days (and then some)."""
    (name, she, _), = _people(b.rng, 1)
    verb, verbs, unit, period = b.rng.choice(RATES)
    days = b.num("days", 2, 9)
    rate = b.num("rate", 2, b.max // days)
    if steps == 1:
        question = (f"{name} {verbs} {rate} {unit} a {period} for {days} {period}s. "
                    f"How many {unit} does {she} {verb} in all?")
        b.op(rate, "*", days, f"{name} {verbs} ", f" {unit}.")
        return question
    if steps == 2:
        goal = b.num("goal", rate * days + 2, b.max)
        question = (f"{name} wants to {verb} {goal} {unit}. {she.capitalize()} {verbs} {rate} {unit} "
                    f"a {period} for {days} {period}s. How many more {unit} does {she} need to {verb}?")
        done = b.op(rate, "*", days, f"{she.capitalize()} {verbs} ", f" {unit}.")
        b.op(goal, "-", done, f"{she.capitalize()} still needs ", f" {unit}.")
        return question
    days2 = b.num("days2", 2, 9)
    rate2 = b.num("rate2", 2, (b.max - rate * days) // days2)
    question = (f"{name} {verbs} {rate} {unit} a {period} for {days} {period}s, "
                f"then {rate2} {unit} a {period} for {days2} {period}s. "
                f"How many {unit} does {she} {verb} in all?")
    first = b.op(rate, "*", days, f"First {she} {verbs} ", f" {unit}.")
    second = b.op(rate2, "*", days2, f"Then {she} {verbs} ", f" {unit}.")
    b.op(first, "+", second, f"In all, {she} {verbs} ", f" {unit}.")
    return question


def _groups(b: _Builder, steps: int) -> str:
    """Combined groups: loose items, or full containers of two kinds."""
    (name, she, _), = _people(b.rng, 1)
    thing = b.rng.choice(THINGS)
    if steps == 1:
        red = b.num("red", 2, b.max - 2)
        blue = b.num("blue", 2, b.max - red)
        question = f"{name} has {red} red {thing} and {blue} blue {thing}. How many {thing} does {she} have?"
        b.op(red, "+", blue, f"{name} has ", f" {thing}.")
        return question
    (c1, c1s), (c2, c2s) = b.rng.sample(CONTAINERS, 2)
    boxes = b.num("boxes", 2, 9)
    per = b.num("per", 2, (b.max - 2) // boxes)
    if steps == 2:
        loose = b.num("loose", 2, b.max - boxes * per)
        question = (f"{name} has {boxes} {c1s} with {per} {thing} in each {c1} and {loose} more {thing}. "
                    f"How many {thing} does {she} have?")
        boxed = b.op(boxes, "*", per, f"The {c1s} hold ", f" {thing}.")
        b.op(boxed, "+", loose, f"{name} has ", f" {thing}.")
        return question
    bags = b.num("bags", 2, 9)
    per2 = b.num("per2", 2, (b.max - boxes * per) // bags)
    question = (f"{name} has {boxes} {c1s} with {per} {thing} each and {bags} {c2s} with {per2} {thing} "
                f"each. How many {thing} does {she} have?")
    first = b.op(boxes, "*", per, f"The {c1s} hold ", f" {thing}.")
    second = b.op(bags, "*", per2, f"The {c2s} hold ", f" {thing}.")
    b.op(first, "+", second, f"{name} has ", f" {thing}.")
    return question


def _comparison(b: _Builder, steps: int) -> str:
    """Two-step difference: how many more does one person have than another?"""
    (n1, _, _), (n2, _, _), (n3, _, _) = _people(b.rng, 3)
    thing = b.rng.choice(THINGS)
    if steps == 1:
        more = b.num("more", 4, b.max)
        less = b.num("less", 2, more - 2)
        question = (f"{n1} has {more} {thing}. {n2} has {less} {thing}. "
                    f"How many more {thing} does {n1} have than {n2}?")
        b.op(more, "-", less, f"{n1} has ", f" more {thing}.")
        return question
    first = b.num("first", 2, b.max // 2)
    times = b.num("times", 2, b.max // first)
    if steps == 2:
        question = (f"{n1} has {first} {thing}. {n2} has {times} times as many. "
                    f"How many more {thing} does {n2} have than {n1}?")
        second = b.op(first, "*", times, f"{n2} has ", f" {thing}.")
        b.op(second, "-", first, f"{n2} has ", f" more {thing}.")
        return question
    fewer = b.num("fewer", 1, first * (times - 1) - 2)
    question = (f"{n1} has {first} {thing}. {n2} has {times} times as many. "
                f"{n3} has {fewer} fewer than {n2}. How many more {thing} does {n3} have than {n1}?")
    second = b.op(first, "*", times, f"{n2} has ", f" {thing}.")
    third = b.op(second, "-", fewer, f"{n3} has ", f" {thing}.")
    b.op(third, "-", first, f"{n3} has ", f" more {thing}.")
    return question


def _earnings(b: _Builder, steps: int) -> str:
    """Hourly pay over days, maybe minus what is spent."""
    (name, she, _), = _people(b.rng, 1)
    if steps == 1:
        hours = b.num("hours", 2, 9)
        wage = b.num("wage", 1, b.max // hours)
        question = (f"{name} earns ${wage} an hour. {she.capitalize()} works {hours} hours. "
                    f"How much does {she} earn?")
        b.op(wage, "*", hours, f"{she.capitalize()} earns ", " dollars.")
        return question
    day1, day2 = b.rng.sample(DAYS, 2)
    hours = b.num("hours", 2, 8)
    hours2 = b.num("hours2", 2, 8)
    wage = b.num("wage", 1, b.max // (hours + hours2))
    question = (f"{name} earns ${wage} an hour. {she.capitalize()} works {hours} hours on {day1} "
                f"and {hours2} hours on {day2}.")
    if steps == 3:
        thing, _ = b.rng.choice(GOODS)
        spent = b.num("spent", 1, wage * (hours + hours2) - 2)
        question += f" {she.capitalize()} spends ${spent} on a {thing}. How much money does {she} have left?"
    else:
        question += f" How much does {she} earn?"
    total_hours = b.op(hours, "+", hours2, f"{she.capitalize()} works ", " hours.")
    earned = b.op(total_hours, "*", wage, f"{she.capitalize()} earns ", " dollars.")
    if steps == 3:
        b.op(earned, "-", spent, f"{she.capitalize()} has ", " dollars left.")
    return question


TEMPLATES: dict[str, Callable[[_Builder, int], str]] = {
    "shopping": _shopping, "give_and_buy": _give_and_buy, "sharing": _sharing, "rates": _rates,
    "groups": _groups, "comparison": _comparison, "earnings": _earnings}


def _check_int(name: str, value: object, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValueError(f"{name} must be an integer in [{lo}, {hi}], got {value!r}")
    return value


def make_problem(rng: random.Random, max_number: int = 20, steps: int = 2, *,
                 template: str | None = None) -> Problem:
    """One problem with exactly `steps` operations and every number in [0, max_number]; the story
    shape is `template` or, when None, drawn from `TEMPLATES`."""
    _check_int("max_number", max_number, MIN_MAX_NUMBER, MAX_MAX_NUMBER)
    _check_int("steps", steps, 1, MAX_STEPS)
    if template is None:
        template = rng.choice(sorted(TEMPLATES))
    elif template not in TEMPLATES:
        raise ValueError(f"unknown template {template!r}; choose from {sorted(TEMPLATES)}")
    for _ in range(10_000):
        builder = _Builder(rng, max_number)
        try:
            question = TEMPLATES[template](builder, steps)
        except _Retry:
            continue
        return Problem(template, question, tuple(builder.steps), builder.steps[-1].result, builder.numbers)
    raise RuntimeError(f"no numbers found for template {template!r}, steps={steps}, max_number={max_number}")


def render(problem: Problem, tool: bool) -> Conversation:
    """The problem as a conversation: mental arithmetic, or the same steps as calculator calls."""
    final = f"\n{ANSWER_MARKER} {problem.answer}"
    user = {"role": "user", "content": problem.question}
    if not tool:
        text = " ".join(step.sentence for step in problem.steps) + final
        return validate_conversation({"messages": [user, {"role": "assistant", "content": text}]})
    content: list[dict[str, str]] = []
    pending = ""
    for step in problem.steps:
        content += [{"type": "text", "text": pending + step.before},
                    {"type": "python", "text": step.expression},
                    {"type": "output", "text": run_calculator(step.expression)}]
        pending = step.after + " "
    content.append({"type": "text", "text": pending.rstrip(" ") + final})
    return validate_conversation({"messages": [{"role": "system", "content": TOOL_SYSTEM_PROMPT}, user,
                                               {"role": "assistant", "content": content}]})


def generate(rng: random.Random, n: int, *, max_number: int = 20, min_steps: int = 1, max_steps: int = 3,
             tool_fraction: float = 0.5) -> list[TaskExample]:
    """`n` problems with min_steps..max_steps operations each; round(n * tool_fraction) of them, at
    random positions, solved with the calculator."""
    _check_int("n", n, 0, 10**9)
    _check_int("max_number", max_number, MIN_MAX_NUMBER, MAX_MAX_NUMBER)
    _check_int("min_steps", min_steps, 1, MAX_STEPS)
    _check_int("max_steps", max_steps, 1, MAX_STEPS)
    if min_steps > max_steps:
        raise ValueError(f"min_steps ({min_steps}) must not exceed max_steps ({max_steps})")
    if isinstance(tool_fraction, bool) or not isinstance(tool_fraction, int | float) \
            or not 0.0 <= tool_fraction <= 1.0:
        raise ValueError(f"tool_fraction must be a number in [0, 1], got {tool_fraction!r}")
    n_tool = round(n * tool_fraction)
    tools = [True] * n_tool + [False] * (n - n_tool)
    rng.shuffle(tools)
    examples = []
    for tool in tools:
        problem = make_problem(rng, max_number, rng.randint(min_steps, max_steps))
        meta = {"tool": tool, "steps": len(problem.steps), "template": problem.template}
        examples.append(TaskExample(TASK, render(problem, tool), str(problem.answer), meta))
    return examples
