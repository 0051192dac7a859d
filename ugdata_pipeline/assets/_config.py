"""Run configs of the assets, derived from the core's option dataclasses so the two cannot drift apart.

The core keeps each option's name, type, default and description (``field(metadata={"doc": ...})``);
:func:`dagster_config` turns such a dataclass into a ``dg.Config`` with the same fields, so the launchpad shows the
core's defaults and descriptions, and ``to_core()`` builds the core object (whose ``__post_init__`` checks values).
"""

import dataclasses
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

import dagster as dg
from pydantic import Field, create_model

#: Metadata key of a core option's description.
DOC = "doc"


class CoreConfig(dg.Config):
    """A run config derived from a core dataclass by :func:`dagster_config`."""

    core_type: ClassVar[type]  # the core dataclass
    run_defaults: ClassVar[Mapping[str, Any]]  # fields whose run default differs from the core's, and that default

    def to_core(self) -> Any:
        """The core options object; lists of the run config become the core's tuples, excluded fields keep defaults."""
        hints = typing.get_type_hints(self.core_type)
        values = {
            name: tuple(value) if typing.get_origin(hints[name]) is tuple else value
            for name, value in self.model_dump().items()
        }
        return self.core_type(**values)


def _run_config_type(hint: Any, *, where: str) -> Any:
    """Dagster config has lists but no tuples: ``tuple[X, ...]`` becomes ``list[X]``; everything else stays."""
    if typing.get_origin(hint) is tuple:
        args = typing.get_args(hint)
        if len(args) != 2 or args[1] is not Ellipsis:
            msg = f"{where}: only tuple[X, ...] can become a run config list, got {hint!r}"
            raise TypeError(msg)
        return list[args[0]]
    return hint


def dagster_config(
    core: type,
    *,
    name: str | None = None,
    exclude: Iterable[str] = (),
    run_defaults: Mapping[str, Any] | None = None,
) -> type[CoreConfig]:
    """
    A ``dg.Config`` class with the fields of the core dataclass ``core``: same names, types, defaults, descriptions.

    Parameters
    ----------
    core
        A dataclass whose fields carry ``metadata={"doc": ...}``.
    name
        Class name shown in Dagster (default: the core's name).
    exclude
        Core fields the run config does not offer; ``to_core()`` leaves them at the core's default.
    run_defaults
        Fields whose default in a pipeline run differs from the core's (e.g. a record cap), and that default.
    """
    where = f"run config of {core.__qualname__}"
    if not dataclasses.is_dataclass(core):
        msg = f"{where}: {core!r} is not a dataclass"
        raise TypeError(msg)
    run_defaults = dict(run_defaults or {})
    names = [f.name for f in dataclasses.fields(core)]
    unknown = sorted((set(exclude) | set(run_defaults)) - set(names))
    if unknown:
        msg = f"{where}: {unknown} are not fields of {core.__qualname__} (fields: {names})"
        raise TypeError(msg)
    hints = typing.get_type_hints(core)
    fields: dict[str, Any] = {}
    for spec in dataclasses.fields(core):
        if spec.name in exclude:
            continue
        doc = spec.metadata.get(DOC)
        if not doc:
            msg = f'{where}: field {spec.name!r} has no description; add metadata={{"doc": ...}} to it in the core'
            raise TypeError(msg)
        if spec.default is dataclasses.MISSING:
            msg = f"{where}: field {spec.name!r} has no default; a run config field needs one"
            raise TypeError(msg)
        default = run_defaults.get(spec.name, spec.default)
        kind = _run_config_type(hints[spec.name], where=f"{where}, field {spec.name!r}")
        if isinstance(default, tuple):
            default = list(default)
        fields[spec.name] = (kind, Field(default=default, description=doc))
    model = create_model(
        name or core.__name__,
        __base__=CoreConfig,
        __doc__=core.__doc__,
        **fields,
    )
    model.core_type = core
    model.run_defaults = types.MappingProxyType(run_defaults)
    return model
