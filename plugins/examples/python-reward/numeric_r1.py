"""The example rule in plain Python (no bindings), so it also runs under CPython.

Same rule as ../rust-reward/src/lib.rs and ../js-reward/reward.js; the
definition is in docs/plugins.md ("The example rule"). Everything is ASCII on
purpose: str.strip(), str.isdigit() and re's \\d know Unicode whitespace and
digits, and each language's idea of those differs, so this module names the
exact characters instead.
"""

import math
import re
import tomllib

# Whitespace means exactly these four characters.
WS = " \t\n\r"
TAGS = ("<think>", "</think>", "<answer>", "</answer>")
# [0-9], not \d: \d also matches non-ASCII digits such as "٤".
NUMBER = re.compile(r"([+-]?)([0-9]*)(?:\.([0-9]*))?")


def is_r1_format(text):
    t = text.strip(WS)
    if not t.startswith("<think>") or not t.endswith("</answer>"):
        return False
    if any(t.count(tag) != 1 for tag in TAGS):
        return False
    gap_start = t.find("</think>") + len("</think>")
    open_answer = t.find("<answer>")
    return open_answer >= gap_start and t[gap_start:open_answer].strip(WS) == ""


def answer_content(text):
    """Text between the last <answer> and the first </answer> after it, trimmed."""
    start = text.rfind("<answer>")
    if start < 0:
        return None
    start += len("<answer>")
    end = text.find("</answer>", start)
    if end < 0:
        return None
    return text[start:end].strip(WS)


def canonical_number(s):
    """'-0012.50' -> '-12.5', '-0.0' -> '0'; None when s is not a number."""
    m = NUMBER.fullmatch(s.strip(WS))
    if m is None:
        return None
    sign, int_part, frac = m.group(1), m.group(2), m.group(3) or ""
    if not int_part and not frac:
        return None
    int_part = int_part.lstrip("0")
    frac = frac.rstrip("0")
    if not int_part and not frac:
        return "0"
    out = ("-" if sign == "-" else "") + (int_part or "0")
    return out + "." + frac if frac else out


class ConfigError(Exception):
    pass


class NumericR1:
    KEYS = {"format_weight": 0.5, "accuracy_weight": 1.0}

    def __init__(self, config):
        try:
            table = tomllib.loads(config)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"example-python-reward config: {e}") from None
        for key in table:
            if key not in self.KEYS:
                raise ConfigError(
                    f"example-python-reward config: unknown key `{key}`, expected one of "
                    + ", ".join(f"`{k}`" for k in self.KEYS)
                )
        values = {}
        for key, default in self.KEYS.items():
            v = table.get(key, default)
            # bool is an int subclass in Python; TOML's true is not a weight.
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ConfigError(f"example-python-reward config: `{key}` must be a finite number")
            values[key] = float(v)
        self.format_weight = values["format_weight"]
        self.accuracy_weight = values["accuracy_weight"]

    def score(self, sample_id, reference, response):
        """(total, [(name, value)]), or raises ValueError with the item's error."""
        if reference is None:
            raise ValueError(f"sample `{sample_id}`: no reference answer")
        ref = canonical_number(reference)
        if ref is None:
            raise ValueError(f"sample `{sample_id}`: reference answer `{reference}` is not a number")
        fmt = self.format_weight if is_r1_format(response) else 0.0
        given = answer_content(response)
        correct = given is not None and canonical_number(given) == ref
        acc = self.accuracy_weight if correct else 0.0
        return fmt + acc, [("format", fmt), ("accuracy", acc)]
