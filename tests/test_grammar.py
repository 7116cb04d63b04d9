"""The demo corpus: deterministic, correctly tagged, context-dependent, and read by the normal tokenizer path."""
import collections
import json

import numpy as np
import pytest

from seedkl_jax.lab import grammar as G
from seedkl_jax.errors import SeedKLError

SMALL = G.GrammarConfig(nouns=40, verbs=16, adjs=12, advs=6, propns=8, clusters=4)


@pytest.fixture(scope="module")
def grammar():
    return G.Grammar()


@pytest.fixture(scope="module")
def sample(grammar):
    return G.generate_documents(grammar, seed=3, n_sentences=3000)


def test_deterministic_and_seed_dependent():
    a_text, a_docs = G.generate_corpus(seed=7, n_sentences=200, config=SMALL)
    b_text, b_docs = G.generate_corpus(seed=7, n_sentences=200, config=SMALL)
    c_text, _ = G.generate_corpus(seed=8, n_sentences=200, config=SMALL)
    assert a_text == b_text and a_docs == b_docs
    assert a_text != c_text
    assert G.Grammar(SMALL).vocabulary() == G.Grammar(SMALL).vocabulary()
    assert G.Grammar(SMALL).vocabulary() != G.Grammar(
        G.GrammarConfig(**{**SMALL.__dict__, "lexicon_seed": 99})).vocabulary()


def test_hand_checked_sentences():
    """Sentences drawn from a fixed seed, tags checked by hand against the UD/Penn conventions."""
    g = G.Grammar(SMALL)
    rng = np.random.default_rng(0)
    got = [g.sentence(rng) for _ in range(3)]
    n, v, a = g.nouns, g.verbs, g.adjs
    # Every word's class is known from the lexicon: each tag must follow from it.
    for sent in got:
        for i, (w, upos, xpos) in enumerate(sent):
            if w in ("the", "a", "this", "every", "some", "these", "those"):
                assert (upos, xpos) == ("DET", "DT"), sent
            elif w in (".", ","):
                assert (upos, xpos) == ("PUNCT", w), sent
            elif w in ("he", "she", "it", "they", "we", "him", "her", "them", "us"):
                assert (upos, xpos) == ("PRON", "PRP"), sent
            elif w in ("will", "can", "must"):
                assert (upos, xpos) == ("AUX", "MD") and sent[i + 1][2] == "VB", sent
            elif w == "not":
                assert (upos, xpos) == ("PART", "RB") and sent[i - 1][1] == "AUX", sent
            elif w in n:
                assert (upos, xpos) == ("NOUN", "NN"), sent
            elif w.endswith("s") and w[:-1] in n:
                assert (upos, xpos) == ("NOUN", "NNS"), sent
            elif w.endswith("ed") and w[:-2] in v:
                assert (upos, xpos) == ("VERB", "VBD"), sent
            elif w.endswith("s") and w[:-1] in v:
                assert (upos, xpos) == ("VERB", "VBZ"), sent
            elif w in v:
                assert upos == "VERB" and xpos in ("VB", "VBP"), sent
            elif w in a:
                assert (upos, xpos) == ("ADJ", "JJ"), sent
            elif w in g.advs:
                assert (upos, xpos) == ("ADV", "RB"), sent
            elif w in g.propns:
                assert (upos, xpos) == ("PROPN", "NNP") and w[0].isupper(), sent
            else:
                assert upos in ("ADP", "CCONJ", "SCONJ", "AUX"), sent
    # And the three sentences themselves, written out and checked by hand: determiner/noun number
    # (these + NNS), plural subject + bare present verb (VBP), past tense (VBD).
    text = [" ".join(f"{w}/{u}/{x}" for w, u, x in s) for s in got]
    assert text == [
        "the/DET/DT moustait/ADJ/JJ plaitres/NOUN/NNS lobrued/VERB/VBD these/DET/DT podrul/ADJ/JJ "
        "snousnis/NOUN/NNS ./PUNCT/.",
        "the/DET/DT snudaims/NOUN/NNS lobru/VERB/VBP ./PUNCT/.",
        "the/DET/DT naisnou/NOUN/NN drilured/VERB/VBD ./PUNCT/.",
    ], text


def test_subject_verb_and_determiner_agreement(sample):
    """Number agreement is a context dependency the models must learn: check it holds everywhere."""
    singular_det, plural_det = {"a", "this", "every"}, {"some", "these", "those"}
    n_checked = 0
    for doc in sample:
        for i, (w, upos, xpos) in enumerate(doc):
            if upos == "DET" and w != "the":
                j = i + 1 + (doc[i + 1][1] == "ADJ")
                assert doc[j][2] == ("NN" if w in singular_det else "NNS"), doc[i:j + 1]
            # the verb group starts right after the subject's head
            if (upos == "VERB" and doc[i - 1][1] not in ("AUX", "PART")) or w in ("does", "do"):
                head = doc[i - 1]
                plural = head[2] == "NNS" or head[0] in ("they", "we")
                if xpos == "VBZ" or w == "does":
                    assert not plural, doc[i - 2:i + 1]
                if xpos == "VBP" or w == "do":
                    assert plural, doc[i - 2:i + 1]
                n_checked += 1
    assert n_checked > 1000


def test_zipfian_open_classes_few_frequent_function_words(grammar, sample):
    words = [w for doc in sample for w in doc]
    upos_types = collections.defaultdict(set)
    upos_count = collections.Counter()
    for w, u, _ in words:
        upos_types[u].add(w)
        upos_count[u] += 1
    per_type = lambda us: sum(upos_count[u] for u in us) / sum(len(upos_types[u]) for u in us)
    for u in ("DET", "ADP", "PRON", "CCONJ", "SCONJ", "PART", "PUNCT"):
        assert len(upos_types[u]) <= 9, u
    function, content = ("DET", "ADP", "PRON", "CCONJ", "SCONJ", "PART", "AUX"), ("NOUN", "VERB", "ADJ", "ADV")
    assert per_type(function) > 10 * per_type(content)  # measured ~23x
    assert len(upos_types["NOUN"]) > len(grammar.nouns) and len(upos_types["VERB"]) > len(grammar.verbs)
    noun_counts = collections.Counter(w.removesuffix("s") if w.removesuffix("s") in grammar.nouns else w
                                      for w, u, _ in words if u == "NOUN")
    assert noun_counts[grammar.nouns[0]] > 5 * noun_counts[grammar.nouns[49]]


def test_verbs_prefer_objects_of_their_cluster(grammar, sample):
    k = grammar.config.clusters
    verb_index = {f: i for i, v in enumerate(grammar.verbs) for f in (v, v + "s", v + "ed")}
    noun_index = {f: i for i, n in enumerate(grammar.nouns) for f in (n, n + "s")}
    same = total = 0
    for doc in sample:
        for i, (w, u, _) in enumerate(doc):
            if u == "VERB" and i + 2 < len(doc) and doc[i + 1][1] == "DET":
                j = i + 2 + (doc[i + 2][1] == "ADJ")
                if doc[j][1] == "NOUN":
                    same += verb_index[w] % k == noun_index[doc[j][0]] % k
                    total += 1
    # 0.8 from the own cluster + 0.2 * 1/8 by chance; no preference would give ~1/8
    assert total > 500 and 0.75 < same / total < 0.9


def test_tokenizer_maps_words_one_to_one_through_the_loader(tmp_path, grammar):
    from seedkl_jax.data.tokenizer import load_tokenizer

    G.save_tokenizer(G.build_tokenizer(grammar), tmp_path)
    tok = load_tokenizer(str(tmp_path))
    assert tok.eos_id == 0 and tok.vocab_size == len(grammar.vocabulary())
    assert tok.backend.token_to_id(G.UNK) == 1
    docs = G.generate_documents(grammar, seed=5, n_sentences=30)
    text = G.documents_text(docs)
    ids, offsets = tok.encode(text)
    words = [w for i, doc in enumerate(docs) for w in ([G.EOS] if i else []) + [w for w, _, _ in doc]]
    assert tok.decode_tokens(ids) == words
    assert 1 not in ids.tolist()  # no [UNK]: the vocabulary is the whole lexicon
    assert [text[a:b] for a, b in offsets] == words

    pos = G.gold_pos(docs, G.build_tokenizer(grammar))
    assert len(pos) == len(ids) + 2  # the study scores [eos] + ids + [eos]
    assert pos[0] == [G.EOS, None, None] and pos[-1] == [G.EOS, None, None]
    assert [p[0] for p in pos[1:-1]] == words
    assert all((p[1] is None) == (p[0] == G.EOS) for p in pos)
    json.dumps(pos)  # the --pos=FILE body is plain JSON


def test_gold_pos_refuses_a_foreign_tokenizer(grammar):
    other = G.build_tokenizer(G.Grammar(SMALL))
    docs = G.generate_documents(grammar, seed=5, n_sentences=5)
    with pytest.raises(SeedKLError, match="tokenizer"):
        G.gold_pos(docs, other)
