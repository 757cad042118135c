"""What scores a motion: text/motion encoders, the perception critic, the joints→SMPL converter,
the batched reward scorer (Eq. 3, 4, 6, 12) and the evaluation metrics."""

from transformers import AutoConfig, AutoModel

from reward_models.critic import MotionCritic, MotionCriticConfig
from reward_models.encoders import load_encoder
from reward_models.guo import GuoEncoder, GuoEncoderConfig
from reward_models.smpl import JointsToSMPL, JointsToSMPLConfig
from reward_models.tmr import TMREncoder, TMREncoderConfig

for _config, _model in ((GuoEncoderConfig, GuoEncoder), (TMREncoderConfig, TMREncoder),
                        (MotionCriticConfig, MotionCritic), (JointsToSMPLConfig, JointsToSMPL)):  # fmt: skip
    AutoConfig.register(_config.model_type, _config)
    AutoModel.register(_config, _model)


def load_evaluator(path):
    """The held-out evaluation encoder (a Guo-style encoder trained apart from the rewards)."""
    return load_encoder(path).eval()


__all__ = [
    "GuoEncoder",
    "GuoEncoderConfig",
    "JointsToSMPL",
    "JointsToSMPLConfig",
    "MotionCritic",
    "MotionCriticConfig",
    "TMREncoder",
    "TMREncoderConfig",
    "load_encoder",
    "load_evaluator",
]
