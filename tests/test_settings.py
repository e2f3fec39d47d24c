"""Settings objects and entry points are validated at construction (issue item 8): every
bad value raises ValueError naming the field and showing the value's type; numpy scalars
are accepted, bools refused where numbers are meant."""

import numpy as np
import pytest

from asymptotics.channels.attention import AttentionChannel
from asymptotics.channels.attention_map import Architecture
from asymptotics.channels.closed_form import LinearChannel, ProductChannel, SignProductChannel
from asymptotics.channels.registry import make_channel
from asymptotics.checks import ResourceError, check_int, check_number
from asymptotics.curves import sweep_settings
from asymptotics.staircase import StaircaseSettings
from asymptotics.state_evolution import SESettings, run_state_evolution
from asymptotics.thresholds import ThresholdSettings
from simulators.amp import AMPConfig
from simulators.attention_training import TrainConfig


def test_messages_name_field_value_and_type():
    with pytest.raises(ValueError, match=r"^resolution must be an integer >= 0, got -1 \(int\)$"):
        ThresholdSettings(resolution=-1)
    with pytest.raises(ValueError,
                       match=r"^alpha must be a finite number > 0, got '0.5' \(str\)$"):
        run_state_evolution(LinearChannel(), "0.5")
    with pytest.raises(ValueError, match=r"depth must be an integer >= 1, got '2' \(str\)"):
        make_channel("attention", depth="2")
    with pytest.raises(ValueError, match=r"mc_samples must be an integer >= 1, got 0 \(int\)"):
        ThresholdSettings(mc_samples=0)


def test_helpers():
    assert check_int("n", np.int64(3), 0) == 3
    assert check_number("x", np.float32(0.5), above=0, maximum=1) == np.float32(0.5)
    assert check_number("x", float("inf"), above=0, finite=False) == float("inf")
    for bad in (True, 1.0, "1", None, np.bool_(True)):
        with pytest.raises(ValueError, match="n must be an integer"):
            check_int("n", bad, 0)
    for bad in (True, "1", float("nan"), float("inf"), None, [1.0]):
        with pytest.raises(ValueError, match="x must be a finite number"):
            check_number("x", bad)
    with pytest.raises(ValueError, match=r"x must be a finite number > 0 and < 1, got 1 "):
        check_number("x", 1, above=0, below=1)
    with pytest.raises(ResourceError, match="sanity bound"):
        check_int("r", 31, 0, 30)


BAD = [
    # (constructor, field, value)
    (ThresholdSettings, "method", "grid"),
    (ThresholdSettings, "resolution", -1),
    (ThresholdSettings, "resolution", 1.0),
    (ThresholdSettings, "resolution", True),
    (ThresholdSettings, "resolution", 100),  # sanity bound (ResourceError)
    (ThresholdSettings, "outer_nodes", -3),
    (ThresholdSettings, "outer_half_width", float("nan")),
    (ThresholdSettings, "mc_samples", 0),
    (ThresholdSettings, "mc_samples", "1024"),
    (ThresholdSettings, "mc_batches", 1),
    (ThresholdSettings, "seed", -1),
    (SESettings, "gh_nodes", 1),
    (SESettings, "gh_max_dim", -1),
    (SESettings, "discrete_nodes", 200),
    (SESettings, "sobol_log2", 2),
    (SESettings, "sobol_log2", 100),
    (SESettings, "sobol_log2", 12.0),
    (SESettings, "seed", "0"),
    (SESettings, "device", "tpu"),
    (SESettings, "cpu_kernel", "c"),
    (StaircaseSettings, "groups", 1),
    (StaircaseSettings, "log2_points", 0),
    (StaircaseSettings, "log2_points", 100),
    (StaircaseSettings, "resolution", -1),
    (StaircaseSettings, "q_tol", 0.0),
    (StaircaseSettings, "q_grid", 1),
    (StaircaseSettings, "newton_tol", "1e-9"),
    (StaircaseSettings, "newton_max", 0),
    (Architecture, "depth", 0),
    (Architecture, "seq_len", 1),
    (Architecture, "rank", 1.5),
    (Architecture, "skip", -0.1),
    (Architecture, "beta", float("inf")),
    (AttentionChannel, "depth", "2"),
    (AttentionChannel, "depth", 2.0),
    (AttentionChannel, "seq_len", 1),
    (AttentionChannel, "skip", True),
    (AttentionChannel, "beta", 0.0),
    (AttentionChannel, "inner_rule", "trapezoid"),
    (LinearChannel, "noise", -0.1),
    (LinearChannel, "noise", "0.1"),
    (SignProductChannel, "nodes", 1),
    (ProductChannel, "nodes", 400.0),
    (AMPConfig, "dim", 1),
    (AMPConfig, "dim", 100.0),
    (AMPConfig, "alpha", "1.2"),
    (AMPConfig, "max_iter", 0),
    (AMPConfig, "damping", 1.5),
    (AMPConfig, "tol", -1.0),
    (AMPConfig, "init_scale", float("nan")),
    (AMPConfig, "n_test", 0),
    (AMPConfig, "psd_projection", "yes"),
    (AMPConfig, "device", "tpu"),
    (TrainConfig, "arch", (2, 2)),
    (TrainConfig, "dim", 0),
    (TrainConfig, "alpha", 0),
    (TrainConfig, "optimizer", "lbfgs"),
    (TrainConfig, "lr", 0.0),
    (TrainConfig, "steps", -1),
    (TrainConfig, "batch", 0),
    (TrainConfig, "momentum", 1.0),
    (TrainConfig, "weight_decay", -1.0),
    (TrainConfig, "rho", float("nan")),
    (TrainConfig, "init_scale", True),
    (TrainConfig, "n_test", 0),
    (TrainConfig, "log_points", 0),
    (TrainConfig, "diverge_q", 0.0),
    (TrainConfig, "dtype", "float16"),
]


@pytest.mark.parametrize("cls,field,value", BAD,
                         ids=[f"{c.__name__}-{f}-{v!r}" for c, f, v in BAD])
def test_bad_value_names_field(cls, field, value):
    with pytest.raises(ValueError, match=field):
        cls(**{field: value})


@pytest.mark.parametrize("kwargs,field", [
    (dict(model="attention", depth="2"), "depth"),
    (dict(model="attention", depth=0), "depth"),
    (dict(model="attention", seq_len=2.5), "seq_len"),
    (dict(model="attention", skip="1"), "skip"),
    (dict(model="attention", beta=-1.0), "beta"),
    (dict(model="attention", inner_resolution=-1), "inner_resolution"),
    (dict(model="attention", inner_resolution=1.0), "inner_resolution"),
    (dict(model="attention", inner_resolution=50), "inner_resolution"),
    (dict(model="linear", noise=float("nan")), "noise"),
    (dict(model="foo"), "model"),
])
def test_make_channel_rejects(kwargs, field):
    with pytest.raises(ValueError, match=field):
        make_channel(**kwargs)


@pytest.mark.parametrize("kwargs,field", [
    (dict(alpha="0.5"), "alpha"), (dict(alpha=0.0), "alpha"), (dict(alpha=True), "alpha"),
    (dict(alpha=float("inf")), "alpha"), (dict(tol=0.0), "tol"), (dict(tol="1e-8"), "tol"),
    (dict(max_iter=0), "max_iter"), (dict(max_iter=10.0), "max_iter"),
    (dict(damping=0.0), "damping"), (dict(damping=1.5), "damping"),
    (dict(start_eps=1.0), "start_eps"), (dict(settings={"sobol_log2": 9}), "settings"),
])
def test_run_state_evolution_rejects(kwargs, field):
    args = {"alpha": 1.0, **kwargs}
    alpha = args.pop("alpha")
    with pytest.raises(ValueError, match=field):
        run_state_evolution(LinearChannel(), alpha, **args)


@pytest.mark.parametrize("kwargs,field", [
    (dict(tol=-1.0), "tol"), (dict(damping="0.5"), "damping"),
    (dict(max_iter=0), "max_iter"), (dict(settings=object()), "settings"),
])
def test_sweep_settings_rejects(kwargs, field, tmp_path):
    with pytest.raises(ValueError, match=field):
        sweep_settings([({}, LinearChannel())], [1.0], **kwargs)


def test_amp_validate_after_mutation():
    cfg = AMPConfig(dim=10, alpha=1.0)
    cfg.dim = "10"
    with pytest.raises(ValueError, match=r"dim must be an integer >= 2, got '10' \(str\)"):
        cfg.validate()


def test_good_values_pass_numpy_scalars_included():
    i, f = np.int64, np.float64
    ThresholdSettings(method="mc", resolution=i(1), outer_nodes=i(0), outer_half_width=f(2),
                      mc_samples=i(2**10), mc_batches=np.int32(4), seed=i(3))
    SESettings(gh_nodes=i(20), gh_max_dim=i(2), discrete_nodes=i(101), sobol_log2=i(9),
               seed=np.uint8(1))
    StaircaseSettings(groups=i(2), log2_points=i(7), resolution=i(0), q_tol=f(1e-9),
                      q_grid=i(8), newton_tol=np.float32(1e-6), newton_max=i(5))
    arch = Architecture(depth=i(2), seq_len=i(3), skip=np.float32(0.5), beta=i(2), rank=i(1))
    ch = AttentionChannel(i(2), i(2), f(0.5), np.float32(2.0))
    assert ch.depth == 2 and ch.beta == 2.0
    assert make_channel("attention", depth=i(1), seq_len=i(3), skip=0, beta=1,
                        inner_resolution=i(0)).seq_len == 3
    assert make_channel("linear", noise=f(0.2)).noise == 0.2
    LinearChannel(0)
    AMPConfig(dim=i(50), alpha=f(1.5), max_iter=i(3), damping=1, tol=f(1e-4),
              init_scale=0, n_test=i(10)).validate()
    TrainConfig(arch=arch, dim=i(20), alpha=f(2.0), lr=np.float32(0.1), steps=i(0),
                batch=i(5), momentum=f(0.5), optimizer="fsam-adam", n_test=i(3),
                log_points=i(2), dtype="float32")
    res = run_state_evolution(LinearChannel(0.1), f(1.0), damping=f(0.5), tol=np.float32(1e-6),
                              max_iter=i(200))
    assert res.converged
