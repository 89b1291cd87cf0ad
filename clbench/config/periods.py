"""A period: how often a tier of parameters (or a CMS memory level) updates, counted in steps.

A positive int ``f`` updates at every multiple of ``f``; :data:`NEVER` never updates (P = ∞, the limit of a
period longer than any stream, i.e. frozen). Strategy options are declared with :data:`Period`; the tier
schedule (``clbench.train.tiers.schedule``) turns periods into active tiers, and the CMS memory
(``clbench.modeling.cms_memory``) into chunk boundaries — here, below both, so each reads the same value.
"""

from __future__ import annotations

from typing import Literal

NEVER = "never"  # a tier period: the tier never updates (P = ∞)
Period = int | Literal["never"]  # the type of a tier frequency / chunk size in strategy options
