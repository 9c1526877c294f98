from __future__ import annotations

from infra.emulator.retrieval import Index, pick_sentences, split_sentences, stem, tokenize


def test_tokenize_drops_stop_words_and_stems() -> None:
    assert tokenize("The kettles are boiling quickly") == ["kettle", "boil", "quickly"]
    assert stem("policies") == "policy"


def test_split_sentences_normalises_whitespace_and_blank_lines() -> None:
    assert split_sentences("One  line\nwrapped. Two!\n\nHeading\nThree?") == [
        "One line wrapped.",
        "Two!",
        "Heading Three?",
    ]


def _index() -> Index:
    index = Index()
    index.add_file(
        "a",
        [
            (1, "Cats usually sleep for about sixteen hours every day. Cats purr loudly when they feel content."),
            (2, "Dogs often bark loudly at strangers who approach the house."),
        ],
    )
    index.add_file(
        "b", [(None, "Parrots can mimic human speech with surprising accuracy. Parrots live long lives in captivity.")]
    )
    return index


def test_search_ranks_relevant_chunk_first_and_respects_allow() -> None:
    index = _index()
    hits = index.search(tokenize("how long do cats sleep"), 3)
    assert index.chunks[hits[0].chunk_id].file_id == "a"
    assert index.chunks[hits[0].chunk_id].page == 1
    assert index.search(tokenize("cats sleep"), 3, allowed={"b"}) == []


def test_remove_file_forgets_its_chunks() -> None:
    index = _index()
    index.remove_file("a")
    assert index.search(tokenize("cats"), 3) == []
    assert "cat" not in index.postings


def test_pick_sentences_is_deterministic_and_relevant() -> None:
    index = _index()
    terms = tokenize("what do parrots mimic")
    picks = pick_sentences(index, terms, index.search(terms, 5))
    assert picks[0].text == "Parrots can mimic human speech with surprising accuracy."
    assert picks == pick_sentences(index, terms, index.search(terms, 5))


def test_pick_sentences_leaves_out_sentences_sharing_only_a_common_word() -> None:
    index = Index()
    index.add_file(
        "p",
        [
            (None, "Every plan starts with a fourteen day free trial that needs no credit card at signup."),
            (None, "Passwords must be at least sixteen characters long and kept in the password manager."),
            (None, "Employees accrue paid time off that is credited monthly to their leave balance."),
            (None, "A credit card is needed only when the free trial of the starter plan ends."),
        ],
    )
    terms = tokenize("How long is the free trial and does it need a credit card?")
    picks = [p.text for p in pick_sentences(index, terms, index.search(terms, 8))]
    assert sorted(picks) == [
        "A credit card is needed only when the free trial of the starter plan ends.",
        "Every plan starts with a fourteen day free trial that needs no credit card at signup.",
    ]
