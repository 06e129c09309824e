"""The declared range of every numeric option, checked when the command line is parsed.

A range is a type, made once here and used in two places:

* as the annotation of a module's or data module's ``__init__`` argument, which LightningCLI
  (jsonargparse) checks while it parses ``--data.batch_size 0``, before any class is built or any
  file read;
* as the ``type=`` of an argparse option of a subcommand (``partition``, ``index``).

Either way the value comes back as a plain ``int``/``float`` (so hyper-parameters saved in a
checkpoint stay numbers that ``torch.load(weights_only=True)`` reads, unlike jsonargparse's own
``PositiveInt``, whose instances are of its class), and a value outside is refused in one
sentence naming the option, the value and the range::

    error: --data.batch_size is 0; expected an integer >= 1.

A range whose limit depends on the data (a validation share that holds out no photo of a tiny set,
``--data.cells`` that leave training photos out, an IVF-PQ ``--nlist`` above the training sample)
is checked where the data becomes known, before any training, with a sentence of the same shape.
``tests/test_input_formats.py`` walks every task's CLI parser and both subcommand parsers: a
numeric option without a range fails it.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from collections.abc import Callable
from typing import Any, NoReturn

from jsonargparse.typing import register_type

from backbone.mobilenet import MAX_RESOLUTION, MIN_RESOLUTION, check_resolution, check_width

# Every range type by its name (the name jsonargparse puts in its messages).
RANGES: dict[str, type] = {}


class OutOfRange(argparse.ArgumentTypeError, ValueError):
    """A value outside its declared range; argparse and jsonargparse both report it by its text."""


def _show(value: Any) -> str:
    """The value as the user typed it: numbers bare, anything else quoted."""
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return repr(value)
        return value.strip()
    return repr(value) if not isinstance(value, (int, float)) else str(value)


def _number(value: Any, integer: bool) -> float | int | None:
    """``value`` (a number or its text) as int/float, or None if it is not one (bools are not)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text) if integer and re.fullmatch(r"[+-]?\d+", text) else float(text)
        except ValueError:
            return None
    if isinstance(value, (int, float)):
        return value
    return None


def _bound(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def span(low: float | None, high: float | None, low_open: bool = False, high_open: bool = False) -> str:
    """The limits in words, after a noun: `` in [0, 1)``, `` >= 1`` (empty when unbounded)."""
    if low is not None and high is not None:
        return f" in {'(' if low_open else '['}{_bound(low)}, {_bound(high)}{')' if high_open else ']'}"
    if low is not None:
        return f" {'>' if low_open else '>='} {_bound(low)}"
    if high is not None:
        return f" {'<' if high_open else '<='} {_bound(high)}"
    return ""


def describe(integer: bool, low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    """The range in words: ``an integer >= 1``, ``a number in [0, 1)``, ``a finite number``."""
    limits = span(low, high, low_open, high_open)
    if not limits:
        return f"a finite {'integer' if integer else 'number'}"
    return f"{'an integer' if integer else 'a number'}{limits}"


def _type_name(integer: bool, low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    """A short name without spaces, as jsonargparse shows it in ``--help``: ``int>=1``, ``float[0,1)``."""
    limits = span(low, high, low_open, high_open).replace(" in ", "").replace(" ", "")
    return ("int" if integer else "float") + (limits or "(finite)")


def _identity(value: Any) -> Any:
    return value


def _never(value: Any, class_type: type) -> bool:
    return False  # always through the check, which returns a plain int/float


def number_range(
    integer: bool,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
    also: tuple[float, ...] = (),
    expected: str | None = None,
    check: Callable[[int | float], Any] | None = None,
) -> type:
    """A range type: ``int``/``float`` values in [low, high] (ends open or closed, None: unbounded).

    ``also`` lists single values accepted outside the interval; ``expected`` replaces the words of
    the range; ``check`` tests a number first and raises ``ValueError`` with a whole sentence of
    its own (the backbone's width and resolution, whose sentences say why).
    """
    words = expected or describe(integer, low, high, low_open, high_open)
    name = _type_name(integer, low, high, low_open, high_open) + "".join(f"|{_bound(v)}" for v in also)
    if name in RANGES:
        return RANGES[name]

    def validate(cls: type, value: Any) -> int | float:
        number = _number(value, integer)
        ok = number is not None and math.isfinite(number)
        if ok and integer and not float(number).is_integer():
            ok = False
        if ok and check is not None:  # its own sentence says why (e.g. the memory a resolution takes)
            try:
                check(int(number) if integer else float(number))  # type: ignore[arg-type]
            except ValueError as error:
                raise OutOfRange(str(error)) from None
        if ok and number not in also:
            assert number is not None
            ok = (low is None or (number > low if low_open else number >= low)) and (
                high is None or (number < high if high_open else number <= high)
            )
        if not ok:
            raise OutOfRange(f"is {_show(value)}; expected {words}")
        assert number is not None
        return int(number) if integer else float(number)

    range_type = type(
        name,
        (int if integer else float,),
        {
            "__new__": validate,
            "__module__": __name__,
            "expected": words,
            "integer": integer,
            "low": low,
            "high": high,
            "low_open": low_open,
            "high_open": high_open,
            "also": also,
            "check": check,
        },
    )
    register_type(range_type, serializer=_identity, deserializer=range_type, type_check=_never)
    RANGES[name] = range_type
    return range_type


def int_range(low: int | None = None, high: int | None = None, **kwargs: Any) -> type:
    """An integer range type, ends included: ``int_range(1)`` is ``an integer >= 1``."""
    return number_range(True, low, high, **kwargs)


def float_range(low: float | None = None, high: float | None = None, **kwargs: Any) -> type:
    """A number range type: ``float_range(0, 1, high_open=True)`` is ``a number in [0, 1)``."""
    return number_range(False, low, high, **kwargs)


def is_range(typehint: Any) -> bool:
    """Whether ``typehint`` is one of this module's range types."""
    return isinstance(typehint, type) and RANGES.get(typehint.__name__) is typehint


# --- the ranges the project's options share ----------------------------------------------------
PositiveInt = int_range(1)  # counts: batch size, classes, top-k, photos per cell ...
NonNegativeInt = int_range(0)  # worker processes, minimum counts
NonNegativeFloat = float_range(0)  # weights of losses, weight decay, warm-up epochs
PositiveFloat = float_range(0, low_open=True)  # temperatures
Probability = float_range(0, 1)  # score thresholds, a mixing weight
Share = float_range(0, 1, high_open=True)  # a held-out share, dropout, label smoothing: 1 would leave nothing
CropScale = float_range(0, 1, low_open=True)  # smallest area of a random-resized crop: 0 would be no image
# --backbone and --resolution (and the model's and data's linked width/resolution): the backbone's own
# checks, whose sentences give the reason (the memory a huge resolution takes).
Width = float_range(0, 1, low_open=True, also=(1.25,), check=check_width)
Resolution = int_range(MIN_RESOLUTION, MAX_RESOLUTION, check=check_resolution)


# --- the two argparse subcommands ----------------------------------------------------------------
def option_sentence(message: str) -> str | None:
    """The one sentence of a range (or choice) refusal in a parser's error ``message``, or None.

    argparse says ``argument -k/--k: is 0; expected ...``; jsonargparse says ``Parser key
    "data.batch_size":`` then, on a later line, ``Not of type int>=1: is 0; expected ...``.
    """
    argparse_form = re.match(r"argument (?P<option>\S+): (?P<rest>is .*; expected .*)", message)
    if argparse_form:
        return f"{argparse_form['option']} {argparse_form['rest']}."
    choice = re.match(
        r"argument (?P<option>\S+): invalid choice: (?P<value>.*) \(choose from (?P<choices>.*)\)$", message
    )
    if choice:
        return f"{choice['option']} is {choice['value']}; expected one of {choice['choices']}."
    key = re.search(r'Parser key "(?P<key>[^"]+)"', message)
    literal = re.search(r"Expected a typing\.Literal\[(?P<choices>.*)\]\. Got value: (?P<value>[^\n]*)", message)
    if key is not None and literal is not None and "Subtypes" not in message:
        return f"--{key['key']} is {literal['value']!r}; expected one of {literal['choices']}."
    refusal = re.search(r"Not of type (?P<type>\S+): (?P<rest>[^\n]*)", message)
    if key is not None and refusal is None:
        return _union_sentence(key["key"], message)
    if key is None or refusal is None or refusal["type"] not in RANGES:
        return None
    rest = refusal["rest"].rstrip(".")
    if rest.startswith("is "):
        if re.search(r"Given value type: <class '(list|tuple)'>", message):
            rest = "holds" + rest[2:]  # one element of a list is out of range
        return f"--{key['key']} {rest}."
    return f"{rest}."  # a whole sentence of its own (``check``)


def _union_sentence(key: str, message: str) -> str | None:
    """``--model.pos_weight is 'x'; expected 'none', 'auto' or a list, each item a number > 0.``: a value
    that is none of a union's choices (a ``Literal``) and ranged lists; None for other unions."""
    subtypes = re.search(r"Subtypes: \[(?P<subtypes>[^\n]*)\]\n", message)
    given = re.search(r"Given value: (?P<value>[^\n]*)", message)
    if subtypes is None or given is None:
        return None
    words = [choice for literal in re.findall(r"typing\.Literal\[([^\]]*)\]", subtypes["subtypes"]) for choice in
             [c.strip() for c in literal.split(",")]]  # fmt: skip
    for name in re.findall(r"list\[(?:backbone\.ranges\.)?([^\]]+)\]", subtypes["subtypes"]):
        if name not in RANGES:
            return None
        words.append(f"a list, each item {RANGES[name].expected}")  # type: ignore[attr-defined]
    if not words:
        return None
    expected = ", ".join(words[:-1]) + f" or {words[-1]}" if len(words) > 1 else words[0]
    return f"--{key} is {_show(given['value'])}; expected {expected}."


def refuse(message: str) -> NoReturn:
    """Print the one sentence of a refusal and exit with status 2, as every command of the project."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


class OptionParser(argparse.ArgumentParser):
    """argparse for the subcommands: an out-of-range value is one ``error:`` sentence, exit status 2.

    Other mistakes (an unknown option, a missing one) keep argparse's usage line before it.
    """

    def error(self, message: str) -> NoReturn:
        sentence = option_sentence(message)
        if sentence is None:
            self.print_usage(sys.stderr)
            sentence = message[:1].upper() + message[1:] + ("" if message.endswith(".") else ".")
        refuse(sentence)
