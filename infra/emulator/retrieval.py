"""BM25 retrieval over sentence-aligned chunks, and extractive sentence selection.

Chunks never cross a page, so every sentence the emulator quotes can be cited to one file and page.
Scores are Okapi BM25 (k1=1.2, b=0.75) over a light-stemmed, stop-word-free vocabulary.
"""

from __future__ import annotations

import heapq
import math
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache

K1 = 1.2
B = 0.75
CHUNK_WORDS = 120
MAX_SENTENCE_WORDS = 90
# Shorter "sentences" are headings or fragments; they are indexed but never quoted as an answer.
MIN_SENTENCE_WORDS = 8

_TOKEN = re.compile(r"[a-z0-9]+")
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+|\n\s*\n")
_STOPWORDS = frozenset(
    (
        "a",
        "about",
        "above",
        "after",
        "again",
        "against",
        "all",
        "am",
        "an",
        "and",
        "any",
        "are",
        "as",
        "at",
        "be",
        "because",
        "been",
        "before",
        "being",
        "below",
        "between",
        "both",
        "but",
        "by",
        "can",
        "could",
        "did",
        "do",
        "does",
        "doing",
        "down",
        "during",
        "each",
        "few",
        "for",
        "from",
        "further",
        "had",
        "has",
        "have",
        "having",
        "he",
        "her",
        "here",
        "hers",
        "herself",
        "him",
        "himself",
        "his",
        "how",
        "i",
        "if",
        "in",
        "into",
        "is",
        "it",
        "its",
        "itself",
        "just",
        "me",
        "more",
        "most",
        "my",
        "myself",
        "no",
        "nor",
        "not",
        "now",
        "of",
        "off",
        "on",
        "once",
        "only",
        "or",
        "other",
        "our",
        "ours",
        "ourselves",
        "out",
        "over",
        "own",
        "same",
        "she",
        "should",
        "so",
        "some",
        "such",
        "than",
        "that",
        "the",
        "their",
        "theirs",
        "them",
        "themselves",
        "then",
        "there",
        "these",
        "they",
        "this",
        "those",
        "through",
        "to",
        "too",
        "under",
        "until",
        "up",
        "very",
        "was",
        "we",
        "were",
        "what",
        "when",
        "where",
        "which",
        "while",
        "who",
        "whom",
        "why",
        "will",
        "with",
        "would",
        "you",
        "your",
        "yours",
        "yourself",
        "yourselves",
        "tell",
        "please",
        "describe",
        "explain",
        "give",
        "list",
        "much",
        "many",
    )
)


@lru_cache(maxsize=200_000)
def stem(word: str) -> str:
    """A small, deterministic suffix stripper (enough to match plurals and verb forms)."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 5 and word.endswith("ing"):
        return word[:-3]
    if len(word) > 4 and word.endswith("ed"):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def tokenize(text: str) -> list[str]:
    """Lower-case, split on non-alphanumerics, drop stop words, stem."""
    return [stem(t) for t in _TOKEN.findall(text.lower()) if t not in _STOPWORDS]


def split_sentences(text: str) -> list[str]:
    """Split text into whitespace-normalised sentences; blank lines end a sentence too."""
    sentences = []
    for raw in _SENTENCE_END.split(text):
        sentence = " ".join(raw.split())
        if sentence:
            sentences.append(sentence)
    return sentences


@dataclass
class Chunk:
    """A run of whole sentences from one page of one file."""

    file_id: str
    page: int | None
    sentences: list[str]
    sentence_terms: list[frozenset[str]]
    length: int

    @property
    def text(self) -> str:
        """The chunk as one string."""
        return " ".join(self.sentences)


def make_chunks(file_id: str, pages: Iterable[tuple[int | None, str]]) -> list[tuple[Chunk, Counter[str]]]:
    """Cut each page into chunks of about ``CHUNK_WORDS`` words, returning each with its term counts."""
    out: list[tuple[Chunk, Counter[str]]] = []
    for page, text in pages:
        sentences: list[str] = []
        terms: list[frozenset[str]] = []
        counts: Counter[str] = Counter()
        words = 0
        for sentence in split_sentences(text):
            tokens = tokenize(sentence)
            sentences.append(sentence)
            terms.append(frozenset(tokens))
            counts.update(tokens)
            words += len(tokens)
            if words >= CHUNK_WORDS:
                out.append((Chunk(file_id, page, sentences, terms, words), counts))
                sentences, terms, counts, words = [], [], Counter(), 0
        if sentences:
            out.append((Chunk(file_id, page, sentences, terms, words), counts))
    return out


@dataclass
class Hit:
    """A ranked chunk."""

    chunk_id: int
    score: float


@dataclass
class Index:
    """An inverted index with BM25 ranking; one per assistant."""

    chunks: dict[int, Chunk] = field(default_factory=dict)
    postings: dict[str, dict[int, int]] = field(default_factory=dict)
    by_file: dict[str, list[int]] = field(default_factory=dict)
    total_length: int = 0
    _next_id: int = 0

    def add_file(self, file_id: str, pages: Iterable[tuple[int | None, str]]) -> None:
        """Index every chunk of a file."""
        ids = self.by_file.setdefault(file_id, [])
        postings = self.postings
        for chunk, counts in make_chunks(file_id, pages):
            cid = self._next_id
            self._next_id += 1
            self.chunks[cid] = chunk
            ids.append(cid)
            self.total_length += chunk.length
            for term, tf in counts.items():
                bucket = postings.get(term)
                if bucket is None:
                    postings[term] = {cid: tf}
                else:
                    bucket[cid] = tf

    def remove_file(self, file_id: str) -> None:
        """Forget a file's chunks."""
        for cid in self.by_file.pop(file_id, []):
            chunk = self.chunks.pop(cid)
            self.total_length -= chunk.length
            for term in set().union(*chunk.sentence_terms) if chunk.sentence_terms else ():
                bucket = self.postings.get(term)
                if bucket is not None:
                    bucket.pop(cid, None)
                    if not bucket:
                        del self.postings[term]

    def idf(self, term: str) -> float:
        """BM25's idf, never negative."""
        n = len(self.chunks)
        df = len(self.postings.get(term, ()))
        return math.log(1.0 + (n - df + 0.5) / (df + 0.5))

    def search(self, terms: Iterable[str], k: int, allowed: set[str] | None = None) -> list[Hit]:
        """Return the ``k`` best chunks for ``terms``, searching only files in ``allowed`` when given.

        Rare terms are scored first; a term found in more than 5 % of chunks then only adds to chunks that a
        rarer term already found (it cannot lift an unrelated chunk into the top k by itself), which keeps a
        query fast on a large corpus without changing which chunks win.
        """
        chunks = self.chunks
        if not chunks:
            return []
        avgdl = self.total_length / len(chunks) or 1.0
        common = max(50, len(chunks) // 20)
        scores: dict[int, float] = {}
        unique = sorted(set(terms), key=lambda t: (len(self.postings.get(t, ())), t))
        for term in unique:
            bucket = self.postings.get(term)
            if not bucket:
                continue
            idf = self.idf(term)
            if scores and len(bucket) > common:
                pairs = [(cid, bucket[cid]) for cid in scores if cid in bucket]
            else:
                pairs = list(bucket.items())
            for cid, tf in pairs:
                chunk = chunks[cid]
                if allowed is not None and chunk.file_id not in allowed:
                    continue
                norm = tf * (K1 + 1) / (tf + K1 * (1 - B + B * chunk.length / avgdl))
                scores[cid] = scores.get(cid, 0.0) + idf * norm
        best = heapq.nlargest(k, scores.items(), key=lambda item: (item[1], -item[0]))
        return [Hit(cid, score) for cid, score in best]


@dataclass(frozen=True)
class Pick:
    """A sentence chosen for the answer, with where it came from."""

    text: str
    chunk_id: int
    terms: frozenset[str]
    score: float


# A sentence after the best one is quoted only if the query terms it matches weigh at least this share of
# what the best sentence matches: one shared common word ("long", "employee") does not make a sentence bear on
# the question (issue 12: the free-trial answer used to add a password rule and the PTO policy).
RELEVANT_SHARE = 0.6


def pick_sentences(index: Index, query_terms: list[str], hits: list[Hit], limit: int = 3) -> list[Pick]:
    """Up to ``limit`` distinct sentences that best cover the query, best first, none far weaker than the best."""
    weights = {t: index.idf(t) for t in dict.fromkeys(query_terms)}
    candidates: list[tuple[float, int, int, Pick]] = []
    for rank, hit in enumerate(hits):
        chunk = index.chunks[hit.chunk_id]
        for position, (sentence, terms) in enumerate(zip(chunk.sentences, chunk.sentence_terms, strict=True)):
            matched = terms.intersection(weights)
            words = len(sentence.split())
            if not matched or not MIN_SENTENCE_WORDS <= words <= MAX_SENTENCE_WORDS:
                continue
            score = sum(weights[t] for t in matched) + 0.1 * hit.score / (rank + 1)
            candidates.append((-score, rank, position, Pick(sentence, hit.chunk_id, frozenset(matched), score)))
    candidates.sort(key=lambda item: item[:3])
    picks: list[Pick] = []
    seen: set[str] = set()
    best = 0.0
    for _, _, _, pick in candidates:
        key = pick.text.lower()
        if key in seen:
            continue
        coverage = sum(weights[t] for t in pick.terms)
        best = best or coverage
        if coverage < RELEVANT_SHARE * best:
            continue
        seen.add(key)
        picks.append(pick)
        if len(picks) == limit:
            break
    return picks
