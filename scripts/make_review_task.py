"""Writes the bundled task `outlier_reviews`: short reviews labelled with two invented words.

Every review is built from the lists below (written for Outlier Lab): a thing reviewed, an
optional neutral opener, a positive or negative verdict phrase and an optional closer. A
liked thing is labelled " zing", a disliked one " plok": words the base model has no reason
to tie to sentiment, so it sits at chance until a fine-tune maps the sentiment it already
reads onto them. The two labels have the same length in characters and in SmolLM2 tokens,
so neither wins on length alone.

The verdict phrases are split: the held-out rows use phrases no training row uses, so the
held-out accuracy rewards reading sentiment, not remembering phrases. Seeded and
deterministic: running it again rewrites the same files.

    .venv/bin/python scripts/make_review_task.py
"""

from __future__ import annotations

import json
import random
from pathlib import Path

OUT = Path(__file__).parents[1] / "outlier_core" / "data" / "tasks" / "outlier_reviews"
SEED = 12
N_TRAIN = 400
N_TEST = 160
LABELS = {True: " zing", False: " plok"}
HELD_OUT_SHARE = 4  # every 4th verdict phrase is kept for the held-out rows

THINGS = (
    "The pasta", "This kettle", "The hotel room", "Their customer service", "The new phone",
    "The concert", "This novel", "The bike repair", "The hiking boots", "The museum tour",
    "The coffee", "This laptop", "The haircut", "The train journey", "The sofa",
    "The garden centre", "The sourdough", "The film", "The tent", "This board game",
    "The dental visit", "The yoga class", "The rental car", "The headphones", "The curry",
    "This backpack", "The plumber", "The sequel", "The ferry crossing", "The desk lamp",
)

LIKED = (
    "was wonderful", "exceeded every expectation", "made my whole week", "was worth every penny",
    "felt like a real treat", "worked flawlessly from day one", "left me grinning",
    "was a delight from start to finish", "is the best I have tried", "impressed the whole family",
    "was quick and friendly", "turned out beautifully", "was a lovely surprise",
    "was not bad at all, in fact it was great", "beat the glowing reviews", "was superb",
    "felt carefully made", "was pure joy", "did everything it promised", "won me over completely",
)

DISLIKED = (
    "was a huge disappointment", "broke after two days", "was a waste of money", "left me furious",
    "was dreadful from start to finish", "made me regret going", "fell apart almost at once",
    "was rude and slow", "smelled awful", "is the worst I have tried", "ruined our evening",
    "was bland and overpriced", "was a complete mess", "was not worth the wait at all",
    "failed in every way", "was shoddy", "felt cheap and flimsy", "was a chore to sit through",
    "did nothing it promised", "annoyed everyone involved",
)

OPENERS = (
    "", "", "I tried it last weekend. ", "My neighbour recommended it. ", "We went on a rainy Tuesday. ",
    "I had waited months for this. ", "A friend paid for it. ", "It was my first time. ",
)

CLOSERS = {
    True: ("", "", " Highly recommended.", " I will be back.", " Five stars."),
    False: ("", "", " Never again.", " Avoid it.", " One star."),
}


def split_phrases(phrases: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(train phrases, held-out phrases): every HELD_OUT_SHARE-th phrase is held out."""
    held = tuple(p for i, p in enumerate(phrases) if i % HELD_OUT_SHARE == HELD_OUT_SHARE - 1)
    return tuple(p for p in phrases if p not in held), held


def review(rng: random.Random, liked: bool, phrases: tuple[str, ...]) -> dict[str, str]:
    text = f"{rng.choice(OPENERS)}{rng.choice(THINGS)} {rng.choice(phrases)}.{rng.choice(CLOSERS[liked])}"
    return {"prompt": f"Review: {text}\nVerdict:", "completion": LABELS[liked]}


def rows(rng: random.Random, n: int, phrase_sets: dict[bool, tuple[str, ...]], taken: set[str]) -> list[dict[str, str]]:
    """n distinct rows, half of each label, shuffled; prompts already in `taken` are skipped."""
    out = []
    for liked in (True, False):
        made = 0
        while made < n // 2:
            row = review(rng, liked, phrase_sets[liked])
            if row["prompt"] not in taken:
                taken.add(row["prompt"])
                out.append(row)
                made += 1
    rng.shuffle(out)
    return out


def make_task(seed: int = SEED) -> dict[str, list[dict[str, str]]]:
    """{"train": rows, "test": rows}: no prompt repeats, within or across the splits."""
    rng = random.Random(seed)
    liked_train, liked_test = split_phrases(LIKED)
    disliked_train, disliked_test = split_phrases(DISLIKED)
    taken: set[str] = set()
    train = rows(rng, N_TRAIN, {True: liked_train, False: disliked_train}, taken)
    test = rows(rng, N_TEST, {True: liked_test, False: disliked_test}, taken)
    return {"train": train, "test": test}


def jsonl(rows_: list[dict[str, str]]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows_)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for split, split_rows in make_task().items():
        (OUT / f"{split}.jsonl").write_text(jsonl(split_rows), encoding="utf-8")


if __name__ == "__main__":
    main()
