"""Row variants of the learning-target benchmarks: ``--bc``/``--ft``/``--sac KEY=VALUE`` parsed as overrides of a
config dataclass's fields, and the tag that names the variant's run directories and table rows."""

from __future__ import annotations

import dataclasses
import types
import typing


def _parser(hint: object):
    """A function from the text of a value to the field's type, or None where the field takes no such text (a list,
    a path)."""
    args = typing.get_args(hint)
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:  # ``int | None``
        inner = [a for a in args if a is not type(None)]
        return _parser(inner[0]) if len(inner) == 1 else None
    if typing.get_origin(hint) is typing.Literal and all(isinstance(a, str) for a in args):
        return lambda text: text if text in args else _refuse(f"one of {', '.join(args)}")
    if hint is bool:
        return _boolean
    return {int: int, float: float}.get(hint)  # type: ignore[call-overload]


def _boolean(text: str) -> bool:
    value = {"true": True, "false": False}.get(text.lower())
    return _refuse("true or false") if value is None else value


def _refuse(wanted: str) -> typing.NoReturn:
    raise ValueError(wanted)


def parse_settings(pairs: list[str], config: type, flag: str, example: str) -> dict:
    """``KEY=VALUE`` pairs as overrides of the config class's numeric, choice and true/false fields; a one-line
    exit otherwise."""
    hints = typing.get_type_hints(config)
    parsers = {f.name: _parser(hints[f.name]) for f in dataclasses.fields(config)}
    settings = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        parse = parsers.get(key)
        try:
            if parse is None:
                raise ValueError
            settings[key] = parse(value)
        except ValueError:
            raise SystemExit(f"{flag} {pair}: give KEY=VALUE, a numeric, choice or true/false field of "
                             f"{config.__name__} (e.g. {example})") from None
    return settings


def settings_tag(*overrides: dict | None, prefix: str = "") -> str:
    """The overrides as text (``"a=1,b=x; c=2"``, one group per dict given), after ``prefix``; "" for none."""
    parts = [",".join(f"{k}={v}" for k, v in sorted(d.items())) for d in overrides if d]
    return prefix + "; ".join(parts) if parts else ""
