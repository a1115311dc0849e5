"""tracetorch.rl: environments, observation coding, the REFLECT driver, its checkpoints and its errors."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

import tracetorch as tt

gym = pytest.importorskip("gymnasium")

from safetensors.torch import load_file, save_file  # noqa: E402

from tracetorch.rl import (  # noqa: E402
    DELAYED_CUE_ID,
    MissingGymnasium,
    ObservationEncoder,
    ReflectDriver,
    RLConfig,
    RLError,
    evaluate_greedy,
    make_env,
    population_code,
    require_gymnasium,
)

CARTPOLE = {"id": "CartPole-v1", "population": 4, "bounds": [[-2.4, 2.4], [-3, 3], [-0.21, 0.21], [-3.5, 3.5]]}


def cartpole_net(seed: int = 0) -> tt.Sequential:
    torch.manual_seed(seed)
    return tt.Sequential(torch.nn.Linear(16, 16), tt.snn.LIB(16, beta=0.5, quant_fn=tt.functional.round_ste()),
                         torch.nn.Linear(16, 2), tt.snn.LI(2, beta=0.5))


@pytest.mark.filterwarnings("ignore:.*Box observation space (minimum|maximum) value")  # noise is unbounded
def test_delayed_cue_passes_gymnasiums_checker_and_rewards_the_cue():
    from gymnasium.utils.env_checker import check_env

    env = make_env(DELAYED_CUE_ID, {"delay": 3, "wrong_reward": -1.0})
    check_env(env.unwrapped, skip_render_check=True)
    for seed in range(6):
        obs, info = env.reset(seed=seed)
        cue = info["cue"]
        assert obs.tolist() == [float(cue == 0), float(cue == 1), 0.0]
        for _ in range(3):
            obs, r, terminated, truncated, _ = env.step(1 - cue)  # actions before "go" do nothing
            assert (obs.tolist(), r, terminated, truncated) == ([0.0, 0.0, 0.0], 0.0, False, False)
        obs, r, terminated, _, _ = env.step(0)
        assert obs.tolist() == [0.0, 0.0, 1.0] and not terminated
        _, r, terminated, truncated, info = env.step(seed % 2)
        assert (r, terminated, truncated, info["correct"]) == (1.0 if seed % 2 == cue else -1.0, True, False, seed % 2 == cue)
    noisy = make_env(DELAYED_CUE_ID, {"delay": 3, "noise": 0.1})
    check_env(noisy.unwrapped, skip_render_check=True)
    clean_obs, info = env.reset(seed=7)
    noisy_obs, noisy_info = noisy.reset(seed=7)
    assert info == noisy_info and 0 < np.abs(noisy_obs - clean_obs).max() < 1.0
    with pytest.raises(RLError, match="noise must be a finite number >= 0"):
        make_env(DELAYED_CUE_ID, {"noise": -1.0})


def test_population_code_equation_and_encoder_shapes():
    x = torch.tensor([[0.5, -9.0]])
    low, high = torch.tensor([0.0, -1.0]), torch.tensor([1.0, 1.0])
    got = population_code(x, low, high, 5)
    centers = torch.tensor([[0.0, 0.25, 0.5, 0.75, 1.0], [-1.0, -0.5, 0.0, 0.5, 1.0]])
    clamped = torch.tensor([0.5, -1.0]).unsqueeze(-1)  # -9 is clamped to the low end
    torch.testing.assert_close(got, torch.exp(-0.5 * ((clamped - centers) / torch.tensor([[0.25], [0.5]])) ** 2).flatten()[None])
    env = make_env("CartPole-v1")
    enc = ObservationEncoder(env.observation_space, population=4, bounds=CARTPOLE["bounds"], name="rate", num_steps=3)
    spikes = enc(np.zeros(4, np.float32), torch.Generator().manual_seed(0))
    assert spikes.shape == (3, 1, 16) and set(spikes.unique().tolist()) <= {0.0, 1.0}
    with pytest.raises(RLError, match=r"observation dimensions \[1, 3\] have infinite bounds"):
        ObservationEncoder(env.observation_space, population=4)
    onehot = ObservationEncoder(gym.spaces.Discrete(3))
    assert onehot(2).tolist() == [[[0.0, 0.0, 1.0]]]


def _train(driver_args, episodes, split=None, tmp_path=None, evaluate_at=None):
    net = cartpole_net()
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    driver = ReflectDriver(net, opt, driver_args)
    records = []
    for episode in range(episodes):
        if episode == evaluate_at:
            evaluate_greedy(net, driver_args, episodes=2)
        if episode == split:
            tensors, meta = driver.state_dict()
            save_file({**{f"w.{k}": v for k, v in net.state_dict().items()}, **tensors}, tmp_path / "state.safetensors")
            (tmp_path / "meta.json").write_text(json.dumps({"driver": meta, "optim": opt.state_dict()}, default=str))
            optim_state = opt.state_dict()
            net = cartpole_net(seed=99)  # a fresh process: other weights, fresh objects
            opt = torch.optim.Adam(net.parameters(), lr=0.01)
            driver = ReflectDriver(net, opt, driver_args)
            loaded = load_file(tmp_path / "state.safetensors")
            net.load_state_dict({k[2:]: v for k, v in loaded.items() if k.startswith("w.")})
            opt.load_state_dict(optim_state)
            driver.load_state_dict({k: v for k, v in loaded.items() if not k.startswith("w.")},
                                   json.loads((tmp_path / "meta.json").read_text())["driver"])
        records.append(driver.run_episode())
    return net, records


def test_resumed_run_continues_identically(tmp_path):
    config = {"seed": 3, "env": CARTPOLE, "encoder": {"name": "rate", "num_steps": 2},
              "reflect": {"gamma": 0.9, "update_every": 5}}
    net_a, records_a = _train(config, 8)
    net_b, records_b = _train(config, 8, split=4, tmp_path=tmp_path)
    net_c, records_c = _train(config, 8, evaluate_at=3)  # greedy evaluation between episodes changes nothing
    assert records_a == records_b == records_c
    for a, b, c in zip(net_a.state_dict().values(), net_b.state_dict().values(), net_c.state_dict().values()):
        assert torch.equal(a, b) and torch.equal(a, c)
    assert len({r["length"] for r in records_a}) > 1  # the environment's resets really differ


def test_metrics_callback_and_greedy_evaluation():
    seen = []
    config = {"seed": 0, "env": {"id": DELAYED_CUE_ID, "kwargs": {"delay": 2}}, "eval_episodes": 4}
    net = tt.Sequential(torch.nn.Linear(3, 8), tt.snn.RLIB(8), torch.nn.Linear(8, 2), tt.snn.LI(2))
    driver = ReflectDriver(net, torch.optim.SGD(net.parameters(), lr=0.01), config, metrics=seen.append)
    records = driver.train(3)
    assert seen == records and [r["episode"] for r in records] == [1, 2, 3]
    assert {"return", "length", "mean_return_100", "baseline", "env_steps", "updates", "correct"} <= set(records[0])
    assert records[-1]["env_steps"] == 12
    result = evaluate_greedy(net, config)
    assert len(result["returns"]) == 4 and result["lengths"] == [4] * 4 and 0.0 <= result["success_rate"] <= 1.0
    assert result["mean_return"] == pytest.approx(result["success_rate"])  # reward 1 when correct, else 0


def test_gaussian_policy_on_a_box_action_space():
    config = {"env": {"id": "Pendulum-v1", "max_episode_steps": 20}, "reflect": {"head": "gaussian", "std": 0.3}}
    net = tt.Sequential(torch.nn.Linear(3, 8), tt.snn.LIB(8), torch.nn.Linear(8, 1), tt.snn.LI(1))
    driver = ReflectDriver(net, torch.optim.SGD(net.parameters(), lr=1e-3), config)
    record = driver.run_episode()
    assert record["length"] == 20 and record["return"] < 0


class NaNRewardEnv(gym.Env):
    observation_space = gym.spaces.Box(0.0, 1.0, (3,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(3, np.float32), {}

    def step(self, action):
        return np.zeros(3, np.float32), float("nan"), False, False, {}


@pytest.mark.filterwarnings("ignore:.*The reward is a NaN value")
def test_bad_input_gives_one_clear_error(monkeypatch):
    net = tt.Sequential(torch.nn.Linear(16, 8), tt.snn.LIB(8), torch.nn.Linear(8, 2), tt.snn.LI(2))
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    with pytest.raises(RLError, match=r"environment 'CartPol-v1' does not exist in gymnasium; did you mean 'CartPole-v1'"):
        ReflectDriver(net, opt, {"env": {"id": "CartPol-v1"}})
    with pytest.raises(RLError, match=r"categorical policy needs a Discrete action space, but the environment has Box"):
        ReflectDriver(net, opt, {"env": {"id": "Pendulum-v1"}})
    with pytest.raises(RLError, match=r"readout has shape \(1, 2\), but the environment's action space needs \[1, 3\]"):
        two = tt.Sequential(torch.nn.Linear(6, 8), tt.snn.LIB(8), torch.nn.Linear(8, 2), tt.snn.LI(2))
        ReflectDriver(two, torch.optim.SGD(two.parameters(), lr=0.1), {"env": {"id": "Acrobot-v1"}})
    with pytest.raises(RLError, match=r"model does not take the encoded observation \(4 features\)"):
        ReflectDriver(net, opt, {"env": {"id": "CartPole-v1"}})
    with pytest.raises(RLError, match=r"invalid RL config: reflect\.gamma: Input should be less than 1"):
        RLConfig.from_any({"reflect": {"gamma": 1.5}})
    gym.register(id="tracetorch_test/NaNReward-v0", entry_point=NaNRewardEnv)
    small = tt.Sequential(torch.nn.Linear(3, 4), tt.snn.LIB(4), torch.nn.Linear(4, 2), tt.snn.LI(2))
    before = {k: v.clone() for k, v in small.state_dict().items()}
    driver = ReflectDriver(small, torch.optim.SGD(small.parameters(), lr=0.1), {"env": {"id": "tracetorch_test/NaNReward-v0"}})
    with pytest.raises(RLError, match=r"reward is nan at episode 0, step 0"):
        driver.run_episode()
    assert all(torch.equal(before[k], v) for k, v in small.state_dict().items())
    monkeypatch.setitem(sys.modules, "gymnasium", None)
    with pytest.raises(MissingGymnasium, match=r"needs the gymnasium package, which is not installed: pip install"):
        require_gymnasium()
    with pytest.raises(ImportError):
        make_env("CartPole-v1")


def test_driver_state_of_another_environment_is_refused():
    net = cartpole_net()
    driver = ReflectDriver(net, torch.optim.SGD(net.parameters(), lr=0.1), {"env": CARTPOLE})
    tensors, meta = driver.state_dict()
    with pytest.raises(ValueError, match="the state is of environment 'Acrobot-v1', this run uses 'CartPole-v1'"):
        driver.load_state_dict(tensors, {**meta, "env_id": "Acrobot-v1"})
    with pytest.raises(ValueError, match="env_rng is not a numpy bit generator state"):
        driver.load_state_dict(tensors, {**meta, "env_rng": {"bit_generator": "Nope"}})


@pytest.mark.parametrize("name", ["cartpole_reflect", "delayed_cue_reflect"])
def test_experiment_configs_build_and_train(name):
    from importlib import resources

    import yaml

    from tracetorch.rl.driver import build_env

    text = resources.files("tracetorch.configs").joinpath("experiment", f"{name}.yaml").read_text()
    cfg = yaml.safe_load(text)
    assert cfg["trainer"]["learning"] == "reflect"
    config = RLConfig.from_any({**cfg["rl"], "seed": 0})
    torch.manual_seed(0)
    env, encoder, _ = build_env(config)
    env.close()
    net = tt.build_model(cfg["model"], input_shape=[encoder.num_features])  # the trainer sizes it for the coded observation
    optimizer = {"adam": torch.optim.Adam}[cfg["optim"]["name"]](net.parameters(), lr=cfg["optim"]["lr"])
    before = [p.detach().clone() for p in net.parameters()]
    records = ReflectDriver(net, optimizer, config).train(2)
    assert len(records) == 2 and all(r["length"] >= 1 for r in records)
    assert any(not torch.equal(a, p) for a, p in zip(before, net.parameters()))
