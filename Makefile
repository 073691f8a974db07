# make app   — install (first time) and serve the app on http://localhost:8866
# make test  — install (first time) and run the test suite
# make train — retrain export.pkl (and export.pt) from ../shared/data/bears and evaluate it (about 5 + 6 minutes on 2 CPU cores)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

$(BIN)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

install: $(BIN)/.installed

# The "bear" template (share/jupyter/voila/templates/bear) shows a working upload button before
# Voila's JavaScript has loaded; plain `voila app.ipynb` works too, without that button.
app: install
	JUPYTER_PATH=$(CURDIR)/share/jupyter $(BIN)/voila --template=bear app.ipynb

test: install
	$(BIN)/python -m pytest

train: install
	$(BIN)/python -m bear_classifier train
	$(BIN)/python -m bear_classifier evaluate --write-card

.PHONY: install app test train
