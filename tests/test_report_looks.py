"""Figures a paper can use: a distinct colour and marker per strategy label, grouped by family and the
same in every report; legends inside the figure and off the data."""

from __future__ import annotations

import pytest

from clbench.reporting import figures
from clbench.reporting.looks import FAMILY_MARKERS, looks, run_family
from clbench.reporting.stats import Estimate
from clbench.results.aggregate import group_runs, load_runs
from tests.report_runs import make_run

# the default benchmark's 13 rows and the option variants of make bench-variants / perf
DEFAULT = {"sft": "sft", "layer_tiers": "layer_tiers", "layer_tiers-deep": "layer_tiers",
           "importance_tiers": "importance_tiers", "cms": "cms", "surprise": "sft", "replay": "replay",
           "lwf": "lwf", "ewc": "ewc", "l2": "l2", "olora": "olora", "joint": "joint", "frozen": "frozen"}
VARIANTS = {"cms-adapter": "cms", "surprise-2layers": "sft", "surprise-full": "sft",
            "cms-surprise": "cms", "importance_tiers-slow": "importance_tiers"}
WITH_SURPRISE = {"surprise", "surprise-2layers", "surprise-full", "cms-surprise"}  # sft/cms + the surprise plugin


def _looks(labels, reference="sft"):
    names = {lab: (DEFAULT | VARIANTS)[lab] for lab in labels}
    records = {lab: {"name": names[lab], **({"with": ["surprise"]} if lab in WITH_SURPRISE else {})}
               for lab in labels}
    return looks(names, reference, {lab: run_family(rec) for lab, rec in records.items()})


def test_every_label_has_its_own_colour_and_marker_pair_grouped_by_family():
    lk = _looks([*DEFAULT, *VARIANTS])
    pairs = [(v.color, v.marker) for v in lk.values()]
    assert len(set(pairs)) == len(pairs) == len(DEFAULT) + len(VARIANTS)
    fam = {lab: v.family for lab, v in lk.items()}
    assert {lab for lab, f in fam.items() if f == "nested learning"} == {
        "layer_tiers", "layer_tiers-deep", "importance_tiers", "cms", "surprise", *VARIANTS}
    assert {lab for lab, f in fam.items() if f == "references"} == {"joint", "frozen"}
    assert {lab for lab, f in fam.items() if f == "baselines"} == {"sft", "replay", "lwf", "ewc", "l2", "olora"}
    for lab, v in lk.items():  # the family fixes the marker shapes and the line style
        assert v.marker in FAMILY_MARKERS[v.family], lab
    assert len({lk[x].linestyle for x in ("sft", "cms", "joint")}) == 3
    assert lk["sft"].color == "#000000"  # the reference is black
    order = ["nested learning", "baselines", "references"]  # legend order: family by family
    assert [v.family for v in lk.values()] == sorted((v.family for v in lk.values()), key=order.index)

def test_a_label_keeps_its_look_whatever_else_is_in_the_report():
    full = _looks([*DEFAULT, *VARIANTS])
    for subset in (["sft", "cms", "replay"], ["surprise", "frozen"], ["lwf", "olora", "layer_tiers-deep"]):
        part = _looks(subset)
        for lab in subset:
            if lab != "layer_tiers-deep" or "layer_tiers" in subset:
                assert part[lab] == full[lab], lab
    # an unknown strategy (a plugin no longer installed) is drawn in its own family, still distinct
    mixed = looks({"sft": "sft", "mine": "not-registered", "theirs": "also-unknown"})
    assert mixed["mine"].family == mixed["theirs"].family == "other"
    assert len({(v.color, v.marker) for v in mixed.values()}) == 3


@pytest.fixture(scope="module")
def thirteen(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    for i, (label, name) in enumerate(DEFAULT.items()):
        for seed in (0, 1):
            d = 0.02 * i + 0.01 * seed
            make_run(root, label, seed, [[0.8, 0.1, 0.1], [0.5 - d, 0.9, 0.1], [0.3 + d, 0.5, 0.9]], strategy=name)
            if label in WITH_SURPRISE:  # the plugin, as the runner records it
                import json

                cfg = root / "exp" / "toy" / label / f"seed_{seed}" / "config.json"
                rec = json.loads(cfg.read_text())
                rec["strategy"]["with"] = [{"name": "surprise", "options": {}}]
                cfg.write_text(json.dumps(rec))
    return {label: runs for (_, label), runs in group_runs(load_runs([root])).items()}


def _inside_and_off_the_data(fig):
    fig.canvas.draw()
    legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    assert legends
    box = fig.bbox
    for legend in legends:
        ext = legend.get_window_extent()
        assert ext.x0 >= box.x0 - 0.5 and ext.x1 <= box.x1 + 0.5, (ext, box)
        assert ext.y0 >= box.y0 - 0.5 and ext.y1 <= box.y1 + 0.5, (ext, box)
        for ax in fig.axes:
            if ax.get_visible():
                assert not ext.overlaps(ax.get_window_extent()), "legend over the data"
    return legends


def test_legends_of_the_thirteen_strategy_figures_fit_and_cover_no_data(thirteen):
    import matplotlib

    names = {lab: runs[0].config["strategy"]["name"] for lab, runs in thirteen.items()}
    lk = looks(names, "sft", {lab: run_family(runs[0].config["strategy"]) for lab, runs in thirteen.items()})
    assert lk["surprise"].family == "nested learning"
    est = {lab: {"forgetting": Estimate(0.1 * i, 0.02, 2), "learning_acc": Estimate(0.9 - 0.03 * i, 0.02, 2),
                 "train_seconds": Estimate(10.0 + i, 1.0, 2), "updated_elements": Estimate(1e6, None, 2)}
           for i, lab in enumerate(thirteen)}
    with matplotlib.rc_context(figures.STYLE):
        for fig in (figures.retention_curves(thirteen, "qa", lk, unit=True),
                    figures.stability_plasticity(est, {}, lk, "qa"),
                    figures.loss_curves(thirteen, lk),
                    figures.cost_vs_forgetting(est, lk)):
            (legend,) = _inside_and_off_the_data(fig)
            texts = [t.get_text() for t in legend.get_texts()]
            assert [t for t in texts if t] == [lab for lab in lk if lab in thirteen]  # by family, no one missing
