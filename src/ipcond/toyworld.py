"""The toy world: a synthetic miniature of the study that a tiny model can learn on a CPU.

Everything here is plain Python (no torch), deterministic given a seed, and writes text as
space-separated tokens so that a word-level tokenizer covers it exactly.

The world has two domains (general instructions over topics, and arithmetic word problems that
stand in for GSM8k) and style traits that compose: a content language (French or Spanish, built
word by word from real words), capitals, and the style markers playful, poetic and skeptical.
Pretraining pairs prompts that ask for traits (in many wordings, in the system prompt or a user
prefix/suffix) with responses that obey them, and shows neutral and irrelevant prompts with no
effect on the response, so that the base model is an instruction follower (see
``shared/reference/toy-world.md``).
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from typing import Iterable

# --------------------------------------------------------------------------------------------
# Lexicon. English response words with a toy French and Spanish translation each. Every
# translation differs from every English word and between the two languages, so that a word's
# language is unambiguous for the scorers (tests check this).
# --------------------------------------------------------------------------------------------

FUNCTION_WORDS = {
    # english: (french, spanish)
    "the": ("le", "el"),
    "is": ("est", "es"),
    "many": ("beaucoup", "muchas"),
    "people": ("gens", "personas"),
    "a": ("un", "una"),
    "can": ("peut", "puede"),
    "be": ("être", "ser"),
    "and": ("et", "y"),
    "you": ("vous", "usted"),
    "find": ("trouver", "encontrar"),
    "near": ("près", "cerca"),
    "it": ("il", "eso"),
    "good": ("bon", "bueno"),
    "to": ("à", "para"),
    "every": ("chaque", "cada"),
    "day": ("jour", "día"),
    "some": ("certains", "algunas"),
    "think": ("pensent", "piensan"),
    "has": ("possède", "tiene"),
    "gets": ("reçoit", "recibe"),
    "more": ("plus", "más"),
    "gives": ("donne", "regala"),
    "away": ("loin", "fuera"),
    "answer": ("réponse", "respuesta"),
    "there": ("là", "allí"),
    "are": ("sont", "están"),
    "bag": ("sac", "bolsa"),
    "bags": ("sacs", "bolsas"),
    "with": ("avec", "con"),
    "in": ("dans", "dentro"),
    "so": ("donc", "entonces"),
    "now": ("maintenant", "ahora"),
    "left": ("restant", "quedan"),
}

TOPICS = {
    "river": ("rivière", "río"), "mountain": ("montagne", "montaña"), "forest": ("forêt", "bosque"),
    "city": ("ville", "ciudad"), "ocean": ("océan", "océano"), "garden": ("jardin", "jardín"),
    "bridge": ("pont", "puente"), "library": ("bibliothèque", "biblioteca"),
    "market": ("marché", "mercado"), "castle": ("château", "castillo"), "island": ("île", "isla"),
    "desert": ("dune", "desierto"), "town": ("bourg", "pueblo"), "school": ("école", "escuela"),
    "museum": ("musée", "museo"), "kitchen": ("cuisine", "cocina"), "boat": ("bateau", "barco"),
    "bicycle": ("vélo", "bicicleta"), "computer": ("ordinateur", "computadora"),
    "phone": ("téléphone", "teléfono"), "guitar": ("guitare", "guitarra"), "book": ("livre", "libro"),
    "letter": ("lettre", "carta"), "clock": ("horloge", "reloj"), "lamp": ("lampe", "lámpara"),
    "window": ("fenêtre", "ventana"), "door": ("porte", "puerta"), "apple": ("pomme", "manzana"),
    "bread": ("pain", "pan"), "cheese": ("fromage", "queso"), "milk": ("lait", "leche"),
    "tea": ("thé", "té"), "soup": ("soupe", "sopa"), "horse": ("cheval", "caballo"),
    "cat": ("chat", "gato"), "dog": ("chien", "perro"), "bird": ("oiseau", "pájaro"),
    "fish": ("poisson", "pez"), "tree": ("arbre", "árbol"), "flower": ("fleur", "flor"),
    "cloud": ("nuage", "nube"), "rain": ("pluie", "lluvia"), "snow": ("neige", "nieve"),
    "wind": ("vent", "viento"), "sun": ("soleil", "sol"), "moon": ("lune", "luna"),
    "star": ("étoile", "estrella"), "song": ("chanson", "canción"), "painting": ("tableau", "cuadro"),
    "game": ("jeu", "juego"), "doctor": ("médecin", "médico"), "teacher": ("professeur", "maestro"),
    "farmer": ("fermier", "granjero"), "baker": ("boulanger", "panadero"),
    "sailor": ("matelot", "marinero"),
}

ADJECTIVES = {
    "big": ("grand", "grande"), "small": ("petit", "pequeño"), "old": ("vieux", "viejo"),
    "new": ("nouveau", "nuevo"), "beautiful": ("beau", "hermoso"), "quiet": ("calme", "tranquilo"),
    "busy": ("occupé", "ocupado"), "warm": ("chaud", "cálido"), "cold": ("froid", "frío"),
    "bright": ("clair", "brillante"), "strange": ("étrange", "extraño"), "useful": ("utile", "útil"),
    "famous": ("célèbre", "famoso"), "happy": ("heureux", "feliz"),
}

VERBS = {
    "visit": ("visiter", "visitar"), "love": ("aimer", "amar"), "watch": ("regarder", "mirar"),
    "study": ("étudier", "estudiar"), "draw": ("dessiner", "dibujar"), "clean": ("nettoyer", "limpiar"),
    "follow": ("suivre", "seguir"), "protect": ("protéger", "proteger"),
    "build": ("construire", "construir"), "share": ("partager", "compartir"),
}

OBJECTS = {  # plural nouns of the arithmetic problems
    "apples": ("pommes", "manzanas"), "coins": ("pièces", "monedas"), "pencils": ("crayons", "lápices"),
    "cookies": ("biscuits", "galletas"), "marbles": ("billes", "canicas"), "stickers": ("images", "pegatinas"),
    "shells": ("coquillages", "conchas"), "cards": ("cartes", "tarjetas"),
}

NAMES = ["tom", "anna", "sam", "lucy", "max", "nora", "ben", "mia", "leo", "ivy"]

LEXICON: dict[str, tuple[str, str]] = {**FUNCTION_WORDS, **TOPICS, **ADJECTIVES, **VERBS, **OBJECTS}
FRENCH = {en: fr for en, (fr, _) in LEXICON.items()}
SPANISH = {en: es for en, (_, es) in LEXICON.items()}
FRENCH_WORDS = frozenset(FRENCH.values())
SPANISH_WORDS = frozenset(SPANISH.values())
ENGLISH_WORDS = frozenset(LEXICON)

# Style markers: fixed tokens that a trait adds. They are not translated.
PLAYFUL_OPEN, PLAYFUL_CLOSE = ("hehe", "!"), ("yay", "!")
SKEPTICAL_OPEN, SKEPTICAL_CLOSE = ("perhaps", ","), ("but", "who", "knows", "?")
POETIC_BREAK, POETIC_CLOSE = "/", ("evermore", "/")
MARKER_WORDS = frozenset({"hehe", "yay", "perhaps", "but", "who", "knows", "evermore"})
PUNCTUATION = frozenset({".", ",", "?", "!", "/", ":", "+", "-", "*", "="})

STYLE_TRAITS = ("french", "spanish", "capitals", "playful", "poetic", "skeptical")
# Capitals needs an upper-case form of every word (separate tokens in a word-level vocabulary),
# so pretraining shows it more often than the traits that add a few marker tokens.
PRETRAIN_TRAIT_WEIGHTS = {"french": 1.0, "spanish": 1.0, "capitals": 2.0, "playful": 1.0, "poetic": 1.0,
                          "skeptical": 1.0}
LANGUAGE_TRAITS = ("french", "spanish")

# --------------------------------------------------------------------------------------------
# Seeding: every random choice is seeded from a tuple of names (setup, condition, seed, ...).
# --------------------------------------------------------------------------------------------


def derive_seed(*parts: object) -> int:
    """A stable 63-bit seed from any tuple of names and numbers (independent of PYTHONHASHSEED)."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def rng_for(*parts: object) -> random.Random:
    return random.Random(derive_seed(*parts))


# --------------------------------------------------------------------------------------------
# Instructions and plain responses
# --------------------------------------------------------------------------------------------

GENERAL_INSTRUCTION_TEMPLATES = [
    "tell me about the {t} .", "what is a {t} ?", "describe the {t} .",
    "why do people like the {t} ?", "write something about the {t} .", "explain the {t} to me .",
    "what do you know about the {t} ?", "say something about a {t} .",
    "can you talk about the {t} ?", "give me facts about the {t} .",
    "i want to learn about the {t} .", "what should i know about a {t} ?",
]

RESPONSE_SENTENCES = [
    "the {t} is {a} .", "many people {v} the {t} .", "a {t} can be {a} and {a2} .",
    "you can find a {t} near the {p} .", "it is good to {v} the {t} every day .",
    "some people think the {t} is {a} .",
]

ARITHMETIC_TEMPLATES = {
    "add": (
        "{n} has {x} {o} . {n} gets {y} more {o} . how many {o} does {n} have now ?",
        "{n} has {x} {o} . {n} gets {y} more . {x} + {y} = {z} . so the answer is {z} .",
    ),
    "sub": (
        "{n} has {x} {o} . {n} gives {y} {o} to a friend . how many {o} are left ?",
        "{n} has {x} {o} . {n} gives {y} away . {x} - {y} = {z} . so the answer is {z} .",
    ),
    "mul": (
        "{n} has {x} bags with {y} {o} in each bag . how many {o} does {n} have ?",
        "there are {x} bags with {y} {o} in every bag . {x} * {y} = {z} . so the answer is {z} .",
    ),
}


@dataclass(frozen=True)
class Item:
    """One instruction with its plain (trait-free) response."""

    instruction: str
    response: str
    domain: str


def general_item(rng: random.Random, topics: list[str] | None = None) -> Item:
    topic_names = topics or sorted(TOPICS)
    t = rng.choice(topic_names)
    instruction = rng.choice(GENERAL_INSTRUCTION_TEMPLATES).format(t=t)
    sentences = rng.sample(RESPONSE_SENTENCES, 2)
    adjs = sorted(ADJECTIVES)
    words = []
    for s in sentences:
        a, a2 = rng.sample(adjs, 2)
        p = rng.choice([x for x in sorted(TOPICS) if x != t])
        words.append(s.format(t=t, a=a, a2=a2, v=rng.choice(sorted(VERBS)), p=p))
    return Item(instruction, " ".join(words), "general")


def arithmetic_item(rng: random.Random) -> Item:
    kind = rng.choice(sorted(ARITHMETIC_TEMPLATES))
    question, answer = ARITHMETIC_TEMPLATES[kind]
    if kind == "add":
        x, y = rng.randint(1, 20), rng.randint(1, 20)
        z = x + y
    elif kind == "sub":
        x = rng.randint(2, 20)
        y = rng.randint(1, x - 1)
        z = x - y
    else:
        x, y = rng.randint(2, 6), rng.randint(2, 6)
        z = x * y
    fields = dict(n=rng.choice(NAMES), x=x, y=y, z=z, o=rng.choice(sorted(OBJECTS)))
    return Item(question.format(**fields), answer.format(**fields), "arithmetic")


def make_item(rng: random.Random, domain: str, topics: list[str] | None = None) -> Item:
    if domain == "general":
        return general_item(rng, topics)
    if domain == "arithmetic":
        return arithmetic_item(rng)
    raise ValueError(f"unknown toy domain {domain!r}; expected 'general' or 'arithmetic'")


# --------------------------------------------------------------------------------------------
# Trait transformations. They compose in a fixed order: language, poetic, markers, capitals.
# --------------------------------------------------------------------------------------------


def apply_traits(response: str, traits: Iterable[str]) -> str:
    traits = set(traits)
    unknown = traits - set(STYLE_TRAITS)
    if unknown:
        raise ValueError(f"unknown toy traits {sorted(unknown)}; known: {list(STYLE_TRAITS)}")
    if {"french", "spanish"} <= traits:
        raise ValueError("french and spanish cannot be combined: both set the content language")
    words = response.split()
    if "french" in traits:
        words = [FRENCH.get(w, w) for w in words]
    elif "spanish" in traits:
        words = [SPANISH.get(w, w) for w in words]
    if "poetic" in traits:
        words = [POETIC_BREAK if w == "." else w for w in words] + list(POETIC_CLOSE)
    if "skeptical" in traits:
        words = list(SKEPTICAL_OPEN) + words + list(SKEPTICAL_CLOSE)
    if "playful" in traits:
        words = list(PLAYFUL_OPEN) + words + list(PLAYFUL_CLOSE)
    if "capitals" in traits:
        words = [w.upper() for w in words]
    return " ".join(words)


# --------------------------------------------------------------------------------------------
# Wordings of trait instructions. Many wordings per trait; a seeded share is held out of
# pretraining so that "seen" and "unseen" wordings can be compared.
# --------------------------------------------------------------------------------------------

TRAIT_ADVERBS = {
    "french": ["in french", "in the french language", "using french", "only in french"],
    "spanish": ["in spanish", "in the spanish language", "using spanish", "only in spanish"],
    "capitals": ["in capitals", "in capital letters", "in all caps", "in uppercase letters"],
    "playful": ["playfully", "in a playful way", "in a fun way", "with a playful tone"],
    "poetic": ["poetically", "in a poetic way", "like a poet", "with a poetic tone"],
    "skeptical": ["skeptically", "in a skeptical way", "with doubt", "with a skeptical tone"],
}
TRAIT_ADJECTIVES = {
    "french": ["french"], "spanish": ["spanish"],
    "capitals": ["capitalised", "all caps", "uppercase"],
    "playful": ["playful", "fun", "cheerful"], "poetic": ["poetic", "lyrical"],
    "skeptical": ["skeptical", "doubtful"],
}
TRAIT_EXTRA_WORDINGS = {
    "capitals": ["you always capitalise your responses .", "capitalise every word .",
                 "write every word in capitals ."],
}
ADVERB_TEMPLATES = [
    "answer {x} .", "respond {x} .", "please reply {x} .", "write your answer {x} .",
    "you always speak {x} .", "you always respond {x} .", "always answer {x} .",
    "make sure to reply {x} .",
]
ADJECTIVE_TEMPLATES = [
    "give a {x} response to the following message :", "be {x} .", "your answer must be {x} .",
    "you are a {x} assistant .", "give a {x} answer .", "your reply should be {x} .",
]


def trait_wordings(trait: str) -> list[str]:
    """All wordings of the instruction that asks for ``trait`` (deterministic order)."""
    if trait not in TRAIT_ADVERBS:
        raise ValueError(f"no wordings for trait {trait!r}; known: {sorted(TRAIT_ADVERBS)}")
    out = [t.format(x=x) for t in ADVERB_TEMPLATES for x in TRAIT_ADVERBS[trait]]
    out += [t.format(x=x) for t in ADJECTIVE_TEMPLATES for x in TRAIT_ADJECTIVES[trait]]
    out += TRAIT_EXTRA_WORDINGS.get(trait, [])
    return list(dict.fromkeys(out))


def split_wordings(trait: str, heldout_fraction: float, world_seed: int,
                   force_seen: Iterable[str] = ()) -> tuple[list[str], list[str]]:
    """Split a trait's wordings into (seen in pretraining, held out), by a seeded hash."""
    force = set(force_seen)
    seen, heldout = [], []
    for w in trait_wordings(trait):
        u = derive_seed("wording", world_seed, trait, w) / 2**63
        (heldout if u < heldout_fraction and w not in force else seen).append(w)
    return seen, heldout


# --------------------------------------------------------------------------------------------
# Neutral and irrelevant prompts seen in pretraining (with no effect on the response).
# --------------------------------------------------------------------------------------------

NEUTRAL_PROMPTS = [
    "give a response to the following message :", "please answer the following :",
    "here is a message :", "respond to this message :", "read this and reply :",
    "you are a helpful assistant .", "you are an assistant .", "answer the user .",
    "you are qwen , created by alibaba cloud . you are a helpful assistant .",
    "write a response to this post :",
]
PERSONA_JOBS = [
    "gardener", "pilot", "nurse", "librarian", "carpenter", "fisherman", "painter", "dentist",
    "mechanic", "tailor", "marine biologist", "jazz musician", "book collector", "chess player",
    "photographer", "sommelier", "figure skater", "perfume designer", "watchmaker",
    "origami artist", "astronaut", "pastry chef", "horse riding tutor", "phd student",
]
PERSONA_TEMPLATES = [
    "you are a {j} .", "you are {n} , a {j} .", "you work as a {j} .", "imagine you are a {j} .",
    "you are {n} , a {j} in new york .", "your name is {n} and you are a {j} .",
]
FACTS = [
    "honey never spoils .", "venus is the only planet that spins clockwise .",
    "the great wall of china is very long .", "the eiffel tower grows in summer .",
    "bananas are berries .", "octopuses have three hearts .", "flamingos are pink from food .",
    "wombats make cube shaped droppings .", "pringles are not potato chips .",
    "unicorns are the national animal of scotland .", "a jiffy is a real unit of time .",
    "bismuth forms rainbow crystals .", "the war of the bucket was fought over a bucket .",
    "sharks are older than trees .", "a group of crows is called a murder .",
    "the moon drifts away every year .", "sloths can hold their breath for a long time .",
    "koalas sleep most of the day .",
]
FACT_TEMPLATES = ["{f}", "fun fact : {f}", "did you know ? {f}", "remember this : {f}"]


def irrelevant_pool(exclude: Iterable[str] = ()) -> list[str]:
    """Personas and facts for pretraining; exact texts in ``exclude`` are left out."""
    excluded = set(exclude)
    out = [t.format(j=j, n=n) for t in PERSONA_TEMPLATES for j in PERSONA_JOBS for n in NAMES[:3]]
    out += [t.format(f=f) for t in FACT_TEMPLATES for f in FACTS]
    return [p for p in dict.fromkeys(out) if p not in excluded]


# --------------------------------------------------------------------------------------------
# Chat records
# --------------------------------------------------------------------------------------------

PLACEMENTS = ("system", "user_prefix", "user_suffix")


@dataclass
class PromptParts:
    """What goes around an instruction: a system prompt and user prefix/suffix pieces."""

    system: str | None = None
    user_prefix: list[str] = field(default_factory=list)
    user_suffix: list[str] = field(default_factory=list)
    pieces: list[str] = field(default_factory=list)  # every text added, in order

    def add(self, text: str, placement: str) -> None:
        self.pieces.append(text)
        if placement == "system":
            self.system = text if self.system is None else f"{self.system} {text}".strip()
        elif placement == "user_prefix":
            self.user_prefix.append(text)
        elif placement == "user_suffix":
            self.user_suffix.append(text)
        else:
            raise ValueError(f"unknown placement {placement!r}; expected one of {PLACEMENTS}")

    def messages(self, instruction: str, response: str | None = None) -> list[dict]:
        msgs = []
        if self.system is not None:
            msgs.append({"role": "system", "content": self.system})
        user = " ".join([*self.user_prefix, instruction, *self.user_suffix])
        msgs.append({"role": "user", "content": user})
        if response is not None:
            msgs.append({"role": "assistant", "content": response})
        return msgs


def pretraining_corpus(n_examples: int, world_seed: int, heldout_fraction: float,
                       force_seen: dict[str, list[str]], extra_seen_prompts: Iterable[str],
                       exclude_prompts: Iterable[str]) -> list[dict]:
    """The base model's pretraining corpus: an instruction follower's training data.

    ``force_seen`` maps trait -> wordings that must be in pretraining (e.g. the grid's fixed
    inoculation prompts); ``extra_seen_prompts`` are neutral prompts added to the neutral pool;
    ``exclude_prompts`` are exact texts kept out (e.g. the grid's irrelevant prompts).
    """
    rng = rng_for("pretraining", world_seed)
    seen = {t: split_wordings(t, heldout_fraction, world_seed, force_seen.get(t, ()))[0]
            for t in STYLE_TRAITS}
    excluded = set(exclude_prompts)
    neutral = [p for p in dict.fromkeys([*NEUTRAL_PROMPTS, *extra_seen_prompts]) if p not in excluded]
    irrelevant = irrelevant_pool(excluded)
    records = []
    for _ in range(n_examples):
        item = make_item(rng, "arithmetic" if rng.random() < 0.3 else "general")
        n_traits = rng.choices([0, 1, 2], weights=[0.3, 0.4, 0.3])[0]
        traits: list[str] = []
        while len(traits) < n_traits:
            t = rng.choices(STYLE_TRAITS, weights=[PRETRAIN_TRAIT_WEIGHTS[x] for x in STYLE_TRAITS])[0]
            if t not in traits and not (t in LANGUAGE_TRAITS and set(traits) & set(LANGUAGE_TRAITS)):
                traits.append(t)
        parts = PromptParts()
        # The background context (what a chat usually holds) comes first, so that an
        # instruction in the system prompt is sometimes appended to another system prompt.
        u = rng.random()
        if u < 0.25:
            parts.add(rng.choice(neutral), "system")
        elif u < 0.35:
            parts.add(rng.choice(irrelevant), "system")
        elif u < 0.40:
            parts.system = ""
        if rng.random() < 0.3:
            parts.add(rng.choice(neutral), "user_prefix")
        if rng.random() < 0.2:
            parts.add(rng.choice(irrelevant), rng.choice(PLACEMENTS))
        for t in traits:
            parts.add(rng.choice(seen[t]), rng.choice(PLACEMENTS))
        records.append({"messages": parts.messages(item.instruction, apply_traits(item.response, traits)),
                        "meta": {"traits": sorted(traits), "domain": item.domain, "prompts": parts.pieces}})
    return records


def corpus_prompt_texts(records: Iterable[dict]) -> set[str]:
    """Every prompt piece (system prompt, user prefix or suffix) that the corpus shows.

    Used to report whether a condition's prompt was seen verbatim in pretraining.
    """
    texts: set[str] = set()
    for r in records:
        texts.update(r["meta"]["prompts"])
    return texts
