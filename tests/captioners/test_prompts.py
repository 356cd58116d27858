"""Text processing with known answers: sentence splitting, the DSG question-list parser, DSG-Video
arithmetic, categories, sampling and frame sizing."""

from __future__ import annotations

import pyarrow as pa
import pytest

from captioners.categorize import category_distribution
from captioners.dsg import dsg_report, in_sample
from captioners.frames import sample_indices
from captioners.prompts import (CATEGORY_NAMES, DSGCounts, categorize_prompt, dsg_answer_prompt, dsg_counts,
                                dsg_metrics, dsg_question_prompt, parse_dsg_questions,
                                split_sentences)
from captioners.vlm import smart_resize

LLM_OUTPUT = """Answer:
1 | cat | Is there a cat?
1 | red couch | Is the couch red?
1, 2 | Cat | Is there a cat in the video?
S2 | window | Is there a window?
- 3 | lamp | Is there a lamp?
2 and 3 | the dog |
7 | ghost | Is there a ghost?
Here are the objects:
camera zoom
"""


def test_split_sentences() -> None:
    assert split_sentences("A cat sits. It looks up! Why? ") == ["A cat sits.", "It looks up!", "Why?"]
    assert split_sentences("no punctuation at all") == ["no punctuation at all"]
    assert split_sentences("  ") == []
    assert split_sentences("Version 2.5 is out. Yes.") == ["Version 2.5 is out.", "Yes."]


def test_parse_dsg_questions_known_answer() -> None:
    questions, unparsed = parse_dsg_questions(LLM_OUTPUT, n_sentences=3)
    items = {q.item: q for q in questions}
    assert [q.item for q in questions] == ["cat", "red couch", "window", "lamp", "dog"]
    assert items["cat"].sentences == (0, 1)  # merged from two lines, case-insensitive
    assert items["cat"].question == "Is there a cat?"  # the first question is kept
    assert items["window"].sentences == (1,)
    assert items["lamp"].sentences == (2,)
    assert items["dog"].sentences == (1, 2) and items["dog"].question == ""
    # "7 | ghost" names no existing sentence; the two prose lines are not in the format
    assert "ghost" not in items
    assert unparsed == 3


def test_parse_dsg_questions_empty_and_garbage() -> None:
    assert parse_dsg_questions("", 2) == ([], 0)
    questions, unparsed = parse_dsg_questions("�ctszl obj\n|||\n12x", 2)
    assert questions == [] and unparsed == 3


def test_dsg_counts_and_metrics_known_answer() -> None:
    questions, _ = parse_dsg_questions(LLM_OUTPUT, n_sentences=3)  # cat, red couch, window, lamp, dog
    present = [[True, False], [False, False], [False, True], [False, False], [True, True]]
    c = dsg_counts(questions, present, 3)
    # red couch (sentence 0) and lamp (sentence 2) are hallucinated -> sentences 0 and 2
    assert c == DSGCounts(objects=5, hallucinated=2, sentences=3, sentences_hallucinated=2)
    other = DSGCounts(objects=3, hallucinated=0, sentences=2, sentences_hallucinated=0)
    m = dsg_metrics([c, other])
    assert m["total_objects"] == 8 and m["hallucinated_objects"] == 2
    assert m["dsg_video_i"] == pytest.approx(2 / 8)
    assert m["dsg_video_s"] == pytest.approx(2 / 5)
    assert dsg_metrics([])["dsg_video_i"] is None
    with pytest.raises(ValueError):
        dsg_counts(questions, present[:2], 3)


def test_dsg_report_from_manifest_columns() -> None:
    detail = '{"items": [{"item": "cat"}, {"item": "sofa"}], "vlm": "m (untrained)", "llm": "m (untrained)"}'
    clips = pa.table({"clip_id": ["a", "b", "c"], "dsg_objects": [2, None, 4], "dsg_hallucinated": [1, None, 0],
                      "dsg_sentences": [2, None, 3], "dsg_sentences_hallucinated": [1, None, 0],
                      "dsg_detail": [detail, None, '{"items": [{"item": "cat"}, {"item": "dog"}]}']})
    report = dsg_report(clips)
    assert report["captions"] == 2 and report["total_objects"] == 6
    assert report["dsg_video_i"] == pytest.approx(1 / 6) and report["dsg_video_s"] == pytest.approx(1 / 5)
    assert report["unique_objects"] == 3 and report["untrained_model"] is True
    assert [c["clip_id"] for c in report["clips"]] == ["a", "c"]


def test_prompts_mention_what_they_must() -> None:
    text = categorize_prompt("A dog runs.")
    assert all(f"- {name}:" in text for name in CATEGORY_NAMES) and "A dog runs." in text
    q = dsg_question_prompt(["A cat sits.", "It sleeps."])
    assert "1. A cat sits.\n2. It sleeps." in q
    assert dsg_answer_prompt("apple") == "Is there an apple in this image? Answer yes or no."
    assert dsg_answer_prompt("cat", "Is there a cat in the video?") == "Is there a cat in the image? Answer yes or no."


def test_category_distribution() -> None:
    clips = pa.table({"category": ["sports", "sports", None, "food", "food"], "keep": [True, True, True, False, True],
                      "category_untrained": [True, True, None, True, True]})
    dist = category_distribution(clips)
    assert dist["clips"] == 3 and dist["counts"]["sports"] == 2 and dist["counts"]["food"] == 1
    assert dist["fractions"]["sports"] == pytest.approx(2 / 3)
    assert sum(dist["counts"].values()) == 3 and set(dist["counts"]) == set(CATEGORY_NAMES)


def test_sample_is_deterministic_and_proportional() -> None:
    ids = [f"video-{i:07d}-{i + 50:07d}" for i in range(4000)]
    picked = [in_sample(c, 0.25) for c in ids]
    assert picked == [in_sample(c, 0.25) for c in ids]
    assert 0.22 < sum(picked) / len(ids) < 0.28
    assert all(in_sample(c, 1.0) for c in ids[:10]) and not any(in_sample(c, 0.0) for c in ids[:10])


def test_sample_indices() -> None:
    row = {"start_frame": 100, "end_frame": 200, "fps": 25.0, "clip_duration_s": 4.0}
    idx, step = sample_indices(row, 8)
    assert len(idx) == 8 and idx[0] == 100 and idx[-1] == 199 and all(100 <= i < 200 for i in idx)
    assert step == pytest.approx(99 / 7 / 25)
    idx, _ = sample_indices(row, 8, fps=2.0)  # 4 s at 2 fps
    assert len(idx) == 8
    idx, _ = sample_indices(row, 8, fps=30.0, max_frames=16)
    assert len(idx) == 16
    one = {"start_frame": 5, "end_frame": 6, "fps": 30.0}
    assert sample_indices(one, 8) == ([5], pytest.approx(1 / 30))


@pytest.mark.parametrize("hw", [(720, 1280), (1080, 1920), (1, 1), (1, 500), (3000, 2), (320, 568)])
def test_smart_resize(hw: tuple[int, int]) -> None:
    h, w = smart_resize(*hw, factor=28, min_pixels=28 * 28 * 4, max_pixels=448 * 448)
    assert h % 28 == 0 and w % 28 == 0
    assert 28 * 28 <= h * w <= 448 * 448
    if min(hw) > 100:  # aspect kept within one patch step
        assert abs(h / w - hw[0] / hw[1]) < 0.15 * hw[0] / hw[1]
