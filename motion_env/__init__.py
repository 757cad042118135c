"""The world the agent acts in: motion representation, data, tokenizer, and the Gymnasium env.

Importing ``motion_env`` registers the environments, so ``gymnasium.make("MotionRL/TextToMotion-v0")``
(or ``"motion_env:MotionRL/TextToMotion-v0"`` without importing first) works; the entry points
are strings, so nothing heavy is imported until an env is made.
"""

import gymnasium

from motion_env.emission import DEFAULT_MAX_CODES

_ENVS = {
    "MotionRL/TextToMotion-v0": ("motion_env.env:TextToMotionEnv", "motion_env.vector_env:TextToMotionVectorEnv"),
    "MotionRL/TextToMotion-MO-v0": (
        "motion_env.env:MOTextToMotionEnv",
        "motion_env.vector_env:MOTextToMotionVectorEnv",
    ),
}
for _id, (_entry_point, _vector_entry_point) in _ENVS.items():
    if _id not in gymnasium.registry:
        gymnasium.register(id=_id, entry_point=_entry_point, vector_entry_point=_vector_entry_point,
                           max_episode_steps=DEFAULT_MAX_CODES)  # fmt: skip
