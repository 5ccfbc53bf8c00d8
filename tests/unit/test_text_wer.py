"""Known-answer tests for scoring text normalisation and WER/CER (every script the demo uses)."""

import pytest

from components.common.text import normalize_text, strip_lang_tags
from components.common.wer import paired_bootstrap, score, utterance_scores


@pytest.mark.parametrize(
    ("raw", "lang", "expected"),
    [
        ("Τι ώρα είναι;", "el-GR", "τι ώρα είναι"),  # ASCII ';' used as the Greek question mark
        ("Τι ώρα είναι\u037e", "el-GR", "τι ώρα είναι"),  # U+037E GREEK QUESTION MARK
        ("Ναι\u0387 όχι· ίσως", "el-GR", "ναι όχι ίσως"),  # ano teleia U+0387 and middle dot U+00B7
        ("ΟΔΟΣ Ερμού, όπως πάντα.", "el-GR", "οδοσ ερμού όπως πάντα"),  # capital Σ folds to σ ...
        ("ο δρόμος της", "el-GR", "ο δρόμος της"),  # ... but a written final sigma ς stays ς
        ("«Добро утро», каза тя. „Здравей“!", "bg-BG", "добро утро каза тя здравей"),
        ("¿Cómo estás? ¡Bien!", "es-ES", "cómo estás bien"),
        ("<bg-BG> Включи   лампата.", None, "включи лампата"),
        ("Don't STOP—now", "en-US", "dont stop now"),
        ("Cafe\u0301", None, "café"),  # NFC: decomposed é equals composed é
        ("KIRMIZI IŞIK", "tr-TR", "kırmızı ışık"),  # Turkish dotless i
        ("...", None, ""),
    ],
)
def test_normalize_text(raw, lang, expected):
    assert normalize_text(raw, lang) == expected


def test_final_sigma_can_be_folded_on_request():
    assert normalize_text("της", fold_final_sigma=True) == "τησ"


def test_strip_lang_tags():
    assert strip_lang_tags("<el-GR> Καλημέρα <en-US>  hi") == "Καλημέρα hi"


def test_score_greek_question_mark_and_case_only_hurt_raw_wer():
    s = score(["Τι ώρα είναι;"], ["τι ώρα είναι"], ["el-GR"])
    assert s.wer_norm == 0.0 and s.cer == 0.0
    assert s.wer_raw == pytest.approx(2 / 3)  # "Τι"≠"τι", "είναι;"≠"είναι"
    assert s.n_ref_words == 3


def test_score_cyrillic_known_counts():
    refs = ["Включи светлината в кухнята.", "Добро утро."]
    hyps = ["включи светлина в кухнята", "добро утро и"]
    s = score(refs, hyps, ["bg-BG", "bg-BG"])
    assert (s.substitutions, s.deletions, s.insertions, s.n_ref_words) == (1, 0, 1, 6)
    assert s.wer_norm == pytest.approx(2 / 6)
    # CER over normalised characters: "светлината"->"светлина" deletes 2, " и" inserts 2
    assert s.cer == pytest.approx(4 / (len("включи светлината в кухнята") + len("добро утро")))


def test_language_tags_are_not_errors():
    s = score(["Καλημέρα σας."], ["<el-GR> Καλημέρα σας."])
    assert s.wer_raw == 0.0 and s.wer_norm == 0.0


def test_empty_reference_convention():
    # an empty reference: hypothesis words are insertions; it adds no reference words; no crash
    s = score(["", "ένα δύο"], ["θόρυβος", "ένα δύο"])
    assert (s.insertions, s.n_ref_words) == (1, 2)
    assert s.wer_norm == pytest.approx(0.5)
    u = utterance_scores(["", ""], ["", "κάτι εδώ"])
    assert [x.wer_norm for x in u] == [0.0, 2.0]
    assert score([""], [""]).wer_norm == 0.0


def test_utterance_scores_sum_to_corpus():
    refs = ["a b c d", "e f", "g"]
    hyps = ["a x c", "e f g", ""]
    u = utterance_scores(refs, hyps)
    s = score(refs, hyps)
    assert sum(x.errors for x in u) == s.substitutions + s.deletions + s.insertions
    assert sum(x.n_ref_words for x in u) == s.n_ref_words == 7


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="2 references but 1 hypotheses"):
        score(["a", "b"], ["a"])


def test_bootstrap_identical_models_ci_contains_zero():
    errs = [3, 0, 5, 2, 1, 4, 0, 2, 6, 1]
    ci = paired_bootstrap(errs, errs, [10] * 10, seed=1)
    assert ci.delta == 0.0 and ci.low <= 0.0 <= ci.high


def test_bootstrap_noisy_equal_models_ci_contains_zero():
    base = [3, 1, 5, 2, 1, 4, 0, 2, 6, 1, 2, 3]
    cand = [2, 2, 5, 3, 0, 4, 1, 2, 5, 1, 3, 3]  # same total errors, shuffled per utterance
    ci = paired_bootstrap(base, cand, [8] * 12, seed=0)
    assert ci.low < 0.0 < ci.high


def test_bootstrap_clearly_better_ci_below_zero():
    base = [5, 6, 4, 7, 5, 6, 5, 4, 6, 5]
    cand = [1, 2, 0, 2, 1, 1, 2, 0, 1, 1]
    ci = paired_bootstrap(base, cand, [10] * 10, n_resamples=1000, seed=0)
    assert ci.high < 0.0 and ci.low <= ci.delta <= ci.high
    assert ci.n_resamples == 1000 and ci.n_utts == 10


def test_bootstrap_is_seeded():
    a = paired_bootstrap([1, 2, 3], [2, 2, 1], [5, 5, 5], seed=7)
    b = paired_bootstrap([1, 2, 3], [2, 2, 1], [5, 5, 5], seed=7)
    assert (a.low, a.high) == (b.low, b.high)


def test_greek_question_mark_forms_and_tonos_known_answers():
    # ASCII ';' (how Greek text is usually typed) and U+037E score the same; a missing tonos is an error
    s = score(["Τι ώρα είναι\u037e", "Πού είσαι;"], ["τι ώρα είναι;", "που είσαι"], ["el-GR", "el-GR"])
    assert (s.substitutions, s.deletions, s.insertions, s.n_ref_words) == (1, 0, 0, 5)
    assert s.wer_norm == pytest.approx(1 / 5) and s.cer == pytest.approx(
        1 / len("τι ώρα είναι" + "πού είσαι")
    )


def test_greek_final_sigma_is_an_error_when_wrong():
    s = score(["Ο δρόμος της πόλης."], ["ο δρόμοσ της πόλης"], ["el-GR"])
    assert s.substitutions == 1 and s.wer_norm == pytest.approx(1 / 4)


def test_cyrillic_quotes_and_case_only_hurt_raw():
    s = score(["«Добро утро», каза тя."], ["добро утро каза тя"], ["bg-BG"])
    assert s.wer_norm == 0.0 and s.cer == 0.0 and s.wer_raw == pytest.approx(3 / 4)


def test_language_tag_in_reference_and_hypothesis():
    s = score(["<bg-BG> Включи лампата."], ["<el-GR>Включи лампата"], ["bg-BG"])
    assert s.wer_norm == 0.0 and s.n_ref_words == 2


def test_empty_hypothesis_is_all_deletions_and_empty_both_is_perfect():
    s = score(["Добро утро.", ""], ["", ""], ["bg-BG", "bg-BG"])
    assert (s.deletions, s.insertions, s.n_ref_words, s.wer_norm, s.cer) == (2, 0, 2, 1.0, 1.0)
    u = utterance_scores(["Добро утро.", ""], ["", ""])
    assert [x.wer_norm for x in u] == [1.0, 0.0] and [x.n_ref_words for x in u] == [2, 0]


def test_corpus_rate_is_errors_over_words_not_mean_of_utterances():
    refs, hyps = ["ένα", "a b c d e f g h i j"], ["δύο", "a b c d e f g h i j"]
    assert score(refs, hyps, ["el-GR", "en-US"]).wer_norm == pytest.approx(1 / 11)  # mean would be 0.5


def test_bootstrap_clearly_worse_ci_above_zero_and_defaults():
    base = [1, 0, 1, 2, 0, 1, 1, 0, 1, 1]
    cand = [5, 4, 6, 5, 4, 6, 5, 5, 4, 6]
    ci = paired_bootstrap(base, cand, [10] * 10)
    assert ci.low > 0.0 and ci.delta == pytest.approx(0.42)
    assert (ci.n_resamples, ci.confidence, ci.seed) == (1000, 0.95, 0)


def test_bootstrap_on_empty_references_and_bad_input():
    ci = paired_bootstrap([0, 0], [1, 0], [0, 0])  # only empty references: rates use max(words, 1)
    assert ci.delta == 1.0 and ci.low <= ci.delta <= ci.high
    with pytest.raises(ValueError, match="differ in length"):
        paired_bootstrap([1], [1, 2], [3, 3])
    with pytest.raises(ValueError, match="at least one utterance"):
        paired_bootstrap([], [], [])
