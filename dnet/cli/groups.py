"""What every verb's ``--help`` and command line share: options printed in titled sections (as trtexec and Polygraphy
print theirs), and the deprecated spellings of renamed options, still read for one release with a warning."""

from __future__ import annotations

from dataclasses import dataclass

import click

from dnet.cli.main import warn

GENERAL = "General"  # the last section: --json, -q, -h, and any option no section names


@dataclass(frozen=True)
class Alias:
    """A deprecated spelling: ``old`` is read as ``new`` (``new=None``: ``old``'s value is the positional model file)."""

    old: str
    new: str | None
    advice: str | None = None  # what the warning tells to do instead (default: "use NEW")

    def message(self) -> str:
        return f"{self.old} is deprecated; {self.advice or f'use {self.new}'}"


def deprecated(old: str, new: str | None = None, *, advice: str | None = None) -> None:
    """``dnet: warning: OLD is deprecated; use NEW`` on stderr (the spelling still works, for one release)."""
    warn(Alias(old, new, advice).message())


class Verb(click.Command):
    """A verb whose ``--help`` lists its options in ``sections`` (title, flags) and whose ``aliases`` (deprecated
    spellings) are read as the new ones, each with one warning line on stderr."""

    def __init__(self, *args, sections: tuple[tuple[str, tuple[str, ...]], ...] = (),
                 aliases: tuple[Alias, ...] = (), **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.sections, self.aliases = sections, {a.old: a for a in aliases}
        flags = {flag for param in self.params for flag in param.opts}
        named = [flag for _, members in sections for flag in members]
        unknown = [flag for flag in named if flag not in flags] + [a.new for a in aliases if a.new and a.new not in flags]
        if unknown or len(named) != len(set(named)):  # a typo or a flag in two sections is the programmer's mistake
            raise TypeError(f"{self.name}: sections name unknown or repeated flags: {unknown or named}")

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, self._read_aliases(args))

    def _read_aliases(self, args: list[str]) -> list[str]:
        """``args`` with each deprecated spelling replaced by its new one; one warning for each spelling used."""
        end = args.index("--") if "--" in args else len(args)
        given = [arg.partition("=")[0] for arg in args[:end] if arg.startswith("-")]
        used = list(dict.fromkeys(self.aliases[flag] for flag in given if flag in self.aliases))
        for alias in used:
            param = self._param(alias.new)
            if param is not None and not param.multiple and any(flag in param.opts for flag in given):
                raise click.UsageError(f"give {alias.new} once ({alias.old} is its deprecated alias)")
        for alias in used:
            warn(alias.message())
        out = []
        for i, arg in enumerate(args):
            name, eq, value = arg.partition("=")
            alias = self.aliases.get(name) if i < end and arg.startswith("--") else None
            if alias is None:
                out.append(arg)
            elif alias.new is not None:
                out.append(alias.new + eq + value)
            elif eq:
                out.append(value)  # --engine=FILE: FILE; --engine FILE: the next token is FILE
        return out

    def _param(self, flag: str | None) -> click.Option | None:
        return next((p for p in self.params if isinstance(p, click.Option) and flag in p.opts), None)

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        records = {}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is not None and not isinstance(param, click.Argument):
                records[param] = record
        sections = [(title, [param for flag in members for param in records if flag in param.opts])
                    for title, members in self.sections]  # in the section's order
        placed = {param for _, params in sections for param in params}
        rest = [param for param in records if param not in placed]  # --help, and options no section names
        titles = [title for title, _ in sections]
        if GENERAL in titles:
            sections[titles.index(GENERAL)][1].extend(rest)
        elif rest:
            sections.append((GENERAL if sections else "Options", rest))
        for title, params in sections:
            if params:
                with formatter.section(title):
                    formatter.write_dl([records[param] for param in params])


class Choice(click.Choice):
    """A :class:`click.Choice` that also reads ``deprecated`` values, which neither ``--help`` nor its error offers."""

    def __init__(self, choices, deprecated=()) -> None:
        super().__init__(choices)
        self.deprecated = tuple(deprecated)

    def convert(self, value, param, ctx):
        return value if value in self.deprecated else super().convert(value, param, ctx)


def verb(name: str, *, sections=(), aliases=()):
    """``@click.command(name)`` as a :class:`Verb`."""
    return click.command(name, cls=Verb, sections=sections, aliases=aliases)


__all__ = ["GENERAL", "Alias", "Choice", "Verb", "deprecated", "verb"]
