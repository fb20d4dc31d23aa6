"""Local BEIR folders, bundled and synthetic tasks, and the registry's errors."""

import json
import re

import pytest

from lmk_eval.config.variants import LmkEvalError
from lmk_eval.retrieval import synthetic, task_registry
from lmk_eval.retrieval.beir import read_beir_folder
from tests.conftest import write_beir

CORPUS = [{"id": "d1", "title": "T", "text": "alpha"}, {"id": "d2", "title": "", "text": "beta"}]
QUERIES = [{"id": "q1", "text": "alpha?"}, {"id": "q2", "text": "beta?"}]
QRELS = [("q1", "d1", 1), ("q2", "d2", 1)]


@pytest.fixture
def folder(tmp_path):
    return write_beir(tmp_path / "mini", CORPUS, QUERIES, QRELS)


def test_valid_folder_loads(folder):
    split = read_beir_folder(folder)
    assert [d["id"] for d in split.corpus] == ["d1", "d2"]
    assert split.qrels == {"q1": {"d1": 1}, "q2": {"d2": 1}}


def test_a_folder_read_again_unchanged_is_served_from_memory_and_a_change_is_read(folder):
    first = read_beir_folder(folder)
    assert read_beir_folder(folder) is first  # checked before model work, loaded for mteb: one read
    append(folder / "corpus.jsonl", json.dumps({"_id": "d3", "title": "", "text": "gamma"}))
    assert [d["id"] for d in read_beir_folder(folder).corpus] == ["d1", "d2", "d3"]


def append(path, line):
    with path.open("a") as f:
        f.write(line + "\n")


@pytest.mark.parametrize(
    ("file", "line", "message"),
    [
        ("corpus.jsonl", "{not json", r"corpus.jsonl line 3: not valid JSON"),
        (
            "corpus.jsonl",
            json.dumps({"_id": "d1", "text": "again"}),
            r"corpus.jsonl line 3: duplicate _id 'd1' \(first on line 1\)",
        ),
        (
            "corpus.jsonl",
            json.dumps({"_id": "d3", "title": "", "text": "  "}),
            r"corpus.jsonl line 3: empty text for 'd3'",
        ),
        (
            "queries.jsonl",
            json.dumps({"_id": "q3", "text": ""}),
            r"queries.jsonl line 3: empty text for 'q3'",
        ),
        ("queries.jsonl", json.dumps({"text": "no id"}), r"queries.jsonl line 3: missing \"_id\""),
        ("qrels/test.tsv", "q1\td9\t1", r"qrels/test.tsv line 4: unknown corpus-id 'd9'"),
        ("qrels/test.tsv", "q9\td1\t1", r"qrels/test.tsv line 4: unknown query-id 'q9'"),
        ("qrels/test.tsv", "q1\td1", r"qrels/test.tsv line 4: expected 3 tab-separated fields"),
    ],
)
def test_each_malformed_input_is_named_with_file_and_line(folder, file, line, message):
    append(folder / file, line)
    with pytest.raises(LmkEvalError, match=message):
        read_beir_folder(folder)


def test_missing_split_names_the_splits_present(folder):
    with pytest.raises(LmkEvalError, match=r"lacks qrels/dev.tsv \(splits present: test\)"):
        read_beir_folder(folder, "dev")


def test_folder_task_is_validated_when_resolved(folder):
    append(folder / "qrels" / "test.tsv", "q1\tnope\t1")
    with pytest.raises(LmkEvalError, match="unknown corpus-id 'nope'"):
        task_registry.resolve(str(folder))


def test_unknown_names_and_splits(tmp_path):
    with pytest.raises(LmkEvalError, match="task folder .* does not exist"):
        task_registry.resolve(str(tmp_path / "absent"))
    with pytest.raises(LmkEvalError, match="has no split test_999"):
        task_registry.resolve("passkey:test_999")
    with pytest.raises(LmkEvalError, match="unknown task 'NoSuchTask'"):
        task_registry.resolve("NoSuchTask")


def test_groups_are_mteb_benchmarks_with_their_splits_and_context_from_the_data():
    import mteb

    beir = task_registry.resolve("beir")
    assert [r.name for r in beir] == [t.metadata.name for t in mteb.get_benchmark("BEIR").tasks]
    assert {r.benchmarks for r in beir} == {("BEIR",)} and all(r.context == "short" for r in beir)
    assert next(r for r in beir if r.name == "MSMARCO").splits == ("dev",)
    longembed = task_registry.resolve("LongEmbed")
    assert {r.name for r in longembed} == {
        t.metadata.name for t in mteb.get_benchmark("LongEmbed").tasks
    }
    assert all(r.context == "long" for r in longembed)
    (mldr,) = task_registry.resolve("MultiLongDocRetrieval[en]:test")
    assert (mldr.name, mldr.subsets, mldr.splits, mldr.context) == (
        "MultiLongDocRetrieval[en]",
        ("en",),
        ("test",),
        "long",
    )
    assert mldr.slot() == {
        "name": "MultiLongDocRetrieval",
        "source": "mteb",
        "splits": ["test"],
        "subsets": ["en"],
    }
    # 256-token documents
    assert task_registry.resolve("LEMBPasskeyRetrieval:test_256")[0].context == "short"
    (every,) = task_registry.resolve(
        "MultiLongDocRetrieval[" + "+".join(mteb.get_task("MultiLongDocRetrieval").hf_subsets) + "]"
    )
    # all of them: as naming none
    assert every.subsets is None and every.name == "MultiLongDocRetrieval"
    (cqa,) = task_registry.resolve("CQADupstackRetrieval")
    assert cqa.context == "short" and cqa.splits == ("test",)


@pytest.mark.parametrize(
    "spec, message",
    [
        (
            "MultiLongDocRetrieval[xx]",
            "mteb task 'MultiLongDocRetrieval' has no subset xx; it has ar, de, en, es",
        ),
        (
            "MultiLongDocRetrieval[en]:train",
            "mteb task 'MultiLongDocRetrieval' has no split train; it has dev, test",
        ),
        (
            "Banking77Classification",
            "mteb task 'Banking77Classification' is a Classification task: lmk-eval evaluates retrieval",
        ),
        ("STS12", "is a STS task: lmk-eval evaluates retrieval (and reranking) tasks on text only"),
        ("MTEB(eng, v2)", "mteb benchmark 'MTEB(eng, v2)' has tasks lmk-eval cannot run: "),
        ("scifact[en]", "task 'scifact' has no subsets"),
        ("SciFact[]", "task spec 'SciFact[]' is not NAME"),
    ],
)
def test_what_cannot_run_is_refused_offline_before_the_hub_is_asked(spec, message):
    """Resolving reads mteb's metadata only (the hub is asked later, for identities)."""
    with pytest.raises(LmkEvalError, match=re.escape(message)):
        task_registry.resolve(spec)


def test_hub_tasks_fail_fast_offline_naming_alternatives(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ref = task_registry.resolve("LEMBPasskeyRetrieval:test_256+test_512")[0]
    assert ref.splits == ("test_256", "test_512")
    with pytest.raises(
        LmkEvalError,
        match=r"HF_HUB_OFFLINE is set and hub dataset 'mteb/LEMBPasskeyRetrieval'.*not in the Hugging"
        r" Face cache.*a bundled task: `lmk-eval tasks`",
    ):
        ref.data_identity()  # asked before any work: the dataset's commit, from the cache offline


@pytest.mark.parametrize("kind", ["passkey", "needle", "needle-depth"])
def test_fresh_generation_equals_the_shipped_data(kind):
    fresh = synthetic.generate(synthetic.SyntheticSpec(kind))
    shipped = task_registry.load_synthetic(kind)
    assert {k: v.to_json() for k, v in fresh.items()} == {
        k: v.to_json() for k, v in shipped.items()
    }
    other_seed = synthetic.generate(synthetic.SyntheticSpec(kind, seed=7))
    assert other_seed[next(iter(other_seed))].to_json() != fresh[next(iter(fresh))].to_json()


@pytest.mark.parametrize("kind", ["passkey", "needle"])
def test_each_length_split_has_the_word_budget_and_size(kind):
    splits = task_registry.load_synthetic(kind)
    assert list(splits) == [f"test_{n}" for n in synthetic.LENGTHS]
    for n in synthetic.LENGTHS:
        split = splits[f"test_{n}"]
        assert len(split.corpus) == 100 and len(split.queries) == 50
        for doc in split.corpus:
            assert len(doc["text"].split()) == synthetic.word_budget(n)


def test_depth_split_places_the_needle_at_its_fraction():
    for name, split in task_registry.load_synthetic("needle-depth").items():
        depth = int(name.split("_")[1]) / 100
        needles = dict(synthetic.needles())
        questions = {q: n for n, q in synthetic.needles()}
        for q in split.queries[:5]:
            (doc_id,) = split.qrels[q["id"]]
            words = next(d for d in split.corpus if d["id"] == doc_id)["text"].split()
            fact = questions[q["text"]].split()
            start = next(i for i in range(len(words)) if words[i : i + len(fact)] == fact)
            room = len(words) - len(fact)
            assert start == round(depth * room)
        assert needles


def test_every_relevant_document_contains_its_passkey_or_needle():
    for split in task_registry.load_synthetic("passkey").values():
        docs = {d["id"]: d["text"] for d in split.corpus}
        for q in split.queries:
            name = re.match(r"What is the pass key for (.+)\?", q["text"]).group(1)
            (doc_id,) = split.qrels[q["id"]]
            assert f"{name}'s passkey is" in docs[doc_id]
            assert sum(f"{name}'s passkey" in t for t in docs.values()) == 1
    answers = {q: n for n, q in synthetic.needles()}
    for split in task_registry.load_synthetic("needle").values():
        docs = {d["id"]: d["text"] for d in split.corpus}
        for q in split.queries:
            (doc_id,) = split.qrels[q["id"]]
            assert answers[q["text"]] in docs[doc_id]


def test_quick_tasks_are_subsets_with_their_relevant_documents():
    ref = task_registry.resolve("scifact-quick")[0]
    task = ref.build()
    task.load_data()
    data = task.dataset["default"]["test"]
    corpus_ids = set(data["corpus"]["id"])
    assert len(data["queries"]) == 100 and len(corpus_ids) == 400
    assert all(d in corpus_ids for docs in data["relevant_docs"].values() for d in docs)


def test_needles_are_distinct():
    facts = synthetic.needles()
    assert len(facts) >= 100
    assert len({n for n, _ in facts}) == len(facts) and len({q for _, q in facts}) == len(facts)


def test_the_previous_needle_construction_stays_reproducible():
    """`needle` now shares one passage per length; the per-document construction shipped before
    (and behind the full controlled sweep's needle cells) is still generated bit for bit."""
    import hashlib
    import json

    from lmk_eval.retrieval.synthetic import SyntheticSpec, generate

    v1 = {
        k: v.to_json() for k, v in generate(SyntheticSpec("needle", shared_haystack=False)).items()
    }
    digest = hashlib.sha256(json.dumps(v1, sort_keys=True).encode()).hexdigest()
    assert digest == "c8f68fb275ea9e44cb00e155743cfc84b91857f5bf5a166c9e89900bb956dbd4"


def test_needle_candidates_of_one_length_share_their_haystack():
    from lmk_eval.retrieval.task_registry import load_synthetic

    split = load_synthetic("needle")["test_1024"]
    words = [set(d["text"].split()) for d in split.corpus[:5]]
    common = set.intersection(*words)
    assert len(common) > 0.8 * min(map(len, words))  # the same passage, a different needle each


@pytest.mark.parametrize("text, context", [("x" * 4094, "short"), ("x" * 4095, "long")])
def test_a_local_tasks_context_is_counted_from_its_documents(tmp_path, text, context):
    """Title + " " + text as mteb's statistics count them: 4,096 characters on average is long."""
    from lmk_eval.run.work import document_context

    folder = write_beir(
        tmp_path / "data",
        [{"id": "d1", "title": "t", "text": text}, {"id": "d2", "text": text + "y"}],
        [{"id": "q1", "text": "which?"}],
        [("q1", "d1", 1)],
    )
    task = task_registry.resolve(str(folder))[0].build()
    task.load_data()
    assert document_context(task) == context  # means 4,095.5 and 4,096.5 (the title counted)
