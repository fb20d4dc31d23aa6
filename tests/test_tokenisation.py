"""Landmark insertion, truncation and windows on the real MiniLM tokenizer."""

import math

import pytest

from lmk_eval.config.variants import LmkEvalError, make_variant
from lmk_eval.model.tokenisation import Tokenisation, draw_interval, special_token_template

TEXT = (
    "Landmark pooling splits a long text into chunks. A separator follows every chunk. "
    "The embedding is the mean of the separator states, and the leading CLS is not pooled."
)


@pytest.fixture(scope="module")
def tok(tokenizer):
    return Tokenisation(tokenizer, 512)


def n_content(tok, text=TEXT):
    return len(tok.content_ids([text])[0])


def test_special_tokens_are_the_tokenizers_own(tok, tokenizer):
    assert special_token_template(tokenizer) == ([tokenizer.cls_token_id], [tokenizer.sep_token_id])
    assert tok.landmark_id == tokenizer.sep_token_id


def test_fixed_interval_puts_a_landmark_after_every_chunk_including_the_last(tok):
    n = n_content(tok)
    (w,) = tok.windows([TEXT], make_variant("lmk", interval=4, max_length=512))
    assert w.ids[0] == tok.cls_id and not w.markers[0]
    assert w.ids[-1] == tok.landmark_id and w.markers[-1]
    assert sum(w.markers) == math.ceil(n / 4)
    assert len(w.ids) == 1 + n + math.ceil(n / 4)
    marked = [i for i, m in enumerate(w.markers) if m]
    assert all(w.ids[i] == tok.landmark_id for i in marked)
    assert marked[:3] == [5, 10, 15]  # [CLS] t t t t [L] t t t t [L] ...


def test_truncation_keeps_a_landmark_in_the_last_slot(tok):
    (w,) = tok.windows([TEXT], make_variant("lmk", interval=32, max_length=8))
    assert len(w.ids) == 8
    assert w.ids[-1] == tok.landmark_id and w.markers[-1] and sum(w.markers) == 1


def test_sentence_granularity_puts_one_landmark_per_sentence(tok):
    (w,) = tok.windows([TEXT], make_variant("lmk", granularity="sentence", max_length=512))
    assert sum(w.markers) == 3
    content = [t for t, m in zip(w.ids[1:], w.markers[1:], strict=True) if not m]
    assert content == tok.content_ids([TEXT])[0]


def test_variable_interval_is_seeded_per_text_and_drawn_from_the_set():
    texts = [f"text number {i}" for i in range(60)]
    draws = [draw_interval(t, (32, 64, 128, 256), seed=0) for t in texts]
    assert draws == [draw_interval(t, (32, 64, 128, 256), seed=0) for t in texts]
    assert set(draws) == {32, 64, 128, 256}
    assert draws != [draw_interval(t, (32, 64, 128, 256), seed=1) for t in texts]


def test_queries_get_landmarks_too(tok):
    (w,) = tok.windows(["short query"], make_variant("lmk", max_length=512))
    assert w.markers[-1] and w.ids[-1] == tok.landmark_id


def test_lmk_windows_fit_and_keep_every_landmark(tok):
    long_text = " ".join([TEXT] * 6)
    n = n_content(tok, long_text)
    windows = tok.windows(
        [long_text], make_variant("lmk", interval=4, max_length=16, strategy="window")
    )
    assert len(windows) > 1
    for w in windows:
        assert len(w.ids) <= 16 and w.ids[0] == tok.cls_id and w.markers[-1]
    assert sum(sum(w.markers) for w in windows) == math.ceil(n / 4)
    assert sum(len(w.ids) - 1 - sum(w.markers) for w in windows) == n


def test_plain_windows_cover_every_token_once(tok):
    long_text = " ".join([TEXT] * 6)
    windows = tok.windows([long_text], make_variant("mean", max_length=32, strategy="window"))
    assert all(
        len(w.ids) <= 32 and w.ids[0] == tok.cls_id and w.ids[-1] == tok.landmark_id
        for w in windows
    )
    assert [t for w in windows for t in w.ids[1:-1]] == tok.content_ids([long_text])[0]


def test_multi_cls_puts_a_marked_cls_before_each_chunk(tok):
    n = n_content(tok)
    (w,) = tok.windows([TEXT], make_variant("multi_cls", interval=8, max_length=512))
    assert sum(w.markers) == math.ceil(n / 8)
    assert all(w.ids[i] == tok.cls_id for i, m in enumerate(w.markers) if m)
    assert w.ids[-1] == tok.landmark_id and not w.markers[-1]


def test_truncate_beyond_the_model_limit_is_refused(tok):
    with pytest.raises(LmkEvalError, match="exceeds the model's 512 positions"):
        tok.windows([TEXT], make_variant("lmk", max_length=1024))


class NoSeparatorTokenizer:
    """A tokenizer with neither sep nor eos token (no hub model of that kind is bundled)."""

    cls_token_id = 1
    bos_token_id = None
    sep_token_id = None
    eos_token_id = None

    def __call__(self, texts, add_special_tokens=False, verbose=False):
        one = isinstance(texts, str)
        ids = [[10 + len(w) for w in t.split()] for t in ([texts] if one else texts)]
        return {"input_ids": ids[0] if one else ids}


def test_tokenizer_without_separator_gives_a_clear_error():
    tok = Tokenisation(NoSeparatorTokenizer(), 512)
    assert tok.windows(["a b"], make_variant("mean", max_length=16))  # plain pooling still works
    with pytest.raises(LmkEvalError, match="neither a sep_token nor an eos_token"):
        tok.windows(["a b"], make_variant("lmk", max_length=16))


@pytest.mark.parametrize("interval", [1, 2, 3, 4, 7, 8, 16, 32])
def test_no_truncated_lmk_input_ends_with_two_landmarks(tok, interval):
    """The old rule overwrote the last kept slot with a landmark even when the slot before it was
    one, so (max_length - 1) mod (interval + 1) == 1 gave '[L] [L]'."""
    long_text = " ".join([TEXT] * 8)
    for max_length in range(3, 130):
        (w,) = tok.windows(
            [long_text], make_variant("lmk", interval=interval, max_length=max_length)
        )
        assert len(w.ids) <= max_length and w.markers[-1] and w.ids[-1] == tok.landmark_id
        doubled = [i for i in range(1, len(w.markers)) if w.markers[i] and w.markers[i - 1]]
        assert not doubled, (max_length, interval)
        assert len(w.ids) >= max_length - 1  # at most the one slot given up to avoid a double


def test_the_case_that_used_to_double_now_ends_one_short(tok):
    interval, max_length = 4, 12  # (12 - 1) mod 5 == 1: slot 10 is a landmark, slot 11 content
    (w,) = tok.windows(
        [" ".join([TEXT] * 4)], make_variant("lmk", interval=interval, max_length=max_length)
    )
    assert len(w.ids) == 11 and w.markers == [False] + ([False] * 4 + [True]) * 2


def test_a_window_larger_than_the_model_becomes_model_sized_windows(tok):
    windows = tok.windows(
        [" ".join([TEXT] * 40)], make_variant("mean", max_length=1024, strategy="window")
    )
    assert max(len(w.ids) for w in windows) == 512  # windows of the model's size ...
    assert sum(len(w.ids) - 2 for w in windows) == 1024  # ... over the first 1,024 text tokens


def test_multi_cls_closes_with_the_tokenizers_suffix_whatever_the_landmark_token(tokenizer):
    v = make_variant("multi_cls", interval=8, max_length=512)
    default = Tokenisation(tokenizer, 512).windows([TEXT], v)
    other = Tokenisation(tokenizer, 512, landmark_token="[MASK]").windows([TEXT], v)
    assert default[0].ids == other[0].ids  # --landmark-token is lmk's, not multi_cls's
    assert other[0].ids[-1] == tokenizer.sep_token_id
    window = Tokenisation(tokenizer, 512, landmark_token="[MASK]").windows(
        [TEXT * 4], make_variant("multi_cls", interval=8, max_length=40, strategy="window")
    )
    assert len(window) > 1 and all(w.ids[-1] == tokenizer.sep_token_id for w in window)


@pytest.mark.parametrize("max_length", range(12, 40))
def test_a_truncated_multi_cls_input_never_ends_with_an_empty_chunk(tok, max_length):
    (w,) = tok.windows([TEXT], make_variant("multi_cls", interval=8, max_length=max_length))
    assert len(w.ids) <= max_length and w.ids[-1] == tok.suffix[-1]
    assert not w.markers[-2]  # the token before [SEP] is content, never a chunk [CLS]
    assert sum(w.markers) >= 1


def test_a_padded_call_of_the_tokenizer_does_not_pad_ours(tokenizer):
    """The tokenizer's own call with padding and truncation leaves them set on its Rust backend; a
    Tokenisation built before or after reads its texts unpadded and uncut all the same."""
    from transformers import AutoTokenizer

    texts = ["a short claim", "a much longer claim about cells that divide and divide again"]
    fresh = AutoTokenizer.from_pretrained(tokenizer.name_or_path)
    fresh.backend_tokenizer.no_padding()  # as most tokenizer.json files ship (MiniLM's pads to 128)
    fresh.backend_tokenizer.no_truncation()
    expected = [fresh(t, add_special_tokens=False)["input_ids"] for t in texts]
    assert len(expected[1]) > 6 and len(expected[0]) < len(expected[1])
    before = Tokenisation(fresh, 512)
    fresh(texts, padding=True, truncation=True, max_length=6)
    assert before.content_ids(texts) == expected  # (its next call of its own resets them)
    fresh(texts, padding=True, truncation=True, max_length=6)
    after = Tokenisation(fresh, 512)
    assert after.content_ids(texts) == expected
