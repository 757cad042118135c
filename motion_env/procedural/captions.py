"""Caption grammar: subjects, connectives, counts, and the ``word/POS`` field.

Every word the grammar can emit is in :data:`LEXICON` with its lemma and universal POS
tag, so HumanML3D's ``caption#lemma/POS ...#start#end`` line is written without a tagger
(HumanML3D's tokens are spaCy lemmas with universal tags, punctuation dropped).
"""

from __future__ import annotations

import re

import numpy as np

SUBJECTS = ("a person", "someone", "a man", "a woman", "the person", "a figure", "the man", "the woman", "a human")
CONNECTIVES = (" then ", ", then ", " and then ", ", and then ", " and after that ", ", after that ")
COUNT_WORDS = {1: "once", 2: "twice", 3: "three times", 4: "four times"}
NUMBER_WORDS = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight"}


def _entries(pos: str, words: str) -> dict[str, tuple[str, str]]:
    """``"walks:walk waves:wave left"`` -> {surface: (lemma, pos)}; a bare word is its own lemma."""
    out = {}
    for item in words.split():
        surface, _, lemma = item.partition(":")
        out[surface] = (lemma or surface, pos)
    return out


_NOUNS = _entries("NOUN", """person man:man woman figure human hand:hand hands:hand arm:arm arms:arm leg:leg legs:leg
    foot:foot feet:foot fist:fist knee:knee knees:knee toes:toe toe:toe head:head side:side sides:side
    circle:circle circles:circle times:time time steps:step step:step squats:squat squat lunge lunges:lunge
    kick kicks:kick punch punches:punch ball bow guitar air jog place spot chair degrees:degree direction pace
    hello turn jump fists:fist shoulder shoulders:shoulder height ground floor way body waist front line curve
    stretch""")
LEXICON: dict[str, tuple[str, str]] = {
    **_entries("DET", "a an the his her their its both each every some all"),
    **_entries("PRON", "someone they it them he she something"),
    **_NOUNS,
    **_entries("VERB", """walks:walk runs:run jogs:jog sprints:sprint jumps:jump hops:hop leaps:leap squats:squat
        lunges:lunge sits:sit stands:stand waves:wave raises:raise lifts:lift puts:put claps:clap punches:punch
        kicks:kick throws:throw bows:bow turns:turn stretches:stretch leans:lean bends:bend touches:touch reaches:reach
        makes:make rotates:rotate circles:circle swings:swing plays:play strums:strum pretends:pretend takes:take
        steps:step moves:move does:do holds:hold gets:get spins:spin shuffles:shuffle marches:march stomps:stomp
        lowers:lower brings:bring bent:bend face faces:face winds:wind goes:go sidesteps:sidestep waits:wait remains:remain stays:stay touch curving:curve
        play:play sitting:sit throw:throw wave:wave lower:lower"""),
    **_entries("ADJ", "left right full quick overhead slow fast small big high low several few other still straight ready overhead"),
    **_entries("ADV", """forward forwards:forward backward backwards:backward quickly slowly once twice up down back
        around ahead sideways together again briefly then afterwards aside out over fast"""),
    **_entries("ADP", "with to on in at of over above into from by like around for"),
    **_entries("CCONJ", "and or"),
    **_entries("NUM", "one two three four five six seven eight ninety"),
    **_entries("PART", "as"),
    **_entries("SCONJ", "while if after as"),
}
# Words that belong to several classes resolve by position in a real tagger; the grammar
# only ever uses these in one role, given here.
LEXICON.update({"after": ("after", "ADP"), "that": ("that", "PRON"), "as": ("as", "ADP"), "if": ("if", "SCONJ")})

_WORD = re.compile(r"[a-z]+")


_NOUN_CONTEXT = {"DET", "NUM", "ADJ", "VERB"}


def pos_tokens(caption: str) -> list[str]:
    """HumanML3D's token field for a caption: ``lemma/POS`` per word, punctuation dropped.

    Words that are nouns and verbs alike ("kicks", "steps", "circles") are nouns after a
    determiner, number, adjective or verb ("two kicks", "makes circles"), verbs otherwise.
    """
    tokens, previous = [], None
    for word in _WORD.findall(caption.lower()):
        if word not in LEXICON:
            raise KeyError(f"caption word {word!r} is not in the procedural lexicon (caption: {caption!r})")
        lemma, pos = LEXICON[word]
        if word in _NOUNS and (pos != "NOUN") and previous in _NOUN_CONTEXT:
            lemma, pos = _NOUNS[word]
        tokens.append(f"{lemma}/{pos}")
        previous = pos
    return tokens


def times(count: int) -> str:
    return COUNT_WORDS[count]


def number(count: int) -> str:
    return NUMBER_WORDS[count]


def sentence(rng: np.random.Generator, phrases: list[str]) -> str:
    """Join one verb phrase per segment into a caption: subject + phrase (+ connective + phrase)..."""
    text = str(rng.choice(SUBJECTS)) + " " + phrases[0]
    for phrase in phrases[1:]:
        text += str(rng.choice(CONNECTIVES)) + phrase
    return text


def caption_line(caption: str, start: float = 0.0, end: float = 0.0) -> str:
    """One line of a HumanML3D ``texts/<id>.txt`` file."""
    return f"{caption}#{' '.join(pos_tokens(caption))}#{start:.1f}#{end:.1f}"
