"""How every exercise is graded: run the student's function and the package on the same seeded inputs.

A checker hands each of its random inputs to the student's function and to a reference built from the
package, then prints one line and returns True or False: `passed`, `not attempted yet` (the stub still
raises NotImplementedError, so a notebook runs top to bottom before anyone fills it in), or the first thing
wrong. To name a wrong answer precisely, a checker lists `Fault`s: plausible wrong versions of the formula;
an output that matches one of them is reported with that fault's message, anything else as values off.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

Inputs = dict[str, object]


@dataclass
class Fault:
    """A known wrong answer: `wrong(*inputs.values())` computes it, `message` names the mistake."""

    message: str
    wrong: Callable[..., object]


def _copy(inputs: Inputs) -> Inputs:
    """Fresh tensors for every call, so that a function that writes into its inputs spoils nothing."""
    return {name: value.clone() if torch.is_tensor(value) else value for name, value in inputs.items()}


def _as_tuple(value) -> tuple:
    return tuple(value) if isinstance(value, (tuple, list)) else (value,)


def _same(got, expected, atol: float, rtol: float) -> bool:
    got, expected = _as_tuple(got), _as_tuple(expected)
    if len(got) != len(expected):
        return False
    for a, b in zip(got, expected, strict=True):
        a, b = torch.as_tensor(a).double(), torch.as_tensor(b).double()
        if a.shape != b.shape or not torch.allclose(a, b, atol=atol, rtol=rtol):
            return False
    return True


def shape_problem(got, expected) -> str | None:
    """'returned 1 value(s), expected 2' or 'wrong shape ...', or None when the structure matches."""
    got, expected = _as_tuple(got), _as_tuple(expected)
    if len(got) != len(expected):
        return f"returned {len(got)} value(s), expected {len(expected)}"
    for index, (a, b) in enumerate(zip(got, expected, strict=True)):
        if not (torch.is_tensor(a) or isinstance(a, (float, int))):
            return f"returned a {type(a).__name__}, expected a tensor or a number"
        a, b = torch.as_tensor(a), torch.as_tensor(b)
        if a.shape != b.shape:
            which = f" (output {index})" if len(expected) > 1 else ""
            return f"wrong shape{which}: got {tuple(a.shape)}, expected {tuple(b.shape)}"
    return None


def value_problem(got, expected, atol: float, rtol: float) -> str:
    """Where the output is furthest from the expected one, e.g. 'values off: at (0, 3) got 0.1, expected 0.7'."""
    for index, (a, b) in enumerate(zip(_as_tuple(got), _as_tuple(expected), strict=True)):
        a, b = torch.as_tensor(a).double(), torch.as_tensor(b).double()
        if torch.allclose(a, b, atol=atol, rtol=rtol):
            continue
        error = (a - b).abs().nan_to_num(float("inf"))
        where = tuple(int(i) for i in torch.unravel_index(error.argmax(), error.shape)) if error.ndim else ()
        which = f" in output {index}" if len(_as_tuple(expected)) > 1 else ""
        at = f" at index {where}" if where else ""
        return f"values off{which}{at}: got {a[where].item():.4g}, expected {b[where].item():.4g}"
    return "values off"


def named(student: Callable, default: str) -> str:
    """The name the student gave the function (how the checker's line starts), or the exercise's name."""
    name = getattr(student, "__name__", "<lambda>")
    return default if name.startswith("<") else name


def _raised(error: Exception, where: str) -> str:
    first_line = (str(error).splitlines() or [""])[0][:160]
    return f"raised {type(error).__name__}: {first_line} ({where})"


def grade(
    name: str,
    student: Callable[..., object],
    reference: Callable[..., object],
    trials: Sequence[Inputs],
    faults: Sequence[Fault] = (),
    checks: Sequence[Callable[[Callable, Inputs], str | None]] = (),
    atol: float = 1e-5,
    rtol: float = 1e-4,
) -> bool:
    """Call student(*inputs.values()) on each of the `trials`, print one line (passed, not attempted yet, or
    the first fault) and return whether it passed.

    `checks` are properties (e.g. causality) tested when the values are off and no known fault matches;
    each returns a message or None.
    """

    def report(line: str, passed: bool = False) -> bool:
        print(f"{name}: {line}")
        return passed

    for number, inputs in enumerate(trials):
        try:
            got = student(*_copy(inputs).values())
        except NotImplementedError:
            return report("not attempted yet (the stub raises NotImplementedError): write it, then re-run this cell")
        except Exception as error:  # a student's bug of any kind: report it instead of stopping the notebook
            return report(_raised(error, f"input {number}"))
        expected = reference(*_copy(inputs).values())
        if problem := shape_problem(got, expected):
            return report(problem)
        if _same(got, expected, atol, rtol):
            continue
        for fault in faults:  # a known mistake is named first, then the properties, then where the values are off
            if _same(got, fault.wrong(*_copy(inputs).values()), atol, rtol):
                return report(fault.message)
        for check in checks:
            try:
                problem = check(student, inputs)
            except Exception as error:  # the student's function failed on the check's modified input
                problem = _raised(error, f"input {number}, modified")
            if problem:
                return report(problem)
        return report(value_problem(got, expected, atol, rtol))
    return report(f"passed ({len(trials)} random inputs)", passed=True)
