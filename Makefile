# The README's two commands:  `make book`  and  `make test`.  `make check` is the fast loop while editing.
# Both create .venv when it is missing and install everything into it first.
PY ?= python3
VENV := .venv
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# Real Amazon Beauty data shipped beside the project (CI, developer machines) acts as a pre-filled cache.
export TTT4REC_DATA_MIRRORS ?= $(abspath ../shared/data)

.PHONY: setup book book-quick test check lint bench bench-official chromium bubblewrap clean vendor help instructor-index gpu-check fidelity

help:
	@echo "make book   - set up .venv and build the book into _build/html (quick mode on a CPU)"
	@echo "make test   - set up .venv, build the book, run the whole test suite"
	@echo "make check  - the fast loop: ruff, then every test that needs no book build, browser or long run (~1 min)"
	@echo "make bench  - benchmarks (speed ratios and memory), printed as tables"
	@echo "make fidelity - the protocol beside RecBole 1.2 itself (own .venv-fidelity; writes book/results/fidelity.txt)"
	@echo "make gpu-check - every model on CUDA, checked and timed in 6 min, no install (scripts/gpu_check.py)"
	@echo "make instructor-index - regenerate book/instructor.md's exercise index from the chapters"
	@echo "make vendor - refresh the vendored MathJax / require.js / widget manager (needs npm)"

$(STAMP): requirements.txt pyproject.toml
	@test -x $(PYTHON) || $(PY) -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet -r requirements.txt
	$(PYTHON) -m pip install --quiet --no-deps --no-build-isolation -e .
	@touch $(STAMP)

setup: $(STAMP)

# Debian's chromium for the rendered-page browser test (Playwright must not download its own browser).
chromium:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq chromium)

# Debian's bubblewrap: the grader runs every submission in a bwrap sandbox of its own (book/instructor.md).
bubblewrap:
	@command -v bwrap >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq bubblewrap)

# The book is rebuilt only when something it is made from changed: a chapter, the config, the vendored JS, or
# the library the chapters import. Then every chapter is re-executed (`--all` with execute_notebooks: force),
# because a library edit leaves the notebooks themselves unchanged. Nothing changed: nothing to do.
# Quick mode follows TTT4REC_QUICK when it is given (1 = on, 0 = off); otherwise it is automatic: on without a
# CUDA GPU, off with one (ttt4rec_edu.utils.quick_mode), so a GPU box runs the full chapters;
# the stamp's name records the setting, so switching it rebuilds. TTT4REC_STRICT_CHECKS=1 turns a failing
# exercise check (a broken reference solution) into a build error.
BOOK_INPUTS := _config.yml _toc.yml $(shell find book ttt4rec_edu vendor -type f \
	! -path '*/__pycache__/*' ! -path '*/.ipynb_checkpoints/*' ! -name '*.pyc' 2>/dev/null)
BOOK_QUICK := $(or $(TTT4REC_QUICK),auto)
BOOK_STAMP := _build/html/.built-quick-$(BOOK_QUICK)

book: setup $(BOOK_STAMP)
	@echo "Book: open _build/html/index.html in a browser"

$(BOOK_STAMP): $(BOOK_INPUTS) $(STAMP)
	@rm -f _build/html/.built-quick-*
	TTT4REC_QUICK=$(filter-out auto,$(BOOK_QUICK)) TTT4REC_STRICT_CHECKS=1 $(VENV)/bin/jupyter-book build . --all -W --keep-going
	@touch $@

# Refresh vendor/ (MathJax, require.js, the widget manager) from npm; the next `make book` rebuilds.
vendor:
	scripts/vendor_js.sh

test: setup lint chromium bubblewrap book
	$(PYTHON) -m pytest

# The fast edit-test loop: the linter, then the tests that need no built book, no browser and no long training
# run (markers in pyproject.toml; `slow` marks anything over a few seconds). `make test` runs everything.
check: setup lint
	$(PYTHON) -m pytest -q -m "not slow and not browser and not notebooks"

lint: setup
	$(PYTHON) -m ruff check .

# Regenerate the instructor guide's chapter overview and exercise index from the chapters.
instructor-index: setup
	$(PYTHON) -m ttt4rec_edu instructor index

# The protocol beside RecBole 1.2 itself (scripts/fidelity/fidelity.py): samples and metrics on MovieLens-100K
# (shipped inside recbole) and a hand-made file. Its own environment with RecBole's old pins
# (scripts/fidelity/requirements.txt); torch==2.13.0 is the CPU wheel this machine keeps on disk, and the stamp
# is only written when that is the torch installed (never a CUDA build). Not part of `make test`: about a
# minute of CPU plus the install. Its output is kept in book/results/fidelity.txt.
FIDELITY_VENV := .venv-fidelity
FIDELITY_STAMP := $(FIDELITY_VENV)/.installed-stamp

$(FIDELITY_STAMP): scripts/fidelity/requirements.txt
	@test -x $(FIDELITY_VENV)/bin/python || $(PY) -m venv $(FIDELITY_VENV)
	$(FIDELITY_VENV)/bin/python -m pip install --quiet -r scripts/fidelity/requirements.txt
	@$(FIDELITY_VENV)/bin/python -c "import torch, sys; sys.exit(torch.version.cuda is not None and \
		'make fidelity: a CUDA build of torch was installed into $(FIDELITY_VENV); it expects the CPU wheel')"
	@touch $@

fidelity: $(FIDELITY_STAMP)
	@OMP_NUM_THREADS=1 PYTHONPATH=$(CURDIR) $(FIDELITY_VENV)/bin/python -W ignore scripts/fidelity/fidelity.py \
		> book/results/fidelity.txt.tmp; status=$$?; cat book/results/fidelity.txt.tmp; \
		mv book/results/fidelity.txt.tmp book/results/fidelity.txt; echo "wrote book/results/fidelity.txt"; \
		exit $$status

bench: setup
	@$(MAKE) --no-print-directory bench-official || echo "make bench: no official TTT layer (offline?): ratio b is skipped"
	@for f in benchmarks/bench_*.py; do echo "== $$f"; OMP_NUM_THREADS=1 $(PYTHON) $$f || exit 1; done

# The official TTT layer beside ours (benchmarks/bench_speed.py, ratio b): ttt-lm-pytorch's ttt.py, which TTT4Rec
# copies verbatim, cloned at a fixed commit into .official/, run by its own venv .venv-official with the
# transformers release TTT4Rec pins. Both git-ignored; make test never needs them.
OFFICIAL_TTT_REPO ?= https://github.com/test-time-training/ttt-lm-pytorch
OFFICIAL_TTT_COMMIT := cd831db
OFFICIAL_VENV := .venv-official
OFFICIAL_STAMP := $(OFFICIAL_VENV)/.installed-stamp

$(OFFICIAL_STAMP):
	@test -d .official/ttt-lm-pytorch || git clone -q $(OFFICIAL_TTT_REPO) .official/ttt-lm-pytorch
	git -C .official/ttt-lm-pytorch checkout -q $(OFFICIAL_TTT_COMMIT)
	@test -x $(OFFICIAL_VENV)/bin/python || $(PY) -m venv $(OFFICIAL_VENV)
	$(OFFICIAL_VENV)/bin/python -m pip install --quiet torch==2.13.0 transformers==4.44.2 "numpy<2"
	@touch $@

bench-official: $(OFFICIAL_STAMP)

# The prepared GPU check (scripts/gpu_check.py) on a CUDA machine of your own: every model on CUDA against the CPU,
# the TTT modes, an Amazon Beauty epoch per model, early stopping for TTT4Rec and SASRec, torchrun; stops itself
# after 6 minutes and rewrites <date>-<time>-<device>.json, .md and .nvidia-smi.txt in GPU_OUT after every row.
# No setup and no network: python3 with torch, numpy, pandas, matplotlib, seaborn and tqdm runs it from the checkout,
# and gpu_data/ (git-ignored) gets the data file from the mirror when it is missing. On a lent GPU machine use the
# README's command instead (it writes to $OUT). PY=.venv/bin/python uses this project's environment instead. A CPU
# smoke run: make gpu-check PY=.venv/bin/python GPU_CHECK_ARGS="--device cpu --tiny" GPU_OUT=/tmp/g
GPU_CHECK_ARGS ?= --device cuda --bf16
GPU_OUT ?= book/results/gpu
gpu-check:
	@test -f gpu_data/amazon-beauty-5core.txt || { mkdir -p gpu_data && \
		cp "$(firstword $(subst :, ,$(TTT4REC_DATA_MIRRORS)))/amazon-beauty-5core.txt" gpu_data/; }
	$(PY) scripts/gpu_check.py $(GPU_CHECK_ARGS) --data gpu_data/amazon-beauty-5core.txt --out "$(GPU_OUT)"

clean:
	rm -rf _build
