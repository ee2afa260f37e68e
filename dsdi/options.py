"""Config dataclasses as the single source of truth for a command's options.

A command's config is a dataclass whose fields are declared with :func:`option`: name, type, default and help
text live there once. From the fields this module builds the typer parameters of the command (one flag per
field: ``batch_size`` -> ``--batch-size``, booleans as ``--x/--no-x``, ``argument=True`` fields as positional
arguments), checks values against their declared type, choices and minimum, and layers settings by precedence.
Adding an option to a command is one field::

    lr: float = option(0.01, help="peak learning rate", minimum=0.0)

Flags default to ``None`` ("not given"), so that a flag overrides a recipe only when it is given; the help
shows the field's default. A field without a default is a required flag (or argument). A list field is a
repeated flag (``--models runs/A --models runs/B``). A field whose command-line form differs from its value
(OUT:W pairs, ROWSxCOLS) names a ``parse`` function (text -> value, InputError on bad text).
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import sys
import typing
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import typer

from dsdi.errors import InputError
from dsdi.files import write_text_atomic

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

_SCALARS = (str, int, float, bool, Path)
_TYPE_WORDS = {str: "text", int: "an integer", float: "a number", bool: "true or false", Path: "a path"}


def option(default: Any = dataclasses.MISSING, *, help: str, factory: Callable[[], Any] | None = None,
           choices: Iterable[str] | None = None, minimum: float | None = None, maximum: float | None = None,
           above: float | None = None, shown_default: str | None = None, parse: Callable[[str], Any] | None = None,
           argument: bool = False) -> Any:
    """A config field with its command-line help.

    No ``default`` (and no ``factory``): the flag or argument is required. ``factory``: default_factory instead of
    ``default``. ``choices``: the allowed values (listed in the help, checked by :func:`check_values`).
    ``minimum`` / ``maximum`` / ``above``: the value must be >= / <= / > it. ``shown_default``: the default as the
    help shows it (e.g. "the backbone's"). ``parse``: the flag takes text and ``parse`` turns it into the field's
    value (into one item of a list field, whose flag is repeated). ``argument``: a positional argument, not a flag."""
    metadata = {"help": help, "choices": tuple(choices) if choices else None, "minimum": minimum, "maximum": maximum,
                "above": above,
                "shown_default": shown_default, "parse": parse, "argument": argument}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def flag_name(field_name: str) -> str:
    """``batch_size`` -> ``--batch-size``."""
    return "--" + field_name.replace("_", "-")


def _field_type(config_cls: type, name: str) -> tuple[type, bool, bool]:
    """(scalar type, may be None, is a list) of a field's annotation, e.g. ``list[Path]`` -> (Path, False, True)."""
    hint = typing.get_type_hints(config_cls)[name]
    args = [arg for arg in typing.get_args(hint) if arg is not type(None)]
    optional = type(None) in typing.get_args(hint)
    if optional:
        hint = args[0]
    if typing.get_origin(hint) is list:
        return typing.get_args(hint)[0], optional, True
    return hint, optional, False


def is_required(field: dataclasses.Field) -> bool:
    """True for a field without a default: its flag or argument must be given."""
    return field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING


def _help_text(field: dataclasses.Field) -> tuple[str, str | bool]:
    """(help with the choices appended, the default as shown by --help; False: none shown)."""
    meta = field.metadata
    text = meta["help"] + (f" ({' | '.join(meta['choices'])})" if meta["choices"] else "")
    if meta["shown_default"] is not None:
        return text, meta["shown_default"]
    if is_required(field):
        return text, False
    default = field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default
    if default is None or default == [] or default == "":
        return text, False
    if isinstance(default, list):
        return text, " ".join(map(str, default))
    return text, str(default).lower() if isinstance(default, bool) else str(default)


def cli_flags(config_cls: type, field: dataclasses.Field) -> list[str]:
    """The flags of a field as click declares them: ``--x`` (``--x/--no-x`` for a boolean); [] for an argument."""
    if field.metadata["argument"]:
        return []
    flag = flag_name(field.name)
    return [f"{flag}/--no-{flag[2:]}"] if _field_type(config_cls, field.name)[0] is bool else [flag]


def cli_parameters(config_cls: type) -> list[inspect.Parameter]:
    """One keyword typer parameter per field of ``config_cls``: default ``None`` (= not given), ``...`` when
    required; list fields repeat (a flag given several times, or a variadic argument)."""
    parameters = []
    for field in dataclasses.fields(config_cls):
        scalar, _, is_list = _field_type(config_cls, field.name)
        help_text, shown = _help_text(field)
        meta = field.metadata
        cli_type = str if meta["parse"] else scalar
        annotation = typing.Optional[list[cli_type] if is_list else cli_type]  # noqa: UP045 - typer needs it
        default = ... if is_required(field) else None
        if meta["argument"]:
            info = typer.Argument(default, help=help_text, show_default=shown, metavar=field.name.upper())
        else:
            metavar = f"<{cli_type.__name__.lower()}>" + (" (repeatable)" if is_list else "")
            info = typer.Option(default, *cli_flags(config_cls, field), help=help_text, show_default=shown,
                                metavar=None if scalar is bool else metavar)
        parameters.append(inspect.Parameter(field.name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation,
                                            default=info))
    return parameters


def given_values(config_cls: type, arguments: Mapping[str, Any]) -> dict[str, Any]:
    """The fields given on the command line (not None, not an empty repeated flag), their text parsed by the
    field's ``parse``."""
    given = {}
    for field in dataclasses.fields(config_cls):
        value = arguments.get(field.name)
        if value is None or (isinstance(value, (list, tuple)) and not value and not is_required(field)):
            continue
        parse = field.metadata["parse"]
        if parse is not None:
            value = [parse(item) for item in value] if isinstance(value, (list, tuple)) else parse(value)
        given[field.name] = list(value) if isinstance(value, tuple) else value
    return given


def from_values(config_cls: type, values: Mapping[str, Any], source: str = "command line") -> Any:
    """A ``config_cls`` from ``values`` (field name -> value; the others take their defaults), types and
    declared limits checked; InputError naming ``source`` and the option otherwise."""
    missing = [flag_name(field.name) for field in dataclasses.fields(config_cls)
               if is_required(field) and field.name not in values]
    if missing:
        raise InputError(f"{source}: missing {', '.join(missing)}")
    required = {name: typed_value(config_cls, name, value, source) for name, value in values.items()
                if name in {field.name for field in dataclasses.fields(config_cls) if is_required(field)}}
    config = updated(config_cls(**required), {k: v for k, v in values.items() if k not in required}, source)
    check_values(config)
    return config


def command_option(name: str, annotation: Any, default: Any) -> inspect.Parameter:
    """A command parameter that is not a config field (e.g. ``--resume``, typer's context)."""
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default)


def config_command(config_cls: type, run: Callable[..., None], *extra: inspect.Parameter,
                   doc: str | None = None) -> Callable[..., None]:
    """A typer command function whose flags are ``config_cls``'s fields plus ``extra`` parameters.

    ``run(given, **extras)`` is called with the dict of given field values (:func:`given_values`) and the extra
    parameters by name."""
    extra_names = {parameter.name for parameter in extra}

    def command(**arguments: Any) -> None:
        extras = {name: arguments[name] for name in extra_names}
        run(given_values(config_cls, arguments), **extras)

    parameters = [*extra, *cli_parameters(config_cls)]
    command.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    command.__annotations__ = {parameter.name: parameter.annotation for parameter in parameters}
    command.__doc__ = doc or run.__doc__
    command.__name__ = run.__name__
    command.config_cls = config_cls  # type: ignore[attr-defined]  (the declarations behind the flags: docs, tests)
    return command


def typed_value(config_cls: type, name: str, value: Any, source: str) -> Any:
    """``value`` checked against the field's type (ints accepted for floats, str for paths); InputError naming
    ``source`` and the option otherwise."""
    scalar, optional, is_list = _field_type(config_cls, name)
    if value is None or (scalar is Path and value == "" and optional):  # TOML has no null: "" is no path
        if optional:
            return None
        raise InputError(f"{source}: {name} cannot be empty")
    if is_list:
        if not isinstance(value, (list, tuple)):
            raise InputError(f"{source}: {name} must be a list, got {value!r}")
        return [_typed_scalar(scalar, name, item, source) for item in value]
    return _typed_scalar(scalar, name, value, source)


def _typed_scalar(scalar: type, name: str, value: Any, source: str) -> Any:
    if scalar not in _SCALARS:  # composite values (tuples) are built by the field's parse function
        return value
    accepted = {float: (int, float), Path: (str, Path)}.get(scalar, (scalar,))
    if not isinstance(value, accepted) or (scalar in (int, float) and isinstance(value, bool)):
        raise InputError(f"{source}: {name} must be {_TYPE_WORDS[scalar]}, got {value!r}")
    return scalar(value)


def updated(config: Any, overrides: Mapping[str, Any], source: str = "overrides") -> Any:
    """A copy of the dataclass ``config`` with ``overrides`` applied; unknown keys and values of the wrong type
    raise InputError naming ``source``."""
    known = {field.name for field in dataclasses.fields(config)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise InputError(f"{source}: unknown option(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))}")
    values = {name: typed_value(type(config), name, value, source) for name, value in overrides.items()}
    return dataclasses.replace(config, **values)


def check_values(config: Any) -> None:
    """InputError naming the flag for a value outside its field's choices or minimum."""
    for field in dataclasses.fields(config):
        check_value(field, getattr(config, field.name))


def check_field_value(config_cls: type, name: str, value: Any) -> None:
    """InputError naming the flag when ``value`` is outside the choices or minimum of field ``name``."""
    check_value(next(field for field in dataclasses.fields(config_cls) if field.name == name), value)


def check_value(field: dataclasses.Field, value: Any) -> None:
    """InputError naming the flag when ``value`` is outside ``field``'s choices or minimum (None passes)."""
    meta = field.metadata
    if value is None or isinstance(value, (list, tuple)):
        return
    if meta["choices"] and value not in meta["choices"]:
        raise InputError(f"{flag_name(field.name)} {value!r}: choose one of {', '.join(meta['choices'])}")
    if meta["minimum"] is not None and not (value >= meta["minimum"]):
        raise InputError(f"{flag_name(field.name)} must be at least {meta['minimum']:g}, got {value!r}")
    if meta["maximum"] is not None and not (value <= meta["maximum"]):
        raise InputError(f"{flag_name(field.name)} must be at most {meta['maximum']:g}, got {value!r}")
    if meta["above"] is not None and not (value > meta["above"] and math.isfinite(value)):
        raise InputError(f"{flag_name(field.name)} must be a finite number above {meta['above']:g}, got {value!r}")


def read_toml(path: str | Path) -> dict[str, Any]:
    """The top-level table of a TOML file; InputError when missing or malformed."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise InputError(f"{path}: config file not found") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a folder, expected a TOML config file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: not valid TOML ({error})") from None


def plain_values(config: Any) -> dict[str, Any]:
    """The dataclass ``config`` as a dict of plain values (paths as text), e.g. for a ``weights_only`` checkpoint."""
    return {key: str(value) if isinstance(value, Path) else value for key, value in dataclasses.asdict(config).items()}


def write_toml(path: str | Path, config: Any) -> None:
    """Write the dataclass ``config`` as flat TOML, atomically; None values are left out (TOML has no null)."""
    lines = [f"{key} = {_toml_value(value)}" for key, value in dataclasses.asdict(config).items() if value is not None]
    write_text_atomic(Path(path), "\n".join(lines) + "\n")


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'
