"""One flag style for every command line of sd_sparse: `--snake_case`, the dashed spelling a deprecated alias."""

from __future__ import annotations

import argparse
import sys


class SnakeCaseArgumentParser(argparse.ArgumentParser):
    """An `ArgumentParser` whose long flags are spelled `--snake_case`, the dashed spelling a deprecated alias
    (`snake_case_flags`, applied before parsing): an abbreviation that matches both spellings of one flag is
    not ambiguous. The `sd-sparse` command line and the benchmark scripts use it."""

    def parse_known_args(self, args=None, namespace=None):
        snake_case_flags(self)
        return super().parse_known_args(args, namespace)

    def _get_option_tuples(self, option_string):
        tuples, seen = [], set()
        # the canonical spelling first, so an abbreviation resolves to it
        for option in sorted(super()._get_option_tuples(option_string), key=lambda t: t[1] not in t[0].option_strings):
            if id(option[0]) not in seen:
                seen.add(id(option[0]))
                tuples.append(option)
        return tuples


def _snake_case(option: str) -> str:
    return "--" + option[2:].replace("-", "_")


def _warn_dashed(action_class: type) -> type:
    """`action_class` whose call prints a one-line deprecation warning when a dashed alias was used."""

    class DashedAliasAction(action_class):
        def __call__(self, parser, namespace, values, option_string=None):
            if option_string in self.dashed_aliases:
                canonical = self.dashed_aliases[option_string]
                print(f"{parser.prog}: warning: {option_string} is deprecated, use {canonical}", file=sys.stderr)
            super().__call__(parser, namespace, values, option_string)

    DashedAliasAction.__name__ = DashedAliasAction.__qualname__ = f"DashedAlias{action_class.__name__}"
    return DashedAliasAction


def snake_case_flags(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Makes `--snake_case` the one spelling of every long flag of `parser` and its subcommands (what
    `--help` and the errors show, as in the train/*.py scripts); the dashed spelling (`--output-dir`) still
    works as a deprecated alias that prints a one-line warning on stderr. Short flags (`-o`) stay. Applying it
    twice changes nothing."""
    if getattr(parser, "_snake_case_flags", False):
        return parser
    parser._snake_case_flags = True
    classes = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for subparser in dict.fromkeys(action.choices.values()):
                snake_case_flags(subparser)
            continue
        aliases = {}
        for option in action.option_strings:
            if not option.startswith("--") or ("-" not in option[2:] and "_" not in option[2:]):
                continue
            canonical = _snake_case(option)
            dashed = "--" + option[2:].replace("_", "-")
            if parser._option_string_actions.get(canonical, action) is not action:
                continue  # both spellings name different flags: leave them alone
            if parser._option_string_actions.get(dashed, action) is not action:
                continue
            parser._option_string_actions[canonical] = parser._option_string_actions[dashed] = action
            aliases[dashed] = canonical
        if not aliases:
            continue
        action.option_strings = list(
            dict.fromkeys(_snake_case(o) if o in aliases else o for o in action.option_strings)
        )
        if type(action) not in classes:
            classes[type(action)] = _warn_dashed(type(action))
        action.__class__ = classes[type(action)]
        action.dashed_aliases = aliases
    return parser
