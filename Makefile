# The two commands of the README. Both install what they need first, so they work on a fresh machine.
PYTHON ?= python3
PIP = $(PYTHON) -m pip install --quiet --disable-pip-version-check

.PHONY: demo test install

install:
	$(PIP) -e .

# The main job: the daemon against the embedded simulated unit, then the DCS alone; side-by-side summary.
demo: install
	$(PYTHON) -m boiler_ai demo

# Everything the tests need (PostgreSQL for the historian tests and headless Chromium for the dashboard's browser
# test come from Debian's packages), lint, then the suite.
test:
	$(PIP) -e '.[dev,train]'
	$(PYTHON) -m ruff check .
	bash tests/start_postgres.sh
	bash tests/install_chromium.sh
	$(PYTHON) -m pytest -p no:cacheprovider -n 2 --dist loadfile tests
