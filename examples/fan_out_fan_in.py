"""Fan out over a list, fan back in: one activity per item, all running at once.

``ctx.all`` schedules every task before waiting, so the activities run in
parallel on the runtime's thread pool; its result lists their values in the
order the tasks were given, whichever finished first.

Run it:
    durable run examples/fan_out_fan_in.py:word_report --time-skipping \\
        --input '{"words": ["durable", "workflows", "are", "just", "code"]}'
"""

from __future__ import annotations

import time

from pydantic import BaseModel

from durable import Context, WorkflowResult, activity, workflow


class Batch(BaseModel):
    words: list[str]
    delay_per_letter: float = 0.0
    """For the demo: seconds each activity sleeps per letter (long words finish last)."""


class WordStats(BaseModel):
    word: str
    letters: int
    vowels: int


class Report(BaseModel):
    stats: list[WordStats]
    """One entry per input word, in input order."""
    total_letters: int
    longest: str | None


@activity(name="fan_out_fan_in.analyze_word")
def analyze_word(word: str, delay_per_letter: float = 0.0) -> WordStats:
    """The per-item work (here: counting letters, slowly if asked)."""
    time.sleep(delay_per_letter * len(word))
    return WordStats(word=word, letters=len(word), vowels=sum(c in "aeiou" for c in word.lower()))


@workflow
def word_report(ctx: Context, batch: Batch) -> WorkflowResult[Report]:
    """Analyze every word in parallel, then aggregate."""
    tasks = [
        ctx.call(analyze_word, word, batch.delay_per_letter, name=f"Analyze {word!r}")
        for word in batch.words
    ]
    stats = yield from ctx.all(tasks, name="All words")  # in input order
    return Report(
        stats=stats,
        total_letters=sum(s.letters for s in stats),
        longest=max(batch.words, key=len, default=None),
    )
