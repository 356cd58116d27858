"""Prompts, the caption taxonomy, and parsing of what the language models answer.

Everything here is plain text processing, so the parsing and the DSG-Video arithmetic are tested on fixed
strings with known answers.

Caption categories. The paper sorts captions into categories with an LLM and shows their distribution (STIV
Fig. 17) without listing them; this fixed taxonomy covers the content classes that the public video-curation
pipelines tag (people, sports, animals, nature, cities, vehicles, food, performance, talks, technology,
crafts, fashion, games/animation, text graphics), plus ``other``. Each category has one snake_case name (what
the LLM must answer and what the ``category`` column holds) and a description (shown to the LLM).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# One template for dense captions: subjects, actions, scene, camera motion, style (issue 4).
DENSE_CAPTION_PROMPT = (
    "Describe this video in detail. Mention the main subjects and their appearance, what each of them does, "
    "the scene and background, the camera motion (static, pan, tilt, zoom, tracking, handheld) and the visual "
    "style (lighting, colour, realism or animation). Write plain sentences, without lists or headings."
)


@dataclass(frozen=True, slots=True)
class Category:
    name: str  # the label the LLM answers and the ``category`` column holds
    description: str  # what belongs here, shown to the LLM


CATEGORIES: tuple[Category, ...] = (
    Category("people", "people in everyday life: talking, walking, working, family, vlogs, crowds"),
    Category("sports", "sports, exercise, fitness, outdoor games and athletic activities"),
    Category("animals", "animals, pets, birds, fish, insects, wildlife"),
    Category("nature", "landscapes, sky, sea, mountains, forests, plants, weather, natural phenomena"),
    Category("city", "cities, streets, buildings, architecture, rooms and public places without a main person"),
    Category("vehicles", "cars, trucks, trains, planes, boats, bicycles, traffic, driving footage"),
    Category("food", "food, drinks, cooking, kitchens, restaurants"),
    Category("performance", "music, concerts, dance, theatre, stage shows"),
    Category("talk", "interviews, lectures, news, speeches, presentations, a person talking to the camera"),
    Category("technology", "machines, factories, tools, electronics, science, medicine"),
    Category("crafts", "art, drawing, handicraft, DIY, building or repairing things"),
    Category("fashion", "clothes, makeup, hairstyles, beauty, modelling"),
    Category("animation", "cartoons, animation, video games, CGI and other rendered footage"),
    Category("graphics", "mostly text, titles, slides, charts, logos or user-interface screens"),
    Category("other", "anything that fits none of the categories above"),
)
CATEGORY_NAMES: tuple[str, ...] = tuple(c.name for c in CATEGORIES)


def categorize_prompt(caption: str) -> str:
    """The instruction the categorizer LLM answers with exactly one category name."""
    lines = "\n".join(f"- {c.name}: {c.description}" for c in CATEGORIES)
    return (f"Classify the video described by the caption below into exactly one category.\nCategories:\n{lines}\n"
            f"Caption: {caption.strip()}\nAnswer with the category name only.")


# ---------------------------------------------------------------------------------------------------------
# DSG-Video (STIV App. I): caption -> object/detail existence questions -> per-frame answers

DSG_EXAMPLE = (
    "Sentences:\n1. A grey cat sits on a red couch.\n2. The cat looks at a window while the camera zooms in.\n"
    "Answer:\n1 | cat | Is there a cat?\n1 | couch | Is there a couch?\n1 | red couch | Is the couch red?\n"
    "2 | window | Is there a window?\n"
)


def split_sentences(text: str) -> list[str]:
    """Sentences of a caption: split after . ! ? followed by white space; a text without any is one sentence."""
    parts = re.split(r"(?<=[.!?])\s+", text.strip())
    return [p.strip() for p in parts if p.strip()]


def dsg_question_prompt(sentences: list[str]) -> str:
    """Ask for one line per visible object or detail: ``sentence numbers | object | yes/no question``."""
    numbered = "\n".join(f"{i}. {s}" for i, s in enumerate(sentences, 1))
    return ("List every object, person, animal and visual detail that the sentences below say can be seen. "
            "Write one line per item in the form: sentence numbers | item | yes/no question asking whether it "
            "is visible. Do not list camera motion, sounds or feelings.\n"
            f"Example:\n{DSG_EXAMPLE}\nSentences:\n{numbered}\nAnswer:")


def dsg_answer_prompt(item: str, question: str = "") -> str:
    """The per-frame question the VLM answers with yes or no."""
    q = question.strip() or f"Is there {_article(item)} in this image?"
    q = re.sub(r"\bvideo\b", "image", q)
    return f"{q} Answer yes or no."


def _article(item: str) -> str:
    item = item.strip()
    if re.match(r"^(a|an|the|some|two|three|several|many)\b", item, re.I):
        return item
    return ("an " if item[:1].lower() in "aeiou" else "a ") + item


@dataclass(frozen=True, slots=True)
class DSGQuestion:
    item: str  # the object or detail, lower-cased
    question: str  # the LLM's yes/no question ("" if it gave none)
    sentences: tuple[int, ...]  # 0-based indices of the caption sentences that mention it


_LINE = re.compile(
    r"^\s*(?:[-*\u2022]\s*)?(?:s(?:entences?)?\s*)?(\d+(?:\s*(?:,|;|&|and)?\s*s?\d+)*)\s*[|:]\s*([^|]+?)\s*"
    r"(?:\|\s*(.*?))?\s*$", re.IGNORECASE)


def parse_dsg_questions(text: str, n_sentences: int) -> tuple[list[DSGQuestion], int]:
    """Parse the LLM's ``numbers | item | question`` lines.

    Returns the questions (one per distinct item; the sentence sets of repeated items are merged) and how
    many non-empty lines could not be parsed. Sentence numbers are 1-based in the text; numbers outside
    ``1..n_sentences`` are dropped, and an item left with no valid sentence is dropped too.
    """
    found: dict[str, DSGQuestion] = {}
    order: list[str] = []
    unparsed = 0
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.lower().rstrip(":") in ("answer", "sentences", "example"):
            continue
        match = _LINE.match(line)
        if not match:
            unparsed += 1
            continue
        numbers = {int(n) - 1 for n in re.findall(r"\d+", match.group(1))}
        numbers = {n for n in numbers if 0 <= n < n_sentences}
        item = re.sub(r"\s+", " ", match.group(2)).strip().strip(".").lower()
        item = re.sub(r"^(a|an|the)\s+", "", item)
        if not numbers or not item:
            unparsed += 1
            continue
        question = (match.group(3) or "").strip()
        if item in found:
            old = found[item]
            found[item] = DSGQuestion(item, old.question or question, tuple(sorted(set(old.sentences) | numbers)))
        else:
            found[item] = DSGQuestion(item, question, tuple(sorted(numbers)))
            order.append(item)
    return [found[k] for k in order], unparsed


@dataclass(frozen=True, slots=True)
class DSGCounts:
    objects: int  # distinct items the caption mentions
    hallucinated: int  # items no frame shows
    sentences: int  # sentences of the caption
    sentences_hallucinated: int  # sentences that mention at least one hallucinated item


def dsg_counts(questions: list[DSGQuestion], present: list[list[bool]], n_sentences: int) -> DSGCounts:
    """Per-caption DSG-Video counts. ``present[q][f]`` says whether frame ``f`` shows item ``q``; an item no
    frame shows is hallucinated, and so is every sentence that mentions it."""
    if len(present) != len(questions):
        raise ValueError(f"{len(questions)} questions but answers for {len(present)}")
    bad = [q for q, frames in zip(questions, present) if not any(frames)]
    bad_sentences = {s for q in bad for s in q.sentences}
    return DSGCounts(objects=len(questions), hallucinated=len(bad), sentences=n_sentences,
                     sentences_hallucinated=len(bad_sentences))


def dsg_metrics(counts: list[DSGCounts]) -> dict[str, float | int | None]:
    """DSG-Video over many captions: _i = hallucinated items / all items, _s = sentences with a hallucinated
    item / all sentences (fractions; the paper prints them as percentages), and the total item count."""
    objects = sum(c.objects for c in counts)
    hallucinated = sum(c.hallucinated for c in counts)
    sentences = sum(c.sentences for c in counts)
    bad_sentences = sum(c.sentences_hallucinated for c in counts)
    return {
        "captions": len(counts),
        "total_objects": objects,
        "hallucinated_objects": hallucinated,
        "sentences": sentences,
        "hallucinated_sentences": bad_sentences,
        "dsg_video_i": hallucinated / objects if objects else None,
        "dsg_video_s": bad_sentences / sentences if sentences else None,
    }

