"""Typed run configuration: dataclasses, loaded from TOML, with `key=value` overrides.

Every problem with a config (an unknown key, a value of the wrong type, an inadmissible
visibility, an unknown gauge) is a `ConfigError` raised before any compute, naming the
offending key and what would be accepted.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "ConfigError",
    "PhysicsConfig",
    "FieldConfig",
    "TrainConfig",
    "EvalConfig",
    "WeakConfig",
    "LagrangianConfig",
    "LearnedGaugeConfig",
    "Config",
    "load",
    "read_toml",
    "from_dict",
    "to_dict",
    "apply_overrides",
    "build_problem",
    "build_field",
    "build_formulation",
    "build_gauge",
]

HAMILTONIANS = ("heisenberg", "xxz", "noninteracting", "matrix")
FORMULATIONS = ("strong", "weak", "lagrangian")
FIELD_KINDS = ("state_independent", "time_dependent", "state_dependent", "zero", "rotation")


class ConfigError(ValueError):
    """A malformed or inconsistent configuration."""


@dataclasses.dataclass(frozen=True)
class PhysicsConfig:
    hamiltonian: str = "heisenberg"
    omega: float = 1.0  # heisenberg, xxz
    delta: float = 1.0  # xxz anisotropy
    omega1: float = 1.0  # noninteracting: qubit 1 precesses at omega1 about n1
    n1: tuple[float, float, float] = (0.0, 0.0, 1.0)
    omega2: float = 0.7
    n2: tuple[float, float, float] = (1.0, 0.0, 0.0)
    matrix_real: tuple[tuple[float, ...], ...] = ()  # "matrix": H = matrix_real + i matrix_imag
    matrix_imag: tuple[tuple[float, ...], ...] = ()
    gauge: str = "svd"  # svd | linear | learned (configured in [learned_gauge])
    visibility: float = 0.2
    ensemble: str = "hs"
    formulation: str = "strong"  # strong | weak | lagrangian (configured in [weak], [lagrangian])


@dataclasses.dataclass(frozen=True)
class FieldConfig:
    kind: str = "state_independent"
    width: int = 64
    depth: int = 3
    activation: str = "tanh"
    linear_skip: bool = True
    modes: int = 32  # state_dependent: number of branch/trunk modes
    t_max: float = 1.0  # time_dependent: states evolved to t in [0, t_max]


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    steps: int = 2000
    states: int = 32  # per time group
    points: int = 256
    times: int = 4  # time groups per batch (time_dependent only)
    lr: float = 3e-3
    lr_final_fraction: float = 0.01  # cosine decay to lr * this
    warmup: int = 100
    clip: float = 1.0  # global gradient norm; 0 disables
    log_every: int = 50
    eval_every: int = 500
    checkpoint_every: int = 500
    seed: int = 0
    x64: bool = False


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    states: int = 128  # per time group
    points: int = 2048
    times: int = 8  # time groups (all at t = 0 unless the field is time_dependent)
    seed: int = 1_000_003  # held-out: drawn from a key no training step uses


@dataclasses.dataclass(frozen=True)
class WeakConfig:
    degree: int = 3  # test functions Y_A(l1) Y_B(l2), degrees <= this on each sphere
    tests: str = "full"  # full | odd (the moments the Bell statistics see)
    blocks: int = 4  # point blocks for the unbiased squares


@dataclasses.dataclass(frozen=True)
class LagrangianConfig:
    degree: int = 3  # odd moments up to this degree on each sphere
    times: int = 4  # comparison times t_max * j / times, j = 1..times
    t_max: float = 1.0
    steps: int = 8  # Tsit5 steps over [0, t_max]
    sampling: str = "exact"  # exact (svd gauge) | weighted (any gauge)
    blocks: int = 4  # sample blocks for the unbiased squares
    directions: int = 16  # direction pairs of the held-out sign statistics


@dataclasses.dataclass(frozen=True)
class LearnedGaugeConfig:
    base: str = "svd"  # svd | linear
    degree: int = 2  # free moments of degree <= this on each sphere
    width: int = 32
    depth: int = 2


@dataclasses.dataclass(frozen=True)
class Config:
    name: str = "run"
    physics: PhysicsConfig = PhysicsConfig()
    field: FieldConfig = FieldConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    weak: WeakConfig = WeakConfig()
    lagrangian: LagrangianConfig = LagrangianConfig()
    learned_gauge: LearnedGaugeConfig = LearnedGaugeConfig()


_SECTION_TYPES = {
    "physics": PhysicsConfig,
    "field": FieldConfig,
    "train": TrainConfig,
    "eval": EvalConfig,
    "weak": WeakConfig,
    "lagrangian": LagrangianConfig,
    "learned_gauge": LearnedGaugeConfig,
}


def _coerce(value: Any, typ: Any, where: str) -> Any:
    """Check `value` against the annotation `typ` (as written in this module)."""
    origin = typing.get_origin(typ)
    if typ is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where} must be true or false; got {value!r}")
    if typ is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where} must be an integer; got {value!r}")
    if typ is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{where} must be a number; got {value!r}")
    if typ is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where} must be a string; got {value!r}")
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where} must be a list; got {value!r}")
        args = typing.get_args(typ)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{where} must have {len(args)} entries; got {len(value)}")
        return tuple(
            _coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True))
        )
    if isinstance(typ, types.UnionType):
        raise ConfigError(f"{where}: unsupported type {typ}")
    return value


def _section_from_dict(cls, data: dict, section: str):
    if not isinstance(data, dict):
        raise ConfigError(f"[{section}] must be a table; got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ConfigError(
            f"unknown key(s) {', '.join(f'{section}.{k}' for k in unknown)}; "
            f"[{section}] accepts: {', '.join(names)}"
        )
    return cls(**{k: _coerce(v, hints[k], f"{section}.{k}") for k, v in data.items()})


def from_dict(data: dict) -> Config:
    """A validated `Config` from nested dicts (as TOML gives them)."""
    data = dict(data)
    unknown = sorted(set(data) - set(_SECTION_TYPES) - {"name"})
    if unknown:
        raise ConfigError(
            f"unknown section or key(s) {', '.join(unknown)}; a config has 'name' and the "
            f"tables {', '.join(f'[{s}]' for s in _SECTION_TYPES)}"
        )
    kwargs: dict[str, Any] = {"name": _coerce(data.get("name", "run"), str, "name")}
    for section, cls in _SECTION_TYPES.items():
        kwargs[section] = _section_from_dict(cls, data.get(section, {}), section)
    cfg = Config(**kwargs)
    validate(cfg)
    return cfg


def to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


def _parse_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text  # a bare word: a string such as gauge=linear


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply `section.key=value` strings (TOML values; bare words are strings)."""
    data = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        key, text = item.split("=", 1)
        parts = key.strip().split(".")
        if parts == ["name"]:
            data["name"] = _parse_value(text)
            continue
        if len(parts) != 2:
            raise ConfigError(f"override key {key!r} must be section.key, e.g. train.steps=100")
        section, name = parts
        data.setdefault(section, {})
        if not isinstance(data[section], dict):
            raise ConfigError(f"{section} is not a table")
        data[section][name] = _parse_value(text.strip())
    return data


def read_toml(path: str | Path, what: str = "config file") -> dict:
    """The tables of a TOML file; a missing file or bad TOML is a `ConfigError`."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} {str(path)!r} does not exist")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{what} {path} is not valid TOML: {e}") from None


def load(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read a TOML file (or start from defaults), apply overrides, validate."""
    data = read_toml(path) if path is not None else {}
    return from_dict(apply_overrides(data, overrides or []))


def _one_of(value, choices, where):
    if value not in choices:
        raise ConfigError(f"{where} = {value!r} is not one of: {', '.join(choices)}")


def validate(cfg: Config) -> None:
    """Consistency checks that need no compute beyond the gauges' visibilities."""
    from lhvjax.fields import ACTIVATIONS
    from lhvjax.gauges import GAUGES, InadmissibleStateError

    p, f, t, e = cfg.physics, cfg.field, cfg.train, cfg.eval
    _one_of(p.hamiltonian, HAMILTONIANS, "physics.hamiltonian")
    _one_of(p.gauge, tuple(GAUGES), "physics.gauge")
    _one_of(p.ensemble, ("hs", "bures"), "physics.ensemble")
    _one_of(p.formulation, FORMULATIONS, "physics.formulation")
    _validate_formulation(cfg)
    _one_of(f.kind, FIELD_KINDS, "field.kind")
    _one_of(f.activation, tuple(ACTIVATIONS), "field.activation")
    try:
        build_gauge(cfg).check_visibility(p.visibility)
    except InadmissibleStateError as err:
        raise ConfigError(f"physics.visibility: {err}") from None
    for name in ("width", "depth", "modes"):
        if getattr(f, name) < 1:
            raise ConfigError(f"field.{name} must be at least 1; got {getattr(f, name)}")
    for name in ("steps", "states", "points", "times", "log_every", "eval_every"):
        if getattr(t, name) < 1:
            raise ConfigError(f"train.{name} must be at least 1; got {getattr(t, name)}")
    for name in ("states", "points", "times"):
        if getattr(e, name) < 2:
            raise ConfigError(f"eval.{name} must be at least 2 (for a standard error)")
    if t.lr <= 0 or not np.isfinite(t.lr):
        raise ConfigError(f"train.lr must be a positive number; got {t.lr}")
    if f.kind == "time_dependent" and f.t_max <= 0:
        raise ConfigError("field.t_max must be positive for a time_dependent field")
    if f.kind == "rotation" and p.hamiltonian != "noninteracting":
        raise ConfigError(
            "field.kind = 'rotation' is the exact field of the noninteracting "
            "Hamiltonian; set physics.hamiltonian = 'noninteracting'"
        )
    if p.hamiltonian == "matrix":
        H = np.asarray(p.matrix_real, float) + 1j * np.asarray(p.matrix_imag or 0.0, float)
        if H.shape != (4, 4):
            raise ConfigError(
                f"physics.matrix_real (and matrix_imag) must be 4x4 lists; got shape {H.shape}"
            )
        if not np.allclose(H, H.conj().T):
            raise ConfigError("physics.matrix_real + i matrix_imag is not Hermitian")
    for name in ("n1", "n2"):
        if not np.linalg.norm(getattr(p, name)) > 0:
            raise ConfigError(f"physics.{name} must be a nonzero vector")


def _validate_formulation(cfg: Config) -> None:
    from lhvjax.harmonics import PAIR_SETS
    from lhvjax.lagrangian import SAMPLINGS

    p, f, t, e = cfg.physics, cfg.field, cfg.train, cfg.eval
    if p.gauge == "learned":
        _one_of(cfg.learned_gauge.base, ("svd", "linear"), "learned_gauge.base")
        if cfg.learned_gauge.degree < 2:
            raise ConfigError(
                "learned_gauge.degree must be at least 2 (the free moments start there)"
            )
        if p.formulation == "lagrangian":
            raise ConfigError(
                "gauge = 'learned' has no meaning in the Lagrangian form (it fixes the gauge only "
                "at t = 0); use formulation = 'strong' or 'weak', or gauge = 'svd' / 'linear'"
            )
    if p.formulation == "strong":
        return
    sec = cfg.weak if p.formulation == "weak" else cfg.lagrangian
    where = p.formulation
    if sec.degree < 1:
        raise ConfigError(f"{where}.degree must be at least 1; got {sec.degree}")
    if sec.blocks < 2:
        raise ConfigError(f"{where}.blocks must be at least 2; got {sec.blocks}")
    eval_blocks = max(sec.blocks, 8)
    if t.points % sec.blocks or e.points % eval_blocks:
        raise ConfigError(
            f"train.points ({t.points}) must be a multiple of {where}.blocks ({sec.blocks}) and "
            f"eval.points ({e.points}) a multiple of {eval_blocks}: the unbiased squares split "
            f"the points into blocks"
        )
    if p.formulation == "weak":
        _one_of(cfg.weak.tests, PAIR_SETS[:2], "weak.tests")
        return
    lg = cfg.lagrangian
    _one_of(lg.sampling, SAMPLINGS, "lagrangian.sampling")
    if lg.sampling == "exact" and p.gauge != "svd":
        raise ConfigError(
            f"lagrangian.sampling = 'exact' needs the svd gauge (its sampler is jittable); with "
            f"gauge = {p.gauge!r} set lagrangian.sampling = 'weighted'"
        )
    if f.kind == "state_dependent":
        raise ConfigError(
            "the Lagrangian form moves samples with one field for all states; use field.kind = "
            "'state_independent' or 'time_dependent'"
        )
    for name in ("times", "steps", "directions"):
        if getattr(lg, name) < 1:
            raise ConfigError(f"lagrangian.{name} must be at least 1")
    if not lg.t_max > 0:
        raise ConfigError(f"lagrangian.t_max must be positive; got {lg.t_max}")


def build_formulation(cfg: Config):
    """The formulation object of `residual.Problem` for cfg.physics.formulation."""
    from lhvjax.lagrangian import Lagrangian
    from lhvjax.residual import Strong
    from lhvjax.weak import Weak

    if cfg.physics.formulation == "weak":
        return Weak(**dataclasses.asdict(cfg.weak))
    if cfg.physics.formulation == "lagrangian":
        return Lagrangian(**dataclasses.asdict(cfg.lagrangian))
    return Strong()


def build_gauge(cfg: Config):
    from lhvjax.gauges import Learned, get_gauge

    if cfg.physics.gauge != "learned":
        return get_gauge(cfg.physics.gauge)
    g = cfg.learned_gauge
    return Learned(g.base, g.degree, g.width, g.depth, feature_scale=cfg.physics.visibility)


def build_hamiltonian(p: PhysicsConfig):
    from lhvjax import quantum

    if p.hamiltonian == "heisenberg":
        return quantum.heisenberg(p.omega)
    if p.hamiltonian == "xxz":
        return quantum.xxz(p.omega, p.delta)
    if p.hamiltonian == "noninteracting":
        return quantum.noninteracting(p.omega1, p.n1, p.omega2, p.n2)
    H = np.asarray(p.matrix_real, float) + 1j * np.asarray(p.matrix_imag or 0.0, float)
    return quantum.hermitian(H)


def build_problem(cfg: Config):
    from lhvjax.residual import Problem

    t_max = cfg.field.t_max if cfg.field.kind == "time_dependent" else 0.0
    if cfg.physics.formulation == "lagrangian":
        t_max = 0.0  # the initial states are drawn from S_v; the flow does the evolving
    return Problem(
        build_hamiltonian(cfg.physics),
        build_gauge(cfg),
        cfg.physics.visibility,
        cfg.physics.ensemble,
        t_max,
        formulation=build_formulation(cfg),
    )


def build_field(cfg: Config):
    from lhvjax import fields

    f, p = cfg.field, cfg.physics
    if f.kind == "zero":
        return fields.zero_field()
    if f.kind == "rotation":
        return fields.rotation_field(p.omega1, p.n1, p.omega2, p.n2)
    if f.kind == "state_dependent":
        return fields.DeepONetField(f.width, f.depth, f.modes, f.activation)
    return fields.MLPField(
        f.width, f.depth, f.activation, time=f.kind == "time_dependent", linear_skip=f.linear_skip
    )
