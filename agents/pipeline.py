"""Text in, motion out: the sentence encoder, MotionGPT and the VQ-VAE decoder as one object.

>>> pipe = TextToMotionPipeline.from_pretrained()          # the default checkpoints
>>> motion = pipe(["a person waves with the left hand"], num_samples=2, seed=0)
>>> motion.joints.shape                                     # (2, T, 22, 3)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from agents.motion_gpt import MotionGPTForCausalLM
from agents.text_encoder import GuidedTextEncoder, SentenceEncoder
from motion_env.features import features_to_joints
from motion_env.tokenizer import MotionVQVAE

DEFAULT_CHECKPOINTS = Path(__file__).resolve().parents[1] / "checkpoints" / "default"
MIN_CODES = 10  # 40 frames: the shortest motion HumanML3D keeps
BUNDLE_RECORD = "bundle.json"  # in a fine-tuned output: {"base": <bundle tuned from>, "reward_token": <guidance>}
OWN_GUIDANCE = "default"  # ``reward_token`` value meaning: the pipeline's own guidance


def default_checkpoint_dir() -> Path:
    """The default bundle shipped in the repository (``checkpoints/default``)."""
    if not (DEFAULT_CHECKPOINTS / "gpt").is_dir():
        raise FileNotFoundError(
            f"{DEFAULT_CHECKPOINTS}: the default checkpoints are missing; rebuild them with "
            "`python recipes/build_default.py` or pass a model directory"
        )
    return DEFAULT_CHECKPOINTS


def base_bundle(model_dir: str | Path) -> Path:
    """The bundle a fine-tuned model directory builds on (named in its ``bundle.json``), else the directory."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise FileNotFoundError(f"{model_dir}: no such model directory; pass a bundle or a fine-tuned output directory")
    record = model_dir / BUNDLE_RECORD
    if not record.is_file():
        return model_dir
    base = Path(json.loads(record.read_text())["base"])
    return base if base.is_absolute() else (model_dir / base).resolve()


def default_guidance(model_dir: str | Path):
    """The reward-token guidance a model directory samples with by default: its ``bundle.json``'s
    ``reward_token`` (a fine-tuned output records the tokens it was trained with), else None."""
    record = Path(model_dir) / BUNDLE_RECORD
    if not record.is_file():
        return None
    return json.loads(record.read_text()).get("reward_token")


def load_policy(model_dir: str | Path) -> MotionGPTForCausalLM:
    """The generator of a bundle (``gpt/``) or of a fine-tuned output: its ``gpt/``, or LoRA ``adapter/``
    merged into the base bundle's ``gpt/``."""
    model_dir = Path(model_dir)
    if (model_dir / "gpt").is_dir():
        return MotionGPTForCausalLM.from_pretrained(model_dir / "gpt", dtype=torch.float32)
    if (model_dir / "adapter").is_dir():
        from peft import PeftModel

        policy = MotionGPTForCausalLM.from_pretrained(base_bundle(model_dir) / "gpt", dtype=torch.float32)
        return PeftModel.from_pretrained(policy, model_dir / "adapter").merge_and_unload()
    raise FileNotFoundError(f"{model_dir}: expected a 'gpt' model directory (or LoRA 'adapter') inside")


@dataclass
class GeneratedMotion:
    """A batch of generated motions; rows are padded past their own length."""

    texts: list[str]
    codes: torch.Tensor  # (B, N) long, PAD past each row's end
    code_lengths: torch.Tensor  # (B,)
    features: torch.Tensor  # (B, 4N, 263) raw (un-normalised) features
    lengths: torch.Tensor  # (B,) frames
    joints: torch.Tensor  # (B, 4N, 22, 3)


class TextToMotionPipeline:
    """Generate motion for prompts, optionally guided by reward-specific tokens (Eq. 11).

    ``reward_token`` is the guidance used when a call does not name one: None (plain text features),
    a token, or a ``{token: weight}`` mix. A MotionRL fine-tune is trained on token-guided features
    only, so its output directory records an equal mix of its training tokens and ``from_pretrained``
    uses it; a call's ``reward_token=None`` still samples without guidance.
    """

    def __init__(self, policy: MotionGPTForCausalLM, tokenizer: MotionVQVAE, text_encoder: GuidedTextEncoder,
                 reward_token=None):  # fmt: skip
        if policy.config.codebook_size != tokenizer.config.codebook_size:
            raise ValueError(
                f"policy predicts {policy.config.codebook_size} codes but the tokenizer has "
                f"{tokenizer.config.codebook_size}"
            )
        if policy.config.text_dim != text_encoder.dim:
            raise ValueError(
                f"policy expects {policy.config.text_dim}-D text features, encoder gives {text_encoder.dim}"
            )
        self.policy, self.tokenizer, self.text_encoder = policy.eval(), tokenizer.eval(), text_encoder
        if reward_token == OWN_GUIDANCE:
            raise ValueError(f"{OWN_GUIDANCE!r} means a pipeline's own guidance; give None, a token or a mix")
        GuidedTextEncoder._token_mix(reward_token)  # an unknown token or a bad mix fails here, not at the first call
        self.reward_token = reward_token

    @classmethod
    def from_pretrained(cls, model_dir: str | Path | None = None, text_encoder_path: str | Path | None = None,
                        alpha: float | None = None) -> TextToMotionPipeline:  # fmt: skip
        """Load ``model_dir/gpt`` and ``model_dir/vqvae`` (the default bundle when None)."""
        root = Path(model_dir) if model_dir is not None else default_checkpoint_dir()
        base = base_bundle(root)
        policy = load_policy(root)
        if not (base / "vqvae").is_dir():
            raise FileNotFoundError(f"{base}: expected a 'vqvae' model directory inside")
        tokenizer = MotionVQVAE.from_pretrained(base / "vqvae", dtype=torch.float32)
        guided = GuidedTextEncoder(SentenceEncoder(text_encoder_path), **({} if alpha is None else {"alpha": alpha}))
        return cls(policy, tokenizer, guided, reward_token=default_guidance(root))

    @torch.no_grad()
    def decode(self, codes: torch.Tensor, code_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Codes (B, N) -> raw features (B, 4N, D) and frame lengths (B,). Rows of 0 codes give 0 frames."""
        device = self.tokenizer.device
        return self.tokenizer.decode_motion(codes.to(device), code_lengths.to(device))

    @torch.no_grad()
    def __call__(self, texts: list[str], *, num_samples: int = 1, reward_token=OWN_GUIDANCE, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float | None = None, do_sample: bool = True,
                 seed: int | None = None) -> GeneratedMotion:  # fmt: skip
        """Generate ``num_samples`` motions per prompt (rows ordered prompt-major).

        ``reward_token``: the pipeline's own guidance by default; None for none, a token or a mix otherwise.
        """
        if isinstance(texts, str):
            raise TypeError("texts must be a list of strings, not a single string")
        if reward_token == OWN_GUIDANCE:
            reward_token = self.reward_token
        texts = [t for t in texts for _ in range(num_samples)]
        device = self.policy.device
        text_features = self.text_encoder.features(texts, reward_token).to(device)
        generator = torch.Generator(device=device).manual_seed(seed) if seed is not None else None
        codes, code_lengths = self.policy.generate(text_features, do_sample=do_sample, temperature=temperature,
                                                   top_k=top_k, top_p=top_p, generator=generator, min_codes=MIN_CODES)  # fmt: skip
        features, lengths = self.decode(codes, code_lengths)
        return GeneratedMotion(texts, codes, code_lengths, features, lengths, features_to_joints(features))
