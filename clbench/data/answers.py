"""What counts as the same exact-match answer: one normalisation for scoring and for checking the data.

``clbench.eval.probes`` compares a generated answer with the item's answer and aliases after
:func:`normalize`; the stream loader refuses an answer that normalises to nothing (an empty prediction
would match it). Both use this one definition, here in the data layer, which the scorer depends on.
"""

from __future__ import annotations

import re


def normalize(text: str) -> str:
    """Lower-case, collapse whitespace, drop a trailing period and surrounding quotes."""
    text = re.sub(r"\s+", " ", text.strip().lower())
    return text.strip("\"'").rstrip(".").strip()
