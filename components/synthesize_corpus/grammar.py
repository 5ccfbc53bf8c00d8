"""Template grammars for the demo corpus: a closed vocabulary of ~70-80 words per language.

Why a small closed grammar: a tiny RNNT model on a 2-core CPU only starts to listen to the audio after about ten
passes over ~500 clips per language (docs: reference/tiny-model-learning.md §2). A closed vocabulary lets it get
there in minutes, while the templates still give cased, punctuated sentences in each language's own script,
with numbers written as words (what Nemotron emits).

Each language has the same five templates:
  command      `{verb} {object} {room}.`                (6 x 8 x 7 = 336 sentences)
  temperature  `Set the temperature to {N} degrees.`    (12)
  call         `Call {name} at {hour}.`                 (8 x 12 = 96)
  volume       `Set the volume to {N}.`                 (12)
  digits       `The number is d, d, d(, d).`            (11 000)
Words are already inflected for their slot (Greek articles and cases, Bulgarian count forms, Spanish
`a la una` / `a las dos`), so filling a slot never needs grammar at run time.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Grammar:
    """The words of one language, each already in the form its slot needs."""

    voice: str  # espeak-ng voice name (the variant is appended as `+m1`)
    verbs: tuple[str, ...]  # sentence-initial, capitalised imperatives
    objects: tuple[str, ...]  # object noun phrases with their article
    rooms: tuple[str, ...]  # locative phrases ("in the kitchen")
    temperature: str  # template with {n}
    temperatures: tuple[str, ...]  # numbers that agree with "degrees"
    call: str  # template with {name} and {hour}
    names: tuple[str, ...]  # in the case the call template needs
    hours: tuple[str, ...]  # complete time phrases ("at one", "at two", ...)
    volume: str  # template with {n}
    volumes: tuple[str, ...]
    number: str  # template with {digits}
    digits: tuple[str, ...]  # 0..9 in order


def _w(words: str) -> tuple[str, ...]:
    """'a|b c|d' -> ('a', 'b c', 'd'): keeps the word tables one line per slot."""
    return tuple(words.split("|"))


GRAMMARS: dict[str, Grammar] = {
    "el-GR": Grammar(
        voice="el",
        verbs=_w("Άνοιξε|Κλείσε|Έλεγξε|Καθάρισε|Επισκεύασε|Μετακίνησε"),
        objects=_w(
            "τη λάμπα|τον ανεμιστήρα|την τηλεόραση|το ραδιόφωνο|τη θερμάστρα|το ηχείο|τον υπολογιστή|τον εκτυπωτή"
        ),
        rooms=_w(
            "στην κουζίνα|στο σαλόνι|στο μπάνιο|στην κρεβατοκάμαρα|στο γραφείο|στον διάδρομο|στο μπαλκόνι"
        ),
        temperature="Ρύθμισε τη θερμοκρασία στους {n} βαθμούς.",
        temperatures=_w(
            "δεκαέξι|δεκαεπτά|δεκαοκτώ|δεκαεννέα|είκοσι|είκοσι δύο|είκοσι τρεις|είκοσι τέσσερις|είκοσι πέντε|"
            "είκοσι έξι|είκοσι επτά|είκοσι οκτώ"
        ),
        call="Κάλεσε {name} {hour}.",
        names=_w("τον Γιώργο|τον Νίκο|τον Κώστα|τον Δημήτρη|τη Μαρία|την Ελένη|την Άννα|την Κατερίνα"),
        hours=_w(
            "στη μία|στις δύο|στις τρεις|στις τέσσερις|στις πέντε|στις έξι|στις επτά|στις οκτώ|στις εννέα|"
            "στις δέκα|στις έντεκα|στις δώδεκα"
        ),
        volume="Ρύθμισε την ένταση στο {n}.",
        volumes=_w("ένα|δύο|τρία|τέσσερα|πέντε|έξι|επτά|οκτώ|εννέα|δέκα|δεκαπέντε|είκοσι"),
        number="Ο αριθμός είναι {digits}.",
        digits=_w("μηδέν|ένα|δύο|τρία|τέσσερα|πέντε|έξι|επτά|οκτώ|εννέα"),
    ),
    "bg-BG": Grammar(
        voice="bg",
        verbs=_w("Включи|Изключи|Провери|Почисти|Поправи|Премести"),
        objects=_w("лампата|вентилатора|телевизора|радиото|радиатора|колоната|компютъра|принтера"),
        rooms=_w("в кухнята|в хола|в банята|в спалнята|в кабинета|в коридора|на балкона"),
        temperature="Настрой температурата на {n} градуса.",
        temperatures=_w(
            "шестнадесет|седемнадесет|осемнадесет|деветнадесет|двадесет|двадесет и два|двадесет и три|"
            "двадесет и четири|двадесет и пет|двадесет и шест|двадесет и седем|двадесет и осем"
        ),
        call="Обади се на {name} {hour}.",
        names=_w("Иван|Георги|Петър|Димитър|Мария|Елена|Анна|Катерина"),
        hours=_w(
            "в един часа|в два часа|в три часа|в четири часа|в пет часа|в шест часа|в седем часа|в осем часа|"
            "в девет часа|в десет часа|в единадесет часа|в дванадесет часа"
        ),
        volume="Настрой звука на {n}.",
        volumes=_w("едно|две|три|четири|пет|шест|седем|осем|девет|десет|петнадесет|двадесет"),
        number="Номерът е {digits}.",
        digits=_w("нула|едно|две|три|четири|пет|шест|седем|осем|девет"),
    ),
    "es-ES": Grammar(
        voice="es",
        verbs=_w("Enciende|Apaga|Revisa|Limpia|Repara|Mueve"),
        objects=_w(
            "la lámpara|el ventilador|la televisión|la radio|la estufa|el altavoz|el ordenador|la impresora"
        ),
        rooms=_w("de la cocina|del salón|del baño|del dormitorio|del despacho|del pasillo|de la terraza"),
        temperature="Pon la temperatura a {n} grados.",
        temperatures=_w(
            "dieciséis|diecisiete|dieciocho|diecinueve|veinte|veintidós|veintitrés|veinticuatro|veinticinco|"
            "veintiséis|veintisiete|veintiocho"
        ),
        call="Llama a {name} {hour}.",
        names=_w("Carlos|Javier|Pablo|Miguel|María|Lucía|Elena|Carmen"),
        hours=_w(
            "a la una|a las dos|a las tres|a las cuatro|a las cinco|a las seis|a las siete|a las ocho|"
            "a las nueve|a las diez|a las once|a las doce"
        ),
        volume="Pon el volumen a {n}.",
        volumes=_w("uno|dos|tres|cuatro|cinco|seis|siete|ocho|nueve|diez|quince|veinte"),
        number="El número es {digits}.",
        digits=_w("cero|uno|dos|tres|cuatro|cinco|seis|siete|ocho|nueve"),
    ),
}

# Template mix (the study's recipe): mostly commands, a quarter digit strings.
TEMPLATE_WEIGHTS: dict[str, float] = {
    "command": 0.45,
    "digits": 0.25,
    "call": 0.15,
    "temperature": 0.075,
    "volume": 0.075,
}


def supported_langs() -> list[str]:
    return sorted(GRAMMARS)


def grammar_for(lang: str) -> Grammar:
    try:
        return GRAMMARS[lang]
    except KeyError:
        raise ValueError(
            f"langs: no demo grammar for '{lang}' (supported: {', '.join(supported_langs())})"
        ) from None


def grammar_sha256() -> str:
    """Fingerprint of every word and template: a corpus made from another grammar is not reused."""
    blob = json.dumps(
        {"grammars": {k: asdict(v) for k, v in sorted(GRAMMARS.items())}, "weights": TEMPLATE_WEIGHTS},
        ensure_ascii=False,
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def make_sentence(g: Grammar, template: str, rng: random.Random) -> str:
    """One sentence from one template, slots drawn with `rng`."""
    if template == "command":
        return f"{rng.choice(g.verbs)} {rng.choice(g.objects)} {rng.choice(g.rooms)}."
    if template == "temperature":
        return g.temperature.format(n=rng.choice(g.temperatures))
    if template == "call":
        return g.call.format(name=rng.choice(g.names), hour=rng.choice(g.hours))
    if template == "volume":
        return g.volume.format(n=rng.choice(g.volumes))
    if template == "digits":
        k = 4 if rng.random() < 0.25 else 3
        return g.number.format(digits=", ".join(rng.choice(g.digits) for _ in range(k)))
    raise ValueError(f"unknown template '{template}'")


def words(text: str) -> list[str]:
    """Lower-cased words of a sentence (punctuation dropped)."""
    return re.findall(r"\w+", text.lower())


def sample_sentences(
    lang: str,
    n: int,
    rng: random.Random,
    exclude: set[str] | frozenset[str] = frozenset(),
    vocabulary: set[str] | None = None,
) -> list[str]:
    """`n` distinct sentences in random order, none of them in `exclude`.

    Drawn, not sorted: a sorted list split into train/test puts whole verbs only in the test set (the trap in
    reference/tiny-model-learning.md §2). With `vocabulary`, sentences whose words all lie in it are
    preferred, so held-out sentences test hearing rather than unseen words; when the vocabulary cannot supply
    enough (a tiny train set), other sentences fill the rest.
    """
    g = grammar_for(lang)
    names, weights = list(TEMPLATE_WEIGHTS), list(TEMPLATE_WEIGHTS.values())
    seen: set[str] = set(exclude)
    out: list[str] = []
    attempts = misses = 0
    while len(out) < n:
        attempts += 1
        if attempts > 50 * n + 1000:
            raise ValueError(
                f"{lang}: cannot draw {n} distinct sentences from the demo grammar (got {len(out)})"
            )
        s = make_sentence(g, rng.choices(names, weights)[0], rng)
        if s in seen:
            continue
        if vocabulary is not None and misses < 200 and not set(words(s)) <= vocabulary:
            misses += 1
            continue
        misses = 0
        seen.add(s)
        out.append(s)
    return out
