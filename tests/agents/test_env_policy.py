"""The KV-cached policy acting in the vector env: one position per env per step, same logits as a full forward."""

import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode

from agents.env_policy import CachedPolicyActor
from agents.motion_gpt import MotionGPTConfig, MotionGPTForCausalLM, MotionKVCache, RowKVCache
from agents.pipeline import default_checkpoint_dir
from motion_env.emission import default_parts
from motion_env.vector_env import TextToMotionVectorEnv

PROMPTS = ["a person walks forward", "a person jumps twice", "someone waves with the right hand"]
NUM_ENVS, MAX_STEPS = 4, 6


@pytest.fixture(scope="module")
def parts():
    return default_parts()


@pytest.fixture(scope="module")
def policy() -> MotionGPTForCausalLM:
    return MotionGPTForCausalLM.from_pretrained(default_checkpoint_dir() / "gpt", dtype=torch.float32).eval()


@pytest.fixture
def tiny() -> MotionGPTForCausalLM:
    torch.manual_seed(0)
    config = MotionGPTConfig(codebook_size=16, text_dim=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                             intermediate_size=64, max_codes=10, dropout=0.0)  # fmt: skip
    return MotionGPTForCausalLM(config).eval()


def make_env(parts, autoreset_mode=AutoresetMode.NEXT_STEP) -> TextToMotionVectorEnv:
    return TextToMotionVectorEnv(NUM_ENVS, PROMPTS, parts=parts, max_episode_steps=MAX_STEPS,
                                 autoreset_mode=autoreset_mode)  # fmt: skip


def observation(config: MotionGPTConfig, counts: list[int], width: int = 6, seed: int = 0) -> dict:
    """A vector-env observation of len(counts) rows holding counts[i] random codes each."""
    rng = np.random.default_rng(seed)
    tokens = np.full((len(counts), width), config.pad_token_id, dtype=np.int64)
    for i, n in enumerate(counts):
        tokens[i, :n] = rng.integers(0, config.codebook_size, n)
    text = np.random.default_rng(100).standard_normal((len(counts), config.text_dim)).astype(np.float32)
    return {"text": text, "tokens": tokens, "mask": (tokens != config.pad_token_id).astype(np.int8)}


def test_row_cache_in_lock_step_matches_motion_kv_cache(tiny):
    text = torch.randn(3, 8, generator=torch.Generator().manual_seed(1))
    codes = torch.randint(0, 16, (3, 10), generator=torch.Generator().manual_seed(2))
    logits = {}
    for name, cache in (("motion", MotionKVCache(tiny.config, 3)), ("row", RowKVCache(tiny.config, 3))):
        out = tiny(codes[:, :3], text, cache=cache)  # text + 3 codes
        pieces = [out.logits]
        for start, stop in [(3, 4), (4, 5), (5, 8), (8, 10)]:  # single steps and multi-code chunks
            pieces.append(tiny(codes[:, start:stop], cache=cache).logits)
        logits[name] = torch.cat(pieces, dim=1)
    assert torch.equal(RowKVCache(tiny.config, 3).lengths, torch.zeros(2, 3, dtype=torch.long))
    torch.testing.assert_close(logits["row"], logits["motion"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(logits["row"], tiny(codes, text).logits, rtol=1e-5, atol=1e-5)


def test_cached_logits_equal_a_full_recompute_for_every_row(parts, policy):
    env, end = make_env(parts), policy.config.end_token_id
    actor = CachedPolicyActor(policy, NUM_ENVS, generator=torch.Generator().manual_seed(0))
    obs, _ = env.reset(seed=0)
    rng, done, lengths, compared = np.random.default_rng(0), None, set(), 0
    for _ in range(40):
        step = actor.step(obs, done)
        for i in np.flatnonzero(step.acting):
            n = int(obs["mask"][i].sum())
            with torch.no_grad():
                full = policy(input_ids=torch.from_numpy(obs["tokens"][i : i + 1, :n]),
                              text_features=torch.from_numpy(obs["text"][i : i + 1])).logits[0, -1]  # fmt: skip
            torch.testing.assert_close(step.logits[i], full, rtol=1e-5, atol=1e-5)
            compared += 1
        actions = np.where(rng.random(NUM_ENVS) < 0.25, end, step.actions)  # END at random steps
        obs, _, terminated, truncated, info = env.step(actions)
        done = terminated | truncated
        lengths.update(info["num_codes"][done].tolist())
    assert compared > 100
    assert {0, MAX_STEPS} <= lengths and len(lengths) >= 4, "episodes should end at different steps"


def run(parts, policy, autoreset_mode, seed: int, steps: int) -> np.ndarray:
    """Actions (steps, n) of a seeded actor driving the vector env, resetting ended envs as the mode asks."""
    env = make_env(parts, autoreset_mode)
    actor = CachedPolicyActor(policy, NUM_ENVS, autoreset_mode=autoreset_mode,
                              generator=torch.Generator().manual_seed(seed))  # fmt: skip
    obs, _ = env.reset(seed=0)
    done, reset_rows, history = np.zeros(NUM_ENVS, dtype=bool), None, []
    for _ in range(steps):
        step = actor.step(obs, reset_rows=reset_rows)  # boundaries from the observations alone (and reset_mask)
        if autoreset_mode == AutoresetMode.NEXT_STEP:
            assert np.array_equal(step.acting, ~done), "the actor should act except on the envs' reset steps"
        else:
            assert step.acting.all()
        history.append(step.actions)
        obs, _, terminated, truncated, _ = env.step(step.actions)
        done, reset_rows = terminated | truncated, None
        if autoreset_mode == AutoresetMode.DISABLED and done.any():
            obs, _ = env.reset(options={"reset_mask": done})
            reset_rows = done
    return np.stack(history)


@pytest.mark.parametrize("autoreset_mode", [AutoresetMode.NEXT_STEP, AutoresetMode.DISABLED])
def test_seeded_actor_drives_the_vector_env_reproducibly(parts, policy, autoreset_mode):
    first = run(parts, policy, autoreset_mode, seed=0, steps=200)
    assert first.shape == (200, NUM_ENVS) and ((first >= 0) & (first <= policy.config.end_token_id)).all()
    assert np.array_equal(run(parts, policy, autoreset_mode, seed=0, steps=200), first)
    assert not np.array_equal(run(parts, policy, autoreset_mode, seed=1, steps=20), first[:20])


def test_each_step_forwards_one_position_per_row(parts, policy):
    env, actor = make_env(parts), CachedPolicyActor(policy, NUM_ENVS, generator=torch.Generator().manual_seed(0))
    shapes = []
    handle = policy.transformer.h[0].register_forward_pre_hook(lambda module, args: shapes.append(args[0].shape))
    obs, _ = env.reset(seed=0)
    before, grew = actor.cache.lengths.clone(), 0
    try:
        for _ in range(30):
            step = actor.step(obs)
            after = actor.cache.lengths.clone()  # (nl, n)
            counts = torch.from_numpy(obs["mask"].sum(1, dtype=np.int64))
            acting = torch.from_numpy(step.acting)
            assert (after[:, acting] == counts[acting] + 1).all(), "an acting row holds its text and codes"
            continuing = acting & (counts > 0)
            assert (after[:, continuing] == before[:, continuing] + 1).all()
            grew += int(continuing.sum())
            before = after
            obs, *_ = env.step(step.actions)
    finally:
        handle.remove()
    assert grew > 50
    assert shapes == [(NUM_ENVS, 1, policy.config.hidden_size)] * 30


def test_episode_boundaries_from_observations_and_flags(tiny):
    config, end = tiny.config, tiny.config.end_token_id
    actor = CachedPolicyActor(tiny, 3, generator=torch.Generator().manual_seed(0))
    assert actor.step(observation(config, [0, 0, 0])).acting.all()  # first call: every row begins
    step = actor.step(observation(config, [1, 0, 1]))  # row 1 emitted END as its first action
    assert step.acting.tolist() == [True, False, True] and step.actions[1] == 0 and step.logprobs[1] == 0
    assert actor.step(observation(config, [2, 0, 2])).acting.all()  # row 1 begins again (NEXT_STEP reset step)
    step = actor.step(observation(config, [3, 1, 0]))  # row 2 dropped to 0 codes: reset, a new episode
    assert step.acting.all() and actor.cache.lengths[0].tolist() == [4, 2, 1]
    step = actor.step(observation(config, [0, 2, 0]), reset_rows=np.array([True, False, True]))
    assert step.acting.all() and actor.cache.lengths[0].tolist() == [1, 3, 1]
    step = actor.step(observation(config, [1, 2, 1]), done=np.array([False, True, False]))  # row 1 ended with END
    assert step.acting.tolist() == [True, False, True]
    assert (step.logprobs[[0, 2]] < 0).all() and (step.actions <= end).all()

    disabled = CachedPolicyActor(tiny, 2, autoreset_mode=AutoresetMode.DISABLED)
    disabled.step(observation(config, [0, 0]))
    assert disabled.step(observation(config, [0, 1])).acting.all()  # row 0 was reset after an immediate END
    assert disabled.cache.lengths[0].tolist() == [1, 2]


def test_bad_input_raises_value_errors(tiny):
    config = tiny.config
    actor = CachedPolicyActor(tiny, 2)
    with pytest.raises(ValueError, match=r"text \(2, 8\).*got text \(3, 8\)"):
        actor.step(observation(config, [0, 0, 0]))
    with pytest.raises(ValueError, match="run to 11 codes; the policy holds 10"):
        actor.step(observation(config, [0, 0], width=11))
    with pytest.raises(ValueError, match=r"envs \[1\] begin an episode but hold \[2\] codes, not \[0\]"):
        actor.step(observation(config, [0, 2]))
    actor.reset()
    actor.step(observation(config, [0, 0]))
    with pytest.raises(ValueError, match=r"envs \[0\] continue their episodes but hold \[3\] codes, not \[1\]"):
        actor.step(observation(config, [3, 1]))  # an observation was skipped
    with pytest.raises(ValueError, match=r"done must be a \(2,\) bool array"):
        actor.step(observation(config, [1, 1]), done=np.array([1, 0]))
    with pytest.raises(ValueError, match="temperature must be > 0"):
        CachedPolicyActor(tiny, 2, temperature=0.0)
    with pytest.raises(ValueError, match="SAME_STEP is not supported"):
        CachedPolicyActor(tiny, 2, autoreset_mode=AutoresetMode.SAME_STEP)
