import pytest
import torch

from agents.motion_gpt import MotionGPTConfig, MotionGPTForCausalLM
from agents.pipeline import TextToMotionPipeline
from motion_env.tokenizer import MotionVQVAE, MotionVQVAEConfig


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    root = tmp_path_factory.mktemp("bundle")
    torch.manual_seed(0)
    MotionVQVAE(MotionVQVAEConfig(width=16, depth=1, codebook_size=16, code_dim=8)).save_pretrained(root / "vqvae")
    gpt = MotionGPTConfig(codebook_size=16, text_dim=384, hidden_size=32, num_hidden_layers=1,
                          num_attention_heads=2, intermediate_size=64)  # fmt: skip
    MotionGPTForCausalLM(gpt).save_pretrained(root / "gpt")
    return root


@pytest.fixture(scope="module")
def pipe(bundle):
    return TextToMotionPipeline.from_pretrained(bundle)


def test_generates_motion_rows_prompt_major(pipe):
    motion = pipe(["a person waves", "a person jumps"], num_samples=3, seed=0)
    assert motion.texts == ["a person waves"] * 3 + ["a person jumps"] * 3
    assert motion.features.shape[0] == 6 and motion.features.shape[-1] == 263
    assert motion.joints.shape[:2] == motion.features.shape[:2] and motion.joints.shape[-2:] == (22, 3)
    assert torch.equal(motion.lengths, motion.code_lengths * 4)
    assert (motion.code_lengths >= 10).all()  # at least 40 frames, HumanML3D's shortest motion
    again = pipe(["a person waves", "a person jumps"], num_samples=3, seed=0)
    assert torch.equal(again.codes, motion.codes)


def test_reward_token_changes_the_conditioning(pipe):
    plain = pipe.text_encoder.features(["a person waves"])
    guided = pipe.text_encoder.features(["a person waves"], "<perception>")
    assert not torch.allclose(plain, guided)
    with pytest.raises(ValueError, match="<mm>"):
        pipe(["a person waves"], reward_token="<fast>")
    with pytest.raises(ValueError):
        pipe([""])
    with pytest.raises(TypeError):
        pipe("a person waves")


def test_a_recorded_guidance_is_the_default_and_none_turns_it_off(bundle, tmp_path):
    import json

    tuned = tmp_path / "tuned"
    MotionGPTForCausalLM.from_pretrained(bundle / "gpt").save_pretrained(tuned / "gpt")
    mix = {"<mt>": 1.0, "<perception>": 1.0}
    (tuned / "bundle.json").write_text(json.dumps({"base": str(bundle), "reward_token": mix}))
    pipe = TextToMotionPipeline.from_pretrained(tuned)
    assert pipe.reward_token == mix
    seen = []  # the guidance each call encodes its prompts with
    encode = pipe.text_encoder.features
    pipe.text_encoder.features = lambda texts, reward_token=None: (
        seen.append(reward_token) or encode(texts, reward_token)
    )
    default = pipe(["a person waves"], seed=0)
    assert torch.equal(default.codes, pipe(["a person waves"], reward_token=mix, seed=0).codes)
    pipe(["a person waves"], reward_token=None, seed=0)
    assert seen == [mix, mix, None]
    assert TextToMotionPipeline.from_pretrained(bundle).reward_token is None  # a bundle records none
    with pytest.raises(ValueError, match="<fast>"):
        TextToMotionPipeline(pipe.policy, pipe.tokenizer, pipe.text_encoder, reward_token="<fast>")
    with pytest.raises(ValueError, match="own guidance"):
        TextToMotionPipeline(pipe.policy, pipe.tokenizer, pipe.text_encoder, reward_token="default")


def test_mismatched_parts_and_missing_dirs(bundle, pipe, tmp_path):
    other = MotionVQVAE(MotionVQVAEConfig(width=16, depth=1, codebook_size=32, code_dim=8))
    with pytest.raises(ValueError, match="codes"):
        TextToMotionPipeline(pipe.policy, other, pipe.text_encoder)
    with pytest.raises(FileNotFoundError, match="gpt"):
        TextToMotionPipeline.from_pretrained(tmp_path)
