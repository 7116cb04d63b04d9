"""A toy English-like language with gold part-of-speech tags: the demo's built-in corpus.

Why a grammar and not real text: the demo must run offline with nothing to download, and the
study's categories (token frequency, function vs content words, the previous token's tag) need
gold tags that no tagger has to guess. The language is built to have the properties the paper's
findings are about:

  * closed-class function words (DET, ADP, PRON, AUX, CCONJ, SCONJ, PART, PUNCT): few types, each
    very frequent;
  * open-class content words (NOUN, VERB, ADJ, ADV, PROPN): many pseudo-word types with Zipfian
    frequencies (weight of rank r is r^-zipf within its class);
  * context that matters: determiners and subjects agree in number with nouns and verbs
    ("these bakors telin" / "a bakor telins"), and each verb prefers objects from its own semantic
    cluster (nouns and verbs are dealt round-robin into `clusters` clusters by rank).

Sentences are space-separated words and punctuation ("the bakor telins a mupa ."), so a word-level
tokenizer (WordLevel + Whitespace pre-tokenizer) maps words to tokens one to one; documents are a
few sentences joined by `<|endoftext|>`. The lexicon is fixed by `lexicon_seed`; which sentences
are drawn is fixed by the sample seed, so training and evaluation text are different-seed samples.

Tags: UPOS (Universal Dependencies) + a Penn-style XPOS, e.g. ("bakors", "NOUN", "NNS").
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np

from seedkl_jax.errors import SeedKLError

EOS = "<|endoftext|>"
UNK = "[UNK]"

Word = tuple[str, str, str]  # (word, upos, xpos)

# Closed classes: (word, xpos, weight). Few types, drawn far more often than any content word.
_DET_SG = [("the", "DT", 5), ("a", "DT", 3), ("this", "DT", 1), ("every", "DT", 1)]
_DET_PL = [("the", "DT", 6), ("some", "DT", 2), ("these", "DT", 1), ("those", "DT", 1)]
_PRON_SUBJ_SG = [("he", "PRP", 3), ("she", "PRP", 3), ("it", "PRP", 2)]
_PRON_SUBJ_PL = [("they", "PRP", 3), ("we", "PRP", 2)]
_PRON_OBJ = [("him", "PRP", 3), ("her", "PRP", 3), ("it", "PRP", 2), ("them", "PRP", 3), ("us", "PRP", 1)]
_MODALS = [("will", "MD", 3), ("can", "MD", 2), ("must", "MD", 1)]
_ADP = [("in", "IN", 4), ("on", "IN", 3), ("with", "IN", 3), ("near", "IN", 1), ("under", "IN", 1),
        ("from", "IN", 2)]
_CCONJ = [("and", "CC", 4), ("but", "CC", 2), ("or", "CC", 1)]
_SCONJ = [("because", "IN", 3), ("if", "IN", 2), ("although", "IN", 1)]
CLOSED_WORDS = sorted({w for group in (_DET_SG, _DET_PL, _PRON_SUBJ_SG, _PRON_SUBJ_PL, _PRON_OBJ,
                                       _MODALS, _ADP, _CCONJ, _SCONJ) for w, _, _ in group}
                      | {"does", "do", "did", "not", ".", ","})

_ONSETS = ["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "t", "v", "z", "br", "dr", "gl", "kr",
           "pl", "st", "tr", "sk", "sn"]
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ou"]
_CODAS = ["", "", "", "n", "r", "l", "m", "k", "t"]


@dataclasses.dataclass(frozen=True)
class GrammarConfig:
    """Sizes of the language. The defaults give ~810 word types, like the calibrated toy setting
    (shared notes: ~760 types); the vocabulary sets the cost of the models' softmax."""

    nouns: int = 200
    verbs: int = 80
    adjs: int = 60
    advs: int = 30
    propns: int = 40
    clusters: int = 8
    zipf: float = 1.1
    cluster_affinity: float = 0.8  # P(a verb's object noun comes from the verb's own cluster)
    lexicon_seed: int = 1234


class Grammar:
    """The lexicon plus a sampler of tagged sentences and documents (deterministic per seed)."""

    def __init__(self, config: GrammarConfig = GrammarConfig()):
        self.config = c = config
        stems = _pseudo_words(c.nouns + c.verbs + c.adjs + c.advs + c.propns, c.lexicon_seed)
        taken = iter(stems)
        self.nouns = [next(taken) for _ in range(c.nouns)]  # stems; plural = stem + "s"
        self.verbs = [next(taken) for _ in range(c.verbs)]  # bare; 3sg = +"s"; past = +"ed"
        self.adjs = [next(taken) for _ in range(c.adjs)]
        self.advs = [next(taken) + "ly" for _ in range(c.advs)]
        self.propns = [next(taken).capitalize() for _ in range(c.propns)]
        zipf = lambda n: _cdf(np.arange(1, n + 1, dtype=np.float64) ** -c.zipf)
        self._p = {"noun": zipf(c.nouns), "verb": zipf(c.verbs), "adj": zipf(c.adjs),
                   "adv": zipf(c.advs), "propn": zipf(c.propns)}
        # Cluster k holds nouns k, k+C, k+2C, ... (so every cluster has frequent and rare members).
        self._cluster_nouns = [np.arange(k, c.nouns, c.clusters) for k in range(c.clusters)]
        weights = np.arange(1, c.nouns + 1, dtype=np.float64) ** -c.zipf
        self._cluster_cdf = [_cdf(weights[idx]) for idx in self._cluster_nouns]
        words = self.vocabulary()[2:]
        if len(set(words)) != len(words):  # a plural/3sg form colliding with another word
            raise SeedKLError(f"grammar: lexicon_seed={c.lexicon_seed} gives colliding word forms; "
                              "pick another lexicon_seed")

    # -- lexicon ---------------------------------------------------------------------------
    def vocabulary(self) -> list[str]:
        """Every word the language can produce: [EOS, UNK, closed..., open...] (tokenizer order)."""
        open_words = ([w for n in self.nouns for w in (n, n + "s")]
                      + [w for v in self.verbs for w in (v, v + "s", v + "ed")]
                      + self.adjs + self.advs + self.propns)
        return [EOS, UNK] + CLOSED_WORDS + open_words

    # -- sampling --------------------------------------------------------------------------
    def sentence(self, rng: np.random.Generator) -> list[Word]:
        """One sentence: clause [(, CCONJ | SCONJ) clause] '.'."""
        out = self._clause(rng)
        u = rng.random()
        if u < 0.15:
            out += [(",", "PUNCT", ","), _pick(rng, _CCONJ, "CCONJ")] + self._clause(rng)
        elif u < 0.25:
            out += [_pick(rng, _SCONJ, "SCONJ")] + self._clause(rng)
        return out + [(".", "PUNCT", ".")]

    def document(self, rng: np.random.Generator, min_sentences: int = 3, max_sentences: int = 12
                 ) -> list[Word]:
        n = int(rng.integers(min_sentences, max_sentences + 1))
        return [w for _ in range(n) for w in self.sentence(rng)]

    def _clause(self, rng) -> list[Word]:
        subj, plural = self._subject(rng)
        out = subj + self._predicate(rng, plural)
        if rng.random() < 0.3:  # PP: ADP NP
            out += [_pick(rng, _ADP, "ADP")] + self._noun_phrase(rng, cluster=None)[0]
        return out

    def _subject(self, rng) -> tuple[list[Word], bool]:
        u = rng.random()
        if u < 0.2:
            plural = rng.random() < 0.4
            return [_pick(rng, _PRON_SUBJ_PL if plural else _PRON_SUBJ_SG, "PRON")], plural
        if u < 0.35:
            return [(self.propns[self._draw(rng, "propn")], "PROPN", "NNP")], False
        return self._noun_phrase(rng, cluster=None)

    def _noun_phrase(self, rng, cluster: int | None) -> tuple[list[Word], bool]:
        """DET [ADJ] NOUN, agreeing in number; the noun from `cluster` when given."""
        plural = rng.random() < 0.35
        out = [_pick(rng, _DET_PL if plural else _DET_SG, "DET")]
        if rng.random() < 0.3:
            out.append((self.adjs[self._draw(rng, "adj")], "ADJ", "JJ"))
        if cluster is None:
            i = self._draw(rng, "noun")
        else:
            i = int(self._cluster_nouns[cluster][_sample(rng, self._cluster_cdf[cluster])])
        stem = self.nouns[i]
        out.append((stem + "s", "NOUN", "NNS") if plural else (stem, "NOUN", "NN"))
        return out, plural

    def _predicate(self, rng, plural: bool) -> list[Word]:
        """Verb group agreeing with the subject's number, then object / adverb."""
        vi = self._draw(rng, "verb")
        v = self.verbs[vi]
        u = rng.random()
        if u < 0.45:  # present: 3sg "-s" vs bare
            out = [(v, "VERB", "VBP") if plural else (v + "s", "VERB", "VBZ")]
        elif u < 0.75:
            out = [(v + "ed", "VERB", "VBD")]
        elif u < 0.9:
            out = [_pick(rng, _MODALS, "AUX"), (v, "VERB", "VB")]
        else:  # negated: does/do/did not + bare verb
            aux = ("did", "AUX", "VBD") if rng.random() < 0.3 else (
                ("do", "AUX", "VBP") if plural else ("does", "AUX", "VBZ"))
            out = [aux, ("not", "PART", "RB"), (v, "VERB", "VB")]
        if rng.random() < 0.8:  # transitive: object from the verb's cluster (mostly)
            if rng.random() < 0.15:
                out.append(_pick(rng, _PRON_OBJ, "PRON"))
            else:
                own = rng.random() < self.config.cluster_affinity
                cluster = vi % self.config.clusters if own else None
                out += self._noun_phrase(rng, cluster=cluster)[0]
        if rng.random() < 0.2:
            out.append((self.advs[self._draw(rng, "adv")], "ADV", "RB"))
        return out

    def _draw(self, rng, kind: str) -> int:
        return _sample(rng, self._p[kind])


def _pick(rng, table, upos: str) -> Word:
    word, xpos, _ = table[_sample(rng, _cdf(np.array([w for _, _, w in table], np.float64)))]
    return (word, upos, xpos)


def _cdf(weights: np.ndarray) -> np.ndarray:
    c = np.cumsum(weights)
    return c / c[-1]


def _sample(rng: np.random.Generator, cdf: np.ndarray) -> int:
    """One index drawn with probabilities given by a normalised cumulative distribution."""
    return min(int(np.searchsorted(cdf, rng.random(), side="right")), len(cdf) - 1)


def _pseudo_words(n: int, seed: int) -> list[str]:
    """n distinct two-syllable lowercase stems, none ending in 's', none a closed-class word."""
    rng = np.random.default_rng(seed)
    seen: set[str] = set(CLOSED_WORDS)
    out: list[str] = []
    while len(out) < n:
        w = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(2)) + rng.choice(_CODAS)
        # Reject stems whose derived forms could collide (w+"s" / w+"ed" equal to another stem).
        if w in seen or w.endswith(("s", "ed")) or len(w) < 4:
            continue
        seen.add(w)
        out.append(w)
    return out


# -- corpora -----------------------------------------------------------------------------------
def generate_documents(grammar: Grammar, seed: int, n_sentences: int) -> list[list[Word]]:
    """Documents totalling at least `n_sentences` sentences, deterministic in `seed`."""
    rng = np.random.default_rng(seed)
    docs, total = [], 0
    while total < n_sentences:
        doc = grammar.document(rng)
        docs.append(doc)
        total += sum(1 for w in doc if w[0] == ".")
    return docs


def documents_text(docs: list[list[Word]]) -> str:
    """Words joined by spaces, documents joined by `<|endoftext|>` (the study's --text format)."""
    return EOS.join(" ".join(w for w, _, _ in doc) for doc in docs)


def generate_corpus(seed: int, n_sentences: int, config: GrammarConfig = GrammarConfig()
                    ) -> tuple[str, list[list[Word]]]:
    """(text, tagged documents) for one sample of the language."""
    docs = generate_documents(Grammar(config), seed, n_sentences)
    return documents_text(docs), docs


# -- minimal pairs -----------------------------------------------------------------------------
PAIR_TASKS = {  # UID -> (BLiMP-style field, linguistics_term)
    "verb_object_cluster": ("semantics", "selection"),
    "subject_verb_agreement": ("morphology", "subject_verb_agreement"),
    "determiner_noun_agreement": ("morphology", "determiner_noun_agreement"),
}


def minimal_pairs(grammar: Grammar, seed: int, n_per_task: int = 50) -> list[dict]:
    """BLiMP-format pairs (sentence_good, sentence_bad, UID, field, linguistics_term, pairID) that differ
    in one word, drawn from the language's own regularities (deterministic in `seed`):
      verb_object_cluster        "the N1 Ved the N2 ." with N2 from the verb's cluster vs from another
                                 cluster (the language's 80 % preference, not a hard rule);
      subject_verb_agreement     "the N(s) V(s) the N2 ." with the verb agreeing vs not;
      determiner_noun_agreement  "a/this/every N Ved the N2 ." with the singular noun vs its plural."""
    g, c = grammar, grammar.config
    rng = np.random.default_rng([seed, 20])  # its own stream: never the training or evaluation sample
    own = lambda k: g.nouns[int(g._cluster_nouns[k][_sample(rng, g._cluster_cdf[k])])]  # noqa: E731
    out = []
    for task in PAIR_TASKS:
        for _ in range(n_per_task):
            subj = g.nouns[g._draw(rng, "noun")]
            vi = g._draw(rng, "verb")
            v, k = g.verbs[vi], vi % c.clusters
            obj = own(k)
            if task == "verb_object_cluster":
                other = own(int((k + 1 + rng.integers(c.clusters - 1)) % c.clusters))
                good, bad = (f"the {subj} {v}ed the {n} ." for n in (obj, other))
            elif task == "subject_verb_agreement":
                plural = bool(rng.random() < 0.5)
                forms = (v, v + "s") if plural else (v + "s", v)
                good, bad = (f"the {subj + 's' if plural else subj} {f} the {obj} ." for f in forms)
            else:
                det = _pick(rng, [d for d in _DET_SG if d[0] != "the"], "DET")[0]
                good, bad = (f"{det} {n} {v}ed the {obj} ." for n in (subj, subj + "s"))
            field, term = PAIR_TASKS[task]
            out.append({"sentence_good": good, "sentence_bad": bad, "UID": task, "field": field,
                        "linguistics_term": term, "pairID": str(len(out))})
    return out


def write_minimal_pairs(grammar: Grammar, seed: int, path: str | os.PathLike, n_per_task: int = 50) -> Path:
    """`minimal_pairs(...)` as JSONL at `path` (the study's --minimal_pairs), written atomically."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text("".join(json.dumps(p) + "\n" for p in minimal_pairs(grammar, seed, n_per_task)), encoding="utf-8")
    os.replace(tmp, path)
    return path


def build_tokenizer(grammar: Grammar):
    """Word-level `tokenizers.Tokenizer` over the whole lexicon: `<|endoftext|>` = 0, `[UNK]` = 1."""
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers

    vocab = {w: i for i, w in enumerate(grammar.vocabulary())}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens([AddedToken(EOS, special=True), AddedToken(UNK, special=True)])
    return tok


def save_tokenizer(tok, directory: str | os.PathLike) -> Path:
    """Write tokenizer.json (+ a tokenizer_config.json so transformers' AutoTokenizer reads it too)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    tok.save(str(d / "tokenizer.json"))
    (d / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": EOS, "eos_token": EOS,
        "unk_token": UNK, "model_max_length": 1_000_000}, indent=1))
    return d / "tokenizer.json"


def gold_pos(docs: list[list[Word]], tok) -> list[list]:
    """The study's `--pos=FILE` body for `documents_text(docs)` scored as [eos] + ids + [eos]:
    one `[token_str, upos, xpos]` per id, `[EOS, None, None]` for every `<|endoftext|>`.

    Checks that the tokenizer maps words one to one (no [UNK], no splits); raises otherwise."""
    flat = [(EOS, None, None)] + [w for i, doc in enumerate(docs)
                                  for w in ([(EOS, None, None)] if i else []) + doc] + [(EOS, None, None)]
    enc = tok.encode(documents_text(docs)).tokens
    if enc != [w for w, _, _ in flat[1:-1]]:
        raise SeedKLError("grammar: the tokenizer does not split the generated text into its words; "
                          "build the tokenizer with build_tokenizer() for this grammar")
    return [[w, u, x] for w, u, x in flat]
