"""Command-line parsing shared by the commands: values, sizes, "did you mean"."""

import argparse
import difflib
import json
import re
import sys


def parse_value(text: str):
    """`--set` values: JSON literals (3, 0.5, true) or, failing that, the plain string."""
    lowered = {"true": "true", "false": "false"}.get(text.lower(), text)
    try:
        return json.loads(lowered)
    except json.JSONDecodeError:
        return text


def parse_sets(pairs: list[str]) -> dict:
    out = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects key=value, got {pair!r}")
        out[key] = parse_value(value)
    return out


def parse_size(text: str) -> tuple[int, int]:
    h, sep, w = text.lower().partition("x")
    try:
        return (int(h), int(w)) if sep else (int(h), int(h))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be HxW or N, got {text!r}") from None


def peek_arch(argv: list[str] | None) -> str:
    """The value of `--arch` in `argv`, so `train --arch A --help` shows A's defaults."""
    argv = sys.argv[1:] if argv is None else argv
    for i, arg in enumerate(argv):
        if arg == "--arch" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--arch="):
            return arg.partition("=")[2]
    return ""


class Parser(argparse.ArgumentParser):
    """argparse whose "invalid choice" errors (commands, choice flags) add "did you mean"."""

    def error(self, message: str):
        match = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)$", message)
        if match:
            choices = re.findall(r"'([^']*)'", match[2])
            message += did_you_mean(match[1], choices)
        super().error(message)


def did_you_mean(given: str, candidates: list[str], prefix: str = "") -> str:
    """"; did you mean PREFIX+X?" for the candidate X closest to `given`, or ""."""
    close = difflib.get_close_matches(given, candidates, n=1, cutoff=0.6)
    return f"; did you mean {prefix}{close[0]}?" if close else ""
