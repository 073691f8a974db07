# make app      — install the serving set (first time) and serve the app on http://localhost:8866
# make replicas — REPLICAS (default 3) Voila replicas behind HAProxy on http://127.0.0.1:$(PORT) (default 8080)
# make monitor  — the deployer's monitor page (monitor.ipynb) on http://127.0.0.1:$(MONITOR_PORT) (default 8868)
# make test     — install everything (first time) and run the test suite
# make train    — retrain export.pkl and export.onnx from $(SHARED)/bears and evaluate them
# make cv       — leave-sources-out cross-validation of the training recipe (reports/cv.json)
# (your own classes: python -m bear_classifier train --data DIR --out OUT; docs/classes.md)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The serving set only (requirements-serve.txt): no torch, no fastai.
APP_VENV ?= .venv-app
REPLICAS ?= 3
PORT ?= 8080
MONITOR_PORT ?= 8868
# The monitor is its deployer's: loopback only (server/deployer.py), or from elsewhere with MONITOR_TOKEN.
MONITOR_TOKEN ?=
# The bear model's photos: the shared folders, their cleaning CSV, the hand-checked validation photos, negatives
# (its recipe's choices are in recipe.toml).
SHARED ?= ../shared/data
BEAR_RECIPE := --data $(SHARED)/bears --classes classes.toml --labels data/cleaning.csv --valid data/valid.csv \
	--negatives $(SHARED)/not_bear

$(BIN)/.installed: requirements.txt requirements-serve.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

$(APP_VENV)/bin/.installed-serve: requirements-serve.txt pyproject.toml
	$(PYTHON) -m venv $(APP_VENV)
	$(APP_VENV)/bin/pip install --quiet --upgrade pip
	$(APP_VENV)/bin/pip install --quiet -r requirements-serve.txt
	touch $@

# axe-core, which the accessibility tests inject into the page (tests/package.json). Without it they skip,
# except in CI (where a failed install fails the run).
tests/node_modules/.installed: tests/package.json tests/package-lock.json
	@if command -v npm >/dev/null 2>&1 && npm ci --prefix tests --no-audit --no-fund; then touch $@; \
	elif [ -n "$$CI" ]; then echo "CI: axe-core could not be installed (npm ci --prefix tests)"; exit 1; \
	else echo "axe-core not installed (no npm, or no registry): the accessibility tests will skip"; fi

install: $(BIN)/.installed tests/node_modules/.installed

# `voila app.ipynb`, as anyone can run it: requirements-serve.txt installed the package, with the page's template and
# page hook, and voila.json holds the server's settings. PYTHONPATH makes the server use this checkout's code as
# you edit it (the kernel always does: it runs next to app.ipynb).
app: $(APP_VENV)/bin/.installed-serve
	PYTHONPATH=$(CURDIR) $(APP_VENV)/bin/voila app.ipynb

replicas: $(APP_VENV)/bin/.installed-serve
	VOILA=$(APP_VENV)/bin/voila REPLICAS=$(REPLICAS) PORT=$(PORT) deploy/replicas.sh

# Fresh figures on every visit (no preheated kernels, which would render them in advance), Voila's own template.
$(APP_VENV)/bin/.installed-monitor: $(APP_VENV)/bin/.installed-serve
	$(APP_VENV)/bin/pip install --quiet ".[monitor]"
	touch $@

monitor: $(APP_VENV)/bin/.installed-monitor
	PYTHONPATH=$(CURDIR) $(APP_VENV)/bin/voila monitor.ipynb --no-browser --port=$(MONITOR_PORT) --template=lab \
		--VoilaConfiguration.preheat_kernel=False --Voila.identity_provider_class=bear_classifier.server.deployer.Deployer \
		$(if $(MONITOR_TOKEN),--Voila.ip=0.0.0.0 --token=$(MONITOR_TOKEN),--Voila.ip=127.0.0.1)

# Three workers on two cores: most tests wait on servers and browsers; files stay whole on one worker.
test: install
	$(BIN)/python -m pytest -n 3 --dist loadfile

train: install
	$(BIN)/python -m bear_classifier train $(BEAR_RECIPE) --recipe recipe.toml --out . --reports reports
	$(BIN)/python -m bear_classifier evaluate --model export.pkl $(filter-out --classes classes.toml,$(BEAR_RECIPE)) --write-card

cv: install
	$(BIN)/python -m bear_classifier cv $(BEAR_RECIPE) --recipe recipe.toml --model export.pkl --write-card

.PHONY: install app replicas monitor test train cv
