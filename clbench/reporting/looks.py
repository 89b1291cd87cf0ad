"""One look (colour, marker, line style) per strategy label, grouped by family, the same in every figure.

Families are declared by the strategies themselves (``family`` on the class: ``"nested learning"``,
``"baselines"``, ``"references"``; anything else, or a strategy no longer registered, is ``"other"``);
a run that adds a plugin declaring a family (``sft`` with ``surprise``) has the plugin's.
The family fixes the marker shapes and the line style, so a reader sees the groups at a glance (and in
grey print); within a family, labels take the Okabe–Ito colours (colour-blind safe) in a fixed order:

1. the reference label (``sft`` by default) first, and black (no other label is black);
2. then the family's registered strategies in registration order (one slot each, whether or not it is
   in this report, so a strategy keeps its look from one report to the next);
3. then variants (labels that are not a registered name) after their strategy, each with its
   strategy's colour and the family's next marker.

Every label of a report gets a distinct (colour, marker) pair: a pair already taken moves on to the
family's next free one. :func:`looks` is the only entry point; figures never pick a colour themselves.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

OKABE_ITO = ["#000000", "#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442"]
FAMILIES = ("nested learning", "baselines", "references", "other")
FAMILY_MARKERS = {"nested learning": ["o", "D", "h", "p", "8"], "baselines": ["s", "^", "v", "<", ">"],
                  "references": ["X", "*", "P", "d"], "other": ["H", "x", "+", "1"]}
FAMILY_LINESTYLE = {"nested learning": "-", "baselines": "--", "references": ":", "other": "-."}


@dataclass(frozen=True)
class Look:
    color: str
    marker: str
    linestyle: str
    family: str


def strategy_family(name: str) -> str:
    """The ``family`` a registered strategy declares; ``"other"`` when it declares none or is unknown."""
    from clbench.errors import ConfigError
    from clbench.train import registry

    try:
        family = getattr(registry.get(name), "family", "other")
    except ConfigError:
        return "other"
    return family if family in FAMILY_MARKERS else "other"


def run_family(strategy: Mapping) -> str:
    """The family of a run's ``config.json`` ``strategy`` record: that of a plugin it adds (``with``)
    when one declares a family (sft + surprise is a nested-learning method), else its strategy's."""
    from clbench.errors import ConfigError
    from clbench.train import registry

    for plugin in strategy.get("with", ()):
        name = plugin if isinstance(plugin, str) else plugin.get("name")
        try:
            family = getattr(registry.get_plugin(name), "family", "other")
        except ConfigError:
            continue
        if family in FAMILY_MARKERS and family != "other":
            return family
    return strategy_family(strategy["name"])


def _registered() -> list[str]:
    from clbench.errors import ConfigError
    from clbench.train import registry

    try:
        return registry.names()
    except ConfigError:
        return []


def looks(names: Mapping[str, str], reference: str = "sft", families: Mapping[str, str] | None = None
          ) -> dict[str, Look]:
    """``{label: Look}`` for ``names`` (label → registered strategy name), in legend order: by family,
    then by slot; ``families`` overrides a label's family (:func:`run_family`)."""
    registered = _registered()
    family = {lab: (families or {}).get(lab) or strategy_family(name) for lab, name in names.items()}
    slots: dict[str, tuple[int, int]] = {}  # label -> (colour slot, marker step)
    for fam in FAMILIES:
        members = [lab for lab in names if family[lab] == fam]
        order = [n for n in registered if strategy_family(n) == fam and n != reference]
        if reference in members:  # its own black slot; the family's colours start at blue
            slots[reference] = (-1, 0)  # first in the legend
        base = [lab for lab in members if lab in order and lab != reference]
        variants = sorted(lab for lab in members if lab not in order and lab != reference)
        extra = len(order)
        for lab in base:
            slots[lab] = (order.index(lab), 0)
        for lab in variants:
            parent = names[lab]
            if parent in order:  # a variant: its strategy's colour, the next marker
                k = sum(1 for v in variants[: variants.index(lab) + 1] if names[v] == parent)
                slots[lab] = (order.index(parent), k)
            else:  # an unregistered label: the next free colour slot
                slots[lab] = (extra, 0)
                extra += 1
    out: dict[str, Look] = {}
    taken: set[tuple[str, str]] = set()
    for lab in sorted(names, key=lambda x: (FAMILIES.index(family[x]), slots[x], x)):
        fam = family[lab]
        colour_slot, step = max(slots[lab][0], 0), slots[lab][1]
        markers = FAMILY_MARKERS[fam]
        palette = OKABE_ITO[:1] if lab == reference else OKABE_ITO[1:]
        for attempt in range(len(palette) * len(markers)):
            colour = palette[(colour_slot + attempt // len(markers)) % len(palette)]
            marker = markers[(colour_slot // len(palette) + step + attempt) % len(markers)]
            if (colour, marker) not in taken:
                break
        taken.add((colour, marker))
        out[lab] = Look(colour, marker, FAMILY_LINESTYLE[fam], fam)
    return out
