"""Commands from typed functions: jsonargparse builds each command's options from its signature and docstring."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from jsonargparse import ArgumentParser


def function_command(function: Callable[..., None], prog: str) -> Callable[[Sequence[str]], None]:
    """A command whose options are ``function``'s parameters (``--name value``), documented by its docstring."""

    def run(args: Sequence[str]) -> None:
        parser = ArgumentParser(prog=prog, description=(function.__doc__ or "").splitlines()[0], exit_on_error=False)
        parser.add_function_arguments(function, as_positional=False)
        config = parser.parse_args(list(args))
        function(**config.as_dict())

    return run


def dataclass_command(function: Callable[..., None], prog: str) -> Callable[[Sequence[str]], None]:
    """Like :func:`function_command`, with dataclass arguments built from ``--data.root``, ``--gates.…`` options."""

    def run(args: Sequence[str]) -> None:
        parser = ArgumentParser(prog=prog, description=(function.__doc__ or "").splitlines()[0], exit_on_error=False)
        parser.add_function_arguments(function, as_positional=False)
        config = parser.instantiate(parser.parse_args(list(args)))
        function(**config.as_dict())

    return run
