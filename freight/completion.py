"""`freight completion bash|zsh|fish`: a completion script written out from the argparse parser
itself, so a new command or option completes without editing anything here.

    source <(freight completion bash)         # ~/.bashrc
    source <(freight completion zsh)          # ~/.zshrc (through bashcompinit)
    freight completion fish > ~/.config/fish/completions/freight.fish
"""

from __future__ import annotations

import argparse
import shlex
from dataclasses import dataclass

SHELLS = ("bash", "zsh", "fish")


@dataclass(frozen=True)
class Level:
    """One command (`()` is `freight` itself, `("files", "get")` is `freight files get`)."""

    path: tuple[str, ...]
    options: list[tuple[str, str]]  # (--long or -s, help)
    commands: list[tuple[str, str]]  # (name, help)


def levels(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[Level]:
    """Every command of the parser, depth first, with its options and subcommands."""
    options: list[tuple[str, str]] = []
    commands: list[tuple[str, str]] = []
    below: list[Level] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
            for name, subparser in action.choices.items():
                commands.append((name, helps.get(name, "")))
                below += levels(subparser, (*path, name))
        else:
            help = "" if action.help == argparse.SUPPRESS else action.help or ""
            options += [(flag, help) for flag in action.option_strings]
    return [Level(path, options, commands), *below]


def script(parser: argparse.ArgumentParser, shell: str) -> str:
    found = levels(parser)
    if shell == "fish":
        return _fish(found)
    if shell == "zsh":
        return "autoload -U +X bashcompinit && bashcompinit\n" + _bash(found)
    return _bash(found)


def _bash(found: list[Level]) -> str:
    """Walks the words typed so far to the deepest known command, then offers its options
    and subcommands; anything else (a value, a path) falls back to file names."""
    commands = [" ".join(level.path) for level in found if level.path]
    words = [
        f"        {shlex.quote(' '.join(level.path))}) words={_words(level)} ;;" for level in found
    ]
    known = "|".join(shlex.quote(c) for c in commands)
    return "\n".join(
        [
            "# bash completion for freight (freight completion bash)",
            "_freight() {",
            '    local cur=${COMP_WORDS[COMP_CWORD]} path="" word words="" i',
            "    for ((i = 1; i < COMP_CWORD; i++)); do",
            "        word=${COMP_WORDS[i]}",
            '        case "${path:+$path }$word" in',
            f'            {known}) path="${{path:+$path }}$word" ;;',
            "        esac",
            "    done",
            '    case "$path" in',
            *words,
            "    esac",
            '    COMPREPLY=($(compgen -W "$words" -- "$cur"))',
            "}",
            "complete -o default -F _freight freight",
            "",
        ]
    )


def _words(level: Level) -> str:
    return shlex.quote(" ".join([name for name, _ in level.commands] + _long(level)))


def _long(level: Level) -> list[str]:
    return [flag for flag, _ in level.options if flag.startswith("--")]


def _fish(found: list[Level]) -> str:
    lines = ["# fish completion for freight (freight completion fish)"]
    for level in found:
        condition = _fish_condition(level)
        for name, help in level.commands:
            lines.append(
                f"complete -c freight -f -n {shlex.quote(condition)} -a {shlex.quote(name)}"
                f" -d {shlex.quote(help)}"
            )
        for flag, help in level.options:
            switch = f"-l {flag[2:]}" if flag.startswith("--") else f"-s {flag[1:]}"
            lines.append(
                f"complete -c freight -n {shlex.quote(condition)} {switch} -d {shlex.quote(help)}"
            )
    return "\n".join(lines) + "\n"


def _fish_condition(level: Level) -> str:
    """True when the words typed so far lead to `level` and not yet past it."""
    if not level.path:
        return "__fish_use_subcommand"
    tests = [f"__fish_seen_subcommand_from {name}" for name in level.path]
    if level.commands:
        children = " ".join(name for name, _ in level.commands)
        tests.append(f"not __fish_seen_subcommand_from {children}")
    return "; and ".join(tests)
